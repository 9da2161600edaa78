//! Integration tests: one binary, one module per feature.

mod cli;
mod core;
mod pump;
mod support;
