//! The official LiveKit web client against a real `confab serve`: `tests/browser/run.mjs` drives
//! livekit-client in headless Chromium (playwright-core, fake camera and microphone) and uses
//! livekit-server-sdk for tokens and the RoomService API. Three participants see, hear and message
//! each other, mute, leave, get removed and have their room deleted — once with the client's
//! default single-PeerConnection signalling (`/rtc/v1`) and once forced onto `/rtc` (v0).
//!
//! Needs node, npm and Chromium (scripts/install-deps.sh installs them); their absence is a
//! failure, not a skip. `npm ci` runs in tests/browser when its node_modules is missing or older
//! than package-lock.json. Set CHROMIUM_PATH to use another Chromium binary.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{free_ports, Daemon};

const API_KEY: &str = "APIbrowsertest";
/// The runner has its own per-step timeouts and a 240 s deadline; this only catches a wedged node.
const RUNNER_LIMIT: Duration = Duration::from_secs(300);

/// One browser run at a time: each drives three Chromium pages encoding and decoding video, and
/// the join-to-first-frame figure means little on a machine shared with another run.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn tool_version(program: &str) -> Result<String, String> {
    let hint = "scripts/install-deps.sh installs nodejs, npm and chromium";
    match Command::new(program).arg("--version").output() {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => Err(format!(
            "`{program} --version` failed ({}): {}; {hint}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("cannot run `{program}` ({e}); {hint}")),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Checks node, npm and Chromium and installs tests/browser/node_modules from the lockfile if
/// needed. Runs once per test process; every test reports the same error.
fn prepare() -> &'static Result<(), String> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY.get_or_init(|| {
        tool_version("node")?;
        tool_version("npm")?;
        let chromium = chromium();
        if !chromium.exists() {
            return Err(format!(
                "no Chromium at {} (apt-get install chromium, or set CHROMIUM_PATH)",
                chromium.display()
            ));
        }
        let dir = browser_dir();
        let installed = dir.join("node_modules/.package-lock.json");
        let fresh = match (
            modified(&installed),
            modified(&dir.join("package-lock.json")),
        ) {
            (Some(i), Some(l)) => i >= l,
            _ => false,
        };
        if fresh
            && dir
                .join("node_modules/livekit-client/dist/livekit-client.esm.mjs")
                .exists()
        {
            return Ok(());
        }
        eprintln!("browser: npm ci in {}", dir.display());
        let out = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .current_dir(&dir)
            .output()
            .map_err(|e| format!("cannot run npm ci: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm ci in {} failed ({}):\n{}{}",
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    })
}

/// A secret only this test run knows (the config wants at least 32 characters).
fn test_secret() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("browser-test-{nanos:032x}-{}", std::process::id())
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

/// Runs the node runner in `mode` against a fresh daemon; returns its output and the figure
/// join_to_first_frame_ms from its PASS line.
fn run_browser(mode: &str) -> (String, u64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = prepare() {
        panic!("browser test environment: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = test_secret();
    let mut d = Daemon::start_with(dir.path(), free_ports(), |cmd| {
        cmd.env("LIVEKIT_API_KEY", API_KEY)
            .env("LIVEKIT_API_SECRET", &secret);
    });
    let ca = d.ca();
    let log_path = dir.path().join(format!("runner-{mode}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("node")
        .arg(browser_dir().join("run.mjs"))
        .args(["--mode", mode, "--api-key", API_KEY])
        .arg("--url")
        .arg(format!("wss://localhost:{}", d.https))
        .arg("--ca")
        .arg(&ca)
        // The secret goes by environment, not on the command line.
        .env("LIVEKIT_API_SECRET", &secret)
        .env("NODE_EXTRA_CA_CERTS", &ca)
        .env("CHROMIUM_PATH", chromium())
        .current_dir(browser_dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("node must be installed (scripts/install-deps.sh installs it)");

    let started = Instant::now();
    let status: ExitStatus = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUNNER_LIMIT {
            // SIGTERM lets the runner print its report and close Chromium; then insist.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(15) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "browser runner (mode {mode}) did not finish within {RUNNER_LIMIT:?}:\n{}\n\
                 --- confab stderr (last 200 lines) ---\n{}",
                read(&log_path),
                last_lines(&d.stderr(), 200)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    let output = read(&log_path);
    let prefix = format!("browser: PASS mode={mode} join_to_first_frame_ms=");
    let figure = output
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|n| n.trim().parse::<u64>().ok());
    let Some(figure) = figure.filter(|_| status.success()) else {
        panic!(
            "browser runner (mode {mode}) failed ({status}):\n{output}\n\
             --- confab stderr (last 200 lines) ---\n{}",
            last_lines(&d.stderr(), 200)
        );
    };
    // Browsers have left; the daemon still shuts down cleanly.
    d.stop();
    (output, figure)
}

#[test]
fn livekit_client_in_chromium_single_peer_connection_v1() {
    let (output, ms) = run_browser("v1");
    println!("{output}");
    eprintln!("browser v1: join to first remote video frame {ms} ms");
}

#[test]
fn livekit_client_in_chromium_forced_v0_two_peer_connections() {
    let (output, ms) = run_browser("v0");
    println!("{output}");
    eprintln!("browser v0: join to first remote video frame {ms} ms");
}
