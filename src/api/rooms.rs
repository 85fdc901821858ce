//! The web app's own API: `POST /api/join` mints a LiveKit token for a person who names a room
//! and themselves (rooms are open to anyone who can reach the device: LAN or Tailscale), and
//! `GET /api/rooms/<name>` says whether a room is still there (the recent-rooms list shows
//! "Room ended"). The token is made here, on request; nothing secret ships in the web bundle.
//! Who may join is decided by `api::access` (guest access, room passcodes, invite links).

use hyper::body::Incoming;
use hyper::{header, Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::access::valid_room;
use super::App;
use crate::auth::{self, TokenRequest, VideoGrant};
use crate::http::{json_response, Body};

pub const JOIN: &str = "/api/join";
pub const ROOMS: &str = "/api/rooms/";
const MAX_BODY: usize = 16 << 10;

#[derive(Deserialize)]
struct JoinBody {
    room: String,
    name: String,
    /// The room's passcode, when it has one (see `api::access`).
    #[serde(default)]
    passcode: Option<String>,
    /// The token of an invite link (`/r/<room>?invite=<token>`).
    #[serde(default)]
    invite: Option<String>,
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// An identity from a display name: its letters and digits (lowercase, at most 24) and a random
/// suffix, so two people called "Sam" are two participants.
fn identity_for(name: &str) -> String {
    let mut base: String = name
        .chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .take(24)
        .collect();
    if base.is_empty() {
        base.push_str("guest");
    }
    let mut raw = [0u8; 3];
    let _ = getrandom::fill(&mut raw);
    format!("{base}-{:02x}{:02x}{:02x}", raw[0], raw[1], raw[2])
}

pub async fn join(app: &App, req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let admin = app.logged_in(&req);
    let ip = app.client_ip(&req);
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let body = match crate::http::conn::read_body(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error(e.status(), &e.to_string()),
    };
    let Ok(j) = serde_json::from_slice::<JoinBody>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected JSON with a room and a name",
        );
    };
    let (room, name) = (j.room.trim().to_string(), j.name.trim().to_string());
    if !valid_room(&room) {
        return error(
            StatusCode::BAD_REQUEST,
            "a room name has 1 to 64 letters, digits, '-', '_' or '.'",
        );
    }
    if name.is_empty() || name.chars().count() > 64 {
        return error(
            StatusCode::BAD_REQUEST,
            "your name must have 1 to 64 characters",
        );
    }
    // Guest access, room passcodes and invite links (api/access.rs).
    let creds = super::access::Credentials {
        passcode: j.passcode.as_deref(),
        invite: j.invite.as_deref(),
        admin,
    };
    if let Err(refusal) = super::access::decide(
        app.0.readiness.state.as_ref(),
        &app.0.join_failures,
        ip,
        &room,
        &creds,
        crate::clock::unix_secs(),
    ) {
        info!(%room, code = refusal.code, "web join refused");
        return json_response(refusal.status, &refusal.json());
    }
    // Say "full" now rather than after the camera prompt.
    if let Some(media) = &app.0.media {
        let r = room.clone();
        let full = media
            .request(&room, crate::sfu::Request::ListRooms { names: vec![r] })
            .await
            .is_ok_and(|reply| match reply {
                crate::sfu::Reply::Rooms(v) => v.first().is_some_and(|x| {
                    x.max_participants > 0 && x.num_participants >= x.max_participants
                }),
                _ => false,
            });
        if full {
            return error(StatusCode::SERVICE_UNAVAILABLE, "this room is full");
        }
    }
    let keys = app.keys();
    let Some((key, _)) = keys.primary() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "this server has no API key",
        );
    };
    let identity = identity_for(&name);
    let token = auth::mint(
        &keys,
        key,
        &TokenRequest {
            identity: identity.clone(),
            name: Some(name),
            metadata: None,
            ttl: app.0.token_ttl,
            video: VideoGrant {
                room_join: Some(true),
                room: Some(room.clone()),
                can_publish: Some(true),
                can_subscribe: Some(true),
                can_publish_data: Some(true),
                // The admin may record the meeting (the web app's Record button).
                room_record: admin.then_some(true),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    let token = match token {
        Ok(t) => t,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    info!(%room, %identity, "web join token issued");
    let url = match host {
        Some(h) => format!("wss://{h}"),
        None => format!("wss://localhost:{}", app.0.https_port),
    };
    json_response(
        StatusCode::OK,
        &json!({"token": token, "url": url, "room": room, "identity": identity, "canRecord": admin}),
    )
}

pub async fn status(app: &App, path: &str) -> Response<Body> {
    let room = path.strip_prefix(ROOMS).unwrap_or_default();
    let room = form_urlencoded::parse(format!("r={room}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !valid_room(&room) {
        return error(StatusCode::BAD_REQUEST, "not a room name");
    }
    let Some(media) = &app.0.media else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the media engine is not running",
        );
    };
    let r = room.clone();
    let found = media
        .request(&room, crate::sfu::Request::ListRooms { names: vec![r] })
        .await
        .ok()
        .and_then(|reply| match reply {
            crate::sfu::Reply::Rooms(v) => v.into_iter().next(),
            _ => None,
        });
    json_response(
        StatusCode::OK,
        &json!({
            "room": room,
            "active": found.is_some(),
            "participants": found.map_or(0, |r| r.num_participants),
            // How to join: "open", "passcode" or "invite" (the pre-join page asks accordingly).
            "access": super::access::room_access(app.0.readiness.state.as_ref(), &room),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_and_identities() {
        assert!(valid_room("standup") && valid_room("team-1.b_2"));
        assert!(!valid_room("") && !valid_room("a b") && !valid_room(&"x".repeat(65)));
        assert!(!valid_room("../etc"), "no path tricks in links");
        let a = identity_for("Sam O'Neil");
        let b = identity_for("Sam O'Neil");
        assert!(a.starts_with("samoneil-") && a != b, "{a} {b}");
        assert!(identity_for("!!!").starts_with("guest-"));
    }
}
