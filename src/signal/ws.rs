//! LiveKit signalling sessions over WebSocket: `/rtc` (v0, two PeerConnections) and `/rtc/v1`
//! (one PeerConnection, the join request and first offer packed into the URL). The token is
//! checked and the participant joined *before* the upgrade, so a refusal is an HTTP status the
//! client can show (it asks `/rtc/validate` for the reason). After the upgrade, binary frames
//! carry `SignalRequest`s up and `SignalResponse`s down; pings are answered here, everything
//! else goes to the media thread.

use std::collections::HashMap;
use std::io::Read as _;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message as WsMessage};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use super::rate::Bucket;
use super::{Gate, JoinGrant};
use crate::http::{text_response, Body};
use crate::media::{
    session_channel, MediaHandle, SessionEvent, SessionQueue, SessionRx, SessionTx, ShardPid,
};
use crate::sfu::{limits, JoinError, JoinParams, Mode, Permissions};

/// Largest signalling message accepted (SDP offers are a few KiB; data goes over WebRTC).
const MAX_MESSAGE: usize = 1 << 20;
/// Largest join request after decompression.
const MAX_JOIN_REQUEST: u64 = 256 << 10;
/// A session that sends nothing (not even a ping) for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Malformed messages tolerated before the session is closed.
const MAX_MALFORMED: u32 = 20;
/// A write to the client that takes longer than this ends the session (the client does not
/// read).
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

fn is_websocket<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// True for requests this module answers (WebSocket upgrades on the signalling paths).
pub fn wants<B>(req: &Request<B>) -> bool {
    matches!(req.uri().path(), "/rtc" | "/rtc/v1") && is_websocket(req)
}

/// The v1 `join_request` parameter: base64url (padded or not) of a `WrappedJoinRequest`,
/// whose `join_request` bytes may be gzip-compressed.
pub fn decode_join_request(param: &str) -> Result<lk::JoinRequest, String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(param.trim_end_matches('='))
        .map_err(|e| format!("join_request is not base64url: {e}"))?;
    let wrapped = lk::WrappedJoinRequest::decode(raw.as_slice())
        .map_err(|e| format!("join_request is not a WrappedJoinRequest: {e}"))?;
    let bytes = if wrapped.compression == lk::wrapped_join_request::Compression::Gzip as i32 {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(wrapped.join_request.as_slice())
            .take(MAX_JOIN_REQUEST + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("join_request does not decompress: {e}"))?;
        if out.len() as u64 > MAX_JOIN_REQUEST {
            return Err("join_request is too large".into());
        }
        out
    } else {
        wrapped.join_request
    };
    lk::JoinRequest::decode(bytes.as_slice())
        .map_err(|e| format!("join_request does not hold a JoinRequest: {e}"))
}

/// Handles a WebSocket upgrade on `/rtc` or `/rtc/v1`: checks the token, joins the room, and
/// runs the session on the upgraded connection.
pub async fn upgrade<G: Gate>(
    gate: &G,
    media: MediaHandle,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let grant = match admit(gate, &req) {
        Ok(g) => g,
        Err(r) => return *r,
    };
    let (join_req, mode) = match join_request(&req) {
        Ok(j) => j,
        Err(r) => return *r,
    };
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text_response(StatusCode::BAD_REQUEST, "not a WebSocket handshake");
    };
    let mut params = join_params(&grant, &join_req, mode);
    params.ice_servers = gate.ice_servers(&grant.identity, &req);
    let conn = media.new_conn_id();
    let (tx, rx) = session_channel();
    let joined = match join(&media, params, conn, tx).await {
        Ok(j) => j,
        Err(r) => return *r,
    };
    if let Some(pid) = joined {
        // v1 browsers put their first offer (and possibly tracks) into the join request.
        for t in join_req.add_track_requests {
            let _ = media.signal(pid, Req::AddTrack(t));
        }
        if let Some(offer) = join_req.publisher_offer {
            let _ = media.signal(pid, Req::Offer(offer));
        }
    }
    spawn_session(hyper::upgrade::on(&mut req), media, joined, conn, rx);
    switching_protocols(&key)
}

/// An answer refusing the upgrade (boxed: a response is large).
type Refused = Box<Response<Body>>;

fn refused(status: StatusCode, text: &str) -> Refused {
    Box::new(text_response(status, text))
}

/// The join grant of a request's token, or the answer refusing it (a blocked address, a bad
/// token).
fn admit<G: Gate>(gate: &G, req: &Request<Incoming>) -> Result<JoinGrant, Refused> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let query = req.uri().query();
    let client = gate.client_ip(req);
    if let Some((status, reason)) = gate.token_blocked(client) {
        return Err(refused(status, &reason));
    }
    match super::validate_join(&gate.keys(), query, authorization) {
        Ok(g) => Ok(g),
        Err(r) if r.status == hyper::StatusCode::UNAUTHORIZED => {
            gate.token_refused(client, "join", &r.reason);
            Err(refused(r.status, &r.reason))
        }
        Err(r) => {
            info!(reason = %r.reason, "join refused");
            Err(refused(r.status, &r.reason))
        }
    }
}

