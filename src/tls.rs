//! TLS for the listeners: one certificate and key (PEM) from `[tls]` /
//! `-cert` / `-key`, loaded into a rustls `ServerConfig` with the ring
//! provider. Protocol plugins clone it to set their own ALPN. (The Go original
//! accepted these flags and ignored them.) Peer traffic has its own mutual
//! TLS (`[raft.tls]`, [`load_peer`]).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, PeerTlsConfig, TlsConfig};

fn certs(path: &std::path::Path, name: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| ConfigError(format!("{name}: {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!("{name}: {}: no certificate found", path.display())));
    }
    Ok(certs)
}

/// Loads the server config, or `None` when TLS is not configured.
pub fn load(cfg: &TlsConfig) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
    let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) else {
        return Ok(None);
    };
    let certs = certs(cert, "tls.cert")?;
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

/// Mutual TLS between peers (`[raft.tls]`).
#[derive(Clone)]
pub struct PeerTls {
    /// The peer listener's config: requires a client certificate signed by the CA; ALPN h2.
    pub server: Arc<ServerConfig>,
    /// The dialing side's config for the framed peer RPC: trusts the CA,
    /// presents this node's certificate.
    pub client: Arc<rustls::ClientConfig>,
    /// This node's certificate chain (PEM), presented to the peers it dials.
    pub cert_pem: Vec<u8>,
    /// This node's key (PEM).
    pub key_pem: Vec<u8>,
    /// The CA (PEM) that dialed peers must be signed by.
    pub ca_pem: Vec<u8>,
}

/// Loads the peer TLS, or `None` when `[raft.tls]` is not configured.
pub fn load_peer(cfg: &PeerTlsConfig) -> Result<Option<PeerTls>, ConfigError> {
    let (Some(cert), Some(key), Some(ca)) = (&cfg.cert, &cfg.key, &cfg.ca) else {
        return Ok(None);
    };
    let read = |p: &std::path::Path, name: &str| {
        std::fs::read(p).map_err(|e| ConfigError(format!("raft.tls.{name}: {}: {e}", p.display())))
    };
    let chain = certs(cert, "raft.tls.cert")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(ca, "raft.tls.ca")? {
        roots.add(c).map_err(|e| ConfigError(format!("raft.tls.ca: {}: {e}", ca.display())))?;
    }
    let private =
        PrivateKeyDer::from_pem_file(key).map_err(|e| ConfigError(format!("raft.tls.key: {}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(roots);
    let client = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("raft.tls: {e}")))?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(chain.clone(), private.clone_key())
        .map_err(|e| ConfigError(format!("raft.tls: certificate and key do not fit: {e}")))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| ConfigError(format!("raft.tls.ca: {e}")))?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("raft.tls: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, private)
        .map_err(|e| ConfigError(format!("raft.tls: certificate and key do not fit: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(PeerTls {
        server: Arc::new(server),
        client: Arc::new(client),
        cert_pem: read(cert, "cert")?,
        key_pem: read(key, "key")?,
        ca_pem: read(ca, "ca")?,
    }))
}
