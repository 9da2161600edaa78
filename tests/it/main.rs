//! Integration tests: one binary, one module per feature.

mod access;
mod api;
mod cli;
mod core;
mod cuts;
mod jmux;
mod peer;
mod pump;
mod support;
mod tokens;
mod transports;
