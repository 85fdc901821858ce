//! The recorder thread (`confab-rec`): every running recording's files, written from the packets
//! the media threads hand over (`sfu::RecMsg`), never on a media thread. Per recording: the
//! tracks the SFU announced, the current file ("part": a participant's recording starts a new
//! part when its set of tracks changes, since a Matroska file declares its tracks up front), the
//! muxer (`format::Muxer`), and its `EgressInfo`, saved at each status change and every few
//! seconds, published as `egress_*` webhooks.
//!
//! Durability: each part is flushed and `fdatasync`ed every [`SYNC_EVERY`], so a crash or power
//! cut loses at most that much; the layout (an unknown-size Matroska segment of whole clusters)
//! plays as it is.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use str0m::format::Codec as RtcCodec;
use tracing::{info, warn};

use super::format::{Codec, Muxer, TrackSpec};
use super::names::{self, Vars};
use super::{disk, store, Shared};
use crate::media::MediaHandle;
use crate::sfu::record::{RecCodec, RecMsg, RecPacket};

/// How often a running part is flushed and synced to disk.
const SYNC_EVERY: Duration = Duration::from_secs(2);
/// While anything records, the thread takes what the media threads queued this often.
const BATCH_EVERY: Duration = Duration::from_millis(20);
/// How often a running recording's size and duration are saved.
const SAVE_EVERY: Duration = Duration::from_secs(5);
/// How often free space is checked.
const DISK_EVERY: Duration = Duration::from_secs(1);
/// A participant's recording waits this long after its first track for the others (a camera and
/// a microphone arrive a moment apart) before its file starts without them.
const GATHER: Duration = Duration::from_secs(2);
/// Packets held for a recording whose file has not started yet: at most this many bytes.
const HOLD_BYTES: usize = 4 << 20;
/// Keyframe requests for one track at most this often.
const KEYFRAME_EVERY: Duration = Duration::from_secs(1);

/// What the recorder thread is told.
pub enum Msg {
    Media(RecMsg),
    /// A recording asked for through the API, before the SFU starts its tap (what the tap sends
    /// is held until [`Msg::Bound`]).
    Start(Box<Start>),
    /// The SFU started the tap: the names for the files.
    Bound {
        egress: Arc<str>,
        vars: Vars,
    },
    /// The SFU refused the tap: forget the recording.
    Cancel {
        egress: Arc<str>,
    },
    /// StopEgress, or the disk reserve.
    Stop {
        egress: Arc<str>,
        reason: String,
    },
    /// The server stops: every recording is finished (COMPLETE, files whole), then `done`.
    Finish(std::sync::mpsc::Sender<()>),
}

pub struct Start {
    pub info: lk::EgressInfo,
    pub filepath: String,
    /// A track recording (else a participant's).
    pub track: bool,
    pub vars: Option<Vars>,
}

struct RecTrack {
    sid: Arc<str>,
    kind: i32,
    spec: Option<TrackSpec>,
}

struct Part {
    muxer: Muxer<BufWriter<File>>,
    sync: File,
    /// Track sid → the muxer's track index.
    index: HashMap<Arc<str>, usize>,
    /// Which of `info.file_results` this part is.
    result: usize,
    last_sync: Instant,
}

struct Rec {
    info: lk::EgressInfo,
    filepath: String,
    track_egress: bool,
    vars: Option<Vars>,
    tracks: Vec<RecTrack>,
    part: Option<Part>,
    parts: u32,
    /// Packets (with their arrival) held until the file starts.
    held: VecDeque<(u64, RecPacket)>,
    held_bytes: usize,
    first_track_at: Option<Instant>,
    /// The tracks changed since the part started: the next tick starts a new part.
    changed: bool,
    last_save: Instant,
    last_keyframe: HashMap<Arc<str>, Instant>,
    /// Packets received from the SFU, and how many of them were held for a part.
    received: u64,
    held_total: u64,
}

