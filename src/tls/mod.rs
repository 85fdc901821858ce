//! TLS for everything browsers reach: a rustls server config (aws-lc-rs, HTTP/2 + HTTP/1.1 ALPN)
//! from either a local CA that confab makes and keeps in `<state_dir>/tls/`, or certificate and
//! key files the operator supplies.

mod local_ca;

/// The ALPN protocol name of TURN over TLS (RFC 7443).
pub const ALPN_TURN: &[u8] = b"stun.turn";

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Config, TlsSource};

pub use local_ca::{desired_names, LocalCa, CA_CERT_FILE};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read TLS certificate file {path}: {detail}")]
    CertFile { path: PathBuf, detail: String },
    #[error("cannot read TLS private key file {path}: {detail}")]
    KeyFile { path: PathBuf, detail: String },
    #[error("TLS certificate {cert} and key {key} do not work together: {detail}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("cannot create the local certificate authority in {dir}: {detail}")]
    LocalCa { dir: PathBuf, detail: String },
}

/// A ready server config and, for the local CA, the CA certificate users download at `/ca.crt`.
pub struct TlsMaterial {
    pub server_config: Arc<rustls::ServerConfig>,
    pub ca_pem: Option<String>,
    /// Human summary for the log, e.g. "local CA, names: localhost, pi, pi.local, 10.0.0.5".
    pub summary: String,
}

/// The crypto provider of the whole binary (str0m needs aws-lc-rs too).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the TLS material the configuration asks for, making the local CA on first start.
pub fn load(config: &Config) -> Result<TlsMaterial, TlsError> {
    match &config.http.tls {
        TlsSource::Files { cert, key } => {
            let chain = read_chain(cert)?;
            let key_der = read_key(key)?;
            let server_config = server_config(chain, key_der).map_err(|e| TlsError::Mismatch {
                cert: cert.clone(),
                key: key.clone(),
                detail: e.to_string(),
            })?;
            Ok(TlsMaterial {
                server_config,
                ca_pem: None,
                summary: format!("certificate from {}", cert.display()),
            })
        }
        TlsSource::LocalCa => {
            let dir = config.state_dir.join("tls");
            let names = desired_names(config.public_url.as_deref());
            let ca = LocalCa::ensure(&dir, &names)?;
            let chain = read_chain(&ca.leaf_cert_path())?;
            let key_der = read_key(&ca.leaf_key_path())?;
            let server_config = server_config(chain, key_der).map_err(|e| TlsError::LocalCa {
                dir: dir.clone(),
                detail: e.to_string(),
            })?;
            Ok(TlsMaterial {
                server_config,
                ca_pem: Some(ca.ca_pem),
                summary: format!("local CA {}, names: {}", dir.display(), names.join(", ")),
            })
        }
    }
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // HTTP/2, HTTP/1.1, and TURN over TLS on the same port (RFC 7443's ALPN name; most TURN
    // clients offer none and are told apart by their first bytes).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ALPN_TURN.to_vec()];
    Ok(Arc::new(config))
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |detail: String| TlsError::CertFile {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("not a PEM certificate file: {e}")))?;
    if chain.is_empty() {
        return Err(err("it contains no PEM certificate".to_string()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |detail: String| TlsError::KeyFile {
        path: path.to_path_buf(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| err(format!("no PEM private key in it: {e}")))
}

#[cfg(test)]
mod tests;
