//! The official LiveKit web client against a real `confab serve`: `tests/browser/run.mjs` drives
//! livekit-client in headless Chromium (playwright-core, fake camera and microphone) and uses
//! livekit-server-sdk for tokens and the RoomService API. Three participants see, hear and message
//! each other, mute, leave, get removed and have their room deleted — once with the client's
//! default single-PeerConnection signalling (`/rtc/v1`) and once forced onto `/rtc` (v0). With
//! two or more media threads (the default on a multi-core machine) the v0 run's room is put on
//! the second media thread, so livekit-client is proven against a thread other than the first.
//!
//! Needs node, npm and Chromium (scripts/install-deps.sh installs them); their absence is a
//! failure, not a skip. `npm ci` runs in tests/browser when its node_modules is missing or older
//! than package-lock.json. Set CHROMIUM_PATH to use another Chromium binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::node::{browser_dir, last_lines, prepare, run_runner, test_secret};
use common::{free_ports, Daemon};

const API_KEY: &str = "APIbrowsertest";
/// The runner has its own per-step timeouts and a 240 s deadline; this only catches a wedged node.
const RUNNER_LIMIT: Duration = Duration::from_secs(300);

/// One browser run at a time: each drives three Chromium pages encoding and decoding video, and
/// the join-to-first-frame figure means little on a machine shared with another run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs the node runner in `mode` against a fresh daemon; returns its output and the figure
/// join_to_first_frame_ms from its PASS line.
fn run_browser(mode: &str) -> (String, u64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = prepare() {
        panic!("browser test environment: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = test_secret("browser");
    let mut d = Daemon::start_with(dir.path(), free_ports(), |cmd| {
        cmd.env("LIVEKIT_API_KEY", API_KEY)
            .env("LIVEKIT_API_SECRET", &secret);
    });
    let ca = d.ca();
    // With two or more media threads, v0 runs its room on the second one: an empty room created
    // first takes the first thread (new rooms go to the thread with the fewest participants,
    // then the fewest rooms), so the browsers' ICE, DTLS and media use that thread's own ports.
    let second_thread = mode == "v0" && common::media_threads() >= 2;
    if second_thread {
        create_room(&d, &secret, "placeholder-on-thread-0");
    }
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("run.mjs"))
        .args(["--mode", mode, "--api-key", API_KEY])
        .arg("--url")
        .arg(format!("wss://localhost:{}", d.https))
        .arg("--ca")
        .arg(&ca)
        // The secret goes by environment, not on the command line.
        .env("LIVEKIT_API_SECRET", &secret)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .current_dir(browser_dir());
    let log = dir.path().join(format!("runner-{mode}.log"));
    let what = format!("browser runner (mode {mode})");
    let (status, output) = run_runner(cmd, &log, RUNNER_LIMIT, &what, &d);
    let prefix = format!("browser: PASS mode={mode} join_to_first_frame_ms=");
    let figure = output
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.trim().parse::<u64>().ok());
    let Some(figure) = figure.filter(|_| status.success()) else {
        panic!(
            "browser runner (mode {mode}) failed ({status}):\n{output}\n\
             --- confab stderr (last 200 lines) ---\n{}",
            last_lines(&d.stderr(), 200)
        );
    };
    if second_thread {
        let log = d.stderr();
        assert!(
            log.lines()
                .any(|l| l.contains("room placed on a media thread")
                    && l.contains(&format!("browser-{mode}-"))
                    && l.contains("media_thread=1")),
            "the browsers' room was not on media thread 1:\n{}",
            last_lines(&log, 200)
        );
    }
    // Browsers have left; the daemon still shuts down cleanly.
    d.stop();
    (output, figure)
}

#[test]
fn livekit_client_in_chromium_single_peer_connection_v1() {
    let (output, ms) = run_browser("v1");
    println!("{output}");
    eprintln!("browser v1: join to first remote video frame {ms} ms");
}

#[test]
fn livekit_client_in_chromium_forced_v0_two_peer_connections() {
    let (output, ms) = run_browser("v0");
    println!("{output}");
    eprintln!("browser v0: join to first remote video frame {ms} ms");
}

/// CreateRoom over Twirp with an admin token for this test's API key.
fn create_room(d: &Daemon, secret: &str, name: &str) {
    use confab::auth::{ApiKeys, TokenRequest, VideoGrant};
    let keys = ApiKeys::from_map(
        [(
            API_KEY.to_string(),
            confab::config::Secret::new(secret.into()),
        )]
        .into_iter()
        .collect(),
    );
    let token = confab::auth::mint(
        &keys,
        API_KEY,
        &TokenRequest {
            identity: "test-admin".into(),
            ttl: Duration::from_secs(600),
            video: VideoGrant {
                room_create: Some(true),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    let ca = d.ca();
    let out = common::curl(&[
        "-sS",
        "--fail-with-body",
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &format!("authorization: Bearer {token}"),
        "-H",
        "content-type: application/json",
        "--data-binary",
        &format!("{{\"name\":\"{name}\"}}"),
        &d.url("/twirp/livekit.RoomService/CreateRoom"),
    ]);
    assert!(
        out.status.success(),
        "CreateRoom {name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
