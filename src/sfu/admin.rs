//! Room and participant administration: the typed [`Request`]s the API side (Twirp
//! RoomService, the web and admin APIs) sends to the media side, their [`Reply`]s, and
//! [`Sfu::handle`], which answers them.

use super::*;

/// What the API/admin side asks of the SFU (sent to the media thread hosting the room).
#[derive(Debug, Clone)]
pub enum Request {
    /// Creates the room unless it exists (then its info); sets its metadata if not empty.
    CreateRoom {
        name: String,
        settings: RoomSettings,
        /// The wall-clock time of the request (LiveKit's `creation_time`).
        unix_ms: i64,
    },
    DeleteRoom {
        room: String,
    },
    /// The named rooms (all when empty), sorted by name.
    ListRooms {
        names: Vec<String>,
    },
    ListParticipants {
        room: String,
    },
    GetParticipant {
        room: String,
        identity: String,
    },
    RemoveParticipant {
        room: String,
        identity: String,
    },
    /// Mutes a track, if `identity` publishes it.
    MutePublishedTrack {
        room: String,
        identity: String,
        track_sid: String,
        muted: bool,
    },
    /// Changes what is given (within the participant's own limits).
    UpdateParticipant {
        room: String,
        identity: String,
        metadata: Option<String>,
        name: Option<String>,
        attributes: HashMap<String, String>,
        perms: Option<Permissions>,
    },
    /// Subscribes or unsubscribes a participant as its own signal request would.
    UpdateSubscriptions {
        room: String,
        identity: String,
        update: lk::UpdateSubscription,
    },
    SendData {
        room: String,
        packet: lk::DataPacket,
    },
    UpdateRoomMetadata {
        room: String,
        metadata: String,
    },
    /// Starts recording (the record service's egress `egress`, already set up to receive).
    Record {
        room: String,
        egress: String,
        target: RecordTarget,
    },
    /// Ends a recording (its file is finished by the record service).
    StopRecording {
        room: String,
        egress: String,
        reason: String,
    },
    /// The room records everyone from now on, each participant's files named from `filepath`;
    /// `None`: every recording of the room stops, and so does recording by itself.
    RecordRoom {
        room: String,
        filepath: Option<String>,
    },
    /// A recording lost data of a track and needs a keyframe.
    RecordingKeyframe {
        room: String,
        egress: String,
        track: String,
    },
    /// Every room with its participants (the admin status page).
    Overview,
    /// Published tracks and subscriptions by kind (`/metrics`).
    Census,
}

/// The answer to a [`Request`] (the variant named after it in each case).
#[derive(Debug)]
pub enum Reply {
    /// CreateRoom.
    Created(Result<lk::Room, JoinError>),
    /// DeleteRoom, RemoveParticipant, UpdateSubscriptions, SendData: whether the room (or
    /// participant) was found.
    Found(bool),
    /// ListRooms.
    Rooms(Vec<lk::Room>),
    /// ListParticipants (`None`: no such room).
    Participants(Option<Vec<lk::ParticipantInfo>>),
    /// GetParticipant (`None`: no such participant).
    Participant(Option<lk::ParticipantInfo>),
    /// UpdateParticipant: `None` when there is no such participant, `Err` when an update
    /// exceeds a limit.
    Updated(Option<Result<lk::ParticipantInfo, String>>),
    /// MutePublishedTrack (`None`: no such track of that participant).
    Track(Option<lk::TrackInfo>),
    /// UpdateRoomMetadata (`None`: no such room).
    Room(Option<lk::Room>),
    /// Record.
    Recording(Result<RecordStarted, RecordRefused>),
    /// RecordRoom: the recordings started or stopped.
    RoomRecording(Result<Vec<String>, RecordRefused>),
    /// Overview.
    Overview(Vec<(lk::Room, Vec<lk::ParticipantInfo>)>),
    /// Census.
    Census(super::Census),
}

