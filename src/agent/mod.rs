//! LiveKit Agents: workers (`livekit-agents` processes) register over the `/agent` WebSocket
//! (`ws.rs`), and the dispatcher offers them jobs for rooms, as LiveKit's agent service does:
//! an unnamed worker gets every new room (automatic dispatch); a named agent only when a
//! dispatch asks for it (`AgentDispatchService` over Twirp, a token's `roomConfig.agents`,
//! `CreateRoom.agents`). A job is offered to the least loaded available worker; an accepted job
//! comes with a token that makes the agent a participant of kind `AGENT` with the worker's
//! permissions.
//!
//! One task (the actor, here) owns the state (`state.rs`, sans-IO) and is fed by the worker
//! connections, the Twirp service, and the media threads' events (through the [`Dispatcher`]'s
//! [`Sink`]: a bounded queue, never waited on). Its state is one node's; a Redis-backed store
//! for several nodes would sit behind the same commands.

mod state;
pub mod ws;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::server_message::Message as ToWorker;
use lk::worker_message::Message as FromWorker;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::auth::{self, KeyRing, TokenRequest, VideoGrant};
use crate::events::{self, Event, Sink};
use state::{Action, Agents};
pub use state::{Counts, AVAILABILITY_TIMEOUT, MAX_WORKERS, MIGRATE_GRACE};

/// Commands and events waiting for the actor.
const QUEUE: usize = 4096;
/// Messages waiting to be written to one worker; a worker that lets this many pile up is
/// disconnected.
pub const WORKER_QUEUE: usize = 256;

/// What a worker connection receives: a message, or the reason it is closed.
#[derive(Debug)]
pub enum ToConn {
    Send(Box<ToWorker>),
    Close(String),
}

enum Command {
    Event(Arc<Event>),
    Register {
        id: String,
        req: Box<lk::RegisterWorkerRequest>,
        tx: mpsc::Sender<ToConn>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Message {
        id: String,
        msg: Box<FromWorker>,
    },
    Gone {
        id: String,
    },
    Create {
        room: String,
        agent_name: String,
        metadata: String,
        reply: oneshot::Sender<Result<lk::AgentDispatch, String>>,
    },
    Delete {
        room: String,
        id: String,
        reply: oneshot::Sender<Option<lk::AgentDispatch>>,
    },
    List {
        room: String,
        id: String,
        reply: oneshot::Sender<Vec<lk::AgentDispatch>>,
    },
}

/// Figures for `/metrics` and logs.
#[derive(Debug, Default)]
pub struct Stats {
    pub workers: AtomicUsize,
    pub dispatches: AtomicUsize,
    pub jobs_pending: AtomicUsize,
    pub jobs_offered: AtomicUsize,
    pub jobs_running: AtomicUsize,
    pub jobs_orphaned: AtomicUsize,
    pub jobs_assigned_total: AtomicU64,
    /// Events the dispatcher had no room for (its queue was full).
    pub events_dropped: AtomicU64,
}

impl Stats {
    fn set(&self, c: Counts) {
        self.workers.store(c.workers, Ordering::Relaxed);
        self.dispatches.store(c.dispatches, Ordering::Relaxed);
        self.jobs_pending.store(c.pending, Ordering::Relaxed);
        self.jobs_offered.store(c.offered, Ordering::Relaxed);
        self.jobs_running.store(c.assigned, Ordering::Relaxed);
        self.jobs_orphaned.store(c.orphaned, Ordering::Relaxed);
    }
}

/// The agent service's handle (cheap to clone).
#[derive(Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<Command>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dispatcher")
    }
}

/// The dispatcher stopped (only at shutdown).
#[derive(Debug, thiserror::Error)]
#[error("the agent dispatcher is not running")]
pub struct Stopped;

impl Dispatcher {
    /// Starts the actor on the current tokio runtime. Job tokens are signed with the first
    /// API key (`keys`) and live `token_ttl`.
    pub fn start(keys: KeyRing, token_ttl: Duration) -> Dispatcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let actor = Actor {
            agents: Agents::default(),
            conns: Default::default(),
            keys,
            token_ttl,
            stats: stats.clone(),
        };
        tokio::spawn(actor.run(rx));
        Dispatcher { tx, stats }
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    async fn call<R>(&self, cmd: Command, rx: oneshot::Receiver<R>) -> Result<R, Stopped> {
        self.tx.send(cmd).await.map_err(|_| Stopped)?;
        rx.await.map_err(|_| Stopped)
    }

    /// Registers a worker connection as `id`; `tx` is where its messages go.
    pub async fn register(
        &self,
        id: &str,
        req: lk::RegisterWorkerRequest,
        tx: mpsc::Sender<ToConn>,
    ) -> Result<Result<(), String>, Stopped> {
        let (reply, rx) = oneshot::channel();
        let id = id.to_string();
        let req = Box::new(req);
        self.call(Command::Register { id, req, tx, reply }, rx)
            .await
    }

