//! Everything confab says to systemd, in one place: `READY=1`, `STATUS=`, `WATCHDOG=1`,
//! `STOPPING=1` (pure-Rust `sd-notify`; each call is a no-op when `NOTIFY_SOCKET` is unset), and
//! the choice of log output: journald with structured fields under systemd, human stderr otherwise.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, warn};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::media::Heartbeat;

/// Sets up logging. `JOURNAL_STREAM` is set by systemd when stderr goes to the journal; then we log
/// to journald directly (fields, priorities). Falls back to stderr if journald cannot be reached.
pub fn init_logging(filter: &str) {
    let filter = EnvFilter::builder()
        .with_regex(false)
        .parse(filter)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(layer) => {
                let _ = registry
                    .with(layer.with_syslog_identifier("confab".to_string()))
                    .try_init();
                return;
            }
            Err(e) => eprintln!("confab: journald unavailable ({e}); logging to stderr"),
        }
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour only for a person at a terminal, not in files and pipes.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .try_init();
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// Everything is bound and serving.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The one-line summary `systemctl status confab` shows.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("shutting down")]);
}

/// The watchdog period systemd asked for (`WatchdogSec=`), if any.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pets the systemd watchdog at half its period, but only while every media loop's heartbeat is
/// fresh: one stuck media thread stops the petting and systemd restarts the service.
pub fn spawn_watchdog(heartbeats: Vec<Arc<Heartbeat>>) -> Option<tokio::task::JoinHandle<()>> {
    let period = watchdog_period()?;
    let every = period / 2;
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let age = crate::media::oldest(&heartbeats);
            if age < period {
                send(&[NotifyState::Watchdog]);
            } else {
                warn!(
                    stalled_ms = age.as_millis() as u64,
                    "media loop stalled; not petting the watchdog"
                );
            }
        }
    }))
}
