//! The muxer: packets → jitter buffer → depacketizer → keyframe gate → timeline → interleave
//! window → Matroska writer → `out`.

use std::collections::BTreeMap;
use std::io::{self, Seek, SeekFrom, Write};

use super::depack::{Codec, Depacketizer, Frame, Params};
use super::jitter::{self, Admit, Jitter, Released};
use super::mkv::{TrackInfo, Writer};

/// Frames are held this long (media time behind the newest) before they are written, so that
/// tracks interleave in timestamp order.
pub const INTERLEAVE_US: i64 = 500_000;
/// Before the header is written (each video track waits for its first keyframe, for its
/// dimensions and CodecPrivate), at most this much media is held.
pub const HEADER_HOLD_US: i64 = 5_000_000;
/// What the interleave window may hold at most, whatever the times say.
pub const MAX_PENDING_FRAMES: usize = 8_192;
pub const MAX_PENDING_BYTES: usize = 32 << 20;
/// A track's timestamps that disagree with its arrival times by more than this are re-anchored
/// to arrival time (a bogus jump; a real mute keeps both in step).
const MAX_SKEW_US: i64 = 10_000_000;
/// A sender report that moves a track by more than this is not believed.
const MAX_SR_CORRECTION_US: i64 = 5_000_000;
/// Dimensions written for a video track whose header could not be read in time.
const DEFAULT_SIZE: (u32, u32) = (640, 480);
/// Track numbers are one byte in a SimpleBlock here.
const MAX_TRACKS: usize = 126;

/// One track of the recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackSpec {
    pub codec: Codec,
    /// The RTP clock rate (48000 for Opus, 90000 for video).
    pub clock_rate: u32,
    /// Audio channels (Opus: 1 or 2; ignored for video).
    pub channels: u8,
}

/// What a recording did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes_written: u64,
    /// Timestamp of the last frame written (ms from the first).
    pub duration_ms: u64,
    pub frames_written: u64,
    pub packets: u64,
    /// Sequence numbers never received (skipped by the jitter buffer).
    pub packets_lost: u64,
    /// Duplicates, packets too old, packets that did not parse.
    pub packets_dropped: u64,
    /// Frames not written: incomplete, waiting for a keyframe, or too late to interleave.
    pub frames_dropped: u64,
}

struct Track {
    spec: TrackSpec,
    jitter: Jitter,
    depack: Depacketizer,
    /// Video: frames are dropped until a keyframe (start, loss, restart).
    need_keyframe: bool,
    /// Video: a frame was dropped at write time; later ones wait for a keyframe there too.
    write_broken: bool,
    seen_keyframe: bool,
    /// The last frame's RTP timestamp and its extended value.
    last_ts: Option<(u32, i64)>,
    /// media µs = extended ts in µs + offset; `None` until the stream's first frame.
    offset_us: Option<i64>,
    /// media µs − arrival µs when anchored, to tell a mute from a bogus timestamp jump.
    skew_us: i64,
    last_media_us: Option<i64>,
    /// The latest sender report (NTP as Unix µs, RTP ts), and whether it aligned the track.
    sr: Option<(u64, u32)>,
    sr_applied: bool,
    /// The latest packet's arrival and RTP ts (to place a sender report on the arrival clock).
    last_packet: Option<(u64, u32)>,
    /// The file time of the track's last block: a block never repeats it (two frames rounded
    /// to one millisecond, or pulled together by a sender report, are 1 ms apart).
    last_block_ms: Option<u64>,
}

struct Pending {
    track: usize,
    keyframe: bool,
    data: Vec<u8>,
}

