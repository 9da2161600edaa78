//! The REST client a server peer gathers relay candidates with: `POST /jet/gather/<id>`.

use crate::error::{Error, Result};
use crate::peer::connector::Connector;
use crate::peer::stream::Relayed;
use crate::wire::candidate::CandidateUrl;
use crate::wire::secret::ApiKey;
use crate::wire::signal::Candidate;
use crate::wire::{http, message};
use serde::{Deserialize, Serialize};
use std::io;
use uuid::Uuid;

/// The largest REST response read.
pub const MAX_REST_RESPONSE: usize = 1024 * 1024;

/// The answer of `POST /jet/gather/<id>` on a relay's REST API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gathered {
    /// Association id.
    pub id: Uuid,
    /// Relay candidates to accept on.
    pub candidates: Vec<Candidate>,
}

/// Asks a relay's REST API for candidates: `POST /jet/gather/<id>`, with
/// `Authorization: Bearer KEY` when a key is given. `base` is
/// `http://HOST[:PORT]`, `https://...`, or a relay listener URL (`tcp://` and
/// `ws://` speak plain HTTP, `tls://` and `wss://` HTTPS).
pub fn gather(
    connector: &Connector,
    base: &str,
    association: Uuid,
    api_key: Option<&ApiKey>,
) -> Result<Vec<Candidate>> {
    let (status, body) = rest_call(
        connector,
        base,
        "POST",
        &format!("/jet/gather/{association}"),
        api_key,
    )?;
    if status != 200 {
        // The REST API says why in `{"error": ...}`; anything else is shown
        // as text, made safe to print like a `Jet-Error`.
        let why = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error")?.as_str().map(message::error_text))
            .unwrap_or_else(|| message::error_text(&String::from_utf8_lossy(&body)));
        let hint = match (status, api_key) {
            (401, None) => " (this relay wants an API key: set JET_API_KEY or pass --api-key)",
            (401, Some(_)) => " (the relay refused the API key given)",
            _ => "",
        };
        let reason = format!("{why}{hint}");
        return Err(Error::Refused {
            request: format!("gather {association}"),
            status,
            reason: (!reason.is_empty()).then_some(reason),
        });
    }
    let gathered: Gathered = serde_json::from_slice(&body)
        .map_err(|e| Error::Protocol(format!("gather response: {e}")))?;
    if gathered.id != association {
        return Err(Error::Protocol(format!(
            "gather response: association {} is not {association}",
            gathered.id
        )));
    }
    Ok(gathered.candidates)
}

/// Creates an association on a relay's REST API (`POST /jet/association/<id>`,
/// with `Authorization: Bearer KEY` when a key is given), as a relay with an
/// `api_key` requires before an accept. An association that exists already
/// (409) is fine: the other peer, or our previous stream, made it.
pub fn create_association(
    connector: &Connector,
    base: &str,
    association: Uuid,
    api_key: Option<&ApiKey>,
) -> Result<()> {
    let path = format!("/jet/association/{association}");
    let (status, body) = rest_call(connector, base, "POST", &path, api_key)?;
    match status {
        200 | 201 | 204 | 409 => Ok(()),
        _ => {
            // As for gather: the REST API's `{"error": ...}`, or the text.
            let why = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error")?.as_str().map(message::error_text))
                .unwrap_or_else(|| message::error_text(&String::from_utf8_lossy(&body)));
            let hint = match (status, api_key) {
                (401, None) => " (this relay wants an API key: set JET_API_KEY or pass --api-key)",
                (401, Some(_)) => " (the relay refused the API key given)",
                _ => "",
            };
            let reason = format!("{why}{hint}");
            Err(Error::Refused {
                request: format!("creating association {association}"),
                status,
                reason: (!reason.is_empty()).then_some(reason),
            })
        }
    }
}

/// One REST request without a body: `METHOD PATH` on `base` (see [`gather`]
/// for the forms it takes), through the connector's proxy; the status and body.
fn rest_call(
    connector: &Connector,
    base: &str,
    method: &str,
    path: &str,
    api_key: Option<&ApiKey>,
) -> Result<(u16, Vec<u8>)> {
    let url = if let Some(rest) = base.strip_prefix("http://") {
        CandidateUrl::parse(&format!("ws://{rest}"))?
    } else if let Some(rest) = base.strip_prefix("https://") {
        CandidateUrl::parse(&format!("wss://{rest}"))?
    } else {
        CandidateUrl::parse(base)?
    };
    let stream = connector.dial(&url)?;
    let sock = stream.socket();
    sock.set_read_timeout(Some(crate::peer::connector::NETWORK_TIMEOUT))
        .and_then(|()| sock.set_write_timeout(Some(crate::peer::connector::NETWORK_TIMEOUT)))
        .map_err(|e| Error::io("setting timeouts", e))?;
    let authorization = match api_key {
        Some(key) => format!("Authorization: Bearer {}\r\n", key.expose()),
        None => String::new(),
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{authorization}Accept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        url.authority()
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| Error::io(format!("sending {method} {path}"), e))?;
    let answer = read_http_response(&stream);
    stream.kill();
    answer
}

/// Reads an HTTP/1.1 response: the head, then `Content-Length` bytes or
/// everything up to EOF.
fn read_http_response(stream: &Relayed) -> Result<(u16, Vec<u8>)> {
    let mut data = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut eof = false;
    let (status, head_len, length) = loop {
        let mut headers = [httparse::EMPTY_HEADER; message::MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&data) {
            Ok(httparse::Status::Complete(len)) => {
                let chunked = http::header_lossy(response.headers, "Transfer-Encoding")
                    .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
                if chunked {
                    return Err(Error::Protocol(
                        "the REST API answered chunked; expected Content-Length".into(),
                    ));
                }
                let length = http::content_length(response.headers)
                    .map_err(|e| Error::Protocol(format!("the REST response: {e}")))?;
                break (response.code.unwrap_or_default(), len, length);
            }
            Ok(httparse::Status::Partial) if eof => {
                return Err(Error::Protocol(
                    "the REST response ended inside its head".into(),
                ))
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(Error::Protocol(format!("not an HTTP response: {e}"))),
        }
        eof = read_more(stream, &mut data, &mut chunk)?;
    };
    let want = length.map(|l| head_len.saturating_add(l));
    if want.is_some_and(|w| w > MAX_REST_RESPONSE) {
        return Err(Error::Protocol("the REST response is too large".into()));
    }
    while !eof && want.is_none_or(|w| data.len() < w) {
        eof = read_more(stream, &mut data, &mut chunk)?;
    }
    let end = want.unwrap_or(data.len());
    if data.len() < end {
        return Err(Error::Protocol("the REST response ended early".into()));
    }
    Ok((status, data[head_len..end].to_vec()))
}

/// Appends one read to `data`; true at EOF (a reset after the response or a
/// TLS close without close_notify count as EOF: the length check decides).
fn read_more(stream: &Relayed, data: &mut Vec<u8>, chunk: &mut [u8]) -> Result<bool> {
    if data.len() > MAX_REST_RESPONSE {
        return Err(Error::Protocol("the REST response is too large".into()));
    }
    loop {
        match stream.read(chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                data.extend_from_slice(&chunk[..n]);
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if crate::error::is_disconnect(&e) => return Ok(true),
            Err(e) => return Err(Error::io("reading the REST response", e)),
        }
    }
}
