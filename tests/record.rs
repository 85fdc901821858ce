//! Recordings against a real `confab serve`: LiveKit's native Python SDK publishes a camera
//! (VP8, simulcast, libwebrtc's encoder) and a microphone (Opus); LiveKit's own server SDK
//! (`livekit-server-sdk`'s `EgressClient`, `tests/browser/egress.mjs`) starts a participant
//! recording and a track recording, lists and stops them; Debian's `ffprobe`/`ffmpeg` check the
//! files (codecs, duration against the recording's wall time, audio/video start offset, no
//! decode errors). Then `kill -9` during a recording: the file plays and, after the restart, the
//! recording is ABORTED. On a small tmpfs (root only), the disk reserve stops recordings
//! cleanly and refuses new ones.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::media::{decode_errors, ffprobe, num};
use common::{free_ports, Daemon};
use serde_json::Value;

/// One test at a time: each runs libwebrtc publishers, which share two cores in CI.
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

const KEY: &str = "APIrecord";
const SECRET: &str = "record-test-secret-record-test-secret-012";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn start(dir: &Path, extra: &[(&str, &str)]) -> Daemon {
    Daemon::start_with(dir, free_ports(), |c| {
        c.env("LIVEKIT_API_KEY", KEY)
            .env("LIVEKIT_API_SECRET", SECRET);
        for (k, v) in extra {
            c.env(k, v);
        }
    })
}

/// The native-SDK publisher (killed when dropped).
struct Publisher(Child);

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the publisher (VP8) and waits for its tracks: (publisher, video sid, audio sid).
fn publish(d: &Daemon, room: &str, identity: &str, seconds: u32) -> (Publisher, String, String) {
    publish_codec(d, room, identity, seconds, "vp8")
}

fn publish_codec(
    d: &Daemon,
    room: &str,
    identity: &str,
    seconds: u32,
    codec: &str,
) -> (Publisher, String, String) {
    let mut child = Command::new(common::python())
        .arg(root().join("tests/record/publish.py"))
        .args([
            room,
            identity,
            "--seconds",
            &seconds.to_string(),
            "--codec",
            codec,
        ])
        .env("LIVEKIT_URL", format!("wss://localhost:{}", d.https))
        .env("LIVEKIT_API_KEY", KEY)
        .env("LIVEKIT_API_SECRET", SECRET)
        .env("SSL_CERT_FILE", d.ca())
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(d.dir.join(format!("publish-{identity}.log"))).unwrap())
        .spawn()
        .expect("the Python venv (scripts/install-deps.sh) is missing");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "the publisher did not publish:\n{}\n{}",
                common::read_lossy(&d.dir.join(format!("publish-{identity}.log"))),
                d.stderr()
            )
        });
    let v: Value = serde_json::from_str(&line).unwrap();
    (
        Publisher(child),
        v["video"].as_str().unwrap().to_string(),
        v["audio"].as_str().unwrap().to_string(),
    )
}

/// One `EgressClient` call (tests/browser/egress.mjs).
fn egress(d: &Daemon, args: &[&str]) -> Value {
    common::node::prepare().as_ref().unwrap();
    let out = Command::new("node")
        .arg(common::node::browser_dir().join("egress.mjs"))
        .args(args)
        .env("LIVEKIT_URL", format!("https://localhost:{}", d.https))
        .env("LIVEKIT_API_KEY", KEY)
        .env("LIVEKIT_API_SECRET", SECRET)
        .env("NODE_EXTRA_CA_CERTS", d.ca())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|_| {
        panic!(
            "egress.mjs {args:?}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Polls ListEgress until `id` has `status` (protobuf JSON name), returning it.
fn wait_status(d: &Daemon, room: &str, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = egress(d, &["list", room]);
        let item = list
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["egressId"] == id)
            .cloned();
        if let Some(i) = item.clone().filter(|i| i["status"] == status) {
            return i;
        }
        assert!(
            Instant::now() < deadline,
            "{id} did not reach {status}: {item:?}\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The time of the last packet in a file (a killed recording has no Duration in its header).
fn last_packet_seconds(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=pts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse::<f64>().ok())
        .fold(0.0, f64::max)
}

/// The streams of a file by codec name: (codec, start time s, duration s).
fn streams(probe: &Value) -> Vec<(String, f64, f64)> {
    probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_name"].as_str().unwrap_or_default().to_string(),
                num(&s["start_time"]),
                num(&s["duration"]),
            )
        })
        .collect()
}

