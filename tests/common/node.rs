//! For the tests that drive Chromium through a node runner (tests/browser.rs, tests/webapp.rs):
//! the tools they need, `npm ci` of tests/browser from its lockfile, and running a runner under
//! a time limit with its output in a log.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{read_lossy, Daemon};

const HINT: &str = "scripts/install-deps.sh installs nodejs, npm and chromium";

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// tests/browser: livekit-client, livekit-server-sdk and playwright-core (the web app test
/// uses them from there too).
pub fn browser_dir() -> PathBuf {
    root().join("tests/browser")
}

pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM_PATH")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn tool_version(program: &str) -> Result<String, String> {
    match Command::new(program).arg("--version").output() {
        Ok(out) if out.status.success() => {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        Ok(out) => Err(format!(
            "`{program} --version` failed ({}): {}; {HINT}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("cannot run `{program}` ({e}); {HINT}")),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Checks node, npm and Chromium and installs tests/browser/node_modules from the lockfile when
/// it is missing or older. Runs once per test process; every test reports the same error.
pub fn prepare() -> &'static Result<(), String> {
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
        let fresh = match (
            modified(&dir.join("node_modules/.package-lock.json")),
            modified(&dir.join("package-lock.json")),
        ) {
            (Some(i), Some(l)) => i >= l,
            _ => false,
        };
        let complete = dir
            .join("node_modules/livekit-client/dist/livekit-client.esm.mjs")
            .exists()
            && dir.join("node_modules/playwright-core").exists();
        if fresh && complete {
            return Ok(());
        }
        eprintln!("npm ci in {}", dir.display());
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
pub fn test_secret(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{what}-test-{nanos:032x}-{}", std::process::id())
}

pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs a node runner (`cmd`, with `CHROMIUM_PATH` added) with its output in `log`. After
/// `limit` it is sent SIGTERM (so it can print its report and close Chromium), then killed
/// 15 s later, and the test fails with the runner's output and the daemon's log. Returns the
/// exit status and the output.
pub fn run_runner(
    mut cmd: Command,
    log: &Path,
    limit: Duration,
    what: &str,
    d: &Daemon,
) -> (ExitStatus, String) {
    let file = std::fs::File::create(log).unwrap();
    let mut child = cmd
        .env("CHROMIUM_PATH", chromium())
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run node ({e}); {HINT}"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
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
                "{what} did not finish within {limit:?}:\n{}\n\
                 --- confab stderr (last 200 lines) ---\n{}",
                read_lossy(log),
                last_lines(&d.stderr(), 200)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status, read_lossy(log))
}