/// The join request: v1 sends it whole (`join_request`), v0 as query flags.
fn join_request(req: &Request<Incoming>) -> Result<(lk::JoinRequest, Mode), Refused> {
    let query = req.uri().query();
    let param = |name: &str| super::query_param(query, name).map(|v| v.into_owned());
    if req.uri().path() == "/rtc/v1" {
        return match param("join_request").map(|p| decode_join_request(&p)) {
            Some(Ok(j)) => Ok((j, Mode::V1)),
            Some(Err(e)) => Err(refused(StatusCode::BAD_REQUEST, &e)),
            None => Ok((lk::JoinRequest::default(), Mode::V1)),
        };
    }
    let flag = |name: &str, default: bool| match param(name).as_deref() {
        Some("1") | Some("true") => true,
        Some("0") | Some("false") => false,
        _ => default,
    };
    let j = lk::JoinRequest {
        connection_settings: Some(lk::ConnectionSettings {
            auto_subscribe: flag("auto_subscribe", true),
            ..Default::default()
        }),
        reconnect: flag("reconnect", false),
        participant_sid: param("sid").unwrap_or_default(),
        ..Default::default()
    };
    Ok((j, Mode::V0))
}

/// What the media thread needs to add the participant: the token's grants and the request's
/// settings.
fn join_params(grant: &JoinGrant, join_req: &lk::JoinRequest, mode: Mode) -> JoinParams {
    let claims = &grant.claims;
    let video = &claims.video;
    JoinParams {
        room: grant.room.clone(),
        identity: grant.identity.clone(),
        name: claims.name.clone().unwrap_or_default(),
        metadata: claims.metadata.clone().unwrap_or_default(),
        attributes: claims
            .attributes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect::<HashMap<_, _>>(),
        perms: Permissions {
            can_publish: video.can_publish.unwrap_or(true),
            can_subscribe: video.can_subscribe.unwrap_or(true),
            can_publish_data: video.can_publish_data.unwrap_or(true),
            hidden: video.hidden.unwrap_or(false),
        },
        can_update_metadata: video.can_update_own_metadata.unwrap_or(false),
        mode,
        auto_subscribe: join_req
            .connection_settings
            .as_ref()
            .map(|c| c.auto_subscribe)
            .unwrap_or(true),
        client_protocol: join_req
            .client_info
            .as_ref()
            .map(|c| c.protocol)
            .unwrap_or(0),
        resume_sid: (join_req.reconnect && !join_req.participant_sid.is_empty())
            .then(|| join_req.participant_sid.clone()),
        kind: if claims.is_agent() {
            lk::participant_info::Kind::Agent
        } else {
            lk::participant_info::Kind::Standard
        },
        // Checked by `validate_join`: a roomConfig that does not read was refused there.
        room_settings: claims
            .room_config()
            .ok()
            .flatten()
            .map(|c| crate::sfu::RoomSettings::from_config(&c))
            .unwrap_or_default(),
        ice_servers: Vec::new(),
    }
}

/// Joins the room: the participant, None when a resume was refused (the session then tells the
/// client to rejoin), or the answer for a failed join.
async fn join(
    media: &MediaHandle,
    params: JoinParams,
    conn: u64,
    tx: SessionTx,
) -> Result<Option<ShardPid>, Refused> {
    let resuming = params.resume_sid.is_some();
    match media.join(params, conn, tx.clone()).await {
        Ok(Ok((pid, sid))) => {
            debug!(%sid, resuming, "joined");
            Ok(Some(pid))
        }
        Ok(Err(JoinError::CannotResume(sid))) => {
            // The participant is gone (timed out, removed): the client must join afresh,
            // which `leave` with action RECONNECT tells it.
            info!(%sid, "resume refused: the participant is gone; told to rejoin");
            tx.close(lk::DisconnectReason::StateMismatch);
            Ok(None)
        }
        Ok(Err(e)) => {
            let status = match e {
                JoinError::RoomFull(..) | JoinError::TooManyRooms(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            warn!(error = %e, "join failed");
            Err(refused(status, &e.to_string()))
        }
        Err(e) => Err(refused(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    }
}

/// Runs the session once hyper hands over the upgraded connection.
fn spawn_session(
    on_upgrade: hyper::upgrade::OnUpgrade,
    media: MediaHandle,
    joined: Option<ShardPid>,
    conn: u64,
    rx: SessionRx,
) {
    let reconnect = joined.is_none();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "WebSocket upgrade failed");
                if let Some(pid) = joined {
                    media.session_lost(pid, conn);
                }
                return;
            }
        };
        let ws = server_stream(upgraded, MAX_MESSAGE).await;
        session(ws, media, joined, conn, rx, reconnect).await;
    });
}

