//! The relay: listeners, the association table, connection handling and the
//! copy threads.

pub(crate) mod certs;
pub mod cidr;
pub mod config;
pub(crate) mod conn;
pub(crate) mod limits;
pub(crate) mod listen;
pub(crate) mod metrics;
pub(crate) mod pool;
pub(crate) mod pump;
pub(crate) mod reaper;
pub(crate) mod registry;
pub mod server;
pub(crate) mod shared;
pub(crate) mod socket;
pub(crate) mod splice;
pub(crate) mod stream;
#[cfg(target_os = "linux")]
pub mod systemd;
pub(crate) mod table;
pub(crate) mod token;
pub(crate) mod watch;

pub use certs::fixed_server_config as tls_server_config;
pub use config::Config;
pub use metrics::{Histogram, Metrics, Outcome, ProxyFailure};
pub use server::ReloadReport;
pub use server::{Associations, Server};
pub use table::{
    AssociationInfo, AssociationState, CandidateInfo, CandidateState, EndReason, Origin,
};
