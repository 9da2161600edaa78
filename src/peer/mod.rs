//! The peer side: what runs on the machines that connect to a relay.

pub mod jmux;