pub struct Writer {
    rx: Receiver<Msg>,
    shared: Arc<Shared>,
    media: Arc<OnceLock<MediaHandle>>,
    rt: tokio::runtime::Handle,
    recs: HashMap<Arc<str>, Rec>,
    epoch: Instant,
    last_disk: Instant,
}

fn unix_ns() -> i64 {
    (crate::clock::unix_millis() as i64).saturating_mul(1_000_000)
}

fn spec_of(c: &RecCodec) -> Option<TrackSpec> {
    let codec = match c.codec {
        RtcCodec::Opus => Codec::Opus,
        RtcCodec::Vp8 => Codec::Vp8,
        RtcCodec::Vp9 => Codec::Vp9,
        RtcCodec::Av1 => Codec::Av1,
        RtcCodec::H264 => Codec::H264,
        _ => return None,
    };
    Some(TrackSpec {
        codec,
        clock_rate: c.clock_rate,
        channels: c.channels,
    })
}

impl Writer {
    pub fn new(
        rx: Receiver<Msg>,
        shared: Arc<Shared>,
        media: Arc<OnceLock<MediaHandle>>,
        rt: tokio::runtime::Handle,
    ) -> Writer {
        let now = Instant::now();
        Writer {
            rx,
            shared,
            media,
            rt,
            recs: HashMap::new(),
            epoch: now,
            last_disk: now,
        }
    }

    /// Runs until every sender is gone (the server stopped); then finishes what runs.
    pub fn run(mut self) {
        loop {
            if self.recs.is_empty() {
                // Nothing recording: sleep until a message comes.
                match self.rx.recv_timeout(Duration::from_millis(200)) {
                    Ok(m) => self.handle(m),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                // Recording: wake on a timer and take a batch. A media thread's send then
                // never has to wake this thread (a wake per packet cost more than the packet).
                std::thread::sleep(BATCH_EVERY);
            }
            // Everything already queued before the periodic work.
            let mut gone = false;
            loop {
                match self.rx.try_recv() {
                    Ok(m) => self.handle(m),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        gone = true;
                        break;
                    }
                }
            }
            self.tick(Instant::now());
            if gone {
                break;
            }
        }
        let all: Vec<Arc<str>> = self.recs.keys().cloned().collect();
        for e in all {
            self.end(&e, "confab stopped", false);
        }
    }

    fn handle(&mut self, m: Msg) {
        match m {
            Msg::Media(RecMsg::Packet(p)) => {
                self.shared.note_dequeued(p.payload.len());
                self.packet(p);
            }
            Msg::Media(m) => self.media_event(m),
            Msg::Start(s) => self.start(*s),
            Msg::Bound { egress, vars } => {
                if let Some(r) = self.recs.get_mut(&egress) {
                    r.vars = Some(vars);
                }
            }
            Msg::Cancel { egress } => {
                if let Some(r) = self.recs.remove(&egress) {
                    store::remove(self.shared.store.as_ref(), &r.info.egress_id);
                }
            }
            Msg::Stop { egress, reason } => self.end(&egress, &reason, true),
            Msg::Finish(done) => {
                let all: Vec<Arc<str>> = self.recs.keys().cloned().collect();
                for e in all {
                    self.end(&e, "confab stopped", false);
                }
                let _ = done.send(());
            }
        }
    }

