#![allow(clippy::unwrap_used)]

use super::*;
use crate::record::format::depack::tests::vp8_key;
use crate::record::format::mkv::tests::{parse, Parsed};

const OPUS: TrackSpec = TrackSpec {
    codec: Codec::Opus,
    clock_rate: 48_000,
    channels: 2,
};
const VP8: TrackSpec = TrackSpec {
    codec: Codec::Vp8,
    clock_rate: 90_000,
    channels: 0,
};

/// One synthetic packet: (track, seq, ts, marker, payload, arrival µs).
type Pkt = (usize, u16, u32, bool, Vec<u8>, u64);

fn opus(track: usize, n: u32, seq0: u16, ts0: u32, t0: u64) -> Vec<Pkt> {
    (0..n)
        .map(|i| {
            (
                track,
                seq0.wrapping_add(i as u16),
                ts0.wrapping_add(960 * i),
                true,
                vec![0xfc, i as u8, 1, 2],
                t0 + 20_000 * u64::from(i),
            )
        })
        .collect()
}

/// VP8 at 30 fps, one packet a frame, a keyframe every `gop` frames.
fn vp8(track: usize, n: u32, gop: u32, seq0: u16, ts0: u32, t0: u64) -> Vec<Pkt> {
    (0..n)
        .map(|i| {
            let mut p = vec![0x10];
            if i % gop == 0 {
                p.extend(vp8_key(320, 240));
            } else {
                p.extend_from_slice(&[0x01, i as u8, 0x55, 0x55]);
            }
            (
                track,
                seq0.wrapping_add(i as u16),
                ts0.wrapping_add(3000 * i),
                true,
                p,
                t0 + 33_333 * u64::from(i),
            )
        })
        .collect()
}

fn by_arrival(mut pkts: Vec<Pkt>) -> Vec<Pkt> {
    pkts.sort_by_key(|p| p.5);
    pkts
}

fn record(tracks: Vec<TrackSpec>, pkts: &[Pkt]) -> (Parsed, Stats) {
    let mut m = Muxer::new(Vec::new(), tracks).unwrap();
    for (t, seq, ts, mk, p, at) in pkts {
        m.push(*t, *seq, *ts, *mk, p, *at).unwrap();
    }
    let (file, stats) = m.finish().unwrap();
    assert_eq!(stats.bytes_written, file.len() as u64);
    (parse(&file), stats)
}

fn track_blocks(p: &Parsed, track: u8) -> Vec<(u64, bool)> {
    p.blocks
        .iter()
        .filter(|b| b.0 == track)
        .map(|b| (b.1, b.2))
        .collect()
}

#[test]
fn audio_and_video_interleave_across_wraparound() {
    let mut pkts = opus(0, 150, 65_500, u32::MAX - 20_000, 1_000_000);
    pkts.extend(vp8(1, 90, 30, 65_530, u32::MAX - 50_000, 1_000_000));
    let (p, stats) = record(vec![OPUS, VP8], &by_arrival(pkts));
    assert_eq!(p.doc_type, "webm");
    assert_eq!(p.tracks.len(), 2);
    assert_eq!((p.tracks[1].3, p.tracks[1].4), (320, 240));
    assert_eq!(stats.frames_written, 240);
    assert_eq!(
        stats.frames_dropped + stats.packets_lost + stats.packets_dropped,
        0
    );
    assert!(
        p.blocks.windows(2).all(|b| b[0].1 <= b[1].1),
        "written in time order"
    );
    assert_eq!(p.blocks[0].1, 0);
    let audio = track_blocks(&p, 1);
    let video = track_blocks(&p, 2);
    assert_eq!(audio.last().unwrap().0, 2980);
    assert_eq!(video.last().unwrap().0, 2966);
    assert!(video[0].1 && video[30].1 && !video[1].1);
    assert_eq!(p.clusters, 3, "one per video keyframe");
}

#[test]
fn reordered_packets_are_put_back_in_order() {
    let mut pkts = vp8(0, 60, 30, 100, 0, 0);
    for i in (1..58).step_by(4) {
        pkts.swap(i, i + 2);
    }
    let (p, stats) = record(vec![VP8], &pkts);
    assert_eq!(stats.frames_written, 60);
    assert_eq!(stats.packets_lost, 0);
    assert!(p.blocks.windows(2).all(|b| b[0].1 < b[1].1));
}

