//! Where releases come from: an HTTPS server (system CA bundle plus an optional extra CA) or a
//! directory (`file://`, e.g. a USB stick). Artifacts stream in chunks to a sink, starting at an
//! offset, so an interrupted download resumes with an HTTP range request instead of starting over.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{header, Request, StatusCode, Uri};
use tokio_rustls::TlsConnector;

use crate::http::client;

/// Debian's bundle of public CAs (package ca-certificates), present on the appliance.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Chunk size when reading from a directory source.
const FILE_CHUNK: usize = 1 << 20;
/// A connection that has not produced a byte for this long counts as dropped.
pub const STALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("update URL {0:?} is not usable: {1}")]
    BadUrl(String, String),
    #[error("cannot load CA certificates for the update server: {0}")]
    Trust(String),
    #[error("cannot reach the update server {host}: {detail}")]
    Connect { host: String, detail: String },
    #[error("{url}: the server answered {status}")]
    Status { url: String, status: StatusCode },
    #[error(
        "{url}: the server ignored the range request; the download restarts from the beginning"
    )]
    RangeIgnored { url: String },
    #[error("download of {url} was interrupted: {detail}")]
    Interrupted { url: String, detail: String },
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("{name} is larger than {limit} bytes")]
    TooLarge { name: String, limit: usize },
    #[error("{0}")]
    Sink(String),
}

impl FetchError {
    /// Errors worth retrying with a range request (the network, not the content).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            FetchError::Connect { .. }
                | FetchError::Interrupted { .. }
                | FetchError::RangeIgnored { .. }
        ) || matches!(self, FetchError::Status { status, .. } if status.is_server_error())
    }
}

/// Where the bytes of a chunk go; returning an error stops the download.
pub trait Sink: Send {
    fn accept(&mut self, chunk: &[u8]) -> Result<(), String>;
}

pub enum Source {
    Https { base: Uri, connector: TlsConnector },
    Dir(PathBuf),
}

impl Source {
    /// `https://host[:port]/path/` or `file:///path/` (the trailing slash is optional).
    pub fn new(url: &str, extra_ca: Option<&Path>) -> Result<Source, FetchError> {
        if let Some(path) = url.strip_prefix("file://") {
            return Ok(Source::Dir(PathBuf::from(path)));
        }
        let with_slash = if url.ends_with('/') {
            url.to_string()
        } else {
            format!("{url}/")
        };
        let base: Uri = with_slash
            .parse()
            .map_err(|e| FetchError::BadUrl(url.to_string(), format!("{e}")))?;
        if base.scheme_str() != Some("https") || base.host().is_none() {
            return Err(FetchError::BadUrl(
                url.to_string(),
                "only https:// and file:// are supported".into(),
            ));
        }
        Ok(Source::Https {
            base,
            connector: connector(extra_ca)?,
        })
    }

    /// Human form for messages.
    pub fn describe(&self, name: &str) -> String {
        match self {
            Source::Https { base, .. } => format!("{base}{name}"),
            Source::Dir(dir) => dir.join(name).display().to_string(),
        }
    }

    /// A small file (manifest, signature), at most `limit` bytes.
    pub async fn fetch_small(&self, name: &str, limit: usize) -> Result<Vec<u8>, FetchError> {
        struct Collect(Vec<u8>, usize, String);
        impl Sink for Collect {
            fn accept(&mut self, chunk: &[u8]) -> Result<(), String> {
                if self.0.len() + chunk.len() > self.1 {
                    return Err(format!("{} is larger than {} bytes", self.2, self.1));
                }
                self.0.extend_from_slice(chunk);
                Ok(())
            }
        }
        let mut sink = Collect(Vec::new(), limit, name.to_string());
        self.stream(name, 0, &mut sink).await?;
        Ok(sink.0)
    }

    /// The size of `name` at the source, when the source tells it (a file's length, an HTTP
    /// `Content-Length`), so an incomplete release is refused before anything is written.
    pub async fn size(&self, name: &str) -> Result<Option<u64>, FetchError> {
        match self {
            Source::Dir(dir) => {
                let path = dir.join(name);
                std::fs::metadata(&path)
                    .map(|m| Some(m.len()))
                    .map_err(|e| FetchError::File {
                        path,
                        detail: e.to_string(),
                    })
            }
            Source::Https { base, connector } => size_https(base, connector, name).await,
        }
    }

    /// Streams `name` from byte `offset` to the end into `sink`. A body that ends early without
    /// an error is reported by the caller, which knows the expected size.
    pub async fn stream(
        &self,
        name: &str,
        offset: u64,
        sink: &mut dyn Sink,
    ) -> Result<(), FetchError> {
        match self {
            Source::Dir(dir) => stream_file(&dir.join(name), offset, sink),
            Source::Https { base, connector } => {
                stream_https(base, connector, name, offset, sink).await
            }
        }
    }
}