/// Received RTP packets of some tracks → one Matroska/WebM stream written to `out`.
pub struct Muxer<W: Write> {
    out: W,
    tracks: Vec<Track>,
    writer: Option<Writer>,
    pending: BTreeMap<(i64, u64), Pending>,
    pending_bytes: usize,
    order: u64,
    newest_us: Option<i64>,
    written_us: Option<i64>,
    origin_us: Option<i64>,
    /// arrival µs − NTP µs, from the first sender report.
    wall_offset: Option<i64>,
    stats: Stats,
    frames: Vec<Frame>,
    buf: Vec<u8>,
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

impl<W: Write> Muxer<W> {
    /// A muxer for `tracks` (numbered from 1 in the file, in this order). The header is written
    /// once every video track has had a keyframe, or [`HEADER_HOLD_US`] of media later.
    pub fn new(out: W, tracks: Vec<TrackSpec>) -> io::Result<Self> {
        if tracks.is_empty() || tracks.len() > MAX_TRACKS {
            return Err(invalid("a recording has 1 to 126 tracks"));
        }
        if tracks
            .iter()
            .any(|t| t.clock_rate == 0 || t.clock_rate > 1_000_000)
        {
            return Err(invalid("RTP clock rate out of range"));
        }
        let tracks = tracks
            .into_iter()
            .map(|spec| Track {
                spec,
                jitter: Jitter::new(jitter::Config::for_clock(spec.clock_rate)),
                depack: Depacketizer::new(spec.codec),
                need_keyframe: spec.codec.is_video(),
                write_broken: false,
                seen_keyframe: false,
                last_ts: None,
                offset_us: None,
                skew_us: 0,
                last_media_us: None,
                sr: None,
                sr_applied: false,
                last_packet: None,
                last_block_ms: None,
            })
            .collect();
        Ok(Muxer {
            out,
            tracks,
            writer: None,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            order: 0,
            newest_us: None,
            written_us: None,
            origin_us: None,
            wall_offset: None,
            stats: Stats::default(),
            frames: Vec::new(),
            buf: Vec::new(),
        })
    }

    /// One received RTP packet of track `track` (index into the tracks given to `new`).
    /// `arrival_us`: the caller's monotonic microseconds (no clock is read in here). Bad
    /// payloads are counted and dropped; an error is the output's, or a track out of range.
    pub fn push(
        &mut self,
        track: usize,
        seq: u16,
        rtp_ts: u32,
        marker: bool,
        payload: &[u8],
        arrival_us: u64,
    ) -> io::Result<()> {
        let t = self
            .tracks
            .get_mut(track)
            .ok_or_else(|| invalid("no such track"))?;
        self.stats.packets += 1;
        t.last_packet = Some((arrival_us, rtp_ts));
        match t.jitter.push(seq, rtp_ts, marker, payload, arrival_us) {
            Admit::Held => {}
            Admit::Duplicate | Admit::TooOld => self.stats.packets_dropped += 1,
        }
        // Every track's gaps time out on the arrival clock, not only this one's.
        for i in 0..self.tracks.len() {
            self.release(i, Some(arrival_us));
        }
        self.drain(false)
    }

    /// An RTCP sender report for the track: RTP time `rtp_ts` is wall-clock `ntp_unix_us`. It
    /// aligns the tracks of one participant (lip sync): the first one per stream places the
    /// track on the common timeline. Before any, tracks are aligned by arrival time.
    pub fn sender_report(&mut self, track: usize, ntp_unix_us: u64, rtp_ts: u32) {
        let Some(t) = self.tracks.get_mut(track) else {
            return;
        };
        let Ok(ntp) = i64::try_from(ntp_unix_us) else {
            return;
        };
        t.sr = Some((ntp_unix_us, rtp_ts));
        if self.wall_offset.is_none() {
            if let Some((arrival, ts)) = t.last_packet {
                let d = ticks_us(i64::from(ts.wrapping_sub(rtp_ts) as i32), t.spec.clock_rate);
                self.wall_offset = (arrival as i64).checked_sub(ntp.saturating_add(d));
            }
        }
        if t.offset_us.is_some() && !t.sr_applied {
            if let Some(off) = sr_offset(t, self.wall_offset) {
                let now = t.offset_us.unwrap_or(off);
                if (off - now).abs() <= MAX_SR_CORRECTION_US {
                    t.skew_us += off - now;
                    t.offset_us = Some(off);
                }
                t.sr_applied = true;
            }
        }
    }

