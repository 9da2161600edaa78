//! Unit tests of the token verifier: the tests sign their own tokens.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use uuid::Uuid;

use super::b64::{encode, Alphabet};
use super::*;

/// The verification time of every test: fixed, so no test depends on the clock.
const NOW_SECS: u64 = 1_800_000_000;
/// The association every request names unless a test says otherwise.
const AID: Uuid = Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);

/// SPKI DER before the 32 key bytes of an Ed25519 key (RFC 8410 section 4).
const ED25519_SPKI_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// SPKI DER before the 65-byte uncompressed point of a P-256 key (RFC 5480).
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_SECS)
}

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/jwt")
        .join(name)
}

/// A private key a test signs with.
enum Signer {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Signer {
    fn ed25519() -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("ring generates Ed25519 keys");
        Signer::Ed(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ring reads its own key"))
    }

    fn p256() -> Signer {
        let rng = SystemRandom::new();
        let alg = &sig::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("ring generates P-256 keys");
        Signer::Ec(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("own key"))
    }

    fn rsa() -> Signer {
        let text = std::fs::read_to_string(data("rsa-private.pem")).expect("committed test key");
        let blocks = keys::pem_blocks(&text).expect("committed test key is PEM");
        Signer::Rsa(RsaKeyPair::from_pkcs8(&blocks[0].1).expect("committed key is PKCS#8 RSA"))
    }

