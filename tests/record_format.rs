#![allow(clippy::unwrap_used)]
//! The recording file format on real media: ffmpeg encodes test patterns (VP8, VP9, H.264,
//! Opus) and packetizes them with its RTP muxer to UDP sockets here; the packets (a few
//! reordered, one dropped in the lossy variant) and ffmpeg's RTCP sender reports go through
//! `confab::record::format::Muxer` into a file, which ffprobe and ffmpeg's decoders then judge.
//! A codec whose encoder (or RTP packetizer) the installed ffmpeg lacks is skipped with the
//! reason printed.

mod common;

use std::net::UdpSocket;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::media::{decode_errors, ffprobe, num};
use confab::record::format::{Codec, Muxer, TrackSpec};

const SECONDS: f64 = 3.0;

/// What ffmpeg sent, as received: (arrival, track, is RTCP, datagram).
type Datagram = (Instant, usize, bool, Vec<u8>);

fn have_encoder(name: &str) -> bool {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-encoders"])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .any(|w| w == name),
        Err(e) => {
            println!("skip: ffmpeg not runnable ({e}); scripts/install-deps.sh installs it");
            false
        }
    }
}

/// One stream for ffmpeg: its input, encoder arguments and the RTP clock.
struct Source {
    input: &'static [&'static str],
    codec_args: &'static [&'static str],
    spec: TrackSpec,
    encoder: &'static str,
}

const VIDEO_IN: &[&str] = &["-f", "lavfi", "-i", "testsrc=size=320x240:rate=30"];
const AUDIO_IN: &[&str] = &["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"];

