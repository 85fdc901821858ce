//! The admin's authentication: one admin password (an Argon2id hash in the state database, tree
//! `admin`), the one-time setup code shown while none is set (and its copies in files, for
//! `confab admin set-password` and the appliance's console), the owner's preset from the boot
//! partition, login sessions, and the count of failed attempts per client address. The HTTP side
//! (cookies, routes, answers) is `api::admin`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tracing::{info, warn};

use crate::http::peer::Failures;
use crate::state::{StateError, Store};

const TREE: &str = "admin";
const PASSWORD_KEY: &[u8] = b"password_hash";
/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The shortest admin password accepted, in characters.
pub const MIN_PASSWORD: usize = 10;
/// Failed logins and wrong setup codes allowed per client address within the window, then
/// refused until it passes.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// The setup code's copy in the state directory, for `confab admin set-password`.
pub const SETUP_CODE_FILE: &str = "setup-code";

/// Sessions, failures and the setup code: in memory (a restart logs the admin out).
pub struct AdminState {
    setup_code: Mutex<Option<String>>,
    /// Files that hold a copy of the setup code (mode 0600), removed once the password is set.
    code_files: Vec<std::path::PathBuf>,
    sessions: Mutex<HashMap<String, Instant>>,
    failures: Failures,
    /// The state directory, for `GET /api/admin/backup` (None: no backups, as in unit tests).
    state_dir: Option<std::path::PathBuf>,
}

fn random_token(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    let _ = getrandom::fill(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl AdminState {
    /// With `password_set` false, makes the one-time setup code (returned to be shown once).
    pub fn new(password_set: bool) -> (AdminState, Option<String>) {
        AdminState::with_code(password_set, None)
    }

    /// Like [`AdminState::new`], with the owner's preset setup code instead of a random one.
    pub fn with_code(password_set: bool, preset: Option<String>) -> (AdminState, Option<String>) {
        let code = (!password_set).then(|| {
            preset.unwrap_or_else(|| {
                let t = random_token(4).to_uppercase();
                format!("{}-{}", &t[..4], &t[4..])
            })
        });
        (
            AdminState {
                setup_code: Mutex::new(code.clone()),
                code_files: Vec::new(),
                sessions: Mutex::new(HashMap::new()),
                failures: Failures::new(MAX_FAILURES, FAILURE_WINDOW),
                state_dir: None,
            },
            code,
        )
    }
}

impl AdminState {
    /// True while `client` has used up its failures in the window.
    pub fn locked_out(&self, client: IpAddr) -> bool {
        self.failures.blocked(client)
    }

    /// Counts a wrong password or setup code from `client`; returns its count in the window.
    pub fn failed(&self, client: IpAddr) -> u32 {
        self.failures.failed(client)
    }

    /// A right password or setup code from `client`: its failures are forgotten.
    pub fn succeeded(&self, client: IpAddr) {
        self.failures.forget(client);
    }

    /// Keeps a copy of the setup code (mode 0600) in each of `files` while no password is set,
    /// and removes stale copies when there is none: for `confab admin set-password`
    /// (`<state_dir>/setup-code`) and the appliance's console banner (`/run/confab/setup-code`).
    /// Best effort: the code is in the log either way.
    pub fn publish_code(&mut self, files: Vec<std::path::PathBuf>) {
        let code = self
            .setup_code
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for path in &files {
            let result = match &code {
                Some(code) => write_private(path, code),
                None => remove_if_present(path),
            };
            if let Err(e) = result {
                warn!(path = %path.display(), error = %e, "cannot update the setup code file");
            }
        }
        self.code_files = files;
    }

    /// Whether `code` is the setup code (any case, surrounding blanks ignored).
    pub fn setup_code_matches(&self, code: Option<&str>) -> bool {
        let expected = self
            .setup_code
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match (&expected, code) {
            (Some(e), Some(c)) => e.eq_ignore_ascii_case(c.trim()),
            _ => false,
        }
    }

    /// Whether `token` is a session that has not expired (expired ones are dropped).
    pub fn has_session(&self, token: &str) -> bool {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, exp| *exp > now);
        sessions.contains_key(token)
    }

    /// A new session for [`SESSION_TTL`]: its token.
    pub fn new_session(&self) -> String {
        let token = random_token(32);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), Instant::now() + SESSION_TTL);
        token
    }

    /// Logs the session `token` out.
    pub fn end_session(&self, token: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }

    /// The state directory, for backups (None: no backups, as in unit tests).
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    /// Where the keys file and the local CA are, for backups.
    pub fn set_state_dir(&mut self, dir: std::path::PathBuf) {
        self.state_dir = Some(dir);
    }

    /// The password is set: the code is spent, and so are its copies.
    pub fn spend_code(&self) {
        *self.setup_code.lock().unwrap_or_else(|e| e.into_inner()) = None;
        for path in &self.code_files {
            if let Err(e) = remove_if_present(path) {
                warn!(path = %path.display(), error = %e, "cannot remove the spent setup code");
            }
        }
    }
}

