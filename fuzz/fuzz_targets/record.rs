//! The recorder's format library on arbitrary input: a stream of operations (packets with any
//! track, sequence number, timestamp, marker and payload; sender reports; restarts) into a
//! `Muxer` over `std::io::Sink` with one track of every codec. A peer controls all of it: it
//! must never panic, and what it holds is bounded.
#![no_main]

use confab::record::format::{Codec, Muxer, TrackSpec};
use libfuzzer_sys::fuzz_target;

mod seeds;

const CODECS: [Codec; 5] = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1];

fuzz_target!(init: seeds::write(&record_seeds()), |data: &[u8]| {
    let specs = CODECS
        .iter()
        .map(|&codec| TrackSpec {
            codec,
            clock_rate: if codec == Codec::Opus { 48_000 } else { 90_000 },
            channels: 2,
        })
        .collect();
    let Ok(mut m) = Muxer::new(std::io::sink(), specs) else { return };
    let mut at = 0u64;
    let mut rest = data;
    // Each operation: kind/track byte, then a header of 9 bytes, then a length byte and payload.
    while let [op, a, b, c, d, e, f, g, h, dt, len, tail @ ..] = rest {
        let track = usize::from(op % 5);
        let seq = u16::from_be_bytes([*a, *b]);
        let ts = u32::from_be_bytes([*c, *d, *e, *f]);
        at += u64::from(*dt) * 1000;
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        match op >> 5 {
            0 => m.restart(track),
            1 => m.sender_report(track, u64::from(u32::from_be_bytes([*g, *h, *a, *b])) << 20, ts),
            _ => {
                let _ = m.push(track, seq, ts, op & 0x10 != 0, payload, at);
            }
        }
        let _ = m.needs_keyframe(track);
    }
    let _ = m.finish();
});

/// A keyframe packet and an inter packet for each codec's track.
fn record_seeds() -> Vec<Vec<u8>> {
    let payloads: [&[u8]; 5] = [
        &[0xfc, 0xff, 0xfe],
        &[
            0x10, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00,
        ],
        &[0x08, 0x82, 0x49, 0x83, 0x42, 0x00, 0x13, 0xf0, 0x0e, 0xf6],
        &[
            0x78, 0x00, 0x04, 0x67, 0x42, 0xc0, 0x1e, 0x00, 0x04, 0x68, 0xce, 0x3c, 0x80, 0x00,
            0x02, 0x65, 0x88,
        ],
        &[
            0x18, 0x02, 0x12, 0x00, 0x0b, 0x08, 0x00, 0x00, 0x00, 0x24, 0xc4, 0xff, 0xdf, 0x00,
            0x68,
        ],
    ];
    let mut all = Vec::new();
    for (t, p) in payloads.iter().enumerate() {
        let mut s = Vec::new();
        for k in 0..4u8 {
            let op = 0x50 | t as u8; // push, marker
            s.extend_from_slice(&[op, 0, k, 0, 0, k * 12, 0, 0, 0, 20, p.len() as u8]);
            s.extend_from_slice(p);
        }
        all.push(s.clone());
        s.extend_from_slice(&[0x20 | t as u8, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0]);
        all.push(s);
    }
    all
}
