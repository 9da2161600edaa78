//! WebSocket upgrades (`ws://`, `wss://`, draft 0.2 §2.2.5) on
//! `/jet/<accept|connect|test>/<association>/<candidate>`: the request checked,
//! the 101 or a refusal, then the same accept/connect/test as a JET request.

use crate::relay::conn::request::Answer;
use crate::relay::metrics::Outcome;
use crate::relay::shared::Context;
use crate::relay::stream::Stream;
use crate::wire::http;
use crate::wire::message::{self, Command, Method, Request};
use std::io::{self};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tungstenite::handshake::derive_accept_key;

/// The longest `Sec-WebSocket-Key` accepted. RFC 6455 keys are 24 characters
/// (16 bytes in base64); draft 0.2's own example uses 28, so any base64 text
/// up to this length is taken.
pub const MAX_KEY_LEN: usize = 64;
/// Serves a WebSocket upgrade request. `head` is the whole request head up to
/// and including its blank line, `leftover` the bytes read after it (the
/// peer's first frames, if it did not wait for the 101). `answered`: earlier
/// requests on this keep-alive connection were answered, so their write
/// timeout is still set and the send buffer may hold their answers.
///
/// A malformed upgrade gets a plain HTTP 400 (426 for another WebSocket
/// version) and is counted; an unknown association or candidate gets a 404
/// before any upgrade. On success the answer is the 101, and the connection
/// is parked, paired or tested exactly like a JET request.
pub fn serve_upgrade(
    ctx: &Arc<Context>,
    mut stream: Stream,
    head: &[u8],
    leftover: Vec<u8>,
    answered: bool,
    deadline: Instant,
) {
    let upgrade = match parse_upgrade(head) {
        Ok(upgrade) => upgrade,
        Err(refusal) => {
            ctx.metrics
                .ws_upgrade_failures
                .fetch_add(1, Ordering::Relaxed);
            ctx.metrics.handshake(Outcome::Rejected);
            ctx.metrics.rejected(refusal.status);
            crate::warn!(
                status = refusal.status;
                "WebSocket upgrade refused {}: {}",
                refusal.status,
                refusal.why
            );
            return refuse_http(ctx, &mut stream, refusal.status, &refusal.why);
        }
    };
    if let Err(refusal) =
        crate::relay::conn::auth::check_upgrade(ctx, head, upgrade.method, upgrade.association)
    {
        ctx.metrics.handshake(Outcome::Rejected);
        crate::warn!(
            status = refusal.status;
            "WebSocket {} refused {}: {}",
            upgrade.method.as_str(),
            refusal.status,
            String::from_utf8_lossy(&refusal.body)
        );
        let refusal = with_reason(refusal);
        return crate::relay::conn::http::send_and_close(ctx, &mut stream, &refusal);
    }
    // From here the peer's bytes are relayed data: no more timeouts on reads.
    if let Err(e) = stream.clear_read_deadline() {
        return crate::relay::conn::deadline::read_failed(
            ctx,
            crate::relay::conn::deadline::ReadError::Closed(e),
        );
    }
    let request = Request {
        version: 2,
        command: Command::new(upgrade.method, upgrade.association, upgrade.candidate),
    };
    crate::debug!(
        method = request.method().as_str(),
        association:% = upgrade.association,
        candidate:% = upgrade.candidate;
        "WebSocket request"
    );
    // The WebSocket stream exists from the start so the table records the
    // candidate's transport as ws/wss; nothing is framed before the 101,
    // which goes out beneath the framing like a refusal would.
    let ws = stream.into_websocket(leftover);
    let answer = UpgradeAnswer {
        accept_key: upgrade.accept_key,
        protocol: upgrade.protocol,
        answered,
    };
    crate::relay::conn::request::serve_request(ctx, ws, &request, &answer, deadline);
}

/// A valid upgrade request.
#[derive(Debug)]
pub(crate) struct Upgrade {
    pub(crate) method: Method,
    pub(crate) association: uuid::Uuid,
    pub(crate) candidate: uuid::Uuid,
    pub(crate) accept_key: String,
    pub(crate) protocol: Option<String>,
}

/// Why an upgrade request was refused before the table was asked.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) why: String,
}

fn refusal(status: u16, why: impl Into<String>) -> Refusal {
    Refusal {
        status,
        why: why.into(),
    }
}

