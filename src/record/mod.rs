//! Recording without transcoding (LiveKit's Egress API for track and participant recordings):
//! the packets the SFU already forwards are written into Matroska/WebM files on the data
//! partition (`<state_dir>/recordings/`). The SFU taps the tracks (`sfu::record`), the media
//! threads hand the copies to the [`Recorder`] (an `sfu::RecordSink`: it only queues, bounded),
//! and the recorder thread (`writer.rs`) depacketizes and writes (`format/`), names files
//! (`names.rs`), keeps each recording's `EgressInfo` in the state database (`store.rs`) and
//! announces `egress_started` / `egress_updated` / `egress_ended`. `api/egress.rs` serves the
//! Twirp `livekit.Egress` service through it; `api/recordings.rs` the web app's and admin's.

mod disk;
pub mod format;
pub mod names;
mod store;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};

use livekit_protocol as lk;
use tracing::{info, warn};

use crate::media::MediaHandle;
use crate::sfu::{self, RecMsg, RecordTarget, Reply};
use crate::state::Store;
pub use store::is_active;
use writer::{Msg, Start, Writer};

/// Recorded packets waiting for the recorder thread: beyond this many bytes (or packets) new
/// ones are dropped (counted) rather than let the queue grow; the recording waits for the next
/// keyframe.
const MAX_QUEUE_BYTES: usize = 32 << 20;
const MAX_QUEUE_PACKETS: usize = 40_000;

/// Why a recording request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    /// End-to-end encrypted media, or a recording that is no longer running.
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    DiskFull(String),
    #[error("{0}")]
    Unavailable(String),
}

/// What the writer thread and the API side share.
pub(crate) struct Shared {
    store: Arc<dyn Store>,
    dir: PathBuf,
    min_free_bytes: u64,
    bus: crate::events::Bus,
    queued_bytes: AtomicUsize,
    queued_packets: AtomicUsize,
    dropped: AtomicU64,
}

impl Shared {
    fn note_dequeued(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.queued_packets.fetch_sub(1, Ordering::Relaxed);
    }

    /// Publishes an `egress_*` event (webhooks, metrics).
    fn webhook(&self, event: &str, info: &lk::EgressInfo) {
        self.bus.publish(crate::events::Event {
            webhook: lk::WebhookEvent {
                event: event.to_string(),
                room: Some(lk::Room {
                    sid: info.room_id.clone(),
                    name: info.room_name.clone(),
                    ..Default::default()
                }),
                egress_info: Some(info.clone()),
                ..Default::default()
            },
            agents: None,
        });
    }
}

/// The record service: its API for `api/`, and the sink the media threads hand packets to.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
    tx: Sender<Msg>,
    media: Arc<OnceLock<MediaHandle>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recorder({})", self.shared.dir.display())
    }
}