    fn media_event(&mut self, m: RecMsg) {
        match m {
            RecMsg::Started {
                egress,
                room,
                room_sid,
                identity,
                track,
                filepath,
            } => {
                let request = match &track {
                    Some(sid) => lk::egress_info::Request::Track(lk::TrackEgressRequest {
                        room_name: room.clone(),
                        track_id: sid.clone(),
                        output: Some(lk::track_egress_request::Output::File(
                            lk::DirectFileOutput {
                                filepath: filepath.clone(),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }),
                    None => lk::egress_info::Request::Participant(lk::ParticipantEgressRequest {
                        room_name: room.clone(),
                        identity: identity.clone(),
                        file_outputs: vec![lk::EncodedFileOutput {
                            filepath: filepath.clone(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                };
                let info = super::new_info(&egress, &room, &room_sid, request);
                let vars = Vars {
                    room_name: room,
                    room_id: room_sid,
                    identity,
                    track_id: track.clone().unwrap_or_default(),
                    time: super::time_name(),
                    ..Default::default()
                };
                self.start(Start {
                    info,
                    filepath,
                    track: track.is_some(),
                    vars: Some(vars),
                });
            }
            RecMsg::Track {
                egress,
                track,
                info,
                codec,
            } => self.track(&egress, track, &info, &codec),
            RecMsg::SenderReport {
                egress,
                track,
                ntp_unix_us,
                rtp_ts,
            } => {
                if let Some(part) = self.recs.get_mut(&egress).and_then(|r| r.part.as_mut()) {
                    if let Some(&i) = part.index.get(&track) {
                        part.muxer.sender_report(i, ntp_unix_us, rtp_ts);
                    }
                }
            }
            RecMsg::TrackEnded { egress, track } => {
                if let Some(r) = self.recs.get_mut(&egress) {
                    r.tracks.retain(|t| t.sid != track);
                    r.changed = r
                        .part
                        .as_ref()
                        .is_some_and(|p| p.index.contains_key(&track));
                }
            }
            RecMsg::Ended { egress, reason } => self.end(&egress, &reason, false),
            RecMsg::Packet(_) => {}
        }
    }

    fn start(&mut self, s: Start) {
        let egress: Arc<str> = Arc::from(s.info.egress_id.as_str());
        let now = Instant::now();
        let rec = Rec {
            info: s.info,
            filepath: s.filepath,
            track_egress: s.track,
            vars: s.vars,
            tracks: vec![],
            part: None,
            parts: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            first_track_at: None,
            changed: false,
            last_save: now,
            last_keyframe: HashMap::new(),
            received: 0,
            held_total: 0,
        };
        store::save(self.shared.store.as_ref(), &rec.info);
        self.shared
            .webhook(crate::events::EGRESS_STARTED, &rec.info);
        self.recs.insert(egress, rec);
    }

    fn track(&mut self, egress: &Arc<str>, sid: Arc<str>, info: &lk::TrackInfo, codec: &RecCodec) {
        let Some(r) = self.recs.get_mut(egress) else {
            return;
        };
        let spec = spec_of(codec);
        if spec.is_none() {
            warn!(%egress, track = %sid, codec = ?codec.codec, "this codec cannot be recorded; the track is left out");
            r.info.details = format!(
                "{:?} cannot be recorded; track {sid} was left out",
                codec.codec
            );
        }
        r.tracks.retain(|t| t.sid != sid);
        r.tracks.push(RecTrack {
            sid,
            kind: info.r#type,
            spec,
        });
        r.first_track_at.get_or_insert_with(Instant::now);
        if r.part.is_some() {
            r.changed = true;
        }
    }

    fn packet(&mut self, p: RecPacket) {
        let arrival_us = p.at.saturating_duration_since(self.epoch).as_micros() as u64;
        self.packet_at(p, arrival_us);
    }

    /// A packet that arrived at `arrival_us` (a held one keeps its arrival: the muxer aligns
    /// tracks by it until sender reports arrive).
    fn packet_at(&mut self, p: RecPacket, arrival_us: u64) {
        let Some(r) = self.recs.get_mut(&p.egress) else {
            return;
        };
        r.received += 1;
        if let Some(part) = r.part.as_mut().filter(|_| !r.changed) {
            let Some(&i) = part.index.get(&p.track) else {
                return;
            };
            if p.restart {
                part.muxer.restart(i);
            }
            let written = part
                .muxer
                .push(i, p.seq, p.ts, p.marker, &p.payload, arrival_us);
            if let Err(e) = written {
                self.failed(&p.egress, &format!("writing the recording failed: {e}"));
            }
            return;
        }
        // Held until the part starts (the oldest dropped beyond the bound).
        r.held_total += 1;
        r.held_bytes += p.payload.len();
        r.held.push_back((arrival_us, p));
        while r.held_bytes > HOLD_BYTES {
            match r.held.pop_front() {
                Some((_, old)) => r.held_bytes -= old.payload.len(),
                None => break,
            }
        }
    }

    /// The periodic work: start parts that are due, sync, save, keyframes, the disk reserve.
    fn tick(&mut self, now: Instant) {
        let egresses: Vec<Arc<str>> = self.recs.keys().cloned().collect();
        for e in &egresses {
            if let Err(err) = self.tick_one(e, now) {
                self.failed(e, &format!("writing the recording failed: {err}"));
            }
        }
        if now.duration_since(self.last_disk) >= DISK_EVERY && !self.recs.is_empty() {
            self.last_disk = now;
            self.check_disk();
        }
    }

    fn tick_one(&mut self, egress: &Arc<str>, now: Instant) -> std::io::Result<()> {
        let Some(r) = self.recs.get_mut(egress) else {
            return Ok(());
        };
        if r.changed {
            r.changed = false;
            finish_part(r, &self.shared.dir)?;
        }
        if r.part.is_none() && due(r, now) {
            self.start_part(egress)?;
        }
        let Some(r) = self.recs.get_mut(egress) else {
            return Ok(());
        };
        let Some(part) = r.part.as_mut() else {
            return Ok(());
        };
        if now.duration_since(part.last_sync) >= SYNC_EVERY {
            part.last_sync = now;
            part.muxer.flush()?;
            part.sync.sync_data()?;
            note_stats(&mut r.info, part);
        }
        if now.duration_since(r.last_save) >= SAVE_EVERY {
            r.last_save = now;
            r.info.updated_at = unix_ns();
            store::save(self.shared.store.as_ref(), &r.info);
        }
        let wanted: Vec<Arc<str>> = part
            .index
            .iter()
            .filter(|(_, &i)| part.muxer.needs_keyframe(i))
            .map(|(sid, _)| sid.clone())
            .filter(|sid| {
                r.last_keyframe
                    .get(sid)
                    .is_none_or(|t| now.duration_since(*t) >= KEYFRAME_EVERY)
            })
            .collect();
        let room = r.info.room_name.clone();
        for sid in &wanted {
            r.last_keyframe.insert(sid.clone(), now);
        }
        for sid in wanted {
            self.ask_media(
                &room,
                crate::sfu::Request::RecordingKeyframe {
                    room: room.clone(),
                    egress: egress.to_string(),
                    track: sid.to_string(),
                },
            );
        }
        Ok(())
    }

    /// Opens the next file of a recording with its current tracks, and writes what was held.
    fn start_part(&mut self, egress: &Arc<str>) -> std::io::Result<()> {
        let Some(r) = self.recs.get_mut(egress) else {
            return Ok(());
        };
        let Some(vars) = r.vars.clone() else {
            return Ok(());
        };
        let tracks: Vec<&RecTrack> = r.tracks.iter().filter(|t| t.spec.is_some()).collect();
        if tracks.is_empty() {
            return Ok(());
        }
        let h264 = tracks
            .iter()
            .any(|t| t.spec.as_ref().is_some_and(|s| s.codec == Codec::H264));
        let ext = if h264 { "mkv" } else { "webm" };
        let base = names::expand(&r.filepath, &vars, r.track_egress)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        if let Some(asked) = names::extension(&base).filter(|a| *a != ext) {
            r.info.details = format!(
                "written as {ext} (Matroska{}), not {asked}: confab records without transcoding",
                if ext == "webm" { "/WebM" } else { "" }
            );
        }
        r.parts += 1;
        let rel = names::part_name(&base, ext, r.parts);
        let (path, file) = names::create(&self.shared.dir, &rel)?;
        let sync = file.try_clone()?;
        let specs: Vec<TrackSpec> = tracks.iter().filter_map(|t| t.spec).collect();
        let index: HashMap<Arc<str>, usize> = tracks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.sid.clone(), i))
            .collect();
        let muxer = Muxer::new(BufWriter::with_capacity(256 << 10, file), specs)?;
        let filename = path
            .strip_prefix(self.shared.dir.canonicalize()?)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let now_ns = unix_ns();
        r.info.file_results.push(lk::FileInfo {
            filename: filename.clone(),
            started_at: now_ns,
            location: path.to_string_lossy().into_owned(),
            ..Default::default()
        });
        info!(egress = %egress, file = %filename, tracks = index.len(), "recording to a new file");
        r.part = Some(Part {
            muxer,
            sync,
            index,
            result: r.info.file_results.len() - 1,
            last_sync: Instant::now(),
        });
        if r.info.status == lk::EgressStatus::EgressStarting as i32 {
            r.info.status = lk::EgressStatus::EgressActive as i32;
            r.info.started_at = now_ns;
            r.info.updated_at = now_ns;
            store::save(self.shared.store.as_ref(), &r.info);
            self.shared.webhook(crate::events::EGRESS_UPDATED, &r.info);
        }
        let held: Vec<(u64, RecPacket)> = r.held.drain(..).collect();
        r.held_bytes = 0;
        // Counted when they arrived.
        r.received = r.received.saturating_sub(held.len() as u64);
        for (at, p) in held {
            self.packet_at(p, at);
        }
        Ok(())
    }

    /// Stops every recording when free space falls below the reserve (files finished, playable).
    fn check_disk(&mut self) {
        let free = match disk::free_bytes(&self.shared.dir) {
            Ok(f) => f,
            Err(e) => {
                warn!(error = %e, "cannot read the recordings' free disk space");
                return;
            }
        };
        if free >= self.shared.min_free_bytes {
            return;
        }
        let reason = format!(
            "stopped: the disk has {} MB free, less than recording.min_free_bytes ({} MB)",
            free / 1_000_000,
            self.shared.min_free_bytes / 1_000_000
        );
        warn!(%reason, "recordings stopped for lack of disk space");
        let all: Vec<Arc<str>> = self.recs.keys().cloned().collect();
        for e in all {
            self.end(&e, &reason, true);
        }
    }

    /// A recording ends: its part finished, COMPLETE (with the reason in `details`), saved,
    /// announced. `tell_sfu`: the tap is still running and must stop.
    fn end(&mut self, egress: &Arc<str>, reason: &str, tell_sfu: bool) {
        let Some(mut r) = self.recs.remove(egress) else {
            return;
        };
        if tell_sfu {
            self.stop_tap(&r.info.room_name, egress, reason);
        }
        if r.info.status != lk::EgressStatus::EgressEnding as i32 {
            r.info.status = lk::EgressStatus::EgressEnding as i32;
            r.info.updated_at = unix_ns();
            self.shared.webhook(crate::events::EGRESS_UPDATED, &r.info);
        }
        let finished = finish_part(&mut r, &self.shared.dir);
        r.info.ended_at = unix_ns();
        r.info.updated_at = r.info.ended_at;
        match finished {
            Err(e) => {
                r.info.status = lk::EgressStatus::EgressFailed as i32;
                r.info.error = format!("finishing the recording's file failed: {e}");
            }
            Ok(()) => {
                r.info.status = lk::EgressStatus::EgressComplete as i32;
                let nothing = r.info.file_results.is_empty();
                let note = if nothing {
                    format!("{reason}; nothing was recorded (no media arrived)")
                } else {
                    reason.to_string()
                };
                r.info.details = if r.info.details.is_empty() {
                    note
                } else {
                    format!("{}; {note}", r.info.details)
                };
            }
        }
        info!(egress = %egress, room = %r.info.room_name, files = r.info.file_results.len(), received = r.received, held = r.held_total, dropped_in_queue = self.shared.dropped.load(std::sync::atomic::Ordering::Relaxed), %reason, "recording ended");
        store::save(self.shared.store.as_ref(), &r.info);
        self.shared.webhook(crate::events::EGRESS_ENDED, &r.info);
    }

    /// Writing failed: what was written is kept (and plays), the recording is FAILED.
    fn failed(&mut self, egress: &Arc<str>, error: &str) {
        let Some(mut r) = self.recs.remove(egress) else {
            return;
        };
        warn!(egress = %egress, %error, "recording failed");
        self.stop_tap(&r.info.room_name, egress, error);
        let _ = finish_part(&mut r, &self.shared.dir);
        r.info.status = lk::EgressStatus::EgressFailed as i32;
        r.info.error = error.to_string();
        r.info.ended_at = unix_ns();
        r.info.updated_at = r.info.ended_at;
        store::save(self.shared.store.as_ref(), &r.info);
        self.shared.webhook(crate::events::EGRESS_ENDED, &r.info);
    }

    fn stop_tap(&self, room: &str, egress: &str, reason: &str) {
        self.ask_media(
            room,
            crate::sfu::Request::StopRecording {
                room: room.to_string(),
                egress: egress.to_string(),
                reason: reason.to_string(),
            },
        );
    }

    /// Sends a request to the media thread hosting `room` without waiting for its answer.
    fn ask_media(&self, room: &str, req: crate::sfu::Request) {
        let Some(media) = self.media.get().cloned() else {
            return;
        };
        let room = room.to_string();
        self.rt.spawn(async move {
            let _ = media.request(&room, req).await;
        });
    }
}

/// Whether a recording without a file should start one now: it has a name and a track it can
/// record; a participant's waits for both audio and video, or [`GATHER`] after its first track.
fn due(r: &Rec, now: Instant) -> bool {
    if r.vars.is_none() || !r.tracks.iter().any(|t| t.spec.is_some()) {
        return false;
    }
    if r.track_egress {
        return true;
    }
    let kinds = |k: lk::TrackType| {
        r.tracks
            .iter()
            .any(|t| t.kind == k as i32 && t.spec.is_some())
    };
    (kinds(lk::TrackType::Audio) && kinds(lk::TrackType::Video))
        || r.first_track_at
            .is_some_and(|t| now.duration_since(t) >= GATHER)
}

fn note_stats(info: &mut lk::EgressInfo, part: &Part) {
    let stats = part.muxer.stats();
    if let Some(f) = info.file_results.get_mut(part.result) {
        f.size = stats.bytes_written as i64;
        f.duration = (stats.duration_ms as i64).saturating_mul(1_000_000);
    }
}

/// Finishes the current part (if any): the muxer's end, flushed and synced; its figures from
/// the file as written.
fn finish_part(r: &mut Rec, dir: &Path) -> std::io::Result<()> {
    let Some(part) = r.part.take() else {
        return Ok(());
    };
    let result = part.result;
    // A finished file gets its Duration, segment size and index written in place.
    let (w, stats) = part.muxer.finish_seekable()?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    info!(
        egress = %r.info.egress_id,
        frames = stats.frames_written,
        frames_dropped = stats.frames_dropped,
        packets = stats.packets,
        packets_lost = stats.packets_lost,
        packets_dropped = stats.packets_dropped,
        ms = stats.duration_ms,
        "recording file finished"
    );
    if let Some(f) = r.info.file_results.get_mut(result) {
        let path: PathBuf = dir.join(&f.filename);
        f.size = std::fs::metadata(&path).map_or(stats.bytes_written as i64, |m| m.len() as i64);
        f.duration = (stats.duration_ms as i64).saturating_mul(1_000_000);
        f.ended_at = unix_ns();
    }
    Ok(())
}
