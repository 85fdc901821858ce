//! Readiness: the checks behind `/api/health/ready` (state open and writable, media loop alive,
//! TLS loaded) and the draining flag set at shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::media::Heartbeat;
use crate::state::Store;

/// A media loop that has not turned for this long is reported stuck.
pub const MEDIA_STALL: Duration = Duration::from_secs(5);

pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

pub struct Readiness {
    pub state: Arc<dyn Store>,
    /// One per media thread: the check fails when any of them stalls.
    pub media: Vec<Arc<Heartbeat>>,
    pub tls_loaded: AtomicBool,
    pub draining: AtomicBool,
}

impl Readiness {
    pub fn new(state: Arc<dyn Store>, media: Vec<Arc<Heartbeat>>) -> Self {
        Readiness {
            state,
            media,
            tls_loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    pub fn checks(&self) -> Vec<Check> {
        let state_ok = self.state.healthy();
        let ages: Vec<std::time::Duration> = self.media.iter().map(|h| h.age()).collect();
        let media_age = ages.iter().copied().max().unwrap_or_default();
        let stalled: Vec<String> = ages
            .iter()
            .enumerate()
            .filter(|(_, a)| **a >= MEDIA_STALL)
            .map(|(i, _)| i.to_string())
            .collect();
        let tls = self.tls_loaded.load(Ordering::Relaxed);
        let draining = self.draining.load(Ordering::Relaxed);
        vec![
            Check {
                name: "state",
                ok: state_ok,
                detail: if state_ok {
                    format!("open, schema v{}", self.state.schema_version())
                } else {
                    "a write to the state database failed (disk full or I/O error?)".into()
                },
            },
            Check {
                name: "media",
                ok: media_age < MEDIA_STALL && !ages.is_empty(),
                detail: match (ages.len(), stalled.is_empty()) {
                    (1, _) => format!("media loop last turned {} ms ago", media_age.as_millis()),
                    (n, true) => format!(
                        "{n} media loops, the slowest last turned {} ms ago",
                        media_age.as_millis()
                    ),
                    (n, false) => format!(
                        "media loop {} of {n} stalled: last turned {} ms ago",
                        stalled.join(", "),
                        media_age.as_millis()
                    ),
                },
            },
            Check {
                name: "tls",
                ok: tls,
                detail: if tls { "loaded" } else { "not loaded" }.into(),
            },
            Check {
                name: "shutdown",
                ok: !draining,
                detail: if draining {
                    "shutting down, draining connections"
                } else {
                    "serving"
                }
                .into(),
            },
        ]
    }
}
