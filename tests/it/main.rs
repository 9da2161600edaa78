//! Integration tests: one binary, one module per feature.

mod access;
mod addresses;
mod api;
mod cli;
mod core;
mod cuts;
mod fleet;
mod guard;
mod halves;
mod jmux;
mod layout;
mod lifecycle;
mod limits;
mod logs;
mod metrics;
mod parked;
mod peer;
mod process;
mod proxies;
mod pump;
mod reasons;
mod support;
mod tokens;
mod transports;
mod tunnel;
mod websocket;
