//! Forwarding one packet: what its subscribers' copies share ([`Fanout`], computed once per
//! packet), and the per-subscription steps (gate on the simulcast layer or a keyframe, rewrite
//! sequence number, timestamp, payload type and VP8 picture ids, write to the subscriber's
//! stream). Allocation-free per subscriber: the payload is shared, keyframe requests are
//! collected in a fixed array.

use std::time::Instant;

use str0m::format::{Codec, PayloadParams};
use str0m::media::{MediaKind, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Vp8Descriptor};
use tracing::debug;

use super::delay::{self, DelayProbe};
use super::peer::Peer;
use super::room::{Participant, PubTrack, Sub};
use super::{rtp, PeerId, Pid};

/// How far the output timestamp moves at a simulcast layer switch (one frame at 30 fps, 90 kHz).
const SWITCH_TS_STEP: u32 = 3000;

/// Where a packet came from: its publisher, the publisher's peer, and the section and
/// simulcast layer of its stream.
pub struct Source {
    pub pid: Pid,
    pub peer_id: PeerId,
    pub mid: Mid,
    pub rid: Option<Rid>,
}

/// Keyframe requests collected while forwarding one packet (one per layer at most; no heap).
#[derive(Default)]
pub struct Wanted {
    rids: [Option<Rid>; 4],
    pub len: usize,
}

impl Wanted {
    pub fn push(&mut self, rid: Option<Rid>) {
        let known = &self.rids[..self.len];
        if !known.contains(&rid) && self.len < self.rids.len() {
            self.rids[self.len] = rid;
            self.len += 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Option<Rid>> + '_ {
        self.rids[..self.len].iter().copied()
    }
}

/// The codec of payload type `pt` on the track (learnt from the publisher's peer at its first
/// packet, and the track's MIME type with it).
pub fn payload_params(t: &mut PubTrack, publisher: Option<&Peer>, pt: Pt) -> Option<PayloadParams> {
    match t.params {
        Some(p) if p.pt() == pt => Some(p),
        _ => {
            let p = publisher?
                .rtc
                .codec_config()
                .find(|p| p.pt() == pt)
                .copied()?;
            if t.info.mime_type.is_empty() {
                t.info.mime_type = format!("{}/{}", t.kind, p.spec().codec);
            }
            t.params = Some(p);
            Some(p)
        }
    }
}

/// What a packet tells about its source: the publisher's audio level (active speakers), the
/// layer being flowing.
pub fn note_source(
    now: Instant,
    part: &mut Participant,
    t: &mut PubTrack,
    rid: Option<Rid>,
    pkt: &RtpPacket,
) {
    if t.kind != MediaKind::Video {
        if let Some(level) = pkt.header.ext_vals.audio_level {
            let linear = 10f32.powf(level as f32 / 20.0);
            part.audio_level = part.audio_level * 0.7 + linear * 0.3;
            part.last_audio = Some(now);
        }
    }
    if let Some(rid) = rid {
        t.layer_seen.insert(rid, now);
    }
}

/// One packet being forwarded: what every subscriber's copy shares, and what forwarding it
/// found wanting (keyframes).
pub struct Fanout<'a> {
    now: Instant,
    track: &'a PubTrack,
    pkt: &'a RtpPacket,
    rid: Option<Rid>,
    params: PayloadParams,
    video: bool,
    keyframe: bool,
    /// VP8: the payload descriptor, for PictureID continuity across layer switches.
    vp8: Option<Vp8Descriptor>,
    /// What the subscriber needs of the publisher's header extensions; str0m adds its own
    /// (mid, rid, transport-wide sequence numbers, absolute send time).
    ext: ExtensionValues,
    /// When the packet arrived, if its delay through confab is measured.
    probe_at: Option<Instant>,
    /// The layer to forward for a wanted one, for the last wanted layer asked (subscribers
    /// mostly want the same).
    flowing: Option<(Option<Rid>, Option<Rid>)>,
    pub want_keyframe: Wanted,
}

