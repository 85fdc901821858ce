#![allow(clippy::unwrap_used)]

use super::*;

/// A test-only MSB-first bit writer (for SPS and sequence headers).
#[derive(Default)]
pub(crate) struct BitWriter {
    bytes: Vec<u8>,
    n: usize,
}

impl BitWriter {
    pub(crate) fn bits(&mut self, v: u32, n: u32) -> &mut Self {
        for k in (0..n).rev() {
            if self.n % 8 == 0 {
                self.bytes.push(0);
            }
            if (v >> k) & 1 == 1 {
                *self.bytes.last_mut().unwrap() |= 0x80 >> (self.n % 8);
            }
            self.n += 1;
        }
        self
    }
    pub(crate) fn ue(&mut self, v: u32) -> &mut Self {
        let x = v + 1;
        let len = 32 - x.leading_zeros();
        self.bits(0, len - 1).bits(x, len)
    }
    pub(crate) fn done(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

/// A VP8 keyframe's first bytes (frame tag, start code, size) and a body.
pub(crate) fn vp8_key(w: u16, h: u16) -> Vec<u8> {
    let mut f = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    f.extend_from_slice(&w.to_le_bytes());
    f.extend_from_slice(&h.to_le_bytes());
    f.extend_from_slice(&[0xaa; 20]);
    f
}

fn run(d: &mut Depacketizer, pkts: &[(u32, bool, Vec<u8>)]) -> (Vec<Frame>, usize) {
    let mut out = Vec::new();
    let mut errors = 0;
    for (ts, m, p) in pkts {
        if d.push(*ts, *m, p, 0, &mut out).is_err() {
            errors += 1;
        }
    }
    (out, errors)
}

#[test]
fn opus_packet_is_a_frame() {
    let mut d = Depacketizer::new(Codec::Opus);
    let (f, e) = run(
        &mut d,
        &[(960, false, vec![0xfc, 1, 2]), (1920, true, vec![])],
    );
    assert_eq!(e, 1);
    assert_eq!(f.len(), 1);
    assert!(f[0].keyframe);
    assert_eq!(f[0].data, vec![0xfc, 1, 2]);
}

#[test]
fn vp8_descriptor_stripped_keyframe_and_size() {
    let key = vp8_key(320, 240);
    let mut d = Depacketizer::new(Codec::Vp8);
    // X, I (15-bit picture id), L, T; S, PID 0.
    let mut p1 = vec![0x90, 0xe0, 0x80, 0x01, 0x05, 0x40];
    p1.extend_from_slice(&key[..10]);
    let mut p2 = vec![0x80, 0xe0, 0x80, 0x01, 0x05, 0x40];
    p2.extend_from_slice(&key[10..]);
    let (f, e) = run(&mut d, &[(3000, false, p1), (3000, true, p2)]);
    assert_eq!(e, 0);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].data, key);
    assert!(f[0].keyframe);
    assert_eq!((d.params().width, d.params().height), (320, 240));
    // An inter frame (P bit 1), without extensions.
    let (f, _) = run(&mut d, &[(6000, true, vec![0x10, 0x01, 0x02])]);
    assert!(!f[0].keyframe);
}

#[test]
fn vp8_frame_without_its_start_is_dropped() {
    let mut d = Depacketizer::new(Codec::Vp8);
    let (f, _) = run(
        &mut d,
        &[
            (3000, false, vec![0x00, 0x01, 0x02]),
            (3000, true, vec![0x00, 3]),
        ],
    );
    assert!(f.is_empty());
    assert_eq!(d.dropped(), 1);
}

#[test]
fn loss_drops_the_partial_frame() {
    let mut d = Depacketizer::new(Codec::Vp8);
    let mut out = Vec::new();
    d.push(3000, false, &[0x10, 0x00, 0x01], 0, &mut out)
        .unwrap();
    d.lost();
    d.push(3000, true, &[0x00, 0x02], 0, &mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(d.dropped(), 2);
}

#[test]
fn an_unfinished_fu_a_does_not_cost_the_next_frame() {
    let mut d = Depacketizer::new(Codec::H264);
    let (f, e) = run(
        &mut d,
        &[(1, false, vec![0x7c, 0x85, 1]), (2, true, vec![0x65, 0x88])],
    );
    assert_eq!(e, 0);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].rtp_ts, 2);
    assert_eq!(d.dropped(), 1);
}

