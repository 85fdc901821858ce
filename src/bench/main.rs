//! `confab-bench`: a load generator and the benchmarks it is compared with.
//!
//! Synthetic participants ([`client`]) speak confab's real signalling (LiveKit v0 over a TLS
//! WebSocket) and carry real media with str0m (ICE, DTLS, SRTP, simulcast, TWCC) against a
//! release `confab serve` that this command starts on its own core (`taskset`); the generator
//! runs on the other cores. confab's CPU and memory are read from `/proc/<pid>`, never the
//! generator's. Beside it, in the same run: the **limit** ([`limit`]: SRTP protect plus
//! `sendmmsg`, what forwarding must do per packet) and a **baseline** ([`baseline`]: a naive
//! str0m forwarder in one loop with a linear `accepts` scan), so confab is reported as ratios
//! to both.
//!
//! A binary of its own in the confab crate (issue 18), so the product library and the `confab`
//! that ships on appliances carry none of it. It uses only the library's public API (tokens,
//! the HTTPS client, the delay histogram's quantiles) and starts the `confab` built next to it
//! (`--confab PATH` for another one). The integration smoke test (`tests/bench_smoke.rs`) runs
//! it the same way.

mod baseline;
mod client;
mod limit;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use prost::Message as _;
use tokio::sync::watch;

use client::{Link, Participant, Plan, Stop};
use confab::auth::{ApiKeys, TokenRequest, VideoGrant};
use confab::config::Secret;

// The same allocator as confab's, so the generator behaves as it did inside `confab bench`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    run(BenchArgs::parse())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// N participants, each publishing audio and simulcast video, everyone subscribed.
    Meeting,
    /// One publisher (audio + simulcast video), N subscribers.
    Webinar,
    /// N speakers publishing audio only, everyone subscribed.
    Audio,
    /// A meeting of N where participants leave and new ones join at a fixed rate.
    Churn,
    /// SRTP protect (AES-GCM, AES-CM) + sendmmsg to loopback: packets/s per core.
    Limit,
    /// A naive str0m forwarder (one loop, linear `accepts` scan) under the meeting load.
    Baseline,
}

/// Load-test a confab started on its own core with synthetic participants (see
/// docs/performance.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "confab-bench", version)]
pub struct BenchArgs {
    /// Scenarios to run (default: limit, baseline, meeting, webinar, audio, churn).
    #[arg(value_enum)]
    pub scenarios: Vec<Scenario>,
    /// Sizes to run each scenario at (default: three per scenario).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// Seconds of measurement per scenario and size.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// The CPU confab (and the baseline and the limit) run on.
    #[arg(long, default_value_t = 0)]
    pub server_core: usize,
    /// The CPUs the load generator runs on.
    #[arg(long, default_value = "1")]
    pub generator_cores: String,
    /// Do not pin anything to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// churn: participants leaving (and as many joining) per second.
    #[arg(long, default_value_t = 2.0)]
    pub churn_rate: f64,
    /// churn: every K-th participant to leave vanishes instead: no leave request, no close, no
    /// packets, its sockets open and unread (a laptop whose network dropped). After the window
    /// the run waits for confab's timeouts and reports the participants it still holds that
    /// are not in the room any more (stuck).
    #[arg(long, default_value_t = 0)]
    pub vanish_every: usize,
    /// The confab binary to measure (default: the `confab` next to this executable).
    #[arg(long)]
    pub confab: Option<PathBuf>,
    /// Exit 1 unless every subscriber received media (for the CI smoke test).
    #[arg(long)]
    pub require_media: bool,
    /// meeting, webinar, audio, churn: run this many rooms of N at once (each room on one
    /// media thread of confab; R × N participants in all).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// confab's `rtc.media_threads` (default: confab's own default, one per core it may use —
    /// with `taskset` on one core, one).
    #[arg(long)]
    pub media_threads: Option<usize>,
    /// The CPUs confab runs on, e.g. `0,1` (default: `--server-core`). The limit and the
    /// baseline stay on `--server-core`.
    #[arg(long)]
    pub server_cores: Option<String>,
    /// The simulcast layer subscribers ask for, as livekit-client does for small video
    /// elements (default: none asked; confab sends the best layer the bandwidth allows).
    #[arg(long, value_enum)]
    pub layer: Option<Layer>,
    /// meeting, webinar: record this many participants of each room while measuring (LiveKit's
    /// `StartParticipantEgress`, to files in the run's temporary state directory), to measure
    /// what recording costs.
    #[arg(long, default_value_t = 0)]
    pub recordings: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Layer {
    /// 1280×720, 1.5 Mbit/s.
    High,
    /// 640×360, 500 kbit/s.
    Medium,
    /// 320×180, 150 kbit/s.
    Low,
}

impl Layer {
    /// LiveKit's `VideoQuality`.
    fn quality(self) -> i32 {
        match self {
            Layer::High => lk::VideoQuality::High as i32,
            Layer::Medium => lk::VideoQuality::Medium as i32,
            Layer::Low => lk::VideoQuality::Low as i32,
        }
    }
}

// ------------------------------------------------------------------------------ shared counters

/// What all participants of a run count together (the generator is one process).
#[derive(Default)]
pub struct Stats {
    pub measuring: AtomicBool,
    /// RTP packets, frames, datagrams and bytes that subscribers received while measuring.
    pub packets: AtomicU64,
    pub frames: AtomicU64,
    pub datagrams: AtomicU64,
    pub bytes: AtomicU64,
    pub sent_frames: AtomicU64,
    /// UDP datagrams participants sent (to the server: they talk to nothing else) while
    /// measuring; what the server received unless its socket dropped some.
    pub sent_datagrams: AtomicU64,
    /// Participants that have received any media.
    pub receiving: AtomicU64,
    pub frames_expected: AtomicU64,
    pub frames_received: AtomicU64,
    pub delays_us: Mutex<Vec<u32>>,
    /// Join (WebSocket open) → first media received, per participant.
    pub join_ms: Mutex<Vec<u32>>,
    pub errors: Mutex<Vec<String>>,
    /// Numbers published tracks (see `client::stamp`).
    pub next_source: std::sync::atomic::AtomicU32,
}

impl Stats {
    pub fn error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock() {
            if v.len() < 1000 {
                v.push(e);
            }
        }
    }
}