fn write_private(path: &Path, code: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Replace rather than rewrite: a file left from an older start may have a wider mode.
    remove_if_present(path)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{code}")
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The owner's admin settings from the appliance's boot partition (`confab appliance setup` writes
/// them to `<state_dir>/admin-preset.toml`; confab serve applies and removes the file at start).
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// An Argon2 PHC hash (`$argon2id$…`) to use as the admin password if none is set yet.
    pub password_hash: Option<String>,
    /// The one-time setup code to use instead of a random one.
    pub setup_code: Option<String>,
}

pub const PRESET_FILE: &str = "admin-preset.toml";

/// Whether `hash` is an Argon2 PHC string confab can verify passwords against.
pub fn valid_preset_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

/// Applies and removes `<state_dir>/admin-preset.toml`: the password hash is stored if no admin
/// password is set yet (a set password is never replaced from a file); the setup code is
/// returned for [`AdminState::with_code`]. The file is removed only after the hash is saved.
pub fn apply_preset(store: &dyn Store, state_dir: &Path) -> Result<Option<String>, String> {
    let path = state_dir.join(PRESET_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let preset: Preset = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(hash) = &preset.password_hash {
        if !valid_preset_hash(hash) {
            return Err(format!(
                "{}: password_hash is not an Argon2 hash",
                path.display()
            ));
        }
        if !password_set(store) {
            save_hash(store, hash)
                .map_err(|e| format!("cannot save the preset admin password: {e}"))?;
            info!("admin password set from the boot partition's confab.toml");
        }
    }
    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(preset.setup_code)
}

/// True if the admin password is set in `store`.
pub fn password_set(store: &dyn Store) -> bool {
    matches!(store.get(TREE, PASSWORD_KEY), Ok(Some(_)))
}

/// An Argon2id PHC hash of `password` with a random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the stored PHC hash.
pub fn verify_password(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// The stored admin password hash, if one is set.
pub fn stored_hash(store: &dyn Store) -> Result<Option<String>, StateError> {
    Ok(store
        .get(TREE, PASSWORD_KEY)?
        .map(|h| String::from_utf8_lossy(&h).into_owned()))
}

/// Stores `hash` as the admin password, durably.
pub fn save_hash(store: &dyn Store, hash: &str) -> Result<(), StateError> {
    store
        .put(TREE, PASSWORD_KEY, hash.as_bytes())
        .and_then(|_| store.flush())
}

#[cfg(test)]
mod preset_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::state::{SledStore, Store};

    #[test]
    fn a_preset_sets_the_password_once_and_hands_over_the_setup_code() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let hash = hash_password("correct horse battery").unwrap();
        let preset = format!("password_hash = \"{hash}\"\nsetup_code = \"OWNER-CODE-1\"\n");
        std::fs::write(dir.path().join(PRESET_FILE), &preset).unwrap();
        let code = apply_preset(&store, dir.path()).unwrap();
        assert_eq!(code.as_deref(), Some("OWNER-CODE-1"));
        assert!(!dir.path().join(PRESET_FILE).exists(), "preset kept");
        let stored = store.get(TREE, PASSWORD_KEY).unwrap().unwrap();
        assert!(verify_password(
            &String::from_utf8(stored).unwrap(),
            "correct horse battery"
        ));
        // With a password set, the setup code is not used and a later preset changes nothing.
        let (_, shown) = AdminState::with_code(password_set(&store), code);
        assert_eq!(shown, None);
        let other = hash_password("another password!").unwrap();
        std::fs::write(
            dir.path().join(PRESET_FILE),
            format!("password_hash = \"{other}\"\n"),
        )
        .unwrap();
        apply_preset(&store, dir.path()).unwrap();
        let stored = store.get(TREE, PASSWORD_KEY).unwrap().unwrap();
        assert!(verify_password(
            &String::from_utf8(stored).unwrap(),
            "correct horse battery"
        ));
        // Without a password, the owner's code replaces the random one.
        let (_, shown) = AdminState::with_code(false, Some("OWNER-CODE-1".into()));
        assert_eq!(shown.as_deref(), Some("OWNER-CODE-1"));
    }

    #[test]
    fn a_bad_preset_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        std::fs::write(
            dir.path().join(PRESET_FILE),
            "password_hash = \"hunter2\"\n",
        )
        .unwrap();
        let err = apply_preset(&store, dir.path()).unwrap_err();
        assert!(err.contains("not an Argon2 hash"), "{err}");
        assert!(dir.path().join(PRESET_FILE).exists());
        assert!(!password_set(&store));
    }
}
