//! The peer side: opening candidates on a relay, the relayed stream, bridges,
//! and the negotiation between two peers.

pub mod bridge;
pub(crate) mod connector;
pub(crate) mod gather;
pub(crate) mod host;
pub mod jmux;
pub(crate) mod local_addrs;
pub mod negotiate;
pub mod proxy;
pub mod signaling;
pub mod socks;
pub(crate) mod stream;
pub(crate) mod trust;
pub mod tunnels;

pub use bridge::{bridge, Bridged, Local};
pub use connector::{Connector, JetRequest};
pub use gather::create_association;
pub use stream::Relayed;
pub use trust::TlsOptions;
