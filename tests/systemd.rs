//! The sd_notify protocol as systemd sees it: a real `NOTIFY_SOCKET` datagram socket receives
//! READY=1 with a STATUS= line, WATCHDOG=1 pings when WATCHDOG_USEC is set, and STOPPING=1.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{free_ports, Daemon};

/// Collects datagrams until `done` is satisfied or `limit` passes.
fn collect(
    sock: &UnixDatagram,
    limit: Duration,
    seen: &mut Vec<String>,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && !done(seen) {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`.
fn notify_socket(dir: &std::path::Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (sock, path)
}

#[test]
fn notifies_ready_status_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, sock_path) = notify_socket(dir.path());
    let mut d = Daemon::start_with(dir.path(), free_ports(), |cmd| {
        cmd.env("NOTIFY_SOCKET", &sock_path)
            // 1 s watchdog: confab must ping about every 500 ms.
            .env("WATCHDOG_USEC", "1000000");
    });
    let mut seen = Vec::new();
    let count_watchdog = |s: &[String]| {
        s.iter()
            .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    };
    collect(&sock, Duration::from_secs(10), &mut seen, |s| {
        s.iter().any(|m| m.lines().any(|l| l == "READY=1")) && count_watchdog(s) >= 3
    });
    let ready = seen
        .iter()
        .find(|m| m.lines().any(|l| l == "READY=1"))
        .unwrap_or_else(|| panic!("no READY=1 in {seen:?}"));
    let status = ready
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap();
    assert!(
        status.starts_with(&format!("confab {}", env!("CARGO_PKG_VERSION"))),
        "{status}"
    );
    assert!(
        status.contains("rooms") && status.contains("participants") && status.contains("update")
    );
    assert!(count_watchdog(&seen) >= 3, "watchdog pings: {seen:?}");

    d.signal("TERM");
    collect(&sock, Duration::from_secs(10), &mut seen, |s| {
        s.iter().any(|m| m.lines().any(|l| l == "STOPPING=1"))
    });
    assert!(
        seen.iter().any(|m| m.lines().any(|l| l == "STOPPING=1")),
        "{seen:?}"
    );
    let (status, _) = d.wait_exit(Duration::from_secs(20));
    assert!(status.success());
}

#[test]
fn no_watchdog_pings_without_watchdog_usec() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, sock_path) = notify_socket(dir.path());
    let mut d = Daemon::start_with(dir.path(), free_ports(), |cmd| {
        cmd.env("NOTIFY_SOCKET", &sock_path);
    });
    let mut seen = Vec::new();
    collect(&sock, Duration::from_secs(2), &mut seen, |_| false);
    assert!(seen.iter().any(|m| m.contains("READY=1")), "{seen:?}");
    assert!(!seen.iter().any(|m| m.contains("WATCHDOG=1")), "{seen:?}");
    d.stop();
}

#[test]
fn journald_requested_but_absent_falls_back_to_stderr() {
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        // With a real journald the logs go there; the QEMU image test covers that case.
        eprintln!("journald is running here; fallback not exercised");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_with(dir.path(), free_ports(), |cmd| {
        cmd.env("JOURNAL_STREAM", "8:12345");
    });
    d.stop();
    let log = d.stderr();
    assert!(log.contains("journald unavailable"), "{log}");
    assert!(log.contains("confab is ready"), "{log}");
}
