//! Recording (LiveKit's Egress API without transcoding): `format` turns received RTP packets
//! into Matroska/WebM files, sans-IO.

pub mod format;
