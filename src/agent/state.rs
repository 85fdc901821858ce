//! The dispatcher's state, sans-IO: registered workers, dispatches per room, and their jobs,
//! moved along by calls that each carry the time. What is to be sent to workers comes out of
//! [`Agents::poll_action`]; the actor (`mod.rs`) sends it, minting job tokens on the way.
//!
//! A job's life: **pending** (no worker offered yet) → **offered** to the least loaded available
//! worker of its agent name and type (an `AvailabilityRequest`; no answer within
//! [`AVAILABILITY_TIMEOUT`] or a refusal offers it to the next one) → **assigned** when the
//! worker accepts → **ended** when the worker reports success or failure, the dispatch is
//! deleted, or the room closes (the worker is told: `JobTermination`). A job whose worker's
//! WebSocket drops is **orphaned**: a worker that reconnects and reports it (`MigrateJob`) takes
//! it back; after [`MIGRATE_GRACE`] it is pending again and offered to whoever is available.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::server_message::Message as ToWorker;
use lk::worker_message::Message as FromWorker;
use tracing::{debug, info, warn};

use crate::sfu::limits;

/// A worker that neither accepts nor refuses a job within this loses the offer.
pub const AVAILABILITY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the jobs of a worker whose connection dropped wait for it to come back.
pub const MIGRATE_GRACE: Duration = Duration::from_secs(10);
/// A job every available worker refused is offered again after this.
pub const RETRY_REFUSED: Duration = Duration::from_secs(10);
/// Registered workers (each holds a WebSocket and a queue).
pub const MAX_WORKERS: usize = 256;
/// Jobs that are not ended, over all rooms.
pub const MAX_JOBS: usize = 4096;

/// What the actor is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this to the worker.
    Send(String, Box<ToWorker>),
    /// The worker accepted `job`: mint its participant token from the answer and send the
    /// assignment.
    Assign {
        worker: String,
        job: Box<lk::Job>,
        answer: Box<lk::AvailabilityResponse>,
        permissions: Option<lk::ParticipantPermission>,
    },
    /// Close the worker's connection (it broke the protocol), with the reason.
    Close(String, String),
}

#[derive(Debug)]
struct Worker {
    agent_name: String,
    job_type: lk::JobType,
    permissions: Option<lk::ParticipantPermission>,
    available: bool,
    load: f32,
    /// The WebSocket is open (a dropped worker is forgotten once its jobs moved on).
    connected: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Phase {
    Pending { not_before: Option<Instant> },
    Offered { worker: String, until: Instant },
    Assigned { worker: String },
    Orphaned { until: Instant },
    Ended,
}

#[derive(Debug)]
struct Job {
    job: lk::Job,
    phase: Phase,
    /// Workers that refused it or let the offer time out (offered to others first).
    tried: Vec<String>,
}

#[derive(Debug)]
struct Dispatch {
    id: String,
    room: String,
    agent_name: String,
    metadata: String,
    created_at: i64,
    /// Automatic dispatch (unnamed workers), not listed by `ListDispatch`.
    automatic: bool,
    jobs: Vec<String>,
}

/// How many of each there are (for metrics and the closing figures).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub workers: usize,
    pub dispatches: usize,
    pub pending: usize,
    pub offered: usize,
    pub assigned: usize,
    pub orphaned: usize,
}

#[derive(Default)]
pub struct Agents {
    workers: BTreeMap<String, Worker>,
    /// Rooms that exist (from `room_started`), with their info for jobs.
    rooms: HashMap<String, lk::Room>,
    dispatches: BTreeMap<String, Dispatch>,
    jobs: BTreeMap<String, Job>,
    actions: VecDeque<Action>,
}

fn unix_ms() -> i64 {
    crate::clock::unix_millis() as i64
}

