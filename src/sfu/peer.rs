//! One WebRTC PeerConnection on the server side: a str0m `Rtc` plus what LiveKit's signalling
//! needs around it (offer ids, the pending offer, the two data channels), and building a
//! subscriber's offers.

use std::collections::HashMap;
use std::time::Instant;

use str0m::change::{SdpOffer, SdpPendingOffer};
use str0m::channel::ChannelId;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::Rtc;

use super::Pid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// v0 publisher PC: the client offers, media and data flow in.
    Publisher,
    /// v0 subscriber PC: the server offers, media and data flow out.
    Subscriber,
    /// v1: the one PC; the client offers, media flows both ways.
    Single,
}

pub struct Peer {
    pub rtc: Rtc,
    pub owner: Pid,
    pub role: Role,
    /// Our offer awaiting the client's answer (v0 subscriber).
    pub pending: Option<SdpPendingOffer>,
    /// When that offer went out (a client that never answers is disconnected).
    pub offered_at: Option<Instant>,
    pub offer_id: u32,
    pub reliable: Option<ChannelId>,
    pub lossy: Option<ChannelId>,
    /// When str0m wants to be polled again.
    pub timeout: Instant,
    pub connected: bool,
    /// A renegotiation is wanted once the pending one completes.
    pub renegotiate: bool,
    /// Sections to stop in the next offer (subscriptions that ended).
    pub stopping: Vec<str0m::media::Mid>,
    /// The last sequence number and timestamp sent on a section whose subscription ended: a
    /// track forwarded on it later continues from there (one SSRC, one sequence).
    pub last_out: HashMap<str0m::media::Mid, (u64, u32)>,
    /// Remote ICE candidates taken (trickled or in an offer or answer), before the connection
    /// was up or since (at most `limits::MAX_CANDIDATES` each).
    pub candidates: usize,
    /// v0 subscriber: media sections the server has added (one per subscription ever made).
    pub sections: usize,
    /// In the SFU's queue of peers to poll, put there by forwarding (cleared when taken off).
    pub queued: bool,
    /// The stream totals str0m reported last (`counters.rs`).
    pub stats_seen: super::counters::Seen,
}

impl Peer {
    pub fn new(rtc: Rtc, owner: Pid, role: Role, now: Instant) -> Peer {
        Peer {
            rtc,
            owner,
            role,
            pending: None,
            offered_at: None,
            offer_id: 0,
            reliable: None,
            lossy: None,
            timeout: now,
            connected: false,
            renegotiate: false,
            stopping: vec![],
            last_out: HashMap::new(),
            candidates: 0,
            sections: 0,
            queued: false,
            stats_seen: Default::default(),
        }
    }

    /// A subscriber's next offer: stops the sections of ended subscriptions, adds one
    /// send-only section per `wanted` (track sid, kind, stream id "PA_…|TR_…"), and the two
    /// data channels in the first offer. The offer and the section of each track; `None` when
    /// nothing changed. The offer is pending until answered.
    pub fn offer(
        &mut self,
        now: Instant,
        wanted: &[(String, MediaKind, String)],
    ) -> Option<(SdpOffer, Vec<(String, Mid)>)> {
        let first = self.offer_id == 0;
        let stopping = std::mem::take(&mut self.stopping);
        let mut api = self.rtc.sdp_api();
        if first {
            api.add_channel("_reliable".into());
            api.add_channel_with_config(str0m::channel::ChannelConfig {
                label: "_lossy".into(),
                ordered: false,
                reliability: str0m::channel::Reliability::MaxRetransmits { retransmits: 0 },
                ..Default::default()
            });
        }
        for mid in stopping {
            api.stop_media(mid);
        }
        let mut mids = vec![];
        for (track, kind, stream) in wanted {
            let mid = api.add_media(
                *kind,
                Direction::SendOnly,
                Some(stream.clone()),
                Some(track.clone()),
                None,
            );
            mids.push((track.clone(), mid));
        }
        let (offer, pending) = api.apply()?;
        self.offer_id += 1;
        self.pending = Some(pending);
        self.offered_at = Some(now);
        Some((offer, mids))
    }

