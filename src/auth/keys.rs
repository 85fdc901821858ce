//! API key/secret pairs: the operator's (config) or the device's own (generated once, kept in
//! `<state_dir>/keys.toml`, mode 0600, written atomically).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::config::{Config, Secret, MIN_SECRET_LEN};

pub const KEYS_FILE: &str = "keys.toml";

#[derive(Debug, Clone)]
pub struct ApiKeys {
    keys: BTreeMap<String, Secret>,
}

/// What `load` found or did, so the caller can tell the user once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysOrigin {
    Config,
    DeviceFile(PathBuf),
    Generated(PathBuf),
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    #[error("cannot read API keys from {path}: {detail}")]
    Read { path: PathBuf, detail: String },
    #[error("cannot store the generated API keys in {path}: {detail}")]
    Write { path: PathBuf, detail: String },
    #[error(
        "the API keys come from the configuration ([keys] or LIVEKIT_API_KEY/LIVEKIT_API_SECRET); \
         change them there and restart confab"
    )]
    Configured,
}

impl ApiKeys {
    pub fn from_map(keys: BTreeMap<String, Secret>) -> Self {
        ApiKeys { keys }
    }

    pub fn secret(&self, key: &str) -> Option<&Secret> {
        self.keys.get(key)
    }

    /// The key used when confab signs tokens itself (first in order).
    pub fn primary(&self) -> Option<(&str, &Secret)> {
        self.keys.iter().next().map(|(k, s)| (k.as_str(), s))
    }

    pub fn names(&self) -> Vec<&str> {
        self.keys.keys().map(String::as_str).collect()
    }

    /// Configured keys if any; else the device's keys file, generating it when `create` is set.
    pub fn load(config: &Config, create: bool) -> Result<(ApiKeys, KeysOrigin), KeysError> {
        if !config.auth.keys.is_empty() {
            return Ok((
                ApiKeys::from_map(config.auth.keys.clone()),
                KeysOrigin::Config,
            ));
        }
        let path = config.state_dir.join(KEYS_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok((parse(&path, &text)?, KeysOrigin::DeviceFile(path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let keys = generate(&path)?;
                write_atomic(&path, &keys)?;
                Ok((keys, KeysOrigin::Generated(path)))
            }
            Err(e) => Err(KeysError::Read {
                path,
                detail: if e.kind() == std::io::ErrorKind::NotFound {
                    "no keys yet: start `confab serve` once to generate them, or set \
                     LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
                        .to_string()
                } else {
                    e.to_string()
                },
            }),
        }
    }
}

/// The keys the running server checks tokens against, replaceable while it runs: "Rotate" in the
/// admin page makes a new device key, writes it to `keys.toml` (so `confab token` uses it too)
/// and swaps it in here. The old key is refused from that moment: no grace period, because a
/// rotation is usually done because the secret got out. Keys from the configuration (`[keys]`,
/// `LIVEKIT_API_KEY`) belong to the operator's files and cannot be rotated from the UI.
/// Clones share the keys: a rotation through one is seen by all (the webhook notifier signs with
/// the current key this way).
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: Arc<RwLock<Arc<ApiKeys>>>,
    /// The device's keys file, when the keys came from it (None: configured keys).
    file: Option<PathBuf>,
}

impl KeyRing {
    pub fn new(keys: ApiKeys, origin: &KeysOrigin) -> KeyRing {
        let file = match origin {
            KeysOrigin::Config => None,
            KeysOrigin::DeviceFile(p) | KeysOrigin::Generated(p) => Some(p.clone()),
        };
        KeyRing {
            current: Arc::new(RwLock::new(Arc::new(keys))),
            file,
        }
    }

    /// The keys now (a snapshot: a rotation does not change it under the caller).
    pub fn current(&self) -> Arc<ApiKeys> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Where rotated keys are written, or None when they come from the configuration.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// Replaces the device key with a new key and secret: first on disk (atomically), then in
    /// memory. Returns the new key id.
    pub fn rotate(&self) -> Result<String, KeysError> {
        let Some(path) = &self.file else {
            return Err(KeysError::Configured);
        };
        let keys = generate(path)?;
        write_atomic(path, &keys)?;
        let id = keys
            .primary()
            .map(|(k, _)| k.to_string())
            .unwrap_or_default();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(id)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeysFile {
    keys: BTreeMap<String, String>,
}

fn parse(path: &Path, text: &str) -> Result<ApiKeys, KeysError> {
    let bad = |detail: String| KeysError::Read {
        path: path.to_path_buf(),
        detail,
    };
    let file: KeysFile = toml::from_str(text).map_err(|e| bad(e.message().to_string()))?;
    if file.keys.is_empty() {
        return Err(bad("the [keys] table is empty".to_string()));
    }
    if file.keys.values().any(|s| s.len() < MIN_SECRET_LEN) {
        return Err(bad(format!(
            "a secret is shorter than {MIN_SECRET_LEN} characters"
        )));
    }
    Ok(ApiKeys::from_map(
        file.keys
            .into_iter()
            .map(|(k, s)| (k, Secret::new(s)))
            .collect(),
    ))
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// `n` characters from the OS random source, uniformly over [A-Za-z0-9] (rejection sampling).
pub fn random_token(n: usize) -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf)?;
        for b in buf {
            // 248 = 4 * 62: keep only bytes that map without bias.
            if b < 248 && out.len() < n {
                out.push(ALPHABET[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

fn generate(path: &Path) -> Result<ApiKeys, KeysError> {
    let rng = |e: getrandom::Error| KeysError::Write {
        path: path.to_path_buf(),
        detail: format!("the operating system's random number source failed: {e}"),
    };
    let key = format!("API{}", random_token(12).map_err(rng)?);
    let secret = random_token(48).map_err(rng)?;
    Ok(ApiKeys::from_map(
        [(key, Secret::new(secret))].into_iter().collect(),
    ))
}

fn write_atomic(path: &Path, keys: &ApiKeys) -> Result<(), KeysError> {
    let err = |e: std::io::Error| KeysError::Write {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let file = KeysFile {
        keys: keys
            .keys
            .iter()
            .map(|(k, s)| (k.clone(), s.expose().to_string()))
            .collect(),
    };
    let text = format!(
        "# confab API key and secret for this device (LiveKit-compatible). Keep this file private.\n{}",
        toml::to_string(&file).map_err(|e| err(std::io::Error::other(e.to_string())))?
    );
    crate::fsutil::write_atomic(path, text.as_bytes(), 0o600).map_err(err)
}
