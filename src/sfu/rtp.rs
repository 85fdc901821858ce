//! Packet-level forwarding helpers: which RTP payloads start a keyframe (per codec, from the
//! payload formats' RFCs), and the per-subscription rewriting of sequence numbers and RTP
//! timestamps that keeps one continuous output stream across simulcast layer switches.
//!
//! Everything here is pure and works on borrowed bytes: no allocation, no panics on short or
//! malformed payloads (they are simply not keyframes).

use str0m::format::Codec;

/// Whether an RTP payload of `codec` is the first packet of a keyframe (a picture a decoder can
/// start on). Conservative: `false` for anything it cannot tell, including codecs it does not
/// know and payloads that are cut short.
pub fn starts_keyframe(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => vp8_starts_keyframe(payload),
        Codec::Vp9 => vp9_starts_keyframe(payload),
        Codec::H264 => h264_starts_keyframe(payload),
        Codec::H265 => h265_starts_keyframe(payload),
        Codec::Av1 => av1_starts_keyframe(payload),
        _ => false,
    }
}

/// VP8 (RFC 7741 §4.2, §4.3): the payload descriptor, then, at the start of the first partition
/// of a frame (S = 1, PID = 0), the VP8 payload header whose lowest bit (P, "inverse key frame
/// flag") is 0 for a keyframe.
pub fn vp8_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let extended = first & 0x80 != 0;
    let start = first & 0x10 != 0;
    let partition = first & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut at = 1;
    if extended {
        let Some(&x) = payload.get(at) else {
            return false;
        };
        at += 1;
        // I: PictureID (7 or 15 bits, M bit says which).
        if x & 0x80 != 0 {
            let Some(&pid) = payload.get(at) else {
                return false;
            };
            at += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        // L: TL0PICIDX.
        if x & 0x40 != 0 {
            at += 1;
        }
        // T or K: one octet with TID / Y / KEYIDX.
        if x & 0x30 != 0 {
            at += 1;
        }
    }
    payload.get(at).is_some_and(|h| h & 0x01 == 0)
}

/// Whether a VP8 payload descriptor carries a 15-bit PictureID (X, I and M bits set), the only
/// kind [`Vp8Munge`] rewrites.
pub fn vp8_has_long_picture_id(payload: &[u8]) -> bool {
    matches!(payload, [x, i, m, ..] if x & 0x80 != 0 && i & 0x80 != 0 && m & 0x80 != 0)
}

/// VP9 (RFC 9628 §4.2): the first octet of the payload descriptor has P (inter-picture
/// predicted) and B (start of a frame); a keyframe starts where B = 1 and P = 0 on the lowest
/// spatial layer (when the layer indices are present, L = 1, the spatial id must be 0).
pub fn vp9_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&first) = payload.first() else {
        return false;
    };
    let picture_id = first & 0x80 != 0;
    let inter = first & 0x40 != 0;
    let layers = first & 0x20 != 0;
    let begin = first & 0x08 != 0;
    if inter || !begin {
        return false;
    }
    if !layers {
        return true;
    }
    let mut at = 1;
    if picture_id {
        let Some(&pid) = payload.get(at) else {
            return false;
        };
        at += if pid & 0x80 != 0 { 2 } else { 1 };
    }
    // Layer indices: TID (3) U (1) SID (3) D (1).
    payload.get(at).is_some_and(|l| (l >> 1) & 0x07 == 0)
}

/// H.264 NAL unit types that let a decoder start: an IDR slice (5) or a sequence parameter set
/// (7, sent right before the IDR).
fn h264_key_nal(nal_header: u8) -> bool {
    matches!(nal_header & 0x1f, 5 | 7)
}

