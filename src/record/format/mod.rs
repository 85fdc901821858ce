//! The recording file format, sans-IO: received RTP packets of a participant's tracks in, a
//! Matroska/WebM byte stream out, with no transcoding. [`Muxer`] is the entry point: per track
//! a jitter buffer (`jitter`), a depacketizer (`depack`), then an interleave window across
//! tracks and the container writer (`mkv`). Nothing here reads a clock or touches a file: time
//! arrives as arguments and bytes leave through the `Write` given. See `docs/recording.md`.

pub mod depack;
pub mod jitter;
pub mod mkv;
mod mux;

pub use depack::Codec;
pub use mux::{Muxer, Stats, TrackSpec};
