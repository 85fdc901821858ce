//! A streaming Matroska/WebM writer (hand-written EBML): the EBML header, a Segment of unknown
//! size, a reserved SeekHead, Info (1 ms timestamps, room reserved for the Duration), Tracks,
//! then Clusters of known size, each written whole when it closes. So a file cut off at any
//! moment (the process killed) is the header plus complete clusters, which players read up to
//! the last complete block. [`Writer::finish`] appends the last cluster and the Cues; when the
//! output can seek, [`Writer::patches`] says what to overwrite so the finished file has its
//! segment size, SeekHead (Info, Tracks, Cues) and Duration.

use super::depack::Codec;

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const SEEK_HEAD: u32 = 0x114D_9B74;
const SEEK: u32 = 0x4DBB;
const SEEK_ID: u32 = 0x53AB;
const SEEK_POSITION: u32 = 0x53AC;
const VOID: u32 = 0xEC;
const INFO: u32 = 0x1549_A966;
const DURATION: u32 = 0x4489;
const TRACKS: u32 = 0x1654_AE6B;
const CLUSTER: u32 = 0x1F43_B675;
const CUES: u32 = 0x1C53_BB6B;

/// A cluster closes before it spans this much (ms); block timestamps stay well inside i16.
pub const CLUSTER_MS: u64 = 5_000;
/// … or holds this many bytes.
pub const CLUSTER_BYTES: usize = 16 << 20;
/// Cue points kept (one per cluster): about 5 days of 5 s clusters.
const MAX_CUES: usize = 100_000;
/// Bytes reserved at the start of the segment for the SeekHead written at the end.
const SEEK_HEAD_ROOM: usize = 96;
/// Bytes a Duration element takes (ID, size, 8-byte float), reserved as a Void.
const DURATION_ROOM: usize = 11;

/// One track as the header describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackInfo {
    pub number: u8,
    pub codec: Codec,
    pub codec_private: Option<Vec<u8>>,
    pub width: u32,
    pub height: u32,
    pub channels: u8,
}

/// Patches for a seekable output: (offset from the start of the file, bytes).
pub type Patch = (u64, Vec<u8>);

pub struct Writer {
    /// Bytes handed out so far.
    written: u64,
    /// Where the segment's data starts (after its ID and size).
    segment_data: u64,
    segment_size_at: u64,
    seek_head_at: u64,
    duration_at: u64,
    info_at: u64,
    tracks_at: u64,
    cluster: Vec<u8>,
    cluster_ms: u64,
    cues: Vec<(u64, u8, u64)>,
    cues_at: Option<u64>,
}

impl Writer {
    /// The writer and the file's header.
    pub fn new(tracks: &[TrackInfo]) -> (Self, Vec<u8>) {
        let webm = tracks.iter().all(|t| t.codec != Codec::H264);
        let mut out = Vec::new();
        let mut h = Vec::new();
        uint(&mut h, 0x4286, 1); // EBMLVersion
        uint(&mut h, 0x42F7, 1); // EBMLReadVersion
        uint(&mut h, 0x42F2, 4); // EBMLMaxIDLength
        uint(&mut h, 0x42F3, 8); // EBMLMaxSizeLength
        string(&mut h, 0x4282, if webm { "webm" } else { "matroska" });
        uint(&mut h, 0x4287, 4); // DocTypeVersion
        uint(&mut h, 0x4285, 2); // DocTypeReadVersion
        master(&mut out, EBML, &h);
        id(&mut out, SEGMENT);
        let segment_size_at = out.len() as u64;
        out.extend_from_slice(&[0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]); // unknown
        let segment_data = out.len() as u64;
        let seek_head_at = out.len() as u64;
        void(&mut out, SEEK_HEAD_ROOM);
        let info_at = out.len() as u64;
        let mut info = Vec::new();
        uint(&mut info, 0x2AD7B1, 1_000_000); // TimestampScale: 1 ms
        string(&mut info, 0x4D80, "confab"); // MuxingApp
        string(&mut info, 0x5741, "confab"); // WritingApp
        let duration_in_info = info.len();
        void(&mut info, DURATION_ROOM);
        master(&mut out, INFO, &info);
        let duration_at = out.len() as u64 - (info.len() - duration_in_info) as u64;
        let tracks_at = out.len() as u64;
        let mut body = Vec::new();
        for t in tracks {
            master(&mut body, 0xAE, &track_entry(t));
        }
        master(&mut out, TRACKS, &body);
        let w = Writer {
            written: out.len() as u64,
            segment_data,
            segment_size_at,
            seek_head_at,
            duration_at,
            info_at,
            tracks_at,
            cluster: Vec::new(),
            cluster_ms: 0,
            cues: Vec::new(),
            cues_at: None,
        };
        (w, out)
    }

