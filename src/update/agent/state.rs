//! The update agent's own state file: last check, last install, last commit. JSON, written
//! atomically (temporary file, fsync, rename, fsync of the directory), so a power cut leaves the
//! old or the new file, never a torn one.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{CheckReport, UpdateError};
use crate::update::manifest::Manifest;
use crate::update::verify::Verified;
use crate::update::Slot;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentState {
    #[serde(default)]
    pub last_check: Option<CheckRecord>,
    #[serde(default)]
    pub last_install: Option<InstallRecord>,
    #[serde(default)]
    pub committed: Option<Committed>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckRecord {
    pub at_unix: u64,
    pub available: Option<String>,
    pub newer: bool,
    pub notes_url: Option<String>,
    pub error: Option<String>,
}

impl CheckRecord {
    pub fn now(result: &Result<CheckReport, UpdateError>) -> CheckRecord {
        match result {
            Ok(r) => CheckRecord {
                at_unix: crate::clock::unix_secs(),
                available: Some(r.available.clone()),
                newer: r.newer,
                notes_url: r.notes_url.clone(),
                error: None,
            },
            Err(e) => CheckRecord {
                at_unix: crate::clock::unix_secs(),
                available: None,
                newer: false,
                notes_url: None,
                error: Some(e.to_string()),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstallRecord {
    pub at_unix: u64,
    pub version: String,
    pub slot: Slot,
    pub seconds: u64,
    pub result: String,
}

impl InstallRecord {
    pub fn new(release: &Verified<Manifest>, slot: Slot, started: Instant, result: &str) -> Self {
        InstallRecord {
            at_unix: crate::clock::unix_secs(),
            version: release.version.to_string(),
            slot,
            seconds: started.elapsed().as_secs(),
            result: result.to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Committed {
    pub at_unix: u64,
    pub slot: Slot,
    pub version: String,
}

impl Committed {
    pub fn now(slot: Slot, version: &str) -> Self {
        Committed {
            at_unix: crate::clock::unix_secs(),
            slot,
            version: version.to_string(),
        }
    }
}

/// The state, or the default when the file does not exist yet. A damaged file is an error (it
/// is never silently replaced).
pub fn load(path: &Path) -> Result<AgentState, UpdateError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| UpdateError::State {
            path: path.to_path_buf(),
            detail: format!("unreadable ({e}); move it aside to start afresh"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentState::default()),
        Err(e) => Err(UpdateError::State {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// Loads, changes and saves the state atomically. The agent and `confab update mark-good` (a
/// separate process) both do this; an exclusive lock on `<state>.lock` makes each
/// read-change-write whole, so neither loses the other's change.
pub fn update(path: &Path, change: impl FnOnce(&mut AgentState)) -> Result<(), UpdateError> {
    let _lock = Lock::take(path)?;
    let mut state = load(path)?;
    change(&mut state);
    save(path, &state)
}

/// An exclusive `flock` on the file beside the state (not the state file itself: it is replaced
/// by a rename, and a lock on the old inode would not exclude a writer of the new one). Released
/// when dropped, or by the kernel if the process dies.
struct Lock {
    _file: std::fs::File,
}

impl Lock {
    fn take(state: &Path) -> Result<Lock, UpdateError> {
        let mut name = state.as_os_str().to_owned();
        name.push(".lock");
        let path = std::path::PathBuf::from(name);
        let err = |e: std::io::Error| UpdateError::State {
            path: path.clone(),
            detail: format!("cannot lock: {e}"),
        };
        std::fs::create_dir_all(crate::fsutil::parent_dir(&path)).map_err(err)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err)?;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is passed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Lock { _file: file });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(err(e));
            }
        }
    }
}

fn save(path: &Path, state: &AgentState) -> Result<(), UpdateError> {
    let err = |e: std::io::Error| UpdateError::State {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let json = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
    crate::fsutil::write_atomic(path, &json, 0o644).map_err(err)
}

/// One short phrase for `STATUS=`, `confab status` and the admin overview.
pub fn summary(path: &Path, has_slots: bool) -> String {
    let state = match load(path) {
        Ok(s) => s,
        Err(_) => return "state file unreadable".to_string(),
    };
    if let Some(install) = &state.last_install {
        let committed = state
            .committed
            .as_ref()
            .is_some_and(|c| c.version == install.version);
        if !committed && install.at_unix >= state.last_check.as_ref().map_or(0, |c| c.at_unix) {
            return format!("v{} {}", install.version, install.result);
        }
    }
    // Compare with the version running now: a check made by the previous version may be stale.
    let running = super::running_version();
    let newer = |c: &CheckRecord| {
        c.available
            .as_deref()
            .and_then(|v| semver::Version::parse(v).ok())
            .is_some_and(|v| v > running)
    };
    match (&state.last_check, has_slots) {
        (Some(c), _) if newer(c) => format!("v{} available", c.available.as_deref().unwrap_or("?")),
        (Some(c), _) if c.error.is_none() => "up to date".to_string(),
        (Some(_), _) => "last check failed".to_string(),
        (None, true) => "not checked yet".to_string(),
        (None, false) => "not available (no A/B slots)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn concurrent_updates_from_two_processes_lose_nothing() {
        // Two writers (as the agent and `confab update mark-good` are) each change a different
        // field many times; with the lock, every change of both is kept and no write fails.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("update-state.json");
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..100u64 {
                    update(&path, |st| {
                        let n = st.last_check.as_ref().map_or(0, |c| c.at_unix);
                        assert_eq!(n, i, "a check count was lost");
                        st.last_check = Some(CheckRecord {
                            at_unix: n + 1,
                            available: None,
                            newer: false,
                            notes_url: None,
                            error: None,
                        });
                    })
                    .unwrap();
                }
            });
            s.spawn(|| {
                for i in 0..100u64 {
                    update(&path, |st| {
                        let n = st.committed.as_ref().map_or(0, |c| c.at_unix);
                        assert_eq!(n, i, "a commit count was lost");
                        st.committed = Some(Committed {
                            at_unix: n + 1,
                            slot: Slot::A,
                            version: "0.1.0".into(),
                        });
                    })
                    .unwrap();
                }
            });
        });
        let st = load(&path).unwrap();
        assert_eq!(st.last_check.unwrap().at_unix, 100);
        assert_eq!(st.committed.unwrap().at_unix, 100);
    }

    #[test]
    fn summary_says_what_matters_most() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        assert_eq!(summary(&path, false), "not available (no A/B slots)");
        assert_eq!(summary(&path, true), "not checked yet");
        update(&path, |s| {
            s.last_check = Some(CheckRecord {
                at_unix: 10,
                available: Some("0.3.0".into()),
                newer: true,
                notes_url: None,
                error: None,
            })
        })
        .unwrap();
        assert_eq!(summary(&path, true), "v0.3.0 available");
        update(&path, |s| {
            s.last_install = Some(InstallRecord {
                at_unix: 20,
                version: "0.3.0".into(),
                slot: Slot::B,
                seconds: 9,
                result: "installed; reboot to try it".into(),
            })
        })
        .unwrap();
        assert_eq!(summary(&path, true), "v0.3.0 installed; reboot to try it");
        update(&path, |s| {
            s.committed = Some(Committed::now(Slot::B, "0.3.0"))
        })
        .unwrap();
        assert_eq!(summary(&path, true), "v0.3.0 available");
        // A check that found the running version (or older) is "up to date".
        update(&path, |s| {
            s.last_check.as_mut().unwrap().available = Some(crate::version::VERSION.into())
        })
        .unwrap();
        assert_eq!(summary(&path, true), "up to date");
        std::fs::write(&path, b"{broken").unwrap();
        assert_eq!(summary(&path, true), "state file unreadable");
        assert!(
            update(&path, |_| {}).is_err(),
            "a damaged state file is never overwritten"
        );
    }
}