#[test]
fn a_timestamp_change_ends_a_frame_without_marker() {
    let mut d = Depacketizer::new(Codec::Vp8);
    let (f, _) = run(
        &mut d,
        &[(1, false, vec![0x10, 0x01]), (2, true, vec![0x10, 0x03])],
    );
    assert_eq!(f.len(), 2);
}

/// A VP9 keyframe uncompressed header (profile 0, 8-bit) of `w`×`h`.
fn vp9_key(w: u32, h: u32) -> Vec<u8> {
    let mut b = BitWriter::default();
    b.bits(2, 2)
        .bits(0, 2)
        .bits(0, 1)
        .bits(0, 1)
        .bits(1, 1)
        .bits(0, 1);
    b.bits(0x49_83_42, 24)
        .bits(1, 3)
        .bits(0, 1)
        .bits(w - 1, 16)
        .bits(h - 1, 16);
    let mut v = b.done();
    v.extend_from_slice(&[0x55; 10]);
    v
}

#[test]
fn vp9_spatial_layers_become_a_superframe() {
    let mut d = Depacketizer::new(Codec::Vp9);
    let l0 = vp9_key(160, 120);
    let l1 = vec![0x86, 0x11, 0x22];
    // Flexible mode, picture id, layer indices: SID 0 (B, E, V with sizes), then SID 1 (B, E).
    let mut p0 = vec![
        0xbe, 0x05, 0x00, 0x30, 0x00, 0xa0, 0x00, 0x78, 0x01, 0x40, 0x00, 0xf0,
    ];
    p0.extend_from_slice(&l0);
    let mut p1 = vec![0xfc, 0x05, 0x02, 0x02];
    p1.extend_from_slice(&l1);
    let (f, e) = run(&mut d, &[(9000, false, p0), (9000, true, p1)]);
    assert_eq!(e, 0);
    assert_eq!(f.len(), 1);
    assert!(f[0].keyframe);
    assert_eq!((d.params().width, d.params().height), (320, 240));
    let data = &f[0].data;
    let marker = 0xc0 | 1; // 1-byte sizes, two frames
    let n = data.len();
    assert_eq!(data[n - 1], marker);
    assert_eq!(data[n - 4], marker);
    assert_eq!(data[n - 3] as usize, l0.len());
    assert_eq!(data[n - 2] as usize, l1.len());
    assert_eq!(&data[..l0.len()], &l0[..]);
}

#[test]
fn vp9_single_layer_has_no_index_and_reads_its_size() {
    let mut d = Depacketizer::new(Codec::Vp9);
    let key = vp9_key(640, 360);
    let mut p = vec![0x08]; // B, non-flexible, no layer info
    p.extend_from_slice(&key);
    let (f, _) = run(&mut d, &[(1, true, p)]);
    assert_eq!(f[0].data, key);
    assert!(f[0].keyframe);
    assert_eq!((d.params().width, d.params().height), (640, 360));
    let (f, _) = run(&mut d, &[(2, true, vec![0x48, 0x86, 0x00])]);
    assert!(!f[0].keyframe);
}

pub(crate) fn sps_320x240() -> Vec<u8> {
    let mut b = BitWriter::default();
    b.bits(66, 8)
        .bits(0xc0, 8)
        .bits(13, 8)
        .ue(0)
        .ue(0)
        .ue(0)
        .ue(0)
        .ue(1)
        .bits(0, 1);
    b.ue(19)
        .ue(14)
        .bits(1, 1)
        .bits(1, 1)
        .bits(0, 1)
        .bits(0, 1)
        .bits(1, 1);
    let mut v = vec![0x67];
    v.extend(b.done());
    v
}

