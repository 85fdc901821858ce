//! A minimal HTTPS client for talking to a confab server (used by `confab status`, tests and the
//! benchmark): one request per connection, server certificate checked against given roots.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("cannot read CA certificate {path}: {detail}")]
    Ca { path: String, detail: String },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS with {addr} failed: {detail}")]
    Tls { addr: SocketAddr, detail: String },
    #[error("HTTP request failed: {0}")]
    Http(String),
}

/// A TLS connector that trusts only the certificates in the PEM file `ca`.
pub fn connector_for_ca(ca: &Path) -> Result<TlsConnector, ClientError> {
    let err = |detail: String| ClientError::Ca {
        path: ca.display().to_string(),
        detail,
    };
    let bytes = std::fs::read(ca).map_err(|e| err(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in it".into()));
    }
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// `GET path` over HTTPS to `addr`, checking the certificate for `server_name`.
pub async fn get(
    connector: &TlsConnector,
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    bearer: Option<&str>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect { addr, source })?;
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| ClientError::Tls {
        addr,
        detail: e.to_string(),
    })?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| ClientError::Tls {
            addr,
            detail: e.to_string(),
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(conn);
    let mut req = Request::get(path).header(hyper::header::HOST, server_name);
    if let Some(token) = bearer {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}
