//! A connection's life before it is paired: the first bytes, the JET request,
//! HTTP and the REST API, WebSocket upgrades, the TLS handshake.

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod deadline;
pub(crate) mod dispatch;
pub(crate) mod exposition;
pub(crate) mod http;
pub(crate) mod keepalive;
pub(crate) mod proxy;
pub(crate) mod request;
pub(crate) mod scrape;
pub(crate) mod tls;
pub(crate) mod upgrade;
