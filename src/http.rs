//! HTTP/1.1 on the relay's listeners: the REST API and WebSocket upgrades.
//!
//! This is the transport branch's minimal version: it reads the request head
//! and hands WebSocket upgrades to [`crate::ws::serve_upgrade`]; every other
//! request gets a 404 until the REST API serves it.

use crate::handshake::{self, read_some_by};
use crate::metrics::Outcome;
use crate::packet::HEADER_LEN;
use crate::server::Context;
use crate::transport::Stream;
use std::sync::Arc;
use std::time::Instant;

/// The longest request head read; a longer one is refused with 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers a request may carry.
pub const MAX_HEADERS: usize = 64;
/// Bytes asked of the stream per read while the head is incomplete.
const HEAD_READ: usize = 4096;

/// Serves a connection whose first bytes (`prefix`) are not a JET packet.
pub fn serve(
    ctx: &Arc<Context>,
    conn: u64,
    stream: Stream,
    prefix: &[u8; HEADER_LEN],
    deadline: Instant,
) {
    let mut buf = prefix.to_vec();
    // Bounded: each pass reads at least one byte, and MAX_HEAD caps the total.
    let (head_len, upgrade) = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(n)) => {
                break (
                    n,
                    req.method == Some("GET") && crate::ws::wants_upgrade(&req),
                )
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return refuse(ctx, conn, &stream, 431, "request head too large");
            }
            Err(e) => {
                ctx.metrics.handshake(Outcome::Malformed);
                crate::warn!(
                    "conn={conn} closed: neither a JET packet nor HTTP ({e}; first bytes {:02x?})",
                    &prefix[..4]
                );
                return;
            }
        }
        let filled = buf.len();
        buf.resize(filled + HEAD_READ.min(MAX_HEAD - filled), 0);
        match read_some_by(&*stream, &mut buf[filled..], deadline) {
            Ok(n) => buf.truncate(filled + n),
            Err(e) => return handshake::read_failed(ctx, conn, e),
        }
    };
    let leftover = buf.split_off(head_len);
    if upgrade {
        return crate::ws::serve_upgrade(ctx, conn, stream, &buf, leftover, deadline);
    }
    refuse(ctx, conn, &stream, 404, "no REST API on this build");
}

/// Answers with a bodiless status, then closes.
fn refuse(ctx: &Context, conn: u64, stream: &Stream, status: u16, why: &str) {
    ctx.metrics.handshake(Outcome::Rejected);
    ctx.metrics.rejected(status);
    crate::warn!("conn={conn} HTTP request refused {status}: {why}");
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        crate::message::reason(status)
    );
    if handshake::write_response(ctx, &**stream, response.as_bytes()).is_ok() {
        handshake::linger_close(&**stream);
    }
}
