//! Tokens the verifier must refuse: unsigned, unknown keys, wrong
//! algorithms, tampering, claims the relay cannot honour, malformed input.

use super::*;

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
            crate::wire::base64::decode(signature.as_bytes(), Alphabet::Url).expect("own encoding");
        raw[10] ^= 0x01;
        let tampered = format!("{input}.{}", encode(&raw, Alphabet::Url, false));
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
    let not_json = encode(b"{\"alg\":", Alphabet::Url, false);
    assert_malformed(f.verify(&format!("{not_json}.{p}.{s}")), "header: EOF");
}

#[test]
fn token_non_json_claims_are_refused() {
    let f = fixture();
    let input = format!(
        "{}.{}",
        b64url_json(&json!({"alg": "EdDSA", "kid": "ed"})),
        encode(b"hello", Alphabet::Url, false)
    );
    let t = format!(
        "{input}.{}",
        encode(&f.ed.sign(input.as_bytes()), Alphabet::Url, false)
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
        encode(c.as_bytes(), Alphabet::Url, false)
    );
    let t = format!(
        "{input}.{}",
        encode(&f.ed.sign(input.as_bytes()), Alphabet::Url, false)
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
    let der = crate::wire::base64::decode(
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
