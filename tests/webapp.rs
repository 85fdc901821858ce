//! confab's own web app (web/, embedded by build.rs, served at `/` and `/r/<room>`) in headless
//! Chromium against a real `confab serve`: `tests/webapp/run.mjs` (playwright-core, fake camera
//! and microphone) takes two people from the home page through the pre-join page into a meeting
//! where they see each other, chat, share a screen, mute and leave; a third is told that her
//! camera is blocked and the room is full; the recent rooms list shows the room, then "Room ended"
//! once it is deleted. Then the admin page (`/admin`): first-run setup from localhost, overview,
//! log out, a wrong password refused, login, a live room with its participant listed, "End room",
//! and the login rate limit. Screenshots of every page go to `<target>/webapp-screenshots/`.
//!
//! A second run (`--scenario admin`, tests/webapp/admin.mjs) works the admin page's settings
//! against a confab with its own device key and a real update agent (fake bootloader, a signed
//! release): check, "Update now" with progress, "Remind me later" across a reload; key rotation
//! (old key refused by /rtc/validate and Twirp, new one accepted); guest access off with a
//! passcode room (none, wrong, right) and an invite link (works, then revoked); a 64-character
//! room name in the rooms panel. Its screenshots go to `<target>/webapp-screenshots/admin/`.
//!
//! A third run (`--scenario e2ee`, tests/webapp/e2ee.mjs) holds an end-to-end encrypted meeting:
//! the key only in the link's fragment, video, audio and chat decrypted both ways, a simulcast
//! layer switch on encrypted video, and a person without the key (then with a wrong one) told so.
//! Its screenshots go to `<target>/webapp-screenshots/e2ee/`.
//!
//! A fourth run (`--scenario record`, tests/webapp/record.mjs) records a meeting from the web app:
//! the admin (logged in, same browser) has Record, another person does not; both see "● Recording"
//! while it runs and not after Stop; the admin's Recordings panel lists one finished file per
//! person (duration, size), a Download gives a WebM/Matroska file of the listed size, and Delete
//! removes one. Its screenshots go to `<target>/webapp-screenshots/record/`.
//!
//! Needs node, npm, Chromium and a built web app (scripts/install-deps.sh does all of it, with
//! scripts/build-web.sh); their absence is a failure, not a skip. playwright-core and
//! livekit-server-sdk come from tests/browser/node_modules (`npm ci` there when it is stale).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use common::node::{last_lines, prepare, root, run_runner, test_secret};
use common::{free_ports, Daemon};

const API_KEY: &str = "APIwebapptest";
/// The runner has a 240 s deadline of its own; this only catches a wedged node.
const RUNNER_LIMIT: Duration = Duration::from_secs(300);

/// One Chromium run at a time (two would share the 2-core CI machine and the screenshots).
static CHROMIUM: Mutex<()> = Mutex::new(());

/// Where the screenshots go: `<target>/webapp-screenshots[/sub]` (its PNGs removed first).
fn screenshot_dir(sub: Option<&str>) -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut dir = tmp.parent().unwrap_or(tmp).join("webapp-screenshots");
    if let Some(sub) = sub {
        dir = dir.join(sub);
    }
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "png") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    dir
}

fn count_png(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |r| {
        r.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "png"))
            .count()
    })
}

#[test]
fn two_people_meet_through_the_web_app_in_chromium() {
    if let Err(e) = prepare() {
        panic!("web app test environment: {e}");
    }
    let _one = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let secret = test_secret("webapp");
    let mut d = Daemon::start_with(dir.path(), free_ports(), |cmd| {
        cmd.env("LIVEKIT_API_KEY", API_KEY)
            .env("LIVEKIT_API_SECRET", &secret)
            // A third person finds the room full.
            .env("CONFAB_MAX_PARTICIPANTS", "2");
    });

    let (status, page) = d.get("/");
    assert_eq!(status, "200", "GET / answered {status}: {page}");
    assert!(
        page.contains("<meta name=\"confab-app\""),
        "this confab binary does not carry the built web app (GET / gave {:?}…); run \
         scripts/build-web.sh, then build again",
        &page[..page.len().min(200)]
    );

    let shots = screenshot_dir(None);
    let ca = d.ca();
    let mut cmd = Command::new("node");
    cmd.arg(root().join("tests/webapp/run.mjs"))
        .arg("--base")
        .arg(d.url(""))
        .arg("--out")
        .arg(&shots)
        .args(["--api-key", API_KEY, "--max-participants", "2"])
        // The secret goes by environment, not on the command line.
        .env("LIVEKIT_API_SECRET", &secret)
        .env("CONFAB_SETUP_CODE", d.setup_code())
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .current_dir(root().join("tests/webapp"));
    let log = dir.path().join("runner.log");
    let (status, output) = run_runner(cmd, &log, RUNNER_LIMIT, "web app runner", &d);
    let passed = status.success() && output.lines().any(|l| l.starts_with("webapp: PASS"));
    if !passed {
        panic!(
            "web app runner failed ({status}):\n{output}\n\
             --- confab stderr (last 200 lines) ---\n{}",
            last_lines(&d.stderr(), 200)
        );
    }
    println!("{output}");
    let count = count_png(&shots);
    assert!(
        count >= 10,
        "expected a screenshot of every page in {}",
        shots.display()
    );
    eprintln!("webapp: {count} screenshots in {}", shots.display());
    d.stop();
}

