//! jet-relay: a relay for the JET rendezvous protocol.
//!
//! Two peers that can only make outgoing connections meet here: the server
//! peer sends an accept for an association, the client peer a connect for the
//! same one, and the relay pairs the two sockets and copies bytes both ways.
//! [`relay::Server::start`] runs a relay; [`peer`] is the peer side; [`wire`]
//! is the protocol as data.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod log;

pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod peer;
pub mod relay;
pub mod transport;
pub mod wire;

pub use error::{Error, Result};
pub use relay::{Config, Server};
