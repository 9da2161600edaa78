//! The REST API of draft 0.2 §2.2.2: associations, candidate gathering, health
//! and metrics. The only module that builds JSON.

use crate::relay::conn::http::{Request, Response};
use crate::relay::shared::Context;
use crate::relay::table::{AssociationInfo, AssociationState, CandidateState, Origin};
use serde_json::{json, Value};
use std::fmt::Write;
use std::sync::atomic::Ordering;
use uuid::Uuid;

/// Serves one request.
pub fn route(ctx: &Context, req: &Request) -> Response {
    let segments: Vec<&str> = req.path.split('/').skip(1).collect();
    let method = req.method.as_str();
    if method == "OPTIONS" && ctx.config().cors_origin.is_some() {
        return preflight();
    }
    if segments == ["health"] {
        return match method {
            "GET" | "HEAD" => health(ctx, req),
            _ => not_allowed("GET"),
        };
    }
    if let Err(response) = authorize(ctx, req) {
        return response;
    }
    match segments.as_slice() {
        ["metrics"] => match method {
            "GET" => Response::text(200, metrics(ctx), "text/plain; version=0.0.4"),
            _ => not_allowed("GET"),
        },
        ["jet", "association"] | ["jet", "association", ""] => match method {
            "GET" => Response::json(
                200,
                &Value::Array(ctx.table.list().iter().map(association_json).collect()),
            ),
            _ => not_allowed("GET"),
        },
        ["jet", "association", id] => with_id(id, |id| match method {
            "POST" => create(ctx, id),
            "GET" => match ctx.table.info(id) {
                Some(info) => Response::json(200, &association_json(&info)),
                None => Response::error(404, "unknown association"),
            },
            "DELETE" => delete(ctx, id),
            _ => not_allowed("GET, POST, DELETE"),
        }),
        ["jet", "gather", id] | ["jet", "association", id, "candidates"] => {
            with_id(id, |id| match method {
                "POST" => gather(ctx, req, id),
                _ => not_allowed("POST"),
            })
        }
        _ => Response::error(404, "no such endpoint"),
    }
}

fn with_id(text: &str, f: impl FnOnce(Uuid) -> Response) -> Response {
    match Uuid::parse_str(text) {
        Ok(id) => f(id),
        Err(_) => Response::error(400, &format!("{text:?} is not a UUID")),
    }
}

fn not_allowed(allow: &'static str) -> Response {
    Response::error(405, "method not allowed").with("Allow", allow)
}

fn preflight() -> Response {
    Response {
        status: 204,
        headers: vec![
            (
                "Access-Control-Allow-Methods",
                "GET, POST, DELETE, OPTIONS".into(),
            ),
            (
                "Access-Control-Allow-Headers",
                "Authorization, Content-Type".into(),
            ),
            ("Access-Control-Max-Age", "600".into()),
        ],
        body: Vec::new(),
    }
}

/// Checks the bearer key when one is configured.
fn authorize(ctx: &Context, req: &Request) -> Result<(), Response> {
    let Some(key) = &ctx.config().api_key else {
        return Ok(());
    };
    let presented = req
        .header("Authorization")
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match presented {
        Some(token) if key.matches(token.as_bytes()) => Ok(()),
        Some(_) => Err(unauthorized("wrong API key")),
        None => Err(unauthorized("an API key is required")),
    }
}

fn unauthorized(why: &str) -> Response {
    Response::error(401, why).with("WWW-Authenticate", "Bearer")
}

fn health(ctx: &Context, req: &Request) -> Response {
    let version = env!("CARGO_PKG_VERSION");
    let instance = &ctx.config().instance;
    if req.header_has("Accept", "application/json")
        || req
            .header("Accept")
            .is_some_and(|a| a.contains("application/json"))
    {
        Response::json(
            200,
            &json!({ "status": "ok", "instance": instance, "version": version }),
        )
    } else {
        Response::text(
            200,
            format!("jet-relay {version} instance {instance} ok\n"),
            "text/plain; charset=utf-8",
        )
    }
}

fn create(ctx: &Context, id: Uuid) -> Response {
    match ctx.table.create(id) {
        Ok(()) => {
            crate::info!("association={id} created through the API");
            Response::json(200, &json!({ "id": id, "state": "created" }))
        }
        Err(why) => Response::error(why.status(), why.reason()),
    }
}