#[test]
fn a_lost_packet_waits_for_the_next_keyframe() {
    let mut pkts = vp8(0, 90, 30, 0, 0, 0);
    pkts.remove(40);
    let mut m = Muxer::new(Vec::new(), vec![VP8]).unwrap();
    let mut waited = false;
    for (t, seq, ts, mk, pl, at) in &pkts {
        m.push(*t, *seq, *ts, *mk, pl, *at).unwrap();
        waited |= m.needs_keyframe(0);
    }
    assert!(waited);
    assert!(!m.needs_keyframe(0));
    let (file, stats) = m.finish().unwrap();
    assert_eq!(stats.packets_lost, 1);
    // Frames 41..59 refer to the lost one: dropped until the keyframe at 60.
    assert_eq!(stats.frames_written, 90 - 20);
    let p = parse(&file);
    let v = track_blocks(&p, 1);
    assert_eq!(v[40].0, 2000);
    assert!(v[40].1);
}

#[test]
fn video_waits_for_its_first_keyframe() {
    let pkts = vp8(0, 60, 30, 0, 0, 0);
    let (p, stats) = record(vec![VP8], &pkts[10..]);
    assert_eq!(stats.frames_written, 30);
    assert!(track_blocks(&p, 1)[0].1);
}

#[test]
fn a_muted_gap_keeps_true_time() {
    let mut pkts = opus(0, 50, 0, 0, 0);
    // Three seconds of silence: timestamps and arrival both jump.
    pkts.extend(opus(0, 50, 50, 48_000 * 4, 4_000_000));
    let (p, _) = record(vec![OPUS], &pkts);
    let a = track_blocks(&p, 1);
    assert_eq!(a[49].0, 980);
    assert_eq!(a[50].0, 4000);
    assert_eq!(a.last().unwrap().0, 4980);
}

#[test]
fn a_late_frame_is_dropped_not_written_out_of_order() {
    let mut pkts = opus(0, 100, 0, 0, 1_000_000);
    // A second audio track whose first packet says it arrived long before: older than
    // what was already written.
    pkts.push((1, 0, 0, true, vec![0xfc], 0));
    let (p, stats) = record(vec![OPUS, OPUS], &pkts);
    assert_eq!(stats.frames_dropped, 1);
    assert!(track_blocks(&p, 2).is_empty());
}

#[test]
fn restart_goes_on_without_going_back() {
    let mut m = Muxer::new(Vec::new(), vec![VP8]).unwrap();
    for (t, seq, ts, mk, pl, at) in vp8(0, 30, 30, 500, 7_000, 0) {
        m.push(t, seq, ts, mk, &pl, at).unwrap();
    }
    m.restart(0);
    assert!(m.needs_keyframe(0));
    // A new SSRC: other sequence numbers and timestamps, starting with inter frames.
    for (t, seq, ts, mk, pl, at) in vp8(0, 60, 30, 9, 123_456_789, 1_000_000)
        .into_iter()
        .skip(20)
    {
        m.push(t, seq, ts, mk, &pl, at).unwrap();
    }
    let (file, stats) = m.finish().unwrap();
    let v = track_blocks(&parse(&file), 1);
    assert_eq!(stats.frames_written, 60);
    assert!(v.windows(2).all(|b| b[0].0 <= b[1].0));
    assert!(v[30].1);
    assert!(v[30].0 >= 1_900, "{:?}", v[30]);
}

#[test]
fn sender_reports_align_tracks() {
    // Audio arrives 300 ms after the video captured at the same moment.
    let mut pkts = opus(0, 100, 0, 10_000, 1_300_000);
    pkts.extend(vp8(1, 60, 30, 0, 50_000, 1_000_000));
    let mut m = Muxer::new(Vec::new(), vec![OPUS, VP8]).unwrap();
    for (i, (t, seq, ts, mk, pl, at)) in by_arrival(pkts).into_iter().enumerate() {
        m.push(t, seq, ts, mk, &pl, at).unwrap();
        if i == 0 {
            // Both streams' ts at NTP 1e12 µs are their first timestamps.
            m.sender_report(0, 1_000_000_000_000, 10_000);
            m.sender_report(1, 1_000_000_000_000, 50_000);
        }
    }
    let (file, _) = m.finish().unwrap();
    let p = parse(&file);
    let (a, v) = (track_blocks(&p, 1), track_blocks(&p, 2));
    assert!(
        a[0].0.abs_diff(v[0].0) <= 1,
        "audio {:?} video {:?}",
        a[0],
        v[0]
    );
}