    /// The public key as an SPKI PEM, built by hand for the generated keys.
    fn public_pem(&self) -> String {
        let der = match self {
            Signer::Ed(k) => [ED25519_SPKI_PREFIX, k.public_key().as_ref()].concat(),
            Signer::Ec(k) => [P256_SPKI_PREFIX, k.public_key().as_ref()].concat(),
            Signer::Rsa(_) => {
                return std::fs::read_to_string(data("rsa.pem")).expect("committed test key")
            }
        };
        pem("PUBLIC KEY", &der)
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Ed(_) => "EdDSA",
            Signer::Ec(_) => "ES256",
            Signer::Rsa(_) => "RS256",
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Ed(k) => k.sign(msg).as_ref().to_vec(),
            Signer::Ec(k) => k.sign(&rng, msg).expect("P-256 signing").as_ref().to_vec(),
            Signer::Rsa(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(&sig::RSA_PKCS1_SHA256, &rng, msg, &mut out)
                    .expect("RSA signing");
                out
            }
        }
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let mut body = encode(der, Alphabet::Standard);
    while body.len() % 4 != 0 {
        body.push('=');
    }
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

fn b64url_json(value: &Value) -> String {
    encode(value.to_string().as_bytes(), Alphabet::Url)
}

/// A token with `header` and `claims`, signed by `signer`.
fn signed(signer: &Signer, header: Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64url_json(&header), b64url_json(claims));
    let signature = signer.sign(input.as_bytes());
    format!("{input}.{}", encode(&signature, Alphabet::Url))
}

/// A token signed by `signer` under `kid`, with its own algorithm.
fn token(signer: &Signer, kid: &str, claims: &Value) -> String {
    signed(
        signer,
        json!({"alg": signer.alg(), "typ": "JWT", "kid": kid}),
        claims,
    )
}

fn claims() -> Value {
    json!({
        "type": "association",
        "jet_aid": AID.to_string(),
        "jet_cm": "rdv",
        "jet_ap": "rdp",
        "jet_rec": false,
        "jti": Uuid::new_v4().to_string(),
        "iat": NOW_SECS - 10,
        "nbf": NOW_SECS - 10,
        "exp": NOW_SECS + 300,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims
        .as_object_mut()
        .expect("claims are an object")
        .remove(key);
    claims
}

/// One key of each type: `ed`, `ec` and `rsa` (from the committed file).
struct Fixture {
    ed: Signer,
    ec: Signer,
    rsa: Signer,
    verifier: Verifier,
}

fn fixture_with(options: VerifierOptions) -> Fixture {
    let (ed, ec, rsa) = (Signer::ed25519(), Signer::p256(), Signer::rsa());
    let mut keys = TokenKeys::load(&[data("rsa.pem")]).expect("committed RSA key loads");
    keys.add_pem("ed", &ed.public_pem())
        .expect("Ed25519 SPKI parses");
    keys.add_pem("ec", &ec.public_pem())
        .expect("P-256 SPKI parses");
    Fixture {
        ed,
        ec,
        rsa,
        verifier: Verifier::new(keys, options),
    }
}

fn fixture() -> Fixture {
    fixture_with(VerifierOptions::default())
}

impl Fixture {
    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verifier.verify(token, AID, Purpose::Connect, now())
    }
}

#[test]
fn token_valid_rs256_is_accepted_with_its_claims() {
    let f = fixture();
    let c = claims();
    let got = f
        .verify(&token(&f.rsa, "rsa", &c))
        .expect("valid RS256 token");
    assert_eq!(got.association, AID);
    assert_eq!(got.application_protocol.as_deref(), Some("rdp"));
    assert_eq!(got.jti, c["jti"].as_str().expect("jti is a string"));
    assert_eq!(got.expires, NOW_SECS + 300);
    assert_eq!(got.not_before, Some(NOW_SECS - 10));
    assert_eq!(got.algorithm, Algorithm::Rs256);
    assert_eq!(got.kid.as_deref(), Some("rsa"));
}

#[test]
fn token_valid_es256_is_accepted() {
    let f = fixture();
    let got = f
        .verify(&token(&f.ec, "ec", &claims()))
        .expect("valid ES256 token");
    assert_eq!(
        (got.algorithm, got.kid.as_deref()),
        (Algorithm::Es256, Some("ec"))
    );
}

#[test]
fn token_valid_eddsa_is_accepted() {
    let f = fixture();
    let got = f
        .verify(&token(&f.ed, "ed", &claims()))
        .expect("valid EdDSA token");
    assert_eq!(
        (got.algorithm, got.kid.as_deref()),
        (Algorithm::EdDsa, Some("ed"))
    );
}

#[test]
fn token_rsa_pkcs1_public_key_file_verifies() {
    let rsa = Signer::rsa();
    let keys = TokenKeys::load(&[data("rsa-pkcs1.pem")]).expect("PKCS#1 key loads");
    assert_eq!(keys.keys()[0].kid, "rsa-pkcs1");
    let verifier = Verifier::new(keys, VerifierOptions::default());
    let got = verifier.verify(
        &token(&rsa, "rsa-pkcs1", &claims()),
        AID,
        Purpose::Accept,
        now(),
    );
    assert_eq!(got.map(|c| c.algorithm), Ok(Algorithm::Rs256));
}

#[test]
fn token_without_kid_is_tried_against_each_key_of_its_type() {
    // Rotation: two Ed25519 keys, the token signed by the second, no kid.
    let (old, new) = (Signer::ed25519(), Signer::ed25519());
    let mut keys = TokenKeys::default();
    keys.add_pem("old", &old.public_pem()).expect("SPKI parses");
    keys.add_pem("new", &new.public_pem()).expect("SPKI parses");
    let verifier = Verifier::new(keys, VerifierOptions::default());
    let t = signed(&new, json!({"alg": "EdDSA"}), &claims());
    let got = verifier
        .verify(&t, AID, Purpose::Connect, now())
        .expect("second key verifies");
    assert_eq!(got.kid.as_deref(), Some("new"));
}

#[test]
fn token_expired_is_refused() {
    let f = fixture();
    let exp = NOW_SECS - DEFAULT_LEEWAY.as_secs();
    let err = f
        .verify(&token(&f.ed, "ed", &with(claims(), "exp", json!(exp))))
        .unwrap_err();
    assert_eq!(err, TokenError::Expired(exp));
    assert_eq!(
        err.to_string(),
        "token expired at 2027-01-15T07:59:00Z (unix 1799999940)"
    );
}

#[test]
fn token_not_yet_valid_is_refused() {
    let f = fixture();
    let nbf = NOW_SECS + DEFAULT_LEEWAY.as_secs() + 1;
    let err = f
        .verify(&token(&f.ed, "ed", &with(claims(), "nbf", json!(nbf))))
        .unwrap_err();
    assert_eq!(err, TokenError::NotYetValid(nbf));
    assert!(
        err.to_string().starts_with("token not valid before "),
        "{err}"
    );
}

#[test]
fn token_iat_bounds_validity_when_nbf_is_absent() {
    let f = fixture();
    let iat = NOW_SECS + DEFAULT_LEEWAY.as_secs() + 1;
    let c = with(without(claims(), "nbf"), "iat", json!(iat));
    assert_eq!(
        f.verify(&token(&f.ed, "ed", &c)),
        Err(TokenError::NotYetValid(iat))
    );
}

#[test]
fn token_leeway_is_honoured_on_both_ends() {
    // 30 s past exp and 30 s before nbf: inside the default 60 s leeway...
    let late = with(claims(), "exp", json!(NOW_SECS - 30));
    let early = with(claims(), "nbf", json!(NOW_SECS + 30));
    let f = fixture();
    assert!(f.verify(&token(&f.ed, "ed", &late)).is_ok());
    assert!(f.verify(&token(&f.ed, "ed", &early)).is_ok());
    // ...and outside a zero leeway.
    let strict = fixture_with(VerifierOptions {
        leeway: Duration::ZERO,
        ..Default::default()
    });
    let late = with(late, "jti", json!("late"));
    let early = with(early, "jti", json!("early"));
    assert_eq!(
        strict.verify(&token(&strict.ed, "ed", &late)),
        Err(TokenError::Expired(NOW_SECS - 30))
    );
    assert_eq!(
        strict.verify(&token(&strict.ed, "ed", &early)),
        Err(TokenError::NotYetValid(NOW_SECS + 30))
    );
}

#[test]
fn token_fractional_dates_are_accepted() {
    let f = fixture();
    let c = with(claims(), "exp", json!(NOW_SECS as f64 + 300.5));
    assert_eq!(
        f.verify(&token(&f.ed, "ed", &c)).map(|c| c.expires),
        Ok(NOW_SECS + 300)
    );
}

#[test]
fn token_without_exp_or_jti_is_refused() {
    let f = fixture();
    let no_exp = without(claims(), "exp");
    assert_eq!(
        f.verify(&token(&f.ed, "ed", &no_exp)),
        Err(TokenError::MissingClaim("exp"))
    );
    let no_jti = without(claims(), "jti");
    assert_eq!(
        f.verify(&token(&f.ed, "ed", &no_jti)),
        Err(TokenError::MissingClaim("jti"))
    );
}

#[test]
fn token_wrong_jet_aid_is_refused() {
    let f = fixture();
    let other = Uuid::new_v4();
    let err = f
        .verify(&token(
            &f.ed,
            "ed",
            &with(claims(), "jet_aid", json!(other)),
        ))
        .unwrap_err();
    assert_eq!(
        err,
        TokenError::AssociationMismatch {
            token: other,
            request: AID
        }
    );
    assert_eq!(
        err.to_string(),
        format!("jet_aid {other} does not match association {AID}")
    );
}

#[test]
fn token_replayed_jti_is_refused_for_the_same_purpose_and_accepted_for_another() {
    let f = fixture();
    let t = token(&f.ec, "ec", &claims());
    let v = &f.verifier;
    assert!(v.verify(&t, AID, Purpose::Create, now()).is_ok());
    let err = v.verify(&t, AID, Purpose::Create, now()).unwrap_err();
    assert_eq!(err, TokenError::Replayed(Purpose::Create));
    assert_eq!(err.to_string(), "jti already used for create");
    assert!(v.verify(&t, AID, Purpose::Accept, now()).is_ok());
    assert_eq!(
        v.verify(&t, AID, Purpose::Accept, now()),
        Err(TokenError::Replayed(Purpose::Accept))
    );
}

#[test]
fn token_refused_for_another_reason_does_not_use_up_its_jti() {
    let f = fixture();
    let t = token(&f.ed, "ed", &claims());
    let wrong = f
        .verifier
        .verify(&t, Uuid::new_v4(), Purpose::Connect, now());
    assert!(matches!(wrong, Err(TokenError::AssociationMismatch { .. })));
    assert!(f.verify(&t).is_ok());
}

#[test]
fn token_replay_cache_full_refuses_new_tokens() {
    let f = fixture_with(VerifierOptions {
        replay_capacity: 1,
        ..Default::default()
    });
    assert!(f.verify(&token(&f.ed, "ed", &claims())).is_ok());
    assert_eq!(
        f.verify(&token(&f.ed, "ed", &claims())),
        Err(TokenError::ReplayCacheFull(1))
    );
}

fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64url_json(&json!({"alg": "none"})),
        b64url_json(claims)
    )
}

