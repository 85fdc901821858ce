//! Server events: what happened to rooms, participants and tracks, in LiveKit's webhook shape
//! (`livekit.WebhookEvent`). The SFU emits them (`sfu::Output::Event`) on the media thread; the
//! media loop hands each to the [`Bus`], whose sinks (the webhook notifier, the agent
//! dispatcher, the metrics) take it without blocking: each sink queues it (bounded) for its own
//! task. Nothing here depends on the SFU or the media threads, so the sinks do not either.

use std::sync::Arc;

use livekit_protocol as lk;

/// LiveKit's event names (`webhook.Event*` in livekit/protocol).
pub const ROOM_STARTED: &str = "room_started";
pub const ROOM_FINISHED: &str = "room_finished";
pub const PARTICIPANT_JOINED: &str = "participant_joined";
pub const PARTICIPANT_LEFT: &str = "participant_left";
pub const PARTICIPANT_CONNECTION_ABORTED: &str = "participant_connection_aborted";
pub const TRACK_PUBLISHED: &str = "track_published";
pub const TRACK_UNPUBLISHED: &str = "track_unpublished";
/// Recordings (`record/`): a recording was asked for, changed status (ACTIVE, ENDING), ended.
pub const EGRESS_STARTED: &str = "egress_started";
pub const EGRESS_UPDATED: &str = "egress_updated";
pub const EGRESS_ENDED: &str = "egress_ended";

/// One event.
#[derive(Debug, Clone, Default)]
pub struct Event {
    /// The event as LiveKit's webhooks carry it. The SFU fills `event`, `room`, `participant`,
    /// `track`; [`Bus::publish`] stamps `id` and `created_at`.
    pub webhook: lk::WebhookEvent,
    /// `room_started` only: the agent dispatches the room was created with (a token's
    /// `roomConfig.agents`, `CreateRoom.agents`). `None`: the room gets automatic dispatch.
    pub agents: Option<Vec<lk::RoomAgentDispatch>>,
}

impl Event {
    pub fn name(&self) -> &str {
        &self.webhook.event
    }

    /// The room's name (every event of this server names its room).
    pub fn room(&self) -> &str {
        self.webhook.room.as_ref().map_or("", |r| r.name.as_str())
    }
}

/// Something that takes events. `deliver` runs on a media thread: it must not block or do more
/// than queue the event.
pub trait Sink: Send + Sync {
    fn deliver(&self, event: &Arc<Event>);
}

/// Where the media threads publish events: every sink sees every event, in the order each media
/// thread emitted them (the rooms of one media thread are in order; a room lives on one).
#[derive(Clone, Default)]
pub struct Bus {
    sinks: Arc<Vec<Arc<dyn Sink>>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bus({} sinks)", self.sinks.len())
    }
}

impl Bus {
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> Bus {
        Bus {
            sinks: Arc::new(sinks),
        }
    }

    /// Stamps the event (a new `EV_` id, the wall-clock second) and hands it to every sink.
    pub fn publish(&self, mut event: Event) {
        if self.sinks.is_empty() {
            return;
        }
        event.webhook.id = crate::ids::new_sid("EV_");
        event.webhook.created_at = crate::clock::unix_secs() as i64;
        let event = Arc::new(event);
        for s in self.sinks.iter() {
            s.deliver(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Arc<Event>>>);

    impl Sink for Recorder {
        fn deliver(&self, event: &Arc<Event>) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    #[test]
    fn every_sink_gets_every_event_stamped_with_an_id_and_a_time() {
        let a = Arc::new(Recorder::default());
        let b = Arc::new(Recorder::default());
        let bus = Bus::new(vec![a.clone(), b.clone()]);
        for name in [ROOM_STARTED, PARTICIPANT_JOINED] {
            bus.publish(Event {
                webhook: lk::WebhookEvent {
                    event: name.into(),
                    room: Some(lk::Room {
                        name: "standup".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                agents: None,
            });
        }
        let got = a.0.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name(), ROOM_STARTED);
        assert_eq!(got[1].room(), "standup");
        assert!(got[0].webhook.id.starts_with("EV_"));
        assert_ne!(got[0].webhook.id, got[1].webhook.id);
        assert!(got[0].webhook.created_at > 1_700_000_000);
        assert_eq!(b.0.lock().unwrap().len(), 2);
    }
}
