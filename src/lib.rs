//! jet-relay: a relay for the JET rendezvous protocol.
//!
//! Two peers that can only make outgoing connections meet here: the server
//! peer sends an accept for an association, the client peer a connect for the
//! same one, and the relay pairs the two sockets and copies bytes both ways.
//! [`Server::start`] runs a relay; [`client`] is the peer side.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod log;

pub mod api;
pub mod client;
pub mod config;
pub mod error;
pub mod handshake;
pub mod http;
pub mod message;
pub mod metrics;
pub mod negotiate;
pub mod packet;
pub mod peer;
pub mod pool;
pub mod pump;
pub mod reaper;
pub mod server;
pub mod splice;
pub mod table;
pub mod tls;
pub mod transport;
pub mod wire;
pub mod ws;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Server;