fn connector(extra_ca: Option<&Path>) -> Result<TlsConnector, FetchError> {
    let mut files: Vec<&Path> = Vec::new();
    if Path::new(SYSTEM_CA_BUNDLE).exists() {
        files.push(Path::new(SYSTEM_CA_BUNDLE));
    }
    files.extend(extra_ca);
    if files.is_empty() {
        return Err(FetchError::Trust(format!(
            "no CA certificates found ({SYSTEM_CA_BUNDLE} missing and no update.ca_file)"
        )));
    }
    let roots =
        client::roots_from_pem_files(&files).map_err(|e| FetchError::Trust(e.to_string()))?;
    client::connector(roots).map_err(|e| FetchError::Trust(e.to_string()))
}

fn stream_file(path: &Path, offset: u64, sink: &mut dyn Sink) -> Result<(), FetchError> {
    use std::io::{Seek, SeekFrom};
    let err = |detail: String| FetchError::File {
        path: path.to_path_buf(),
        detail,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| err(e.to_string()))?;
    let mut buf = vec![0u8; FILE_CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(|e| err(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        sink.accept(&buf[..n]).map_err(FetchError::Sink)?;
    }
}

/// Sends one request for `name` (GET from `offset`, or HEAD) and returns its URL and response.
async fn request_https(
    base: &Uri,
    connector: &TlsConnector,
    name: &str,
    method: hyper::Method,
    offset: u64,
) -> Result<(String, hyper::Response<hyper::body::Incoming>), FetchError> {
    let url = format!("{base}{name}");
    let uri: Uri = url
        .parse()
        .map_err(|e| FetchError::BadUrl(url.clone(), format!("{e}")))?;
    let host = uri.host().unwrap_or_default().to_string();
    let port = uri.port_u16().unwrap_or(443);
    let mut sender = client::connect(connector, &host, port, &host)
        .await
        .map_err(|e| FetchError::Connect {
            host: format!("{host}:{port}"),
            detail: e.to_string(),
        })?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(
            header::HOST,
            uri.authority().map_or(host.clone(), |a| a.to_string()),
        )
        .header(
            header::USER_AGENT,
            format!("confab/{}", crate::version::VERSION),
        );
    if offset > 0 {
        req = req.header(header::RANGE, format!("bytes={offset}-"));
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::BadUrl(url.clone(), e.to_string()))?;
    let resp = tokio::time::timeout(STALL_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| FetchError::Interrupted {
            url: url.clone(),
            detail: "no answer".into(),
        })?
        .map_err(|e| FetchError::Interrupted {
            url: url.clone(),
            detail: e.to_string(),
        })?;
    Ok((url, resp))
}

/// The size the server announces for `name` (HEAD, Content-Length), if it announces one.
async fn size_https(
    base: &Uri,
    connector: &TlsConnector,
    name: &str,
) -> Result<Option<u64>, FetchError> {
    let (url, resp) = request_https(base, connector, name, hyper::Method::HEAD, 0).await?;
    if resp.status() != StatusCode::OK {
        return Err(FetchError::Status {
            url,
            status: resp.status(),
        });
    }
    Ok(resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok()))
}

async fn stream_https(
    base: &Uri,
    connector: &TlsConnector,
    name: &str,
    offset: u64,
    sink: &mut dyn Sink,
) -> Result<(), FetchError> {
    let (url, resp) = request_https(base, connector, name, hyper::Method::GET, offset).await?;
    match (offset, resp.status()) {
        (0, StatusCode::OK) => {}
        (o, StatusCode::PARTIAL_CONTENT) if o > 0 && content_range_start(&resp) == Some(o) => {}
        (o, StatusCode::OK) if o > 0 => return Err(FetchError::RangeIgnored { url }),
        (_, status) => return Err(FetchError::Status { url, status }),
    }
    let mut body = resp.into_body();
    loop {
        let frame = tokio::time::timeout(STALL_TIMEOUT, body.frame())
            .await
            .map_err(|_| FetchError::Interrupted {
                url: url.clone(),
                detail: "stalled".into(),
            })?;
        match frame {
            None => return Ok(()),
            Some(Err(e)) => {
                return Err(FetchError::Interrupted {
                    url,
                    detail: e.to_string(),
                })
            }
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    sink.accept(data).map_err(FetchError::Sink)?;
                }
            }
        }
    }
}

/// The first byte position of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start<B>(resp: &hyper::Response<B>) -> Option<u64> {
    let value = resp.headers().get(header::CONTENT_RANGE)?.to_str().ok()?;
    let range = value.strip_prefix("bytes ")?;
    range.split('-').next()?.trim().parse().ok()
}
