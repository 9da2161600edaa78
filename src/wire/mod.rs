//! The protocols as data: message types, encoders and decoders, no I/O and no threads.

pub mod jmux;
