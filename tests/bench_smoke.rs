//! The load generator's smoke test: `confab bench` runs a tiny meeting (two synthetic
//! participants publishing audio and simulcast video over confab's real signalling and media)
//! against the real binary, and every subscriber must receive media. No timings are asserted:
//! the figures it prints are for docs/performance.md, not for CI.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

#[test]
fn a_tiny_meeting_carries_media_to_every_subscriber() {
    let out = Command::new(common::BIN)
        .args([
            "bench",
            "meeting",
            "--sizes",
            "2",
            "--seconds",
            "2",
            "--no-pin",
            "--require-media",
        ])
        .env("CONFAB_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "confab bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| meeting | 2 |"))
        .unwrap_or_else(|| panic!("no meeting row in:\n{stdout}\n{stderr}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | scenario | N | pkts/s out | … | receiving | generator CPU % |
    let packets: f64 = cells[3].parse().unwrap();
    assert!(packets > 0.0, "packets were forwarded: {row}");
    assert!(
        cells[cells.len() - 3].starts_with("2/2"),
        "both participants receive media: {row}"
    );
}

/// Two rooms of two on two media threads: the rooms land on different threads (both forward
/// media, by their CPU time) and every participant in each receives media.
#[test]
fn two_rooms_on_two_media_threads_both_carry_media() {
    let out = Command::new(common::BIN)
        .args([
            "bench",
            "meeting",
            "--sizes",
            "2",
            "--rooms",
            "2",
            "--media-threads",
            "2",
            "--seconds",
            "2",
            "--no-pin",
            "--require-media",
        ])
        .env("CONFAB_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "confab bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("| meeting | 2×2 |"))
        .unwrap_or_else(|| panic!("no meeting row in:\n{stdout}\n{stderr}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    // | scenario | N | pkts/s out | pkts per CPU-s | CPU % | media threads CPU % | …
    let threads: Vec<f64> = cells[6]
        .split('/')
        .map(|c| c.trim().parse().unwrap())
        .collect();
    assert_eq!(threads.len(), 2, "two media threads: {row}");
    assert!(
        threads.iter().all(|c| *c >= 0.5),
        "both media threads forward media (one room each): {row}"
    );
    assert!(
        cells[cells.len() - 3].starts_with("4/4"),
        "every participant of both rooms receives media: {row}"
    );
}
