//! Integration tests: one binary, one module per feature.

mod api;
mod cli;
mod core;
mod cuts;
mod fleet;
mod halves;
mod jmux;
mod peer;
mod pump;
mod support;
mod transports;
