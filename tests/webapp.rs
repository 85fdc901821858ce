//! confab's own web app (web/, embedded by build.rs, served at `/` and `/r/<room>`) in headless
//! Chromium against a real `confab serve`: `tests/webapp/run.mjs` (playwright-core, fake camera
//! and microphone) takes two people from the home page through the pre-join page into a meeting
//! where they see each other, chat, share a screen, mute and leave; a third is told that her
//! camera is blocked and the room is full; the recent rooms list shows the room, then "Room ended"
//! once it is deleted. Then the admin page (`/admin`): first-run setup from localhost, overview,
//! log out, a wrong password refused, login, a live room with its participant listed, "End room",
//! and the login rate limit. Screenshots of every page go to `<target>/webapp-screenshots/`.
//!
//! Needs node, npm, Chromium and a built web app (scripts/install-deps.sh does all of it, with
//! scripts/build-web.sh); their absence is a failure, not a skip. playwright-core and
//! livekit-server-sdk come from tests/browser/node_modules (`npm ci` there when it is stale).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::node::{last_lines, prepare, root, run_runner, test_secret};
use common::{free_ports, Daemon};

const API_KEY: &str = "APIwebapptest";
/// The runner has a 240 s deadline of its own; this only catches a wedged node.
const RUNNER_LIMIT: Duration = Duration::from_secs(300);

/// Where the screenshots go: `<target>/webapp-screenshots` (emptied first).
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("webapp-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn two_people_meet_through_the_web_app_in_chromium() {
    if let Err(e) = prepare() {
        panic!("web app test environment: {e}");
    }
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

    let shots = screenshot_dir();
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
    let count = std::fs::read_dir(&shots).map_or(0, |r| r.count());
    assert!(
        count >= 10,
        "expected a screenshot of every page in {}",
        shots.display()
    );
    eprintln!("webapp: {count} screenshots in {}", shots.display());
    d.stop();
}
