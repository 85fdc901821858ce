//! The collecting reader behind [`super::Config`]: flattens TOML layers into dotted keys that
//! remember their file, looks each setting up in the environment first, and records every problem
//! instead of stopping at the first.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Config, ConfigError, ConfigErrors, Env, Secret, MIN_SECRET_LEN};

/// LiveKit-named variables we accept, besides every `CONFAB_*`.
pub const LIVEKIT_VARS: &[&str] = &[
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "LIVEKIT_URL",
    "TOKEN_EXPIRY_SECONDS",
];

/// Every `CONFAB_*` variable we read; any other `CONFAB_*` is reported as unknown (a typo).
const CONFAB_VARS: &[&str] = &[
    "CONFAB_CONFIG",
    "CONFAB_STATE_DIR",
    "CONFAB_LOG_LEVEL",
    "CONFAB_PUBLIC_URL",
    "CONFAB_BIND",
    "CONFAB_HTTPS_PORT",
    "CONFAB_HTTP_PORT",
    "CONFAB_TLS_CERT",
    "CONFAB_TLS_KEY",
    "CONFAB_SHUTDOWN_GRACE_SECONDS",
    "CONFAB_TRUSTED_PROXIES",
    "CONFAB_MAX_CONNECTIONS",
    "CONFAB_MAX_CONNECTIONS_PER_ADDRESS",
    "CONFAB_UDP_PORT",
    "CONFAB_TCP_PORT",
    "CONFAB_NODE_IP",
    "CONFAB_MEDIA_THREADS",
    "CONFAB_MAX_PARTICIPANTS",
    "CONFAB_MAX_ROOMS",
    "CONFAB_EMPTY_TIMEOUT_SECONDS",
    "CONFAB_TOKEN_TTL_SECONDS",
    "CONFAB_UPDATE_URL",
    "CONFAB_DISABLE_UPDATE_CHECK",
    "CONFAB_UPDATE_CHECK_INTERVAL_SECONDS",
    "CONFAB_BOARD",
    "CONFAB_BOOTLOADER",
    "CONFAB_ESP_DIR",
    "CONFAB_BOOT_DIR",
    "CONFAB_SLOT_DIR",
    "CONFAB_UPDATE_KEYS",
    "CONFAB_UPDATE_STATE_FILE",
    "CONFAB_UPDATE_CA",
    "CONFAB_UPDATE_SOCKET",
    "CONFAB_WEBHOOK_URLS",
    "CONFAB_WEBHOOK_API_KEY",
    "CONFAB_METRICS_OPEN",
    "CONFAB_RECORDING_MIN_FREE_BYTES",
    "CONFAB_TURN_ENABLED",
    "CONFAB_TURN_UDP_PORT",
    "CONFAB_TURN_TLS_PORT",
    "CONFAB_TURN_DOMAIN",
    "CONFAB_TURN_EXTERNAL_TLS",
];

/// Build-time inputs of `build.rs`; `cargo run` also passes them to the program. Not settings.
pub(crate) const BUILD_VARS: &[&str] = &[
    "CONFAB_GIT_SHA",
    "CONFAB_BUILD_DATE",
    "CONFAB_WEB_APP",
    "CONFAB_WEB_CLIENT",
];

/// A value found for a setting, with where it came from.
enum Found {
    Env(&'static str, String),
    File(toml::Value, String),
}

impl Found {
    /// How an error names this value: the variable, or the key and its file.
    fn label(&self, key: &str) -> String {
        match self {
            Found::Env(var, _) => var.to_string(),
            Found::File(_, origin) => format!("{key} (in {origin})"),
        }
    }
}

pub struct Reader<'a> {
    env: &'a Env,
    /// Dotted key → (value, file it came from); later files replaced earlier ones.
    values: BTreeMap<String, (toml::Value, String)>,
    used: BTreeSet<String>,
    files: Vec<String>,
    errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    pub fn new(env: &'a Env) -> Self {
        Reader {
            env,
            values: BTreeMap::new(),
            used: BTreeSet::new(),
            files: Vec::new(),
            errors: Vec::new(),
        }
    }