impl Sfu {
    /// Answers a request of the API side.
    pub fn handle(&mut self, now: Instant, req: Request) -> Reply {
        match req {
            Request::CreateRoom {
                name,
                settings,
                unix_ms,
            } => {
                let existed = self.reg.rooms.contains_key(&name);
                let metadata = settings.metadata.clone();
                let created = self.create_room(now, unix_ms, &name, &settings);
                Reply::Created(created.map(|room| {
                    if metadata.is_empty() || !existed {
                        room
                    } else {
                        self.update_room_metadata(&name, metadata).unwrap_or(room)
                    }
                }))
            }
            Request::DeleteRoom { room } => Reply::Found(self.delete_room(now, &room)),
            Request::Record {
                room,
                egress,
                target,
            } => Reply::Recording(self.start_recording(now, &room, &egress, &target)),
            Request::StopRecording { egress, reason, .. } => {
                Reply::Found(self.stop_recording(&egress, &reason))
            }
            Request::RecordRoom { room, filepath } => {
                Reply::RoomRecording(self.record_room(now, &room, filepath))
            }
            Request::RecordingKeyframe { egress, track, .. } => {
                Reply::Found(self.recording_keyframe(now, &egress, &track))
            }
            Request::ListRooms { names } => Reply::Rooms(self.reg.list_rooms(&names)),
            Request::ListParticipants { room } => {
                Reply::Participants(self.reg.list_participants(&room))
            }
            Request::GetParticipant { room, identity } => Reply::Participant(
                self.reg
                    .find(&room, &identity)
                    .and_then(|p| self.reg.participant_info(p)),
            ),
            Request::RemoveParticipant { room, identity } => {
                let pid = self.reg.find(&room, &identity);
                if let Some(pid) = pid {
                    self.remove_participant(now, pid, lk::DisconnectReason::ParticipantRemoved);
                }
                Reply::Found(pid.is_some())
            }
            Request::MutePublishedTrack {
                room,
                identity,
                track_sid,
                muted,
            } => {
                let owns = self
                    .reg
                    .find(&room, &identity)
                    .and_then(|pid| self.reg.parts.get(&pid))
                    .is_some_and(|p| p.tracks.contains(&track_sid));
                Reply::Track(owns.then(|| self.set_muted(&track_sid, muted)).flatten())
            }
            Request::UpdateParticipant {
                room,
                identity,
                metadata,
                name,
                attributes,
                perms,
            } => {
                let Some(pid) = self.reg.find(&room, &identity) else {
                    return Reply::Updated(None);
                };
                // The same limits as the participant's own updates (issue 24).
                if let Err(e) =
                    self.reg
                        .check_update(pid, metadata.as_deref(), name.as_deref(), &attributes)
                {
                    return Reply::Updated(Some(Err(e)));
                }
                Reply::Updated(
                    self.update_participant(pid, metadata, name, attributes, perms)
                        .map(Ok),
                )
            }
            Request::UpdateSubscriptions {
                room,
                identity,
                update,
            } => {
                let pid = self.reg.find(&room, &identity);
                if let Some(pid) = pid {
                    self.handle_signal(now, pid, Req::Subscription(update));
                }
                Reply::Found(pid.is_some())
            }
            Request::SendData { room, packet } => Reply::Found(self.send_data(now, &room, packet)),
            Request::UpdateRoomMetadata { room, metadata } => {
                Reply::Room(self.update_room_metadata(&room, metadata))
            }
            Request::Overview => Reply::Overview(
                self.reg
                    .list_rooms(&[])
                    .into_iter()
                    .map(|r| {
                        let people = self.reg.list_participants(&r.name).unwrap_or_default();
                        (r, people)
                    })
                    .collect(),
            ),
            Request::Census => Reply::Census(self.census()),
        }
    }

    /// `unix_ms`: the wall-clock time, LiveKit's `creation_time` if the room is new.
    /// A new room is announced (`room_started`, with the agents it asks for).
    pub fn create_room(
        &mut self,
        now: Instant,
        unix_ms: i64,
        name: &str,
        settings: &RoomSettings,
    ) -> Result<lk::Room, JoinError> {
        if let Some(r) = self.reg.rooms.get(name) {
            return Ok(self.reg.room_info(r));
        }
        if self.reg.rooms.len() as u32 >= self.cfg.max_rooms {
            return Err(JoinError::TooManyRooms(self.cfg.max_rooms));
        }
        let room = Room {
            sid: new_sid("RM_"),
            name: name.to_string(),
            created_unix_ms: unix_ms,
            metadata: settings.metadata.clone(),
            max_participants: Some(settings.max_participants)
                .filter(|m| *m > 0)
                .unwrap_or(self.cfg.max_participants)
                .min(self.cfg.max_participants),
            empty_timeout_s: Some(settings.empty_timeout)
                .filter(|t| *t > 0)
                .unwrap_or(self.cfg.empty_timeout.as_secs() as u32),
            departure_timeout_s: Some(settings.departure_timeout)
                .filter(|t| *t > 0)
                .unwrap_or(self.cfg.departure_timeout.as_secs() as u32),
            participants: vec![],
            empty_since: Some(now),
            version: 1,
            recording: false,
        };
        info!(room = %name, sid = %room.sid, "room created");
        if !settings.egress.is_off() {
            self.taps
                .auto
                .insert(name.to_string(), settings.egress.clone());
        }
        let info = self.reg.room_info(&room);
        self.reg.rooms.insert(name.to_string(), room);
        let mut started = self
            .reg
            .event(crate::events::ROOM_STARTED, name, None, None);
        if let Output::Event(e) = &mut started {
            e.agents = settings.agents.clone();
        }
        self.out.push_back(started);
        Ok(info)
    }

