//! Limits on what one participant may make confab keep or do (issue 24). Every per-session
//! structure is bounded by one of these, and no request costs more than its own size: a request
//! over a limit is refused whole (a LiveKit `RequestResponse` with `LIMIT_EXCEEDED` and a short
//! message; logged once per session, without the oversized content), never truncated silently.
//!
//! The figures follow LiveKit's where LiveKit has one (its `limit` config: metadata and
//! attributes 64 000 bytes, names 256). docs/architecture.md ("Limits") lists them all.

use livekit_protocol as lk;

/// Tracks one participant publishes at once (a browser publishes 2–4: camera, microphone,
/// screen and its audio).
pub const MAX_TRACKS: usize = 32;
/// A track's name, its client id (`cid`) and its stream name, in bytes each.
pub const MAX_TRACK_NAME: usize = 256;
/// Simulcast layers announced for one track (LiveKit uses three: q, h, f).
pub const MAX_LAYERS: usize = 4;
/// A participant's metadata, in bytes (LiveKit's `limit.max_metadata_size`).
pub const MAX_METADATA: usize = 64_000;
/// A participant's attributes, keys and values together, in bytes (LiveKit's
/// `limit.max_attributes_size`).
pub const MAX_ATTRIBUTES: usize = 64_000;
/// A participant's identity, its display name and a room's name, in bytes each.
pub const MAX_IDENTITY: usize = 256;
pub const MAX_NAME: usize = 256;
pub const MAX_ROOM_NAME: usize = 256;
/// A room's metadata, in bytes (the Twirp `UpdateRoomMetadata`).
pub const MAX_ROOM_METADATA: usize = 64_000;
/// Track ids in one `UpdateSubscription` or `UpdateTrackSettings` (a room holds at most
/// participants × [`MAX_TRACKS`] tracks).
pub const MAX_TRACK_IDS: usize = 4096;
/// Remote ICE candidates one PeerConnection takes before it is connected, and again after
/// (trickled or in an offer; a browser sends a handful). str0m keeps every one and scans them.
pub const MAX_CANDIDATES: usize = 64;
/// Media sections of one PeerConnection: in a client's offer, and what the server adds to its
/// own offers and asks a v1 client for (one per subscribed track, stopped ones included).
pub const MAX_MEDIA_SECTIONS: usize = 1024;
/// Destination identities of one data packet.
pub const MAX_DATA_DESTINATIONS: usize = 1024;

/// Encoded signal responses queued for one session (the WebSocket writer's backlog). A client
/// that does not read while this much waits for it is removed.
pub const MAX_OUTBOUND_BYTES: usize = 4 << 20;
/// Signal requests read from one session and not yet handled by the media thread, in bytes
/// (each counts at least [`INBOUND_OVERHEAD`]); the session stops reading while it is over.
pub const MAX_INBOUND_BYTES: usize = 2 << 20;
pub const INBOUND_OVERHEAD: usize = 512;

/// Keys and values of `attributes`, in bytes.
pub fn attributes_size<'a>(
    attributes: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> usize {
    attributes
        .into_iter()
        .map(|(k, v)| k.len().saturating_add(v.len()))
        .fold(0, usize::saturating_add)
}

/// `what` is at most `max` bytes long, or the message saying it is not.
pub fn check_len(what: &str, len: usize, max: usize) -> Result<(), String> {
    if len > max {
        Err(format!("{what} is {len} bytes; at most {max} are allowed"))
    } else {
        Ok(())
    }
}

/// A participant's own fields (from its token, or an update): each within its limit.
pub fn check_participant<'a>(
    identity: &str,
    name: &str,
    metadata: &str,
    attributes: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), String> {
    check_len("the identity", identity.len(), MAX_IDENTITY)?;
    check_len("the name", name.len(), MAX_NAME)?;
    check_len("the metadata", metadata.len(), MAX_METADATA)?;
    check_len(
        "the attributes",
        attributes_size(attributes),
        MAX_ATTRIBUTES,
    )
}

/// Agent dispatches one room or one request may ask for.
pub const MAX_AGENT_DISPATCHES: usize = 16;
/// An agent's name, as a worker registers it or a dispatch asks for it.
pub const MAX_AGENT_NAME: usize = 256;
/// A dispatch's (and so a job's) metadata.
pub const MAX_JOB_METADATA: usize = 64_000;

/// A list of agent dispatches (a token's `roomConfig.agents`, `CreateRoom.agents`): how many,
/// and each one's name and metadata, within their limits.
pub fn check_agent_dispatches(agents: &[lk::RoomAgentDispatch]) -> Result<(), String> {
    if agents.len() > MAX_AGENT_DISPATCHES {
        return Err(format!(
            "{} agent dispatches; at most {MAX_AGENT_DISPATCHES} are allowed",
            agents.len()
        ));
    }
    for a in agents {
        check_len("an agent name", a.agent_name.len(), MAX_AGENT_NAME)?;
        check_len(
            "an agent dispatch's metadata",
            a.metadata.len(),
            MAX_JOB_METADATA,
        )?;
    }
    Ok(())
}

