//! RTP payload → codec frames (str0m's depacketizers are not public in RTP mode): one
//! [`Depacketizer`] per track is fed packets in sequence order (the jitter buffer's output) and
//! hands back whole frames in the form Matroska stores them:
//!
//! | codec | RTP format | frame written |
//! |---|---|---|
//! | Opus | RFC 7587: payload = one frame | the payload |
//! | VP8 | RFC 7741 payload descriptor | the VP8 frame |
//! | VP9 | RFC 9628 payload descriptor (flexible and not) | the layer frames of one picture; several spatial layers as a VP9 superframe with its index |
//! | H.264 | RFC 6184 single NAL, STAP-A, FU-A | AVCC: 4-byte length + NAL unit each |
//! | AV1 | AV1 RTP (aggregation header, OBU elements) | OBUs with `obu_has_size_field`, no temporal delimiters |
//!
//! A frame is the packets of one RTP timestamp up to the marker bit. A gap ([`Depacketizer::lost`])
//! or a malformed packet drops the frame it is in; the caller then waits for a keyframe. Every
//! parser returns an [`Error`] on arbitrary bytes, never panics, and bounds what it holds
//! ([`MAX_FRAME`]).

mod av1;
mod bits;
mod h264;
mod vp8;
mod vp9;

use std::fmt;

/// The codecs a recording can hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus,
    Vp8,
    Vp9,
    Av1,
    H264,
}

impl Codec {
    pub fn is_video(self) -> bool {
        !matches!(self, Codec::Opus)
    }
}

/// The largest frame assembled (bytes); a bigger one is dropped as [`Error::TooLarge`].
pub const MAX_FRAME: usize = 4 << 20;

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    Truncated,
    Malformed(&'static str),
    Unsupported(&'static str),
    TooLarge,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Truncated => write!(f, "truncated payload"),
            Error::Malformed(what) => write!(f, "malformed payload: {what}"),
            Error::Unsupported(what) => write!(f, "unsupported payload: {what}"),
            Error::TooLarge => write!(f, "frame over {MAX_FRAME} bytes"),
        }
    }
}

impl std::error::Error for Error {}

/// What the stream told us about the track that the container header needs: dimensions (from a
/// keyframe or the codec's sequence header) and the codec's CodecPrivate (`avcC`, `av1C`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub width: u32,
    pub height: u32,
    pub codec_private: Option<Vec<u8>>,
}

/// One assembled frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub rtp_ts: u32,
    /// When the frame's first packet arrived (the caller's clock).
    pub arrival_us: u64,
    pub data: Vec<u8>,
    pub keyframe: bool,
}

/// What one packet said, as the codec parser saw it.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Mark {
    /// The packet starts a frame (VP8 S bit + partition 0, VP9 B bit, AV1 no Z bit, H.264 not
    /// an FU-A continuation).
    pub start: bool,
    pub keyframe: bool,
}

pub(super) fn byte(p: &[u8], i: usize) -> Result<u8, Error> {
    p.get(i).copied().ok_or(Error::Truncated)
}

enum Inner {
    Opus,
    Vp8,
    Vp9(vp9::Vp9),
    H264(h264::H264),
    Av1(av1::Av1),
}

struct Partial {
    ts: u32,
    arrival_us: u64,
    data: Vec<u8>,
    keyframe: bool,
    broken: bool,
}

/// Packets of one track → frames.
pub struct Depacketizer {
    codec: Codec,
    inner: Inner,
    cur: Option<Partial>,
    params: Params,
    dropped: u64,
}

impl Depacketizer {
    pub fn new(codec: Codec) -> Self {
        Depacketizer {
            codec,
            inner: Self::inner(codec),
            cur: None,
            params: Params::default(),
            dropped: 0,
        }
    }

    fn inner(codec: Codec) -> Inner {
        match codec {
            Codec::Opus => Inner::Opus,
            Codec::Vp8 => Inner::Vp8,
            Codec::Vp9 => Inner::Vp9(vp9::Vp9::default()),
            Codec::H264 => Inner::H264(h264::H264::default()),
            Codec::Av1 => Inner::Av1(av1::Av1::default()),
        }
    }

    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Dimensions and CodecPrivate as last seen in the stream.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Frames dropped so far (incomplete, malformed or too large).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The publisher's stream changed: forget the partial frame and the codec state (the
    /// parameters seen stay).
    pub fn reset(&mut self) {
        self.lost();
        self.inner = Self::inner(self.codec);
    }

