//! Integration tests: one binary, one module per feature.

mod api;
mod cli;
mod core;
mod halves;
mod peer;
mod pump;
mod support;
mod transports;
