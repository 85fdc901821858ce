//! Signal requests through the real SFU session code (not only prost): a room with two
//! participants; the input is a sequence of length-prefixed `SignalRequest` frames from the
//! first, each decoded as the WebSocket session does and handled by `Sfu::handle_signal`, with
//! timers run and outputs drained between them. Must never panic, whatever arrives.
#![no_main]

use std::time::{Duration, Instant};

use confab::sfu::room::Mode;
use confab::sfu::{JoinParams, Permissions, Sfu, SfuConfig};
use libfuzzer_sys::fuzz_target;

mod seeds;
use livekit_protocol as lk;
use prost::Message as _;

fn params(identity: &str, mode: Mode) -> JoinParams {
    JoinParams {
        room: "fuzz".into(),
        identity: identity.into(),
        name: identity.into(),
        metadata: String::new(),
        attributes: Default::default(),
        perms: Permissions::default(),
        can_update_metadata: true,
        mode,
        auto_subscribe: true,
        client_protocol: 16,
        resume_sid: None,
        kind: lk::participant_info::Kind::Standard,
        room_settings: Default::default(),
        ice_servers: Vec::new(),
    }
}

fuzz_target!(init: seeds::write(&signal_seeds()), |data: &[u8]| {
    let mut cfg = SfuConfig::default();
    cfg.candidates = vec![("10.0.0.1:7882".parse().unwrap(), str0m::net::Protocol::Udp)];
    let mut now = Instant::now();
    let mut sfu = Sfu::new(cfg, now);
    let mode = if data.first().is_some_and(|b| b & 1 == 1) { Mode::V1 } else { Mode::V0 };
    let Ok((alice, _)) = sfu.join(now, 0, params("alice", mode)) else { return };
    let Ok((_bob, _)) = sfu.join(now, 0, params("bob", Mode::V0)) else { return };
    let mut rest = data.get(1..).unwrap_or_default();
    while rest.len() >= 2 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let Some(frame) = rest.get(2..2 + len) else { break };
        rest = &rest[2 + len..];
        if let Ok(lk::SignalRequest { message: Some(m) }) = lk::SignalRequest::decode(frame) {
            sfu.handle_signal(now, alice, m);
        }
        now += Duration::from_millis(20);
        sfu.handle_timeout(now);
        while sfu.poll_output().is_some() {}
    }
});

fn frame(m: lk::signal_request::Message) -> Vec<u8> {
    let bytes = lk::SignalRequest { message: Some(m) }.encode_to_vec();
    let mut out = (bytes.len() as u16).to_le_bytes().to_vec();
    out.extend(bytes);
    out
}

/// What livekit-client sends after joining: tracks, a mute, subscriptions, track settings,
/// metadata, pings, a trickled candidate and a leave.
fn signal_seeds() -> Vec<Vec<u8>> {
    use lk::signal_request::Message as Req;
    let add = Req::AddTrack(lk::AddTrackRequest {
        cid: "TR_camera".into(),
        name: "camera".into(),
        r#type: lk::TrackType::Video as i32,
        width: 1280,
        height: 720,
        source: lk::TrackSource::Camera as i32,
        ..Default::default()
    });
    let mic = Req::AddTrack(lk::AddTrackRequest {
        cid: "TR_mic".into(),
        name: "microphone".into(),
        r#type: lk::TrackType::Audio as i32,
        source: lk::TrackSource::Microphone as i32,
        ..Default::default()
    });
    let sub = Req::Subscription(lk::UpdateSubscription {
        track_sids: vec!["TR_unknown".into()],
        subscribe: false,
        participant_tracks: vec![],
    });
    let meta = Req::UpdateMetadata(lk::UpdateParticipantMetadata {
        metadata: "{\"hand\":true}".into(),
        name: "Alice".into(),
        ..Default::default()
    });
    let trickle = Req::Trickle(lk::TrickleRequest {
        candidate_init: "{\"candidate\":\"candidate:1 1 udp 2130706431 10.0.0.9 5000 typ host\",\"sdpMid\":\"0\",\"sdpMLineIndex\":0}".into(),
        target: lk::SignalTarget::Publisher as i32,
        ..Default::default()
    });
    let mut all = vec![0u8];
    for m in [
        add.clone(),
        mic.clone(),
        sub.clone(),
        meta.clone(),
        trickle.clone(),
        Req::Ping(1),
        Req::Leave(lk::LeaveRequest::default()),
    ] {
        all.extend(frame(m));
    }
    vec![
        all,
        [vec![1u8], frame(add), frame(mic)].concat(),
        [vec![0u8], frame(sub)].concat(),
        [vec![0u8], frame(meta), frame(trickle)].concat(),
    ]
}
