//! Address prefixes.
