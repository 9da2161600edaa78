//! Integration tests: one binary, one module per feature.

mod api;
mod cli;
mod core;
mod support;
mod transports;
