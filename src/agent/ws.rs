//! The `/agent` WebSocket: where `livekit-agents` workers register and take jobs. The token
//! (`Authorization: Bearer`, or `access_token` in the query) must carry the `agent` grant.
//! Frames carry `WorkerMessage`s up and `ServerMessage`s down: binary protobuf, or protobuf
//! JSON in text frames (answered in the kind the worker registered with). The first message
//! must be `register`; pings are answered here; everything else goes to the dispatcher.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use livekit_protocol as lk;
use lk::server_message::Message as ToWorker;
use lk::worker_message::Message as FromWorker;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use super::{Dispatcher, ToConn, WORKER_QUEUE};
use crate::http::{text_response, Body};
use crate::signal::rate::Bucket;
use crate::signal::Gate;

pub const PATH: &str = "/agent";
/// Largest worker message (job status texts and availability answers are small).
const MAX_MESSAGE: usize = 1 << 20;
/// The first message (`register`) must come within this.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// A worker sends its status every few seconds (and WebSocket pings): silence this long is a
/// dead connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_MALFORMED: u32 = 20;

/// True for a WebSocket upgrade on `/agent`.
pub fn wants<B>(req: &Request<B>) -> bool {
    req.uri().path() == PATH
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Checks the worker's token (the `agent` grant), then runs the connection.
pub async fn upgrade<G: Gate>(
    gate: &G,
    agents: Dispatcher,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let client = gate.client_ip(&req);
    if let Some((status, reason)) = gate.token_blocked(client) {
        return text_response(status, &reason);
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = crate::signal::query_param(req.uri().query(), "access_token")
        .map(|t| t.into_owned())
        .or_else(|| crate::auth::bearer(authorization).map(str::to_string));
    let Some(token) = token else {
        return text_response(StatusCode::UNAUTHORIZED, "no access token given");
    };
    let claims = match crate::auth::verify(&gate.keys(), &token) {
        Ok(c) => c,
        Err(e) => {
            gate.token_refused(client, "/agent", &e.to_string());
            return text_response(StatusCode::UNAUTHORIZED, &format!("invalid token: {e}"));
        }
    };
    if claims.video.agent != Some(true) {
        return text_response(
            StatusCode::UNAUTHORIZED,
            "permission denied: the token does not grant agent",
        );
    }
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text_response(StatusCode::BAD_REQUEST, "not a WebSocket handshake");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "agent WebSocket upgrade failed");
                return;
            }
        };
        let ws = crate::signal::ws::server_stream(upgraded, MAX_MESSAGE).await;
        Conn::new(agents).run(ws).await;
    });
    crate::signal::ws::switching_protocols(&key)
}

/// One worker connection.
struct Conn {
    agents: Dispatcher,
    id: String,
    /// The worker speaks protobuf JSON in text frames.
    json: bool,
    malformed: u32,
    requests: Bucket,
}

/// Why a connection ends (sent as the close frame's reason).
type Ended = Option<String>;

impl Conn {
    fn new(agents: Dispatcher) -> Conn {
        Conn {
            agents,
            id: crate::ids::new_sid("AW_"),
            json: false,
            malformed: 0,
            requests: Bucket::requests(Instant::now()),
        }
    }

    async fn run<S>(mut self, mut ws: WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (tx, mut rx) = mpsc::channel(WORKER_QUEUE);
        let ended = match self.register(&mut ws, tx).await {
            Ok(()) => self.serve(&mut ws, &mut rx).await,
            Err(reason) => {
                close(&mut ws, reason).await;
                return;
            }
        };
        self.agents.gone(&self.id).await;
        close(&mut ws, ended).await;
    }

