//! The admin page's update panel: `/api/admin/update` (GET the view; POST `update/check`,
//! `update/apply`, `update/remind-later`; GET `update/progress`). On the appliance the update
//! agent (`confab update agent`, root) does the work and `confab serve` only proxies its socket
//! API (`update::agent::client`). Without the agent's socket:
//!
//! - in a container (`update.bootloader = none` and `/.dockerenv`, `/run/.containerenv` or the
//!   `container` variable) with `update.url` set, confab checks for a newer signed release itself
//!   and says how to update: `docker compose pull && docker compose up -d`;
//! - otherwise updates are not available (dev mode), or the agent is not running (a device with
//!   A/B slots whose agent is down).
//!
//! "Remind me later" hides the notice of one version for 24 h; it is kept in the state database
//! (tree `admin`), so every admin browser sees the same.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::info;

use super::App;
use crate::config::{BootloaderKind, Config};
use crate::http::{json_response, Body};
use crate::update::agent::client::{AgentClient, AgentClientError};

const TREE: &str = "admin";
const REMIND_KEY: &[u8] = b"update_remind_later";
pub const REMIND_FOR: Duration = Duration::from_secs(24 * 3600);
pub const CONTAINER_COMMAND: &str = "docker compose pull && docker compose up -d";

/// What the update panel needs from the configuration.
pub struct UpdateAccess {
    pub agent: AgentClient,
    pub config: Arc<Config>,
    pub container: bool,
}

impl UpdateAccess {
    pub fn new(config: Arc<Config>) -> UpdateAccess {
        UpdateAccess {
            agent: AgentClient::new(&config.update.socket),
            container: in_container(Path::new("/"), std::env::var_os("container").is_some()),
            config,
        }
    }

    fn slots(&self) -> bool {
        self.config.update.bootloader != BootloaderKind::None
    }

    /// A container that may check for releases itself (no agent, no slots, a source).
    fn container_check(&self) -> bool {
        !self.slots() && self.container && self.config.update.url.is_some()
    }
}

