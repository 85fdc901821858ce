//! LiveKit signalling over HTTP and WebSocket. The WebSocket sessions (`/rtc`, `/rtc/v1`) are in
//! [`ws`]. `/rtc/validate` (and `/rtc/v1/validate`), which livekit-client calls when a connection
//! attempt fails, to show the user why, answers `200 success` or an error status with the reason
//! as text, as LiveKit does: 401 for a missing, invalid or expired token or one without
//! `roomJoin`, 400 for a token without identity.

pub mod rate;
pub mod ws;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use livekit_protocol as lk;

use crate::auth::{self, ApiKeys, Claims};
use crate::sfu::limits;

/// What a signalling upgrade asks of the server that routes it here (`api::App`): the client's
/// address, the per-address limit on refused tokens, and the API keys. A trait, so that `signal`
/// does not depend on `api`.
pub trait Gate: Sync {
    /// The address the request came from (the TCP peer, or the client a trusted proxy names).
    fn client_ip(&self, req: &Request<Incoming>) -> IpAddr;
    /// The status and reason to refuse `client` with while it has presented too many refused
    /// tokens lately.
    fn token_blocked(&self, client: IpAddr) -> Option<(StatusCode, String)>;
    /// Counts (and logs) a refused token from `client`.
    fn token_refused(&self, client: IpAddr, what: &str, reason: &str);
    /// The API keys now.
    fn keys(&self) -> Arc<ApiKeys>;
    /// The TURN servers (with fresh credentials) for `identity`, joining through `req`.
    fn ice_servers(&self, _identity: &str, _req: &Request<Incoming>) -> Vec<lk::IceServer> {
        Vec::new()
    }
}

/// The host (without port) a request was addressed to: HTTP/2's authority or HTTP/1's `Host`,
/// as the `http` crate parses an authority (an IPv6 literal keeps its brackets).
pub fn request_host<B>(req: &Request<B>) -> Option<String> {
    let authority = match req.uri().authority() {
        Some(a) => a.clone(),
        None => req
            .headers()
            .get(hyper::header::HOST)?
            .to_str()
            .ok()?
            .parse::<hyper::http::uri::Authority>()
            .ok()?,
    };
    Some(authority.host().to_string()).filter(|h| !h.is_empty())
}

/// A token that may join: who, and which room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinGrant {
    pub identity: String,
    pub room: String,
    pub claims: Claims,
}

/// Why a join is refused: the HTTP status and the text the client shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
    }
}

