//! JET association tokens: the verifier on arbitrary text, with the committed
//! RSA test key (signatures never verify, so everything before the signature
//! is fuzzed) and with unsigned tokens allowed (the claims checks are reached).
#![no_main]

use jet_relay::fuzzing::JwtVerifier;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const RSA_PEM: &str = include_str!("../../data/jwt/rsa.pem");

fn verifiers() -> &'static [JwtVerifier; 2] {
    static V: OnceLock<[JwtVerifier; 2]> = OnceLock::new();
    V.get_or_init(|| {
        [
            JwtVerifier::new("rsa", RSA_PEM, false).expect("committed key"),
            JwtVerifier::new("rsa", RSA_PEM, true).expect("committed key"),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let [signed, unsigned] = verifiers();
    assert!(
        !signed.verify(token),
        "a token no one signed was accepted: {token}"
    );
    let _ = unsigned.verify(token);
});
