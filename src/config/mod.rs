//! Configuration: layered TOML files and environment variables, parsed into a typed, validated
//! [`Config`] before anything opens a file or binds a port.
//!
//! Layers, later wins: `/usr/lib/confab/confab.toml` → `/etc/confab/confab.toml` → `./confab.toml`
//! (or only the file given with `--config` / `CONFAB_CONFIG`) → environment. The LiveKit names users
//! already keep in `.env` files are accepted (`LIVEKIT_API_KEY`, `LIVEKIT_API_SECRET`, `LIVEKIT_URL`,
//! `TOKEN_EXPIRY_SECONDS`) beside ours (`CONFAB_*`). Every problem is collected and reported at once,
//! each with the key or variable that caused it.

mod reader;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reader::Reader;

/// Files read when no `--config` is given, lowest priority first. Missing ones are skipped.
pub const DEFAULT_FILES: &[&str] = &[
    "/usr/lib/confab/confab.toml",
    "/etc/confab/confab.toml",
    "confab.toml",
];

/// Default ports. HTTPS/WebSocket uses LiveKit's 7880 so an existing `LIVEKIT_URL` keeps working;
/// the appliance's `/etc/confab/confab.toml` sets 443 and 80.
pub const DEFAULT_HTTPS_PORT: u16 = 7880;
pub const DEFAULT_HTTP_PORT: u16 = 7879;
pub const DEFAULT_TCP_PORT: u16 = 7881;
pub const DEFAULT_UDP_PORT: u16 = 7882;
/// LiveKit's default token lifetime (6 h).
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(6 * 3600);
/// LiveKit refuses API secrets shorter than this; so do we.
pub const MIN_SECRET_LEN: usize = 32;

/// The validated configuration. Built only by [`Config::load`] / [`Config::from_layers`].
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub log_level: String,
    /// URL clients use to reach this server (`LIVEKIT_URL`), if set.
    pub public_url: Option<String>,
    pub http: HttpConfig,
    pub rtc: RtcConfig,
    pub auth: AuthConfig,
    pub update: UpdateConfig,
    pub webhook: WebhookConfig,
    pub metrics: MetricsConfig,
    pub recording: RecordingConfig,
    pub turn: TurnConfig,
    /// Where the settings came from (files and environment variables), for the startup log.
    pub sources: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub bind: IpAddr,
    pub https_port: u16,
    /// Plain-HTTP port that only redirects to HTTPS (and serves `/ca.crt` and health); `None` = off.
    pub http_port: Option<u16>,
    pub tls: TlsSource,
    /// How long shutdown waits for open connections before closing them.
    pub shutdown_grace: Duration,
    /// Reverse proxies whose `X-Forwarded-For` names the client (for per-client limits).
    pub trusted_proxies: Vec<crate::net::IpNet>,
    /// Open HTTP(S) connections at most, in all (new ones beyond are closed at once).
    pub max_connections: usize,
    /// Open HTTP(S) connections at most from one client address (trusted proxies exempt).
    pub max_connections_per_address: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A local CA and leaf certificate generated and kept in `<state_dir>/tls/`.
    LocalCa,
    /// Certificate chain and private key in PEM files supplied by the operator.
    Files { cert: PathBuf, key: PathBuf },
}

#[derive(Debug, Clone)]
pub struct RtcConfig {
    pub udp_port: u16,
    pub tcp_port: u16,
    /// Participants one room may hold (hidden ones not counted); a join beyond is refused.
    pub max_participants: u32,
    /// Rooms this server hosts at once; creating one more is refused.
    pub max_rooms: u32,
    /// An empty room is closed after this long.
    pub empty_timeout: Duration,
    /// An address to advertise to clients besides the bound ones: the public address of a host
    /// behind 1:1 NAT (cloud VMs), which forwards to this host's media ports.
    pub node_ip: Option<IpAddr>,
    /// Media threads (shards), each with its own SFU and ports: thread `i` receives media on
    /// `udp_port + i` (UDP) and `tcp_port + i` (ICE-TCP). `rtc.media_threads = 0` or unset: one
    /// per available core. Always ≥ 1 here.
    pub media_threads: usize,
    /// Whether `media_threads` was chosen from the core count (not configured).
    pub media_threads_auto: bool,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// API key → secret pairs given by the operator. Empty means: use (or generate) the device's
    /// own pair in the state directory.
    pub keys: BTreeMap<String, Secret>,
    pub token_ttl: Duration,
}