#[test]
fn h264_stap_a_and_fu_a_become_avcc() {
    let sps = sps_320x240();
    let pps = vec![0x68, 0xce, 0x3c, 0x80];
    let idr = [vec![0x65], vec![0x88; 30]].concat();
    let mut stap = vec![0x78];
    for nal in [&sps, &pps] {
        stap.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        stap.extend_from_slice(nal);
    }
    let fu1 = [vec![0x7c, 0x85], idr[1..11].to_vec()].concat();
    let fu2 = [vec![0x7c, 0x05], idr[11..21].to_vec()].concat();
    let fu3 = [vec![0x7c, 0x45], idr[21..].to_vec()].concat();
    let mut d = Depacketizer::new(Codec::H264);
    let (f, e) = run(
        &mut d,
        &[
            (1, false, stap),
            (1, false, fu1),
            (1, false, fu2),
            (1, true, fu3),
        ],
    );
    assert_eq!(e, 0);
    assert_eq!(f.len(), 1);
    assert!(f[0].keyframe);
    let mut want = Vec::new();
    for nal in [&sps, &pps, &idr] {
        want.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        want.extend_from_slice(nal);
    }
    assert_eq!(f[0].data, want);
    assert_eq!((d.params().width, d.params().height), (320, 240));
    let cp = d.params().codec_private.clone().unwrap();
    assert_eq!(&cp[..6], &[1, 66, 0xc0, 13, 0xff, 0xe1]);
    // A non-IDR slice alone is not a keyframe; an FU-A continuation alone is refused.
    let (f, _) = run(&mut d, &[(2, true, vec![0x41, 0x9a, 0x01])]);
    assert!(!f[0].keyframe);
    let (f, e) = run(&mut d, &[(3, true, vec![0x7c, 0x45, 0x01])]);
    assert!(f.is_empty());
    assert_eq!(e, 1);
}

pub(crate) fn av1_sequence_header() -> Vec<u8> {
    let mut b = BitWriter::default();
    b.bits(0, 3)
        .bits(0, 1)
        .bits(0, 1)
        .bits(0, 1)
        .bits(0, 1)
        .bits(0, 5);
    b.bits(0, 12)
        .bits(8, 5)
        .bits(0, 1)
        .bits(8, 4)
        .bits(8, 4)
        .bits(319, 9)
        .bits(239, 9);
    b.bits(0, 6);
    b.done()
}

#[test]
fn av1_obus_get_size_fields_and_fragments_are_joined() {
    let seq = av1_sequence_header();
    let frame = vec![0x33; 40];
    // Packet 1: N, W=0: TD (dropped), sequence header, start of a frame OBU (Y).
    let mut p1 = vec![0x48];
    for el in [
        vec![0x12, 0x00],
        [vec![0x08], seq.clone()].concat(),
        [vec![0x30], frame[..10].to_vec()].concat(),
    ] {
        write_leb128(&mut p1, el.len());
        p1.extend_from_slice(&el);
    }
    // Packet 2: Z, W=1: the rest of the frame OBU.
    let p2 = [vec![0x90], frame[10..].to_vec()].concat();
    let mut d = Depacketizer::new(Codec::Av1);
    let (f, e) = run(&mut d, &[(1, false, p1), (1, true, p2)]);
    assert_eq!(e, 0);
    assert_eq!(f.len(), 1);
    assert!(f[0].keyframe);
    let mut want = vec![0x0a, seq.len() as u8];
    want.extend_from_slice(&seq);
    want.extend_from_slice(&[0x32, 40]);
    want.extend_from_slice(&frame);
    assert_eq!(f[0].data, want);
    assert_eq!((d.params().width, d.params().height), (320, 240));
    let cp = d.params().codec_private.clone().unwrap();
    assert_eq!(&cp[..4], &[0x81, 8, 0x0c, 0]);
    assert_eq!(&cp[4..], &want[..2 + seq.len()]);
    // A continuation with nothing to continue is refused.
    let (f, e) = run(&mut d, &[(2, true, vec![0x90, 0x01])]);
    assert!(f.is_empty());
    assert_eq!(e, 1);
}

#[test]
fn leb128_round_trips_and_refuses_overlong() {
    for v in [0usize, 1, 127, 128, 300, 1 << 20] {
        let mut b = Vec::new();
        write_leb128(&mut b, v);
        assert_eq!(leb128(&b), Ok((v, b.len())));
    }
    assert!(leb128(&[0x80; 9]).is_err());
    assert!(leb128(&[]).is_err());
}

/// Arbitrary bytes never panic, for every codec (a small xorshift; no dependency).
#[test]
fn hostile_payloads_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for codec in [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
        let mut d = Depacketizer::new(codec);
        let mut out = Vec::new();
        for i in 0..20_000u32 {
            let len = (next() % 64) as usize;
            let p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = d.push(i / 3, next() % 4 == 0, &p, 0, &mut out);
            if next() % 50 == 0 {
                d.lost();
            }
        }
    }
}