/// An `add_track` request's own fields, each within its limit.
pub fn check_track(req: &lk::AddTrackRequest) -> Result<(), String> {
    check_len("the track name", req.name.len(), MAX_TRACK_NAME)?;
    check_len("the track cid", req.cid.len(), MAX_TRACK_NAME)?;
    check_len("the track stream", req.stream.len(), MAX_TRACK_NAME)?;
    check_len("the track sid", req.sid.len(), MAX_TRACK_NAME)?;
    if req.layers.len() > MAX_LAYERS {
        return Err(format!(
            "{} simulcast layers; at most {MAX_LAYERS} are allowed",
            req.layers.len()
        ));
    }
    if req.layers.iter().any(|l| l.rid.len() > 16) {
        return Err("a simulcast layer's rid is longer than 16 bytes".into());
    }
    Ok(())
}

/// What an `add_track` refusal echoes of the request: its `cid` (the client matches the answer
/// by it) when that is within the limit, nothing else.
pub fn echo_track(req: &lk::AddTrackRequest) -> lk::AddTrackRequest {
    lk::AddTrackRequest {
        cid: if req.cid.len() <= MAX_TRACK_NAME {
            req.cid.clone()
        } else {
            String::new()
        },
        r#type: req.r#type,
        source: req.source,
        ..Default::default()
    }
}

/// LiveKit's refusal of a request: `LIMIT_EXCEEDED` with `message`.
pub fn refusal(
    request_id: u32,
    request: Option<lk::request_response::Request>,
    message: String,
) -> lk::signal_response::Message {
    lk::signal_response::Message::RequestResponse(lk::RequestResponse {
        request_id,
        reason: lk::request_response::Reason::LimitExceeded as i32,
        message,
        request,
    })
}

/// Track ids one `UpdateSubscription` names, over its two lists.
pub fn subscription_ids(s: &lk::UpdateSubscription) -> usize {
    s.participant_tracks
        .iter()
        .map(|p| p.track_sids.len())
        .fold(s.track_sids.len(), usize::saturating_add)
}

/// `a=candidate` lines and media sections (`m=` lines) of an SDP.
pub fn sdp_counts(sdp: &str) -> (usize, usize) {
    let (mut candidates, mut sections) = (0, 0);
    for line in sdp.lines() {
        if line.starts_with("a=candidate") {
            candidates += 1;
        } else if line.starts_with("m=") {
            sections += 1;
        }
    }
    (candidates, sections)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn lengths_are_checked_in_bytes_with_the_field_named() {
        assert!(check_len("the name", 256, MAX_NAME).is_ok());
        let e = check_len("the name", 257, MAX_NAME).unwrap_err();
        assert!(e.contains("the name") && e.contains("256"), "{e}");
        let attrs: HashMap<String, String> =
            [("k".repeat(10), "v".repeat(63_990))].into_iter().collect();
        assert!(check_participant("a", "b", "", &attrs).is_ok());
        let attrs: HashMap<String, String> =
            [("k".repeat(11), "v".repeat(63_990))].into_iter().collect();
        let e = check_participant("a", "b", "", &attrs).unwrap_err();
        assert!(e.contains("attributes"), "{e}");
        let e = check_participant(&"i".repeat(257), "b", "", &HashMap::new()).unwrap_err();
        assert!(e.contains("identity") && !e.contains("iii"), "{e}");
        assert!(check_participant("a", "b", &"m".repeat(64_001), &HashMap::new()).is_err());
    }

    #[test]
    fn a_track_request_is_checked_and_its_refusal_echoes_only_a_short_cid() {
        let mut req = lk::AddTrackRequest {
            cid: "c".into(),
            name: "n".repeat(MAX_TRACK_NAME),
            ..Default::default()
        };
        assert!(check_track(&req).is_ok());
        req.name.push('n');
        assert!(check_track(&req).unwrap_err().contains("track name"));
        assert_eq!(echo_track(&req).cid, "c");
        assert!(echo_track(&req).name.is_empty());
        req.cid = "c".repeat(300);
        assert!(echo_track(&req).cid.is_empty());
        req = lk::AddTrackRequest {
            layers: vec![Default::default(); MAX_LAYERS + 1],
            ..Default::default()
        };
        assert!(check_track(&req).unwrap_err().contains("layers"));
    }

    #[test]
    fn sdp_lines_are_counted() {
        let sdp = "v=0\r\nm=audio 9 x\r\na=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\n\
                   m=video 9 x\r\na=mid:1\r\n";
        assert_eq!(sdp_counts(sdp), (1, 2));
    }
}