/// The value of `name` in a URL query string, decoded.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<Cow<'a, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Checks a join request: the token from `access_token` or `Authorization: Bearer`, its
/// signature and times, the `roomJoin` grant and the room.
pub fn validate_join(
    keys: &ApiKeys,
    query: Option<&str>,
    authorization: Option<&str>,
) -> Result<JoinGrant, Refusal> {
    let token = query_param(query, "access_token")
        .map(Cow::into_owned)
        .or_else(|| auth::bearer(authorization).map(str::to_string))
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "no access token given"))?;
    let claims = auth::verify(keys, &token)
        .map_err(|e| refuse(StatusCode::UNAUTHORIZED, format!("invalid token: {e}")))?;
    if claims.video.room_join != Some(true) {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "permission denied: the token does not grant roomJoin",
        ));
    }
    // Before anything repeats them: the fields' sizes (issue 24; the message names the field,
    // never its content).
    let too_big = |e: String| {
        refuse(
            StatusCode::BAD_REQUEST,
            format!("the token is refused: {e}"),
        )
    };
    let granted_room = claims.video.room.as_deref().unwrap_or_default();
    limits::check_len("the room name", granted_room.len(), limits::MAX_ROOM_NAME)
        .map_err(too_big)?;
    if let Some(asked) = query_param(query, "room") {
        limits::check_len("the room parameter", asked.len(), limits::MAX_ROOM_NAME)
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?;
    }
    limits::check_participant(
        &claims.sub,
        claims.name.as_deref().unwrap_or_default(),
        claims.metadata.as_deref().unwrap_or_default(),
        claims.attributes.iter().flatten(),
    )
    .map_err(too_big)?;
    let room = match (claims.video.room.as_deref(), query_param(query, "room")) {
        (Some(granted), Some(asked)) if granted != asked => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                format!("permission denied: the token is for room {granted:?}, not {asked:?}"),
            ))
        }
        (Some(granted), _) if !granted.is_empty() => granted.to_string(),
        _ => {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "permission denied: the token names no room",
            ))
        }
    };
    if claims.sub.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "identity cannot be empty"));
    }
    if let Some(c) = claims
        .room_config()
        .map_err(|e| refuse(StatusCode::BAD_REQUEST, e))?
    {
        limits::check_len(
            "the roomConfig metadata",
            c.metadata.len(),
            limits::MAX_ROOM_METADATA,
        )
        .map_err(too_big)?;
        limits::check_agent_dispatches(&c.agents).map_err(too_big)?;
    }
    Ok(JoinGrant {
        identity: claims.sub.clone(),
        room,
        claims,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use super::*;
    use crate::auth::{mint, TokenRequest, VideoGrant};
    use crate::config::Secret;

    fn keys() -> ApiKeys {
        ApiKeys::from_map(
            [("APIk".to_string(), Secret::new("s".repeat(40)))]
                .into_iter()
                .collect(),
        )
    }

    #[test]
    fn the_request_host_is_the_authority_without_its_port() {
        let host = |h: &str| {
            let req = Request::get("/rtc").header("host", h).body(()).unwrap();
            request_host(&req)
        };
        assert_eq!(host("confab.local:7880").as_deref(), Some("confab.local"));
        assert_eq!(host("confab.local").as_deref(), Some("confab.local"));
        assert_eq!(host("[::1]:7880").as_deref(), Some("[::1]"));
        assert_eq!(host("192.0.2.7:443").as_deref(), Some("192.0.2.7"));
        for bad in ["", "a b:1"] {
            assert_eq!(host(bad), None, "{bad:?}");
        }
        // HTTP/2: the authority of the request's URI.
        let req = Request::get("https://meet.example.org:8443/rtc")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("meet.example.org"));
    }

    fn token(identity: &str, video: VideoGrant) -> String {
        mint(
            &keys(),
            "APIk",
            &TokenRequest {
                identity: identity.into(),
                ttl: Duration::from_secs(600),
                video,
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn join(room: &str) -> VideoGrant {
        VideoGrant {
            room_join: Some(true),
            room: Some(room.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_good_token_joins_its_room() {
        let t = token("alice", join("standup"));
        let q = format!("access_token={t}&auto_subscribe=1&protocol=16");
        let g = validate_join(&keys(), Some(&q), None).unwrap();
        assert_eq!((g.identity.as_str(), g.room.as_str()), ("alice", "standup"));
        // The same token in the Authorization header.
        let g = validate_join(&keys(), None, Some(&format!("Bearer {t}"))).unwrap();
        assert_eq!(g.room, "standup");
    }

    #[test]
    fn refusals_carry_livekit_statuses_and_reasons() {
        let status = |q: Option<&str>| validate_join(&keys(), q, None).unwrap_err();
        assert_eq!(status(None).status, StatusCode::UNAUTHORIZED);
        let r = status(Some("access_token=garbage"));
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        assert!(r.reason.starts_with("invalid token"), "{}", r.reason);
        let no_join = token(
            "bob",
            VideoGrant {
                room_list: Some(true),
                ..Default::default()
            },
        );
        let r = status(Some(&format!("access_token={no_join}")));
        assert!(r.reason.contains("roomJoin"), "{}", r.reason);
        let t = token("bob", join("standup"));
        let r = status(Some(&format!("access_token={t}&room=other")));
        assert!(r.reason.contains("not \"other\""), "{}", r.reason);
        let anonymous = token("", join("standup"));
        assert_eq!(
            status(Some(&format!("access_token={anonymous}"))).status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn oversized_fields_are_refused_with_400_naming_only_the_field() {
        let check = |t: &str| validate_join(&keys(), Some(&format!("access_token={t}")), None);
        let long = "x".repeat(limits::MAX_IDENTITY + 1);
        let r = check(&token(&long, join("standup"))).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            r.reason.contains("identity") && !r.reason.contains("xxx"),
            "{}",
            r.reason
        );
        let r = check(&token("bob", join(&long))).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(
            r.reason.contains("room") && !r.reason.contains("xxx"),
            "{}",
            r.reason
        );
        let ok = token("bob", join(&"x".repeat(limits::MAX_ROOM_NAME)));
        assert!(check(&ok).is_ok());
        let meta = mint(
            &keys(),
            "APIk",
            &TokenRequest {
                identity: "bob".into(),
                metadata: Some("m".repeat(limits::MAX_METADATA + 1)),
                ttl: Duration::from_secs(600),
                video: join("standup"),
                ..Default::default()
            },
        )
        .unwrap();
        let r = validate_join(&keys(), None, Some(&format!("Bearer {meta}"))).unwrap_err();
        assert!(r.reason.contains("metadata"), "{}", r.reason);
        let t = token("bob", join("standup"));
        let q = format!("access_token={t}&room={long}");
        let r = validate_join(&keys(), Some(&q), None).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(!r.reason.contains("xxx"), "{}", r.reason);
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(
            query_param(Some("a=1&room=tea%20time"), "room").as_deref(),
            Some("tea time")
        );
        assert_eq!(query_param(Some("a=1"), "room"), None);
        assert_eq!(query_param(None, "room"), None);
    }
}
