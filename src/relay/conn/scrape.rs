//! Connections of the `metrics_listen` listener: `GET /metrics` and `/health`, nothing else.

use crate::relay::conn::deadline::read_failed;
use crate::relay::conn::exposition::exposition;
use crate::relay::conn::http::{read_request, write, Failure, Request, Response};
use crate::relay::metrics::CONTENT_TYPE;
use crate::relay::shared::Context;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// Serves one request on a metrics connection, then closes it: a scraper
/// opens one connection per scrape or keeps none, so no keep-alive.
pub fn handle(ctx: Arc<Context>, sock: TcpStream, peer: SocketAddr) {
    let Some((mut stream, conn)) = crate::relay::shared::tcp_stream(&ctx, sock) else {
        return;
    };
    let deadline = Instant::now() + ctx.config().handshake_timeout;
    let mut buf = Vec::new();
    let (response, head_only) = match read_request(&mut stream, &mut buf, deadline) {
        Ok(request) => (answer(&ctx, &request), request.method == "HEAD"),
        Err(Failure::Reject(response)) => (response, false),
        Err(Failure::Read(e)) => return read_failed(&ctx, e),
    };
    crate::debug!("conn={conn} peer={peer} metrics -> {}", response.status);
    ctx.metrics.http_response(response.status);
    if write(&ctx, &mut stream, &response, false, head_only).is_ok() {
        crate::relay::conn::request::linger_close(&mut stream);
    }
}

/// The answer to one request: the exposition, or why not.
fn answer(ctx: &Context, req: &Request) -> Response {
    if req.path == "/health" && matches!(req.method.as_str(), "GET" | "HEAD") {
        // Open like the main listeners' /health, and still answering (503)
        // while the relay drains.
        return crate::relay::conn::api::health(ctx, req);
    }
    if req.path != "/metrics" {
        return Response::error(404, "this listener serves /metrics and /health only");
    }
    if !matches!(req.method.as_str(), "GET" | "HEAD") {
        return Response::error(405, "method not allowed").with("Allow", "GET, HEAD");
    }
    if let Some(token) = &ctx.config().metrics_token {
        let presented = req
            .header("Authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        if !presented.is_some_and(|p| token.matches(p.as_bytes())) {
            return Response::error(401, "a metrics token is required")
                .with("WWW-Authenticate", "Bearer");
        }
    }
    Response::text(200, exposition(ctx), CONTENT_TYPE)
}
