//! Keyframe detection on RTP payloads for every codec confab forwards (VP8, VP9, H.264, H.265,
//! AV1): the first byte picks the codec, the rest is the payload. Pure code on borrowed bytes:
//! it must never panic on short or malformed payloads.
#![no_main]

use confab::sfu::rtp::starts_keyframe;
use libfuzzer_sys::fuzz_target;

mod seeds;
use str0m::format::Codec;

fuzz_target!(init: seeds::write(&rtp_seeds()), |data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else { return };
    let codec = match pick % 5 {
        0 => Codec::Vp8,
        1 => Codec::Vp9,
        2 => Codec::H264,
        3 => Codec::H265,
        _ => Codec::Av1,
    };
    let _ = starts_keyframe(codec, payload);
});

/// First packets of keyframes, one per codec (the first byte picks the codec).
fn rtp_seeds() -> Vec<Vec<u8>> {
    vec![
        vec![0, 0x90, 0x80, 0x01, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a],
        vec![1, 0x8e, 0x80, 0x01, 0x82, 0x49, 0x83, 0x42, 0x00],
        vec![
            2, 0x78, 0x00, 0x10, 0x67, 0x42, 0xc0, 0x1f, 0x00, 0x04, 0x68, 0xce, 0x3c, 0x80,
        ],
        vec![3, 0x40, 0x01, 0x0c, 0x01, 0xff, 0xff],
        vec![4, 0x18, 0x0a, 0x0b, 0x00, 0x00, 0x00],
    ]
}