    /// One frame at `ms` (not before the previous one) as a SimpleBlock. A cluster that closes
    /// is appended to `out`. `cut` asks for a new cluster here (a video keyframe), unless the
    /// open one starts at the same millisecond.
    pub fn block(
        &mut self,
        track: u8,
        ms: u64,
        keyframe: bool,
        cut: bool,
        data: &[u8],
        out: &mut Vec<u8>,
    ) {
        let ms = ms.max(self.cluster_ms);
        if !self.cluster.is_empty()
            && ((cut && ms > self.cluster_ms)
                || ms - self.cluster_ms >= CLUSTER_MS
                || self.cluster.len() + data.len() > CLUSTER_BYTES)
        {
            self.close_cluster(out);
        }
        if self.cluster.is_empty() {
            self.cluster_ms = ms;
            if self.cues.len() < MAX_CUES {
                let pos = self.written - self.segment_data;
                self.cues.push((ms, track, pos));
            }
            uint(&mut self.cluster, 0xE7, ms); // Timestamp
        }
        let rel = (ms - self.cluster_ms) as i16;
        id(&mut self.cluster, 0xA3);
        size(&mut self.cluster, 4 + data.len() as u64);
        self.cluster.push(0x80 | track);
        self.cluster.extend_from_slice(&rel.to_be_bytes());
        self.cluster.push(if keyframe { 0x80 } else { 0 });
        self.cluster.extend_from_slice(data);
    }

    /// Writes the open cluster to `out` (nothing if it is empty).
    pub fn close_cluster(&mut self, out: &mut Vec<u8>) {
        if self.cluster.is_empty() {
            return;
        }
        let start = out.len();
        master(out, CLUSTER, &self.cluster);
        self.written += (out.len() - start) as u64;
        self.cluster.clear();
    }

    /// The last cluster and the Cues.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.close_cluster(out);
        if self.cues.is_empty() {
            return;
        }
        let mut body = Vec::new();
        for &(ms, track, pos) in &self.cues {
            let mut positions = Vec::new();
            uint(&mut positions, 0xF7, u64::from(track)); // CueTrack
            uint(&mut positions, 0xF1, pos); // CueClusterPosition
            let mut point = Vec::new();
            uint(&mut point, 0xB3, ms); // CueTime
            master(&mut point, 0xB7, &positions);
            master(&mut body, 0xBB, &point);
        }
        self.cues_at = Some(self.written - self.segment_data);
        let start = out.len();
        master(out, CUES, &body);
        self.written += (out.len() - start) as u64;
    }

    /// After [`Writer::finish`]: the segment size, SeekHead and Duration to write over what was
    /// reserved, for an output that can seek back.
    pub fn patches(&self, duration_ms: u64) -> Vec<Patch> {
        let mut seg_size = vec![0x01];
        seg_size.extend_from_slice(&(self.written - self.segment_data).to_be_bytes()[1..]);
        let mut seeks = Vec::new();
        let mut entries = vec![
            (INFO, self.info_at - self.segment_data),
            (TRACKS, self.tracks_at - self.segment_data),
        ];
        entries.extend(self.cues_at.map(|at| (CUES, at)));
        for (target, pos) in entries {
            let mut s = Vec::new();
            bytes(&mut s, SEEK_ID, &target.to_be_bytes());
            id(&mut s, SEEK_POSITION);
            size8(&mut s, 8);
            s.extend_from_slice(&pos.to_be_bytes());
            master(&mut seeks, SEEK, &s);
        }
        let mut head = Vec::new();
        master(&mut head, SEEK_HEAD, &seeks);
        let room = SEEK_HEAD_ROOM - head.len();
        void(&mut head, room);
        let mut duration = Vec::new();
        id(&mut duration, DURATION);
        size(&mut duration, 8);
        duration.extend_from_slice(&(duration_ms as f64).to_be_bytes());
        vec![
            (self.segment_size_at, seg_size),
            (self.seek_head_at, head),
            (self.duration_at, duration),
        ]
    }
}

