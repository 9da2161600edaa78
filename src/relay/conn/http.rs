//! HTTP/1.1 on the relay's listeners: request framing with limits, keep-alive,
//! and the hand-off of WebSocket upgrades. Routes live in `api.rs`.

use crate::relay::conn::deadline::{read_some_by, ReadError};
use crate::relay::shared::Context;
use crate::relay::stream::Stream;
use crate::wire::http::{self, BadLength};
use std::io;
use std::time::Instant;

/// The largest request head accepted (431 beyond).
pub const MAX_HEAD: usize = 16 * 1024;
/// The largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 64 * 1024;
/// The most headers in one request (431 beyond).
pub const MAX_HEADERS: usize = 64;
/// The most requests served on one keep-alive connection.
pub const MAX_REQUESTS: usize = 1000;
/// The most headers an upgrade request may carry (browsers send about 15).
pub const MAX_UPGRADE_HEADERS: usize = 64;

/// One parsed request. Its `Debug` leaves out the `Authorization` value and
/// the raw head, so the API key can never reach a log.
#[derive(Clone)]
pub struct Request {
    /// `GET`, `POST`...
    pub method: String,
    /// The path without its query string.
    pub path: String,
    /// Headers as sent, in order.
    pub headers: Vec<(String, String)>,
    /// The body (Content-Length bytes).
    pub body: Vec<u8>,
    /// True for HTTP/1.1, false for HTTP/1.0.
    pub http11: bool,
    /// The head as received, through its blank line (for WebSocket upgrades).
    pub head: Vec<u8>,
    /// The address the connection came in on (for candidate URLs).
    pub local: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(n, v)| {
                let shown = if n.eq_ignore_ascii_case("Authorization") {
                    "***"
                } else {
                    v.as_str()
                };
                (n.as_str(), shown)
            })
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("headers", &headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Request {
    /// The first value of a header, compared without regard to case.
    pub fn header(&self, name: &str) -> Option<&str> {
        http::header(&self.headers, name)
    }

    /// True when a comma-separated header contains `token` (any case).
    pub fn header_has(&self, name: &str, token: &str) -> bool {
        http::has_token(&self.headers, name, token)
    }

    pub(crate) fn keep_alive(&self) -> bool {
        if self.header_has("Connection", "close") {
            false
        } else {
            self.http11 || self.header_has("Connection", "keep-alive")
        }
    }
}

/// A response before it is written.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Extra headers (Content-Type, Allow...).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: value.to_string().into_bytes(),
        }
    }

    /// `{"error": "..."}` with a status.
    pub fn error(status: u16, message: &str) -> Response {
        Response::json(status, &serde_json::json!({ "error": message }))
    }

    /// A plain text response.
    pub fn text(status: u16, text: String, content_type: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.into())],
            body: text.into_bytes(),
        }
    }

    /// Adds a header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    fn encode(&self, keep_alive: bool, cors: Option<&str>, head_only: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
            self.status,
            http::reason(self.status),
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(origin) = cors {
            head.push_str(&format!("Access-Control-Allow-Origin: {origin}\r\n"));
            if origin != "*" {
                head.push_str("Vary: Origin\r\n");
            }
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        // A HEAD answer announces the body's length but carries no body.
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Writes `response` as the last answer on a connection, then closes it
/// (lingering so the answer is read), within the handshake timeout.
pub(crate) fn send_and_close(ctx: &Context, stream: &mut Stream, response: &Response) {
    if write(ctx, stream, response, false, false).is_ok() {
        crate::relay::conn::request::linger_close(stream);
    }
}

/// Why no request could be read.
pub(crate) enum Failure {
    /// The connection ended or timed out: close silently.
    Read(ReadError),
    /// The bytes are not an acceptable request: answer this, then close.
    Reject(Response),
}

/// True when the first bytes start an HTTP request line: an uppercase method
/// token of 3 to 7 letters and a space. Anything else is neither JET nor HTTP
/// and is closed without an answer, like a malformed JET packet.
pub fn looks_like_http(prefix: &[u8]) -> bool {
    let method_len = prefix.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (3..=7).contains(&method_len) && prefix.get(method_len) == Some(&b' ')
}

pub(crate) fn write(
    ctx: &Context,
    stream: &mut Stream,
    response: &Response,
    keep_alive: bool,
    head_only: bool,
) -> io::Result<()> {
    let bytes = response.encode(keep_alive, ctx.config().cors_origin.as_deref(), head_only);
    // Left set for the next answer on this connection; an upgrade after it
    // lifts it (`ws::serve_upgrade`).
    stream
        .socket()
        .set_write_timeout(Some(ctx.config().handshake_timeout))?;
    stream.write_all(&bytes)
}

/// Reads one request out of `buf` plus whatever more the stream sends before
/// `deadline`. On success `buf` keeps the bytes after the request.
pub(crate) fn read_request(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Request, Failure> {
    read_request_with(buf, |buf, limit| fill(stream, buf, limit, deadline))
}

/// [`read_request`] with the socket read as a function: `more(buf, limit)`
/// appends at least one byte (keeping at most `limit` buffered) or fails.
/// The fuzz targets drive it from a byte slice (`crate::fuzzing`).
pub(crate) fn read_request_with(
    buf: &mut Vec<u8>,
    mut more: impl FnMut(&mut Vec<u8>, usize) -> Result<(), Failure>,
) -> Result<Request, Failure> {
    let head_len = loop {
        if !buf.is_empty() {
            match head_length(buf)? {
                Some(len) => break len,
                None if buf.len() >= MAX_HEAD => {
                    return Err(Failure::Reject(Response::error(
                        431,
                        "request head over 16 KiB",
                    )))
                }
                None => {}
            }
        }
        more(buf, MAX_HEAD)?;
    };
    if head_len > MAX_HEAD {
        return Err(Failure::Reject(Response::error(
            431,
            "request head over 16 KiB",
        )));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed
        .parse(&buf[..head_len])
        .map_err(|e| Failure::Reject(Response::error(400, &format!("malformed request: {e}"))))?;
    let method = parsed.method.unwrap_or_default().to_owned();
    let target = parsed.path.unwrap_or_default();
    let path = target.split_once('?').map_or(target, |(p, _)| p).to_owned();
    let http11 = parsed.version == Some(1);
    let headers: Vec<(String, String)> = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    if http::values(&headers, "Transfer-Encoding").next().is_some() {
        let why = if http::values(&headers, "Content-Length").next().is_some() {
            "Transfer-Encoding together with Content-Length"
        } else {
            "Transfer-Encoding is not supported; send Content-Length"
        };
        return Err(Failure::Reject(Response::error(400, why)));
    }
    let body_len = match http::content_length(&headers) {
        Ok(length) => length.unwrap_or(0),
        Err(BadLength::TooLarge) => {
            return Err(Failure::Reject(Response::error(
                413,
                "request body over 64 KiB",
            )))
        }
        Err(e) => return Err(Failure::Reject(Response::error(400, &e.to_string()))),
    };
    if body_len > MAX_BODY {
        return Err(Failure::Reject(Response::error(
            413,
            "request body over 64 KiB",
        )));
    }
    while buf.len() < head_len + body_len {
        more(buf, head_len + body_len)?;
    }
    let head = buf[..head_len].to_vec();
    let body = buf[head_len..head_len + body_len].to_vec();
    buf.drain(..head_len + body_len);
    Ok(Request {
        method,
        path,
        headers,
        body,
        http11,
        head,
        local: None,
    })
}

/// The length of the head at the start of `buf` once it is complete.
fn head_length(buf: &[u8]) -> Result<Option<usize>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Request::new(&mut headers).parse(buf) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Failure::Reject(Response::error(
            431,
            "too many request headers",
        ))),
        Err(e) => Err(Failure::Reject(Response::error(
            400,
            &format!("malformed request: {e}"),
        ))),
    }
}

