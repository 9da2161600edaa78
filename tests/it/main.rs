//! Integration tests: one binary, one module per feature.

mod api;
mod cli;
mod core;
mod peer;
mod support;
mod transports;
