//! The relay process and how it runs: here, its life under systemd.

#[cfg(target_os = "linux")]
pub mod systemd;