#[test]
fn token_alg_none_is_refused_by_default() {
    let err = fixture().verify(&unsigned(&claims())).unwrap_err();
    assert_eq!(err, TokenError::Unsigned);
    assert!(err.to_string().contains("unsigned tokens are refused"));
}

#[test]
fn token_alg_none_is_accepted_only_with_the_dev_flag() {
    let f = fixture_with(VerifierOptions {
        allow_unsigned: true,
        ..Default::default()
    });
    let got = f
        .verify(&unsigned(&claims()))
        .expect("dev flag accepts alg none");
    assert_eq!((got.algorithm, got.kid), (Algorithm::None, None));
    // Even then, claims are checked.
    let expired = with(claims(), "exp", json!(1));
    assert_eq!(f.verify(&unsigned(&expired)), Err(TokenError::Expired(1)));
}

#[test]
fn token_unknown_kid_is_refused() {
    let f = fixture();
    let err = f.verify(&token(&f.ed, "gone", &claims())).unwrap_err();
    assert_eq!(err, TokenError::UnknownKid("gone".into()));
    assert_eq!(err.to_string(), "no key matches kid \"gone\"");
}

#[test]
fn token_signed_by_an_unknown_key_is_refused() {
    let f = fixture();
    let stranger = Signer::ed25519();
    assert_eq!(
        f.verify(&token(&stranger, "ed", &claims())),
        Err(TokenError::BadSignature)
    );
    let no_kid = signed(&stranger, json!({"alg": "EdDSA"}), &claims());
    assert_eq!(f.verify(&no_kid), Err(TokenError::BadSignature));
}

