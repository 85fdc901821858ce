//! The room registry: rooms, participants and published tracks by key, and the questions
//! answered from them alone (who is in a room, what it publishes, how each looks on the wire).
//! Per-subscription state lives in the subscriber's [`Participant`] (`subs`).

use std::collections::HashMap;

use livekit_protocol as lk;
use tracing::{debug, warn};

use super::room::{Participant, PubTrack, Room};
use super::{limits, FastMap, Output, Pid};

// The maps the packet path looks up, per packet and subscriber, hash with foldhash (keys are
// the SFU's own ids and authenticated room names).
#[derive(Default)]
pub struct Registry {
    pub rooms: FastMap<String, Room>,
    pub parts: FastMap<Pid, Participant>,
    pub tracks: FastMap<String, PubTrack>,
}

impl Registry {
    /// A room as LiveKit shows it.
    pub fn room_info(&self, r: &Room) -> lk::Room {
        let parts: Vec<&Participant> = r
            .participants
            .iter()
            .filter_map(|x| self.parts.get(x))
            .collect();
        r.info(
            parts.len() as u32,
            parts.iter().filter(|p| !p.tracks.is_empty()).count() as u32,
        )
    }

    /// The named rooms (all when `names` is empty), sorted by name.
    /// An event about `room` (as it is now) for the event bus.
    pub fn event(
        &self,
        name: &str,
        room: &str,
        participant: Option<lk::ParticipantInfo>,
        track: Option<lk::TrackInfo>,
    ) -> Output {
        let room = self.rooms.get(room).map(|r| self.room_info(r));
        Output::Event(Box::new(crate::events::Event {
            webhook: lk::WebhookEvent {
                event: name.to_string(),
                room,
                participant,
                track,
                ..Default::default()
            },
            agents: None,
        }))
    }

    pub fn list_rooms(&self, names: &[String]) -> Vec<lk::Room> {
        let mut v: Vec<lk::Room> = self
            .rooms
            .values()
            .filter(|r| names.is_empty() || names.contains(&r.name))
            .map(|r| self.room_info(r))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn list_participants(&self, room: &str) -> Option<Vec<lk::ParticipantInfo>> {
        let r = self.rooms.get(room)?;
        Some(
            r.participants
                .iter()
                .filter_map(|x| self.parts.get(x))
                .map(|x| x.info(&self.tracks))
                .collect(),
        )
    }

    /// The participant with `identity` in `room`.
    pub fn find(&self, room: &str, identity: &str) -> Option<Pid> {
        self.parts
            .values()
            .find(|x| x.room == room && x.identity == identity)
            .map(|x| x.id)
    }

    pub fn participant_info(&self, pid: Pid) -> Option<lk::ParticipantInfo> {
        self.parts.get(&pid).map(|x| x.info(&self.tracks))
    }

    /// Who is in a room.
    pub fn members(&self, room: &str) -> Vec<Pid> {
        self.rooms
            .get(room)
            .map(|r| r.participants.clone())
            .unwrap_or_default()
    }

    /// The tracks published in a room.
    pub fn room_tracks(&self, room: &str) -> Vec<String> {
        self.members(room)
            .iter()
            .filter_map(|p| self.parts.get(p))
            .flat_map(|p| p.tracks.iter().cloned())
            .collect()
    }

    /// Logs that `pid` hit a limit: a warning the first time, then at debug level.
    pub fn note_limit(&mut self, pid: Pid, message: &str) {
        let Some(p) = self.parts.get_mut(&pid) else {
            return;
        };
        if p.limit_logged {
            debug!(identity = %p.identity, "{message}");
        } else {
            p.limit_logged = true;
            warn!(identity = %p.identity, "{message} (further refusals for this participant are logged at debug level)");
        }
    }

    /// Whether an update of `pid`'s own fields keeps each within its limit (attributes: the
    /// result of merging `attributes` into what it has).
    pub fn check_update(
        &self,
        pid: Pid,
        metadata: Option<&str>,
        name: Option<&str>,
        attributes: &HashMap<String, String>,
    ) -> Result<(), String> {
        if let Some(m) = metadata {
            limits::check_len("the metadata", m.len(), limits::MAX_METADATA)?;
        }
        if let Some(n) = name {
            limits::check_len("the name", n.len(), limits::MAX_NAME)?;
        }
        // Checked alone first: the merge below then costs at most twice the limit.
        let asked = limits::attributes_size(attributes);
        limits::check_len("the attributes", asked, limits::MAX_ATTRIBUTES)?;
        let Some(p) = self.parts.get(&pid) else {
            return Ok(());
        };
        let kept = limits::attributes_size(
            p.attributes
                .iter()
                .filter(|(k, _)| !attributes.contains_key(*k)),
        );
        let added = limits::attributes_size(attributes.iter().filter(|(_, v)| !v.is_empty()));
        limits::check_len(
            "the attributes",
            kept.saturating_add(added),
            limits::MAX_ATTRIBUTES,
        )
    }
}