    /// The publisher's stream for this track changed (new SSRC, simulcast layer, reconnect):
    /// depacketization and sequence tracking start over, video waits for a keyframe, and media
    /// time goes on from where the track was (never backwards).
    pub fn restart(&mut self, track: usize) {
        let Some(t) = self.tracks.get_mut(track) else {
            return;
        };
        t.jitter.reset();
        t.depack.reset();
        t.need_keyframe = t.spec.codec.is_video();
        t.last_ts = None;
        t.offset_us = None;
        t.sr = None;
        t.sr_applied = false;
        t.last_packet = None;
    }

    /// Whether track `track` waits for a keyframe (the caller then sends a PLI, throttled).
    pub fn needs_keyframe(&self, track: usize) -> bool {
        self.tracks
            .get(track)
            .is_some_and(|t| t.need_keyframe || t.write_broken)
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Closes the open cluster and writes it, then flushes `out` (the caller fsyncs). Frames
    /// still in the jitter buffers and the interleave window stay there.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(w) = &mut self.writer {
            let mut buf = std::mem::take(&mut self.buf);
            w.close_cluster(&mut buf);
            let r = self.emit(&buf);
            buf.clear();
            self.buf = buf;
            r?;
        }
        self.out.flush()
    }

    /// Writes everything still held (gaps are not waited for) and the Cues. The segment's
    /// size and the Duration stay unknown: see [`Muxer::finish_seekable`].
    pub fn finish(mut self) -> io::Result<(W, Stats)> {
        self.finish_stream()?;
        self.out.flush()?;
        Ok((self.out, self.stats))
    }

    /// Drains the jitter buffers and the interleave window, writes the header if it was not,
    /// the last cluster and the Cues.
    fn finish_stream(&mut self) -> io::Result<()> {
        for i in 0..self.tracks.len() {
            self.release(i, None);
        }
        self.drain(true)?;
        if self.writer.is_none() {
            self.write_header()?;
        }
        let mut buf = Vec::new();
        if let Some(w) = &mut self.writer {
            w.finish(&mut buf);
        }
        self.emit(&buf)
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.stats.bytes_written += bytes.len() as u64;
        Ok(())
    }

    /// Packets the track's jitter buffer lets go (at `now`, or all of them) → frames → queue.
    fn release(&mut self, i: usize, now: Option<u64>) {
        let mut frames = std::mem::take(&mut self.frames);
        while let Some(t) = self.tracks.get_mut(i) {
            let r = match now {
                Some(now) => t.jitter.pop(now),
                None => t.jitter.drain(),
            };
            let Some(r) = r else { break };
            let dropped = t.depack.dropped();
            match r {
                Released::Lost(n) => {
                    self.stats.packets_lost += n;
                    t.depack.lost();
                    t.need_keyframe |= t.spec.codec.is_video();
                }
                Released::Packet(p) => {
                    let res = t
                        .depack
                        .push(p.ts, p.marker, &p.payload, p.arrival_us, &mut frames);
                    if res.is_err() {
                        self.stats.packets_dropped += 1;
                    }
                }
            }
            let newly = t.depack.dropped() - dropped;
            if newly > 0 {
                self.stats.frames_dropped += newly;
                t.need_keyframe |= t.spec.codec.is_video();
            }
            for f in frames.drain(..) {
                self.accept(i, f);
            }
        }
        self.frames = frames;
    }