#[test]
fn the_admin_page_runs_updates_key_rotation_and_guest_access_in_chromium() {
    use common::release::{fake_device, signed_release, start_agent, stop, update_env};
    if let Err(e) = prepare() {
        panic!("web app test environment: {e}");
    }
    let _one = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rel, pubkey) = signed_release(d, "99.1.0");
    fake_device(d);
    // An earlier release (0.9.9) went into slot B and failed its health check: the fake device
    // booted back into A (B is bad), which the panel reports as a rollback.
    confab::update::agent::state::update(&d.join("data/update-state.json"), |s| {
        s.last_install = Some(confab::update::agent::state::InstallRecord {
            at_unix: 1,
            version: "0.9.9".into(),
            slot: confab::update::Slot::B,
            seconds: 30,
            result: "rebooting into the new slot".into(),
        })
    })
    .unwrap();
    let agent = start_agent(d, &rel, &pubkey);
    // The device's own key (generated on first start): only that one can be rotated.
    let mut daemon = Daemon::start_with(d, free_ports(), |c| update_env(c, d, &rel, &pubkey));
    let shots = screenshot_dir(Some("admin"));
    let mut cmd = Command::new("node");
    cmd.arg(root().join("tests/webapp/run.mjs"))
        .arg("--base")
        .arg(daemon.url(""))
        .arg("--out")
        .arg(&shots)
        .args(["--scenario", "admin"])
        .env("CONFAB_SETUP_CODE", daemon.setup_code())
        .env("NODE_EXTRA_CA_CERTS", daemon.ca())
        .current_dir(root().join("tests/webapp"));
    let log = d.join("runner.log");
    let (status, output) = run_runner(cmd, &log, RUNNER_LIMIT, "web app runner (admin)", &daemon);
    let passed = status.success() && output.lines().any(|l| l.starts_with("webapp: PASS"));
    if !passed {
        panic!(
            "web app runner (admin) failed ({status}):\n{output}\n\
             --- confab stderr (last 200 lines) ---\n{}\n--- agent log ---\n{}",
            last_lines(&daemon.stderr(), 200),
            last_lines(&common::read_lossy(&d.join("agent.log")), 50)
        );
    }
    println!("{output}");
    let count = count_png(&shots);
    assert!(
        count >= 8,
        "expected the admin screenshots in {}",
        shots.display()
    );
    eprintln!("webapp (admin): {count} screenshots in {}", shots.display());
    stop(agent);
    daemon.stop();
}

/// Runs `run.mjs --scenario NAME` against a fresh daemon: it must print `webapp: PASS` and leave
/// at least `min_shots` screenshots.
fn scenario(name: &str, min_shots: usize) {
    if let Err(e) = prepare() {
        panic!("web app test environment: {e}");
    }
    let _one = CHROMIUM.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_with(dir.path(), free_ports(), |_| {});
    let shots = screenshot_dir(Some(name));
    let mut cmd = Command::new("node");
    cmd.arg(root().join("tests/webapp/run.mjs"))
        .arg("--base")
        .arg(d.url(""))
        .arg("--out")
        .arg(&shots)
        .args(["--scenario", name])
        .env("CONFAB_SETUP_CODE", d.setup_code())
        .env("NODE_EXTRA_CA_CERTS", d.ca())
        .current_dir(root().join("tests/webapp"));
    let log = dir.path().join("runner.log");
    let what = format!("web app runner ({name})");
    let (status, output) = run_runner(cmd, &log, RUNNER_LIMIT, &what, &d);
    let passed = status.success() && output.lines().any(|l| l.starts_with("webapp: PASS"));
    if !passed {
        panic!(
            "{what} failed ({status}):\n{output}\n\
             --- confab stderr (last 200 lines) ---\n{}",
            last_lines(&d.stderr(), 200)
        );
    }
    println!("{output}");
    let count = count_png(&shots);
    assert!(
        count >= min_shots,
        "expected the {name} screenshots in {}",
        shots.display()
    );
    eprintln!(
        "webapp ({name}): {count} screenshots in {}",
        shots.display()
    );
    d.stop();
}

#[test]
fn an_end_to_end_encrypted_meeting_decrypts_for_the_key_holders_only_in_chromium() {
    scenario("e2ee", 5);
}

#[test]
fn the_admin_records_a_meeting_and_manages_the_files_in_chromium() {
    scenario("record", 6);
}
