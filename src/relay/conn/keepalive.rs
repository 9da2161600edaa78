//! A non-JET connection: HTTP/1.1 requests kept alive and routed to the REST
//! API, or one WebSocket upgrade handed to its transport.

use crate::relay::conn::deadline::{read_failed, ReadError};
use crate::relay::conn::http::{
    looks_like_http, read_request, write, Failure, Request, Response, MAX_REQUESTS,
};
use crate::relay::conn::proxy::{self, Admitted, Scope};
use crate::relay::metrics::Outcome;
use crate::relay::shared::Context;
use crate::relay::stream::Stream;
use crate::wire::packet::HEADER_LEN;
use std::sync::Arc;
use std::time::Instant;

/// Serves a connection whose first bytes (`prefix`) are not a JET packet:
/// requests until the peer closes, asks to close, or is idle past the
/// handshake timeout.
pub fn serve(
    ctx: &Arc<Context>,
    mut stream: Stream,
    prefix: &[u8; HEADER_LEN],
    deadline: Instant,
    from: &Admitted,
) {
    // Every request of a keep-alive connection counts against its client: the
    // peer, or the one a PROXY header named (never the balancer).
    let (client, scope) = (from.peer.ip(), from.scope);
    if scope == Scope::HealthOnly && !looks_like_http(prefix) {
        return proxy::local_closed(ctx, "neither JET nor HTTP");
    }
    if !looks_like_http(prefix) {
        ctx.metrics.handshake(Outcome::Malformed);
        crate::warn!(
            "closed: neither a JET packet nor HTTP (first bytes {:02x?})",
            &prefix[..]
        );
        return;
    }
    let mut buf = prefix.to_vec();
    let mut deadline = deadline;
    // The address every request of this connection arrived on.
    let local = stream.socket().local_addr().ok();
    for served in 0..MAX_REQUESTS {
        let request = match read_request(&mut stream, &mut buf, deadline) {
            Ok(mut request) => {
                // A request came whole: no longer a handshake in progress.
                stream.end_handshake();
                request.local = local;
                request
            }
            Err(Failure::Read(ReadError::Closed(_))) if served > 0 && buf.is_empty() => return,
            Err(Failure::Read(ReadError::Timeout)) if served > 0 && buf.is_empty() => {
                crate::debug!("keep-alive connection idle, closed");
                return;
            }
            Err(Failure::Read(e)) => return read_failed(ctx, e),
            Err(Failure::Reject(response)) => {
                ctx.metrics.handshake(Outcome::Malformed);
                crate::warn!(
                    "bad HTTP request: {} {}",
                    response.status,
                    String::from_utf8_lossy(&response.body)
                );
                let _ = write(ctx, &mut stream, &response, false, false);
                crate::relay::conn::request::linger_close(&mut stream);
                return;
            }
        };
        if scope == Scope::HealthOnly && !is_health_check(&request) {
            return proxy::local_closed(ctx, "a request other than /health");
        }
        if request.method == "GET" && request.header_has("Upgrade", "websocket") {
            // A WebSocket candidate: the head goes to the WebSocket transport
            // with whatever the client sent after it (its first frames).
            let leftover = std::mem::take(&mut buf);
            let answered = served > 0;
            return crate::relay::conn::upgrade::serve_upgrade(
                ctx,
                stream,
                &request.head,
                leftover,
                answered,
                deadline,
            );
        }
        // The balancer's own connection gets one answer (HAProxy's checks are
        // HTTP/1.0 anyway).
        let keep_alive =
            request.keep_alive() && served + 1 < MAX_REQUESTS && scope == Scope::Everything;
        let response = match scope {
            // The balancer's checks are never rate limited: a 429 would take
            // this instance out of the balance.
            Scope::HealthOnly => {
                ctx.metrics
                    .proxy_local_health
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                crate::relay::conn::api::route(ctx, &request)
            }
            Scope::Everything => match ctx.limits.check_rate(client, Instant::now()) {
                Err(retry) => too_many_requests(retry),
                Ok(_) => crate::relay::conn::api::route(ctx, &request),
            },
        };
        let (method, path, status) = (&request.method, &request.path, response.status);
        match scope {
            Scope::Everything => crate::info!("http {method} {path} -> {status}"),
            // The balancer checks every second: only on demand.
            Scope::HealthOnly => crate::debug!("http {method} {path} -> {status}"),
        }
        ctx.metrics.http_response(response.status);
        let head_only = request.method == "HEAD";
        if write(ctx, &mut stream, &response, keep_alive, head_only).is_err() || !keep_alive {
            if !keep_alive {
                crate::relay::conn::request::linger_close(&mut stream);
            }
            return;
        }
        if ctx.stopping() {
            return;
        }
        deadline = Instant::now() + ctx.config().handshake_timeout;
    }
}

/// What a balancer's own connection may ask: `GET` or `HEAD /health`, no upgrade.
fn is_health_check(request: &Request) -> bool {
    matches!(request.method.as_str(), "GET" | "HEAD")
        && request.path == "/health"
        && !request.header_has("Upgrade", "websocket")
}

/// The answer to a client over its REST rate (`[client_limits]` `rest_rate`).
fn too_many_requests(retry: crate::relay::limits::RetryAfter) -> Response {
    let secs = retry.as_secs_ceil();
    Response::error(
        429,
        &format!(
            "too many requests from your address (client_limits.rest_rate); retry after {secs} s"
        ),
    )
    .with("Retry-After", secs.to_string())
}
