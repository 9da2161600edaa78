//! The peer side: opening candidates on a relay, the relayed stream, bridges,
//! and the negotiation between two peers.

pub mod client;
pub mod jmux;
pub mod negotiate;
pub mod proxy;
pub mod socks;