/// Checks a finished recording's file against its `FileInfo` and the wall time it ran.
fn check_file(d: &Daemon, info: &Value, want: &[&str]) -> PathBuf {
    let file = &info["fileResults"][0];
    let path = d
        .dir
        .join("data/recordings")
        .join(file["filename"].as_str().unwrap());
    assert!(path.exists(), "{}: {info}", path.display());
    let size = std::fs::metadata(&path).unwrap().len();
    assert_eq!(num(&file["size"]) as u64, size, "{info}");
    let probe = ffprobe(&path);
    let got = streams(&probe);
    let codecs: Vec<&str> = got.iter().map(|(c, _, _)| c.as_str()).collect();
    for w in want {
        assert!(
            codecs.contains(w),
            "{} has {codecs:?}, not {w}",
            path.display()
        );
    }
    let wall = (num(&file["endedAt"]) - num(&file["startedAt"])) / 1e9;
    let duration = num(&probe["format"]["duration"]);
    assert!(
        (duration - wall).abs() <= 0.1 * wall,
        "{}: {duration:.2} s of media for {wall:.2} s of recording; streams {got:?}; {}",
        path.display(),
        d.stderr()
            .lines()
            .filter(|l| l.contains("record"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if got.len() > 1 {
        let starts: Vec<f64> = got.iter().map(|(_, s, _)| *s).collect();
        let spread = starts.iter().cloned().fold(f64::MIN, f64::max)
            - starts.iter().cloned().fold(f64::MAX, f64::min);
        assert!(spread < 0.1, "{}: stream starts {starts:?}", path.display());
    }
    let errors = decode_errors(&path);
    assert!(errors.trim().is_empty(), "{}: {errors}", path.display());
    println!(
        "{}: {codecs:?}, {duration:.2} s for {wall:.2} s recorded, {size} bytes",
        file["filename"]
    );
    path
}

#[test]
fn egress_client_records_a_participant_and_a_track_and_kill_9_leaves_a_playable_file() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut d = start(dir.path(), &[]);
    let (_publisher, video, _audio) = publish(&d, "rec", "alice", 60);
    let (_hana, _, _) = publish_codec(&d, "rec", "hana", 30, "h264");

    let part = egress(
        &d,
        &[
            "participant",
            "rec",
            "alice",
            "{room_name}/{publisher_identity}",
        ],
    );
    // STARTING is protobuf's default (0): protobuf-es leaves it out of the JSON.
    assert!(
        part["status"].is_null() || part["status"] == "EGRESS_STARTING",
        "{part}"
    );
    let track = egress(&d, &["track", "rec", &video, "tracks/{track_id}.webm"]);
    // An H.264 publisher: Matroska, even when the name asks for MP4 (`details` says so).
    let h264 = egress(&d, &["participant", "rec", "hana", "hana.mp4"]);
    let hid = h264["egressId"].as_str().unwrap().to_string();
    assert!(
        track["egressId"].as_str().unwrap().starts_with("EG_"),
        "{track}"
    );
    let (pid, tid) = (
        part["egressId"].as_str().unwrap().to_string(),
        track["egressId"].as_str().unwrap().to_string(),
    );
    wait_status(&d, "rec", &pid, "EGRESS_ACTIVE");
    wait_status(&d, "rec", &tid, "EGRESS_ACTIVE");
    let active = egress(&d, &["list", "rec", "active"]);
    assert_eq!(active.as_array().unwrap().len(), 3, "{active}");
    // What cannot be done says so, and names the alternative.
    let composite = egress(&d, &["composite", "rec"]);
    assert!(
        composite["error"]
            .as_str()
            .is_some_and(|e| e.contains("StartParticipantEgress")),
        "{composite}"
    );
    let missing = egress(&d, &["track", "rec", "TR_nope", "x.webm"]);
    assert!(
        missing["error"]
            .as_str()
            .is_some_and(|e| e.contains("not found")),
        "{missing}"
    );
    let bad = egress(&d, &["participant", "rec", "alice", "../../etc/x"]);
    assert!(
        bad["error"].as_str().is_some_and(|e| e.contains("inside")),
        "{bad}"
    );

    std::thread::sleep(Duration::from_secs(8));
    let stopped = egress(&d, &["stop", &pid]);
    assert_eq!(stopped["status"], "EGRESS_ENDING", "{stopped}");
    egress(&d, &["stop", &tid]);
    egress(&d, &["stop", &hid]);
    let p = wait_status(&d, "rec", &pid, "EGRESS_COMPLETE");
    let h = wait_status(&d, "rec", &hid, "EGRESS_COMPLETE");
    let t = wait_status(&d, "rec", &tid, "EGRESS_COMPLETE");
    let again = egress(&d, &["stop", &pid]);
    assert!(
        again["error"]
            .as_str()
            .is_some_and(|e| e.contains("not running")),
        "{again}"
    );
    let pfile = check_file(&d, &p, &["vp8", "opus"]);
    assert!(
        pfile.starts_with(d.dir.join("data/recordings/rec")),
        "{}",
        pfile.display()
    );
    check_file(&d, &t, &["vp8"]);
    let hfile = check_file(&d, &h, &["h264", "opus"]);
    assert_eq!(hfile.extension().unwrap(), "mkv");
    assert!(
        h["details"].as_str().is_some_and(|s| s.contains("not mp4")),
        "{h}"
    );
    assert!(egress(&d, &["list", "rec", "active"])
        .as_array()
        .unwrap()
        .is_empty());

    // kill -9 in the middle of a recording: the file plays up to the last sync, and after the
    // restart the recording is ABORTED with its file kept.
    let crash = egress(&d, &["participant", "rec", "alice", "crash"]);
    let cid = crash["egressId"].as_str().unwrap().to_string();
    wait_status(&d, "rec", &cid, "EGRESS_ACTIVE");
    std::thread::sleep(Duration::from_secs(7));
    d.signal("KILL");
    d.wait_exit(Duration::from_secs(5));
    let file = std::fs::read_dir(d.dir.join("data/recordings"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("crash")
        })
        .expect("the killed recording's file");
    ffprobe(&file);
    let duration = last_packet_seconds(&file);
    assert!(
        duration >= 3.0,
        "{}: only {duration} s play",
        file.display()
    );
    let decoded = decode_errors(&file);
    println!("killed recording: {duration:.2} s play; decoder: {decoded:?}");
    drop(d);
    let d = start(dir.path(), &[]);
    let after = wait_status(&d, "rec", &cid, "EGRESS_ABORTED");
    assert!(num(&after["fileResults"][0]["size"]) > 0.0, "{after}");
    assert!(
        after["error"].as_str().is_some_and(|e| e.contains("crash")),
        "{after}"
    );
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next()
        .unwrap()
}

/// A tmpfs mounted at a path, unmounted on drop (root only).
struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn below_the_disk_reserve_recordings_stop_cleanly_and_new_ones_are_refused() {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("data");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=160m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        println!("SKIPPED: mounting a tmpfs needs root (CI runs as root); nothing was checked");
        return;
    }
    let _tmpfs = Tmpfs(mnt.clone());
    // A 48 MB reserve: recording starts; a file written beside it takes free space below it.
    let d = start(
        dir.path(),
        &[("CONFAB_RECORDING_MIN_FREE_BYTES", "48000000")],
    );
    let (_publisher, _video, _audio) = publish(&d, "full", "bob", 40);
    let rec = egress(&d, &["participant", "full", "bob", "bob"]);
    let id = rec["egressId"].as_str().unwrap().to_string();
    wait_status(&d, "full", &id, "EGRESS_ACTIVE");
    std::thread::sleep(Duration::from_secs(4));
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 1 << 20];
    let free = free_bytes(&mnt);
    assert!(free > 48_000_000, "{free} bytes free at the start");
    for _ in 0..=(free - 40_000_000) >> 20 {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    let done = wait_status(&d, "full", &id, "EGRESS_COMPLETE");
    assert!(
        done["details"]
            .as_str()
            .is_some_and(|s| s.contains("recording.min_free_bytes")),
        "{done}"
    );
    // The file is whole: it decodes to its end.
    let path = d
        .dir
        .join("data/recordings")
        .join(done["fileResults"][0]["filename"].as_str().unwrap());
    let errors = decode_errors(&path);
    assert!(errors.trim().is_empty(), "{errors}");
    assert!(last_packet_seconds(&path) >= 2.0);
    let refused = egress(&d, &["participant", "full", "bob", "again"]);
    assert!(
        refused["error"]
            .as_str()
            .is_some_and(|e| e.contains("not enough free disk space")),
        "{refused}"
    );
    // Space back: recording works again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let again = egress(&d, &["participant", "full", "bob", "again"]);
    assert!(again["egressId"].as_str().is_some(), "{again}");
    println!(
        "reserve: stopped with {:?}; refused with {:?}",
        done["details"], refused["error"]
    );
}