    pub async fn message(&self, id: &str, msg: FromWorker) -> Result<(), Stopped> {
        let id = id.to_string();
        self.tx
            .send(Command::Message {
                id,
                msg: Box::new(msg),
            })
            .await
            .map_err(|_| Stopped)
    }

    pub async fn gone(&self, id: &str) {
        let id = id.to_string();
        let _ = self.tx.send(Command::Gone { id }).await;
    }

    pub async fn create_dispatch(
        &self,
        room: &str,
        agent_name: &str,
        metadata: &str,
    ) -> Result<Result<lk::AgentDispatch, String>, Stopped> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Create {
            room: room.into(),
            agent_name: agent_name.into(),
            metadata: metadata.into(),
            reply,
        };
        self.call(cmd, rx).await
    }

    pub async fn delete_dispatch(
        &self,
        room: &str,
        id: &str,
    ) -> Result<Option<lk::AgentDispatch>, Stopped> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::Delete {
            room: room.into(),
            id: id.into(),
            reply,
        };
        self.call(cmd, rx).await
    }

    pub async fn list_dispatches(
        &self,
        room: &str,
        id: &str,
    ) -> Result<Vec<lk::AgentDispatch>, Stopped> {
        let (reply, rx) = oneshot::channel();
        let cmd = Command::List {
            room: room.into(),
            id: id.into(),
            reply,
        };
        self.call(cmd, rx).await
    }
}

/// The media threads' events reach the actor through a bounded queue; only those dispatch
/// depends on are queued.
impl Sink for Dispatcher {
    fn deliver(&self, event: &Arc<Event>) {
        let wanted = matches!(
            event.name(),
            events::ROOM_STARTED
                | events::ROOM_FINISHED
                | events::PARTICIPANT_JOINED
                | events::TRACK_PUBLISHED
        );
        if !wanted {
            return;
        }
        if self.tx.try_send(Command::Event(event.clone())).is_err() {
            let n = self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                warn!(
                    dropped = n + 1,
                    event = event.name(),
                    "the agent dispatcher is behind; room events dropped"
                );
            }
        }
    }
}

struct Actor {
    agents: Agents,
    conns: std::collections::HashMap<String, mpsc::Sender<ToConn>>,
    keys: KeyRing,
    token_ttl: Duration,
    stats: Arc<Stats>,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let deadline = self.agents.next_deadline();
            let timer = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => return,
                },
                () = timer => self.agents.tick(Instant::now()),
            }
            self.act();
            self.stats.set(self.agents.counts());
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Event(e) => self.event(now, &e),
            Command::Register { id, req, tx, reply } => {
                let r = self.agents.register(now, &id, &req);
                if r.is_ok() {
                    self.conns.insert(id, tx);
                }
                let _ = reply.send(r);
            }
            Command::Message { id, msg } => self.agents.worker_message(now, &id, *msg),
            Command::Gone { id } => {
                self.conns.remove(&id);
                self.agents.worker_gone(now, &id);
            }
            Command::Create {
                room,
                agent_name,
                metadata,
                reply,
            } => {
                let r = self
                    .agents
                    .create_dispatch(now, &room, &agent_name, &metadata);
                if let Ok(d) = &r {
                    info!(room = %room, agent_name = %agent_name, dispatch = %d.id, "agent dispatch created");
                }
                let _ = reply.send(r);
            }
            Command::Delete { room, id, reply } => {
                let _ = reply.send(self.agents.delete_dispatch(&room, &id));
            }
            Command::List { room, id, reply } => {
                let _ = reply.send(self.agents.list_dispatches(&room, &id));
            }
        }
    }

    fn event(&mut self, now: Instant, e: &Event) {
        let room = e.room().to_string();
        match e.name() {
            events::ROOM_STARTED => {
                if let Some(r) = e.webhook.room.clone() {
                    self.agents.room_started(now, r, e.agents.clone());
                }
            }
            events::ROOM_FINISHED => self.agents.room_finished(&room),
            events::PARTICIPANT_JOINED => {
                if let Some(p) = &e.webhook.participant {
                    self.agents.participant_joined(now, &room, p);
                }
            }
            events::TRACK_PUBLISHED => {
                if let Some(p) = &e.webhook.participant {
                    self.agents.track_published(now, &room, p);
                }
            }
            _ => {}
        }
    }

    /// Carries out what the state asks: messages to workers, assignments with their tokens.
    fn act(&mut self) {
        while let Some(a) = self.agents.poll_action() {
            match a {
                Action::Send(worker, msg) => self.send(&worker, ToConn::Send(msg)),
                Action::Close(worker, reason) => self.send(&worker, ToConn::Close(reason)),
                Action::Assign {
                    worker,
                    job,
                    answer,
                    permissions,
                } => self.assign(&worker, *job, *answer, permissions),
            }
        }
    }

    fn send(&mut self, worker: &str, msg: ToConn) {
        let Some(tx) = self.conns.get(worker) else {
            return;
        };
        if tx.try_send(msg).is_err() {
            warn!(
                worker,
                "the agent worker does not read its connection; disconnected"
            );
            self.conns.remove(worker);
            self.agents.worker_gone(Instant::now(), worker);
        }
    }

    fn assign(
        &mut self,
        worker: &str,
        job: lk::Job,
        answer: lk::AvailabilityResponse,
        permissions: Option<lk::ParticipantPermission>,
    ) {
        let identity = if answer.participant_identity.is_empty() {
            format!("agent-{}", job.id)
        } else {
            answer.participant_identity.clone()
        };
        match job_token(
            &self.keys,
            self.token_ttl,
            &job,
            &identity,
            &answer,
            permissions,
        ) {
            Ok(token) => {
                self.agents.assigned(&job.id, &identity);
                self.stats
                    .jobs_assigned_total
                    .fetch_add(1, Ordering::Relaxed);
                let msg = Box::new(ToWorker::Assignment(lk::JobAssignment {
                    job: Some(job),
                    url: None,
                    token,
                }));
                self.send(worker, ToConn::Send(msg));
            }
            Err(e) => {
                warn!(job = %job.id, error = %e, "cannot mint the agent's token; job not assigned")
            }
        }
    }
}