    pub fn add_file(&mut self, origin: &str, text: &str) {
        self.files.push(origin.to_string());
        match text.parse::<toml::Table>() {
            Ok(table) => flatten("", table, origin, &mut self.values),
            Err(e) => self.errors.push(ConfigError {
                key: origin.to_string(),
                message: format!("not valid TOML: {}", e.message()),
            }),
        }
    }

    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            key: key.to_string(),
            message: message.into(),
        });
    }

    pub fn sources(&self) -> Vec<String> {
        let mut s = self.files.clone();
        s.extend(
            self.env
                .keys()
                .filter(|k| *k != "CONFAB_CONFIG")
                .map(|k| format!("${k}")),
        );
        s
    }

    /// Reports unknown keys and variables, then returns the config or every error.
    pub fn finish(mut self, config: Config) -> Result<Config, ConfigErrors> {
        let unknown: Vec<String> = self
            .values
            .keys()
            .filter(|k| !self.used.contains(*k) && !k.starts_with("keys."))
            .cloned()
            .collect();
        for key in unknown {
            let origin = self.values[&key].1.clone();
            self.error(&format!("{key} (in {origin})"), "unknown setting");
        }
        let unknown_vars: Vec<String> = self
            .env
            .keys()
            .filter(|k| {
                k.starts_with("CONFAB_")
                    && !CONFAB_VARS.contains(&k.as_str())
                    && !BUILD_VARS.contains(&k.as_str())
            })
            .cloned()
            .collect();
        for var in unknown_vars {
            self.error(&var, "unknown environment variable");
        }
        if self.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    fn find(&mut self, key: &str, vars: &[&'static str]) -> Option<Found> {
        self.used.insert(key.to_string());
        for var in vars {
            if let Some(v) = self.env.get(*var) {
                return Some(Found::Env(var, v.clone()));
            }
        }
        self.values
            .get(key)
            .map(|(v, origin)| Found::File(v.clone(), origin.clone()))
    }

    /// Looks a setting up and converts it; a failed conversion is recorded and yields `None`.
    fn get<T>(
        &mut self,
        key: &str,
        vars: &[&'static str],
        from_str: impl Fn(&str) -> Result<T, String>,
        from_toml: impl Fn(&toml::Value) -> Result<T, String>,
    ) -> Option<T> {
        let found = self.find(key, vars)?;
        let result = match &found {
            Found::Env(_, s) => from_str(s),
            Found::File(v, _) => from_toml(v),
        };
        match result {
            Ok(v) => Some(v),
            Err(message) => {
                let label = found.label(key);
                self.error(&label, message);
                None
            }
        }
    }

    pub fn path(&mut self, key: &str, vars: &[&'static str]) -> Option<PathBuf> {
        self.get(key, vars, non_empty_path, |v| {
            toml_string(v).and_then(|s| non_empty_path(&s))
        })
    }

    /// A list of paths: a TOML array of strings, or a `:`-separated variable.
    pub fn path_list(&mut self, key: &str, vars: &[&'static str]) -> Option<Vec<PathBuf>> {
        let split = |s: &str| {
            let list: Vec<PathBuf> = s
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect();
            if list.is_empty() {
                Err("expected at least one path".to_string())
            } else {
                Ok(list)
            }
        };
        self.get(key, vars, split, |v| match v {
            toml::Value::Array(items) if !items.is_empty() => items
                .iter()
                .map(|i| toml_string(i).and_then(|s| non_empty_path(&s)))
                .collect(),
            toml::Value::Array(_) => Err("expected at least one path".to_string()),
            other => Err(format!(
                "expected a list of paths, got {}",
                other.type_str()
            )),
        })
    }

    /// Address ranges (`IpNet`): a TOML array of strings, or a `,`-separated variable. An empty
    /// list is allowed (none trusted).
    pub fn ip_nets(&mut self, key: &str, vars: &[&'static str]) -> Option<Vec<crate::net::IpNet>> {
        let split = |s: &str| {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::parse)
                .collect::<Result<Vec<crate::net::IpNet>, String>>()
        };
        self.get(key, vars, split, |v| match v {
            toml::Value::Array(items) => items
                .iter()
                .map(|i| toml_string(i).and_then(|s| s.parse()))
                .collect(),
            other => Err(format!(
                "expected a list of addresses or CIDR ranges, got {}",
                other.type_str()
            )),
        })
    }

    /// A name made of letters, digits, '-', '_' and '.' (board names, identifiers).
    pub fn word(&mut self, key: &str, vars: &[&'static str]) -> Option<String> {
        let check = |s: &str| {
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                Ok(s.to_string())
            } else {
                Err(format!(
                    "expected letters, digits, '-', '_' or '.', got {s:?}"
                ))
            }
        };
        self.get(key, vars, check, |v| toml_string(v).and_then(|s| check(&s)))
    }

    /// One of a fixed set of names.
    pub fn choice<T: Copy>(
        &mut self,
        key: &str,
        vars: &[&'static str],
        options: &[(&str, T)],
    ) -> Option<T> {
        let pick = |s: &str| {
            options
                .iter()
                .find(|(name, _)| *name == s.trim())
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                    format!("expected one of {}, got {s:?}", names.join(", "))
                })
        };
        self.get(key, vars, pick, |v| toml_string(v).and_then(|s| pick(&s)))
    }

    pub fn u64_in(
        &mut self,
        key: &str,
        vars: &[&'static str],
        range: RangeInclusive<u64>,
    ) -> Option<u64> {
        let check = |n: u64| {
            if range.contains(&n) {
                Ok(n)
            } else {
                Err(format!(
                    "must be between {} and {}, got {n}",
                    range.start(),
                    range.end()
                ))
            }
        };
        self.get(
            key,
            vars,
            |s| {
                s.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("expected a whole number, got {s:?}"))
                    .and_then(check)
            },
            |v| match v {
                toml::Value::Integer(i) if *i >= 0 => check(*i as u64),
                toml::Value::Integer(i) => Err(format!("must not be negative, got {i}")),
                other => Err(format!("expected a whole number, got {}", other.type_str())),
            },
        )
    }

    pub fn port(&mut self, key: &str, vars: &[&'static str], zero_disables: bool) -> Option<u16> {
        let min = if zero_disables { 0 } else { 1 };
        self.u64_in(key, vars, min..=65_535).map(|p| p as u16)
    }

    pub fn seconds(
        &mut self,
        key: &str,
        vars: &[&'static str],
        range: RangeInclusive<u64>,
    ) -> Option<Duration> {
        self.u64_in(key, vars, range).map(Duration::from_secs)
    }

    pub fn ip(&mut self, key: &str, vars: &[&'static str]) -> Option<IpAddr> {
        let parse = |s: &str| {
            s.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("expected an IP address such as 0.0.0.0 or ::, got {s:?}"))
        };
        self.get(key, vars, parse, |v| toml_string(v).and_then(|s| parse(&s)))
    }

    pub fn log_level(&mut self, key: &str, vars: &[&'static str]) -> Option<String> {
        self.get(key, vars, log_filter, |v| {
            toml_string(v).and_then(|s| log_filter(&s))
        })
    }

    pub fn url(&mut self, key: &str, vars: &[&'static str], schemes: &[&str]) -> Option<String> {
        let check = |s: &str| check_url(s, schemes);
        self.get(key, vars, check, |v| toml_string(v).and_then(|s| check(&s)))
    }

    /// Webhook receivers: a TOML array of `http://`/`https://` URLs, or a `,`-separated variable.
    /// An error names the bad entry by position, its query string (often a token) left out.
    pub fn webhook_urls(&mut self, key: &str, vars: &[&'static str]) -> Option<Vec<String>> {
        let check_all = |items: Vec<String>| {
            items
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let authority = u.split_once("://").map_or("", |(_, rest)| {
                        rest.split(['/', '?', '#']).next().unwrap_or("")
                    });
                    if authority.contains('@') {
                        return Err(format!(
                            "entry {}: credentials in a webhook URL are not supported (requests \
                             are signed with an API key instead)",
                            i + 1
                        ));
                    }
                    check_url(u, &["http", "https"]).map_err(|_| {
                        format!(
                            "entry {} ({:?}) is not an http:// or https:// URL with a host",
                            i + 1,
                            redact_query(u)
                        )
                    })
                })
                .collect::<Result<Vec<String>, String>>()
        };
        let split = |s: &str| {
            check_all(
                s.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(String::from)
                    .collect(),
            )
        };
        self.get(key, vars, split, |v| match v {
            toml::Value::Array(items) => check_all(
                items
                    .iter()
                    .map(toml_string)
                    .collect::<Result<Vec<String>, String>>()?,
            ),
            other => Err(format!("expected a list of URLs, got {}", other.type_str())),
        })
    }

    pub fn bool(&mut self, key: &str, vars: &[&'static str]) -> Option<bool> {
        self.get(key, vars, parse_bool, |v| match v {
            toml::Value::Boolean(b) => Ok(*b),
            other => Err(format!("expected true or false, got {}", other.type_str())),
        })
    }

    /// `update.check` in files; `CONFAB_DISABLE_UPDATE_CHECK=true` (inverted) in the environment.
    pub fn update_check(&mut self) -> Option<bool> {
        const VAR: &str = "CONFAB_DISABLE_UPDATE_CHECK";
        if let Some(value) = self.env.get(VAR).cloned() {
            self.used.insert("update.check".to_string());
            return match parse_bool(&value) {
                Ok(disabled) => Some(!disabled),
                Err(message) => {
                    self.error(VAR, message);
                    None
                }
            };
        }
        self.bool("update.check", &[])
    }

    /// The `[keys]` table (`key = "secret"`, as LiveKit's `keys:`) or the LiveKit variable pair.
    pub fn api_keys(&mut self) -> BTreeMap<String, Secret> {
        let mut keys = BTreeMap::new();
        let env_key = self.env.get("LIVEKIT_API_KEY").cloned();
        let env_secret = self.env.get("LIVEKIT_API_SECRET").cloned();
        match (env_key, env_secret) {
            (Some(k), Some(s)) => {
                self.check_key_pair("LIVEKIT_API_KEY", &k, "LIVEKIT_API_SECRET", &s);
                keys.insert(k, Secret::new(s));
                return keys;
            }
            (Some(_), None) => self.error(
                "LIVEKIT_API_SECRET",
                "is required when LIVEKIT_API_KEY is set",
            ),
            (None, Some(_)) => self.error(
                "LIVEKIT_API_KEY",
                "is required when LIVEKIT_API_SECRET is set",
            ),
            (None, None) => {}
        }
        let entries: Vec<(String, toml::Value, String)> = self
            .values
            .iter()
            .filter_map(|(k, (v, o))| {
                k.strip_prefix("keys.")
                    .map(|name| (name.to_string(), v.clone(), o.clone()))
            })
            .collect();
        for (name, value, origin) in entries {
            let label = format!("keys.{name} (in {origin})");
            match value {
                toml::Value::String(secret) => {
                    self.check_key_pair(&label, &name, &label, &secret);
                    keys.insert(name, Secret::new(secret));
                }
                other => self.error(
                    &label,
                    format!("expected the secret as a string, got {}", other.type_str()),
                ),
            }
        }
        keys
    }

    fn check_key_pair(&mut self, key_label: &str, key: &str, secret_label: &str, secret: &str) {
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            self.error(
                key_label,
                "an API key must be non-empty letters, digits, '_' or '-'",
            );
        }
        if secret.chars().count() < MIN_SECRET_LEN {
            // Never echo the secret itself.
            self.error(
                secret_label,
                format!("the API secret must be at least {MIN_SECRET_LEN} characters"),
            );
        }
    }

    pub fn check_distinct_tcp_ports(&mut self, ports: &[(&str, Option<u16>)]) {
        for (i, (a, pa)) in ports.iter().enumerate() {
            for (b, pb) in &ports[i + 1..] {
                if let (Some(pa), Some(pb)) = (pa, pb) {
                    if pa == pb {
                        self.error(
                            a,
                            format!("port {pa} is also used by {b}; each TCP port must differ"),
                        );
                    }
                }
            }
        }
    }

    /// The media threads' ports: thread `i` uses `rtc.udp_port + i` (UDP) and `rtc.tcp_port + i`
    /// (TCP). Both ranges must end by 65535, and the TCP range must not hold another TCP port.
    pub fn check_media_ports(
        &mut self,
        threads: usize,
        udp_port: u16,
        tcp_port: u16,
        others: &[(&str, Option<u16>)],
    ) {
        let last = |p: u16| p as usize + threads.saturating_sub(1);
        for (key, port) in [("rtc.udp_port", udp_port), ("rtc.tcp_port", tcp_port)] {
            if last(port) > 65_535 {
                self.error(
                    key,
                    format!(
                        "{threads} media threads use ports {port}..={}, beyond 65535; lower the \
                         port or rtc.media_threads",
                        last(port)
                    ),
                );
            }
        }
        let range = tcp_port as usize..=last(tcp_port);
        for (key, port) in others {
            if let Some(p) = port {
                if *p != tcp_port && range.contains(&(*p as usize)) {
                    self.error(
                        key,
                        format!(
                            "port {p} is also used by ICE-TCP: with {threads} media threads, \
                             rtc.tcp_port {tcp_port} means TCP ports {tcp_port}..={}; each TCP port \
                             must differ",
                            last(tcp_port)
                        ),
                    );
                }
            }
        }
    }

    pub fn check_file_exists(&mut self, key: &str, path: &Path) {
        if let Err(e) = std::fs::metadata(path) {
            self.error(key, format!("cannot read {}: {e}", path.display()));
        }
    }
}

fn flatten(
    prefix: &str,
    table: toml::Table,
    origin: &str,
    out: &mut BTreeMap<String, (toml::Value, String)>,
) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => flatten(&key, t, origin, out),
            other => {
                out.insert(key, (other, origin.to_string()));
            }
        }
    }
}

/// Checks a log filter (`info`, `confab=debug,hyper=warn`) and returns it with each directive
/// trimmed. tracing-subscriber 0.3 indexes an untrimmed directive with offsets taken from the
/// trimmed one, so `" é["` panics inside it; trimmed directives keep the two in step. Regex field
/// matching is off: a log filter never needs it, and a pattern from a file should not compile.
pub fn log_filter(s: &str) -> Result<String, String> {
    let normal = s
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    tracing_subscriber::EnvFilter::builder()
        .with_regex(false)
        .parse(&normal)
        .map(|_| normal.clone())
        .map_err(|e| format!("not a log level or filter ({e}); try info, debug or confab=debug"))
}

fn toml_string(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        other => Err(format!("expected a string, got {}", other.type_str())),
    }
}

fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        Err("must not be empty".to_string())
    } else {
        Ok(PathBuf::from(s))
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("expected true or false, got {s:?}")),
    }
}

/// `s` without its query string or fragment, for messages (a receiver's URL may carry a token).
pub(crate) fn redact_query(s: &str) -> String {
    match s.find(['?', '#']) {
        Some(i) => format!("{}?…", &s[..i]),
        None => s.to_string(),
    }
}

fn check_url(s: &str, schemes: &[&str]) -> Result<String, String> {
    if let Some(path) = s.strip_prefix("file://") {
        return if schemes.contains(&"file") && path.starts_with('/') {
            Ok(s.to_string())
        } else if schemes.contains(&"file") {
            Err(format!("a file:// URL needs an absolute path, got {s:?}"))
        } else {
            Err(format!("file:// URLs are not accepted here, got {s:?}"))
        };
    }
    let uri: hyper::Uri = s
        .parse()
        .map_err(|e| format!("not a valid URL ({e}): {s:?}"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if !schemes.contains(&scheme) {
        return Err(format!(
            "URL must start with {}, got {s:?}",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    if scheme != "file" && uri.host().is_none_or(str::is_empty) {
        return Err(format!("URL has no host: {s:?}"));
    }
    Ok(s.to_string())
}
