//! The protocol as data: JET packets, the HTTP heads inside them, candidate
//! URLs and signaling messages. Nothing here does I/O or starts a thread.

pub mod base64;
pub mod candidate;
pub(crate) mod http;
pub mod jmux;
pub mod message;
pub mod packet;
pub mod proxy_header;
pub mod secret;
pub mod signal;
pub mod websocket;

pub use candidate::{CandidateUrl, Transport};
