//! The REST API of draft 0.2 §2.2.2: associations, candidate gathering, health
//! and metrics. The only module that builds JSON.

use crate::relay::conn::auth::{self, Action};
use crate::relay::conn::http::{Request, Response};
use crate::relay::shared::Context;
use crate::relay::table::{AssociationInfo, AssociationState, CandidateState, Origin};
use serde_json::{json, Value};
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
    let credential = auth::credential(ctx, req.header("Authorization"));
    if let Some(refusal) = auth::refuse_early(ctx, &credential) {
        return refusal;
    }
    let guard = |action: Action, serve: &dyn Fn() -> Response| match auth::allow(
        ctx,
        &credential,
        action,
    ) {
        Ok(_) => serve(),
        Err(refusal) => refusal,
    };
    match segments.as_slice() {
        ["metrics"] => match method {
            "GET" => guard(Action::Metrics, &|| {
                Response::text(
                    200,
                    crate::relay::conn::exposition::exposition(ctx),
                    crate::relay::metrics::CONTENT_TYPE,
                )
            }),
            _ => not_allowed("GET"),
        },
        ["jet", "association"] | ["jet", "association", ""] => match method {
            "GET" => guard(Action::List, &|| {
                Response::json(
                    200,
                    &Value::Array(ctx.table.list().iter().map(association_json).collect()),
                )
            }),
            _ => not_allowed("GET"),
        },
        ["jet", "association", id] => with_id(id, |id| match method {
            "POST" => guard(Action::Create(id), &|| create(ctx, id)),
            "GET" => guard(Action::Inspect(id), &|| match ctx.table.info(id) {
                Some(info) => Response::json(200, &association_json(&info)),
                None => Response::error(404, "unknown association"),
            }),
            "DELETE" => guard(Action::Delete(id), &|| delete(ctx, id)),
            _ => not_allowed("GET, POST, DELETE"),
        }),
        ["jet", "gather", id] | ["jet", "association", id, "candidates"] => {
            with_id(id, |id| match method {
                "POST" => guard(Action::Gather(id), &|| gather(ctx, req, id)),
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

/// `GET /health`: 200 `ok`, or 503 `draining` once a drain has begun, so a
/// load balancer's health check takes the instance out.
pub(crate) fn health(ctx: &Context, req: &Request) -> Response {
    let version = env!("CARGO_PKG_VERSION");
    let config = ctx.config();
    let instance = &config.instance;
    let (status, state) = if ctx.draining() {
        (503, "draining")
    } else {
        (200, "ok")
    };
    if req.header_has("Accept", "application/json")
        || req
            .header("Accept")
            .is_some_and(|a| a.contains("application/json"))
    {
        Response::json(
            status,
            &json!({ "status": state, "instance": instance, "version": version }),
        )
    } else {
        Response::text(
            status,
            format!("jet-relay {version} instance {instance} {state}\n"),
            "text/plain; charset=utf-8",
        )
    }
}

fn create(ctx: &Context, id: Uuid) -> Response {
    match ctx.table.create(id) {
        Ok(()) => {
            crate::info!(association:% = id; "created through the API");
            Response::json(200, &json!({ "id": id, "state": "created" }))
        }
        Err(why) => Response::error(why.status(), why.reason()),
    }
}

fn delete(ctx: &Context, id: Uuid) -> Response {
    match ctx.table.remove(id) {
        Some(victims) => {
            crate::info!(
                association:% = id;
                "deleted through the API, closing {} connection(s)",
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

/// One URL per transport each listener serves, at the address a peer can
/// reach it ([`BoundListener::authority`]): its external URL, else its bound
/// address, else, for a wildcard bind, the local address the request came in
/// on (never the client's `Host` header, which it can set to anything). A
/// wildcard listener that cannot be named from that address is left out
/// rather than advertised as `0.0.0.0` or `[::]`.
///
/// [`BoundListener::authority`]: crate::relay::shared::BoundListener::authority
pub fn candidate_urls(ctx: &Context, req: &Request) -> Vec<String> {
    let mut urls = Vec::new();
    for listener in &ctx.listeners {
        let Some(authority) = listener.authority(req.local) else {
            let arrival = req.local.map_or("?".into(), |a| a.to_string());
            crate::debug!(
                "gather: {} left out: no address of it is reachable from {arrival}",
                listener.url
            );
            continue;
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
