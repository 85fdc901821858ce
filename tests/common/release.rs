//! A signed release and a fake A/B device for tests of the update panel: the real minisign
//! (through scripts/sign-release.sh), the fake bootloader, slot "devices" that are plain files,
//! and a real `confab update agent` on its socket.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use confab::update::bootloader::fake::FakeBootloader;
use confab::update::Slot;

/// scripts/sign-release.sh in this repository.
pub fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/sign-release.sh")
}

/// Runs `cmd`; fails the test with its stderr unless it succeeds.
pub fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A signed release of `version` for board `test-board` in `dir/rel`, with a notes URL;
/// returns (release directory, public key).
pub fn signed_release(dir: &Path, version: &str) -> (PathBuf, PathBuf) {
    ok(Command::new(script())
        .arg("--generate-key")
        .arg(dir.join("keys")));
    let img = dir.join("root.img");
    std::fs::write(&img, b"a tiny root filesystem").unwrap();
    let rel = dir.join("rel");
    ok(Command::new(script()).args([
        "--key",
        dir.join("keys/confab.key").to_str().unwrap(),
        "--board",
        "test-board",
        "--version",
        version,
        "--notes-url",
        "https://example.org/notes",
        "--image",
        img.to_str().unwrap(),
        "--out",
        rel.to_str().unwrap(),
    ]));
    (rel, dir.join("keys/confab.pub"))
}

/// A fake device in `dir`: the fake bootloader booted slot A at this version, two slot files.
pub fn fake_device(dir: &Path) {
    FakeBootloader::create(&dir.join("boot"), Slot::A, confab::version::VERSION).unwrap();
    std::fs::create_dir_all(dir.join("slots")).unwrap();
    for slot in ["root-a", "root-b"] {
        std::fs::write(dir.join("slots").join(slot), vec![0u8; 1 << 20]).unwrap();
    }
}

/// The update settings of a device in `dir` (the daemon and the agent get the same).
pub fn update_env(cmd: &mut Command, dir: &Path, rel: &Path, pubkey: &Path) {
    cmd.env("CONFAB_BOARD", "test-board")
        .env("CONFAB_UPDATE_KEYS", pubkey)
        .env("CONFAB_UPDATE_URL", format!("file://{}", rel.display()))
        .env("CONFAB_UPDATE_SOCKET", dir.join("run/update.sock"))
        .env("CONFAB_BOOTLOADER", "fake")
        .env("CONFAB_ESP_DIR", dir.join("boot"))
        .env("CONFAB_SLOT_DIR", dir.join("slots"));
}

/// `confab update agent` for the device in `dir`, listening once this returns (no periodic
/// check: the tests check by hand).
pub fn start_agent(dir: &Path, rel: &Path, pubkey: &Path) -> Child {
    let socket = dir.join("run/update.sock");
    let mut cmd = super::base_command(dir, super::free_ports());
    update_env(&mut cmd, dir, rel, pubkey);
    let agent = cmd
        .args(["update", "agent"])
        .env("CONFAB_DISABLE_UPDATE_CHECK", "true")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "the agent did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    agent
}

/// SIGTERM and wait (the agent removes its socket on the way out).
pub fn stop(mut child: Child) {
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}
