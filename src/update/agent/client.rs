//! A client for the update agent's API on its Unix socket (`update.socket`): `confab serve`
//! proxies the admin page's update panel through it. hyper's HTTP/1.1 client over a tokio
//! `UnixStream`, one request per connection; every call has a time limit, so a wedged agent
//! cannot hold an admin request forever.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// The agent answers status and progress from memory or a small file.
pub const QUICK: Duration = Duration::from_secs(5);
/// A check fetches and verifies a manifest over the network.
pub const CHECK: Duration = Duration::from_secs(90);
/// Answers are small JSON documents.
const MAX_ANSWER: usize = 256 << 10;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentClientError {
    #[error("the update agent is not running (no socket at {0})")]
    NotRunning(PathBuf),
    #[error("cannot connect to the update agent at {path}: {detail}")]
    Connect { path: PathBuf, detail: String },
    #[error("the update agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("talking to the update agent failed: {0}")]
    Http(String),
    #[error("the update agent's answer is not JSON: {0}")]
    NotJson(String),
}

/// The agent's answer: its status code and JSON body.
#[derive(Debug, Clone)]
pub struct AgentAnswer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

/// Talks to the agent listening on `socket`.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
}

impl AgentClient {
    pub fn new(socket: &Path) -> AgentClient {
        AgentClient {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// True if something is at the socket path (the agent may still refuse the connection).
    pub fn present(&self) -> bool {
        self.socket.exists()
    }

    pub async fn status(&self) -> Result<AgentAnswer, AgentClientError> {
        self.call(Method::GET, "/status", QUICK).await
    }

    pub async fn check(&self) -> Result<AgentAnswer, AgentClientError> {
        self.call(Method::POST, "/check", CHECK).await
    }

    pub async fn progress(&self) -> Result<AgentAnswer, AgentClientError> {
        self.call(Method::GET, "/progress", QUICK).await
    }

    pub async fn apply(&self) -> Result<AgentAnswer, AgentClientError> {
        self.call(Method::POST, "/apply", QUICK).await
    }

    /// One request on a fresh connection, within `limit` (connecting included).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        limit: Duration,
    ) -> Result<AgentAnswer, AgentClientError> {
        tokio::time::timeout(limit, self.call_inner(method, path))
            .await
            .map_err(|_| AgentClientError::Timeout(limit))?
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
    ) -> Result<AgentAnswer, AgentClientError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                AgentClientError::NotRunning(self.socket.clone())
            } else {
                AgentClientError::Connect {
                    path: self.socket.clone(),
                    detail: e.to_string(),
                }
            }
        })?;
        let http = |e: hyper::Error| AgentClientError::Http(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        // The connection task ends when the answer is read and the sender is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            // HTTP/1.1 needs a Host; the agent does not look at it.
            .header(hyper::header::HOST, "update-agent")
            .body(Full::new(Bytes::new()))
            .map_err(|e| AgentClientError::Http(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| AgentClientError::Http(e.to_string()))?
            .to_bytes();
        let body = serde_json::from_slice(&body).map_err(|e| {
            AgentClientError::NotJson(format!("{e} (status {status}, {} bytes)", body.len()))
        })?;
        Ok(AgentAnswer { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_says_the_agent_is_not_running() {
        let dir = tempfile::tempdir().expect("tempdir");
        let client = AgentClient::new(&dir.path().join("update.sock"));
        assert!(!client.present());
        let err = client.status().await.expect_err("no agent");
        assert!(matches!(err, AgentClientError::NotRunning(_)), "{err:?}");
        assert!(err.to_string().contains("not running"), "{err}");
    }

    #[tokio::test]
    async fn a_socket_nobody_answers_on_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("update.sock");
        // Accepts connections but never answers.
        let _listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let client = AgentClient::new(&path);
        let err = client
            .call(Method::GET, "/status", Duration::from_millis(200))
            .await
            .expect_err("no answer");
        assert!(matches!(err, AgentClientError::Timeout(_)), "{err:?}");
    }
}