fn track_entry(t: &TrackInfo) -> Vec<u8> {
    let mut e = Vec::new();
    uint(&mut e, 0xD7, u64::from(t.number)); // TrackNumber
    uint(&mut e, 0x73C5, u64::from(t.number)); // TrackUID
    uint(&mut e, 0x83, if t.codec.is_video() { 1 } else { 2 }); // TrackType
    uint(&mut e, 0x9C, 0); // FlagLacing
    let codec_id = match t.codec {
        Codec::Opus => "A_OPUS",
        Codec::Vp8 => "V_VP8",
        Codec::Vp9 => "V_VP9",
        Codec::Av1 => "V_AV1",
        Codec::H264 => "V_MPEG4/ISO/AVC",
    };
    string(&mut e, 0x86, codec_id);
    if t.codec == Codec::Opus {
        bytes(&mut e, 0x63A2, &opus_head(t.channels));
        uint(&mut e, 0x56AA, 0); // CodecDelay: pre-skip is 0 (unknown from RTP)
        uint(&mut e, 0x56BB, 80_000_000); // SeekPreRoll: 80 ms
        let mut a = Vec::new();
        float(&mut a, 0xB5, 48_000.0); // SamplingFrequency
        uint(&mut a, 0x9F, u64::from(t.channels.clamp(1, 2))); // Channels
        master(&mut e, 0xE1, &a);
    } else {
        if let Some(cp) = &t.codec_private {
            bytes(&mut e, 0x63A2, cp);
        }
        let mut v = Vec::new();
        uint(&mut v, 0xB0, u64::from(t.width)); // PixelWidth
        uint(&mut v, 0xBA, u64::from(t.height)); // PixelHeight
        master(&mut e, 0xE0, &v);
    }
    e
}

/// RFC 7845 identification header: version 1, channel mapping family 0, pre-skip 0.
fn opus_head(channels: u8) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(channels.clamp(1, 2));
    h.extend_from_slice(&0u16.to_le_bytes()); // pre-skip
    h.extend_from_slice(&48_000u32.to_le_bytes()); // input sample rate
    h.extend_from_slice(&0i16.to_le_bytes()); // output gain
    h.push(0); // mapping family
    h
}

fn id(out: &mut Vec<u8>, id: u32) {
    let b = id.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(3);
    out.extend_from_slice(&b[skip..]);
}

/// An EBML size in as few bytes as it fits (all-ones is reserved for "unknown").
fn size(out: &mut Vec<u8>, n: u64) {
    let len = (1..=8u32).find(|&l| n < (1u64 << (7 * l)) - 1).unwrap_or(8);
    let marked = n | (1u64 << (7 * len));
    out.extend_from_slice(&marked.to_be_bytes()[8 - len as usize..]);
}

/// An EBML size in exactly 8 bytes.
fn size8(out: &mut Vec<u8>, n: u64) {
    out.push(0x01);
    out.extend_from_slice(&n.to_be_bytes()[1..]);
}

fn master(out: &mut Vec<u8>, el: u32, body: &[u8]) {
    bytes(out, el, body);
}

fn bytes(out: &mut Vec<u8>, el: u32, body: &[u8]) {
    id(out, el);
    size(out, body.len() as u64);
    out.extend_from_slice(body);
}

fn uint(out: &mut Vec<u8>, el: u32, v: u64) {
    let b = v.to_be_bytes();
    let skip = b.iter().take_while(|&&x| x == 0).count().min(7);
    bytes(out, el, &b[skip..]);
}

fn float(out: &mut Vec<u8>, el: u32, v: f64) {
    bytes(out, el, &v.to_be_bytes());
}

fn string(out: &mut Vec<u8>, el: u32, s: &str) {
    bytes(out, el, s.as_bytes());
}

/// A Void element taking exactly `total` bytes (at least 2).
fn void(out: &mut Vec<u8>, total: usize) {
    let total = total.max(2);
    id(out, VOID);
    if total - 1 <= 127 {
        size(out, (total - 2) as u64);
        out.resize(out.len() + total - 2, 0);
    } else {
        size8(out, (total - 9) as u64);
        out.resize(out.len() + total - 9, 0);
    }
}

#[cfg(test)]
pub(crate) mod tests;
