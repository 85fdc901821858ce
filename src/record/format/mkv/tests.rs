#![allow(clippy::unwrap_used)]

use super::*;

/// number, CodecID, CodecPrivate, PixelWidth, PixelHeight
pub(crate) type ParsedTrack = (u64, String, Option<Vec<u8>>, u64, u64);

/// A test-only Matroska reader: what the files we write say.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub doc_type: String,
    pub tracks: Vec<ParsedTrack>,
    /// (track, absolute ms, keyframe, bytes)
    pub blocks: Vec<(u8, u64, bool, Vec<u8>)>,
    pub clusters: usize,
    pub cues: usize,
    pub duration: Option<f64>,
    pub segment_size: Option<u64>,
    pub seek_entries: usize,
}

fn read_id(b: &[u8], i: &mut usize) -> Option<u32> {
    let first = *b.get(*i)?;
    let len = first.leading_zeros() as usize + 1;
    let v = b
        .get(*i..*i + len)?
        .iter()
        .fold(0u32, |a, &x| (a << 8) | u32::from(x));
    *i += len;
    Some(v)
}

fn read_size(b: &[u8], i: &mut usize) -> Option<Option<u64>> {
    let first = *b.get(*i)?;
    let len = first.leading_zeros() as usize + 1;
    let bytes = b.get(*i..*i + len)?;
    *i += len;
    let mut v = u64::from(first) & ((1u64 << (8 - len)) - 1);
    for &x in &bytes[1..] {
        v = (v << 8) | u64::from(x);
    }
    let unknown = v == (1u64 << (7 * len)) - 1;
    Some((!unknown).then_some(v))
}

/// (id, body) of each element in `b`; an element of unknown size runs to the end.
pub(crate) fn children(b: &[u8]) -> Vec<(u32, &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let Some(id) = read_id(b, &mut i) else { break };
        let Some(size) = read_size(b, &mut i) else {
            break;
        };
        let end = size.map_or(b.len(), |s| (i + s as usize).min(b.len()));
        out.push((id, &b[i..end]));
        i = end;
    }
    out
}

fn uint_of(b: &[u8]) -> u64 {
    b.iter().fold(0, |a, &x| (a << 8) | u64::from(x))
}

fn child(b: &[u8], id: u32) -> Option<&[u8]> {
    children(b)
        .into_iter()
        .find(|(i, _)| *i == id)
        .map(|(_, b)| b)
}

pub(crate) fn parse(file: &[u8]) -> Parsed {
    let mut p = Parsed::default();
    let top = children(file);
    assert_eq!(top[0].0, EBML);
    p.doc_type = String::from_utf8(child(top[0].1, 0x4282).unwrap().to_vec()).unwrap();
    assert_eq!(top[1].0, SEGMENT);
    let mut i = file.len() - top[1].1.len() - 8;
    p.segment_size = read_size(file, &mut i).unwrap();
    for (id, body) in children(top[1].1) {
        match id {
            SEEK_HEAD => p.seek_entries = children(body).len(),
            INFO => {
                assert_eq!(uint_of(child(body, 0x2AD7B1).unwrap()), 1_000_000);
                p.duration =
                    child(body, DURATION).map(|d| f64::from_be_bytes(d.try_into().unwrap()));
            }
            TRACKS => {
                for (_, e) in children(body) {
                    let video = child(e, 0xE0);
                    let dim = |id| video.and_then(|v| child(v, id)).map_or(0, uint_of);
                    p.tracks.push((
                        uint_of(child(e, 0xD7).unwrap()),
                        String::from_utf8(child(e, 0x86).unwrap().to_vec()).unwrap(),
                        child(e, 0x63A2).map(<[u8]>::to_vec),
                        dim(0xB0),
                        dim(0xBA),
                    ));
                }
            }
            CLUSTER => {
                p.clusters += 1;
                let base = uint_of(child(body, 0xE7).unwrap());
                for (id, b) in children(body) {
                    if id == 0xA3 {
                        let rel = i16::from_be_bytes([b[1], b[2]]);
                        assert!(rel >= 0);
                        p.blocks.push((
                            b[0] & 0x7f,
                            base + rel as u64,
                            b[3] & 0x80 != 0,
                            b[4..].to_vec(),
                        ));
                    }
                }
            }
            CUES => p.cues = children(body).len(),
            _ => {}
        }
    }
    p
}

