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

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{free_ports, Daemon};

const API_KEY: &str = "APIwebapptest";
/// The runner has a 240 s deadline of its own; this only catches a wedged node.
const RUNNER_LIMIT: Duration = Duration::from_secs(300);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Where the screenshots go: `<target>/webapp-screenshots` (emptied first).
fn screenshot_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.parent().unwrap_or(tmp).join("webapp-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run_ok(program: &str, args: &[&str], dir: &Path) -> Result<(), String> {
    let hint = "scripts/install-deps.sh installs nodejs, npm and chromium";
    match Command::new(program).args(args).current_dir(dir).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`{program} {}` in {} failed ({}):\n{}{}",
            args.join(" "),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("cannot run `{program}` ({e}); {hint}")),
    }
}

/// node, npm, Chromium, and tests/browser/node_modules (installed from its lockfile if stale).
fn prepare() -> Result<(), String> {
    run_ok("node", &["--version"], root())?;
    run_ok("npm", &["--version"], root())?;
    if !chromium().exists() {
        return Err(format!(
            "no Chromium at {} (apt-get install chromium, or set CHROMIUM_PATH)",
            chromium().display()
        ));
    }
    let dir = root().join("tests/browser");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let fresh = match (
        modified(&dir.join("node_modules/.package-lock.json")),
        modified(&dir.join("package-lock.json")),
    ) {
        (Some(i), Some(l)) => i >= l,
        _ => false,
    };
    if !fresh || !dir.join("node_modules/playwright-core").exists() {
        eprintln!("webapp: npm ci in {}", dir.display());
        run_ok(
            "npm",
            &["ci", "--no-audit", "--no-fund", "--loglevel=error"],
            &dir,
        )?;
    }
    Ok(())
}

fn read(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn two_people_meet_through_the_web_app_in_chromium() {
    if let Err(e) = prepare() {
        panic!("web app test environment: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let secret = format!("webapp-test-{nanos:032x}-{}", std::process::id());
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
    let log_path = dir.path().join("runner.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("node")
        .arg(root().join("tests/webapp/run.mjs"))
        .arg("--base")
        .arg(d.url(""))
        .arg("--out")
        .arg(&shots)
        .args(["--api-key", API_KEY, "--max-participants", "2"])
        // The secret goes by environment, not on the command line.
        .env("LIVEKIT_API_SECRET", &secret)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .env("CHROMIUM_PATH", chromium())
        .current_dir(root().join("tests/webapp"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("node must be installed (scripts/install-deps.sh installs it)");

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUNNER_LIMIT {
            // SIGTERM lets the runner print its report and close Chromium; then insist.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(15) && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "web app runner did not finish within {RUNNER_LIMIT:?}:\n{}\n\
                 --- confab stderr (last 200 lines) ---\n{}",
                read(&log_path),
                last_lines(&d.stderr(), 200)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    let output = read(&log_path);
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