impl Agents {
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts {
            workers: self.workers.values().filter(|w| w.connected).count(),
            dispatches: self.dispatches.len(),
            ..Default::default()
        };
        for j in self.jobs.values() {
            match j.phase {
                Phase::Pending { .. } => c.pending += 1,
                Phase::Offered { .. } => c.offered += 1,
                Phase::Assigned { .. } => c.assigned += 1,
                Phase::Orphaned { .. } => c.orphaned += 1,
                Phase::Ended => {}
            }
        }
        c
    }

    /// The earliest time [`Agents::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.jobs
            .values()
            .filter_map(|j| match &j.phase {
                Phase::Offered { until, .. } | Phase::Orphaned { until } => Some(*until),
                Phase::Pending { not_before } => *not_before,
                _ => None,
            })
            .min()
    }

    // ------------------------------------------------------------------ workers

    /// A worker registers on a new connection as `id`.
    pub fn register(
        &mut self,
        now: Instant,
        id: &str,
        req: &lk::RegisterWorkerRequest,
    ) -> Result<(), String> {
        if self.workers.values().filter(|w| w.connected).count() >= MAX_WORKERS {
            return Err(format!(
                "this server already has its maximum of {MAX_WORKERS} agent workers"
            ));
        }
        limits::check_len(
            "the agent name",
            req.agent_name.len(),
            limits::MAX_AGENT_NAME,
        )?;
        let job_type = lk::JobType::try_from(req.r#type)
            .map_err(|_| format!("unknown job type {}", req.r#type))?;
        info!(worker = id, agent_name = %req.agent_name, ?job_type, version = %req.version, "agent worker registered");
        self.workers.insert(
            id.to_string(),
            Worker {
                agent_name: req.agent_name.clone(),
                job_type,
                permissions: req.allowed_permissions.clone(),
                available: true,
                load: 0.0,
                connected: true,
            },
        );
        self.offer_pending(now);
        Ok(())
    }

    /// A worker's WebSocket closed: its jobs wait [`MIGRATE_GRACE`] for it (or another
    /// connection of it) to report them; offers to it are taken back.
    pub fn worker_gone(&mut self, now: Instant, id: &str) {
        let Some(w) = self.workers.get_mut(id) else {
            return;
        };
        w.connected = false;
        info!(worker = id, "agent worker disconnected");
        let mut reoffer = false;
        for j in self.jobs.values_mut() {
            match &j.phase {
                Phase::Assigned { worker } if worker == id => {
                    j.phase = Phase::Orphaned {
                        until: now + MIGRATE_GRACE,
                    };
                }
                Phase::Offered { worker, .. } if worker == id => {
                    j.tried.push(id.to_string());
                    j.phase = Phase::Pending { not_before: None };
                    reoffer = true;
                }
                _ => {}
            }
        }
        self.workers.remove(id);
        if reoffer {
            self.offer_pending(now);
        }
    }

    /// A message from a registered worker (pings are answered by the connection).
    pub fn worker_message(&mut self, now: Instant, id: &str, msg: FromWorker) {
        match msg {
            FromWorker::Register(_) => self.actions.push_back(Action::Close(
                id.to_string(),
                "the worker is already registered on this connection".into(),
            )),
            FromWorker::Availability(a) => self.availability(now, id, a),
            FromWorker::UpdateWorker(u) => {
                if let Some(w) = self.workers.get_mut(id) {
                    w.load = u.load;
                    if let Some(s) = u.status {
                        w.available = s == lk::WorkerStatus::WsAvailable as i32 && !u.draining;
                    }
                    if w.available {
                        self.offer_pending(now);
                    }
                }
            }
            FromWorker::UpdateJob(u) => self.job_status(id, u),
            FromWorker::MigrateJob(m) => self.migrate(id, &m.job_ids),
            FromWorker::Ping(_) | FromWorker::SimulateJob(_) => {}
        }
    }

    fn availability(&mut self, now: Instant, id: &str, a: lk::AvailabilityResponse) {
        let Some(j) = self.jobs.get_mut(&a.job_id) else {
            debug!(worker = id, job = %a.job_id, "availability for an unknown job ignored");
            return;
        };
        if !matches!(&j.phase, Phase::Offered { worker, .. } if worker == id) {
            debug!(worker = id, job = %a.job_id, "availability for a job not offered to it ignored");
            return;
        }
        if !a.available {
            info!(worker = id, job = %a.job_id, "agent worker refused the job");
            j.tried.push(id.to_string());
            j.phase = Phase::Pending { not_before: None };
            self.offer_pending(now);
            return;
        }
        j.phase = Phase::Assigned {
            worker: id.to_string(),
        };
        let state = j.job.state.get_or_insert_with(Default::default);
        state.worker_id = id.to_string();
        state.status = lk::JobStatus::JsPending as i32;
        state.started_at = unix_ms();
        state.updated_at = state.started_at;
        let permissions = self.workers.get(id).and_then(|w| w.permissions.clone());
        info!(worker = id, job = %j.job.id, room = %j.job.room.as_ref().map_or("", |r| r.name.as_str()), "agent job assigned");
        self.actions.push_back(Action::Assign {
            worker: id.to_string(),
            job: Box::new(j.job.clone()),
            answer: Box::new(a),
            permissions,
        });
    }

    /// The assignment went out with the participant identity its token names.
    pub fn assigned(&mut self, job_id: &str, identity: &str) {
        if let Some(state) = self.jobs.get_mut(job_id).and_then(|j| j.job.state.as_mut()) {
            state.participant_identity = identity.to_string();
        }
    }

    fn job_status(&mut self, id: &str, u: lk::UpdateJobStatus) {
        let Some(j) = self.jobs.get_mut(&u.job_id) else {
            return;
        };
        if !matches!(&j.phase, Phase::Assigned { worker } if worker == id) {
            return;
        }
        let state = j.job.state.get_or_insert_with(Default::default);
        state.status = u.status;
        state.error = u.error.chars().take(1024).collect();
        state.updated_at = unix_ms();
        let done = u.status == lk::JobStatus::JsSuccess as i32
            || u.status == lk::JobStatus::JsFailed as i32;
        if done {
            state.ended_at = state.updated_at;
            j.phase = Phase::Ended;
            info!(worker = id, job = %u.job_id, status = ?lk::JobStatus::try_from(u.status), "agent job ended");
        }
    }

    /// A (re)connected worker reports the jobs it runs: those waiting for their worker are its.
    fn migrate(&mut self, id: &str, job_ids: &[String]) {
        for job_id in job_ids.iter().take(MAX_JOBS) {
            let Some(j) = self.jobs.get_mut(job_id) else {
                continue;
            };
            let resumable = match &j.phase {
                Phase::Orphaned { .. } => true,
                Phase::Assigned { worker } => {
                    !self.workers.get(worker).is_some_and(|w| w.connected)
                }
                _ => false,
            };
            if resumable {
                info!(worker = id, job = %job_id, "agent job resumed by its reconnected worker");
                j.phase = Phase::Assigned {
                    worker: id.to_string(),
                };
                if let Some(s) = j.job.state.as_mut() {
                    s.worker_id = id.to_string();
                }
            }
        }
    }

    // ------------------------------------------------------------------ rooms

    /// A room started: its dispatches (`agents` from its configuration, else automatic), and
    /// any made through the API before it existed.
    pub fn room_started(
        &mut self,
        now: Instant,
        room: lk::Room,
        agents: Option<Vec<lk::RoomAgentDispatch>>,
    ) {
        let name = room.name.clone();
        self.rooms.insert(name.clone(), room);
        match agents {
            Some(list) => {
                for a in list.iter().take(limits::MAX_AGENT_DISPATCHES) {
                    let _ = self.add_dispatch(&name, &a.agent_name, &a.metadata, false);
                }
            }
            None => {
                let _ = self.add_dispatch(&name, "", "", true);
            }
        }
        let waiting: Vec<String> = self
            .dispatches
            .values()
            .filter(|d| d.room == name && d.jobs.is_empty())
            .map(|d| d.id.clone())
            .collect();
        for d in waiting {
            self.room_job(&d);
        }
        self.offer_pending(now);
    }

    /// A room closed: its jobs end (running ones are told to stop) and its dispatches go.
    pub fn room_finished(&mut self, room: &str) {
        self.rooms.remove(room);
        let ids: Vec<String> = self
            .dispatches
            .values()
            .filter(|d| d.room == room)
            .map(|d| d.id.clone())
            .collect();
        for id in ids {
            self.remove_dispatch(&id);
        }
    }

    /// A participant joined (`JT_PARTICIPANT` workers get a job for each, agents aside).
    pub fn participant_joined(&mut self, now: Instant, room: &str, p: &lk::ParticipantInfo) {
        self.participant_job(now, room, p, lk::JobType::JtParticipant);
    }

    /// A participant published (`JT_PUBLISHER` workers get a job for each publisher).
    pub fn track_published(&mut self, now: Instant, room: &str, p: &lk::ParticipantInfo) {
        self.participant_job(now, room, p, lk::JobType::JtPublisher);
    }

    fn participant_job(
        &mut self,
        now: Instant,
        room: &str,
        p: &lk::ParticipantInfo,
        kind: lk::JobType,
    ) {
        if p.kind == lk::participant_info::Kind::Agent as i32 {
            return;
        }
        let dispatches: Vec<String> = self
            .dispatches
            .values()
            .filter(|d| d.room == room && self.has_workers(&d.agent_name, kind))
            .filter(|d| {
                !d.jobs.iter().any(|j| {
                    self.jobs.get(j).is_some_and(|j| {
                        j.job.r#type == kind as i32
                            && j.job.participant.as_ref().is_some_and(|x| x.sid == p.sid)
                    })
                })
            })
            .map(|d| d.id.clone())
            .collect();
        for d in dispatches {
            self.new_job(&d, kind, Some(p.clone()));
        }
        self.offer_pending(now);
    }

    fn has_workers(&self, agent_name: &str, kind: lk::JobType) -> bool {
        self.workers
            .values()
            .any(|w| w.connected && w.agent_name == agent_name && w.job_type == kind)
    }

    // ------------------------------------------------------------------ dispatches (API)

    /// `CreateDispatch`: a named agent for `room`, now if the room exists, else when it starts.
    pub fn create_dispatch(
        &mut self,
        now: Instant,
        room: &str,
        agent_name: &str,
        metadata: &str,
    ) -> Result<lk::AgentDispatch, String> {
        let id = self.add_dispatch(room, agent_name, metadata, false)?;
        if self.rooms.contains_key(room) {
            self.room_job(&id);
            self.offer_pending(now);
        }
        self.dispatch_info(&id)
            .ok_or_else(|| "the dispatch vanished".to_string())
    }

    /// `DeleteDispatch`: its running jobs are told to stop.
    pub fn delete_dispatch(&mut self, room: &str, id: &str) -> Option<lk::AgentDispatch> {
        if self
            .dispatches
            .get(id)
            .is_none_or(|d| d.room != room || d.automatic)
        {
            return None;
        }
        let mut info = self.dispatch_info(id)?;
        self.remove_dispatch(id);
        if let Some(s) = info.state.as_mut() {
            s.deleted_at = unix_ms() * 1_000_000;
        }
        Some(info)
    }

    /// `ListDispatch`: the room's dispatches (one, if `id` is given), with their jobs.
    pub fn list_dispatches(&self, room: &str, id: &str) -> Vec<lk::AgentDispatch> {
        self.dispatches
            .values()
            .filter(|d| d.room == room && !d.automatic && (id.is_empty() || d.id == id))
            .filter_map(|d| self.dispatch_info(&d.id))
            .collect()
    }

    fn add_dispatch(
        &mut self,
        room: &str,
        agent_name: &str,
        metadata: &str,
        automatic: bool,
    ) -> Result<String, String> {
        limits::check_len("the agent name", agent_name.len(), limits::MAX_AGENT_NAME)?;
        limits::check_len(
            "the dispatch metadata",
            metadata.len(),
            limits::MAX_JOB_METADATA,
        )?;
        let in_room = self.dispatches.values().filter(|d| d.room == room).count();
        // The automatic dispatch does not count against the limit.
        if in_room > limits::MAX_AGENT_DISPATCHES {
            return Err(format!(
                "room {room:?} already has its maximum of {} agent dispatches",
                limits::MAX_AGENT_DISPATCHES
            ));
        }
        let id = crate::ids::new_sid("AD_");
        self.dispatches.insert(
            id.clone(),
            Dispatch {
                id: id.clone(),
                room: room.to_string(),
                agent_name: agent_name.to_string(),
                metadata: metadata.to_string(),
                // LiveKit's dispatch times are Unix nanoseconds.
                created_at: unix_ms() * 1_000_000,
                automatic,
                jobs: vec![],
            },
        );
        Ok(id)
    }

    fn remove_dispatch(&mut self, id: &str) {
        let Some(d) = self.dispatches.remove(id) else {
            return;
        };
        for job_id in d.jobs {
            let Some(j) = self.jobs.remove(&job_id) else {
                continue;
            };
            if let Phase::Assigned { worker } | Phase::Offered { worker, .. } = &j.phase {
                if self.workers.get(worker).is_some_and(|w| w.connected) {
                    self.actions.push_back(Action::Send(
                        worker.clone(),
                        Box::new(ToWorker::Termination(lk::JobTermination { job_id })),
                    ));
                }
            }
        }
    }

    fn dispatch_info(&self, id: &str) -> Option<lk::AgentDispatch> {
        let d = self.dispatches.get(id)?;
        Some(lk::AgentDispatch {
            id: d.id.clone(),
            agent_name: d.agent_name.clone(),
            room: d.room.clone(),
            metadata: d.metadata.clone(),
            state: Some(lk::AgentDispatchState {
                jobs: d
                    .jobs
                    .iter()
                    .filter_map(|j| self.jobs.get(j))
                    .map(|j| j.job.clone())
                    .collect(),
                created_at: d.created_at,
                deleted_at: 0,
            }),
            ..Default::default()
        })
    }

    /// The room job of a dispatch, unless its agent's workers all take other job types.
    fn room_job(&mut self, dispatch: &str) {
        let Some(d) = self.dispatches.get(dispatch) else {
            return;
        };
        let named = d.agent_name.clone();
        let others_only = self.workers.values().any(|w| w.agent_name == named)
            && !self.has_workers(&named, lk::JobType::JtRoom);
        if !others_only {
            self.new_job(dispatch, lk::JobType::JtRoom, None);
        }
    }

    fn new_job(
        &mut self,
        dispatch: &str,
        kind: lk::JobType,
        participant: Option<lk::ParticipantInfo>,
    ) {
        let live = self
            .jobs
            .values()
            .filter(|j| j.phase != Phase::Ended)
            .count();
        if live >= MAX_JOBS {
            warn!("agent job not created: this server already has its maximum of {MAX_JOBS} jobs");
            return;
        }
        let Some(d) = self.dispatches.get_mut(dispatch) else {
            return;
        };
        let id = crate::ids::new_sid("AJ_");
        let job = lk::Job {
            id: id.clone(),
            dispatch_id: d.id.clone(),
            r#type: kind as i32,
            room: self.rooms.get(&d.room).cloned(),
            participant,
            metadata: d.metadata.clone(),
            agent_name: d.agent_name.clone(),
            state: Some(lk::JobState {
                status: lk::JobStatus::JsPending as i32,
                updated_at: unix_ms(),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.jobs.push(id.clone());
        self.jobs.insert(
            id,
            Job {
                job,
                phase: Phase::Pending { not_before: None },
                tried: vec![],
            },
        );
    }

    // ------------------------------------------------------------------ offering

    /// Offers every pending job that can go out to the least loaded available worker of its
    /// agent name and type that has not refused it. A job every candidate refused waits for a
    /// new worker, or until its retry time, when they may all be asked again.
    fn offer_pending(&mut self, now: Instant) {
        let mut pending = vec![];
        for (id, j) in self.jobs.iter_mut() {
            if let Phase::Pending { not_before } = j.phase {
                if not_before.is_some_and(|t| t <= now) {
                    j.tried.clear();
                    j.phase = Phase::Pending { not_before: None };
                }
                pending.push(id.clone());
            }
        }
        for id in pending {
            self.offer(now, &id);
        }
    }

    fn offer(&mut self, now: Instant, job_id: &str) {
        let Some(j) = self.jobs.get(job_id) else {
            return;
        };
        let kind = j.job.r#type;
        let candidates = || {
            self.workers.iter().filter(|(_, w)| {
                w.connected
                    && w.available
                    && w.agent_name == j.job.agent_name
                    && w.job_type as i32 == kind
            })
        };
        let least_loaded = |tried: &[String]| {
            candidates()
                .filter(|(id, _)| !tried.contains(id))
                .min_by(|a, b| a.1.load.total_cmp(&b.1.load))
                .map(|(id, _)| id.clone())
        };
        let chosen = least_loaded(&j.tried);
        let all_tried = chosen.is_none() && candidates().next().is_some();
        let Some(j) = self.jobs.get_mut(job_id) else {
            return;
        };
        match chosen {
            Some(worker) => {
                debug!(worker = %worker, job = job_id, "agent job offered");
                j.phase = Phase::Offered {
                    worker: worker.clone(),
                    until: now + AVAILABILITY_TIMEOUT,
                };
                self.actions.push_back(Action::Send(
                    worker,
                    Box::new(ToWorker::Availability(lk::AvailabilityRequest {
                        job: Some(j.job.clone()),
                        resuming: false,
                    })),
                ));
            }
            None if all_tried => {
                // Everyone refused: ask them all again a little later.
                if let Phase::Pending { not_before: None } | Phase::Offered { .. } = j.phase {
                    j.phase = Phase::Pending {
                        not_before: Some(now + RETRY_REFUSED),
                    };
                }
            }
            None => {
                j.phase = Phase::Pending { not_before: None };
            }
        }
    }

    /// Offers that timed out, orphans whose worker did not come back, refused jobs due again.
    pub fn tick(&mut self, now: Instant) {
        for j in self.jobs.values_mut() {
            match &j.phase {
                Phase::Offered { worker, until } if *until <= now => {
                    info!(worker = %worker, job = %j.job.id, "agent worker did not answer the job offer in time");
                    j.tried.push(worker.clone());
                    j.phase = Phase::Pending { not_before: None };
                }
                Phase::Orphaned { until } if *until <= now => {
                    info!(job = %j.job.id, "the agent worker of a job did not come back; the job is offered again");
                    j.tried.clear();
                    if let Some(s) = j.job.state.as_mut() {
                        s.status = lk::JobStatus::JsPending as i32;
                        s.worker_id.clear();
                    }
                    j.phase = Phase::Pending { not_before: None };
                }
                _ => {}
            }
        }
        self.offer_pending(now);
    }
}

#[cfg(test)]
mod tests;
