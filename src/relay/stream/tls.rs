//! TLS listeners' rustls configuration, from PEM files (the stream itself is
//! `crate::transport::tls`).

use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use std::path::Path;
use std::sync::Arc;

/// Builds the rustls configuration of one TLS listener: the ring provider,
/// TLS 1.3 and 1.2 only, no client certificates. Errors name the file at fault.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let unusable = |what: &str, path: &Path, e: &dyn std::fmt::Display| {
        Error::Config(format!("{what} {}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| unusable("cert", cert, &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unusable("cert", cert, &e))?;
    if chain.is_empty() {
        return Err(unusable("cert", cert, &"no CERTIFICATE block in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| unusable("key", key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            Error::Config(format!(
                "cert {} with key {}: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    Ok(Arc::new(config))
}
