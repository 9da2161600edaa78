//! Association tokens (JET v3) end to end: the tests sign their own tokens
//! with a fresh Ed25519 authority and present them over REST, WebSocket
//! upgrades and binary JET.

use crate::support::*;
use jet_relay::relay::config::Config;
use jet_relay::wire::base64::Alphabet;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};
use uuid::Uuid;

/// SPKI DER before the 32 bytes of an Ed25519 public key (RFC 8410 section 4).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// The kid of the authority: its key file's name without the extension.
const KID: &str = "authority";

/// Base64 in the library's encoder (`alphabet` is `STANDARD` or `URL`).
fn base64(data: &[u8], alphabet: Alphabet, pad: bool) -> String {
    jet_relay::wire::base64::encode(data, alphabet, pad)
}

const STANDARD: Alphabet = Alphabet::Standard;
const URL: Alphabet = Alphabet::Url;

fn b64url(data: &[u8]) -> String {
    base64(data, URL, false)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// A token authority: a fresh key pair whose public half the relay loads.
struct Authority {
    key: Ed25519KeyPair,
    folder: PathBuf,
}

impl Authority {
    fn new() -> Authority {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("ring generates Ed25519 keys");
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("ring reads its own key");
        let folder =
            std::env::temp_dir().join(format!("jet-relay-tokens-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&folder).expect("a temporary folder");
        let der = [&ED25519_SPKI_PREFIX[..], key.public_key().as_ref()].concat();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64(&der, STANDARD, true)
        );
        std::fs::write(folder.join(format!("{KID}.pem")), pem).expect("the key file is written");
        Authority { key, folder }
    }

    /// A relay checking this authority's tokens, with `edit` applied.
    fn relay(&self, edit: impl FnOnce(&mut Config)) -> TestRelay {
        let path = self.folder.join(format!("{KID}.pem"));
        TestRelay::with(|c| {
            c.token_keys = vec![path];
            edit(c);
        })
    }

    fn signed(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", b64url(signature.as_ref()))
    }

    /// A valid token for association `a`.
    fn token(&self, a: Uuid) -> String {
        self.signed(&header(), &claims(a))
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

fn header() -> Value {
    json!({"alg": "EdDSA", "typ": "JWT", "kid": KID})
}

fn claims(a: Uuid) -> Value {
    let now = now();
    json!({
        "type": "association",
        "jet_aid": a.to_string(),
        "jet_cm": "rdv",
        "jet_ap": "ssh",
        "jti": Uuid::new_v4().to_string(),
        "iat": now,
        "nbf": now,
        "exp": now + 120,
    })
}

fn with(mut value: Value, key: &str, v: Value) -> Value {
    value[key] = v;
    value
}

/// Every refusal the issue names, as (name, token for `a`, status, reason).
fn bad_tokens(authority: &Authority, a: Uuid) -> Vec<(&'static str, String, u16, &'static str)> {
    let now = now();
    let valid = authority.token(a);
    let (head, rest) = valid.split_once('.').expect("three segments");
    let (_, signature) = rest.split_once('.').expect("three segments");
    let tampered_claims = with(claims(a), "jet_ap", json!("rdp"));
    let tampered = format!(
        "{head}.{}.{signature}",
        b64url(tampered_claims.to_string().as_bytes())
    );
    let unsigned = format!(
        "{}.{}.",
        b64url(json!({"alg": "none"}).to_string().as_bytes()),
        b64url(claims(a).to_string().as_bytes())
    );
    let sign = |header: Value, claims: Value| authority.signed(&header, &claims);
    vec![
        (
            "expired",
            sign(
                header(),
                with(
                    with(claims(a), "exp", json!(now - 3600)),
                    "iat",
                    json!(now - 4000),
                ),
            ),
            401,
            "token expired at",
        ),
        (
            "not yet valid",
            sign(header(), with(claims(a), "nbf", json!(now + 3600))),
            401,
            "token not valid before",
        ),
        (
            "wrong jet_aid",
            sign(header(), claims(Uuid::new_v4())),
            403,
            "does not match association",
        ),
        ("none", unsigned, 401, "unsigned tokens are refused"),
        (
            "unknown key",
            sign(json!({"alg": "EdDSA", "kid": "someone-else"}), claims(a)),
            401,
            "no key matches kid",
        ),
        (
            "wrong algorithm",
            sign(json!({"alg": "ES256", "kid": KID}), claims(a)),
            401,
            "wrong algorithm",
        ),
        (
            "tampered signature",
            tampered,
            401,
            "signature does not verify",
        ),
        (
            "jet_rec true",
            sign(header(), with(claims(a), "jet_rec", json!(true))),
            401,
            "jet_rec is true",
        ),
    ]
}

fn rest(relay: &TestRelay, method: &str, path: &str, token: &str) -> HttpReply {
    let value = format!("Bearer {token}");
    relay.http(method, path, &[("Authorization", &value)], b"")
}

#[track_caller]
fn assert_token_refusal(reply: &HttpReply, status: u16, reason: &str, case: &str) {
    assert_eq!(reply.status, status, "{case}: {}", reply.text());
    let error = reply.json()["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains(reason), "{case}: {error:?} lacks {reason:?}");
    let challenge = reply.header("WWW-Authenticate").unwrap_or_default();
    let expected = if status == 401 {
        "Bearer error=\"invalid_token\", error_description=\""
    } else {
        "Bearer error=\"insufficient_scope\", error_description=\""
    };
    assert!(challenge.starts_with(expected), "{case}: {challenge}");
}

#[test]
fn a_token_creates_gathers_inspects_and_deletes_its_own_association_and_nothing_else() {
    let authority = Authority::new();
    let relay = authority.relay(|_| {});
    let a = Uuid::new_v4();
    let token = authority.token(a);
    assert_eq!(
        rest(&relay, "POST", &format!("/jet/association/{a}"), &token).status,
        200
    );
    let gathered = rest(&relay, "POST", &format!("/jet/gather/{a}"), &token);
    assert_eq!(gathered.status, 200);
    let c = gathered.json()["candidates"][0]["id"].clone();
    let info = rest(&relay, "GET", &format!("/jet/association/{a}"), &token);
    assert_eq!(info.status, 200);
    assert_eq!(info.json()["candidates"][0]["id"], c, "the full view");
    // Another association, the list and the metrics are not its to see.
    let other = Uuid::new_v4();
    for (method, path) in [
        ("POST", format!("/jet/association/{other}")),
        ("GET", format!("/jet/association/{other}")),
        ("DELETE", format!("/jet/association/{other}")),
        ("GET", "/jet/association".to_owned()),
        ("GET", "/metrics".to_owned()),
    ] {
        let reply = rest(&relay, method, &path, &token);
        assert_eq!(reply.status, 403, "{method} {path}: {}", reply.text());
    }
    assert_eq!(
        rest(&relay, "DELETE", &format!("/jet/association/{a}"), &token).status,
        200
    );
    assert!(relay.table().info(a).is_none());
    // Without a token, tokens configured: creating is no longer open.
    let anonymous = relay.http("POST", &format!("/jet/association/{other}"), &[], b"");
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("WWW-Authenticate"), Some("Bearer"));
}

#[test]
fn rest_refuses_each_bad_token_with_its_reason() {
    let authority = Authority::new();
    let relay = authority.relay(|_| {});
    let a = Uuid::new_v4();
    for (case, token, status, reason) in bad_tokens(&authority, a) {
        let reply = rest(&relay, "POST", &format!("/jet/association/{a}"), &token);
        assert_token_refusal(&reply, status, reason, case);
        assert!(relay.table().info(a).is_none(), "{case} created {a}");
    }
    // Replayed: the second use of a jti for the same purpose.
    let a = Uuid::new_v4();
    let token = authority.token(a);
    assert_eq!(
        rest(&relay, "POST", &format!("/jet/gather/{a}"), &token).status,
        200
    );
    let replay = rest(&relay, "POST", &format!("/jet/gather/{a}"), &token);
    assert_token_refusal(&replay, 401, "jti already used for gather", "replayed");
}

/// A WebSocket upgrade on `/jet/<method>/<a>/<c>`, the token in the query or
/// the header; the status and body of a refusal.
fn ws(
    relay: &TestRelay,
    method: &str,
    (a, c): (Uuid, Uuid),
    query: Option<&str>,
    header: Option<&str>,
) -> Result<WebSocket<TcpStream>, (u16, String)> {
    let query = query.map(|t| format!("?token={t}")).unwrap_or_default();
    let url = format!("ws://{}/jet/{method}/{a}/{c}{query}", relay.addr);
    let mut request = url.into_client_request().expect("a valid URL");
    if let Some(token) = header {
        let value = format!("Bearer {token}").parse().expect("a header value");
        request.headers_mut().insert("Authorization", value);
    }
    match tungstenite::client::client(request, relay.dial()) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let body = response.body().clone().unwrap_or_default();
            Err((
                response.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
            ))
        }
        Err(e) => panic!("WebSocket handshake: {e}"),
    }
}

#[test]
fn websocket_accept_and_connect_take_a_token_in_the_query_or_the_header() {
    let authority = Authority::new();
    let relay = authority.relay(|_| {});
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(relay.table().create(a));
    let missing = ws(&relay, "accept", (a, c), None, None).err();
    assert_eq!(missing.as_ref().map(|e| e.0), Some(401), "{missing:?}");
    let token = authority.token(a);
    let mut server = ws(&relay, "accept", (a, c), Some(&token), None).expect("accept with ?token=");
    // The same token once more for accept: replayed.
    let again = ws(&relay, "accept", (a, Uuid::new_v4()), Some(&token), None).err();
    let (status, body) = again.expect("a replayed token is refused");
    assert_eq!(status, 401);
    assert!(body.contains("jti already used for accept"), "{body}");
    // The connect presents the same token in the header: a new purpose.
    let mut client =
        ws(&relay, "connect", (a, c), None, Some(&token)).expect("connect with a header");
    client
        .send(Message::Binary(b"tokened".to_vec().into()))
        .expect("a frame is sent");
    let got = server.read().expect("a frame arrives");
    assert_eq!(got.into_data().as_ref(), b"tokened");
}

#[test]
fn websocket_upgrades_refuse_each_bad_token_with_its_reason() {
    let authority = Authority::new();
    let relay = authority.relay(|_| {});
    let a = Uuid::new_v4();
    assert!(relay.table().create(a));
    for (case, token, status, reason) in bad_tokens(&authority, a) {
        for (query, header) in [(Some(token.as_str()), None), (None, Some(token.as_str()))] {
            let refused = ws(&relay, "connect", (a, Uuid::new_v4()), query, header).err();
            let (got, body) = refused.unwrap_or_else(|| panic!("{case} was let in"));
            assert_eq!(got, status, "{case}: {body}");
            assert!(body.contains(reason), "{case}: {body:?} lacks {reason:?}");
        }
    }
}

#[test]
fn binary_jet_checks_a_token_when_present_and_requires_one_only_when_configured() {
    let authority = Authority::new();
    let with_token = |a: Uuid, c: Uuid, method: &str, token: &str| {
        format!(
            "GET /jet/{method}/{a}/{c} HTTP/1.1\r\nHost: relay\r\nJet-Version: 3\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
    };
    // By default a JET request without a token passes, one with a bad token does not.
    let relay = authority.relay(|_| {});
    let a = Uuid::new_v4();
    assert!(relay.table().create(a));
    let expired = authority.signed(&header(), &with(claims(a), "exp", json!(now() - 3600)));
    let (_sock, resp) = relay.request(
        &with_token(a, Uuid::new_v4(), "accept", &expired),
        0x73,
        b"",
    );
    assert_eq!(resp.status, 401);
    let _parked = relay.accept(a, Uuid::new_v4());
    // With require_jet_tokens, accept and connect need one.
    let strict = authority.relay(|c| c.require_jet_tokens = true);
    let (a, c) = (Uuid::new_v4(), Uuid::new_v4());
    assert!(strict.table().create(a));
    let (_sock, resp) = strict.request(&v2("accept", a, c), 0x73, b"");
    assert_eq!(resp.status, 401);
    let token = authority.token(a);
    let (mut server, resp) = strict.request(&with_token(a, c, "accept", &token), 0x73, b"");
    assert_eq!(resp.status, 200);
    let (_sock, resp) = strict.request(&v2("connect", a, c), 0x73, b"");
    assert_eq!(resp.status, 401);
    let (mut client, resp) = strict.request(&with_token(a, c, "connect", &token), 0x73, b"");
    assert_eq!(resp.status, 200);
    client.write_all(b"jet").unwrap();
    assert_eq!(read_n(&mut server, 3), b"jet");
}

#[test]
fn tokens_never_reach_the_log_whether_taken_or_refused() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::{Command, Stdio};
    let authority = Authority::new();
    let config = authority.folder.join("relay.toml");
    std::fs::write(&config, format!("token_keys = [\"{KID}.pem\"]\n")).expect("a config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jet-relay"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "tcp://127.0.0.1:0"])
        .env("JET_RELAY_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the relay binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("a listening line");
    let addr: std::net::SocketAddr = line
        .trim()
        .strip_prefix("listening tcp://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let dial = || {
        let sock = TcpStream::connect(addr).expect("the relay accepts");
        sock.set_read_timeout(Some(WAIT)).unwrap();
        sock
    };
    let http = |head: String| {
        let mut sock = dial();
        sock.write_all(head.as_bytes()).unwrap();
        read_http(&mut sock).status
    };
    let a = Uuid::new_v4();
    let good = authority.token(a);
    let expired = authority.signed(&header(), &with(claims(a), "exp", json!(now() - 3600)));
    let foreign = authority.token(Uuid::new_v4());
    let post = |token: &str| {
        format!("POST /jet/association/{a} HTTP/1.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
    };
    assert_eq!(http(post(&expired)), 401);
    assert_eq!(http(post(&foreign)), 403);
    assert_eq!(http(post(&good)), 200);
    let upgrade = |token: &str| {
        let url = format!(
            "ws://{addr}/jet/accept/{a}/{}?token={token}",
            Uuid::new_v4()
        );
        match tungstenite::client::client(url, dial()) {
            Ok(_) => 101,
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                r.status().as_u16()
            }
            Err(e) => panic!("WebSocket handshake: {e}"),
        }
    };
    assert_eq!(upgrade(&expired), 401);
    assert_eq!(upgrade(&good), 101);
    let stopped = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let mut log = String::new();
    child
        .stderr
        .take()
        .expect("stderr is piped")
        .read_to_string(&mut log)
        .expect("stderr reads to its end");
    let _ = child.wait();
    assert!(
        log.contains("token expired at"),
        "the reason is logged: {log}"
    );
    for token in [&good, &expired, &foreign] {
        let signature = token.rsplit('.').next().unwrap_or_default();
        assert!(!log.contains(signature), "a token reached the log: {log}");
    }
}
