//! Integration tests: one binary, one module per feature.

mod access;
mod addresses;
mod api;
mod cli;
mod core;
mod cuts;
mod fleet;
mod halves;
mod jmux;
mod layout;
mod lifecycle;
mod logs;
mod metrics;
mod peer;
mod process;
mod pump;
mod reasons;
mod support;
mod tokens;
mod transports;
mod websocket;
