//! `GET /metrics`: the server's figures in the Prometheus text format (0.0.4), encoded by the
//! `prometheus-client` crate. The route and its access check are in `api`; this module only
//! gathers and encodes.
//!
//! A scrape reads what is already counted — the media threads' relaxed atomics
//! (`media::MediaStats`, `sfu::counters`, `sfu::delay`), the event counts kept by
//! [`EventCounts`] (a [`crate::events::Sink`]), `/proc` — and asks each media thread once for
//! its published tracks and subscriptions ([`crate::sfu::Request::Census`], answered between
//! two loop turns, given up after [`CENSUS_TIMEOUT`]). It never waits on a lock a media thread
//! holds.
//!
//! Names: LiveKit's where the figure is the same (`livekit_room_total`,
//! `livekit_participant_total`, `livekit_track_published_total`, `livekit_packet_total`, …, so
//! LiveKit dashboards partly work), the standard `process_*` ones, `confab_*` for the rest.
//!
//! # Adding metrics of another subsystem (webhooks, agents, …)
//!
//! Keep the figures where the subsystem keeps its state (atomics, or a `prometheus-client`
//! metric) and register them once, at start-up, on the [`Metrics`] that `confab serve` builds
//! (`cli/serve.rs`: `metrics` exists before the event bus, whose sinks are listed next to
//! `metrics.events_sink()`). Either register a metric the crate updates itself:
//!
//! ```ignore
//! use prometheus_client::metrics::counter::Counter;
//! let delivered = Counter::<u64>::default();
//! metrics.register("confab_webhook_delivered", "Webhook requests answered with 2xx", delivered.clone());
//! // … later, in the webhook task: delivered.inc();
//! ```
//!
//! or a [`Collector`] that reads the subsystem's own state at each scrape (it must be quick
//! and must not block: read atomics, or take a lock held only briefly):
//!
//! ```ignore
//! #[derive(Debug)]
//! struct AgentMetrics(Arc<AgentState>);
//! impl prometheus_client::collector::Collector for AgentMetrics {
//!     fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
//!         let workers = self.0.workers.load(Ordering::Relaxed);
//!         crate::metrics::gauge(&mut enc, "confab_agent_workers", "Registered agent workers", workers)?;
//!         let jobs = self.0.jobs_by_state(); // [("running", 2), ("pending", 1)]
//!         crate::metrics::labelled(&mut enc, "confab_agent_jobs", "Agent jobs by state",
//!             MetricType::Gauge, "state", &jobs)
//!     }
//! }
//! metrics.register_collector(Box::new(AgentMetrics(state.clone())));
//! ```
//!
//! Counters are named without `_total` (the encoder appends it). A subsystem that is not
//! running registers nothing: no metric is reported with a made-up value.

mod procfs;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelValue, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry};

use crate::events::{self, Event, Sink};
use crate::media::MediaHandle;
use crate::sfu::{delay, Census};

/// The `Content-Type` of a scrape.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// How long a scrape waits for the media threads' track census; past it the track gauges are
/// left out of that scrape (a stalled media thread shows in its heartbeat age instead).
pub const CENSUS_TIMEOUT: Duration = Duration::from_millis(500);

