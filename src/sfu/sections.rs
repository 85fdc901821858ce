//! v1 (single PeerConnection): the client offers receive-only sections for the tracks it is to
//! get. [`Sections`] keeps, per participant, how many it was asked for and has not offered
//! yet, and the offered ones that carry nothing; it asks for more and assigns subscriptions to
//! free ones (the subscriptions themselves are in the registry).

use std::collections::HashMap;

use livekit_protocol as lk;
use str0m::media::{MediaKind, Mid};
use tracing::debug;

use super::registry::Registry;
use super::{Mode, Pid};

#[derive(Default)]
pub struct Sections {
    /// Receive-only sections the client was asked for and has not offered yet (audio, video).
    requested: HashMap<Pid, (u32, u32)>,
    /// Sections the client offered that carry nothing yet (per participant, with their kind).
    free: HashMap<Pid, Vec<(Mid, MediaKind)>>,
}

/// (mid, stream id, track sid) of every section of `pid` that carries a subscribed track.
pub fn v1_msids(reg: &Registry, pid: Pid) -> Vec<(String, String, String)> {
    let Some(p) = reg.parts.get(&pid) else {
        return vec![];
    };
    p.subs
        .values()
        .filter_map(|s| {
            let mid = s.mid?;
            let t = reg.tracks.get(&s.track)?;
            let owner = reg.parts.get(&t.owner)?;
            Some((
                mid.to_string(),
                format!("{}|{}", owner.sid, t.sid),
                t.sid.clone(),
            ))
        })
        .collect()
}

impl Sections {
    /// The request for the receive-only sections `pid` still misses (to send it), if any are
    /// missing or `force`.
    pub fn request(
        &mut self,
        reg: &Registry,
        pid: Pid,
        force: bool,
    ) -> Option<lk::MediaSectionsRequirement> {
        let p = reg.parts.get(&pid)?;
        if p.mode != Mode::V1 {
            return None;
        }
        let (mut audio, mut video) = (0u32, 0u32);
        for s in p.subs.values().filter(|s| s.mid.is_none()) {
            match reg.tracks.get(&s.track).map(|t| t.kind) {
                Some(MediaKind::Audio) => audio += 1,
                Some(MediaKind::Video) => video += 1,
                None => {}
            }
        }
        let asked = self.requested.entry(pid).or_default();
        let need_audio = audio.saturating_sub(asked.0);
        let need_video = video.saturating_sub(asked.1);
        if need_audio == 0 && need_video == 0 && !force {
            return None;
        }
        asked.0 += need_audio;
        asked.1 += need_video;
        debug!(need_audio, need_video, "asking for receive-only sections");
        Some(lk::MediaSectionsRequirement {
            num_audios: need_audio,
            num_videos: need_video,
        })
    }

    /// A receive-only section the client offered; free unless known already.
    pub fn add_offered(&mut self, reg: &Registry, pid: Pid, mid: Mid, kind: MediaKind) {
        let Some(p) = reg.parts.get(&pid) else {
            return;
        };
        let free = self.free.entry(pid).or_default();
        if p.subs.values().any(|s| s.mid == Some(mid)) || free.iter().any(|(m, _)| *m == mid) {
            return;
        }
        free.push((mid, kind));
        if let Some(req) = self.requested.get_mut(&pid) {
            match kind {
                MediaKind::Audio => req.0 = req.0.saturating_sub(1),
                MediaKind::Video => req.1 = req.1.saturating_sub(1),
            }
        }
    }

    /// A section that carried a subscription that ended is free again.
    pub fn release(&mut self, pid: Pid, mid: Mid, kind: MediaKind) {
        self.free.entry(pid).or_default().push((mid, kind));
    }

    /// Puts subscriptions of `pid` without a section into free sections of the right kind.
    pub fn assign(&mut self, reg: &mut Registry, pid: Pid) {
        let Registry { parts, tracks, .. } = reg;
        let Some(p) = parts.get_mut(&pid) else {
            return;
        };
        let Some(free) = self.free.get_mut(&pid) else {
            return;
        };
        for s in p.subs.values_mut().filter(|s| s.mid.is_none()) {
            let Some(kind) = tracks.get(&s.track).map(|t| t.kind) else {
                continue;
            };
            if let Some(i) = free.iter().position(|(_, k)| *k == kind) {
                let (mid, _) = free.remove(i);
                s.mid = Some(mid);
                s.open = true;
                s.needs_keyframe = true;
            }
        }
    }

    /// The mids of `pid`'s free sections (answered inactive).
    pub fn idle(&self, pid: Pid) -> Vec<String> {
        self.free
            .get(&pid)
            .map(|f| f.iter().map(|(m, _)| m.to_string()).collect())
            .unwrap_or_default()
    }

    /// A participant left.
    pub fn forget(&mut self, pid: Pid) {
        self.requested.remove(&pid);
        self.free.remove(&pid);
    }
}