    /// The keyframe gate and the timeline: the frame joins the interleave window, or is dropped.
    fn accept(&mut self, i: usize, f: Frame) {
        let wall = self.wall_offset;
        let Some(t) = self.tracks.get_mut(i) else {
            return;
        };
        let video = t.spec.codec.is_video();
        if video && t.need_keyframe {
            if !f.keyframe {
                self.stats.frames_dropped += 1;
                return;
            }
            t.need_keyframe = false;
        }
        t.seen_keyframe |= f.keyframe;
        let media = place(t, &f, wall);
        if media.is_none() || t.last_media_us.zip(media).is_some_and(|(last, m)| m < last) {
            // Its timestamp went backwards: what follows may refer to frames not written.
            self.stats.frames_dropped += 1;
            t.need_keyframe |= video;
            return;
        }
        let Some(media) = media else { return };
        t.last_media_us = Some(media);
        self.newest_us = Some(self.newest_us.map_or(media, |n| n.max(media)));
        self.pending_bytes += f.data.len();
        self.order += 1;
        self.pending.insert(
            (media, self.order),
            Pending {
                track: i,
                keyframe: f.keyframe,
                data: f.data,
            },
        );
    }

    /// Writes what the interleave window lets go (all of it with `force`), the header first.
    fn drain(&mut self, force: bool) -> io::Result<()> {
        while let Some((&(at, _), _)) = self.pending.first_key_value() {
            let behind = self.newest_us.unwrap_or(at).saturating_sub(at);
            let over =
                self.pending.len() > MAX_PENDING_FRAMES || self.pending_bytes > MAX_PENDING_BYTES;
            if self.writer.is_none() {
                let ready = self
                    .tracks
                    .iter()
                    .all(|t| !t.spec.codec.is_video() || t.seen_keyframe);
                if !(ready || force || over || behind >= HEADER_HOLD_US) {
                    return Ok(());
                }
                if ready {
                    self.start_at_first_keyframe();
                }
                self.write_header()?;
            }
            if !(force || over || behind >= INTERLEAVE_US) {
                return Ok(());
            }
            let Some(((at, _), p)) = self.pending.pop_first() else {
                break;
            };
            self.pending_bytes -= p.data.len();
            self.write_frame(at, p)?;
        }
        Ok(())
    }

    /// The file starts with its video: what the other tracks sent before the first video
    /// keyframe held is dropped (audio and video then start within a frame of each other).
    fn start_at_first_keyframe(&mut self) {
        let tracks = &self.tracks;
        let first = self
            .pending
            .iter()
            .filter(|(_, p)| {
                p.keyframe && tracks.get(p.track).is_some_and(|t| t.spec.codec.is_video())
            })
            .map(|((at, _), _)| *at)
            .min();
        let Some(start) = first else {
            return;
        };
        let keep = self.pending.split_off(&(start, 0));
        let before = std::mem::replace(&mut self.pending, keep);
        for p in before.values() {
            self.pending_bytes -= p.data.len();
            self.stats.frames_dropped += 1;
        }
    }

    fn write_header(&mut self) -> io::Result<()> {
        let infos: Vec<TrackInfo> = self
            .tracks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let p: &Params = t.depack.params();
                let (width, height) = if p.width > 0 && p.height > 0 {
                    (p.width, p.height)
                } else {
                    DEFAULT_SIZE
                };
                TrackInfo {
                    number: (i + 1) as u8,
                    codec: t.spec.codec,
                    codec_private: p.codec_private.clone(),
                    width,
                    height,
                    channels: t.spec.channels,
                }
            })
            .collect();
        let (writer, header) = Writer::new(&infos);
        self.writer = Some(writer);
        self.emit(&header)
    }

    fn write_frame(&mut self, at: i64, p: Pending) -> io::Result<()> {
        let late = self.written_us.is_some_and(|w| at < w);
        let Some(t) = self.tracks.get_mut(p.track) else {
            return Ok(());
        };
        let video = t.spec.codec.is_video();
        if late || (video && t.write_broken && !p.keyframe) {
            // Never out of order; a video frame missing breaks what refers to it.
            self.stats.frames_dropped += 1;
            t.write_broken |= video;
            return Ok(());
        }
        t.write_broken = false;
        let last_block = t.last_block_ms;
        let origin = *self.origin_us.get_or_insert(at);
        let mut ms = u64::try_from(at.saturating_sub(origin) / 1000).unwrap_or(0);
        if let Some(last) = last_block.filter(|l| ms <= *l) {
            ms = last + 1;
        }
        if let Some(t) = self.tracks.get_mut(p.track) {
            t.last_block_ms = Some(ms);
        }
        let mut buf = std::mem::take(&mut self.buf);
        if let Some(w) = &mut self.writer {
            w.block(
                (p.track + 1) as u8,
                ms,
                p.keyframe || !video,
                video && p.keyframe,
                &p.data,
                &mut buf,
            );
        }
        let r = self.emit(&buf);
        buf.clear();
        self.buf = buf;
        self.written_us = Some(at);
        self.stats.frames_written += 1;
        self.stats.duration_ms = ms;
        r
    }
}

