//! Entry points for the fuzz targets (`tests/fuzz/`); not a stable API.
//!
//! Each function takes the fuzzer's bytes, drives one parser that is private
//! to the crate, and panics only when an invariant of that parser breaks.

use crate::relay::conn::deadline::ReadError;
use crate::relay::conn::http::{self, Failure, MAX_BODY, MAX_HEAD};
use crate::relay::conn::{api, upgrade};
use crate::relay::limits::ClientLimits;
use crate::relay::metrics::Metrics;
use crate::relay::pool::Pool;
use crate::relay::registry::Registry;
use crate::relay::shared::{BoundListener, Context};
use crate::relay::table::Table;
use crate::relay::token::{Purpose, TokenKeys, Verifier, VerifierOptions};
use crate::relay::Config;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// The relay behind the REST router: no listener is bound and no thread
/// started. With `api_key`, the key is `fuzz-api-key-0000` and CORS is on.
fn context(api_key: bool) -> Context {
    static CONFIGS: OnceLock<[Config; 2]> = OnceLock::new();
    let configs = CONFIGS.get_or_init(|| {
        let base = "instance = \"fuzz\"\nmax_associations = 64\nmax_threads = 16\n\
                    [[listeners]]\nurl = \"tcp://127.0.0.1:8080\"\n\
                    [[listeners]]\nurl = \"tls://[::1]:443\"\ncert = \"c\"\nkey = \"k\"\n\
                    external_url = \"wss://relay.example/\"\n";
        let keyed =
            format!("api_key = \"fuzz-api-key-0000\"\ncors_origin = \"https://app\"\n{base}");
        [base, keyed.as_str()].map(|text| Config::from_toml(text).expect("the fuzzing config"))
    });
    let config = configs[usize::from(api_key)].clone();
    let listeners = config
        .listeners
        .iter()
        .map(|l| BoundListener {
            url: l.url.clone(),
            local: SocketAddr::from(([127, 0, 0, 1], 8080)),
            external_url: l.external_url.clone(),
            dual_stack: false,
        })
        .collect();
    let limits = ClientLimits::new(config.client_limits.clone());
    Context::new(
        config.clone(),
        Table::new(config.max_associations),
        Metrics::default(),
        Arc::new(Registry::default()),
        Pool::with_limit(config.max_threads),
        listeners,
        None,
        limits,
    )
}

/// Reads keep-alive HTTP/1.1 requests out of `data` as the relay's HTTP
/// reader does off a socket, and answers each with the REST router. The low
/// 7 bits of the first byte set how many bytes each read returns (0: 4 KiB,
/// as the relay asks for), the top bit turns on an API key (`fuzz-api-key-0000`) and CORS;
/// the rest is the stream. A WebSocket upgrade's head goes to the upgrade
/// parser, as `keepalive::serve` does.
pub fn http_requests(data: &[u8]) {
    let Some((&first, mut stream)) = data.split_first() else {
        return;
    };
    let _ = http::looks_like_http(stream);
    let ctx = context(first & 0x80 != 0);
    let chunk = match first & 0x7F {
        0 => 4096,
        n => usize::from(n),
    };
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
        let response = api::route(&ctx, &request);
        assert!((200..600).contains(&response.status), "{}", response.status);
        assert!(ctx.table.len() <= ctx.config().max_associations);
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs `f` on every committed input of a fuzz target.
    fn replay(target: &str, mut f: impl FnMut(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz/corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("the committed corpus") {
            let path = entry.expect("a corpus entry").path();
            f(&std::fs::read(&path).expect("a corpus file"));
            n += 1;
        }
        assert!(n > 0, "{} is empty", dir.display());
    }

    #[test]
    fn the_http_corpus_replays() {
        replay("http_head", super::http_requests);
    }

    #[test]
    fn the_upgrade_corpus_replays() {
        replay("ws_upgrade", super::ws_upgrade);
    }

    #[test]
    fn the_jwt_corpus_replays() {
        let pem = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt/rsa.pem"),
        )
        .expect("the committed test key");
        let signed = super::JwtVerifier::new("rsa", &pem, false).expect("the key loads");
        let unsigned = super::JwtVerifier::new("rsa", &pem, true).expect("the key loads");
        let mut accepted = 0;
        replay("jwt", |data| {
            let token = String::from_utf8_lossy(data);
            assert!(!signed.verify(&token));
            accepted += usize::from(unsigned.verify(&token));
        });
        // seed-00: an unsigned token valid at the fixed clock.
        assert!(accepted >= 1);
    }
}
