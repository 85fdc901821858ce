//! The load generator's smoke test: `confab-bench` runs a tiny meeting (two synthetic
//! participants publishing audio and simulcast video over confab's real signalling and media)
//! against the real `confab` (the one cargo built next to it, the bench's default), and every
//! subscriber must receive media. No timings are asserted: the figures it prints are for
//! docs/performance.md, not for CI.
#![allow(clippy::unwrap_used)]

use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_confab-bench");

/// Runs `confab-bench meeting --sizes 2 --seconds 2 --no-pin --require-media` with `extra`
/// arguments; returns the cells of the row that starts with `| meeting | {size} |`.
fn bench_row(extra: &[&str], size: &str) -> Vec<String> {
    let out = Command::new(BENCH)
        .args(["meeting", "--sizes", "2", "--seconds", "2"])
        .args(extra)
        .args(["--no-pin", "--require-media"])
        .env("CONFAB_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "confab-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let prefix = format!("| meeting | {size} |");
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no meeting row in:\n{stdout}\n{stderr}"));
    row.split('|').map(|c| c.trim().to_string()).collect()
}

#[test]
fn a_tiny_meeting_carries_media_to_every_subscriber() {
    let cells = bench_row(&[], "2");
    // | scenario | N | pkts/s out | … | receiving | generator CPU % |
    let packets: f64 = cells[3].parse().unwrap();
    assert!(packets > 0.0, "packets were forwarded: {cells:?}");
    assert!(
        cells[cells.len() - 3].starts_with("2/2"),
        "both participants receive media: {cells:?}"
    );
    // | … | delay p50/p99 ms | added by confab p50/p99 ms | …: confab measured the delay of
    // some forwarded packets itself (its /api/status), whatever the figures.
    let added = &cells[9];
    let samples: u64 = added
        .split_once('(')
        .and_then(|(_, n)| n.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no delay measured by confab: {cells:?}"));
    assert!(samples > 0, "confab measured forwarded packets: {cells:?}");
}

/// Two rooms of two on two media threads: the rooms land on different threads (both forward
/// media, by their CPU time) and every participant in each receives media.
#[test]
fn two_rooms_on_two_media_threads_both_carry_media() {
    let cells = bench_row(&["--rooms", "2", "--media-threads", "2"], "2×2");
    // | scenario | N | pkts/s out | pkts per CPU-s | CPU % | media threads CPU % | …
    let threads: Vec<f64> = cells[6]
        .split('/')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    assert_eq!(threads.len(), 2, "two media threads: {cells:?}");
    assert!(
        threads.iter().all(|c| *c >= 0.5),
        "both media threads forward media (one room each): {cells:?}"
    );
    assert!(
        cells[cells.len() - 3].starts_with("4/4"),
        "every participant of both rooms receives media: {cells:?}"
    );
}