/// The server side of an upgraded connection, taking messages of at most `max` bytes. An 8 KiB
/// read buffer instead of tungstenite's 128 KiB (zero-filled on the first read, so resident for
/// every connection): signal and worker messages are small, and a larger frame still reads (the
/// codec reserves a frame's length).
pub async fn server_stream(
    upgraded: hyper::upgrade::Upgraded,
    max: usize,
) -> WebSocketStream<TokioIo<hyper::upgrade::Upgraded>> {
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await
}

/// The `101 Switching Protocols` answer to a handshake with `key`.
pub fn switching_protocols(key: &HeaderValue) -> Response<Body> {
    let mut resp = Response::new(Body::default());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert("sec-websocket-accept", v);
    }
    resp
}

fn now_ms() -> i64 {
    crate::clock::unix_millis() as i64
}

/// Writes one message: false when the connection failed, the write took longer than
/// [`WRITE_TIMEOUT`], or the session's queue overflowed meanwhile.
async fn write<S>(ws: &mut WebSocketStream<S>, queue: &SessionQueue, msg: WsMessage) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::select! {
        r = tokio::time::timeout(WRITE_TIMEOUT, ws.send(msg)) => match r {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                debug!(error = %e, "signal connection failed");
                false
            }
            Err(_) => {
                info!("a write to the signal connection took over {}s; closed", WRITE_TIMEOUT.as_secs());
                false
            }
        },
        () = queue.overflowed() => false,
    }
}

fn encode(msg: Resp) -> WsMessage {
    WsMessage::Binary(
        lk::SignalResponse { message: Some(msg) }
            .encode_to_vec()
            .into(),
    )
}

/// Runs one signalling session until either side ends it.
async fn session<S>(
    mut ws: WebSocketStream<S>,
    media: MediaHandle,
    pid: Option<ShardPid>,
    conn: u64,
    mut rx: SessionRx,
    reconnect: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut s = Session::new(media, pid);
    let queue = rx.queue();
    loop {
        let flow = tokio::select! {
            () = queue.overflowed() => {
                // The media thread removed the participant; nothing more can reach the client.
                warn!(queued_kib = queue.queued() >> 10, "the client does not read its signal connection; session closed");
                s.left = true;
                ControlFlow::Break(())
            }
            ev = rx.recv() => s.event(&mut ws, &queue, ev, reconnect).await,
            msg = tokio::time::timeout(IDLE_TIMEOUT, ws.next()) => s.incoming(&mut ws, &queue, msg).await,
        };
        if flow.is_break() {
            break;
        }
    }
    if let (Some(pid), false) = (s.pid, s.left) {
        s.media.session_lost(pid, conn);
    }
}

/// A message read from the client: in time or not, and whether the connection still works.
type Read = Result<Option<Result<WsMessage, WsError>>, tokio::time::error::Elapsed>;

/// What a session keeps between messages.
struct Session {
    media: MediaHandle,
    pid: Option<ShardPid>,
    /// The participant left (or was removed): nothing to report to the media thread at the end.
    left: bool,
    malformed: u32,
    requests: Bucket,
    pings: Bucket,
    /// What was read and not handled by the media thread yet: while it is over the allowance
    /// the session stops reading (the client's writes then wait in TCP, not in confab).
    inbound: Arc<Semaphore>,
}

impl Session {
    fn new(media: MediaHandle, pid: Option<ShardPid>) -> Session {
        Session {
            media,
            pid,
            left: false,
            malformed: 0,
            requests: Bucket::requests(Instant::now()),
            pings: Bucket::pings(Instant::now()),
            inbound: Arc::new(Semaphore::new(limits::MAX_INBOUND_BYTES)),
        }
    }