/// Upper bounds (µs) of the forwarding delay histogram's buckets: each is an upper bound of a
/// bucket of `sfu::delay`, whose finer counts are added up into them (its last bucket, beyond
/// 1 s, is +Inf here).
const DELAY_BOUNDS_US: [u64; 14] = [
    50, 100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// Everything `/metrics` shows. Built once by `confab serve`; other subsystems add theirs with
/// [`Metrics::register`] or [`Metrics::register_collector`].
pub struct Metrics {
    started: Instant,
    events: Arc<EventCounts>,
    media: Mutex<Option<MediaHandle>>,
    /// Other subsystems' metrics (the lock is held while they are added and while a scrape
    /// encodes them, never by a media thread).
    extra: Mutex<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            started: Instant::now(),
            events: Arc::default(),
            media: Mutex::new(None),
            extra: Mutex::new(Registry::default()),
        }
    }

    /// The sink that counts the SFU's events, for the event [`events::Bus`].
    pub fn events_sink(&self) -> Arc<dyn Sink> {
        self.events.clone()
    }

    /// The media threads to read (once they run).
    pub fn set_media(&self, media: MediaHandle) {
        *self.media.lock().unwrap_or_else(|e| e.into_inner()) = Some(media);
    }

    /// Adds a metric that its owner updates (a `prometheus-client` counter, gauge, family …).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// Adds a collector that reads its owner's state at each scrape.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry().register_collector(collector);
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.extra.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One scrape: the text to answer `GET /metrics` with.
    pub async fn render(&self) -> String {
        let media = self.media.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let census = match &media {
            Some(m) => census(m).await,
            None => None,
        };
        let snapshot = Snapshot::take(self, media.as_ref(), census);
        let mut out = String::with_capacity(16 << 10);
        let mut own = Registry::default();
        own.register_collector(Box::new(snapshot));
        // Writing to a String cannot fail; a collector's own error would end the text early.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &own);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry());
        out
    }
}

/// Every media thread's census, added up; `None` if one does not answer in time.
async fn census(media: &MediaHandle) -> Option<Census> {
    let replies = tokio::time::timeout(
        CENSUS_TIMEOUT,
        media.request_all(crate::sfu::Request::Census),
    )
    .await
    .ok()?
    .ok()?;
    let mut sum = Census::default();
    for r in replies {
        if let crate::sfu::Reply::Census(c) = r {
            sum.published_audio += c.published_audio;
            sum.published_video += c.published_video;
            sum.subscribed_audio += c.subscribed_audio;
            sum.subscribed_video += c.subscribed_video;
        }
    }
    Some(sum)
}

/// The server events counted so far, by name ([`events`]' names).
#[derive(Debug, Default)]
pub struct EventCounts {
    counts: [AtomicU64; EVENT_NAMES.len()],
}

const EVENT_NAMES: [&str; 10] = [
    events::ROOM_STARTED,
    events::ROOM_FINISHED,
    events::PARTICIPANT_JOINED,
    events::PARTICIPANT_LEFT,
    events::PARTICIPANT_CONNECTION_ABORTED,
    events::TRACK_PUBLISHED,
    events::TRACK_UNPUBLISHED,
    events::EGRESS_STARTED,
    events::EGRESS_UPDATED,
    events::EGRESS_ENDED,
];

