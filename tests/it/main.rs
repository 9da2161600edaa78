//! Integration tests: one binary, one module per feature.

mod access;
mod addresses;
mod api;
mod cli;
mod core;
mod cuts;
mod halves;
mod jmux;
mod lifecycle;
mod metrics;
mod peer;
mod process;
mod pump;
mod support;
mod tokens;
mod transports;
mod websocket;