fn delete(ctx: &Context, id: Uuid) -> Response {
    match ctx.table.remove(id) {
        Some(victims) => {
            crate::info!(
                "association={id} deleted through the API, closing {} connection(s)",
                victims.len()
            );
            for victim in victims {
                victim.kill();
            }
            Response::json(200, &json!({ "id": id, "state": "deleted" }))
        }
        None => Response::error(404, "unknown association"),
    }
}

fn gather(ctx: &Context, req: &Request, id: Uuid) -> Response {
    let urls = candidate_urls(ctx, req);
    let ids = match ctx.table.gather(id, &urls) {
        Ok(ids) => ids,
        Err(why) => return Response::error(why.status(), why.reason()),
    };
    let candidates: Vec<Value> = ids
        .iter()
        .zip(&urls)
        .map(|(cand, url)| json!({ "id": cand, "url": url }))
        .collect();
    Response::json(200, &json!({ "id": id, "candidates": candidates }))
}

/// One URL per transport each listener serves, from its external URL, else
/// its bound address. A wildcard bind uses the address the request came in on
/// (never the client's `Host` header, which it can set to anything).
pub fn candidate_urls(ctx: &Context, req: &Request) -> Vec<String> {
    let mut urls = Vec::new();
    for listener in &ctx.listeners {
        let authority = match &listener.external_url {
            Some(url) => url
                .split_once("://")
                .map_or(url.as_str(), |(_, rest)| rest)
                .trim_end_matches('/')
                .to_owned(),
            None if listener.local.ip().is_unspecified() => {
                let ip = req
                    .local
                    .map(|a| a.ip())
                    .filter(|ip| ip.is_ipv4() == listener.local.is_ipv4())
                    .unwrap_or(listener.local.ip());
                std::net::SocketAddr::new(ip, listener.local.port()).to_string()
            }
            None => listener.local.to_string(),
        };
        let transports = crate::relay::config::advertised_transports(
            &listener.url,
            listener.external_url.as_deref(),
        );
        for kind in transports {
            urls.push(format!("{}://{authority}", kind.as_str()));
        }
    }
    urls
}

fn association_json(info: &AssociationInfo) -> Value {
    let state = match info.state {
        AssociationState::Created => "created",
        AssociationState::Active => "active",
        AssociationState::Ended => "ended",
    };
    let candidates: Vec<Value> = info
        .candidates
        .iter()
        .map(|c| {
            let state = match c.state {
                CandidateState::Gathered => "gathered",
                CandidateState::Parked => "parked",
                CandidateState::Paired => "paired",
                CandidateState::Relaying => "relaying",
                CandidateState::Closed => "closed",
            };
            let transport = c
                .accept_transport
                .map(|k| k.as_str().to_owned())
                .or_else(|| {
                    c.url
                        .as_deref()
                        .and_then(|u| u.split_once("://"))
                        .map(|(s, _)| s.to_owned())
                });
            json!({
                "id": c.id,
                "url": c.url,
                "transport": transport,
                "accept_transport": c.accept_transport.map(|k| k.as_str()),
                "connect_transport": c.connect_transport.map(|k| k.as_str()),
                "state": state,
                "bytes_accept_to_connect": c.accept_to_connect,
                "bytes_connect_to_accept": c.connect_to_accept,
            })
        })
        .collect();
    json!({
        "id": info.id,
        "state": state,
        "origin": match info.origin { Origin::Api => "api", Origin::Jet => "jet" },
        "created_at": crate::log::timestamp(info.created_at),
        "selected": info.selected,
        "candidates": candidates,
    })
}