/// The token an accepted job's agent joins its room with: kind `agent`, the identity, name,
/// metadata and attributes the worker answered, and the permissions it registered with.
fn job_token(
    keys: &KeyRing,
    ttl: Duration,
    job: &lk::Job,
    identity: &str,
    answer: &lk::AvailabilityResponse,
    permissions: Option<lk::ParticipantPermission>,
) -> Result<String, String> {
    let keys = keys.current();
    let (key, _) = keys
        .primary()
        .ok_or_else(|| "no API key is configured".to_string())?;
    let p = permissions.unwrap_or(lk::ParticipantPermission {
        can_subscribe: true,
        can_publish: true,
        can_publish_data: true,
        ..Default::default()
    });
    let room = job
        .room
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_default();
    let req = TokenRequest {
        identity: identity.to_string(),
        name: Some(answer.participant_name.clone()).filter(|n| !n.is_empty()),
        metadata: Some(answer.participant_metadata.clone()).filter(|m| !m.is_empty()),
        attributes: Some(
            answer
                .participant_attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
        .filter(|a: &std::collections::BTreeMap<String, String>| !a.is_empty()),
        ttl,
        video: VideoGrant {
            room_join: Some(true),
            room: Some(room),
            can_publish: Some(p.can_publish),
            can_subscribe: Some(p.can_subscribe),
            can_publish_data: Some(p.can_publish_data),
            can_update_own_metadata: Some(p.can_update_metadata),
            hidden: Some(p.hidden),
            agent: Some(true),
            ..Default::default()
        },
        kind: Some("agent".into()),
    };
    auth::mint(&keys, key, &req).map_err(|e| e.to_string())
}

/// The dispatcher's figures at each `/metrics` scrape (read from [`Stats`]'s atomics).
#[derive(Debug)]
pub struct AgentMetrics(pub Arc<Stats>);

impl prometheus_client::collector::Collector for AgentMetrics {
    fn encode(
        &self,
        mut enc: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use crate::metrics::{counter, gauge, labelled};
        let s = &self.0;
        let load = |a: &AtomicUsize| a.load(Ordering::Relaxed) as u64;
        gauge(
            &mut enc,
            "confab_agent_workers",
            "Registered agent workers (open /agent connections)",
            load(&s.workers),
        )?;
        gauge(
            &mut enc,
            "confab_agent_dispatches",
            "Agent dispatches of rooms that exist or are awaited",
            load(&s.dispatches),
        )?;
        let jobs = [
            ("pending", load(&s.jobs_pending)),
            ("offered", load(&s.jobs_offered)),
            ("running", load(&s.jobs_running)),
            ("orphaned", load(&s.jobs_orphaned)),
        ];
        labelled(
            &mut enc,
            "confab_agent_jobs",
            "Agent jobs by state (not ended)",
            prometheus_client::metrics::MetricType::Gauge,
            "state",
            &jobs,
        )?;
        counter(
            &mut enc,
            "confab_agent_jobs_assigned",
            "Agent jobs assigned to a worker",
            s.jobs_assigned_total.load(Ordering::Relaxed),
        )?;
        counter(
            &mut enc,
            "confab_agent_events_dropped",
            "Room events the agent dispatcher had no room for",
            s.events_dropped.load(Ordering::Relaxed),
        )
    }
}