    /// Packets were lost before the next one: the frame being assembled is dropped.
    pub fn lost(&mut self) {
        if self.cur.take().is_some() {
            self.dropped += 1;
        }
        match &mut self.inner {
            Inner::Vp9(s) => s.abort(),
            Inner::H264(s) => s.abort(),
            Inner::Av1(s) => s.abort(),
            Inner::Opus | Inner::Vp8 => {}
        }
    }

    /// One packet, in sequence order with no gap since the previous one (report gaps with
    /// [`Depacketizer::lost`]). Complete frames are appended to `out`. On an error the frame
    /// the packet belongs to is dropped.
    pub fn push(
        &mut self,
        ts: u32,
        marker: bool,
        payload: &[u8],
        arrival_us: u64,
        out: &mut Vec<Frame>,
    ) -> Result<(), Error> {
        if self.cur.as_ref().is_some_and(|p| p.ts != ts) {
            // The previous frame's last packet had no marker bit: it ended all the same. If it
            // was unfinished it is counted in `dropped`; this packet starts the next one.
            let _ = self.end_frame(out);
        }
        if self.codec == Codec::Opus {
            if payload.is_empty() {
                return Err(Error::Truncated);
            }
            out.push(Frame {
                rtp_ts: ts,
                arrival_us,
                data: payload.to_vec(),
                keyframe: true,
            });
            return Ok(());
        }
        let first = self.cur.is_none();
        let cur = self.cur.get_or_insert_with(|| Partial {
            ts,
            arrival_us,
            data: Vec::new(),
            keyframe: false,
            broken: false,
        });
        let params = &mut self.params;
        let res = match &mut self.inner {
            Inner::Opus => Ok(Mark::default()),
            Inner::Vp8 => vp8::packet(payload, &mut cur.data, params),
            Inner::Vp9(s) => s.packet(payload, &mut cur.data, params),
            Inner::H264(s) => s.packet(payload, &mut cur.data, params),
            Inner::Av1(s) => s.packet(payload, &mut cur.data, params),
        };
        let res = res.and_then(|mark| {
            if cur.data.len() > MAX_FRAME {
                cur.data = Vec::new();
                return Err(Error::TooLarge);
            }
            Ok(mark)
        });
        match res {
            Ok(mark) => {
                if first && !mark.start {
                    cur.broken = true;
                }
                cur.keyframe |= mark.keyframe;
            }
            Err(e) => {
                cur.broken = true;
                cur.data = Vec::new();
                if marker {
                    self.end_frame(out)?;
                }
                return Err(e);
            }
        }
        if marker {
            self.end_frame(out)?;
        }
        Ok(())
    }

    fn end_frame(&mut self, out: &mut Vec<Frame>) -> Result<(), Error> {
        let Some(mut p) = self.cur.take() else {
            return Ok(());
        };
        let done = match &mut self.inner {
            Inner::Opus | Inner::Vp8 => Ok(()),
            Inner::Vp9(s) => s.finish(&mut p.data),
            Inner::H264(s) => s.finish(&mut self.params),
            Inner::Av1(s) => s.finish(),
        };
        if p.broken || done.is_err() || p.data.is_empty() {
            self.dropped += 1;
            return done;
        }
        out.push(Frame {
            rtp_ts: p.ts,
            arrival_us: p.arrival_us,
            data: p.data,
            keyframe: p.keyframe,
        });
        Ok(())
    }
}

/// LEB128 as AV1 uses it (at most 8 bytes): the value and how many bytes it took.
pub(super) fn leb128(p: &[u8]) -> Result<(usize, usize), Error> {
    let mut v: u64 = 0;
    for (i, b) in p.iter().take(8).enumerate() {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let v = usize::try_from(v).map_err(|_| Error::TooLarge)?;
            return Ok((v, i + 1));
        }
    }
    Err(Error::Malformed("LEB128"))
}

pub(super) fn write_leb128(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

#[cfg(test)]
pub(crate) mod tests;
