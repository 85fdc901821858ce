//! `confab health` against the real server: exit 0 when ready, 1 with a one-line reason when not
//! (not started yet, not running, not ready, hung, wrong certificate, bad configuration).
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{free_ports, run, Daemon, Frozen};

fn health(d: &Daemon, args: &[&str]) -> Output {
    let mut all = vec!["health"];
    all.extend_from_slice(args);
    run(&d.dir, [d.https, d.http, d.udp, d.tcp], &all, &[])
}

/// stderr must be exactly one line, "confab: not ready: …" containing `want`.
fn assert_unhealthy(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "one line expected: {stderr}");
    assert!(
        stderr.starts_with("confab: not ready: ") && stderr.contains(want),
        "expected '{want}' in: {stderr}"
    );
}

#[test]
fn reports_ready_only_while_the_server_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();

    // Before the first start there is no local CA to trust yet.
    let out = run(dir.path(), ports, &["health"], &[]);
    assert_unhealthy(&out, "no local CA at ");

    let mut d = Daemon::start_with(dir.path(), ports, |_| {});
    let out = health(&d, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!(
            "ready (https://localhost:{} via 127.0.0.1:{})",
            d.https, d.https
        )
    );
    let out = health(&d, &["--quiet"]);
    assert!(out.status.success() && out.stdout.is_empty() && out.stderr.is_empty());

    // The certificate is verified: a CA that did not sign it is refused, not skipped.
    let out = health(&d, &["--ca", "/etc/ssl/certs/ca-certificates.crt"]);
    assert_unhealthy(&out, "TLS with 127.0.0.1:");

    // A hung server (stopped, so the kernel still accepts the connection) is a timeout.
    d.signal("STOP");
    let start = Instant::now();
    let out = health(&d, &["--timeout", "1"]);
    let took = start.elapsed();
    d.signal("CONT");
    assert_unhealthy(&out, "within 1 s");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    d.stop();
    let out = health(&d, &[]);
    assert_unhealthy(
        &out,
        &format!(
            "confab is not running (nothing answers on 127.0.0.1:{}",
            d.https
        ),
    );
}

#[test]
fn a_bad_configuration_is_exit_1_with_the_problem_not_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        free_ports(),
        &["health"],
        &[("CONFAB_HTTPS_PORT", "https"), ("CONFAB_UDP_PORT", "-1")],
    );
    assert_unhealthy(&out, "invalid configuration: ");
    assert_unhealthy(&out, "(and 1 more; `confab serve` lists them all)");
}

#[test]
fn names_the_failing_check_when_the_server_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    assert!(health(&d, &[]).status.success());
    let state = dir.path().join("data/state");
    let Some(frozen) = Frozen::try_freeze(&[state.join("db"), state.clone()]) else {
        eprintln!("chattr +i is not available here (needs root on ext4/xfs); skipping");
        return;
    };
    // The server's state probe runs every 10 s; wait until readiness turns red.
    let deadline = Instant::now() + Duration::from_secs(40);
    let out = loop {
        let out = health(&d, &[]);
        if !out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    drop(frozen);
    assert_unhealthy(&out, "503: state (a write to the state database failed");
    d.signal("KILL");
    let _ = d.wait_exit(Duration::from_secs(10));
}