/// Microseconds since the bench started (publishers stamp it, subscribers subtract it).
pub fn clock_us() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied()
}

// ------------------------------------------------------------------------------ /proc

/// CPU seconds (user + system) of a process or thread from its `stat` file.
pub fn cpu_seconds(stat: &Path) -> Option<f64> {
    let s = std::fs::read_to_string(stat).ok()?;
    // Fields after the command name (which may contain spaces) in parentheses.
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// A field of `/proc/<pid>/status` in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Pins the calling thread (and the threads it starts later) to `cores`.
pub fn pin_current_thread(cores: &[usize]) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_SET only writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in cores {
            libc::CPU_SET(*c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn parse_cores(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|c| c.trim().parse().ok()).collect()
}

// ------------------------------------------------------------------------------ the server

/// A `confab serve` started for one measurement, on its own state directory and ports.
struct Server {
    child: Child,
    dir: PathBuf,
    https: u16,
    keys: ApiKeys,
    key: String,
    tls: tokio_rustls::TlsConnector,
}

fn free_port_tcp() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn free_port_udp() -> std::io::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A free port `p` (UDP or TCP) with `p + 1 .. p + n` free too: media thread `i` of confab binds
/// `rtc.udp_port + i` and `rtc.tcp_port + i`.
fn free_port_range(n: usize, tcp: bool, avoid: &[u16]) -> std::io::Result<u16> {
    for _ in 0..100 {
        let p = if tcp {
            free_port_tcp()?
        } else {
            free_port_udp()?
        };
        let range = p as usize..p as usize + n.max(1);
        if range.end > 65_536 || avoid.iter().any(|a| range.contains(&(*a as usize))) {
            continue;
        }
        let free = range.skip(1).all(|q| {
            let q = q as u16;
            if tcp {
                std::net::TcpListener::bind(("127.0.0.1", q)).is_ok()
            } else {
                std::net::UdpSocket::bind(("127.0.0.1", q)).is_ok()
            }
        });
        if free {
            return Ok(p);
        }
    }
    Err(std::io::Error::other("no free range of ports"))
}

/// How confab is started: on which cores, with how many media threads.
#[derive(Debug, Clone, Default)]
struct Placement {
    /// `taskset -c` list; `None` = not pinned.
    cores: Option<String>,
    media_threads: Option<usize>,
}

impl Placement {
    /// Media threads confab will run: the configured number, or one per core it may use.
    fn threads(&self) -> usize {
        self.media_threads.filter(|n| *n > 0).unwrap_or_else(|| {
            self.cores.as_deref().map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |c| parse_cores(c).len().max(1),
            )
        })
    }
}

impl Server {
    async fn start(
        exe: &Path,
        placement: &Placement,
        max_participants: usize,
    ) -> Result<Server, String> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "confab-bench-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = |r: std::io::Result<u16>| r.map_err(|e| format!("no free port: {e}"));
        let threads = placement.threads();
        let (https, http) = (port(free_port_tcp())?, port(free_port_tcp())?);
        let tcp = port(free_port_range(threads, true, &[https, http]))?;
        let udp = port(free_port_range(threads, false, &[]))?;
        let mut cmd = match &placement.cores {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c).arg(exe);
                cmd
            }
            None => Command::new(exe),
        };

        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(
                placement
                    .media_threads
                    .map(|n| ("CONFAB_MEDIA_THREADS", n.to_string())),
            )
            .env("CONFAB_STATE_DIR", dir.join("data"))
            .env("CONFAB_BIND", "127.0.0.1")
            .env("CONFAB_HTTPS_PORT", https.to_string())
            .env("CONFAB_HTTP_PORT", http.to_string())
            .env("CONFAB_UDP_PORT", udp.to_string())
            .env("CONFAB_TCP_PORT", tcp.to_string())
            // The generator's clients use host candidates only; TURN's ports stay free.
            .env("CONFAB_TURN_ENABLED", "false")
            .env(
                "CONFAB_MAX_PARTICIPANTS",
                max_participants.max(10).to_string(),
            )
            // Every simulated participant connects from 127.0.0.1.
            .env("CONFAB_MAX_CONNECTIONS", "100000")
            .env("CONFAB_MAX_CONNECTIONS_PER_ADDRESS", "100000")
            .env("CONFAB_LOG_LEVEL", "warn")
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join("stderr.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let mut s = Server {
            child,
            dir,
            https,
            keys: ApiKeys::from_map(BTreeMap::new()),
            key: String::new(),
            tls: tokio_rustls::TlsConnector::from(Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::aws_lc_rs::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
            )),
        };
        s.wait_ready().await?;
        Ok(s)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let ca = self.dir.join("data/tls/ca.crt");
        let keys = self.dir.join("data/keys.toml");
        loop {
            if Instant::now() > deadline {
                return Err(format!("confab did not start:\n{}", self.log()));
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("confab exited ({status}):\n{}", self.log()));
            }
            if ca.exists() && keys.exists() {
                if let (Ok(tls), Ok(text)) = (
                    confab::http::client::connector_for_ca(&ca),
                    std::fs::read_to_string(&keys),
                ) {
                    let table: toml::Table = text.parse().map_err(|e| format!("keys.toml: {e}"))?;
                    let first = table
                        .get("keys")
                        .and_then(|k| k.as_table())
                        .and_then(|k| k.iter().next())
                        .and_then(|(k, v)| Some((k.clone(), v.as_str()?.to_string())));
                    if let Some((key, secret)) = first {
                        self.keys =
                            ApiKeys::from_map(BTreeMap::from([(key.clone(), Secret::new(secret))]));
                        self.key = key;
                        self.tls = tls;
                        if tokio::net::TcpStream::connect(("127.0.0.1", self.https))
                            .await
                            .is_ok()
                        {
                            return Ok(());
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn token(&self, room: &str, identity: &str, publish: bool) -> Result<String, String> {
        confab::auth::mint(
            &self.keys,
            &self.key,
            &TokenRequest {
                identity: identity.into(),
                ttl: Duration::from_secs(3600),
                video: VideoGrant {
                    room_join: Some(true),
                    room: Some(room.into()),
                    can_publish: Some(publish),
                    can_subscribe: Some(true),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())
    }

    /// Starts `spec.recordings` participant recordings in each room (the first participants
    /// to join it: `p1`, `p2`, … numbered across rooms in join order).
    async fn record(&self, spec: &Spec) -> Result<(), String> {
        let token = confab::auth::mint(
            &self.keys,
            &self.key,
            &TokenRequest {
                identity: "bench-recorder".into(),
                ttl: Duration::from_secs(600),
                video: VideoGrant {
                    room_record: Some(true),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.https));
        let per_room = spec.plans().0.len();
        for r in 0..spec.rooms() {
            for i in 0..spec.recordings.min(per_room) {
                let identity = format!("p{}", r * per_room + i + 1);
                let body = serde_json::json!({
                    "room_name": spec.room_name(r),
                    "identity": identity,
                    "file_outputs": [{"filepath": format!("{{room_name}}-{identity}")}],
                });
                let (status, answer) = confab::http::client::post_json(
                    &self.tls,
                    addr,
                    "localhost",
                    "/twirp/livekit.Egress/StartParticipantEgress",
                    &body,
                    Some(&token),
                )
                .await
                .map_err(|e| e.to_string())?;
                if !status.is_success() {
                    return Err(format!(
                        "StartParticipantEgress for {identity}: {status} {}",
                        String::from_utf8_lossy(&answer)
                    ));
                }
            }
        }
        Ok(())
    }

    /// How many participants confab holds in `room` (LiveKit's `RoomService.ListParticipants`).
    async fn participants(&self, room: &str) -> Result<usize, String> {
        let token = confab::auth::mint(
            &self.keys,
            &self.key,
            &TokenRequest {
                identity: "bench-admin".into(),
                ttl: Duration::from_secs(60),
                video: VideoGrant {
                    room_admin: Some(true),
                    room: Some(room.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.https));
        let (status, answer) = confab::http::client::post_json(
            &self.tls,
            addr,
            "localhost",
            "/twirp/livekit.RoomService/ListParticipants",
            &serde_json::json!({ "room": room }),
            Some(&token),
        )
        .await
        .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!(
                "ListParticipants {room}: {status} {}",
                String::from_utf8_lossy(&answer)
            ));
        }
        let json: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|e| format!("ListParticipants: {e}"))?;
        Ok(json["participants"].as_array().map_or(0, Vec::len))
    }

    /// The bucket counts of the delay confab measured on forwarded packets (`/api/status`,
    /// `forward_delay_us` and `forward_delay_audio_us`).
    async fn forward_delay(&self) -> Result<DelayCounts, String> {
        let token = confab::auth::mint(
            &self.keys,
            &self.key,
            &TokenRequest {
                identity: "bench".into(),
                ttl: Duration::from_secs(60),
                video: VideoGrant {
                    room_list: Some(true),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.https));
        let (status, body) =
            confab::http::client::get(&self.tls, addr, "localhost", "/api/status", Some(&token))
                .await
                .map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("/api/status answered {status}"));
        }
        let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let buckets = |key: &str| -> Result<Vec<(u64, u64)>, String> {
            Ok(json[key]["buckets"]
                .as_array()
                .ok_or(format!("/api/status has no {key}"))?
                .iter()
                .filter_map(|b| Some((b.get(0)?.as_u64()?, b.get(1)?.as_u64()?)))
                .collect())
        };
        Ok(DelayCounts {
            all: buckets("forward_delay_us")?,
            audio: buckets("forward_delay_audio_us")?,
        })
    }

    /// Opens `/rtc` (v0) for `identity` and waits for its `join` response.
    async fn connect(&self, room: &str, identity: &str, publish: bool) -> Result<Joined, String> {
        let token = self.token(room, identity, publish)?;
        let url = format!(
            "wss://localhost:{}/rtc?access_token={token}&auto_subscribe=1&protocol=16&sdk=rust",
            self.https
        );
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.https))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name =
            rustls::pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), tls)
            .await
            .map_err(|e| format!("WebSocket: {e}"))?;
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let msg = tokio::time::timeout_at(deadline, ws.next())
                .await
                .map_err(|_| "no join response".to_string())?;
            match msg {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                    if let Ok(lk::SignalResponse {
                        message: Some(Resp::Join(j)),
                    }) = lk::SignalResponse::decode(b.as_ref())
                    {
                        return Ok((Link::Ws(Box::new(ws)), j.other_participants));
                    }
                }
                Some(Ok(_)) => {}
                _ => return Err("connection closed before join".into()),
            }
        }
    }

    fn stop(mut self) {
        // SAFETY: kill with a valid signal on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ------------------------------------------------------------------------------ one run

/// What is measured: confab, or the in-process baseline.
enum Target {
    Confab(Server),
    Baseline(baseline::Baseline),
}

/// confab's forwarding-delay histogram, all packets and audio alone, as (upper bound µs, count).
#[derive(Default)]
struct DelayCounts {
    all: Vec<(u64, u64)>,
    audio: Vec<(u64, u64)>,
}

/// The counts of a window: those at its end less those at its start.
fn window_counts(start: &[(u64, u64)], end: &[(u64, u64)]) -> Vec<(u64, u64)> {
    end.iter()
        .map(|(upper, n)| {
            let before = start
                .iter()
                .find(|(u, _)| u == upper)
                .map_or(0, |(_, n)| *n);
            (*upper, n.saturating_sub(before))
        })
        .collect()
}

/// The `p` quantile of bucket counts in ms (infinite for the last bucket, over 1 s).
fn quantile_ms(counts: &[(u64, u64)], p: f64) -> Option<f64> {
    confab::sfu::delay::quantile_of(counts.iter().copied(), p).map(|us| match us {
        u64::MAX => f64::INFINITY,
        us => us as f64 / 1000.0,
    })
}

impl Target {
    /// confab's own forwarding delay counts (None for the baseline, which has none).
    async fn forward_delay(&self) -> Option<Result<DelayCounts, String>> {
        match self {
            Target::Confab(s) => Some(s.forward_delay().await),
            Target::Baseline(_) => None,
        }
    }

    fn cpu(&self) -> Option<f64> {
        match self {
            Target::Confab(s) => cpu_seconds(Path::new(&format!("/proc/{}/stat", s.pid()))),
            Target::Baseline(b) => b.cpu_seconds(),
        }
    }

    /// CPU seconds of each of confab's media threads (`confab-media*`), by thread name.
    fn media_cpu(&self) -> Vec<(String, f64)> {
        let Target::Confab(s) = self else {
            return vec![];
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", s.pid())) else {
            return vec![];
        };
        let mut v: Vec<(String, f64)> = tasks
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
                let comm = comm.trim();
                if !comm.starts_with("confab-media") {
                    return None;
                }
                Some((comm.to_string(), cpu_seconds(&dir.join("stat"))?))
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn rss_kib(&self) -> Option<u64> {
        match self {
            Target::Confab(s) => status_kib(s.pid(), "VmRSS"),
            Target::Baseline(_) => None,
        }
    }

    async fn connect(&self, room: &str, identity: &str, publish: bool) -> Result<Joined, String> {
        match self {
            Target::Confab(s) => s.connect(room, identity, publish).await,
            Target::Baseline(b) => Ok((b.connect(), vec![])),
        }
    }
}

/// A signalling link, and who was in the room when it joined (with their tracks).
type Joined = (Link, Vec<lk::ParticipantInfo>);

/// One row of the report.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub name: String,
    pub size: usize,
    /// Rooms of `size` run at once.
    pub rooms: usize,
    /// CPU % of one core of each media thread of confab.
    pub media_cpu_percent: Vec<f64>,
    pub seconds: f64,
    pub packets_per_s: f64,
    pub packets_per_cpu_s: f64,
    pub cpu_percent: f64,
    pub mbit_out: f64,
    pub delay_p50_ms: Option<f64>,
    pub delay_p99_ms: Option<f64>,
    /// The delay confab itself added (its own measurement: kernel arrival → forwarded copy
    /// sent, every 64th packet), p50/p99 over the window, and how many packets it measured.
    pub added_p50_ms: Option<f64>,
    pub added_p99_ms: Option<f64>,
    pub added_samples: u64,
    /// The same for audio alone (str0m does not pace audio: confab's processing alone).
    pub added_audio_p99_ms: Option<f64>,
    pub added_audio_samples: u64,
    pub loss_percent: f64,
    pub rss_idle_kib: Option<u64>,
    pub rss_kib: Option<u64>,
    pub receivers: u64,
    pub expected_receivers: u64,
    pub join_p50_ms: Option<u32>,
    /// The generator's own CPU use (% of one core): near 100 % it, not the server, is the
    /// bottleneck, and the delays it reports include its own queueing.
    pub generator_cpu_percent: f64,
    /// churn: participants that left, those of them that vanished without a word
    /// (`--vanish-every`), and how many confab still held after its timeouts (and how long it
    /// took to drop the rest).
    pub left: usize,
    pub vanished: usize,
    pub stuck: Option<u64>,
    pub stuck_wait_s: Option<f64>,
    pub errors: Vec<String>,
}

impl Row {
    fn header() -> String {
        "| scenario | N | pkts/s out | pkts per CPU-s | CPU % | media threads CPU % | Mbit/s out | delay p50/p99 ms | added by confab p50/p99 ms | audio alone p99 ms | loss % | RSS idle → loaded MiB | KiB per participant | receiving | generator CPU % |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|".into()
    }

    fn line(&self) -> String {
        let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
        let rss = match (self.rss_idle_kib, self.rss_kib) {
            (Some(a), Some(b)) => format!("{:.1} → {:.1}", a as f64 / 1024.0, b as f64 / 1024.0),
            _ => "-".into(),
        };
        let per = match (self.rss_idle_kib, self.rss_kib) {
            (Some(a), Some(b)) if self.size > 0 => format!(
                "{:.0}",
                b.saturating_sub(a) as f64 / (self.size * self.rooms.max(1)) as f64
            ),
            _ => "-".into(),
        };
        let added_ms = |v: f64| {
            if v.is_finite() {
                format!("{v:.2}")
            } else {
                "> 1000".into()
            }
        };
        let added = match (self.added_p50_ms, self.added_p99_ms) {
            (Some(a), Some(b)) => {
                format!(
                    "{}/{} ({} pkts)",
                    added_ms(a),
                    added_ms(b),
                    self.added_samples
                )
            }
            _ => "-".into(),
        };
        let added_audio = match self.added_audio_p99_ms {
            Some(p99) => format!("{} ({} pkts)", added_ms(p99), self.added_audio_samples),
            None => "-".into(),
        };
        let mut receiving = format!("{}/{}", self.receivers, self.expected_receivers);
        if let Some(j) = self.join_p50_ms {
            receiving.push_str(&format!(" (join→media p50 {j} ms)"));
        }
        let size = if self.rooms > 1 {
            format!("{}×{}", self.rooms, self.size)
        } else {
            self.size.to_string()
        };
        let threads = if self.media_cpu_percent.is_empty() {
            "-".to_string()
        } else {
            self.media_cpu_percent
                .iter()
                .map(|c| format!("{c:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        format!(
            "| {} | {} | {:.0} | {:.0} | {:.1} | {} | {:.1} | {}/{} | {} | {} | {:.2} | {} | {} | {} | {:.0} |",
            self.name,
            size,
            self.packets_per_s,
            self.packets_per_cpu_s,
            self.cpu_percent,
            threads,
            self.mbit_out,
            ms(self.delay_p50_ms),
            ms(self.delay_p99_ms),
            added,
            added_audio,
            self.loss_percent,
            rss,
            per,
            receiving,
            self.generator_cpu_percent,
        )
    }
}

struct Member {
    stop: watch::Sender<Stop>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

/// Joins one participant and starts its task.
async fn spawn_member(
    target: &Target,
    stats: &Arc<Stats>,
    room: &str,
    identity: String,
    plan: Plan,
) -> Result<Member, String> {
    let publish = plan.audio || plan.video;
    let (link, others) = target.connect(room, &identity, publish).await?;
    let p = Participant::new(
        identity,
        plan,
        stats.clone(),
        link,
        others,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
    )
    .await?;
    let (stop, rx) = watch::channel(Stop::Run);
    let task = tokio::spawn(p.run(rx));
    Ok(Member { stop, task })
}

async fn end_member(m: Member, stats: &Stats) {
    let _ = m.stop.send(Stop::Leave);
    match tokio::time::timeout(Duration::from_secs(5), m.task).await {
        Ok(Ok(Err(e))) => stats.error(e),
        Ok(Err(e)) => stats.error(format!("participant task: {e}")),
        _ => {}
    }
}

/// One measurement: a scenario at one size, with the options that shape it.
#[derive(Debug, Clone, Copy)]
struct Spec {
    scenario: Scenario,
    /// Participants per room (webinar: subscribers, besides the publisher).
    n: usize,
    rooms: usize,
    seconds: u64,
    churn_rate: f64,
    layer: Option<Layer>,
    /// Participants recorded per room.
    recordings: usize,
    /// churn: every K-th leaver vanishes without a word (0: none).
    vanish_every: usize,
}

impl Spec {
    /// Rooms run at once (the baseline has one).
    fn rooms(&self) -> usize {
        if self.scenario == Scenario::Baseline {
            1
        } else {
            self.rooms.max(1)
        }
    }

    /// confab's participant cap per room for this run: the room, two spare, and the vanished
    /// participants it still holds until its timeouts drop them (about 40 s each).
    fn room_capacity(&self) -> usize {
        let ghosts = if self.scenario == Scenario::Churn && self.vanish_every > 0 {
            (self.churn_rate / self.vanish_every as f64 * GHOST_GRACE.as_secs_f64()).ceil() as usize
        } else {
            0
        };
        self.n + 2 + ghosts
    }

    /// `webinar 4`, `meeting 2×3`: as the report's first two columns say it.
    fn label(&self) -> String {
        let scenario = match self.recordings {
            0 => format!("{:?}", self.scenario).to_lowercase(),
            k => format!("{:?}+{k}rec", self.scenario).to_lowercase(),
        };
        match self.rooms() {
            1 => format!("{scenario} {}", self.n),
            r => format!("{scenario} {r}×{}", self.n),
        }
    }

    fn room_name(&self, r: usize) -> String {
        if self.rooms() == 1 {
            "bench".to_string()
        } else {
            format!("bench-{r}")
        }
    }

    /// A publisher of audio and video, subscribed to everyone else.
    fn av(&self) -> Plan {
        Plan {
            audio: true,
            video: true,
            layer: self.layer.map(Layer::quality),
        }
    }

    /// What each participant of one room does, in join order, and how many of them must
    /// receive media.
    fn plans(&self) -> (Vec<Plan>, u64) {
        let (n, layer) = (self.n, self.layer.map(Layer::quality));
        let only = |audio, video| Plan {
            audio,
            video,
            layer,
        };
        match self.scenario {
            Scenario::Meeting | Scenario::Churn | Scenario::Baseline => {
                (vec![self.av(); n], n as u64)
            }
            Scenario::Webinar => {
                let mut v = vec![self.av()];
                v.extend(std::iter::repeat_n(only(false, false), n));
                (v, n as u64)
            }
            Scenario::Audio => (vec![only(true, false); n], n as u64),
            Scenario::Limit => (vec![], 0),
        }
    }
}

/// A run's participants, oldest first, each with the index of its room.
struct Crowd {
    members: std::collections::VecDeque<(Member, usize)>,
    /// Participants joined so far (names them: `p1`, `p2`, …).
    joined: usize,
    /// Participants that left so far, and those of them that vanished without a word (their
    /// tasks hold their sockets open, unread, until the run ends).
    left: usize,
    ghosts: Vec<Member>,
}

impl Crowd {
    /// Joins one more participant to room `r`; a failure is counted as an error of the run.
    async fn join(
        &mut self,
        target: &Target,
        stats: &Arc<Stats>,
        spec: &Spec,
        r: usize,
        plan: Plan,
    ) {
        self.joined += 1;
        let identity = format!("p{}", self.joined);
        match spawn_member(target, stats, &spec.room_name(r), identity, plan).await {
            Ok(m) => self.members.push_back((m, r)),
            Err(e) => stats.error(format!("join p{}: {e}", self.joined)),
        }
    }

    /// Fills every room, room by room, so each room's publisher comes first (webinar).
    async fn fill(target: &Target, stats: &Arc<Stats>, spec: &Spec, plans: &[Plan]) -> Crowd {
        let mut crowd = Crowd {
            members: std::collections::VecDeque::new(),
            joined: 0,
            left: 0,
            ghosts: Vec::new(),
        };
        for r in 0..spec.rooms() {
            for plan in plans {
                crowd.join(target, stats, spec, r, *plan).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
        crowd
    }

    /// churn: until `end`, the oldest participant leaves and a new one joins its room,
    /// `spec.churn_rate` times a second from `t0`.
    async fn churn(
        &mut self,
        target: &Target,
        stats: &Arc<Stats>,
        spec: &Spec,
        t0: Instant,
        end: Instant,
    ) {
        if spec.scenario != Scenario::Churn || spec.churn_rate <= 0.0 {
            return;
        }
        let every = Duration::from_secs_f64(1.0 / spec.churn_rate);
        let mut next = t0 + every;
        while next < end {
            tokio::time::sleep_until(next.into()).await;
            next += every;
            let mut r = 0;
            if let Some((old, room)) = self.members.pop_front() {
                self.left += 1;
                if spec.vanish_every > 0 && self.left % spec.vanish_every == 0 {
                    let _ = old.stop.send(Stop::Vanish);
                    self.ghosts.push(old);
                } else {
                    end_member(old, stats).await;
                }
                r = room;
            }
            self.join(target, stats, spec, r, spec.av()).await;
        }
    }

    async fn leave(self, stats: &Stats) {
        for (m, _) in self.members {
            end_member(m, stats).await;
        }
        // Dropping a ghost's stop sender ends its task, which closes its sockets.
        drop(self.ghosts);
    }

    /// How many participants of each room are still in it, by name.
    fn present(&self, rooms: usize) -> Vec<usize> {
        let mut v = vec![0; rooms];
        for (_, r) in &self.members {
            if let Some(n) = v.get_mut(*r) {
                *n += 1;
            }
        }
        v
    }
}

/// How long after the window the run waits for confab to drop vanished participants: its
/// signalling idle timeout (20 s) and departure timeout (20 s), and some slack.
const GHOST_GRACE: Duration = Duration::from_secs(60);

/// churn: waits (up to [`GHOST_GRACE`]) until confab holds no more participants in each room
/// than are really there; returns how many it still holds beyond that (stuck: left or vanished,
/// yet still in the room) and how long the wait took. `None` for the other scenarios.
async fn stuck_after_grace(
    server: &Server,
    crowd: &Crowd,
    spec: &Spec,
) -> Result<Option<(u64, Duration)>, String> {
    if spec.scenario != Scenario::Churn {
        return Ok(None);
    }
    let present = crowd.present(spec.rooms());
    let started = Instant::now();
    loop {
        let mut extra = 0u64;
        for (r, live) in present.iter().enumerate() {
            let held = server.participants(&spec.room_name(r)).await?;
            extra += held.saturating_sub(*live) as u64;
        }
        if extra == 0 || started.elapsed() >= GHOST_GRACE {
            return Ok(Some((extra, started.elapsed())));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until `expected` participants receive media (or 20 s), then 2 s for layers and
/// bandwidth estimates to settle; returns how many received.
async fn settle(stats: &Stats, spec: &Spec, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    while stats.receiving.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let receivers = stats.receiving.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Ok(mut j) = stats.join_ms.lock() {
        if spec.scenario == Scenario::Churn {
            j.clear();
        }
    }
    receivers
}

/// The counters read at one end of the measuring window.
struct Reading {
    /// confab's forwarding-delay counts (None for the baseline).
    added: Option<Result<DelayCounts, String>>,
    /// CPU seconds of the target, of this process (the generator), of each media thread.
    cpu: Option<f64>,
    generator: Option<f64>,
    media: Vec<(String, f64)>,
}

impl Reading {
    fn counters(target: &Target) -> (Option<f64>, Option<f64>, Vec<(String, f64)>) {
        let own = cpu_seconds(Path::new("/proc/self/stat"));
        (target.cpu(), own, target.media_cpu())
    }

    /// At the start: confab's delay counts first, then the CPU counters.
    async fn start(target: &Target) -> Reading {
        let added = target.forward_delay().await;
        let (cpu, generator, media) = Reading::counters(target);
        Reading {
            added,
            cpu,
            generator,
            media,
        }
    }

    /// At the end: the CPU counters first, then confab's delay counts.
    async fn end(target: &Target) -> Reading {
        let (cpu, generator, media) = Reading::counters(target);
        let added = target.forward_delay().await;
        Reading {
            added,
            cpu,
            generator,
            media,
        }
    }
}

/// What was measured, besides the shared counters, for [`report`].
struct Window {
    secs: f64,
    start: Reading,
    end: Reading,
    rss_idle: Option<u64>,
    rss: Option<u64>,
    receivers: u64,
    expected: u64,
    /// churn: participants that vanished, and (when any did) those confab still held after
    /// its timeouts, with how long it took to drop the others.
    left: usize,
    vanished: usize,
    stuck: Option<(u64, Duration)>,
}

/// Runs one scenario at one size against `target` and measures it.
async fn run_one(target: Target, spec: Spec) -> Row {
    let stats = Arc::new(Stats::default());
    let rss_idle = target.rss_kib();
    let (plans, expected) = spec.plans();
    let expected = expected * spec.rooms() as u64;
    let mut crowd = Crowd::fill(&target, &stats, &spec, &plans).await;
    let receivers = settle(&stats, &spec, expected).await;
    if let (Target::Confab(s), true) = (&target, spec.recordings > 0) {
        if let Err(e) = s.record(&spec).await {
            stats.error(format!("recording: {e}"));
        }
        // The recordings' files start (and their first keyframes arrive) before measuring.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }

    let start = Reading::start(&target).await;
    let t0 = Instant::now();
    stats.measuring.store(true, Ordering::Relaxed);
    // For profilers outside (scripts/callgrind.sh zeroes its counters here and dumps them at
    // the end): the window's bounds, on stderr.
    eprintln!("confab-bench: {}: window starts", spec.label());
    let end = t0 + Duration::from_secs(spec.seconds);
    crowd.churn(&target, &stats, &spec, t0, end).await;
    tokio::time::sleep_until(end.into()).await;
    stats.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "confab-bench: {}: window ends: {:.1} s, {} datagrams sent to the server",
        spec.label(),
        secs,
        stats.sent_datagrams.load(Ordering::Relaxed)
    );
    let end = Reading::end(&target).await;
    let rss = target.rss_kib();
    let (left, vanished) = (crowd.left, crowd.ghosts.len());
    let stuck = match &target {
        Target::Confab(s) => stuck_after_grace(s, &crowd, &spec)
            .await
            .unwrap_or_else(|e| {
                stats.error(format!("counting stuck participants: {e}"));
                None
            }),
        Target::Baseline(_) => None,
    };
    crowd.leave(&stats).await;
    match target {
        Target::Confab(s) => s.stop(),
        Target::Baseline(b) => b.stop(),
    }
    let window = Window {
        secs,
        start,
        end,
        rss_idle,
        rss,
        receivers,
        expected,
        left,
        vanished,
        stuck,
    };
    report(&spec, &stats, window)
}

/// CPU % of one core of each media thread over the window, by thread name.
fn media_cpu_percent(w: &Window) -> Vec<f64> {
    w.end
        .media
        .iter()
        .map(|(name, b)| {
            let a = w
                .start
                .media
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0.0, |(_, a)| *a);
            (b - a) / w.secs * 100.0
        })
        .collect()
}

/// The window's delays added by confab, all packets and audio alone: the counts at its end
/// less those at its start (none for the baseline, or when `/api/status` failed).
fn added_counts(w: &mut Window, stats: &Stats) -> DelayCounts {
    match (w.start.added.take(), w.end.added.take()) {
        (Some(Ok(a)), Some(Ok(b))) => DelayCounts {
            all: window_counts(&a.all, &b.all),
            audio: window_counts(&a.audio, &b.audio),
        },
        (Some(Err(e)), _) | (_, Some(Err(e))) => {
            stats.error(format!("forwarding delay: {e}"));
            DelayCounts::default()
        }
        _ => DelayCounts::default(),
    }
}

/// The row of one run from its counters.
fn report(spec: &Spec, stats: &Stats, mut w: Window) -> Row {
    let secs = w.secs;
    let cpu = match (w.start.cpu, w.end.cpu) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    let mut generator = match (w.start.generator, w.end.generator) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    if spec.scenario == Scenario::Baseline {
        generator -= cpu; // the baseline's thread is in this process
    }
    let packets = stats.packets.load(Ordering::Relaxed) as f64;
    let sorted = |m: &Mutex<Vec<u32>>| {
        let mut v = m.lock().map(|v| v.clone()).unwrap_or_default();
        v.sort_unstable();
        v
    };
    let (delays, joins) = (sorted(&stats.delays_us), sorted(&stats.join_ms));
    let DelayCounts {
        all: added,
        audio: added_audio,
    } = added_counts(&mut w, stats);
    let samples = |c: &[(u64, u64)]| c.iter().map(|(_, n)| n).sum::<u64>();
    let expected_frames = stats.frames_expected.load(Ordering::Relaxed) as f64;
    let received_frames = stats.frames_received.load(Ordering::Relaxed) as f64;
    Row {
        name: format!("{:?}", spec.scenario).to_lowercase(),
        size: spec.n,
        rooms: spec.rooms(),
        media_cpu_percent: media_cpu_percent(&w),
        seconds: secs,
        packets_per_s: packets / secs,
        packets_per_cpu_s: if cpu > 0.0 { packets / cpu } else { 0.0 },
        cpu_percent: cpu / secs * 100.0,
        mbit_out: stats.bytes.load(Ordering::Relaxed) as f64 * 8.0 / secs / 1e6,
        delay_p50_ms: percentile(&delays, 0.5).map(|v| f64::from(v) / 1000.0),
        delay_p99_ms: percentile(&delays, 0.99).map(|v| f64::from(v) / 1000.0),
        added_p50_ms: quantile_ms(&added, 0.5),
        added_p99_ms: quantile_ms(&added, 0.99),
        added_samples: samples(&added),
        added_audio_p99_ms: quantile_ms(&added_audio, 0.99),
        added_audio_samples: samples(&added_audio),
        loss_percent: if expected_frames > 0.0 {
            (1.0 - received_frames / expected_frames).max(0.0) * 100.0
        } else {
            0.0
        },
        rss_idle_kib: w.rss_idle,
        rss_kib: w.rss,
        receivers: w.receivers,
        expected_receivers: w.expected,
        join_p50_ms: if spec.scenario == Scenario::Churn {
            percentile(&joins, 0.5)
        } else {
            None
        },
        generator_cpu_percent: generator / secs * 100.0,
        left: w.left,
        vanished: w.vanished,
        stuck: w.stuck.map(|(n, _)| n),
        stuck_wait_s: w.stuck.map(|(_, d)| d.as_secs_f64()),
        errors: stats.errors.lock().map(|v| v.clone()).unwrap_or_default(),
    }
}

fn default_sizes(s: Scenario) -> Vec<usize> {
    match s {
        Scenario::Meeting | Scenario::Baseline => vec![3, 6, 10],
        Scenario::Webinar => vec![10, 30, 60],
        Scenario::Audio => vec![5, 10, 20],
        Scenario::Churn => vec![4, 8, 12],
        Scenario::Limit => vec![1],
    }
}

// ------------------------------------------------------------------------------ the command

/// Where confab, the limit and the baseline run, and which confab.
struct Setup {
    /// The core of the limit and the baseline (`None`: not pinned).
    server_core: Option<usize>,
    placement: Placement,
    exe: PathBuf,
}

impl Setup {
    /// Reads the placement from the arguments, pins this process (the generator) and finds
    /// the confab to start.
    fn new(args: &BenchArgs) -> Result<Setup, String> {
        let placement = Placement {
            cores: (!args.no_pin).then(|| {
                args.server_cores
                    .clone()
                    .unwrap_or_else(|| args.server_core.to_string())
            }),
            media_threads: args.media_threads,
        };
        if !args.no_pin {
            let cores = parse_cores(&args.generator_cores);
            if cores.is_empty() || !pin_current_thread(&cores) {
                eprintln!(
                    "confab-bench: cannot pin the generator to cores {}",
                    args.generator_cores
                );
            }
        }
        let exe = match &args.confab {
            Some(p) => p.clone(),
            None => sibling_confab().map_err(|e| format!("where is confab? {e}"))?,
        };
        Ok(Setup {
            server_core: (!args.no_pin).then_some(args.server_core),
            placement,
            exe,
        })
    }

    /// Starts the target of one run (a confab for `n` participants, or the baseline) and
    /// measures it.
    async fn measure(&self, spec: Spec) -> Result<Row, String> {
        let target = if spec.scenario == Scenario::Baseline {
            Target::Baseline(baseline::Baseline::start(self.server_core)?)
        } else {
            Target::Confab(Server::start(&self.exe, &self.placement, spec.room_capacity()).await?)
        };
        Ok(run_one(target, spec).await)
    }
}

/// The `confab` built next to this executable (`target/<profile>/confab`).
fn sibling_confab() -> std::io::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let exe = me.with_file_name("confab");
    if exe.is_file() {
        Ok(exe)
    } else {
        Err(std::io::Error::other(format!(
            "no {} (build it with `cargo build --release --bin confab`, or pass --confab PATH)",
            exe.display()
        )))
    }
}

fn scenarios(args: &BenchArgs) -> Vec<Scenario> {
    if args.scenarios.is_empty() {
        vec![
            Scenario::Limit,
            Scenario::Baseline,
            Scenario::Meeting,
            Scenario::Webinar,
            Scenario::Audio,
            Scenario::Churn,
        ]
    } else {
        args.scenarios.clone()
    }
}

/// The rows printed so far and what the closing ratios need.
#[derive(Default)]
struct Summary {
    limit_pps: Option<f64>,
    baseline_pps: Option<f64>,
    rows: Vec<Row>,
    failed: bool,
}

impl Summary {
    /// Prints a row (the table's header before the first) and keeps it.
    fn add(&mut self, row: Row, require_media: bool) {
        if self.rows.is_empty() {
            println!("{}", Row::header());
        }
        println!("{}", row.line());
        if let (Some(stuck), Some(wait)) = (row.stuck, row.stuck_wait_s) {
            println!(
                "  {} {}: {} left, {} of them vanished without leaving; {stuck} still held {wait:.1} s after the window (stuck)",
                row.name, row.size, row.left, row.vanished
            );
            self.failed |= stuck > 0;
        }
        for e in row.errors.iter().take(5) {
            eprintln!("  {}: {e}", row.name);
        }
        if row.name == "baseline" {
            self.baseline_pps = Some(self.baseline_pps.unwrap_or(0.0).max(row.packets_per_cpu_s));
        }
        if row.receivers < row.expected_receivers {
            self.failed |= require_media;
        }
        self.rows.push(row);
    }

    /// confab's best packets per CPU-second, and as ratios to the limit and the baseline.
    fn print_ratios(&self) {
        let best = self
            .rows
            .iter()
            .filter(|r| r.name != "baseline")
            .map(|r| r.packets_per_cpu_s)
            .fold(0.0, f64::max);
        if best <= 0.0 {
            return;
        }
        println!("\nconfab, best packets per CPU-second: {best:.0}");
        if let Some(l) = self.limit_pps {
            println!(
                "  = {:.1} % of the limit ({l:.0} packets/s per core)",
                best / l * 100.0
            );
        }
        if let Some(b) = self.baseline_pps.filter(|b| *b > 0.0) {
            println!(
                "  = {:.2}× the baseline ({b:.0} packets per CPU-second)",
                best / b
            );
        }
    }
}

/// Runs every scenario at every size; prints the table and the ratios.
fn run(args: BenchArgs) -> ExitCode {
    let machine = machine_line(&args);
    let setup = match Setup::new(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("confab-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("confab-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    clock_us();
    println!("{machine}");
    let mut summary = Summary::default();
    for scenario in scenarios(&args) {
        if scenario == Scenario::Limit {
            let r = limit::run(setup.server_core, Duration::from_secs(2));
            println!("{r}");
            summary.limit_pps = Some(r.best());
            continue;
        }
        let sizes = if args.sizes.is_empty() {
            default_sizes(scenario)
        } else {
            args.sizes.clone()
        };
        for n in sizes {
            let spec = Spec {
                scenario,
                n,
                rooms: args.rooms,
                seconds: args.seconds,
                churn_rate: args.churn_rate,
                layer: args.layer,
                recordings: args.recordings,
                vanish_every: args.vanish_every,
            };
            match rt.block_on(setup.measure(spec)) {
                Ok(row) => summary.add(row, args.require_media),
                Err(e) => {
                    eprintln!("confab-bench: {scenario:?} {n}: {e}");
                    summary.failed = true;
                }
            }
        }
    }
    summary.print_ratios();
    if summary.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn machine_line(args: &BenchArgs) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let server = if args.no_pin {
        "any core".to_string()
    } else {
        format!(
            "cores {}",
            args.server_cores
                .clone()
                .unwrap_or_else(|| args.server_core.to_string())
        )
    };
    format!(
        "confab-bench: {cpu}, {} CPUs; server on {server} ({} media threads), generator on {}; {} rooms per run; {} s per run;{} load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.media_threads
            .map_or_else(|| "default".to_string(), |n| n.to_string()),
        if args.no_pin { "any core" } else { args.generator_cores.as_str() },
        args.rooms,
        args.seconds,
        args.layer.map_or(String::new(), |l| format!(
            " subscribers ask for the {} layer;",
            format!("{l:?}").to_lowercase()
        )),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}