fn video(codec: Codec, encoder: &'static str, args: &'static [&'static str]) -> Source {
    Source {
        input: VIDEO_IN,
        codec_args: args,
        spec: TrackSpec {
            codec,
            clock_rate: 90_000,
            channels: 0,
        },
        encoder,
    }
}

fn opus() -> Source {
    Source {
        input: AUDIO_IN,
        codec_args: &["-c:a", "libopus", "-b:a", "64k", "-ac", "2"],
        spec: TrackSpec {
            codec: Codec::Opus,
            clock_rate: 48_000,
            channels: 2,
        },
        encoder: "libopus",
    }
}

/// Runs ffmpeg with one RTP output per source and collects what arrives, in arrival order.
/// `None` (with the reason printed) when ffmpeg cannot make these streams.
fn capture(sources: &[Source]) -> Option<Vec<Datagram>> {
    for s in sources {
        if !have_encoder(s.encoder) {
            println!("skip: the installed ffmpeg has no {} encoder", s.encoder);
            return None;
        }
    }
    let (tx, rx) = mpsc::channel();
    let mut args: Vec<String> = vec!["-hide_banner".into(), "-v".into(), "error".into()];
    for s in sources {
        args.extend(s.input.iter().map(|a| a.to_string()));
    }
    for (i, s) in sources.iter().enumerate() {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (p, c) = (
            rtp.local_addr().unwrap().port(),
            rtcp.local_addr().unwrap().port(),
        );
        for (sock, is_rtcp) in [(rtp, false), (rtcp, true)] {
            let tx = tx.clone();
            sock.set_read_timeout(Some(Duration::from_millis(1500)))
                .unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while let Ok(n) = sock.recv(&mut buf) {
                    if tx
                        .send((Instant::now(), i, is_rtcp, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
        args.extend(["-map".into(), format!("{i}:0")]);
        args.extend(s.codec_args.iter().map(|a| a.to_string()));
        args.extend(
            [
                "-t",
                "3",
                "-strict",
                "experimental",
                "-payload_type",
                "96",
                "-f",
                "rtp",
            ]
            .map(String::from),
        );
        args.push(format!("rtp://127.0.0.1:{p}?rtcpport={c}&pkt_size=1200"));
    }
    drop(tx);
    let out = Command::new("ffmpeg").args(&args).output().unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("Unsupported") || err.contains("not supported"),
            "ffmpeg failed: {err}"
        );
        println!(
            "skip: this ffmpeg cannot packetize it for RTP: {}",
            err.trim()
        );
        return None;
    }
    let mut got: Vec<Datagram> = rx.iter().collect();
    got.sort_by_key(|d| d.0);
    Some(got)
}

/// RTP header → (seq, ts, marker, payload); test-only, enough for ffmpeg's packets.
fn rtp(d: &[u8]) -> Option<(u16, u32, bool, &[u8])> {
    if d.len() < 12 || d[0] >> 6 != 2 {
        return None;
    }
    let mut start = 12 + 4 * usize::from(d[0] & 0x0f);
    if d[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([*d.get(start + 2)?, *d.get(start + 3)?]);
        start += 4 + 4 * usize::from(words);
    }
    let mut end = d.len();
    if d[0] & 0x20 != 0 {
        end = end.checked_sub(usize::from(*d.last()?))?;
    }
    let seq = u16::from_be_bytes([d[2], d[3]]);
    let ts = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
    Some((seq, ts, d[1] & 0x80 != 0, d.get(start..end)?))
}

/// An RTCP sender report → (NTP as Unix µs, RTP ts).
fn sender_report(d: &[u8]) -> Option<(u64, u32)> {
    if d.len() < 20 || d[1] != 200 {
        return None;
    }
    let secs = u64::from(u32::from_be_bytes([d[8], d[9], d[10], d[11]]));
    let frac = u64::from(u32::from_be_bytes([d[12], d[13], d[14], d[15]]));
    let unix = secs.checked_sub(2_208_988_800)?;
    Some((
        unix * 1_000_000 + ((frac * 1_000_000) >> 32),
        u32::from_be_bytes([d[16], d[17], d[18], d[19]]),
    ))
}

struct Run {
    stats: confab::record::format::Stats,
    probe: serde_json::Value,
    decode_errors: String,
}

/// Feeds the capture to a muxer (swapping every 25th RTP packet with the next but one, and
/// dropping the `drop`-th) and judges the file.
fn record(sources: &[Source], got: Vec<Datagram>, drop: Option<usize>, file: &Path) -> Run {
    let specs: Vec<TrackSpec> = sources.iter().map(|s| s.spec).collect();
    let mut m = Muxer::new(std::fs::File::create(file).unwrap(), specs).unwrap();
    let t0 = got[0].0;
    let mut media: Vec<&Datagram> = got.iter().collect();
    let mut k = 0;
    while k + 2 < media.len() {
        if k % 25 == 10 && !media[k].2 && !media[k + 2].2 {
            media.swap(k, k + 2);
        }
        k += 1;
    }
    let mut n = 0;
    for (at, track, is_rtcp, d) in media {
        let us = at.duration_since(t0).as_micros() as u64;
        if *is_rtcp {
            if let Some((ntp, ts)) = sender_report(d) {
                m.sender_report(*track, ntp, ts);
            }
            continue;
        }
        let (seq, ts, marker, payload) = rtp(d).expect("an RTP packet");
        n += 1;
        if Some(n) == drop {
            continue;
        }
        m.push(*track, seq, ts, marker, payload, us).unwrap();
    }
    let (_, stats) = m.finish_seekable().unwrap();
    Run {
        stats,
        probe: ffprobe(file),
        decode_errors: decode_errors(file),
    }
}

fn check(run: &Run, codecs: &[&str], format: &str) {
    let streams = run.probe["streams"].as_array().unwrap();
    let names: Vec<&str> = streams
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, codecs, "{}", run.probe);
    assert!(run.probe["format"]["format_name"]
        .as_str()
        .unwrap()
        .contains(format));
    let duration = num(&run.probe["format"]["duration"]);
    assert!(
        (duration - SECONDS).abs() <= SECONDS * 0.1,
        "duration {duration}: {}",
        run.probe
    );
    for s in streams.iter().filter(|s| s["codec_type"] == "video") {
        assert_eq!(
            (s["width"].as_u64(), s["height"].as_u64()),
            (Some(320), Some(240))
        );
    }
}

fn lossless(name: &str, sources: Vec<Source>, codecs: &[&str], format: &str) -> Option<Run> {
    let got = capture(&sources)?;
    let dir = tempfile::tempdir().unwrap();
    let run = record(&sources, got, None, &dir.path().join(format!("{name}.mkv")));
    check(&run, codecs, format);
    assert_eq!(run.stats.packets_lost, 0, "{:?}", run.stats);
    assert_eq!(run.decode_errors, "", "decode errors");
    Some(run)
}

const VPX: &[&str] = &[
    "-c:v",
    "libvpx",
    "-deadline",
    "realtime",
    "-cpu-used",
    "8",
    "-b:v",
    "500k",
    "-g",
    "30",
];

#[test]
fn vp8() {
    lossless(
        "vp8",
        vec![video(Codec::Vp8, "libvpx", VPX)],
        &["vp8"],
        "webm",
    );
}

#[test]
fn vp9() {
    let args = &[
        "-c:v",
        "libvpx-vp9",
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-b:v",
        "500k",
        "-g",
        "30",
    ];
    lossless(
        "vp9",
        vec![video(Codec::Vp9, "libvpx-vp9", args)],
        &["vp9"],
        "webm",
    );
}

#[test]
fn h264() {
    let args = &[
        "-c:v",
        "libx264",
        "-profile:v",
        "baseline",
        "-pix_fmt",
        "yuv420p",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "30",
        "-bsf:v",
        "dump_extra",
    ];
    lossless(
        "h264",
        vec![video(Codec::H264, "libx264", args)],
        &["h264"],
        "matroska",
    );
}

#[test]
fn av1() {
    let args = &[
        "-c:v",
        "libaom-av1",
        "-cpu-used",
        "8",
        "-usage",
        "realtime",
        "-b:v",
        "300k",
        "-g",
        "30",
    ];
    lossless(
        "av1",
        vec![video(Codec::Av1, "libaom-av1", args)],
        &["av1"],
        "webm",
    );
}

#[test]
fn opus_alone() {
    lossless("opus", vec![opus()], &["opus"], "webm");
}

#[test]
fn opus_and_vp8_start_together() {
    let Some(run) = lossless(
        "av",
        vec![video(Codec::Vp8, "libvpx", VPX), opus()],
        &["vp8", "opus"],
        "webm",
    ) else {
        return;
    };
    let starts: Vec<f64> = run.probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| num(&s["start_time"]))
        .collect();
    assert!(
        (starts[0] - starts[1]).abs() < 0.1,
        "start times {starts:?}"
    );
}

#[test]
fn vp8_with_a_lost_packet_waits_for_a_keyframe() {
    let sources = vec![video(Codec::Vp8, "libvpx", VPX)];
    let Some(got) = capture(&sources) else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = record(&sources, got, Some(40), &dir.path().join("lossy.webm"));
    check(&run, &["vp8"], "webm");
    assert_eq!(run.stats.packets_lost, 1, "{:?}", run.stats);
    assert!(run.stats.frames_dropped > 0, "{:?}", run.stats);
    assert_eq!(run.decode_errors, "", "what was written decodes");
}
