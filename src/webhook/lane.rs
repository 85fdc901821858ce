//! One webhook URL's queue and its delivery task.
//!
//! Events wait per key (the room, as LiveKit's `webhook.EventKey`): each key has at most one
//! request in flight, so a room's events arrive in order, while up to `max_in_flight` keys are
//! delivered at once, so a room whose request hangs holds up only itself. Keys take turns (a
//! key with more events goes to the back). The queue is bounded by count and by bytes; an event
//! that does not fit is dropped, counted, and announced to the receiver in the next delivered
//! event's `num_dropped`, as LiveKit does; so is an event given up after its last attempt.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{info, warn};

use super::sign::Signer;
use super::transport::Transport;
use super::{Policy, WebhookStats};
use crate::events::Event;

struct Queued {
    event: Arc<Event>,
    size: usize,
}

/// An event taken for delivery.
struct Job {
    key: String,
    item: Queued,
    /// Drops not yet told to this receiver, told in this event.
    num_dropped: i32,
}

#[derive(Default)]
struct LaneState {
    pending: HashMap<String, VecDeque<Queued>>,
    /// Keys with pending events and none in flight, in turn order (each at most once).
    ready: VecDeque<String>,
    busy: HashSet<String>,
    /// Events queued or in flight, and their estimated bytes.
    len: usize,
    bytes: usize,
    unreported_drops: i32,
    /// For the periodic log line: dropped / given up since the last one.
    drops_to_log: u64,
    give_ups_to_log: u64,
    last_error: Option<String>,
    failing: bool,
}

pub(super) struct Lane {
    /// The URL without its query (which may hold a token), for logs.
    label: String,
    transport: Box<dyn Transport>,
    signer: Arc<Signer>,
    policy: Policy,
    stats: Arc<WebhookStats>,
    state: Mutex<LaneState>,
    wake: Notify,
}

/// What one attempt got.
enum Attempt {
    Delivered,
    /// Worth another attempt (connection error, timeout, 5xx but 501, 408, 429).
    Retry(String),
    /// Not (another 4xx, a redirect, no key to sign with).
    Fail(String),
}

