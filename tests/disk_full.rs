//! A full disk under the state directory (issue 24 §4): `confab serve` on a 16 MiB tmpfs that is
//! then filled. Writes through the admin API are refused with 503 and words ("not saved", "No
//! space left"), readiness says the state database fails while liveness holds, nothing
//! acknowledged is lost, and once space returns confab writes again by itself — no restart —
//! and a restart afterwards finds everything.
//!
//! Mounting a tmpfs needs root (CI runs as root); without it the test says so and passes
//! nothing off as checked.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{curl, free_ports, Daemon};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

/// A tmpfs mounted at a path, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -t tmpfs on {} failed", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn request(d: &Daemon, jar: &Path, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let ca = d.ca();
    let url = d.url(path);
    let mut args = vec![
        "-sS",
        "--max-time",
        "20",
        "--cacert",
        ca.to_str().unwrap(),
        "-b",
        jar.to_str().unwrap(),
        "-c",
        jar.to_str().unwrap(),
        "-X",
        method,
        "-w",
        "\n%{http_code}",
    ];
    let text;
    if let Some(b) = &body {
        text = b.to_string();
        args.extend(["-H", "content-type: application/json", "--data", &text]);
    }
    args.push(&url);
    let out = curl(&args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.parse().unwrap_or(0), body.to_string())
}

fn set_passcode(d: &Daemon, jar: &Path, room: &str, passcode: &str) -> (u16, String) {
    request(
        d,
        jar,
        "POST",
        "/api/admin/access/passcode",
        Some(json!({"room": room, "passcode": passcode})),
    )
}

/// Fills the file system under `dir` with one file until it is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_state_disk_refuses_writes_in_words_loses_nothing_and_recovers_by_itself() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a tmpfs for the full disk needs root (CI runs as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The state directory is the tmpfs; confab's log stays outside it.
    let fs = Tmpfs::mount(&dir.path().join("data"), "16m");
    let mut d = Daemon::start_with(dir.path(), free_ports(), |_| {});
    let jar = dir.path().join("cookies");
    let (code, body) = request(
        &d,
        &jar,
        "POST",
        "/api/admin/setup",
        Some(json!({"password": PASSWORD, "code": d.setup_code()})),
    );
    assert_eq!(code, 200, "{body}");
    let mut acked: Vec<(String, String)> = vec![];
    let (code, body) = set_passcode(&d, &jar, "before", "pass-before");
    assert_eq!(code, 200, "{body}");
    acked.push(("before".into(), "pass-before".into()));

    let filler = fill(&fs.0);
    // sled takes writes into the space it already holds, then fails: write until it does.
    let mut refusal = None;
    for i in 0..2000 {
        let room = format!("r{i}");
        let passcode = format!("pass-{i}-{}", "x".repeat(40));
        match set_passcode(&d, &jar, &room, &passcode) {
            (200, _) => acked.push((room, passcode)),
            other => {
                refusal = Some(other);
                break;
            }
        }
    }
    let (code, body) = refusal.expect("2000 writes on a full disk were all acknowledged");
    eprintln!(
        "disk full: {} writes acknowledged after filling, then {code} {body}",
        acked.len() - 1
    );
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("not saved") && body.contains("No space left"),
        "the refusal says why: {body}"
    );
    // Readiness reports the state database; the process lives and serves.
    let (code, body) = d.get("/api/health/ready");
    assert_eq!(code, "503", "{body}");
    assert!(body.contains("state database"), "{body}");
    assert_eq!(d.get("/api/health/live").0, "200");
    // Still full: still refused, in words.
    let (code, body) = set_passcode(&d, &jar, "during", "pass-during");
    assert_eq!(code, 503, "{body}");

    // Space returns: confab writes again on its own.
    std::fs::remove_file(&filler).unwrap();
    let t = Instant::now();
    let recovered = loop {
        match set_passcode(&d, &jar, "after", "pass-after") {
            (200, _) => break t.elapsed(),
            (503, _) if t.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(500))
            }
            (code, body) => panic!("no recovery after space returned: {code} {body}"),
        }
    };
    acked.push(("after".into(), "pass-after".into()));
    eprintln!("disk full: writes work again {recovered:?} after space returned");
    let (code, body) = d.get("/api/health/ready");
    assert_eq!(code, "200", "{body}");
    assert!(d.stderr().contains("state database reopened"));

    // Everything acknowledged is there, now and after a restart.
    d.stop();
    let d = Daemon::start_with(dir.path(), free_ports(), |_| {});
    let jar = dir.path().join("cookies-2");
    let (code, body) = request(
        &d,
        &jar,
        "POST",
        "/api/admin/login",
        Some(json!({ "password": PASSWORD })),
    );
    assert_eq!(code, 200, "{body}");
    let (_, access) = request(&d, &jar, "GET", "/api/admin/access", None);
    let access: Value = serde_json::from_str(&access).unwrap();
    let have: Vec<(String, String)> = access["passcodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["room"].as_str().unwrap().to_string(),
                p["passcode"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let lost: Vec<_> = acked.iter().filter(|a| !have.contains(a)).collect();
    assert!(lost.is_empty(), "acknowledged and lost: {lost:?}");
    drop(d);
    drop(fs);
}
