//! TLS for the listeners: one certificate and key (PEM) from `[tls]` /
//! `-cert` / `-key`, loaded into a rustls `ServerConfig` with the ring
//! provider. Protocol plugins clone it to set their own ALPN. (The Go original
//! accepted these flags and ignored them.)

use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, TlsConfig};

/// Loads the server config, or `None` when TLS is not configured.
pub fn load(cfg: &TlsConfig) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
    let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| ConfigError(format!("tls.cert: {}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!("tls.cert: {}: no certificate found", cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| ConfigError(format!("tls.key: {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError(format!("tls: certificate and key do not fit: {e}")))?;
    Ok(Some(Arc::new(config)))
}
