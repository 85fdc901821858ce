//! The official LiveKit web client against a real `confab serve`: `tests/browser/run.mjs` drives
//! livekit-client in headless Chromium (playwright-core, fake camera and microphone) and uses
//! livekit-server-sdk for tokens and the RoomService API. Three participants see, hear and message
//! each other, mute, leave, get removed and have their room deleted — once with the client's
//! default single-PeerConnection signalling (`/rtc/v1`) and once forced onto `/rtc` (v0). With
//! two or more media threads (the default on a multi-core machine) the v0 run's room is put on
//! the second media thread, so livekit-client is proven against a thread other than the first.
//! A third run (`--mode relay`, tests/browser/relay.mjs) holds a two-party call with ICE limited
//! to relay candidates (iceTransportPolicy 'relay'): all media goes through confab's embedded
//! TURN server, given to the clients in the join response's ice_servers.
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

/// Runs the node runner in `mode` against a fresh daemon; returns its output, the figure
/// join_to_first_frame_ms from its PASS line, and the daemon's log once it has stopped.
fn run_browser(mode: &str) -> (String, u64, String) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = prepare() {
        panic!("browser test environment: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = test_secret("browser");
    let ports = free_ports();
    // relay: the TURN listeners on ports of their own (not the shared defaults), URLs naming
    // 127.0.0.1 (Chromium resolves localhost to ::1 first), and the TURN server's allocations
    // in the log (debug level for it alone).
    let turn = (mode == "relay").then(|| common::free_turn_ports(ports));
    let mut d = Daemon::start_with(dir.path(), ports, |cmd| {
        cmd.env("LIVEKIT_API_KEY", API_KEY)
            .env("LIVEKIT_API_SECRET", &secret);
        if let Some((udp, tls)) = turn {
            cmd.env("CONFAB_TURN_ENABLED", "true")
                .env("CONFAB_TURN_UDP_PORT", udp.to_string())
                .env("CONFAB_TURN_TLS_PORT", tls.to_string())
                .env("CONFAB_TURN_DOMAIN", "127.0.0.1")
                .env("CONFAB_LOG_LEVEL", "info,confab::turn=debug");
        }
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
    (output, figure, d.stderr())
}

#[test]
fn livekit_client_in_chromium_single_peer_connection_v1() {
    let (output, ms, _) = run_browser("v1");
    println!("{output}");
    eprintln!("browser v1: join to first remote video frame {ms} ms");
}

#[test]
fn livekit_client_in_chromium_forced_v0_two_peer_connections() {
    let (output, ms, _) = run_browser("v0");
    println!("{output}");
    eprintln!("browser v0: join to first remote video frame {ms} ms");
}

/// Alice and bob, each in Chromium with iceTransportPolicy 'relay', see and hear each other
/// through confab's TURN server, and each side's selected candidate pair has a relay local
/// candidate (relay.mjs checks both in the pages). The daemon's log shows the allocations.
#[test]
fn livekit_client_in_chromium_through_the_turn_relay_only() {
    let (output, ms, log) = run_browser("relay");
    println!("{output}");
    println!("--- confab's TURN log lines ---");
    for l in log.lines().filter(|l| l.contains("TURN")) {
        println!("{l}");
    }
    assert!(
        log.contains("TURN ready"),
        "confab did not log \"TURN ready\" (the TURN server did not start):\n{}",
        last_lines(&log, 200)
    );
    // One per PeerConnection, network and TURN URL the browser used: at least one per
    // participant. (Not the shutdown line's `allocations_total=`, nor `allocation ended`.)
    let allocations = log
        .lines()
        .filter(|l| l.contains("TURN allocation ") && !l.contains("TURN allocation ended"))
        .count();
    assert!(
        allocations >= 2,
        "expected at least 2 TURN allocations (one per browser) in confab's debug log, saw \
         {allocations}:\n{}",
        last_lines(&log, 200)
    );
    // The TURN server's shutdown line counts what it relayed (informational).
    let relayed = log
        .lines()
        .filter(|l| l.contains("TURN") && l.contains("relayed_bytes="))
        .find_map(|l| l.split("relayed_bytes=").nth(1)?.split_whitespace().next())
        .unwrap_or("(not logged)");
    eprintln!(
        "browser relay: join to first remote video frame through the TURN relay {ms} ms \
         ({allocations} TURN allocations, relayed_bytes {relayed})"
    );
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
