//! HTTP/1.1 on the relay's listeners: the REST API and WebSocket upgrades.

use crate::metrics::Outcome;
use crate::packet::HEADER_LEN;
use crate::server::Context;
use crate::transport::Stream;
use std::sync::Arc;
use std::time::Instant;

/// Serves a connection whose first bytes (`prefix`) are not a JET packet.
pub fn serve(
    ctx: &Arc<Context>,
    conn: u64,
    _stream: Stream,
    prefix: &[u8; HEADER_LEN],
    _deadline: Instant,
) {
    ctx.metrics.handshake(Outcome::Malformed);
    crate::warn!(
        "conn={conn} closed: not a JET packet (first bytes {:02x?})",
        &prefix[..4]
    );
}