#[test]
fn token_wrong_algorithm_for_the_key_is_refused() {
    let f = fixture();
    // Signed with the EC key but naming the Ed25519 key's kid.
    let t = signed(&f.ec, json!({"alg": "ES256", "kid": "ed"}), &claims());
    let err = f.verify(&t).unwrap_err();
    assert_eq!(
        err,
        TokenError::WrongAlgorithm {
            alg: Algorithm::Es256,
            kid: "ed".into(),
            key_type: KeyType::Ed25519
        }
    );
    assert!(err.to_string().starts_with("wrong algorithm"), "{err}");
}

#[test]
fn token_algorithm_without_a_key_of_its_type_is_refused() {
    let ed = Signer::ed25519();
    let mut keys = TokenKeys::default();
    keys.add_pem("ed", &ed.public_pem()).expect("SPKI parses");
    let v = Verifier::new(keys, VerifierOptions::default());
    let t = signed(&Signer::rsa(), json!({"alg": "RS256"}), &claims());
    assert_eq!(
        v.verify(&t, AID, Purpose::Connect, now()),
        Err(TokenError::NoKeyForAlgorithm(Algorithm::Rs256))
    );
}

#[test]
fn token_unsupported_algorithm_is_refused() {
    let f = fixture();
    let t = signed(&f.rsa, json!({"alg": "HS256", "kid": "rsa"}), &claims());
    assert_eq!(
        f.verify(&t),
        Err(TokenError::UnsupportedAlgorithm("HS256".into()))
    );
}

#[test]
fn token_crit_header_is_refused() {
    let f = fixture();
    let t = signed(
        &f.ed,
        json!({"alg": "EdDSA", "kid": "ed", "crit": ["exp"]}),
        &claims(),
    );
    assert_eq!(f.verify(&t), Err(TokenError::CriticalHeader));
}

#[test]
fn token_tampered_payload_is_refused() {
    let f = fixture();
    for signer in [&f.rsa, &f.ec, &f.ed] {
        let kid = match signer.alg() {
            "RS256" => "rsa",
            "ES256" => "ec",
            _ => "ed",
        };
        let t = token(signer, kid, &claims());
        let parts: Vec<&str> = t.split('.').collect();
        let forged = b64url_json(&with(claims(), "jet_ap", json!("ssh")));
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(
            f.verify(&tampered),
            Err(TokenError::BadSignature),
            "{}",
            signer.alg()
        );
    }
}

