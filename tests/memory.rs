//! Idle memory of `confab serve` (docs/performance.md, Memory): the daemon runs without transparent
//! huge pages. With them, mimalloc's arena (which it `madvise`s for huge pages) turned ~2 MB of
//! idle heap into ~42 MB of resident 2 MiB pages. The RSS itself is not asserted: debug builds
//! write memory that release builds only allocate, and machines differ.
#![allow(clippy::unwrap_used)]

mod common;

use common::Daemon;

#[test]
fn serve_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    let pid = d.child.as_ref().unwrap().id();

    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    // THP_enabled (Linux >= 5.0) is 0 once prctl(PR_SET_THP_DISABLE) is in effect.
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let huge_kb = rollup
        .lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("0");
    assert_eq!(huge_kb, "0", "huge pages in confab's memory:\n{rollup}");
    d.stop();
}