    /// An event from the media thread: a response to send, or the end of the session.
    async fn event<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        queue: &SessionQueue,
        ev: Option<SessionEvent>,
        reconnect: bool,
    ) -> ControlFlow<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match ev {
            Some(SessionEvent::Signal(m, n)) => {
                let ok = write(ws, queue, encode(*m)).await;
                queue.sent(n);
                if ok {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            }
            Some(SessionEvent::Close(reason)) => {
                send_leave(ws, reason, reconnect).await;
                self.left = true;
                ControlFlow::Break(())
            }
            None => {
                if self.left {
                    await_client_close(ws).await;
                }
                ControlFlow::Break(())
            }
        }
    }

    /// A message from the client (or none within [`IDLE_TIMEOUT`]).
    async fn incoming<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        queue: &SessionQueue,
        msg: Read,
    ) -> ControlFlow<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let msg = match msg {
            Err(_) => {
                info!("signal connection idle for too long; closed");
                return ControlFlow::Break(());
            }
            Ok(None) => return ControlFlow::Break(()),
            Ok(Some(Err(e))) => {
                debug!(error = %e, "signal connection failed");
                return ControlFlow::Break(());
            }
            Ok(Some(Ok(m))) => m,
        };
        let bytes = match msg {
            WsMessage::Binary(b) => b,
            WsMessage::Close(_) => {
                // tungstenite queued the reply to the client's close frame; flushing
                // sends it and completes the closing handshake.
                let _ = ws.flush().await;
                let _ = ws.get_mut().shutdown().await;
                return ControlFlow::Break(());
            }
            WsMessage::Text(_) => {
                self.malformed += 1;
                warn!("text signal message ignored (LiveKit signalling is binary protobuf)");
                return self.within_malformed(false);
            }
            _ => return ControlFlow::Continue(()),
        };
        let req = match lk::SignalRequest::decode(bytes.as_ref()) {
            Ok(lk::SignalRequest { message: Some(m) }) => m,
            Ok(_) => return ControlFlow::Continue(()),
            Err(e) => {
                self.malformed += 1;
                warn!(error = %e, len = bytes.len(), "malformed signal message ignored");
                return self.within_malformed(true);
            }
        };
        self.within_rate(ws, &req).await?;
        self.request(ws, queue, req, bytes.len()).await
    }

    /// Break once more than [`MAX_MALFORMED`] messages were malformed (`say`: log why).
    fn within_malformed(&self, say: bool) -> ControlFlow<()> {
        if self.malformed <= MAX_MALFORMED {
            return ControlFlow::Continue(());
        }
        if say {
            warn!("too many malformed signal messages; session closed");
        }
        ControlFlow::Break(())
    }

    /// Takes `req` from its rate bucket; over the rate, closes the session with the reason.
    async fn within_rate<S>(&mut self, ws: &mut WebSocketStream<S>, req: &Req) -> ControlFlow<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let (bucket, what) = match req {
            Req::Ping(_) | Req::PingReq(_) => (&mut self.pings, "pings"),
            _ => (&mut self.requests, "signal requests"),
        };
        if bucket.take(Instant::now()) {
            return ControlFlow::Continue(());
        }
        let reason = bucket.reason(what);
        warn!(%reason, "signal session over its rate; closed");
        let frame = CloseFrame {
            code: CloseCode::Policy,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(Some(frame))).await;
        let _ = ws.get_mut().shutdown().await;
        ControlFlow::Break(())
    }

    /// Answers a ping here; hands any other request (of `len` bytes) to the media thread.
    async fn request<S>(
        &mut self,
        ws: &mut WebSocketStream<S>,
        queue: &SessionQueue,
        req: Req,
        len: usize,
    ) -> ControlFlow<()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let sent = match req {
            Req::Ping(_) => write(ws, queue, encode(Resp::Pong(now_ms()))).await,
            Req::PingReq(p) => {
                let pong = Resp::PongResp(lk::Pong {
                    last_ping_timestamp: p.timestamp,
                    timestamp: now_ms(),
                });
                write(ws, queue, encode(pong)).await
            }
            other => {
                let is_leave = matches!(other, Req::Leave(_));
                if let Some(pid) = self.pid {
                    let cost =
                        (len + limits::INBOUND_OVERHEAD).min(limits::MAX_INBOUND_BYTES) as u32;
                    let Ok(permit) = self.inbound.clone().acquire_many_owned(cost).await else {
                        return ControlFlow::Break(());
                    };
                    if self.media.signal_held(pid, other, Some(permit)).is_err() {
                        return ControlFlow::Break(());
                    }
                }
                if is_leave {
                    self.left = true;
                }
                true
            }
        };
        if sent {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(())
        }
    }
}

/// The server ends the session: `leave` (rejoin or not, and why), then close.
async fn send_leave<S>(ws: &mut WebSocketStream<S>, reason: lk::DisconnectReason, reconnect: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let action = if reconnect {
        lk::leave_request::Action::Reconnect
    } else {
        lk::leave_request::Action::Disconnect
    };
    let leave = Resp::Leave(lk::LeaveRequest {
        can_reconnect: reconnect,
        reason: reason as i32,
        action: action as i32,
        regions: None,
    });
    let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.send(encode(leave))).await;
    let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(None)).await;
    let _ = ws.get_mut().shutdown().await;
}

/// The client said leave and is closing: let it, so the socket ends with a clean close rather
/// than a dropped connection.
async fn await_client_close<S>(ws: &mut WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, WsMessage::Close(_)) {
                let _ = ws.flush().await;
                let _ = ws.get_mut().shutdown().await;
                break;
            }
        }
    })
    .await;
}