#[test]
fn token_tampered_signature_is_refused() {
    let f = fixture();
    for signer in [&f.rsa, &f.ec, &f.ed] {
        let kid = match signer.alg() {
            "RS256" => "rsa",
            "ES256" => "ec",
            _ => "ed",
        };
        let t = token(signer, kid, &claims());
        let (input, signature) = t.rsplit_once('.').expect("three segments");
        let mut raw =
            super::b64::decode(signature.as_bytes(), Alphabet::Url).expect("own encoding");
        raw[10] ^= 0x01;
        let tampered = format!("{input}.{}", encode(&raw, Alphabet::Url));
        assert_eq!(
            f.verify(&tampered),
            Err(TokenError::BadSignature),
            "{}",
            signer.alg()
        );
    }
}

#[test]
fn token_jet_rec_true_is_refused() {
    let f = fixture();
    let err = f
        .verify(&token(&f.ed, "ed", &with(claims(), "jet_rec", json!(true))))
        .unwrap_err();
    assert_eq!(err, TokenError::RecordingRequested);
    assert!(err.to_string().contains("cannot record"));
}

#[test]
fn token_jet_cm_other_than_rdv_is_refused() {
    let f = fixture();
    let err = f
        .verify(&token(&f.ed, "ed", &with(claims(), "jet_cm", json!("fwd"))))
        .unwrap_err();
    assert_eq!(err, TokenError::UnsupportedConnectionMode("fwd".into()));
    assert!(err.to_string().contains("only does rendezvous"), "{err}");
}

#[test]
fn token_wrong_type_is_refused() {
    let f = fixture();
    let c = with(claims(), "type", json!("scope"));
    assert_eq!(
        f.verify(&token(&f.ed, "ed", &c)),
        Err(TokenError::WrongType("scope".into()))
    );
}

fn assert_malformed(result: Result<Claims, TokenError>, needle: &str) {
    match result {
        Err(TokenError::Malformed(what)) => {
            assert!(what.contains(needle), "{what:?} lacks {needle:?}")
        }
        other => panic!("expected a malformed-token error about {needle:?}, got {other:?}"),
    }
}

#[test]
fn token_malformed_shapes_are_refused() {
    let f = fixture();
    let good = token(&f.ed, "ed", &claims());
    let (h, rest) = good.split_once('.').expect("three segments");
    let (p, s) = rest.split_once('.').expect("three segments");
    assert_malformed(f.verify(&format!("{h}.{p}")), "2 segments");
    assert_malformed(f.verify(&format!("{good}.{s}")), "4 segments");
    assert_malformed(f.verify(""), "1 segments");
    assert_malformed(f.verify(&format!("{h}!.{p}.{s}")), "header: byte 0x21");
    assert_malformed(f.verify(&format!("{h}.{p}.{s}=")), "signature: padding");
    let not_json = encode(b"{\"alg\":", Alphabet::Url);
    assert_malformed(f.verify(&format!("{not_json}.{p}.{s}")), "header: EOF");
}

#[test]
fn token_non_json_claims_are_refused() {
    let f = fixture();
    let input = format!(
        "{}.{}",
        b64url_json(&json!({"alg": "EdDSA", "kid": "ed"})),
        encode(b"hello", Alphabet::Url)
    );
    let t = format!(
        "{input}.{}",
        encode(&f.ed.sign(input.as_bytes()), Alphabet::Url)
    );
    assert_malformed(f.verify(&t), "claims: expected value");
}

#[test]
fn token_duplicate_claims_are_refused() {
    // Two exp claims: a parser that kept the first and one that kept the last would disagree.
    let f = fixture();
    let c = claims()
        .to_string()
        .replacen('{', &format!("{{\"exp\":{},", NOW_SECS + 9999), 1);
    let input = format!(
        "{}.{}",
        b64url_json(&json!({"alg": "EdDSA", "kid": "ed"})),
        encode(c.as_bytes(), Alphabet::Url)
    );
    let t = format!(
        "{input}.{}",
        encode(&f.ed.sign(input.as_bytes()), Alphabet::Url)
    );
    assert_malformed(f.verify(&t), "duplicate field `exp`");
}

#[test]
fn token_huge_is_refused_before_decoding() {
    let f = fixture();
    let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
    let err = f.verify(&huge).unwrap_err();
    assert_eq!(err, TokenError::TooLarge(MAX_TOKEN_BYTES + 1));
    assert!(err.to_string().starts_with("malformed token: "));
}