/// LiveKit's `{time}`: the UTC time as `2006-01-02T150405`.
pub fn time_name() -> String {
    let t = crate::clock::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}{:02}{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A new recording's `EgressInfo` (STARTING).
pub(crate) fn new_info(
    egress: &str,
    room: &str,
    room_sid: &str,
    request: lk::egress_info::Request,
) -> lk::EgressInfo {
    lk::EgressInfo {
        egress_id: egress.to_string(),
        room_id: room_sid.to_string(),
        room_name: room.to_string(),
        source_type: lk::EgressSourceType::Sdk as i32,
        status: lk::EgressStatus::EgressStarting as i32,
        updated_at: (crate::clock::unix_nanos()) as i64,
        request: Some(request),
        ..Default::default()
    }
}

impl Recorder {
    /// Opens the recordings directory (`dir`, created if missing), marks what a crash left
    /// running ABORTED, and starts the recorder thread. Call inside the tokio runtime.
    pub fn start(
        dir: &Path,
        min_free_bytes: u64,
        store: Arc<dyn Store>,
        bus: crate::events::Bus,
    ) -> std::io::Result<Recorder> {
        std::fs::create_dir_all(dir)?;
        let aborted = store::recover(store.as_ref(), dir);
        if aborted > 0 {
            warn!(
                aborted,
                "recordings were running when confab last stopped; marked ABORTED"
            );
        }
        let shared = Arc::new(Shared {
            store,
            dir: dir.to_path_buf(),
            min_free_bytes,
            bus,
            queued_bytes: AtomicUsize::new(0),
            queued_packets: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let media = Arc::new(OnceLock::new());
        let writer = Writer::new(
            rx,
            shared.clone(),
            media.clone(),
            tokio::runtime::Handle::current(),
        );
        std::thread::Builder::new()
            .name("confab-rec".into())
            .spawn(move || writer.run())?;
        info!(dir = %dir.display(), min_free_mb = min_free_bytes / 1_000_000, "recordings ready");
        Ok(Recorder { shared, tx, media })
    }

    /// The media threads the recorder asks for keyframes and stops taps through.
    pub fn attach_media(&self, media: MediaHandle) {
        let _ = self.media.set(media);
    }

    /// At shutdown, after the media threads stopped: finishes every running recording
    /// (COMPLETE, its file whole and synced), waiting at most `limit`.
    pub fn finish(&self, limit: std::time::Duration) {
        let (done, finished) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Finish(done)).is_ok() && finished.recv_timeout(limit).is_err() {
            warn!("recordings were not finished in time; they will be marked ABORTED");
        }
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Recorded packets dropped because the recorder thread fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn media(&self) -> Result<&MediaHandle, RecordError> {
        self.media
            .get()
            .ok_or_else(|| RecordError::Unavailable("the media engine is not running".into()))
    }

    /// Refuses when free space is below the reserve.
    pub fn check_space(&self) -> Result<(), RecordError> {
        let free = disk::free_bytes(&self.shared.dir)
            .map_err(|e| RecordError::Unavailable(format!("cannot read free disk space: {e}")))?;
        if free < self.shared.min_free_bytes {
            return Err(RecordError::DiskFull(format!(
                "not enough free disk space to record: {} MB free, recording.min_free_bytes is {} MB",
                free / 1_000_000,
                self.shared.min_free_bytes / 1_000_000
            )));
        }
        Ok(())
    }

    /// Starts a recording (`StartTrackEgress`, `StartParticipantEgress`): its `EgressInfo`
    /// (STARTING; ACTIVE once its first file is open).
    pub async fn start_recording(
        &self,
        room: &str,
        target: RecordTarget,
        filepath: &str,
        request: lk::egress_info::Request,
    ) -> Result<lk::EgressInfo, RecordError> {
        self.check_space()?;
        names::check(filepath).map_err(RecordError::Invalid)?;
        let media = self.media()?.clone();
        let egress = crate::ids::new_sid("EG_");
        let track = matches!(target, RecordTarget::Track { .. });
        let info = new_info(&egress, room, "", request);
        let gone = || RecordError::Unavailable("the recorder is not running".into());
        self.tx
            .send(Msg::Start(Box::new(Start {
                info: info.clone(),
                filepath: filepath.to_string(),
                track,
                vars: None,
            })))
            .map_err(|_| gone())?;
        let req = sfu::Request::Record {
            room: room.to_string(),
            egress: egress.clone(),
            target: target.clone(),
        };
        let key: Arc<str> = Arc::from(egress.as_str());
        let started = match media.request(room, req).await {
            Ok(Reply::Recording(Ok(s))) => s,
            other => {
                let _ = self.tx.send(Msg::Cancel { egress: key });
                return Err(match other {
                    Ok(Reply::Recording(Err(sfu::RecordRefused::NotFound(what)))) => {
                        RecordError::NotFound(format!("{what} not found"))
                    }
                    Ok(Reply::Recording(Err(e))) => RecordError::Precondition(e.to_string()),
                    _ => RecordError::Unavailable("the media engine did not answer".into()),
                });
            }
        };
        let vars = names::Vars {
            room_name: room.to_string(),
            room_id: started.room_sid.clone(),
            identity: started.identity.clone(),
            track_id: started
                .track
                .as_ref()
                .map(|t| t.sid.clone())
                .unwrap_or_default(),
            track_type: started
                .track
                .as_ref()
                .map(|t| {
                    if t.r#type == lk::TrackType::Video as i32 {
                        "video"
                    } else {
                        "audio"
                    }
                })
                .unwrap_or_default()
                .to_string(),
            track_source: started
                .track
                .as_ref()
                .and_then(|t| lk::TrackSource::try_from(t.source).ok())
                .map(|s| s.as_str_name().to_ascii_lowercase())
                .unwrap_or_default(),
            time: time_name(),
        };
        let _ = self.tx.send(Msg::Bound { egress: key, vars });
        info!(%room, %egress, identity = %started.identity, "recording asked for by the API");
        let mut info = info;
        info.room_id = started.room_sid;
        Ok(info)
    }

    /// The recordings known (newest first), filtered as `ListEgress` asks.
    pub fn list(&self, room: &str, egress: &str, active: bool) -> Vec<lk::EgressInfo> {
        store::all(self.shared.store.as_ref())
            .into_iter()
            .filter(|i| room.is_empty() || i.room_name == room)
            .filter(|i| egress.is_empty() || i.egress_id == egress)
            .filter(|i| !active || is_active(i))
            .collect()
    }

    pub fn get(&self, egress: &str) -> Option<lk::EgressInfo> {
        store::load(self.shared.store.as_ref(), egress)
    }

    /// `StopEgress`: the recording ends (its file finished); its info as ENDING.
    pub fn stop(&self, egress: &str) -> Result<lk::EgressInfo, RecordError> {
        let mut info = self
            .get(egress)
            .ok_or_else(|| RecordError::NotFound(format!("egress {egress:?} not found")))?;
        if !is_active(&info) {
            let status =
                lk::EgressStatus::try_from(info.status).map_or("finished", |s| s.as_str_name());
            return Err(RecordError::Precondition(format!(
                "egress {egress:?} is not running ({status})"
            )));
        }
        let _ = self.tx.send(Msg::Stop {
            egress: Arc::from(egress),
            reason: "stopped by StopEgress".into(),
        });
        info.status = lk::EgressStatus::EgressEnding as i32;
        Ok(info)
    }

    /// The room records everyone from now on (`Some(filepath)`), or stops recording (`None`).
    /// The recordings started or stopped.
    pub async fn record_room(
        &self,
        room: &str,
        filepath: Option<String>,
    ) -> Result<Vec<String>, RecordError> {
        if let Some(f) = &filepath {
            self.check_space()?;
            names::check(f).map_err(RecordError::Invalid)?;
        }
        let req = sfu::Request::RecordRoom {
            room: room.to_string(),
            filepath,
        };
        match self.media()?.request(room, req).await {
            Ok(Reply::RoomRecording(Ok(v))) => Ok(v),
            Ok(Reply::RoomRecording(Err(sfu::RecordRefused::NotFound(w)))) => {
                Err(RecordError::NotFound(format!("{w} not found")))
            }
            Ok(Reply::RoomRecording(Err(e))) => Err(RecordError::Precondition(e.to_string())),
            _ => Err(RecordError::Unavailable(
                "the media engine did not answer".into(),
            )),
        }
    }

    /// A file of a recording, as a path inside the recordings directory.
    pub fn file(&self, egress: &str, part: usize) -> Result<PathBuf, RecordError> {
        let info = self
            .get(egress)
            .ok_or_else(|| RecordError::NotFound(format!("recording {egress:?} not found")))?;
        let f = info.file_results.get(part).ok_or_else(|| {
            RecordError::NotFound(format!("recording {egress:?} has no file {part}"))
        })?;
        self.inside(&f.filename)
    }

    fn inside(&self, name: &str) -> Result<PathBuf, RecordError> {
        let rel = Path::new(name);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(RecordError::Invalid(format!(
                "{name:?} is not a recording's file"
            )));
        }
        Ok(self.shared.dir.join(rel))
    }

    /// Deletes a finished recording: its files and its entry.
    pub fn delete(&self, egress: &str) -> Result<(), RecordError> {
        let info = self
            .get(egress)
            .ok_or_else(|| RecordError::NotFound(format!("recording {egress:?} not found")))?;
        if is_active(&info) {
            return Err(RecordError::Precondition(
                "this recording is still running; stop it first".into(),
            ));
        }
        for f in &info.file_results {
            let path = self.inside(&f.filename)?;
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(RecordError::Unavailable(format!(
                        "cannot delete {}: {e}",
                        path.display()
                    )))
                }
            }
        }
        store::remove(self.shared.store.as_ref(), egress);
        info!(%egress, room = %info.room_name, "recording deleted");
        Ok(())
    }
}

impl sfu::RecordSink for Recorder {
    fn deliver(&self, msg: RecMsg) {
        if let RecMsg::Packet(p) = &msg {
            let n = p.payload.len();
            let bytes = self.shared.queued_bytes.load(Ordering::Relaxed);
            let packets = self.shared.queued_packets.load(Ordering::Relaxed);
            if bytes + n > MAX_QUEUE_BYTES || packets >= MAX_QUEUE_PACKETS {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.shared.queued_bytes.fetch_add(n, Ordering::Relaxed);
            self.shared.queued_packets.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self.tx.send(Msg::Media(msg));
    }
}
