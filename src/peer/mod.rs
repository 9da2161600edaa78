//! The peer side's ways out: proxies on the way to a relay, and the local SOCKS5 listener's handshake.

pub mod proxy;
pub mod socks;