/// H.264 (RFC 6184 §5.6–5.8): a single NAL unit packet carrying an IDR slice or an SPS; a STAP-A
/// (24) aggregating one; or the start fragment (S = 1) of an FU-A (28) of an IDR slice.
pub fn h264_starts_keyframe(payload: &[u8]) -> bool {
    let Some(&header) = payload.first() else {
        return false;
    };
    match header & 0x1f {
        1..=23 => h264_key_nal(header),
        24 => {
            // STAP-A: (16-bit size, NAL unit)*.
            let mut at = 1;
            while let (Some(&hi), Some(&lo)) = (payload.get(at), payload.get(at + 1)) {
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                if size == 0 {
                    return false;
                }
                if payload.get(at + 2).is_some_and(|&n| h264_key_nal(n)) {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        28 => payload
            .get(1)
            .is_some_and(|&fu| fu & 0x80 != 0 && h264_key_nal(fu)),
        _ => false,
    }
}

/// H.265 NAL unit types that let a decoder start: IRAP pictures (16–21: BLA, IDR, CRA) and the
/// parameter sets sent before them (VPS 32, SPS 33).
fn h265_key_type(t: u8) -> bool {
    matches!(t, 16..=21 | 32 | 33)
}

/// H.265 (RFC 7798 §4.4): a single NAL unit packet of a key type, an aggregation packet (48)
/// holding one, or the start fragment of a fragmentation unit (49) of one.
pub fn h265_starts_keyframe(payload: &[u8]) -> bool {
    let (Some(&h0), Some(_)) = (payload.first(), payload.get(1)) else {
        return false;
    };
    match (h0 >> 1) & 0x3f {
        48 => {
            // AP: 2-octet header, then (16-bit size, NAL unit)* (no DONL: not negotiated).
            let mut at = 2;
            while let (Some(&hi), Some(&lo)) = (payload.get(at), payload.get(at + 1)) {
                let size = usize::from(u16::from_be_bytes([hi, lo]));
                if size == 0 {
                    return false;
                }
                if payload
                    .get(at + 2)
                    .is_some_and(|&n| h265_key_type((n >> 1) & 0x3f))
                {
                    return true;
                }
                at += 2 + size;
            }
            false
        }
        49 => payload
            .get(2)
            .is_some_and(|&fu| fu & 0x80 != 0 && h265_key_type(fu & 0x3f)),
        t => h265_key_type(t),
    }
}

/// AV1 (RTP payload format for AV1, §4.4): the aggregation header's N bit is set on the first
/// packet of a coded video sequence, which starts with a keyframe.
pub fn av1_starts_keyframe(payload: &[u8]) -> bool {
    payload.first().is_some_and(|&h| h & 0x08 != 0)
}

/// The rewriting of one forwarded stream for one subscriber. The output keeps str0m's SSRC for
/// the subscriber's section; sequence numbers and timestamps are the input's plus an offset,
/// recomputed whenever the input source changes (a simulcast layer switch, the first packet) so
/// that the output stays continuous: the next sequence number, and a timestamp a small step
/// after the last one.
#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    /// Output sequence number = input extended sequence number + `seq_offset` (mod 2^64).
    seq_offset: u64,
    /// Output RTP timestamp = input timestamp + `ts_offset` (mod 2^32).
    ts_offset: u32,
    /// Input packets of the current source before this one are dropped (they precede the
    /// switch point; mapping them would collide with what the previous source sent).
    first_in: u64,
    /// The highest output sequence number sent, and the timestamp sent with it.
    last_out: Option<(u64, u32)>,
    started: bool,
}

impl Rewrite {
    /// Starts forwarding a new source at input packet (`seq`, `ts`): the first packet ever keeps
    /// its timestamp and the low 16 bits of its sequence number (output rollover counter 0);
    /// after a switch the output goes on at the next sequence number, `ts_step` after the last
    /// timestamp.
    pub fn start(&mut self, seq: u64, ts: u32, ts_step: u32) {
        let (out_seq, out_ts) = match self.last_out {
            Some((s, t)) => (s.wrapping_add(1), t.wrapping_add(ts_step)),
            None => (seq & 0xffff, ts),
        };
        self.seq_offset = out_seq.wrapping_sub(seq);
        self.ts_offset = out_ts.wrapping_sub(ts);
        self.first_in = seq;
        self.started = true;
    }

    /// Continues an output stream another source left at (`seq`, `ts`): the next start goes on
    /// from there as after a switch.
    pub fn continue_after(&mut self, last: (u64, u32)) {
        if self.last_out.is_none() {
            self.last_out = Some(last);
        }
    }

    /// The highest output sequence number sent, and its timestamp.
    pub fn last_out(&self) -> Option<(u64, u32)> {
        self.last_out
    }

    /// Whether [`Rewrite::start`] was ever called.
    pub fn started(&self) -> bool {
        self.started
    }

    /// The output sequence number and timestamp for input packet (`seq`, `ts`) of the current
    /// source, or `None` when the packet precedes the switch point.
    pub fn map(&mut self, seq: u64, ts: u32) -> Option<(u64, u32)> {
        if !self.started || seq < self.first_in {
            return None;
        }
        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        // A late packet (reordered, or repaired by retransmission) keeps its place; only the
        // newest one moves the continuation point.
        if self.last_out.is_none_or(|(s, _)| out_seq > s) {
            self.last_out = Some((out_seq, out_ts));
        }
        Some((out_seq, out_ts))
    }
}

/// VP8 PictureID and TL0PICIDX continuity for one subscriber (RFC 7741 §4.2): each simulcast
/// layer numbers its pictures on its own, so after a layer switch the receiver would see the
/// picture ids jump. Like sequence numbers, they are rewritten as input + offset, the offsets
/// recomputed at a switch so that the output goes on at the next value. Only for 15-bit
/// PictureIDs (what browsers send, [`vp8_has_long_picture_id`]); others are forwarded as they
/// are.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vp8Munge {
    pic_offset: u16,
    tl0_offset: u8,
    /// The newest output PictureID and TL0PICIDX.
    last: Option<(u16, Option<u8>)>,
}

const PIC_MASK: u16 = 0x7fff;

/// Whether 15-bit picture id `a` comes after `b` (by less than half the range).
fn pic_newer(a: u16, b: u16) -> bool {
    let d = a.wrapping_sub(b) & PIC_MASK;
    d != 0 && d < 0x4000
}

impl Vp8Munge {
    /// Starts a new source at (the keyframe described by) `d`.
    pub fn start(&mut self, d: &str0m::rtp::Vp8Descriptor) {
        let Some(pic) = d.picture_id() else {
            return;
        };
        match self.last {
            Some((last_pic, last_tl0)) => {
                self.pic_offset = last_pic.wrapping_add(1).wrapping_sub(pic) & PIC_MASK;
                if let (Some(last_tl0), Some(tl0)) = (last_tl0, d.tl0_pic_idx()) {
                    self.tl0_offset = last_tl0.wrapping_add(1).wrapping_sub(tl0);
                }
            }
            None => {
                self.pic_offset = 0;
                self.tl0_offset = 0;
            }
        }
    }

    /// The output PictureID and TL0PICIDX for a packet described by `d`.
    pub fn map(&mut self, d: &str0m::rtp::Vp8Descriptor) -> Option<(u16, Option<u8>)> {
        let pic = d.picture_id()?;
        let out_pic = pic.wrapping_add(self.pic_offset) & PIC_MASK;
        let out_tl0 = d.tl0_pic_idx().map(|t| t.wrapping_add(self.tl0_offset));
        if self.last.is_none_or(|(p, _)| pic_newer(out_pic, p)) {
            self.last = Some((out_pic, out_tl0));
        }
        Some((out_pic, out_tl0))
    }

    /// The patch str0m applies when it writes the packet, if anything is to be rewritten.
    pub fn patch(&mut self, d: &str0m::rtp::Vp8Descriptor) -> Option<str0m::rtp::Vp8Patch> {
        let (pic, tl0) = self.map(d)?;
        if self.pic_offset == 0 && self.tl0_offset == 0 {
            return None;
        }
        let mut b = d.patch().picture_id(pic);
        if let Some(tl0) = tl0 {
            b = b.tl0_pic_idx(tl0);
        }
        b.build().ok()
    }
}
