//! The relay's pieces that are being gathered under one module.

pub mod token;