impl Sink for EventCounts {
    /// One relaxed add (on the media thread that emitted the event).
    fn deliver(&self, event: &Arc<Event>) {
        let name = event.name();
        if let Some(i) = EVENT_NAMES.iter().position(|n| *n == name) {
            if let Some(c) = self.counts.get(i) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl EventCounts {
    fn read(&self) -> Vec<(&'static str, u64)> {
        EVENT_NAMES
            .iter()
            .zip(&self.counts)
            .map(|(n, c)| (*n, c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// One media thread's figures.
#[derive(Debug, Clone, Default, PartialEq)]
struct ThreadFigures {
    participants: u64,
    rooms: u64,
    cpu_seconds: Option<f64>,
    busy_seconds: f64,
    heartbeat_age: f64,
}

/// Counters of one direction of RTP (`sfu::counters`), summed over the media threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Rtp {
    packets: u64,
    bytes: u64,
    nacks: u64,
    plis: u64,
    firs: u64,
}

/// A delay histogram: counts per [`DELAY_BOUNDS_US`] bucket (the last one: beyond), total, sum.
#[derive(Debug, Clone, Default, PartialEq)]
struct Delay {
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum_seconds: f64,
}

/// What one scrape read, encoded by its [`Collector`] impl.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    uptime: f64,
    rss_bytes: Option<u64>,
    process_cpu_seconds: Option<f64>,
    rooms: u64,
    participants: u64,
    census: Option<Census>,
    events: Vec<(&'static str, u64)>,
    threads: Vec<ThreadFigures>,
    rtp_in: Rtp,
    rtp_out: Rtp,
    lost_out: u64,
    udp: [u64; 4],
    tcp_connections: u64,
    delay: Delay,
    delay_audio: Delay,
    /// Media threads running (none: the figures of media are left out).
    media: bool,
}

impl Snapshot {
    fn take(m: &Metrics, media: Option<&MediaHandle>, census: Option<Census>) -> Snapshot {
        let mut s = Snapshot {
            uptime: m.started.elapsed().as_secs_f64(),
            rss_bytes: procfs::rss_bytes(),
            process_cpu_seconds: procfs::cpu_seconds("/proc/self/stat"),
            census,
            events: m.events.read(),
            ..Default::default()
        };
        let Some(media) = media else {
            return s;
        };
        s.media = true;
        let heartbeats = media.heartbeats();
        let (mut delay, mut delay_audio) = (vec![], vec![]);
        let (mut sum_us, mut sum_audio_us) = (0, 0);
        for i in 0..media.shards() {
            let Some(st) = media.shard_stats(i) else {
                continue;
            };
            let r = Ordering::Relaxed;
            let tid = st.tid.load(r);
            let participants = st.participants.load(r);
            let rooms = st.rooms.load(r);
            s.participants += participants;
            s.rooms += rooms;
            s.threads.push(ThreadFigures {
                participants,
                rooms,
                cpu_seconds: (tid != 0)
                    .then(|| procfs::cpu_seconds(&format!("/proc/self/task/{tid}/stat")))
                    .flatten(),
                busy_seconds: st.busy_ns.load(r) as f64 / 1e9,
                heartbeat_age: heartbeats.get(i).map_or(0.0, |h| h.age().as_secs_f64()),
            });
            s.udp[0] += st.datagrams.load(r);
            s.udp[1] += st.udp_bytes_in.load(r);
            s.udp[2] += st.udp_datagrams_out.load(r);
            s.udp[3] += st.udp_bytes_out.load(r);
            s.tcp_connections += st.tcp_connections.load(r);
            add_rtp(&mut s.rtp_in, &st.rtp.ingress);
            add_rtp(&mut s.rtp_out, &st.rtp.egress);
            s.lost_out += st.rtp.egress_lost.load(r);
            st.forward_delay.add_to(&mut delay);
            st.forward_delay_audio.add_to(&mut delay_audio);
            sum_us += st.forward_delay.sum_us();
            sum_audio_us += st.forward_delay_audio.sum_us();
        }
        s.delay = coarse(&delay, sum_us);
        s.delay_audio = coarse(&delay_audio, sum_audio_us);
        s
    }
}

fn add_rtp(into: &mut Rtp, c: &crate::sfu::counters::StreamCounters) {
    let r = Ordering::Relaxed;
    into.packets += c.packets.load(r);
    into.bytes += c.bytes.load(r);
    into.nacks += c.nacks.load(r);
    into.plis += c.plis.load(r);
    into.firs += c.firs.load(r);
}

/// `sfu::delay`'s fine bucket counts added up into [`DELAY_BOUNDS_US`] (and +Inf).
fn coarse(fine: &[u64], sum_us: u64) -> Delay {
    let mut buckets: Vec<(f64, u64)> = DELAY_BOUNDS_US
        .iter()
        .map(|b| (*b as f64 / 1e6, 0))
        .chain(std::iter::once((f64::INFINITY, 0)))
        .collect();
    let mut count = 0;
    for (i, c) in fine.iter().enumerate() {
        let upper = delay::bucket_upper_us(i);
        let slot = DELAY_BOUNDS_US
            .iter()
            .position(|b| upper <= *b)
            .unwrap_or(DELAY_BOUNDS_US.len());
        if let Some(b) = buckets.get_mut(slot) {
            b.1 += c;
        }
        count += c;
    }
    Delay {
        buckets,
        count,
        sum_seconds: sum_us as f64 / 1e6,
    }
}

// ------------------------------------------------------------------- encoding helpers

/// Writes one unlabelled gauge.
pub fn gauge<V: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> Result<(), std::fmt::Error> {
    enc.encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&v)
}

/// Writes one unlabelled counter (`name` without `_total`: the encoder appends it).
pub fn counter<V: prometheus_client::encoding::EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> Result<(), std::fmt::Error> {
    enc.encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&v, None)
}

/// Writes a counter or gauge with one label: one sample per `(label value, value)`.
pub fn labelled<L, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    label: &str,
    rows: &[(L, V)],
) -> Result<(), std::fmt::Error>
where
    L: EncodeLabelValue + Clone,
    V: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (value, v) in rows {
        let labels = [(label, value.clone())];
        let mut f = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => f.encode_counter::<NoLabelSet, _, u64>(v, None)?,
            _ => f.encode_gauge(v)?,
        }
    }
    Ok(())
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    d: &Delay,
) -> Result<(), std::fmt::Error> {
    enc.encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(d.sum_seconds, d.count, &d.buckets, None)
}

/// Per media thread (label `thread`: its index).
fn per_thread<V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    values: impl Iterator<Item = Option<V>>,
) -> Result<(), std::fmt::Error>
where
    V: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    let rows: Vec<(String, V)> = values
        .enumerate()
        .filter_map(|(i, v)| Some((i.to_string(), v?)))
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    labelled(enc, name, help, kind, "thread", &rows)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_server(&mut enc)?;
        if self.media {
            self.encode_rooms(&mut enc)?;
            self.encode_media(&mut enc)?;
            self.encode_threads(&mut enc)?;
        }
        Ok(())
    }
}