/// Recordings (LiveKit's egress API, written by confab itself: `docs/recording.md`).
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// Recordings stop, and new ones are refused, when the disk that holds the recordings (and
    /// the state database) has less free space than this.
    pub min_free_bytes: u64,
}

/// The default disk reserve for recordings: 300 MB.
pub const DEFAULT_RECORDING_MIN_FREE: u64 = 300_000_000;

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            min_free_bytes: DEFAULT_RECORDING_MIN_FREE,
        }
    }
}

/// The embedded TURN server (LiveKit's `turn.*` names; `docs/self-hosting.md`, "Firewalls").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnConfig {
    pub enabled: bool,
    /// TURN over UDP; `None`: off (`turn.udp_port = 0`).
    pub udp_port: Option<u16>,
    /// TURN over TLS (plain TCP with `external_tls`); `None`: off. The HTTPS port always
    /// accepts TURN over TLS as well.
    pub tls_port: Option<u16>,
    /// The host name clients are given for the TURN servers (the certificate must name it for
    /// TLS); unset: the host the client used to reach confab.
    pub domain: Option<String>,
    /// TLS ends at a load balancer in front of `tls_port`, which forwards plain TCP here.
    pub external_tls: bool,
    /// Whether a port was set explicitly (then failing to bind it stops start-up; the defaults
    /// are skipped with a warning).
    pub ports_configured: bool,
}

pub const DEFAULT_TURN_UDP_PORT: u16 = 3478;
pub const DEFAULT_TURN_TLS_PORT: u16 = 5349;

impl Default for TurnConfig {
    fn default() -> Self {
        TurnConfig {
            enabled: true,
            udp_port: Some(DEFAULT_TURN_UDP_PORT),
            tls_port: Some(DEFAULT_TURN_TLS_PORT),
            domain: None,
            external_tls: false,
            ports_configured: false,
        }
    }
}

/// `GET /metrics` (Prometheus).
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// Serve it to anyone who reaches the HTTPS port, without a token or admin session (a
    /// trusted network only).
    pub open: bool,
}

#[derive(Debug, Clone)]
pub struct UpdateConfig {
    /// Where releases are published: `https://…/` or `file:///…/` (a directory holding
    /// `manifest.json`, `manifest.json.minisig` and the artifacts it names).
    pub url: Option<String>,
    pub check: bool,
    pub check_interval: Duration,
    /// This device's board; a release must name the same `compatible` string.
    pub board: String,
    pub bootloader: BootloaderKind,
    /// The EFI system partition (systemd-boot).
    pub esp_dir: PathBuf,
    /// The Raspberry Pi's first FAT partition, holding `autoboot.txt`.
    pub boot_dir: PathBuf,
    /// Directory where the slots appear by partition label (`root-a`, `root-b`).
    pub slot_dir: PathBuf,
    /// minisign public keys a release may be signed with (current and next, for rotation).
    pub trusted_keys: Vec<PathBuf>,
    /// The update agent's own state (atomic writes; not sled).
    pub state_file: PathBuf,
    /// Extra CA certificate (PEM) to trust for an HTTPS update server, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The update agent's API socket.
    pub socket: PathBuf,
}

/// LiveKit-compatible webhooks (`webhook:` in LiveKit's config): every event is POSTed to each URL,
/// signed with an API key's secret.
#[derive(Debug, Clone, Default)]
pub struct WebhookConfig {
    /// `http://` or `https://` receivers; empty: webhooks off.
    pub urls: Vec<String>,
    /// The API key whose secret signs the requests; `None`: the first key (the device's own key,
    /// after a rotation the new one).
    pub api_key: Option<String>,
}

