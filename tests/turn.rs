//! A call through confab's TURN relay alone, from LiveKit's native SDK: two participants of
//! the Python SDK (PyPI `livekit`: the Rust core and libwebrtc every non-browser LiveKit
//! client uses) join with ICE restricted to relay candidates and no ICE servers of their own,
//! so they can only reach the SFU through the TURN server and credentials confab's join
//! response hands them (`tests/turn/call.py`). Bob must decode Alice's video and receive her
//! audio, both must have gathered relay candidates only, and confab's `/metrics` must show the
//! media went through its relay. The protocol's refusals (forged credentials, foreign peers,
//! floods) are tested in tests/signal.rs and src/turn/tests.rs.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{free_ports, free_turn_ports, Daemon};
use serde_json::Value;

const KEY: &str = "APIturn";
const SECRET: &str = "turn-test-secret-turn-test-secret-0123456";

/// A `/metrics` sample's value (0 when absent).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn metrics(d: &Daemon) -> String {
    let ca = d.ca();
    let out = common::curl(&["-sS", "--cacert", ca.to_str().unwrap(), &d.url("/metrics")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_native_sdk_peers_hold_a_call_through_the_relay_alone() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let (udp, tls) = free_turn_ports(ports);
    let mut d = Daemon::start_with(dir.path(), ports, |c| {
        c.env("LIVEKIT_API_KEY", KEY)
            .env("LIVEKIT_API_SECRET", SECRET)
            .env("CONFAB_TURN_UDP_PORT", udp.to_string())
            .env("CONFAB_TURN_TLS_PORT", tls.to_string())
            .env("CONFAB_TURN_DOMAIN", "127.0.0.1")
            .env("CONFAB_METRICS_OPEN", "true");
    });
    let before = metrics(&d);
    assert_eq!(
        sample(&before, "confab_turn_allocations_made_total"),
        0.0,
        "{before}"
    );
    let out = Command::new(common::python())
        .arg(common::node::root().join("tests/turn/call.py"))
        .args(["relayed", "--frames", "60", "--timeout", "60"])
        .env("LIVEKIT_URL", format!("wss://localhost:{}", d.https))
        .env("LIVEKIT_API_KEY", KEY)
        .env("LIVEKIT_API_SECRET", SECRET)
        .env("SSL_CERT_FILE", d.ca())
        .env("PYTHONUNBUFFERED", "1")
        .output()
        .expect("the Python venv (scripts/install-deps.sh) is missing");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = stdout
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "call.py printed no report:\n{stdout}\n{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                common::node::last_lines(&d.stderr(), 80)
            )
        });
    let after = metrics(&d);
    let relayed = sample(&after, "confab_turn_relayed_bytes_total");
    let made = sample(&after, "confab_turn_allocations_made_total");
    println!("relayed call: {report}; TURN: {made} allocations, {relayed} bytes relayed");
    let context = || format!("{report}\n{}", common::node::last_lines(&d.stderr(), 80));
    assert!(
        report["frames"].as_u64().unwrap() >= 60,
        "Bob decoded Alice's video: {}",
        context()
    );
    assert!(
        report["audio_frames"].as_u64().unwrap() > 0,
        "and heard her: {}",
        context()
    );
    for who in ["alice_candidates", "bob_candidates"] {
        assert_eq!(
            report[who],
            serde_json::json!(["RELAY"]),
            "{who}: {}",
            context()
        );
    }
    assert!(
        made >= 2.0,
        "each peer connection allocated a relay: {after}"
    );
    // Two seconds of a small plain picture and a silent microphone, both ways of the relay:
    // about 130 kB here; signalling alone (ICE checks, DTLS) would be a few kB.
    assert!(
        relayed > 50_000.0,
        "the media went through the relay: {relayed} bytes"
    );
    d.stop();
}