impl Snapshot {
    fn encode_server(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let info = [
            ("version", crate::version::VERSION),
            ("commit", crate::version::COMMIT),
        ];
        enc.encode_descriptor(
            "confab_build",
            "The running confab's version and commit",
            None,
            MetricType::Info,
        )?
        .encode_info(&info)?;
        gauge(
            enc,
            "confab_uptime_seconds",
            "Seconds since start",
            self.uptime,
        )?;
        if let Some(rss) = self.rss_bytes {
            gauge(
                enc,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss,
            )?;
        }
        if let Some(cpu) = self.process_cpu_seconds {
            counter(
                enc,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                cpu,
            )?;
        }
        labelled(
            enc,
            "confab_events",
            "Server events (webhook event names) since start",
            MetricType::Counter,
            "event",
            &self.events,
        )
    }

    /// Rooms, participants, tracks.
    fn encode_rooms(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(enc, "livekit_room_total", "Rooms open now", self.rooms)?;
        gauge(
            enc,
            "livekit_participant_total",
            "Participants in all rooms now",
            self.participants,
        )?;
        if let Some(c) = self.census {
            let published = [("AUDIO", c.published_audio), ("VIDEO", c.published_video)];
            let help = "Tracks published now, by kind";
            labelled(
                enc,
                "livekit_track_published_total",
                help,
                MetricType::Gauge,
                "kind",
                &published,
            )?;
            let subscribed = [("AUDIO", c.subscribed_audio), ("VIDEO", c.subscribed_video)];
            let help = "Subscriptions (a subscriber given a track) now, by kind";
            labelled(
                enc,
                "livekit_track_subscribed_total",
                help,
                MetricType::Gauge,
                "kind",
                &subscribed,
            )?;
        }
        Ok(())
    }