fn tracks() -> Vec<TrackInfo> {
    vec![
        TrackInfo {
            number: 1,
            codec: Codec::Opus,
            codec_private: None,
            width: 0,
            height: 0,
            channels: 2,
        },
        TrackInfo {
            number: 2,
            codec: Codec::Vp8,
            codec_private: None,
            width: 320,
            height: 240,
            channels: 0,
        },
    ]
}

#[test]
fn sizes_use_the_shortest_encoding() {
    let enc = |n| {
        let mut v = Vec::new();
        size(&mut v, n);
        v
    };
    assert_eq!(enc(0), vec![0x80]);
    assert_eq!(enc(126), vec![0xfe]);
    assert_eq!(enc(127), vec![0x40, 0x7f]);
    assert_eq!(enc(16382), vec![0x7f, 0xfe]);
    assert_eq!(enc(16383), vec![0x20, 0x3f, 0xff]);
    for total in [2, 11, 100, 128, 129, 300] {
        let mut v = Vec::new();
        void(&mut v, total);
        assert_eq!(v.len(), total);
        assert_eq!(children(&v).len(), 1);
    }
}

#[test]
fn header_clusters_and_cues() {
    let (mut w, mut file) = Writer::new(&tracks());
    let mut out = Vec::new();
    w.block(2, 0, true, true, b"key", &mut out);
    w.block(1, 0, true, false, b"a0", &mut out);
    for ms in (20..12_000).step_by(20) {
        w.block(1, ms, true, false, b"a", &mut out);
    }
    w.block(2, 12_000, true, true, b"key2", &mut out);
    w.finish(&mut out);
    file.extend_from_slice(&out);
    let p = parse(&file);
    assert_eq!(p.doc_type, "webm");
    assert_eq!(p.tracks[0].1, "A_OPUS");
    assert_eq!(&p.tracks[0].2.as_ref().unwrap()[..8], b"OpusHead");
    assert_eq!((p.tracks[1].3, p.tracks[1].4), (320, 240));
    // 0–5 s, 5–10 s, 10–12 s, then the keyframe's cluster.
    assert_eq!(p.clusters, 4);
    assert_eq!(p.cues, 4);
    assert_eq!(p.segment_size, None);
    assert_eq!(p.duration, None);
    assert_eq!(p.blocks.len(), 2 + 599 + 1);
    assert!(p.blocks.windows(2).all(|b| b[0].1 <= b[1].1));
    assert_eq!(p.blocks.last().unwrap().1, 12_000);
}

#[test]
fn a_cut_file_still_parses_up_to_its_last_cluster() {
    let (mut w, mut file) = Writer::new(&tracks());
    let mut out = Vec::new();
    for ms in (0..11_000).step_by(20) {
        w.block(1, ms, true, false, b"abc", &mut out);
    }
    file.extend_from_slice(&out);
    let p = parse(&file);
    assert_eq!(p.clusters, 2);
    assert_eq!(p.blocks.len(), 500);
}

#[test]
fn patches_fill_the_reserved_room() {
    let (mut w, mut file) = Writer::new(&tracks());
    let mut out = Vec::new();
    w.block(2, 0, true, true, b"key", &mut out);
    w.block(2, 1500, false, false, b"p", &mut out);
    w.finish(&mut out);
    file.extend_from_slice(&out);
    let len = file.len();
    for (at, bytes) in w.patches(1500) {
        file[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
    }
    assert_eq!(file.len(), len);
    let p = parse(&file);
    assert_eq!(p.duration, Some(1500.0));
    assert_eq!(p.seek_entries, 3);
    let seg_start = len as u64 - p.segment_size.unwrap();
    assert!(seg_start > 20 && seg_start < 60);
    assert_eq!(p.blocks.len(), 2);
}

#[test]
fn h264_makes_a_matroska_doc_type() {
    let t = vec![TrackInfo {
        number: 1,
        codec: Codec::H264,
        codec_private: Some(vec![1]),
        width: 2,
        height: 2,
        channels: 0,
    }];
    let (_, file) = Writer::new(&t);
    assert_eq!(parse(&file).doc_type, "matroska");
}
