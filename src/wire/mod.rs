//! The protocol as data: parsers and encoders with no I/O and no threads.

pub mod proxy_header;
