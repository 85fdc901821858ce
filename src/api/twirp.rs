//! LiveKit's admin API: Twirp `livekit.RoomService` at `POST /twirp/livekit.RoomService/<Method>`,
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

use super::{App, Body};
use crate::auth::{self, Claims};
use crate::media::MediaHandle;
use crate::sfu::{limits, Permissions};

pub const PREFIX: &str = "/twirp/livekit.RoomService/";
const MAX_BODY: usize = 1 << 20;

/// A Twirp error: code (which fixes the HTTP status) and message.
struct TwirpError(&'static str, String);

impl TwirpError {
    fn status(&self) -> StatusCode {
        match self.0 {
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "permission_denied" => StatusCode::FORBIDDEN,
            "not_found" | "bad_route" => StatusCode::NOT_FOUND,
            "invalid_argument" | "malformed" => StatusCode::BAD_REQUEST,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn response(&self) -> Response<Body> {
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

fn err(code: &'static str, msg: impl Into<String>) -> TwirpError {
    TwirpError(code, msg.into())
}

fn not_found(what: &str) -> TwirpError {
    err("not_found", format!("{what} not found"))
}

/// The request body, decoded as JSON or protobuf per its content type.
struct Decoded {
    json: bool,
    body: Bytes,
}

impl Decoded {
    fn parse<T: Message + Default + DeserializeOwned>(&self) -> Result<T, TwirpError> {
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

    fn reply<T: Message + Serialize>(&self, value: &T) -> Response<Body> {
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

fn admin_of(claims: &Claims, room: &str) -> Result<(), TwirpError> {
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
    if req.method() != Method::POST {
        return Err(err("bad_route", "Twirp methods are called with POST"));
    }
    let method = req
        .uri()
        .path()
        .strip_prefix(PREFIX)
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
    let d = Decoded { json, body };
    let media = media.ok_or_else(|| err("unavailable", "the media engine is not running"))?;
    let call = |e: crate::media::MediaGone| err("unavailable", e.to_string());
    let v = &claims.video;

    match method.as_str() {
        "CreateRoom" => {
            require(v.room_create == Some(true), "roomCreate")?;
            let r: lk::CreateRoomRequest = d.parse()?;
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
            let (name, max, empty, meta) =
                (r.name, r.max_participants, r.empty_timeout, r.metadata);
            let room = media
                .create_room(&name.clone(), move |sfu, now| {
                    let room = sfu.create_room(
                        now,
                        crate::media::unix_ms(),
                        &name,
                        Some(max),
                        (empty > 0).then_some(empty),
                    )?;
                    if meta.is_empty() {
                        Ok(room)
                    } else {
                        Ok(sfu.update_room_metadata(&name, meta).unwrap_or(room))
                    }
                })
                .await
                .map_err(call)?
                .map_err(|e: crate::sfu::JoinError| err("resource_exhausted", e.to_string()))?;
            info!(room = %room.name, "room created by the admin API");
            Ok(d.reply(&room))
        }
        "ListRooms" => {
            require(
                v.room_list == Some(true) || v.room_admin == Some(true),
                "roomList",
            )?;
            let r: lk::ListRoomsRequest = d.parse()?;
            let rooms = media.list_rooms(r.names).await.map_err(call)?;
            Ok(d.reply(&lk::ListRoomsResponse { rooms }))
        }
        "DeleteRoom" => {
            require(v.room_create == Some(true), "roomCreate")?;
            let r: lk::DeleteRoomRequest = d.parse()?;
            let room = r.room.clone();
            let found = media
                .call_room(&r.room, move |sfu, now| sfu.delete_room(now, &room))
                .await
                .map_err(call)?;
            if !found {
                return Err(not_found(&format!("room {:?}", r.room)));
            }
            info!(room = %r.room, "room deleted by the admin API");
            Ok(d.reply(&lk::DeleteRoomResponse {}))
        }
        "ListParticipants" => {
            let r: lk::ListParticipantsRequest = d.parse()?;
            admin_of(&claims, &r.room)?;
            let room = r.room.clone();
            let list = media
                .call_room(&r.room, move |sfu, _| sfu.list_participants(&room))
                .await
                .map_err(call)?
                .ok_or_else(|| not_found(&format!("room {:?}", r.room)))?;
            Ok(d.reply(&lk::ListParticipantsResponse { participants: list }))
        }
        "GetParticipant" => {
            let r: lk::RoomParticipantIdentity = d.parse()?;
            admin_of(&claims, &r.room)?;
            let (room, id) = (r.room.clone(), r.identity.clone());
            let info = media
                .call_room(&r.room, move |sfu, _| {
                    sfu.find(&room, &id).and_then(|p| sfu.participant_info(p))
                })
                .await
                .map_err(call)?
                .ok_or_else(|| not_found(&format!("participant {:?}", r.identity)))?;
            Ok(d.reply(&info))
        }
        "RemoveParticipant" => {
            let r: lk::RoomParticipantIdentity = d.parse()?;
            admin_of(&claims, &r.room)?;
            let (room, id) = (r.room.clone(), r.identity.clone());
            let found = media
                .call_room(&r.room, move |sfu, now| match sfu.find(&room, &id) {
                    Some(pid) => {
                        sfu.remove_participant(now, pid, lk::DisconnectReason::ParticipantRemoved);
                        true
                    }
                    None => false,
                })
                .await
                .map_err(call)?;
            if !found {
                return Err(not_found(&format!("participant {:?}", r.identity)));
            }
            info!(room = %r.room, identity = %r.identity, "participant removed by the admin API");
            Ok(d.reply(&lk::RemoveParticipantResponse {}))
        }
        "MutePublishedTrack" => {
            let r: lk::MuteRoomTrackRequest = d.parse()?;
            admin_of(&claims, &r.room)?;
            let shard_room = r.room.clone();
            let (room, id, track, muted) = (r.room, r.identity, r.track_sid.clone(), r.muted);
            let info = media
                .call_room(&shard_room, move |sfu, _| {
                    let pid = sfu.find(&room, &id)?;
                    let owns = sfu
                        .participant_info(pid)
                        .is_some_and(|p| p.tracks.iter().any(|t| t.sid == track));
                    if owns {
                        sfu.set_muted(&track, muted)
                    } else {
                        None
                    }
                })
                .await
                .map_err(call)?
                .ok_or_else(|| not_found(&format!("track {:?}", r.track_sid)))?;
            Ok(d.reply(&lk::MuteRoomTrackResponse { track: Some(info) }))
        }
        "UpdateParticipant" => {
            let r: lk::UpdateParticipantRequest = d.parse()?;
            admin_of(&claims, &r.room)?;
            let (identity, room) = (r.identity.clone(), r.room.clone());
            let info = media
                .call_room(&room, move |sfu, _| {
                    let pid = sfu.find(&r.room, &r.identity)?;
                    let perms = r.permission.map(|p| Permissions {
                        can_publish: p.can_publish,
                        can_subscribe: p.can_subscribe,
                        can_publish_data: p.can_publish_data,
                        hidden: p.hidden,
                    });
                    let metadata = (!r.metadata.is_empty()).then_some(r.metadata);
                    let name = (!r.name.is_empty()).then_some(r.name);
                    // The same limits as the participant's own updates (issue 24).
                    if let Err(e) =
                        sfu.check_update(pid, metadata.as_deref(), name.as_deref(), &r.attributes)
                    {
                        return Some(Err(e));
                    }
                    sfu.update_participant(pid, metadata, name, r.attributes, perms)
                        .map(Ok)
                })
                .await
                .map_err(call)?
                .ok_or_else(|| not_found(&format!("participant {identity:?}")))?
                .map_err(|e| err("invalid_argument", e))?;
            Ok(d.reply(&info))
        }
        "UpdateSubscriptions" => {
            let r: lk::UpdateSubscriptionsRequest = d.parse()?;
            admin_of(&claims, &r.room)?;
            let (identity, room) = (r.identity.clone(), r.room.clone());
            let found = media
                .call_room(&room, move |sfu, now| {
                    let Some(pid) = sfu.find(&r.room, &r.identity) else {
                        return false;
                    };
                    let msg = lk::signal_request::Message::Subscription(lk::UpdateSubscription {
                        track_sids: r.track_sids,
                        subscribe: r.subscribe,
                        participant_tracks: r.participant_tracks,
                    });
                    sfu.handle_signal(now, pid, msg);
                    true
                })
                .await
                .map_err(call)?;
            if !found {
                return Err(not_found(&format!("participant {identity:?}")));
            }
            Ok(d.reply(&lk::UpdateSubscriptionsResponse {}))
        }
        "SendData" => {
            let r: lk::SendDataRequest = d.parse()?;
            admin_of(&claims, &r.room)?;
            let room = r.room.clone();
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
            let found = media
                .call_room(&r.room, move |sfu, now| sfu.send_data(now, &room, packet))
                .await
                .map_err(call)?;
            if !found {
                return Err(not_found(&format!("room {:?}", r.room)));
            }
            Ok(d.reply(&lk::SendDataResponse {}))
        }
        "UpdateRoomMetadata" => {
            let r: lk::UpdateRoomMetadataRequest = d.parse()?;
            admin_of(&claims, &r.room)?;
            limits::check_len(
                "the room metadata",
                r.metadata.len(),
                limits::MAX_ROOM_METADATA,
            )
            .map_err(|e| err("invalid_argument", e))?;
            let room = r.room.clone();
            let info = media
                .call_room(&r.room.clone(), move |sfu, _| {
                    sfu.update_room_metadata(&room, r.metadata)
                })
                .await
                .map_err(call)?
                .ok_or_else(|| not_found(&format!("room {:?}", r.room)))?;
            Ok(d.reply(&info))
        }
        other => Err(err(
            "bad_route",
            format!("RoomService has no method {other:?}"),
        )),
    }
}