#[test]
fn token_corruptions_are_refused_without_panicking() {
    let f = fixture_with(VerifierOptions {
        allow_unsigned: true,
        ..Default::default()
    });
    let good = token(&f.ec, "ec", &claims());
    let bytes = good.as_bytes();
    for cut in 0..bytes.len() {
        let _ = f.verify(&String::from_utf8_lossy(&bytes[..cut]));
    }
    for at in 0..bytes.len() {
        for flip in [b'.', b'A', b'-', b'=', 0xff] {
            let mut b = bytes.to_vec();
            b[at] = flip;
            let text = String::from_utf8_lossy(&b);
            if text != good {
                assert!(
                    f.verify(&text).is_err(),
                    "corruption at {at} to {flip:#x} accepted"
                );
            }
        }
    }
}

#[test]
fn token_used_from_many_threads_at_once_passes_exactly_once_per_purpose() {
    let f = fixture();
    let t = token(&f.ed, "ed", &claims());
    let passed = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| f.verify(&t).is_ok())).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .filter(|ok| *ok)
            .count()
    });
    assert_eq!(passed, 1);
}

#[test]
fn token_errors_quote_at_most_a_bounded_part_of_the_token() {
    let f = fixture();
    let long_kid = "k".repeat(5000);
    let err = f.verify(&token(&f.ed, &long_kid, &claims())).unwrap_err();
    assert!(
        matches!(&err, TokenError::UnknownKid(k) if k.len() < 300),
        "{err:?}"
    );
    let long_type = with(claims(), "type", json!("t".repeat(5000)));
    assert!(
        f.verify(&token(&f.ed, "ed", &long_type))
            .unwrap_err()
            .to_string()
            .len()
            < 300
    );
}

#[test]
fn token_key_load_errors_name_the_file_and_the_fault() {
    let missing = data("no-such-key.pem");
    let err = TokenKeys::load(std::slice::from_ref(&missing)).unwrap_err();
    assert_eq!(err.path, missing);
    assert!(
        err.to_string().contains("no-such-key.pem: cannot open"),
        "{err}"
    );
    let err = TokenKeys::load(&[data("rsa-private.pem")]).unwrap_err();
    assert!(err.to_string().contains("a PRIVATE KEY block"), "{err}");
    let err = TokenKeys::load(&[data("README.md")]).unwrap_err();
    assert!(err.to_string().contains("README.md: no PEM block"), "{err}");
}

#[test]
fn token_key_parse_refuses_other_curves_short_rsa_and_bad_der() {
    let mut keys = TokenKeys::default();
    // A P-384 SPKI (the curve OID 1.3.132.0.34) with a dummy point.
    let p384: Vec<u8> = [
        &[
            0x30, 0x76, 0x30, 0x10, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
        ][..],
        &[
            0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22, 0x03, 0x62, 0x00, 0x04,
        ],
        &[0x11; 96],
    ]
    .concat();
    let err = keys.add_pem("p384", &pem("PUBLIC KEY", &p384)).unwrap_err();
    assert!(err.contains("other than P-256"), "{err}");
    // A 1024-bit RSAPublicKey: modulus 0x80.. of 128 bytes, exponent 65537.
    let mut rsa = vec![0x30, 0x81, 0x89, 0x02, 0x81, 0x81, 0x00, 0x80];
    rsa.extend_from_slice(&[0x01; 127]);
    rsa.extend_from_slice(&[0x02, 0x03, 0x01, 0x00, 0x01]);
    let err = keys
        .add_pem("short", &pem("RSA PUBLIC KEY", &rsa))
        .unwrap_err();
    assert!(err.contains("RSA key is 1024 bits"), "{err}");
    let ed = Signer::ed25519().public_pem();
    let b64_body: String = ed.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = super::b64::decode(
        b64_body.trim_end_matches('=').as_bytes(),
        Alphabet::Standard,
    )
    .expect("own PEM");
    let err = keys
        .add_pem("cut", &pem("PUBLIC KEY", &der[..der.len() - 1]))
        .unwrap_err();
    assert!(err.contains("truncated"), "{err}");
    assert!(keys.is_empty());
}
