//! The health gate and the agent service, with the real binary: `confab update mark-good`
//! commits a trial boot only once the running server answers ready, and `confab update agent`
//! serves its API on a Unix socket.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, run, Daemon};
use confab::update::bootloader::fake::FakeBootloader;
use confab::update::bootloader::{Bootloader, TryBoot};
use confab::update::{Slot, SlotHealth};

/// A fake device that has just booted slot B on trial.
fn trial_boot_of_b(root: &Path) {
    let mut fake = FakeBootloader::create(root, Slot::A, "0.1.0").unwrap();
    fake.mark_bad(Slot::B).unwrap();
    std::fs::create_dir_all(fake.boot_files_dir(Slot::B).unwrap()).unwrap();
    fake.set_try(&TryBoot {
        slot: Slot::B,
        version: "0.2.0".into(),
    })
    .unwrap();
    assert_eq!(FakeBootloader::simulate_boot(root).unwrap(), Slot::B);
    assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Trying);
}

#[test]
fn mark_good_commits_only_after_the_server_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot");
    trial_boot_of_b(&boot);
    let ports = free_ports();
    let env = [
        ("CONFAB_BOOTLOADER", "fake"),
        ("CONFAB_ESP_DIR", boot.to_str().unwrap()),
    ];

    // Nothing answers: the gate fails (exit 1), and the trial stays uncommitted.
    let started = Instant::now();
    let out = run(
        dir.path(),
        ports,
        &["update", "mark-good", "--timeout-seconds", "2"],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("health check did not pass"));
    assert_eq!(
        FakeBootloader::open(&boot)
            .unwrap()
            .health(Slot::B)
            .unwrap(),
        SlotHealth::Trying
    );

    // With the server up and ready, the booted slot becomes the default.
    let mut d = Daemon::start_with(dir.path(), ports, |c| {
        c.env("CONFAB_BOOTLOADER", "fake")
            .env("CONFAB_ESP_DIR", &boot);
    });
    let out = run(
        dir.path(),
        ports,
        &["update", "mark-good", "--timeout-seconds", "30"],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "slot b committed"
    );
    let fake = FakeBootloader::open(&boot).unwrap();
    assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Good);
    assert_eq!(
        FakeBootloader::simulate_boot(&boot).unwrap(),
        Slot::B,
        "B is now the default"
    );

    // The running server reports it in `confab status`.
    let out = run(dir.path(), ports, &["status", "--json"], &env);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["update"], "not checked yet");
    d.stop();
}

#[test]
fn agent_serves_status_on_its_socket_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot");
    FakeBootloader::create(&boot, Slot::A, "0.1.0").unwrap();
    let socket = dir.path().join("run/update.sock");
    let mut cmd = common::base_command(dir.path(), free_ports());
    let mut agent = cmd
        .args(["update", "agent"])
        .env("CONFAB_BOOTLOADER", "fake")
        .env("CONFAB_ESP_DIR", &boot)
        .env("CONFAB_UPDATE_SOCKET", &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--unix-socket", socket.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, body) = curl(&["http://agent/status"]);
    assert!(ok, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["bootloader"], "fake");
    assert_eq!(status["slots"][0]["health"], "good");
    assert_eq!(status["slots"][0]["booted"], true);
    assert_eq!(status["slots"][1]["health"], "bad");

    // No update source configured: a check says so rather than pretending.
    let (_, body) = curl(&["-X", "POST", "http://agent/check"]);
    assert!(body.contains("no update source"), "{body}");
    let (_, body) = curl(&["http://agent/progress"]);
    assert!(body.contains("\"running\":false"), "{body}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o660,
            "only root and the confab group may talk to the agent"
        );
    }

    Command::new("kill")
        .arg(agent.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = agent.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "agent did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    assert!(!socket.exists(), "the socket is removed on exit");
}
