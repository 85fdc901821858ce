//! `confab update agent`: the long-running root service. It checks for updates periodically
//! (first a few seconds after start), and serves a small HTTP API on a Unix socket for the admin
//! UI (through `confab serve`): `GET /status`, `POST /check`, `POST /apply`, `GET /progress`.
//! Only one install runs at a time; its progress is kept in memory for `/progress`.

use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::UnixListener;
use tracing::{debug, info, warn};

use super::ApplyProgress;
use crate::config::Config;

/// The first periodic check runs this long after start (the network may still be coming up).
const FIRST_CHECK_AFTER: Duration = Duration::from_secs(5);

#[derive(Default, Clone, serde::Serialize)]
struct InstallState {
    running: bool,
    progress: Option<ApplyProgress>,
    result: Option<String>,
    error: Option<String>,
}

struct Shared {
    config: Config,
    install: Mutex<InstallState>,
}

/// Binds the socket (replacing a stale one), runs the periodic check and serves until SIGTERM.
pub async fn run(config: Config, socket: &Path) -> Result<(), String> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if socket.exists() {
        std::fs::remove_file(socket)
            .map_err(|e| format!("cannot remove stale {}: {e}", socket.display()))?;
    }
    let listener = UnixListener::bind(socket)
        .map_err(|e| format!("cannot listen on {}: {e}", socket.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Owner (root) and group (the unit's Group=confab) only.
        let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660));
    }
    let shared = Arc::new(Shared {
        config,
        install: Mutex::new(InstallState::default()),
    });
    info!(socket = %socket.display(), "update agent listening");
    crate::systemd::ready("update agent ready");
    let checker = tokio::spawn(periodic_check(shared.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req| {
                            let shared = shared.clone();
                            async move { Ok::<_, Infallible>(route(shared, req).await) }
                        });
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            debug!(error = %e, "agent API connection ended");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept on the agent socket failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    crate::systemd::stopping();
    checker.abort();
    let _ = std::fs::remove_file(socket);
    Ok(())
}

async fn periodic_check(shared: Arc<Shared>) {
    let config = &shared.config;
    if !config.update.check || config.update.url.is_none() {
        info!("periodic update check is off (update.check = false or no update.url)");
        return;
    }
    tokio::time::sleep(FIRST_CHECK_AFTER).await;
    let mut tick = tokio::time::interval(config.update.check_interval);
    loop {
        tick.tick().await;
        match super::check(config, None).await {
            Ok(r) if r.newer => {
                info!(available = %r.available, "update available");
                crate::systemd::status(&format!("update available: v{}", r.available));
            }
            Ok(_) => crate::systemd::status("up to date"),
            // Offline is normal for an appliance; not worth more than a debug line.
            Err(e) => debug!(error = %e, "update check failed"),
        }
    }
}

fn reply(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn to_json(value: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({"error": e.to_string()}))
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/status") => match super::status(&shared.config) {
            Ok(s) => reply(StatusCode::OK, to_json(&s)),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": e.to_string()}),
            ),
        },
        (&Method::POST, "/check") => match super::check(&shared.config, None).await {
            Ok(r) => reply(StatusCode::OK, to_json(&r)),
            Err(e) => reply(StatusCode::BAD_GATEWAY, json!({"error": e.to_string()})),
        },
        (&Method::GET, "/progress") => {
            let state = shared.install.lock().map(|s| s.clone()).unwrap_or_default();
            reply(StatusCode::OK, to_json(&state))
        }
        (&Method::POST, "/apply") => start_install(shared),
        _ => reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
    }
}

fn start_install(shared: Arc<Shared>) -> Response<Full<Bytes>> {
    {
        let Ok(mut state) = shared.install.lock() else {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "state lock poisoned"}),
            );
        };
        if state.running {
            return reply(
                StatusCode::CONFLICT,
                json!({"error": "an install is already running"}),
            );
        }
        *state = InstallState {
            running: true,
            ..Default::default()
        };
    }
    tokio::spawn(async move {
        let progress = |p: &ApplyProgress| {
            if let Ok(mut s) = shared.install.lock() {
                s.progress = Some(p.clone());
            }
        };
        let result = super::apply(&shared.config, None, false, true, &progress).await;
        if let Ok(mut s) = shared.install.lock() {
            s.running = false;
            match result {
                Ok(record) => s.result = Some(record.result),
                Err(e) => s.error = Some(e.to_string()),
            }
        }
    });
    reply(StatusCode::ACCEPTED, json!({"status": "started"}))
}
