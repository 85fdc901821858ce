//! LiveKit's admin API: Twirp `livekit.RoomService` at `POST /twirp/livekit.RoomService/<Method>`
//! (and `livekit.AgentDispatchService`, in `dispatch.rs`),
//! with protobuf-JSON (`application/json`) or binary protobuf (`application/protobuf`) bodies,
//! authorised by the grants of a Bearer token (`roomCreate`, `roomList`, `roomAdmin` + `room`).
//! Errors are Twirp's `{"code", "msg"}` with its HTTP statuses.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use livekit_protocol as lk;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tracing::info;

use super::App;
use crate::auth::{self, Claims};
use crate::http::Body;
use crate::media::MediaHandle;
use crate::sfu::{self, limits, Permissions, Reply};

pub const PREFIX: &str = "/twirp/livekit.RoomService/";
const MAX_BODY: usize = 1 << 20;
/// A body declared larger than [`MAX_BODY`] but not than this is read and dropped before the
/// refusal (kept in memory one frame at a time, within the body timeout).
const DRAIN_MAX: usize = 16 << 20;

/// Reads a body to its end (or the body timeout), keeping nothing.
async fn drain(mut body: Incoming) {
    use http_body_util::BodyExt as _;
    let _ = tokio::time::timeout(super::conn::BODY_TIMEOUT, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// A Twirp error: code (which fixes the HTTP status) and message.
pub(super) struct TwirpError(&'static str, String);

impl TwirpError {
    fn status(&self) -> StatusCode {
        match self.0 {
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "permission_denied" => StatusCode::FORBIDDEN,
            "not_found" | "bad_route" => StatusCode::NOT_FOUND,
            "invalid_argument" | "malformed" | "out_of_range" => StatusCode::BAD_REQUEST,
            "failed_precondition" => StatusCode::PRECONDITION_FAILED,
            "already_exists" | "aborted" => StatusCode::CONFLICT,
            "unimplemented" => StatusCode::NOT_IMPLEMENTED,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(super) fn response(&self) -> Response<Body> {
        let body = json!({"code": self.0, "msg": self.1}).to_string();
        let mut r = Response::new(Body::new(Bytes::from(body)));
        *r.status_mut() = self.status();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    }
}

pub(super) fn err(code: &'static str, msg: impl Into<String>) -> TwirpError {
    TwirpError(code, msg.into())
}

fn not_found(what: &str) -> TwirpError {
    err("not_found", format!("{what} not found"))
}

/// The request body, decoded as JSON or protobuf per its content type.
pub(super) struct Decoded {
    json: bool,
    body: Bytes,
}

impl Decoded {
    pub(super) fn parse<T: Message + Default + DeserializeOwned>(&self) -> Result<T, TwirpError> {
        if self.json {
            let body: &[u8] = if self.body.is_empty() {
                b"{}"
            } else {
                &self.body
            };
            serde_json::from_slice(body)
                .map_err(|e| err("malformed", format!("the request body is not valid: {e}")))
        } else {
            T::decode(self.body.as_ref())
                .map_err(|e| err("malformed", format!("the request body is not valid: {e}")))
        }
    }

    pub(super) fn reply<T: Message + Serialize>(&self, value: &T) -> Response<Body> {
        let (bytes, ctype) = if self.json {
            match serde_json::to_vec(value) {
                Ok(b) => (b, "application/json"),
                Err(e) => return err("internal", e.to_string()).response(),
            }
        } else {
            (value.encode_to_vec(), "application/protobuf")
        };
        let mut r = Response::new(Body::new(Bytes::from(bytes)));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        r
    }
}

pub async fn handle(
    app: &App,
    media: Option<MediaHandle>,
    req: Request<Incoming>,
) -> Response<Body> {
    match serve(app, media, req).await {
        Ok(r) => r,
        Err(e) => e.response(),
    }
}

fn require(ok: bool, grant: &str) -> Result<(), TwirpError> {
    if ok {
        Ok(())
    } else {
        Err(err(
            "permission_denied",
            format!("the token does not grant {grant}"),
        ))
    }
}

pub(super) fn admin_of(claims: &Claims, room: &str) -> Result<(), TwirpError> {
    require(claims.video.room_admin == Some(true), "roomAdmin")?;
    match claims.video.room.as_deref() {
        Some(r) if !r.is_empty() && r != room => Err(err(
            "permission_denied",
            format!("the token administers room {r:?}, not {room:?}"),
        )),
        _ => Ok(()),
    }
}

async fn serve(
    app: &App,
    media: Option<MediaHandle>,
    req: Request<Incoming>,
) -> Result<Response<Body>, TwirpError> {
    let (cx, method) = authorise(app, media, req, PREFIX).await?;
    room_service(&cx, &method).await
}

/// A Twirp call of the service at `prefix`, checked: POST, its body read (limited), its Bearer
/// token verified (refusals counted per client address). The call and its method name.
pub(super) async fn authorise(
    app: &App,
    media: Option<MediaHandle>,
    req: Request<Incoming>,
    prefix: &str,
) -> Result<(Call, String), TwirpError> {
    if req.method() != Method::POST {
        return Err(err("bad_route", "Twirp methods are called with POST"));
    }
    let method = req
        .uri()
        .path()
        .strip_prefix(prefix)
        .unwrap_or_default()
        .to_string();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = auth::bearer(authorization).map(str::to_string);
    let client = app.client_ip(&req);
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|c| !c.starts_with("application/protobuf"));
    // A body declared too large is refused before it is sent (curl and others wait for `100
    // Continue`); the client sees the reason rather than a connection reset mid-upload.
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|n| *n > MAX_BODY) {
        // Over HTTP/2 an answer before the body is read resets the stream (clients report a
        // framing error, not the reason): a body up to DRAIN_MAX is read and dropped first.
        if n <= DRAIN_MAX {
            drain(req.into_body()).await;
        }
        return Err(err(
            "malformed",
            format!("the request body is {n} bytes; at most {MAX_BODY} are allowed"),
        ));
    }
    // The body (limited) is read before any refusal: answering an HTTP/2 request before its body
    // is read resets the stream, and the client sees a broken connection instead of the 401.
    let body = super::conn::read_body(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| err("malformed", format!("cannot read the request body: {e}")))?;
    if let Some((_, reason)) = app.token_blocked(client) {
        return Err(err("resource_exhausted", reason));
    }
    let token = token.ok_or_else(|| err("unauthenticated", "no Bearer token in Authorization"))?;
    let claims = auth::verify(&app.keys(), &token).map_err(|e| {
        app.token_refused(client, "Twirp", &e.to_string());
        err("unauthenticated", format!("invalid token: {e}"))
    })?;
    let media = media.ok_or_else(|| err("unavailable", "the media engine is not running"))?;
    let cx = Call {
        d: Decoded { json, body },
        media,
        claims,
        agents: app.0.agents.clone(),
    };
    Ok((cx, method))
}

async fn room_service(cx: &Call, method: &str) -> Result<Response<Body>, TwirpError> {
    match method {
        "CreateRoom" => create_room(cx).await,
        "ListRooms" => list_rooms(cx).await,
        "DeleteRoom" => delete_room(cx).await,
        "ListParticipants" => list_participants(cx).await,
        "GetParticipant" => get_participant(cx).await,
        "RemoveParticipant" => remove_participant(cx).await,
        "MutePublishedTrack" => mute_published_track(cx).await,
        "UpdateParticipant" => update_participant(cx).await,
        "UpdateSubscriptions" => update_subscriptions(cx).await,
        "SendData" => send_data(cx).await,
        "UpdateRoomMetadata" => update_room_metadata(cx).await,
        other => Err(err(
            "bad_route",
            format!("RoomService has no method {other:?}"),
        )),
    }
}

/// One authorised Twirp call: its body, the media side to ask, the token's claims.
pub(super) struct Call {
    pub(super) d: Decoded,
    pub(super) media: MediaHandle,
    pub(super) claims: Claims,
    pub(super) agents: Option<crate::agent::Dispatcher>,
}

impl Call {
    /// Sends `req` to the media thread that hosts (or is to host) `room`.
    pub(super) async fn ask(&self, room: &str, req: sfu::Request) -> Result<Reply, TwirpError> {
        self.media
            .request(room, req)
            .await
            .map_err(|e| err("unavailable", e.to_string()))
    }
}

/// A reply that does not match its request (cannot happen: `Sfu::handle` answers each
/// request with its own variant).
pub(super) fn mismatched(reply: Reply) -> TwirpError {
    err(
        "internal",
        format!("unexpected reply from the media thread: {reply:?}"),
    )
}

/// What a "found or not" reply means for the caller.
fn found(reply: Reply, what: impl FnOnce() -> String) -> Result<(), TwirpError> {
    match reply {
        Reply::Found(true) => Ok(()),
        Reply::Found(false) => Err(not_found(&what())),
        other => Err(mismatched(other)),
    }
}

async fn create_room(cx: &Call) -> Result<Response<Body>, TwirpError> {
    require(cx.claims.video.room_create == Some(true), "roomCreate")?;
    let r: lk::CreateRoomRequest = cx.d.parse()?;
    if r.name.is_empty() {
        return Err(err("invalid_argument", "a room needs a name"));
    }
    limits::check_len("the room name", r.name.len(), limits::MAX_ROOM_NAME)
        .and_then(|()| {
            limits::check_len(
                "the room metadata",
                r.metadata.len(),
                limits::MAX_ROOM_METADATA,
            )
        })
        .map_err(|e| err("invalid_argument", e))?;
    let req = sfu::Request::CreateRoom {
        name: r.name.clone(),
        settings: sfu::RoomSettings {
            max_participants: r.max_participants,
            empty_timeout: r.empty_timeout,
            departure_timeout: r.departure_timeout,
            metadata: r.metadata,
            agents: (!r.agents.is_empty()).then_some(r.agents),
            egress: r
                .egress
                .as_ref()
                .map(sfu::room::AutoRecord::from_config)
                .unwrap_or_default(),
        },
        unix_ms: crate::clock::unix_millis() as i64,
    };
    let room = match cx.ask(&r.name, req).await? {
        Reply::Created(created) => created.map_err(|e| err("resource_exhausted", e.to_string()))?,
        other => return Err(mismatched(other)),
    };
    info!(room = %room.name, "room created by the admin API");
    Ok(cx.d.reply(&room))
}

async fn list_rooms(cx: &Call) -> Result<Response<Body>, TwirpError> {
    let v = &cx.claims.video;
    require(
        v.room_list == Some(true) || v.room_admin == Some(true),
        "roomList",
    )?;
    let r: lk::ListRoomsRequest = cx.d.parse()?;
    let rooms = cx
        .media
        .list_rooms(r.names)
        .await
        .map_err(|e| err("unavailable", e.to_string()))?;
    Ok(cx.d.reply(&lk::ListRoomsResponse { rooms }))
}

async fn delete_room(cx: &Call) -> Result<Response<Body>, TwirpError> {
    require(cx.claims.video.room_create == Some(true), "roomCreate")?;
    let r: lk::DeleteRoomRequest = cx.d.parse()?;
    let room = r.room.clone();
    let reply = cx.ask(&r.room, sfu::Request::DeleteRoom { room }).await?;
    found(reply, || format!("room {:?}", r.room))?;
    info!(room = %r.room, "room deleted by the admin API");
    Ok(cx.d.reply(&lk::DeleteRoomResponse {}))
}

async fn list_participants(cx: &Call) -> Result<Response<Body>, TwirpError> {
    let r: lk::ListParticipantsRequest = cx.d.parse()?;
    admin_of(&cx.claims, &r.room)?;
    let room = r.room.clone();
    let participants = match cx
        .ask(&r.room, sfu::Request::ListParticipants { room })
        .await?
    {
        Reply::Participants(list) => {
            list.ok_or_else(|| not_found(&format!("room {:?}", r.room)))?
        }
        other => return Err(mismatched(other)),
    };
    Ok(cx.d.reply(&lk::ListParticipantsResponse { participants }))
}

async fn get_participant(cx: &Call) -> Result<Response<Body>, TwirpError> {
    let r: lk::RoomParticipantIdentity = cx.d.parse()?;
    admin_of(&cx.claims, &r.room)?;
    let req = sfu::Request::GetParticipant {
        room: r.room.clone(),
        identity: r.identity.clone(),
    };
    let info = match cx.ask(&r.room, req).await? {
        Reply::Participant(info) => {
            info.ok_or_else(|| not_found(&format!("participant {:?}", r.identity)))?
        }
        other => return Err(mismatched(other)),
    };
    Ok(cx.d.reply(&info))
}

async fn remove_participant(cx: &Call) -> Result<Response<Body>, TwirpError> {
    let r: lk::RoomParticipantIdentity = cx.d.parse()?;
    admin_of(&cx.claims, &r.room)?;
    let req = sfu::Request::RemoveParticipant {
        room: r.room.clone(),
        identity: r.identity.clone(),
    };
    let reply = cx.ask(&r.room, req).await?;
    found(reply, || format!("participant {:?}", r.identity))?;
    info!(room = %r.room, identity = %r.identity, "participant removed by the admin API");
    Ok(cx.d.reply(&lk::RemoveParticipantResponse {}))
}

async fn mute_published_track(cx: &Call) -> Result<Response<Body>, TwirpError> {
    let r: lk::MuteRoomTrackRequest = cx.d.parse()?;
    admin_of(&cx.claims, &r.room)?;
    let req = sfu::Request::MutePublishedTrack {
        room: r.room.clone(),
        identity: r.identity,
        track_sid: r.track_sid.clone(),
        muted: r.muted,
    };
    let track = match cx.ask(&r.room, req).await? {
        Reply::Track(info) => info.ok_or_else(|| not_found(&format!("track {:?}", r.track_sid)))?,
        other => return Err(mismatched(other)),
    };
    Ok(cx
        .d
        .reply(&lk::MuteRoomTrackResponse { track: Some(track) }))
}

async fn update_participant(cx: &Call) -> Result<Response<Body>, TwirpError> {
    let r: lk::UpdateParticipantRequest = cx.d.parse()?;
    admin_of(&cx.claims, &r.room)?;
    let identity = r.identity.clone();
    let req = sfu::Request::UpdateParticipant {
        room: r.room.clone(),
        identity: r.identity,
        metadata: (!r.metadata.is_empty()).then_some(r.metadata),
        name: (!r.name.is_empty()).then_some(r.name),
        attributes: r.attributes,
        perms: r.permission.map(|p| Permissions {
            can_publish: p.can_publish,
            can_subscribe: p.can_subscribe,
            can_publish_data: p.can_publish_data,
            hidden: p.hidden,
        }),
    };
    let info = match cx.ask(&r.room, req).await? {
        Reply::Updated(updated) => updated
            .ok_or_else(|| not_found(&format!("participant {identity:?}")))?
            .map_err(|e| err("invalid_argument", e))?,
        other => return Err(mismatched(other)),
    };
    Ok(cx.d.reply(&info))
}

async fn update_subscriptions(cx: &Call) -> Result<Response<Body>, TwirpError> {
    let r: lk::UpdateSubscriptionsRequest = cx.d.parse()?;
    admin_of(&cx.claims, &r.room)?;
    let identity = r.identity.clone();
    let req = sfu::Request::UpdateSubscriptions {
        room: r.room.clone(),
        identity: r.identity,
        update: lk::UpdateSubscription {
            track_sids: r.track_sids,
            subscribe: r.subscribe,
            participant_tracks: r.participant_tracks,
        },
    };
    let reply = cx.ask(&r.room, req).await?;
    found(reply, || format!("participant {identity:?}"))?;
    Ok(cx.d.reply(&lk::UpdateSubscriptionsResponse {}))
}

async fn send_data(cx: &Call) -> Result<Response<Body>, TwirpError> {
    let r: lk::SendDataRequest = cx.d.parse()?;
    admin_of(&cx.claims, &r.room)?;
    #[allow(deprecated)]
    let packet = lk::DataPacket {
        kind: r.kind,
        destination_identities: r.destination_identities.clone(),
        value: Some(lk::data_packet::Value::User(lk::UserPacket {
            payload: r.data,
            destination_identities: r.destination_identities,
            destination_sids: r.destination_sids,
            topic: r.topic,
            ..Default::default()
        })),
        ..Default::default()
    };
    let req = sfu::Request::SendData {
        room: r.room.clone(),
        packet,
    };
    let reply = cx.ask(&r.room, req).await?;
    found(reply, || format!("room {:?}", r.room))?;
    Ok(cx.d.reply(&lk::SendDataResponse {}))
}

async fn update_room_metadata(cx: &Call) -> Result<Response<Body>, TwirpError> {
    let r: lk::UpdateRoomMetadataRequest = cx.d.parse()?;
    admin_of(&cx.claims, &r.room)?;
    limits::check_len(
        "the room metadata",
        r.metadata.len(),
        limits::MAX_ROOM_METADATA,
    )
    .map_err(|e| err("invalid_argument", e))?;
    let req = sfu::Request::UpdateRoomMetadata {
        room: r.room.clone(),
        metadata: r.metadata,
    };
    let info = match cx.ask(&r.room, req).await? {
        Reply::Room(info) => info.ok_or_else(|| not_found(&format!("room {:?}", r.room)))?,
        other => return Err(mismatched(other)),
    };
    Ok(cx.d.reply(&info))
}