    /// Removes an (empty) room and announces it (`room_finished`).
    pub(super) fn close_room(&mut self, name: &str) -> bool {
        let finished = self
            .reg
            .event(crate::events::ROOM_FINISHED, name, None, None);
        if self.reg.rooms.remove(name).is_none() {
            return false;
        }
        self.taps.auto.remove(name);
        for e in self.taps.of_room(Some(name)) {
            self.taps.end(&e, "the room closed", &mut self.out);
        }
        self.out.push_back(finished);
        true
    }

    pub fn delete_room(&mut self, now: Instant, name: &str) -> bool {
        let Some(room) = self.reg.rooms.get(name) else {
            return false;
        };
        for pid in room.participants.clone() {
            self.remove_participant(now, pid, lk::DisconnectReason::RoomDeleted);
        }
        info!(room = %name, "room deleted");
        self.close_room(name)
    }

    /// A participant's identity.
    pub fn identity(&self, pid: Pid) -> Option<&str> {
        self.reg.parts.get(&pid).map(|p| p.identity.as_str())
    }

    pub fn update_room_metadata(&mut self, name: &str, metadata: String) -> Option<lk::Room> {
        let room = self.reg.rooms.get_mut(name)?;
        room.metadata = metadata;
        room.version += 1;
        let info = {
            let r = self.reg.rooms.get(name)?;
            self.reg.room_info(r)
        };
        for pid in self.reg.members(name) {
            self.signal(
                pid,
                Resp::RoomUpdate(lk::RoomUpdate {
                    room: Some(info.clone()),
                }),
            );
        }
        Some(info)
    }

    /// Admin: change a participant's metadata, name, attributes or permissions.
    pub fn update_participant(
        &mut self,
        pid: Pid,
        metadata: Option<String>,
        name: Option<String>,
        attributes: HashMap<String, String>,
        perms: Option<Permissions>,
    ) -> Option<lk::ParticipantInfo> {
        let p = self.reg.parts.get_mut(&pid)?;
        if let Some(m) = metadata {
            p.metadata = m;
        }
        if let Some(n) = name {
            p.name = n;
        }
        for (k, v) in attributes {
            if v.is_empty() {
                p.attributes.remove(&k);
            } else {
                p.attributes.insert(k, v);
            }
        }
        let before = p.perms;
        if let Some(perms) = perms {
            p.perms = perms;
        }
        let after = p.perms;
        if before.can_publish && !after.can_publish {
            // As LiveKit does: what was published stops, and the publisher is told so.
            let tracks = std::mem::take(&mut p.tracks);
            for sid in tracks {
                info!(track = %sid, "publish permission revoked: track unpublished");
                self.recorded_track_gone(pid, &sid);
                self.subscriptions().unpublish(&sid, None);
                self.signal(
                    pid,
                    Resp::TrackUnpublished(lk::TrackUnpublishedResponse { track_sid: sid }),
                );
            }
        }
        if before.can_subscribe && !after.can_subscribe {
            let subs: Vec<String> = self
                .reg
                .parts
                .get(&pid)
                .map(|p| p.subs.keys().cloned().collect())
                .unwrap_or_default();
            for sid in subs {
                self.subscriptions().unsubscribe(pid, &sid);
            }
        }
        if !before.can_subscribe && after.can_subscribe {
            self.subscriptions().subscribe_to_published(pid);
        }
        if let Some(p) = self.reg.parts.get_mut(&pid) {
            p.version += 1;
        }
        self.broadcast_participant(pid);
        self.reg.participant_info(pid)
    }

    /// Admin or participant: mute/unmute a published track; everyone (owner included) hears.
    pub fn set_muted(&mut self, track_sid: &str, muted: bool) -> Option<lk::TrackInfo> {
        let t = self.reg.tracks.get_mut(track_sid)?;
        t.info.muted = muted;
        let (owner, info) = (t.owner, t.info.clone());
        if let Some(p) = self.reg.parts.get_mut(&owner) {
            p.version += 1;
        }
        self.signal(
            owner,
            Resp::Mute(lk::MuteTrackRequest {
                sid: track_sid.to_string(),
                muted,
            }),
        );
        self.broadcast_participant(owner);
        Some(info)
    }

    /// Admin: send a data packet to (some of) a room's participants, from the server.
    pub fn send_data(&mut self, now: Instant, room: &str, packet: lk::DataPacket) -> bool {
        if !self.reg.rooms.contains_key(room) {
            return false;
        }
        data::deliver(&self.reg, &mut self.peers, None, room, &packet);
        self.drive(now);
        true
    }
}