impl<'a> Fanout<'a> {
    pub fn new(
        now: Instant,
        track: &'a PubTrack,
        rid: Option<Rid>,
        params: PayloadParams,
        pkt: &'a RtpPacket,
        probe_at: Option<Instant>,
    ) -> Fanout<'a> {
        let video = track.kind == MediaKind::Video;
        let codec = params.spec().codec;
        let header = &pkt.header;
        Fanout {
            now,
            track,
            pkt,
            rid,
            params,
            video,
            keyframe: video && rtp::starts_keyframe(codec, &pkt.payload),
            vp8: match codec {
                Codec::Vp8 if rtp::vp8_has_long_picture_id(&pkt.payload) => {
                    Vp8Descriptor::parse(&pkt.payload).ok()
                }
                _ => None,
            },
            ext: ExtensionValues {
                audio_level: header.ext_vals.audio_level,
                voice_activity: header.ext_vals.voice_activity,
                video_orientation: header.ext_vals.video_orientation,
                video_content_type: header.ext_vals.video_content_type,
                ..Default::default()
            },
            probe_at,
            flowing: None,
            want_keyframe: Wanted::default(),
        }
    }

    /// Forwards the packet on one subscription, to the subscriber's `peer`: whether a copy was
    /// written (then the peer has output to poll).
    pub fn forward(&mut self, s: &mut Sub, peer: &mut Peer, probe: &mut DelayProbe) -> bool {
        let (Some(out_mid), true, false) = (s.mid, s.open, s.disabled) else {
            return false;
        };
        if !peer.connected {
            // Not before the subscriber's connection is up: str0m would queue the packets
            // and send them, stale, once DTLS completes (a quarter of a second of audio
            // at once into the browser's jitter buffer).
            return false;
        }
        if !s.rewrite.started() {
            // A section used before: its stream goes on where the last track left it.
            if let Some(last) = peer.last_out.get(&out_mid) {
                s.rewrite.continue_after(*last);
            }
        }
        self.admit(s) && self.write(s, out_mid, peer, probe)
    }

    /// Whether the subscription takes this packet. Simulcast: one layer; a switch to the
    /// wanted layer (or the best one flowing below it) at the first packet of its keyframe.
    /// A decoder cannot start on a delta frame: a new video subscription waits for a keyframe.
    fn admit(&mut self, s: &mut Sub) -> bool {
        let (seq, ts) = (*self.pkt.seq_no, self.pkt.header.timestamp);
        if self.rid.is_some() {
            let target = match self.flowing {
                Some((wanted, layer)) if wanted == s.target => layer,
                _ => {
                    let layer = self.track.flowing_layer(s.target, self.now);
                    self.flowing = Some((s.target, layer));
                    layer
                }
            };
            if target != s.current && self.rid == target {
                if self.keyframe {
                    debug!(track = %self.track.sid, from = ?s.current, to = ?target, "layer switch");
                    s.current = target;
                    s.needs_keyframe = false;
                    self.restart(s, seq, ts);
                } else {
                    self.want_keyframe.push(target);
                }
            }
            self.rid == s.current
        } else if s.needs_keyframe && self.video {
            if self.keyframe {
                s.needs_keyframe = false;
                self.restart(s, seq, ts);
                true
            } else {
                self.want_keyframe.push(None);
                false
            }
        } else {
            if !s.rewrite.started() {
                self.restart(s, seq, ts);
            }
            true
        }
    }

    /// The subscription's output stream starts (again) at this packet.
    fn restart(&self, s: &mut Sub, seq: u64, ts: u32) {
        s.rewrite.start(seq, ts, SWITCH_TS_STEP);
        if let Some(d) = &self.vp8 {
            s.vp8.start(d);
        }
    }

    /// Rewrites the packet for the subscription and writes it to the subscriber's stream on
    /// section `out_mid`.
    fn write(&self, s: &mut Sub, out_mid: Mid, peer: &mut Peer, probe: &mut DelayProbe) -> bool {
        let pkt = self.pkt;
        let Some((out_seq, out_ts)) = s.rewrite.map(*pkt.seq_no, pkt.header.timestamp) else {
            return false;
        };
        let vp8_patch = self.vp8.as_ref().and_then(|d| s.vp8.patch(d));
        // The subscriber's PT for the same codec (PTs may differ per peer).
        let pt = pkt.header.payload_type;
        let out_pt = match s.pt_map {
            Some((from, to)) if from == pt => to,
            _ => {
                let Some(to) = peer
                    .rtc
                    .codec_config()
                    .match_params(self.params)
                    .map(|p| p.pt())
                else {
                    return false;
                };
                s.pt_map = Some((pt, to));
                to
            }
        };
        let mut api = peer.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(out_mid, None) else {
            return false;
        };
        if self.video && !s.rtx_sized {
            s.rtx_sized = true;
            tx.set_rtx_cache(super::RTX_PACKETS, super::RTX_AGE, super::RTX_RATIO_CAP);
        }
        let mut w = RtpWrite::new(
            out_pt,
            out_seq.into(),
            out_ts,
            pkt.timestamp,
            pkt.payload.clone(),
        )
        .marker(pkt.header.marker)
        .ext_vals(self.ext.clone())
        .nackable(self.video);
        if let Some(patch) = vp8_patch {
            w = w.vp8_patch(patch);
        }
        if let Some(arrived) = self.probe_at {
            let audio = !self.video;
            let expected = delay::Probe { arrived, audio };
            probe.expect(self.now, *tx.ssrc(), out_seq as u16, expected);
        }
        tx.write_rtp(w);
        true
    }
}