/// The Prometheus text exposition of every counter and gauge.
pub fn metrics(ctx: &Context) -> String {
    let m = &ctx.metrics;
    let counts = ctx.table.counts();
    let open = ctx.registry.len();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP jet_relay_{name} {help}");
        let _ = writeln!(out, "# TYPE jet_relay_{name} {kind}");
        for (labels, value) in samples {
            if labels.is_empty() {
                let _ = writeln!(out, "jet_relay_{name} {value}");
            } else {
                let _ = writeln!(out, "jet_relay_{name}{{{labels}}} {value}");
            }
        }
    };
    let relaying_conns = 2 * (counts.paired + counts.relaying);
    family(
        "connections_open",
        "gauge",
        "Open connections by kind: parked accepts, paired (relaying) peers, and the rest (handshaking or HTTP).",
        &[
            ("kind=\"parked\"", counts.parked as u64),
            ("kind=\"paired\"", relaying_conns as u64),
            (
                "kind=\"handshake_or_http\"",
                open.saturating_sub(counts.parked + relaying_conns) as u64,
            ),
        ],
    );
    family(
        "connections_accepted_total",
        "counter",
        "Connections accepted on every listener.",
        &[("", load(&m.connections_accepted))],
    );
    family(
        "associations",
        "gauge",
        "Associations by state.",
        &[
            ("state=\"created\"", counts.created as u64),
            ("state=\"active\"", counts.active as u64),
            ("state=\"ended\"", counts.ended as u64),
        ],
    );
    family(
        "pairs_relaying",
        "gauge",
        "Paired candidates whose relay is running.",
        &[("", (counts.paired + counts.relaying) as u64)],
    );
    family(
        "pairs_started_total",
        "counter",
        "Pairs formed.",
        &[("", load(&m.pairs_started))],
    );
    family(
        "bytes_relayed_total",
        "counter",
        "Bytes relayed, by direction.",
        &[
            (
                "direction=\"accept_to_connect\"",
                load(&m.bytes_accept_to_connect),
            ),
            (
                "direction=\"connect_to_accept\"",
                load(&m.bytes_connect_to_accept),
            ),
        ],
    );
    let outcomes: Vec<(String, u64)> = crate::relay::metrics::Outcome::ALL
        .iter()
        .map(|o| (format!("outcome=\"{}\"", o.as_str()), m.handshakes(*o)))
        .collect();
    let outcomes: Vec<(&str, u64)> = outcomes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(
        "handshakes_total",
        "counter",
        "JET handshakes by outcome.",
        &outcomes,
    );
    family(
        "rejections_total",
        "counter",
        "JET requests refused with a status, by reason.",
        &[
            (
                "reason=\"bad_request\",status=\"400\"",
                load(&m.rejected_400),
            ),
            ("reason=\"not_found\",status=\"404\"", load(&m.rejected_404)),
            ("reason=\"conflict\",status=\"409\"", load(&m.rejected_409)),
            (
                "reason=\"unavailable\",status=\"503\"",
                load(&m.rejected_503),
            ),
        ],
    );
    family(
        "handshake_timeouts_total",
        "counter",
        "Connections closed because no complete request came within the handshake timeout.",
        &[("", m.handshakes(crate::relay::metrics::Outcome::Timeout))],
    );
    family(
        "tls_handshake_failures_total",
        "counter",
        "Connections on TLS listeners closed because their TLS handshake failed.",
        &[("", load(&m.tls_handshake_failures))],
    );
    family(
        "websocket_upgrade_failures_total",
        "counter",
        "Malformed WebSocket upgrades refused before any upgrade (bad key, version or path).",
        &[("", load(&m.ws_upgrade_failures))],
    );
    let reasons: Vec<(String, u64)> = crate::relay::metrics::ProxyFailure::ALL
        .iter()
        .map(|r| (format!("reason=\"{}\"", r.as_str()), m.proxy_failures(*r)))
        .collect();
    let reasons: Vec<(&str, u64)> = reasons.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family(
        "proxy_header_failures_total",
        "counter",
        "Connections on proxy_protocol listeners closed for their PROXY header, by reason.",
        &reasons,
    );
    family(
        "proxy_local_total",
        "counter",
        "Connections a trusted balancer opened for itself (PROXY v2 LOCAL): /health answered, anything else closed.",
        &[
            ("outcome=\"health\"", load(&m.proxy_local_health)),
            ("outcome=\"closed\"", load(&m.proxy_local_closed)),
        ],
    );
    family(
        "associations_expired_total",
        "counter",
        "Associations removed because no candidate was selected within the TTL.",
        &[("", load(&m.associations_expired))],
    );
    family(
        "idle_closed_total",
        "counter",
        "Pairs closed by the idle timeout.",
        &[("", load(&m.idle_closed))],
    );
    family(
        "http_responses_total",
        "counter",
        "REST responses by status class.",
        &[
            ("class=\"2xx\"", load(&m.http_2xx)),
            ("class=\"4xx\"", load(&m.http_4xx)),
            ("class=\"5xx\"", load(&m.http_5xx)),
        ],
    );
    family(
        "thread_spawn_failures_total",
        "counter",
        "Connections refused because the system would not start a thread.",
        &[("", load(&m.spawn_failures))],
    );
    family(
        "threads",
        "gauge",
        "Connection and copy threads alive (running or waiting for work).",
        &[("", ctx.pool.threads() as u64)],
    );
    out
}