/// Reads more bytes (at most up to `limit` buffered) before `deadline`.
fn fill(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    limit: usize,
    deadline: Instant,
) -> Result<(), Failure> {
    let mut chunk = [0u8; 4096];
    let want = limit.saturating_sub(buf.len()).clamp(1, chunk.len());
    let n = read_some_by(stream, &mut chunk[..want], deadline).map_err(Failure::Read)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::looks_like_http;

    #[test]
    fn request_debug_hides_the_api_key() {
        let request = super::Request {
            method: "GET".into(),
            path: "/metrics".into(),
            headers: vec![(
                "Authorization".into(),
                "Bearer sekrit-key-0123456789".into(),
            )],
            body: Vec::new(),
            http11: true,
            head: b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer sekrit-key-0123456789\r\n\r\n"
                .to_vec(),
            local: None,
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("sekrit"), "{shown}");
        assert!(shown.contains("/metrics"));
    }

    #[test]
    fn request_lines_are_told_from_other_bytes() {
        for yes in [
            &b"GET / HT"[..],
            b"POST /je",
            b"DELETE /",
            b"OPTIONS ",
            b"PUT /x H",
        ] {
            assert!(looks_like_http(yes), "{yes:?}");
        }
        for no in [
            &b"JEX\0\x00\x10\x00\x00"[..],
            b"hello re",
            b"GE / HTT",
            b"\x16\x03\x01\x02\x00\x01\x00\x01",
        ] {
            assert!(!looks_like_http(no), "{no:?}");
        }
    }
}
