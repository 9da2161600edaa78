//! Unit tests of the token verifier: the tests sign their own tokens.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};
use uuid::Uuid;

use super::*;
use crate::wire::base64::{encode, Alphabet};

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
    let mut body = encode(der, Alphabet::Standard, false);
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
    encode(value.to_string().as_bytes(), Alphabet::Url, false)
}

/// A token with `header` and `claims`, signed by `signer`.
fn signed(signer: &Signer, header: Value, claims: &Value) -> String {
    let input = format!("{}.{}", b64url_json(&header), b64url_json(claims));
    let signature = signer.sign(input.as_bytes());
    format!("{input}.{}", encode(&signature, Alphabet::Url, false))
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

mod refusals;
