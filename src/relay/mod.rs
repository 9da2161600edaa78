//! The relay's policy pieces: who may connect and how much.

pub mod cidr;
pub mod limits;