#[test]
fn without_a_keyframe_the_header_waits_a_bounded_time() {
    let mut pkts = opus(0, 400, 0, 0, 0);
    pkts.extend(vp8(1, 100, 1000, 0, 0, 0).into_iter().skip(1));
    let mut m = Muxer::new(Vec::new(), vec![OPUS, VP8]).unwrap();
    for (t, seq, ts, mk, pl, at) in by_arrival(pkts) {
        m.push(t, seq, ts, mk, &pl, at).unwrap();
    }
    assert!(
        m.stats().bytes_written > 0,
        "header and audio written before the end"
    );
    let (file, _) = m.finish().unwrap();
    let p = parse(&file);
    assert_eq!((p.tracks[1].3, p.tracks[1].4), (640, 480));
    assert_eq!(track_blocks(&p, 1).len(), 400);
}

#[test]
fn finish_seekable_writes_duration_and_size() {
    let pkts = opus(0, 100, 0, 0, 0);
    let mut m = Muxer::new(std::io::Cursor::new(Vec::new()), vec![OPUS]).unwrap();
    for (t, seq, ts, mk, pl, at) in pkts {
        m.push(t, seq, ts, mk, &pl, at).unwrap();
    }
    m.flush().unwrap();
    let (cur, stats) = m.finish_seekable().unwrap();
    let file = cur.into_inner();
    let p = parse(&file);
    assert_eq!(p.duration, Some(stats.duration_ms as f64));
    assert_eq!(stats.duration_ms, 1980);
    assert!(p.segment_size.is_some());
    assert!(p.clusters >= 2, "flush closed a cluster");
}

#[test]
fn bad_arguments_are_refused() {
    assert!(Muxer::new(Vec::new(), vec![]).is_err());
    assert!(Muxer::new(
        Vec::new(),
        vec![TrackSpec {
            clock_rate: 0,
            ..OPUS
        }]
    )
    .is_err());
    let mut m = Muxer::new(Vec::new(), vec![OPUS]).unwrap();
    assert!(m.push(1, 0, 0, true, b"x", 0).is_err());
    m.restart(5);
    m.sender_report(5, 0, 0);
    assert!(!m.needs_keyframe(5));
}

/// Arbitrary calls for every codec (a peer controls all of it): no panic, output parses.
#[test]
fn hostile_input_never_panics() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let specs: Vec<TrackSpec> = [Codec::Opus, Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1]
        .into_iter()
        .map(|codec| TrackSpec {
            codec,
            clock_rate: 90_000,
            channels: 2,
        })
        .collect();
    let mut m = Muxer::new(Vec::new(), specs).unwrap();
    let mut at = 0u64;
    for _ in 0..30_000 {
        let r = next();
        at += r % 20_000;
        let len = (next() % 80) as usize;
        let p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let track = (r % 5) as usize;
        match r >> 60 {
            0 => m.restart(track),
            1 => m.sender_report(track, next(), next() as u32),
            _ => m
                .push(
                    track,
                    (next() % 300) as u16,
                    (next() % 400_000) as u32,
                    r & 0x100 != 0,
                    &p,
                    at,
                )
                .unwrap(),
        }
    }
    let (file, stats) = m.finish().unwrap();
    assert_eq!(file.len() as u64, stats.bytes_written);
    parse(&file);
}

#[test]
fn audio_before_the_first_video_keyframe_is_left_out_so_both_start_together() {
    // Audio from 0 ms; video's first frames are deltas, its first keyframe comes at 1 s.
    let video = vp8(1, 60, 30, 0, 0, 0);
    let pkts = by_arrival([opus(0, 100, 0, 0, 0), video[20..].to_vec()].concat());
    let (p, _) = record(vec![OPUS, VP8], &pkts);
    let (audio, video) = (track_blocks(&p, 1), track_blocks(&p, 2));
    assert!(video[0].1, "video starts at a keyframe");
    let gap = audio[0].0.abs_diff(video[0].0);
    assert!(
        gap <= 20,
        "audio starts {gap} ms from video: {:?} {:?}",
        audio[0],
        video[0]
    );
}