/// True inside a container: Docker's `/.dockerenv`, Podman's `/run/.containerenv`, or the
/// `container` variable (systemd-nspawn, Podman, LXC).
pub fn in_container(root: &Path, container_var: bool) -> bool {
    container_var || root.join(".dockerenv").exists() || root.join("run/.containerenv").exists()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct RemindLater {
    version: String,
    until_unix: u64,
}

fn error(status: StatusCode, message: &str) -> hyper::Response<Body> {
    json_response(status, &json!({ "error": message }))
}

fn remind_later(app: &App) -> Option<RemindLater> {
    let raw = app.0.readiness.state.get(TREE, REMIND_KEY).ok()??;
    serde_json::from_slice(&raw).ok()
}

/// The newer release the last check found, from the agent's state (`last_check`).
fn available(state: &Value, running: &str) -> Option<Value> {
    let check = state.get("last_check")?;
    let version = check.get("available")?.as_str()?;
    let newer = match (
        semver::Version::parse(version),
        semver::Version::parse(running),
    ) {
        (Ok(v), Ok(r)) => v > r,
        _ => check.get("newer").and_then(Value::as_bool).unwrap_or(false),
    };
    newer.then(|| json!({"version": version, "notes_url": check.get("notes_url").cloned().unwrap_or(Value::Null)}))
}

fn last_check(state: &Value) -> Value {
    match state.get("last_check") {
        Some(c) => json!({
            "at_unix": c.get("at_unix").cloned().unwrap_or(Value::Null),
            "error": c.get("error").cloned().unwrap_or(Value::Null),
        }),
        None => Value::Null,
    }
}

/// The panel's view. `check_error` is what a check just now said, if it failed.
async fn view(app: &App, u: &UpdateAccess, check_error: Option<String>) -> Value {
    let running = crate::update::agent::running_version().to_string();
    let mut v = json!({
        "running": running,
        "available": null,
        "snoozed_until": null,
        "rollback": null,
        "install": null,
        "can_check": false,
        "can_apply": false,
        "check_error": check_error,
    });
    let state: Value;
    if u.agent.present() || u.slots() {
        match u.agent.status().await {
            Ok(a) if a.status.is_success() => {
                let s = a.body;
                v["mode"] = json!("agent");
                v["bootloader"] = s.get("bootloader").cloned().unwrap_or(Value::Null);
                v["running"] = s.get("running").cloned().unwrap_or(json!(running));
                let booted = s
                    .get("slots")
                    .and_then(Value::as_array)
                    .and_then(|slots| {
                        slots
                            .iter()
                            .find(|x| x.get("booted").and_then(Value::as_bool) == Some(true))
                    })
                    .and_then(|x| x.get("slot"))
                    .cloned()
                    .unwrap_or(Value::Null);
                v["slot"] = booted;
                v["slots"] = s.get("slots").cloned().unwrap_or(json!([]));
                v["rollback"] = s.get("rollback").cloned().unwrap_or(Value::Null);
                v["can_check"] = json!(true);
                state = s.get("state").cloned().unwrap_or(Value::Null);
                if let Ok(p) = u.agent.progress().await {
                    v["install"] = p.body;
                }
            }
            Ok(a) => {
                v["mode"] = json!("agent-error");
                v["message"] = json!(format!(
                    "The update agent answered {}: {}",
                    a.status,
                    a.body
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("no detail")
                ));
                return v;
            }
            Err(e) => {
                v["mode"] = json!(if matches!(e, AgentClientError::NotRunning(_)) {
                    "agent-missing"
                } else {
                    "agent-error"
                });
                v["message"] = json!(format!(
                    "{e}. On the appliance: systemctl status confab-update"
                ));
                return v;
            }
        }
    } else if u.container_check() {
        v["mode"] = json!("container");
        v["command"] = json!(CONTAINER_COMMAND);
        v["can_check"] = json!(true);
        state = match crate::update::agent::state::load(&u.config.update.state_file) {
            Ok(s) => serde_json::to_value(s).unwrap_or(Value::Null),
            Err(e) => {
                v["check_error"] = json!(e.to_string());
                Value::Null
            }
        };
    } else {
        v["mode"] = json!("dev");
        v["message"] = json!(if u.container {
            v["command"] = json!(CONTAINER_COMMAND);
            "Updates are not available in dev mode (no update.url is set). In a container, \
             update it on its host with:"
                .to_string()
        } else {
            "Updates are not available in dev mode (this install has no A/B slots and no \
             update agent)."
                .to_string()
        });
        return v;
    }
    let running_now = v["running"].as_str().unwrap_or_default().to_string();
    v["last_check"] = last_check(&state);
    if let Some(a) = available(&state, &running_now) {
        v["can_apply"] = json!(v["mode"] == "agent");
        if let Some(r) = remind_later(app) {
            if Some(r.version.as_str()) == a["version"].as_str()
                && r.until_unix > crate::clock::unix_secs()
            {
                v["snoozed_until"] = json!(r.until_unix);
            }
        }
        v["available"] = a;
    }
    v
}

/// `update…` calls of the admin API (the caller checked the session and the JSON content type).
pub async fn handle(app: &App, post: bool, path: &str) -> hyper::Response<Body> {
    let Some(u) = app.0.updates.as_ref() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "updates are not configured in this server",
        );
    };
    match (post, path) {
        (false, "update") => json_response(StatusCode::OK, &view(app, u, None).await),
        (true, "update/check") => {
            let failed = if u.agent.present() || u.slots() {
                match u.agent.check().await {
                    Ok(a) if a.status.is_success() => None,
                    Ok(a) => Some(
                        a.body
                            .get("error")
                            .and_then(Value::as_str)
                            .unwrap_or("the check failed")
                            .to_string(),
                    ),
                    Err(e) => Some(e.to_string()),
                }
            } else if u.container_check() {
                crate::update::agent::check(&u.config, None)
                    .await
                    .err()
                    .map(|e| e.to_string())
            } else {
                return error(
                    StatusCode::CONFLICT,
                    "updates are not available in dev mode",
                );
            };
            json_response(StatusCode::OK, &view(app, u, failed).await)
        }
        (true, "update/apply") => {
            if !(u.agent.present() || u.slots()) {
                return error(
                    StatusCode::CONFLICT,
                    &if u.container_check() {
                        format!(
                            "this confab runs in a container: update it with {CONTAINER_COMMAND}"
                        )
                    } else {
                        "updates are not available in dev mode".to_string()
                    },
                );
            }
            match u.agent.apply().await {
                Ok(a) => {
                    info!(status = %a.status, "update install requested by the admin");
                    json_response(a.status, &a.body)
                }
                Err(e) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
            }
        }
        (false, "update/progress") => match u.agent.progress().await {
            Ok(a) => json_response(StatusCode::OK, &a.body),
            Err(e) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
        },
        (true, "update/remind-later") => {
            let current = view(app, u, None).await;
            let Some(version) = current["available"]["version"].as_str() else {
                return error(StatusCode::CONFLICT, "no update is available");
            };
            let r = RemindLater {
                version: version.to_string(),
                until_unix: crate::clock::unix_secs() + REMIND_FOR.as_secs(),
            };
            let saved = serde_json::to_vec(&r)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    let store = &app.0.readiness.state;
                    store
                        .put(TREE, REMIND_KEY, &bytes)
                        .and_then(|_| store.flush())
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = saved {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot save: {e}"),
                );
            }
            info!(version = %r.version, "update reminder postponed by 24 h");
            json_response(StatusCode::OK, &view(app, u, None).await)
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin call"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_recognised() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!in_container(dir.path(), false));
        assert!(in_container(dir.path(), true));
        std::fs::create_dir_all(dir.path().join("run")).expect("mkdir");
        std::fs::write(dir.path().join("run/.containerenv"), b"").expect("write");
        assert!(in_container(dir.path(), false));
    }

    #[test]
    fn only_a_newer_checked_release_is_available() {
        let state =
            json!({"last_check": {"available": "0.3.0", "newer": true, "notes_url": "https://n"}});
        assert_eq!(
            available(&state, "0.2.0").expect("newer")["version"],
            "0.3.0"
        );
        assert!(available(&state, "0.3.0").is_none(), "already running it");
        assert!(available(&json!({}), "0.2.0").is_none());
        assert!(available(&json!({"last_check": {"available": null}}), "0.2.0").is_none());
    }
}
