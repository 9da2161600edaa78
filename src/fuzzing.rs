//! Entry points for the fuzz targets (`tests/fuzz/`); not a stable API.
//!
//! Each function takes the fuzzer's bytes, drives one parser that is private
//! to the crate, and panics only when an invariant of that parser breaks.

use crate::relay::conn::deadline::ReadError;
use crate::relay::conn::http::{self, Failure, MAX_BODY, MAX_HEAD};
use crate::relay::conn::upgrade;
use crate::relay::token::{Purpose, TokenKeys, Verifier, VerifierOptions};
use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// Reads keep-alive HTTP/1.1 requests out of `data` as the relay's HTTP
/// reader does off a socket. The first byte sets how many bytes each read
/// returns (0: 4 KiB, as the relay asks for), the rest is the stream. A
/// WebSocket upgrade's head goes to the upgrade parser, as `http::serve` does.
pub fn http_requests(data: &[u8]) {
    let Some((&chunk, mut stream)) = data.split_first() else {
        return;
    };
    let _ = http::looks_like_http(stream);
    let chunk = if chunk == 0 { 4096 } else { usize::from(chunk) };
    let mut buf = Vec::new();
    for _ in 0..http::MAX_REQUESTS {
        let before = buf.len() + stream.len();
        let result = http::read_request_with(&mut buf, |buf, limit| {
            let want = limit.saturating_sub(buf.len()).clamp(1, chunk);
            let n = want.min(stream.len());
            if n == 0 {
                return Err(Failure::Read(ReadError::Closed(
                    io::ErrorKind::UnexpectedEof.into(),
                )));
            }
            buf.extend_from_slice(&stream[..n]);
            stream = &stream[n..];
            Ok(())
        });
        let request = match result {
            Ok(request) => request,
            Err(Failure::Read(_)) => return,
            Err(Failure::Reject(response)) => {
                assert!(
                    matches!(response.status, 400 | 413 | 431),
                    "refused with {}",
                    response.status
                );
                return;
            }
        };
        assert!(
            request.head.len() <= MAX_HEAD,
            "head of {}",
            request.head.len()
        );
        assert!(
            request.body.len() <= MAX_BODY,
            "body of {}",
            request.body.len()
        );
        let taken = request.head.len() + request.body.len();
        assert_eq!(before - taken, buf.len() + stream.len(), "bytes lost");
        if request.method == "GET" && request.header_has("Upgrade", "websocket") {
            ws_upgrade(&request.head);
            return;
        }
    }
}

/// Parses a WebSocket upgrade head (`GET /jet/...` with `Upgrade: websocket`).
pub fn ws_upgrade(head: &[u8]) {
    match upgrade::parse_upgrade(head) {
        Ok(ok) => {
            // base64 of a SHA-1 digest.
            assert_eq!(ok.accept_key.len(), 28, "{ok:?}");
            if let Some(protocol) = &ok.protocol {
                assert!(
                    !protocol.is_empty() && protocol.trim() == protocol,
                    "{ok:?}"
                );
            }
            let _ = (ok.method, ok.association, ok.candidate);
        }
        Err(refusal) => {
            assert!(matches!(refusal.status, 400 | 426), "{refusal:?}");
            assert!(!refusal.why.is_empty());
        }
    }
}

/// The fixed clock of [`JwtVerifier::verify`], in seconds since the epoch:
/// 2026-01-01T00:00:00Z.
pub const JWT_NOW_SECS: u64 = 1_767_225_600;

/// A token verifier with fixed keys and a fixed clock, for the JWT target.
pub struct JwtVerifier {
    verifier: Verifier,
}

/// The association every fuzzed token is checked against.
pub const JWT_ASSOCIATION: Uuid = Uuid::from_u128(0x0c9e_56e1_0000_4000_8000_0000_0000_0001);

impl JwtVerifier {
    /// Trusts the keys in `pem` (one or more PEM blocks) under kid `kid`;
    /// `allow_unsigned` also takes `alg: none`, so unsigned tokens reach the
    /// claims checks. A replay cache of 1,000 jtis.
    pub fn new(kid: &str, pem: &str, allow_unsigned: bool) -> Result<JwtVerifier, String> {
        let mut keys = TokenKeys::default();
        keys.add_pem(kid, pem)?;
        let options = VerifierOptions {
            allow_unsigned,
            replay_capacity: 1000,
            ..VerifierOptions::default()
        };
        Ok(JwtVerifier {
            verifier: Verifier::new(keys, options),
        })
    }

    /// Verifies `token` for an accept on [`JWT_ASSOCIATION`] at a fixed time
    /// ([`JWT_NOW_SECS`]); returns whether it was accepted.
    pub fn verify(&self, token: &str) -> bool {
        let now: SystemTime = UNIX_EPOCH + Duration::from_secs(JWT_NOW_SECS);
        match self
            .verifier
            .verify(token, JWT_ASSOCIATION, Purpose::Accept, now)
        {
            Ok(claims) => {
                assert_eq!(claims.association, JWT_ASSOCIATION);
                assert!(claims.expires > 0);
                true
            }
            Err(e) => {
                let _ = e.to_string();
                false
            }
        }
    }
}