impl<W: Write + Seek> Muxer<W> {
    /// [`Muxer::finish`], then seeks back to write the segment's size, the SeekHead (Info,
    /// Tracks, Cues) and the Duration over the room reserved for them: a finished file is an
    /// ordinary seekable Matroska file. `out` must be where it was when it was given to `new`,
    /// plus what this muxer wrote.
    pub fn finish_seekable(mut self) -> io::Result<(W, Stats)> {
        self.finish_stream()?;
        let end = self.out.stream_position()?;
        let start = end
            .checked_sub(self.stats.bytes_written)
            .ok_or_else(|| invalid("output position before the recording's start"))?;
        if let Some(w) = &self.writer {
            for (at, bytes) in w.patches(self.stats.duration_ms) {
                self.out.seek(SeekFrom::Start(start + at))?;
                self.out.write_all(&bytes)?;
            }
        }
        self.out.seek(SeekFrom::Start(end))?;
        self.out.flush()?;
        Ok((self.out, self.stats))
    }
}

/// RTP clock ticks → µs.
fn ticks_us(ticks: i64, rate: u32) -> i64 {
    let us = i128::from(ticks) * 1_000_000 / i128::from(rate.max(1));
    i64::try_from(us).unwrap_or(if us < 0 { i64::MIN } else { i64::MAX })
}

/// The track's offset (media µs − ts µs) from its sender report, on the arrival clock.
fn sr_offset(t: &Track, wall: Option<i64>) -> Option<i64> {
    let (ntp, sr_ts) = t.sr?;
    let (ts, ext) = t.last_ts?;
    let sr_ext = ext.checked_add(i64::from(sr_ts.wrapping_sub(ts) as i32))?;
    i64::try_from(ntp)
        .ok()?
        .checked_add(wall?)?
        .checked_sub(ticks_us(sr_ext, t.spec.clock_rate))
}

/// The frame's media time: its RTP timestamp (unwrapped) on the track's anchor. A new stream is
/// anchored by its sender report if one came, else by arrival time, and never before the
/// track's last frame; a timestamp that strays from arrival time by more than
/// [`MAX_SKEW_US`] re-anchors by arrival.
fn place(t: &mut Track, f: &Frame, wall: Option<i64>) -> Option<i64> {
    let ext = match t.last_ts {
        None => i64::from(f.rtp_ts),
        Some((ts, ext)) => ext.checked_add(i64::from(f.rtp_ts.wrapping_sub(ts) as i32))?,
    };
    t.last_ts = Some((f.rtp_ts, ext));
    let ext_us = ticks_us(ext, t.spec.clock_rate);
    let arrival = i64::try_from(f.arrival_us).ok()?;
    if let Some(off) = t.offset_us {
        let media = ext_us.checked_add(off)?;
        if media
            .saturating_sub(arrival)
            .saturating_sub(t.skew_us)
            .abs()
            <= MAX_SKEW_US
        {
            return Some(media);
        }
    }
    let mut media = arrival;
    if let Some(off) = sr_offset(t, wall) {
        media = ext_us.checked_add(off)?;
        t.sr_applied = true;
    }
    if let Some(last) = t.last_media_us {
        media = media.max(last);
    }
    t.offset_us = Some(media.checked_sub(ext_us)?);
    t.skew_us = media.saturating_sub(arrival);
    Some(media)
}

#[cfg(test)]
mod tests;