/// Which bootloader the device boots with; chosen once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootloaderKind {
    /// No A/B slots (development, containers): updates are reported but not installed.
    None,
    SystemdBoot,
    RpiTryboot,
    /// U-Boot boot counting in the U-Boot environment on `boot_dir`.
    Uboot,
    /// A named fake over plain files, for tests.
    Fake,
}

impl BootloaderKind {
    pub fn name(self) -> &'static str {
        match self {
            BootloaderKind::None => "none",
            BootloaderKind::SystemdBoot => "systemd-boot",
            BootloaderKind::RpiTryboot => "rpi-tryboot",
            BootloaderKind::Uboot => "u-boot",
            BootloaderKind::Fake => "fake",
        }
    }
}

/// A secret string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One problem with the configuration: where it is (key or variable) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// All problems found, reported together.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "invalid configuration ({n} problem{}):",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Environment variables as a map, so tests can pass their own instead of the process's.
pub type Env = BTreeMap<String, String>;

/// The process environment, keeping only the variables confab reads.
pub fn process_env() -> Env {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("CONFAB_") || reader::LIVEKIT_VARS.contains(&k.as_str()))
        .collect()
}

impl Config {
    /// Reads `explicit` (only that file) or the [`DEFAULT_FILES`] that exist, then `env`.
    pub fn load(explicit: Option<&Path>, env: &Env) -> Result<Config, ConfigErrors> {
        let mut layers = Vec::new();
        let mut errors = Vec::new();
        let paths: Vec<PathBuf> = match explicit {
            Some(p) => vec![p.to_path_buf()],
            None => DEFAULT_FILES
                .iter()
                .map(PathBuf::from)
                .filter(|p| p.exists())
                .collect(),
        };
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => layers.push((path.display().to_string(), text)),
                Err(e) => errors.push(ConfigError {
                    key: path.display().to_string(),
                    message: format!("cannot read config file: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Config::from_layers(&layers, env)
    }

    /// Parses `(origin, toml text)` layers, lowest priority first, then `env`.
    pub fn from_layers(layers: &[(String, String)], env: &Env) -> Result<Config, ConfigErrors> {
        let mut r = Reader::new(env);
        for (origin, text) in layers {
            r.add_file(origin, text);
        }
        let config = Config::read(&mut r);
        r.finish(config)
    }

    fn read(r: &mut Reader) -> Config {
        let state_dir = r.path("state_dir", &["CONFAB_STATE_DIR"]);
        let log_level = r.log_level("log_level", &["CONFAB_LOG_LEVEL"]);
        let public_url = r.url(
            "public_url",
            &["CONFAB_PUBLIC_URL", "LIVEKIT_URL"],
            &["https", "wss", "http", "ws"],
        );

        let bind = r.ip("http.bind", &["CONFAB_BIND"]);
        let https_port = r.port("http.https_port", &["CONFAB_HTTPS_PORT"], false);
        let http_port = r.port("http.http_port", &["CONFAB_HTTP_PORT"], true);
        let cert = r.path("http.tls_cert", &["CONFAB_TLS_CERT"]);
        let key = r.path("http.tls_key", &["CONFAB_TLS_KEY"]);
        let grace = r.seconds(
            "http.shutdown_grace_seconds",
            &["CONFAB_SHUTDOWN_GRACE_SECONDS"],
            1..=300,
        );
        let trusted_proxies = r.ip_nets("http.trusted_proxies", &["CONFAB_TRUSTED_PROXIES"]);
        let max_connections = r.u64_in(
            "http.max_connections",
            &["CONFAB_MAX_CONNECTIONS"],
            16..=1_000_000,
        );
        let max_connections_per_address = r.u64_in(
            "http.max_connections_per_address",
            &["CONFAB_MAX_CONNECTIONS_PER_ADDRESS"],
            4..=1_000_000,
        );
        let udp_port = r.port("rtc.udp_port", &["CONFAB_UDP_PORT"], false);
        let node_ip = r.ip("rtc.node_ip", &["CONFAB_NODE_IP"]);
        let tcp_port = r.port("rtc.tcp_port", &["CONFAB_TCP_PORT"], false);
        let media_threads = r.u64_in("rtc.media_threads", &["CONFAB_MEDIA_THREADS"], 0..=1024);
        let max_participants = r.u64_in(
            "rtc.max_participants",
            &["CONFAB_MAX_PARTICIPANTS"],
            1..=10_000,
        );
        let max_rooms = r.u64_in("rtc.max_rooms", &["CONFAB_MAX_ROOMS"], 1..=10_000);
        let empty_timeout = r.seconds(
            "rtc.empty_timeout_seconds",
            &["CONFAB_EMPTY_TIMEOUT_SECONDS"],
            0..=7 * 86_400,
        );
        let keys = r.api_keys();
        let token_ttl = r.seconds(
            "auth.token_ttl_seconds",
            &["TOKEN_EXPIRY_SECONDS", "CONFAB_TOKEN_TTL_SECONDS"],
            60..=30 * 86_400,
        );
        let state_dir = state_dir.unwrap_or_else(|| PathBuf::from("data"));
        let update = Config::read_update(r, &state_dir);
        let metrics = MetricsConfig {
            open: r
                .bool("metrics.open", &["CONFAB_METRICS_OPEN"])
                .unwrap_or(false),
        };
        let https_port = https_port.unwrap_or(DEFAULT_HTTPS_PORT);
        let http_port = match http_port {
            Some(0) => None,
            Some(p) => Some(p),
            None => Some(DEFAULT_HTTP_PORT),
        };
        let udp_port = udp_port.unwrap_or(DEFAULT_UDP_PORT);
        let tcp_port = tcp_port.unwrap_or(DEFAULT_TCP_PORT);
        let (media_threads, media_threads_auto) =
            Config::check_ports(r, https_port, http_port, udp_port, tcp_port, media_threads);
        let tls = Config::tls_source(r, cert, key);
        let webhook = Config::read_webhook(r, &keys);
        let recording = RecordingConfig {
            min_free_bytes: r
                .u64_in(
                    "recording.min_free_bytes",
                    &["CONFAB_RECORDING_MIN_FREE_BYTES"],
                    0..=u64::MAX / 2,
                )
                .unwrap_or(DEFAULT_RECORDING_MIN_FREE),
        };

        let turn = Config::read_turn(r);

        Config {
            update,
            webhook,
            metrics,
            recording,
            turn,
            state_dir,
            log_level: log_level.unwrap_or_else(|| "info".to_string()),
            public_url,
            http: HttpConfig {
                bind: bind.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
                https_port,
                http_port,
                tls,
                shutdown_grace: grace.unwrap_or(Duration::from_secs(10)),
                trusted_proxies: trusted_proxies.unwrap_or_default(),
                max_connections: max_connections.unwrap_or(2048) as usize,
                max_connections_per_address: max_connections_per_address.unwrap_or(256) as usize,
            },
            rtc: RtcConfig {
                udp_port,
                tcp_port,
                max_participants: max_participants.unwrap_or(100) as u32,
                max_rooms: max_rooms.unwrap_or(100) as u32,
                empty_timeout: empty_timeout.unwrap_or(Duration::from_secs(300)),
                node_ip,
                media_threads,
                media_threads_auto,
            },
            auth: AuthConfig {
                keys,
                token_ttl: token_ttl.unwrap_or(DEFAULT_TOKEN_TTL),
            },
            sources: r.sources(),
        }
    }

    /// The `[turn]` table.
    fn read_turn(r: &mut Reader) -> TurnConfig {
        let enabled = r.bool("turn.enabled", &["CONFAB_TURN_ENABLED"]);
        let udp = r.port("turn.udp_port", &["CONFAB_TURN_UDP_PORT"], true);
        let tls = r.port("turn.tls_port", &["CONFAB_TURN_TLS_PORT"], true);
        let domain = r.word("turn.domain", &["CONFAB_TURN_DOMAIN"]);
        let external_tls = r.bool("turn.external_tls", &["CONFAB_TURN_EXTERNAL_TLS"]);
        let port = |p: Option<u16>, default: u16| match p {
            Some(0) => None,
            Some(p) => Some(p),
            None => Some(default),
        };
        TurnConfig {
            enabled: enabled.unwrap_or(true),
            udp_port: port(udp, DEFAULT_TURN_UDP_PORT),
            tls_port: port(tls, DEFAULT_TURN_TLS_PORT),
            domain,
            external_tls: external_tls.unwrap_or(false),
            ports_configured: udp.is_some() || tls.is_some(),
        }
    }

    /// The `[update]` table; paths default beside `state_dir`.
    fn read_update(r: &mut Reader, state_dir: &Path) -> UpdateConfig {
        let update_url = r.url("update.url", &["CONFAB_UPDATE_URL"], &["https", "file"]);
        let update_check = r.update_check();
        let check_interval = r.seconds(
            "update.check_interval_seconds",
            &["CONFAB_UPDATE_CHECK_INTERVAL_SECONDS"],
            60..=7 * 86_400,
        );
        let board = r.word("update.board", &["CONFAB_BOARD"]);
        let bootloader = r.choice(
            "update.bootloader",
            &["CONFAB_BOOTLOADER"],
            &[
                ("none", BootloaderKind::None),
                ("systemd-boot", BootloaderKind::SystemdBoot),
                ("rpi-tryboot", BootloaderKind::RpiTryboot),
                ("u-boot", BootloaderKind::Uboot),
                ("fake", BootloaderKind::Fake),
            ],
        );
        let esp_dir = r.path("update.esp_dir", &["CONFAB_ESP_DIR"]);
        let boot_dir = r.path("update.boot_dir", &["CONFAB_BOOT_DIR"]);
        let slot_dir = r.path("update.slot_dir", &["CONFAB_SLOT_DIR"]);
        let trusted_keys = r.path_list("update.trusted_keys", &["CONFAB_UPDATE_KEYS"]);
        let update_state = r.path("update.state_file", &["CONFAB_UPDATE_STATE_FILE"]);
        let update_ca = r.path("update.ca_file", &["CONFAB_UPDATE_CA"]);
        let update_socket = r.path("update.socket", &["CONFAB_UPDATE_SOCKET"]);
        UpdateConfig {
            url: update_url,
            check: update_check.unwrap_or(true),
            check_interval: check_interval.unwrap_or(Duration::from_secs(3600)),
            board: board.unwrap_or_else(|| "dev".to_string()),
            bootloader: bootloader.unwrap_or(BootloaderKind::None),
            esp_dir: esp_dir.unwrap_or_else(|| PathBuf::from("/efi")),
            boot_dir: boot_dir.unwrap_or_else(|| PathBuf::from("/boot/firmware")),
            slot_dir: slot_dir.unwrap_or_else(|| PathBuf::from("/dev/disk/by-partlabel")),
            trusted_keys: trusted_keys
                .unwrap_or_else(|| vec![PathBuf::from("/usr/lib/confab/keys/release.pub")]),
            state_file: update_state.unwrap_or_else(|| state_dir.join("update-state.json")),
            ca_file: update_ca,
            socket: update_socket.unwrap_or_else(|| PathBuf::from("/run/confab/update.sock")),
        }
    }

    /// The `[webhook]` table. A signing key must be one of the configured keys; with the device's
    /// own keys (unknown until `confab serve` reads them) `webhook::Notifier::start` checks it.
    fn read_webhook(r: &mut Reader, keys: &BTreeMap<String, Secret>) -> WebhookConfig {
        let urls = r.webhook_urls("webhook.urls", &["CONFAB_WEBHOOK_URLS"]);
        let api_key = r.word("webhook.api_key", &["CONFAB_WEBHOOK_API_KEY"]);
        if let Some(k) = &api_key {
            if !keys.is_empty() && !keys.contains_key(k) {
                let names: Vec<&str> = keys.keys().map(String::as_str).collect();
                r.error(
                    "webhook.api_key",
                    format!(
                        "{k:?} is not one of the API keys ({}); webhooks must be signed with one \
                         of them",
                        names.join(", ")
                    ),
                );
            }
        }
        WebhookConfig {
            urls: urls.unwrap_or_default(),
            api_key,
        }
    }

    /// `http.tls_cert` and `http.tls_key`: both or neither (the local CA).
    fn tls_source(r: &mut Reader, cert: Option<PathBuf>, key: Option<PathBuf>) -> TlsSource {
        match (cert, key) {
            (None, None) => TlsSource::LocalCa,
            (Some(cert), Some(key)) => {
                r.check_file_exists("http.tls_cert", &cert);
                r.check_file_exists("http.tls_key", &key);
                TlsSource::Files { cert, key }
            }
            (Some(_), None) => {
                r.error("http.tls_key", "is required when http.tls_cert is set");
                TlsSource::LocalCa
            }
            (None, Some(_)) => {
                r.error("http.tls_cert", "is required when http.tls_key is set");
                TlsSource::LocalCa
            }
        }
    }

    /// Checks the ports against each other (and the media threads' ports); the number of media
    /// threads and whether it was chosen automatically.
    fn check_ports(
        r: &mut Reader,
        https_port: u16,
        http_port: Option<u16>,
        udp_port: u16,
        tcp_port: u16,
        media_threads: Option<u64>,
    ) -> (usize, bool) {
        r.check_distinct_tcp_ports(&[
            ("http.https_port", Some(https_port)),
            ("http.http_port", http_port),
            ("rtc.tcp_port", Some(tcp_port)),
        ]);
        let media_threads_auto = matches!(media_threads, None | Some(0));
        let media_threads = match media_threads {
            Some(n) if n > 0 => n as usize,
            _ => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        r.check_media_ports(
            media_threads,
            udp_port,
            tcp_port,
            &[
                ("http.https_port", Some(https_port)),
                ("http.http_port", http_port),
            ],
        );
        (media_threads, media_threads_auto)
    }

    /// `off`, or the TURN listeners: `udp:3478,tls:5349`.
    fn turn_summary(&self) -> String {
        let t = &self.turn;
        if !t.enabled {
            return "off".into();
        }
        let port = |p: Option<u16>| p.map_or_else(|| "off".to_string(), |p| p.to_string());
        let tls = if t.external_tls { "tcp" } else { "tls" };
        format!("udp:{},{tls}:{}", port(t.udp_port), port(t.tls_port))
    }

    /// The effective configuration as one log-friendly line, secrets left out.
    pub fn summary(&self) -> String {
        let tls = match &self.http.tls {
            TlsSource::LocalCa => "local-ca".to_string(),
            TlsSource::Files { cert, .. } => format!("files({})", cert.display()),
        };
        let keys: Vec<&str> = self.auth.keys.keys().map(String::as_str).collect();
        format!(
            "state_dir={} log_level={} public_url={} bind={} https_port={} http_port={} tls={} \
             udp_port={} tcp_port={} media_threads={}{} max_participants={} max_rooms={} empty_timeout={}s api_keys=[{}] token_ttl={}s webhook_urls={} metrics_open={} turn={} update_url={} update_check={} board={} bootloader={} sources=[{}]",
            self.state_dir.display(),
            self.log_level,
            self.public_url.as_deref().unwrap_or("-"),
            self.http.bind,
            self.http.https_port,
            self.http
                .http_port
                .map_or_else(|| "off".to_string(), |p| p.to_string()),
            tls,
            self.rtc.udp_port,
            self.rtc.tcp_port,
            self.rtc.media_threads,
            if self.rtc.media_threads_auto {
                "(auto)"
            } else {
                ""
            },
            self.rtc.max_participants,
            self.rtc.max_rooms,
            self.rtc.empty_timeout.as_secs(),
            if keys.is_empty() {
                "device".to_string()
            } else {
                keys.join(",")
            },
            self.auth.token_ttl.as_secs(),
            self.webhook.urls.len(),
            self.metrics.open,
            self.turn_summary(),
            self.update.url.as_deref().unwrap_or("-"),
            self.update.check,
            self.update.board,
            self.update.bootloader.name(),
            self.sources.join(", "),
        )
    }
}

#[cfg(test)]
mod tests;