    /// Packets, bytes, RTCP feedback, forwarding delay.
    fn encode_media(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let dir = |i: u64, o: u64| [("incoming", i), ("outgoing", o)];
        let (i, o) = (self.rtp_in, self.rtp_out);
        let c = MetricType::Counter;
        let help = "RTP packets received from publishers (incoming) and sent to subscribers (outgoing), retransmissions included";
        labelled(
            enc,
            "livekit_packet",
            help,
            c,
            "direction",
            &dir(i.packets, o.packets),
        )?;
        let help = "RTP payload bytes, as livekit_packet_total counts packets";
        labelled(
            enc,
            "livekit_packet_bytes",
            help,
            c,
            "direction",
            &dir(i.bytes, o.bytes),
        )?;
        let help =
            "NACKs sent to publishers (incoming streams) and received from subscribers (outgoing)";
        labelled(
            enc,
            "livekit_nack",
            help,
            c,
            "direction",
            &dir(i.nacks, o.nacks),
        )?;
        let help =
            "PLIs sent to publishers (incoming streams) and received from subscribers (outgoing)";
        labelled(
            enc,
            "livekit_pli",
            help,
            c,
            "direction",
            &dir(i.plis, o.plis),
        )?;
        let help =
            "FIRs sent to publishers (incoming streams) and received from subscribers (outgoing)";
        labelled(
            enc,
            "livekit_fir",
            help,
            c,
            "direction",
            &dir(i.firs, o.firs),
        )?;
        let help =
            "Packets subscribers reported lost (RTCP receiver reports) of what confab sent them";
        labelled(
            enc,
            "livekit_packet_loss",
            help,
            c,
            "direction",
            &[("outgoing", self.lost_out)],
        )?;
        let [dg_in, b_in, dg_out, b_out] = self.udp;
        let help = "UDP datagrams on the media ports (ICE, DTLS, RTP, RTCP)";
        labelled(
            enc,
            "confab_udp_datagrams",
            help,
            c,
            "direction",
            &dir(dg_in, dg_out),
        )?;
        let help = "UDP bytes on the media ports";
        labelled(
            enc,
            "confab_udp_bytes",
            help,
            c,
            "direction",
            &dir(b_in, b_out),
        )?;
        counter(
            enc,
            "confab_ice_tcp_connections",
            "ICE-TCP connections accepted",
            self.tcp_connections,
        )?;
        let help = "Delay confab added to forwarded packets (kernel arrival to sendmmsg return), sampled 1 in 64";
        histogram(enc, "confab_forward_delay_seconds", help, &self.delay)?;
        let help = "confab_forward_delay_seconds for audio alone (not paced)";
        histogram(
            enc,
            "confab_forward_delay_audio_seconds",
            help,
            &self.delay_audio,
        )
    }

    fn encode_threads(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = &self.threads;
        per_thread(
            enc,
            "confab_media_thread_cpu_seconds",
            "CPU time of each media thread (/proc)",
            MetricType::Counter,
            t.iter().map(|t| t.cpu_seconds),
        )?;
        per_thread(
            enc,
            "confab_media_thread_busy_seconds",
            "Time each media thread spent working, not waiting for input: its rate is the thread's load (0-1)",
            MetricType::Counter,
            t.iter().map(|t| Some(t.busy_seconds)),
        )?;
        per_thread(
            enc,
            "confab_media_thread_heartbeat_age_seconds",
            "Time since each media thread last turned its loop (turns at least every 0.1 s)",
            MetricType::Gauge,
            t.iter().map(|t| Some(t.heartbeat_age)),
        )?;
        per_thread(
            enc,
            "confab_media_thread_participants",
            "Participants hosted by each media thread",
            MetricType::Gauge,
            t.iter().map(|t| Some(t.participants as f64)),
        )?;
        per_thread(
            enc,
            "confab_media_thread_rooms",
            "Rooms hosted by each media thread",
            MetricType::Gauge,
            t.iter().map(|t| Some(t.rooms as f64)),
        )
    }
}
