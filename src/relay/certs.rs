//! TLS listeners' certificates: loaded from PEM files, and swapped in place
//! on reload (a reload reads the files named by the new configuration), so new handshakes use the new certificate while running
//! sessions keep theirs.

use crate::error::{Error, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// One TLS listener's certificate and key, and the files they come from.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// Loads the certificate chain (server certificate first) and its key.
    /// Errors name the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<CertStore> {
        Ok(CertStore {
            current: RwLock::new(load_certified_key(cert, key)?),
        })
    }

    /// Puts an already loaded key in force.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }
}

/// The rustls configuration of a TLS listener serving `store`'s certificate:
/// the ring provider, TLS 1.3 and 1.2 only, no client certificates.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Config(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    Ok(Arc::new(config))
}

/// A TLS server configuration for `cert` and `key` that never changes (the
/// benchmark's direct TLS baseline, tests).
pub fn fixed_server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    server_config(Arc::new(CertStore::load(cert, key)?))
}

/// Reads a certificate chain and its key; errors name the file at fault.
pub(crate) fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>> {
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
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key_der, &provider).map_err(|e| {
        Error::Config(format!(
            "cert {} with key {}: {e}",
            cert.display(),
            key.display()
        ))
    })?;
    Ok(Arc::new(certified))
}
