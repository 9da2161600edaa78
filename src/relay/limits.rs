//! Per-client limits.
