//! How a webhook request reaches its receiver: HTTP/1.1 over TCP, or over TLS checked against the
//! system's CA roots, with hyper's client connection. Idle connections are kept for the next
//! request (receivers usually keep them alive) and dropped when closed or idle too long.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

/// LiveKit's `webhook.ContentType`: a type of its own so a receiver checks the signature before
/// parsing the body as JSON.
pub const CONTENT_TYPE: &str = "application/webhook+json";
/// LiveKit sends `User-Agent: LiveKit` (receivers' firewalls match it); this keeps that prefix.
pub const USER_AGENT: &str = concat!("LiveKit (confab/", env!("CARGO_PKG_VERSION"), ")");
/// A receiver's answer is read up to this much (it is ignored); a longer one closes the connection.
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// An idle connection older than this is not reused (servers close theirs after a few seconds).
const MAX_IDLE: Duration = Duration::from_secs(30);

/// The result of one POST: the status, or why there is none.
pub type PostFuture<'a> = Pin<Box<dyn Future<Output = Result<StatusCode, String>> + Send + 'a>>;

/// Where one webhook URL's requests go. The lane bounds each call with its request timeout.
pub trait Transport: Send + Sync {
    fn post<'a>(&'a self, body: Bytes, authorization: &'a str) -> PostFuture<'a>;
}

type Sender = SendRequest<Full<Bytes>>;

/// The real transport for one `http://` or `https://` URL.
pub struct HttpTransport {
    /// Host to connect to (an IPv6 literal without its brackets).
    host: String,
    port: u16,
    /// The `Host` header: the URL's authority.
    authority: String,
    path: String,
    /// `https://`: the connector and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    idle: Mutex<Vec<(Sender, Instant)>>,
    max_idle: usize,
}

impl HttpTransport {
    /// `tls` is required for an `https://` URL.
    pub fn new(url: &str, tls: Option<&TlsConnector>, max_idle: usize) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a valid URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("not an http:// or https:// URL".into()),
        };
        let authority = uri.authority().ok_or("the URL has no host")?.to_string();
        let host = uri
            .host()
            .ok_or("the URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        let tls = match (https, tls) {
            (false, _) => None,
            (true, Some(c)) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|e| format!("not a name a certificate can carry: {e}"))?;
                Some((c.clone(), name))
            }
            (true, None) => return Err("https:// needs TLS roots".into()),
        };
        Ok(HttpTransport {
            host,
            port,
            authority,
            path,
            tls,
            idle: Mutex::new(Vec::new()),
            max_idle,
        })
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && sender.is_ready() && since.elapsed() < MAX_IDLE {
                return Some(sender);
            }
        }
        None
    }

    fn put_idle(&self, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(s, since)| !s.is_closed() && since.elapsed() < MAX_IDLE);
        if idle.len() < self.max_idle {
            idle.push((sender, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<Sender, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            None => handshake(TokioIo::new(tcp)).await?,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS failed: {e}"))?;
                handshake(TokioIo::new(tls)).await?
            }
        };
        Ok(sender)
    }

    /// One request on `sender`; the status, and whether the connection may be reused.
    async fn send(
        &self,
        sender: &mut Sender,
        body: Bytes,
        authorization: &str,
    ) -> Result<(StatusCode, bool), hyper::Error> {
        let req = Request::post(self.path.as_str())
            .header(hyper::header::HOST, self.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(hyper::header::AUTHORIZATION, authorization)
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .body(Full::new(body));
        // Only a header value from a peer could fail here, and none is: the token is base64url.
        let Ok(req) = req else {
            return Ok((StatusCode::BAD_REQUEST, false));
        };
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let read_all = Limited::new(resp.into_body(), MAX_RESPONSE_BODY)
            .collect()
            .await
            .is_ok();
        Ok((status, read_all))
    }

    async fn post_once(&self, body: Bytes, authorization: &str) -> Result<StatusCode, String> {
        let (mut sender, reused) = match self.take_idle() {
            Some(s) => (s, true),
            None => (self.connect().await?, false),
        };
        let result = match self.send(&mut sender, body.clone(), authorization).await {
            // The receiver closed the kept connection as we used it: a new one, at once.
            Err(e) if reused && (e.is_canceled() || e.is_incomplete_message() || e.is_closed()) => {
                sender = self.connect().await?;
                self.send(&mut sender, body, authorization).await
            }
            other => other,
        };
        match result {
            Ok((status, reusable)) => {
                if reusable {
                    self.put_idle(sender);
                }
                Ok(status)
            }
            Err(e) => Err(format!("HTTP request failed: {e}")),
        }
    }
}

async fn handshake<T>(io: TokioIo<T>) -> Result<Sender, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(conn);
    Ok(sender)
}

impl Transport for HttpTransport {
    fn post<'a>(&'a self, body: Bytes, authorization: &'a str) -> PostFuture<'a> {
        Box::pin(self.post_once(body, authorization))
    }
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn post<'a>(&'a self, body: Bytes, authorization: &'a str) -> PostFuture<'a> {
        (**self).post(body, authorization)
    }
}