impl Lane {
    pub(super) fn new(
        label: String,
        transport: Box<dyn Transport>,
        signer: Arc<Signer>,
        policy: Policy,
        stats: Arc<WebhookStats>,
    ) -> Lane {
        Lane {
            label,
            transport,
            signer,
            policy,
            stats,
            state: Mutex::new(LaneState::default()),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `event` (called on a media thread: a short lock, no I/O). False: dropped, full.
    pub(super) fn enqueue(&self, key: &str, event: &Arc<Event>, size: usize) -> bool {
        {
            let mut s = self.state();
            if s.len >= self.policy.max_queued || s.bytes + size > self.policy.max_queued_bytes {
                s.unreported_drops = s.unreported_drops.saturating_add(1);
                s.drops_to_log += 1;
                drop(s);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            s.len += 1;
            s.bytes += size;
            let busy = s.busy.contains(key);
            let queue = s.pending.entry(key.to_string()).or_default();
            let was_empty = queue.is_empty();
            queue.push_back(Queued {
                event: event.clone(),
                size,
            });
            if was_empty && !busy {
                s.ready.push_back(key.to_string());
            }
        }
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        self.stats
            .queued_bytes
            .fetch_add(size as u64, Ordering::Relaxed);
        self.wake.notify_one();
        true
    }

    fn next_job(&self) -> Option<Job> {
        let mut s = self.state();
        let key = s.ready.pop_front()?;
        let item = s.pending.get_mut(&key)?.pop_front()?;
        s.busy.insert(key.clone());
        let num_dropped = std::mem::take(&mut s.unreported_drops);
        Some(Job {
            key,
            item,
            num_dropped,
        })
    }

    fn finish(&self, key: &str, size: usize, num_dropped: i32, delivered: bool) {
        {
            let mut s = self.state();
            s.busy.remove(key);
            s.len -= 1;
            s.bytes -= size;
            if s.pending.get(key).is_some_and(|q| !q.is_empty()) {
                s.ready.push_back(key.to_string());
            } else {
                s.pending.remove(key);
            }
            if !delivered {
                // The receiver never got this one, nor the drops it was to announce.
                s.unreported_drops = s
                    .unreported_drops
                    .saturating_add(num_dropped)
                    .saturating_add(1);
                s.give_ups_to_log += 1;
            }
        }
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        self.stats
            .queued_bytes
            .fetch_sub(size as u64, Ordering::Relaxed);
    }

    /// The lane's task: starts deliveries while keys are ready and slots free, forever.
    pub(super) async fn run(self: Arc<Self>) {
        let mut running: JoinSet<bool> = JoinSet::new();
        let mut jobs: HashMap<tokio::task::Id, (String, usize, i32)> = HashMap::new();
        let mut report = tokio::time::interval_at(
            Instant::now() + self.policy.report_every,
            self.policy.report_every,
        );
        report.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            while running.len() < self.policy.max_in_flight {
                let Some(job) = self.next_job() else { break };
                let meta = (job.key.clone(), job.item.size, job.num_dropped);
                let lane = self.clone();
                let handle = running.spawn(async move { lane.deliver(&job).await });
                jobs.insert(handle.id(), meta);
            }
            tokio::select! {
                _ = self.wake.notified() => {}
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    let (id, delivered) = match done {
                        Ok((id, delivered)) => (id, delivered),
                        Err(e) => (e.id(), false),
                    };
                    if let Some((key, size, num_dropped)) = jobs.remove(&id) {
                        self.finish(&key, size, num_dropped, delivered);
                    }
                }
                _ = report.tick() => self.report(),
            }
        }
    }

    /// Every attempt for one event; true when the receiver took it.
    async fn deliver(&self, job: &Job) -> bool {
        let body = match encode(&job.item.event, job.num_dropped) {
            Ok(b) => b,
            Err(e) => {
                self.attempt_failed(&format!("cannot encode the event: {e}"));
                return false;
            }
        };
        for attempt in 0..self.policy.attempts {
            if attempt > 0 {
                tokio::time::sleep(self.policy.backoff(attempt)).await;
            }
            match self.attempt(&body).await {
                Attempt::Delivered => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                    let recovered = std::mem::replace(&mut self.state().failing, false);
                    if recovered {
                        info!(url = %self.label, "webhook receiver is accepting events again");
                    }
                    return true;
                }
                Attempt::Retry(e) => self.attempt_failed(&e),
                Attempt::Fail(e) => {
                    self.attempt_failed(&e);
                    break;
                }
            }
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        false
    }

    async fn attempt(&self, body: &Bytes) -> Attempt {
        let token = match self.signer.sign(body) {
            Ok(t) => t,
            Err(e) => return Attempt::Fail(e),
        };
        let timeout = self.policy.request_timeout;
        match tokio::time::timeout(timeout, self.transport.post(body.clone(), &token)).await {
            Ok(Ok(status)) if status.is_success() => Attempt::Delivered,
            Ok(Ok(status)) => {
                let retry = (status.is_server_error()
                    && status != hyper::StatusCode::NOT_IMPLEMENTED)
                    || status == hyper::StatusCode::TOO_MANY_REQUESTS
                    || status == hyper::StatusCode::REQUEST_TIMEOUT;
                let e = format!("the receiver answered {status}");
                if retry {
                    Attempt::Retry(e)
                } else {
                    Attempt::Fail(e)
                }
            }
            Ok(Err(e)) => Attempt::Retry(e),
            Err(_) => Attempt::Retry(format!("no answer within {} s", timeout.as_secs_f32())),
        }
    }

    /// Counts a failed attempt; the first after a success is logged at once, the rest in the
    /// periodic summary.
    fn attempt_failed(&self, error: &str) {
        self.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
        let first = {
            let mut s = self.state();
            s.last_error = Some(error.to_string());
            !std::mem::replace(&mut s.failing, true)
        };
        if first {
            warn!(url = %self.label, error, "webhook delivery failed; retrying with backoff");
        }
    }

    /// The periodic summary of drops and give-ups, if there were any (never one line per event).
    fn report(&self) {
        let (drops, give_ups, last_error, len) = {
            let mut s = self.state();
            (
                std::mem::take(&mut s.drops_to_log),
                std::mem::take(&mut s.give_ups_to_log),
                s.last_error.clone(),
                s.len,
            )
        };
        let every = self.policy.report_every.as_secs();
        if drops > 0 {
            warn!(url = %self.label, dropped = drops, queued = len,
                "webhook queue full: events dropped in the last {every} s");
        }
        if give_ups > 0 {
            warn!(url = %self.label, given_up = give_ups, attempts = self.policy.attempts,
                last_error = last_error.as_deref().unwrap_or("-"),
                "webhook events given up in the last {every} s");
        }
    }
}

/// The body: protojson of the event, with this receiver's `num_dropped`. The field is deprecated
/// in the proto, but LiveKit's `URLNotifier` still fills it, so receivers may read it.
#[allow(deprecated)]
fn encode(event: &Event, num_dropped: i32) -> Result<Bytes, serde_json::Error> {
    let json = if num_dropped == 0 {
        serde_json::to_vec(&event.webhook)?
    } else {
        let mut webhook = event.webhook.clone();
        webhook.num_dropped = num_dropped;
        serde_json::to_vec(&webhook)?
    };
    Ok(Bytes::from(json))
}
