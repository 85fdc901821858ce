//! LiveKit signalling sessions over WebSocket: `/rtc` (v0, two PeerConnections) and `/rtc/v1`
//! (one PeerConnection, the join request and first offer packed into the URL). The token is
//! checked and the participant joined *before* the upgrade, so a refusal is an HTTP status the
//! client can show (it asks `/rtc/validate` for the reason). After the upgrade, binary frames
//! carry `SignalRequest`s up and `SignalResponse`s down; pings are answered here, everything
//! else goes to the media thread.

use std::collections::HashMap;
use std::io::Read;
use std::time::Duration;

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
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info, warn};

use crate::api::{text_response, App, Body};
use crate::media::{session_channel, MediaHandle, SessionEvent, SessionQueue, SessionRx, ShardPid};
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

/// Handles a WebSocket upgrade on `/rtc` or `/rtc/v1`.
pub async fn upgrade(app: App, media: MediaHandle, mut req: Request<Incoming>) -> Response<Body> {
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let query = req.uri().query();
    let client = app.client_ip(&req);
    if let Some((status, reason)) = app.token_blocked(client) {
        return text_response(status, &reason);
    }
    let grant = match super::validate_join(&app.keys(), query, authorization) {
        Ok(g) => g,
        Err(r) if r.status == hyper::StatusCode::UNAUTHORIZED => {
            app.token_refused(client, "join", &r.reason);
            return text_response(r.status, &r.reason);
        }
        Err(r) => {
            info!(reason = %r.reason, "join refused");
            return text_response(r.status, &r.reason);
        }
    };
    let v1 = req.uri().path() == "/rtc/v1";
    let param = |name: &str| super::query_param(query, name).map(|v| v.into_owned());
    let (join_req, mode) = if v1 {
        match param("join_request").map(|p| decode_join_request(&p)) {
            Some(Ok(j)) => (j, Mode::V1),
            Some(Err(e)) => return text_response(StatusCode::BAD_REQUEST, &e),
            None => (lk::JoinRequest::default(), Mode::V1),
        }
    } else {
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
        (j, Mode::V0)
    };
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text_response(StatusCode::BAD_REQUEST, "not a WebSocket handshake");
    };

    let claims = &grant.claims;
    let video = &claims.video;
    let params = JoinParams {
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
    };

    let conn = media.new_conn_id();
    let (tx, rx) = session_channel();
    let resuming = params.resume_sid.is_some();
    let joined = match media.join(params, conn, tx.clone()).await {
        Ok(Ok((pid, sid))) => {
            debug!(%sid, resuming, "joined");
            Some(pid)
        }
        Ok(Err(JoinError::CannotResume(sid))) => {
            // The participant is gone (timed out, removed): the client must join afresh,
            // which `leave` with action RECONNECT tells it.
            info!(%sid, "resume refused: the participant is gone; told to rejoin");
            tx.close(lk::DisconnectReason::StateMismatch);
            None
        }
        Ok(Err(e)) => {
            let status = match e {
                JoinError::RoomFull(..) | JoinError::TooManyRooms(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            warn!(error = %e, "join failed");
            return text_response(status, &e.to_string());
        }
        Err(e) => return text_response(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
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

    let on_upgrade = hyper::upgrade::on(&mut req);
    let (media2, reconnect) = (media.clone(), joined.is_none());
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "WebSocket upgrade failed");
                if let Some(pid) = joined {
                    media2.session_lost(pid, conn);
                }
                return;
            }
        };
        // An 8 KiB read buffer instead of tungstenite's 128 KiB (zero-filled on the first
        // read, so resident for every participant): signal messages are small, and a larger
        // frame still reads (the codec reserves a frame's length).
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        session(ws, media2, joined, conn, rx, reconnect).await;
    });

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
    crate::media::unix_ms()
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
    let mut left = false;
    let mut malformed = 0u32;
    let mut requests = super::rate::Bucket::requests(std::time::Instant::now());
    let mut pings = super::rate::Bucket::pings(std::time::Instant::now());
    // What was read and not handled by the media thread yet: while it is over the allowance
    // the session stops reading (the client's writes then wait in TCP, not in confab).
    let inbound = std::sync::Arc::new(Semaphore::new(limits::MAX_INBOUND_BYTES));
    let queue = rx.queue();
    loop {
        tokio::select! {
            () = queue.overflowed() => {
                // The media thread removed the participant; nothing more can reach the client.
                warn!(queued_kib = queue.queued() >> 10, "the client does not read its signal connection; session closed");
                left = true;
                break;
            }
            ev = rx.recv() => match ev {
                Some(SessionEvent::Signal(m, n)) => {
                    let ok = write(&mut ws, &queue, encode(*m)).await;
                    queue.sent(n);
                    if !ok {
                        break;
                    }
                }
                Some(SessionEvent::Close(reason)) => {
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
                    left = true;
                    break;
                }
                None => {
                    if left {
                        // The client said leave and is closing: let it, so the socket ends
                        // with a clean close rather than a dropped connection.
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
                    break;
                }
            },
            msg = tokio::time::timeout(IDLE_TIMEOUT, ws.next()) => {
                let msg = match msg {
                    Err(_) => {
                        info!("signal connection idle for too long; closed");
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        debug!(error = %e, "signal connection failed");
                        break;
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
                        break;
                    }
                    WsMessage::Text(_) => {
                        malformed += 1;
                        warn!("text signal message ignored (LiveKit signalling is binary protobuf)");
                        if malformed > MAX_MALFORMED { break; }
                        continue;
                    }
                    _ => continue,
                };
                let req = match lk::SignalRequest::decode(bytes.as_ref()) {
                    Ok(lk::SignalRequest { message: Some(m) }) => m,
                    Ok(_) => continue,
                    Err(e) => {
                        malformed += 1;
                        warn!(error = %e, len = bytes.len(), "malformed signal message ignored");
                        if malformed > MAX_MALFORMED {
                            warn!("too many malformed signal messages; session closed");
                            break;
                        }
                        continue;
                    }
                };
                let (bucket, what) = match req {
                    Req::Ping(_) | Req::PingReq(_) => (&mut pings, "pings"),
                    _ => (&mut requests, "signal requests"),
                };
                if !bucket.take(std::time::Instant::now()) {
                    let reason = bucket.reason(what);
                    warn!(%reason, "signal session over its rate; closed");
                    let frame = CloseFrame { code: CloseCode::Policy, reason: reason.into() };
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, ws.close(Some(frame))).await;
                    let _ = ws.get_mut().shutdown().await;
                    break;
                }
                match req {
                    Req::Ping(_) => {
                        if !write(&mut ws, &queue, encode(Resp::Pong(now_ms()))).await { break; }
                    }
                    Req::PingReq(p) => {
                        let pong = Resp::PongResp(lk::Pong { last_ping_timestamp: p.timestamp, timestamp: now_ms() });
                        if !write(&mut ws, &queue, encode(pong)).await { break; }
                    }
                    other => {
                        let is_leave = matches!(other, Req::Leave(_));
                        if let Some(pid) = pid {
                            let cost = (bytes.len() + limits::INBOUND_OVERHEAD)
                                .min(limits::MAX_INBOUND_BYTES) as u32;
                            let Ok(permit) = inbound.clone().acquire_many_owned(cost).await else {
                                break;
                            };
                            if media.signal_held(pid, other, Some(permit)).is_err() {
                                break;
                            }
                        }
                        if is_leave {
                            left = true;
                        }
                    }
                }
            }
        }
    }
    if let (Some(pid), false) = (pid, left) {
        media.session_lost(pid, conn);
    }
}