    /// Waits for `register`, registers the worker and answers it.
    async fn register<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        tx: mpsc::Sender<ToConn>,
    ) -> Result<(), Ended>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let first = tokio::time::timeout(REGISTER_TIMEOUT, self.read(ws))
            .await
            .map_err(|_| Some("no register message in time".to_string()))??;
        let Some(FromWorker::Register(req)) = first else {
            return Err(Some("the first message must be register".into()));
        };
        match self.agents.register(&self.id, req, tx).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                warn!(%reason, "agent worker refused");
                return Err(Some(reason));
            }
            Err(e) => return Err(Some(e.to_string())),
        }
        let answer = ToWorker::Register(lk::RegisterWorkerResponse {
            worker_id: self.id.clone(),
            server_info: Some(lk::ServerInfo {
                version: crate::sfu::LIVEKIT_COMPAT_VERSION.into(),
                protocol: crate::sfu::PROTOCOL_VERSION,
                node_id: format!("confab-{}", crate::version::VERSION),
                ..Default::default()
            }),
            endpoint_settings: None,
        });
        if !self.write(ws, answer).await {
            self.agents.gone(&self.id).await;
            return Err(None);
        }
        Ok(())
    }

    /// Until either side ends it: the dispatcher's messages out, the worker's in.
    async fn serve<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        rx: &mut mpsc::Receiver<ToConn>,
    ) -> Ended
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(ToConn::Send(m)) => {
                        if !self.write(ws, *m).await {
                            return None;
                        }
                    }
                    Some(ToConn::Close(reason)) => return Some(reason),
                    // The dispatcher let go of this connection: it stopped, or the worker left
                    // too many messages unread.
                    None => return Some("dropped by the server (messages unread, or stopping)".into()),
                },
                msg = tokio::time::timeout(IDLE_TIMEOUT, self.read(ws)) => {
                    let msg = match msg {
                        Err(_) => {
                            info!(worker = %self.id, "agent worker silent for too long; disconnected");
                            return Some("idle for too long".into());
                        }
                        Ok(Err(ended)) => return ended,
                        Ok(Ok(None)) => continue,
                        Ok(Ok(Some(m))) => m,
                    };
                    if !self.requests.take(Instant::now()) {
                        return Some(self.requests.reason("worker messages"));
                    }
                    if let FromWorker::Ping(p) = &msg {
                        let pong = ToWorker::Pong(lk::WorkerPong {
                            last_timestamp: p.timestamp,
                            timestamp: crate::clock::unix_millis() as i64,
                        });
                        if !self.write(ws, pong).await {
                            return None;
                        }
                        continue;
                    }
                    if self.agents.message(&self.id, msg).await.is_err() {
                        return Some("the server is shutting down".into());
                    }
                }
            }
        }
    }

    /// The next worker message: `Ok(None)` for frames that carry none (pings, malformed
    /// ones within the allowance), `Err` when the connection ends.
    async fn read<S>(&mut self, ws: &mut WebSocketStream<S>) -> Result<Option<FromWorker>, Ended>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let frame = match ws.next().await {
            None => return Err(None),
            Some(Err(e)) => {
                debug!(error = %e, "agent worker connection failed");
                return Err(None);
            }
            Some(Ok(f)) => f,
        };
        let decoded = match &frame {
            WsMessage::Binary(b) => {
                lk::WorkerMessage::decode(b.as_ref()).map_err(|e| e.to_string())
            }
            WsMessage::Text(t) => {
                self.json = true;
                serde_json::from_str::<lk::WorkerMessage>(t.as_str()).map_err(|e| e.to_string())
            }
            WsMessage::Close(_) => return Err(None),
            _ => return Ok(None),
        };
        match decoded {
            Ok(lk::WorkerMessage { message: Some(m) }) => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e) => {
                self.malformed += 1;
                warn!(worker = %self.id, error = %e, "malformed agent worker message ignored");
                if self.malformed > MAX_MALFORMED {
                    return Err(Some("too many malformed messages".into()));
                }
                Ok(None)
            }
        }
    }

    async fn write<S>(&self, ws: &mut WebSocketStream<S>, msg: ToWorker) -> bool
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let m = lk::ServerMessage { message: Some(msg) };
        let frame = if self.json {
            match serde_json::to_string(&m) {
                Ok(s) => WsMessage::Text(s.into()),
                Err(e) => {
                    warn!(error = %e, "cannot encode a message for an agent worker");
                    return true;
                }
            }
        } else {
            WsMessage::Binary(m.encode_to_vec().into())
        };
        matches!(
            tokio::time::timeout(WRITE_TIMEOUT, ws.send(frame)).await,
            Ok(Ok(()))
        )
    }
}

/// Closes the connection, with the reason when there is one (a policy close).
async fn close<S>(ws: &mut WebSocketStream<S>, reason: Ended)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = reason.map(|r| {
        info!(reason = %r, "agent worker connection closed");
        CloseFrame {
            code: CloseCode::Policy,
            reason: r.chars().take(120).collect::<String>().into(),
        }
    });
    let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(frame)).await;
}
