//! A minimal HTTPS client for talking to a confab server (used by `confab status`, tests and the
//! benchmark) and for the update agent's downloads: one request per connection, the server
//! certificate checked against given roots.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
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
    #[error("cannot connect to {target}: {source}")]
    Connect {
        target: String,
        source: std::io::Error,
    },
    #[error("TLS with {target} failed: {detail}")]
    Tls { target: String, detail: String },
    #[error("HTTP request failed: {0}")]
    Http(String),
}

/// How long connecting (TCP and TLS handshake) may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The certificates in PEM files, as trust roots. Certificates rustls cannot use are skipped
/// (system bundles hold a few); a file without any usable certificate is an error.
pub fn roots_from_pem_files(files: &[&Path]) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    for file in files {
        let err = |detail: String| ClientError::Ca {
            path: file.display().to_string(),
            detail,
        };
        let bytes = std::fs::read(file).map_err(|e| err(e.to_string()))?;
        let before = roots.len();
        for cert in CertificateDer::pem_slice_iter(&bytes).flatten() {
            let _ = roots.add(cert);
        }
        if roots.len() == before {
            return Err(err("no usable certificate in it".into()));
        }
    }
    Ok(roots)
}

/// A TLS client connector (the binary's one crypto provider) trusting `roots`.
pub fn connector(roots: rustls::RootCertStore) -> Result<TlsConnector, ClientError> {
    let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Ca {
            path: String::new(),
            detail: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A TLS connector that trusts only the certificates in the PEM file `ca`.
pub fn connector_for_ca(ca: &Path) -> Result<TlsConnector, ClientError> {
    connector(roots_from_pem_files(&[ca])?)
}

/// Opens TCP + TLS (certificate checked for `server_name`) + HTTP/1.1 to `host:port`, for
/// requests with bodies of type `B` (`Empty` for GETs, `Full` for JSON posts).
pub async fn connect<B>(
    connector: &TlsConnector,
    host: &str,
    port: u16,
    server_name: &str,
) -> Result<SendRequest<B>, ClientError>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connect_err = |source: std::io::Error| ClientError::Connect {
        target: format!("{host}:{port}"),
        source,
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host, port)))
        .await
        .map_err(|_| connect_err(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_err)?;
    let tls_err = |detail: String| ClientError::Tls {
        target: format!("{host}:{port}"),
        detail,
    };
    let name = ServerName::try_from(server_name.to_string()).map_err(|e| tls_err(e.to_string()))?;
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| tls_err("the TLS handshake timed out".into()))?
        .map_err(|e| tls_err(e.to_string()))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(conn);
    Ok(sender)
}

/// `GET path` over HTTPS to `addr`, checking the certificate for `server_name`.
pub async fn get(
    connector: &TlsConnector,
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    bearer: Option<&str>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let mut sender = connect(connector, &addr.ip().to_string(), addr.port(), server_name).await?;
    let mut req = Request::get(path).header(hyper::header::HOST, server_name);
    if let Some(token) = bearer {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| ClientError::Http(e.to_string()))?;
    send(&mut sender, req).await
}

/// `POST path` with a JSON body over HTTPS to `addr` (with a Bearer token if given), checking
/// the certificate for `server_name`.
pub async fn post_json(
    connector: &TlsConnector,
    addr: SocketAddr,
    server_name: &str,
    path: &str,
    json: &serde_json::Value,
    bearer: Option<&str>,
) -> Result<(StatusCode, Bytes), ClientError> {
    let mut sender = connect(connector, &addr.ip().to_string(), addr.port(), server_name).await?;
    let mut req = Request::post(path)
        .header(hyper::header::HOST, server_name)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(token) = bearer {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(Bytes::from(json.to_string())))
        .map_err(|e| ClientError::Http(e.to_string()))?;
    send(&mut sender, req).await
}

async fn send<B>(
    sender: &mut SendRequest<B>,
    req: Request<B>,
) -> Result<(StatusCode, Bytes), ClientError>
where
    B: hyper::body::Body + Send + 'static,
{
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