    /// The channel for reliable or lossy data, if open.
    pub fn data_channel(&self, reliable: bool) -> Option<ChannelId> {
        if reliable {
            self.reliable
        } else {
            self.lossy
        }
    }
}

/// Rewrites an answer to a v1 offer. str0m answers every receive-only section the client offered
/// as send-only with random stream ids and has no API to set them, but livekit-client finds the
/// publishing participant from the stream id (`PA_…|TR_…`). So: the sections named in `msids`
/// (mid, stream, track) get our ids; the `idle` ones (placeholders that carry nothing yet) are
/// answered `inactive` without ids, so that the browser fires a fresh track event when one of
/// them starts carrying a track.
pub fn rewrite_answer(sdp: &str, msids: &[(String, String, String)], idle: &[String]) -> String {
    let mut out = String::with_capacity(sdp.len() + 64 * msids.len());
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut sections: Vec<Vec<&str>> = vec![vec![]];
    for line in sdp.lines() {
        if line.starts_with("m=") {
            sections.push(vec![]);
        }
        if let Some(s) = sections.last_mut() {
            s.push(line);
        }
    }
    for section in sections {
        let mid = section
            .iter()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .map(str::trim);
        let target = mid.and_then(|m| msids.iter().find(|(mid, _, _)| mid == m));
        let is_idle = target.is_none() && mid.is_some_and(|m| idle.iter().any(|i| i == m));
        let mut wrote_msid = false;
        for line in &section {
            if is_idle {
                if *line == "a=sendonly" {
                    out.push_str("a=inactive");
                    out.push_str(eol);
                } else if !(line.starts_with("a=msid:")
                    || (line.starts_with("a=ssrc:") && line.contains(" msid:")))
                {
                    out.push_str(line);
                    out.push_str(eol);
                }
                continue;
            }
            match target {
                Some((_, stream, track)) if line.starts_with("a=msid:") => {
                    out.push_str(&format!("a=msid:{stream} {track}{eol}"));
                    wrote_msid = true;
                }
                Some((_, stream, track))
                    if line.starts_with("a=ssrc:") && line.contains(" msid:") =>
                {
                    let head = line.split(" msid:").next().unwrap_or(line);
                    out.push_str(&format!("{head} msid:{stream} {track}{eol}"));
                }
                _ => {
                    out.push_str(line);
                    out.push_str(eol);
                }
            }
        }
        if let (Some((_, stream, track)), false) = (target, wrote_msid) {
            out.push_str(&format!("a=msid:{stream} {track}{eol}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::rewrite_answer;

    #[test]
    fn msid_of_the_named_section_is_replaced_and_others_kept() {
        let sdp = "v=0\r\ns=-\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=msid:x y\r\n\
                   a=ssrc:1 msid:x y\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=msid:a b\r\n";
        let out = rewrite_answer(sdp, &[("1".into(), "PA_p|TR_t".into(), "TR_t".into())], &[]);
        assert!(out.contains("a=mid:0\r\na=msid:x y\r\na=ssrc:1 msid:x y\r\n"));
        assert!(out.contains("a=mid:1\r\na=msid:PA_p|TR_t TR_t\r\n"));
        assert!(!out.contains("a=msid:a b"));
    }

    #[test]
    fn a_section_without_msid_gets_one() {
        let sdp = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:3\r\na=sendonly\r\n";
        let out = rewrite_answer(sdp, &[("3".into(), "PA_p|TR_t".into(), "TR_t".into())], &[]);
        assert!(
            out.ends_with("a=sendonly\r\na=msid:PA_p|TR_t TR_t\r\n"),
            "{out}"
        );
    }

    #[test]
    fn idle_placeholders_are_answered_inactive_without_ids() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\na=sendonly\r\n\
                   a=msid:r1 r2\r\na=ssrc:7 cname:c\r\na=ssrc:7 msid:r1 r2\r\n";
        let out = rewrite_answer(sdp, &[], &["2".into()]);
        assert!(out.contains("a=inactive\r\n"), "{out}");
        assert!(!out.contains("sendonly") && !out.contains("msid"), "{out}");
        assert!(out.contains("a=ssrc:7 cname:c\r\n"), "{out}");
    }
}