pub(crate) fn parse_upgrade(head: &[u8]) -> Result<Upgrade, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; crate::relay::conn::http::MAX_UPGRADE_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(refusal(400, "incomplete HTTP head")),
        Err(e) => return Err(refusal(400, format!("not an HTTP head: {e}"))),
    }
    if req.method != Some("GET") {
        return Err(refusal(400, "a WebSocket upgrade must be a GET"));
    }
    if req.version != Some(1) {
        return Err(refusal(400, "a WebSocket upgrade needs HTTP/1.1"));
    }
    if !http::has_token(req.headers, "Upgrade", "websocket") {
        return Err(refusal(400, "no Upgrade: websocket"));
    }
    if !http::has_token(req.headers, "Connection", "upgrade") {
        return Err(refusal(400, "no Connection: Upgrade"));
    }
    if http::header(req.headers, "Sec-WebSocket-Version") != Some("13") {
        return Err(refusal(426, "Sec-WebSocket-Version is not 13"));
    }
    let key = http::header(req.headers, "Sec-WebSocket-Key").unwrap_or_default();
    if !is_base64(key) {
        return Err(refusal(400, format!("bad Sec-WebSocket-Key {key:?}")));
    }
    let path = req.path.unwrap_or_default();
    let (method, association, candidate) = message::parse_path(path).map_err(|e| match e {
        message::RequestError::Malformed(why) | message::RequestError::BadRequest(why) => {
            refusal(400, why)
        }
    })?;
    // A client offering several subprotocols gets the first: the relay does
    // not interpret the stream, the peers chose what they offer.
    let protocol = http::header(req.headers, "Sec-WebSocket-Protocol")
        .and_then(|list| list.split(',').map(str::trim).find(|p| !p.is_empty()))
        .map(str::to_owned);
    Ok(Upgrade {
        method,
        association,
        candidate,
        accept_key: derive_accept_key(key.as_bytes()),
        protocol,
    })
}

/// True for non-empty standard base64 text (with its padding).
fn is_base64(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    !text.is_empty()
        && text.len() <= MAX_KEY_LEN
        && text.len() % 4 == 0
        && text.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The body of a WebSocket refusal: `{"error": WHY, "status": N}`, the
/// reason made safe like its [`message::JET_ERROR`] header.
fn refusal_body(status: u16, why: &str) -> Vec<u8> {
    serde_json::json!({ "error": message::error_text(why), "status": status })
        .to_string()
        .into_bytes()
}

/// An authorization refusal (a JSON `{"error"}` response) made a WebSocket
/// refusal: the reason also in the `Jet-Error` header, the status in the body.
fn with_reason(
    mut refusal: crate::relay::conn::http::Response,
) -> crate::relay::conn::http::Response {
    let why = serde_json::from_slice::<serde_json::Value>(&refusal.body)
        .ok()
        .and_then(|body| body.get("error")?.as_str().map(message::error_text))
        .unwrap_or_default();
    refusal.body = refusal_body(refusal.status, &why);
    refusal.with(message::JET_ERROR, why)
}

/// Writes a plain HTTP refusal (no upgrade, beneath any WebSocket framing)
/// with the reason in a `Jet-Error` header and a JSON body, then closes the
/// connection.
fn refuse_http(ctx: &Context, stream: &mut Stream, status: u16, why: &str) {
    let body = refusal_body(status, why);
    let mut response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{}: {}\r\n",
        http::reason(status),
        body.len(),
        message::JET_ERROR,
        message::error_text(why),
    );
    if status == 426 {
        response.push_str("Sec-WebSocket-Version: 13\r\n");
    }
    response.push_str("\r\n");
    let mut response = response.into_bytes();
    response.extend_from_slice(&body);
    if crate::relay::conn::request::write_response(ctx, stream, &response).is_ok() {
        let _ = stream.shutdown_unframed();
        crate::relay::conn::request::drain(stream);
    }
}

/// Answers a valid upgrade: the 101 on success, plain HTTP on refusal. Both
/// go beneath the WebSocket framing.
struct UpgradeAnswer {
    accept_key: String,
    protocol: Option<String>,
    /// Earlier answers on this connection left a write timeout set.
    answered: bool,
}

impl Answer for UpgradeAnswer {
    fn may_create(&self) -> bool {
        // Draft 0.2: the WebSocket protocol requires the REST API to create
        // the association first.
        false
    }

    fn succeed(&self, ctx: &Context, ws: &mut Stream, _extra: &[(&str, &str)]) -> io::Result<()> {
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            self.accept_key
        );
        if let Some(protocol) = &self.protocol {
            response.push_str(&format!("Sec-WebSocket-Protocol: {protocol}\r\n"));
        }
        response.push_str("\r\n");
        if self.answered {
            crate::relay::conn::request::write_later_response(ctx, ws, response.as_bytes())
        } else {
            crate::relay::conn::request::write_response(ctx, ws, response.as_bytes())
        }
    }

    fn refuse(&self, ctx: &Context, ws: &mut Stream, status: u16, why: &str) {
        refuse_http(ctx, ws, status, why);
    }

    fn over_limit_status(&self) -> u16 {
        429
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_key(key: &str, ok: bool) {
        assert_eq!(is_base64(key), ok, "{key:?}");
    }

    #[test]
    fn keys_must_be_base64() {
        check_key("dGhlIHNhbXBsZSBub25jZQ==", true);
        check_key("B0mBaSTOZiC2RAkp3ScC8MA/gaI=", true);
        check_key("", false);
        check_key("not a key!", false);
        check_key("dGhlIHNhbXBsZSBub25jZQ=", false);
        check_key("dGhl===", false);
        check_key(&"A".repeat(68), false);
    }

    #[test]
    fn the_rfc_example_key_gets_the_rfc_accept_value() {
        // RFC 6455 §1.3.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
