//! Runs the real `confab` binary for integration tests: a temporary state directory, free
//! loopback ports, and a guard that stops the process when the test ends.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub mod media;
pub mod node;
pub mod release;

pub const BIN: &str = env!("CARGO_BIN_EXE_confab");

/// The Python with LiveKit's pinned packages (tests/python/requirements.txt; put there by
/// scripts/install-deps.sh), or `CONFAB_PYTHON`.
pub fn python() -> PathBuf {
    std::env::var_os("CONFAB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/confab/python/bin/python"))
}

/// A free UDP port and a free TCP port on 127.0.0.1 for TURN's listeners, clear of a daemon's
/// `ports` (from [`free_ports`]) and of the media threads' ports beside them.
pub fn free_turn_ports(ports: [u16; 4]) -> (u16, u16) {
    let n = media_threads() as u32;
    let taken = |p: u16| {
        let in_media = |base: u16| (base as u32..base as u32 + n).contains(&(p as u32));
        p == ports[0] || p == ports[1] || in_media(ports[2]) || in_media(ports[3])
    };
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let (u, t) = (
            udp.local_addr().unwrap().port(),
            tcp.local_addr().unwrap().port(),
        );
        if !taken(u) && !taken(t) && u != t && claim(&[u, t]) {
            return (u, t);
        }
    }
}

/// Four distinct free ports (https, http, udp, tcp) on 127.0.0.1. The daemon runs one media
/// thread per core by default, thread `i` on `udp + i` and `tcp + i`: those are free too (up to
/// one per core), and the TCP range holds neither the https nor the http port.
/// Ports already handed to a daemon by this test binary (with their media ranges): tests run
/// in parallel, and the OS may hand a just-released port to the next `bind(0)`.
static CLAIMED: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Claims every one of `ports` for this test binary, or none if one was claimed before.
fn claim(ports: &[u16]) -> bool {
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    if ports.iter().any(|p| claimed.contains(p)) {
        return false;
    }
    claimed.extend(ports);
    true
}

pub fn free_ports() -> [u16; 4] {
    let n = media_threads() as u16;
    loop {
        let tcp: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = [
            tcp[0].local_addr().unwrap().port(),
            tcp[1].local_addr().unwrap().port(),
            udp.local_addr().unwrap().port(),
            tcp[2].local_addr().unwrap().port(),
        ];
        // The UDP port must also be free for TCP-less use; distinctness is what matters here.
        if p[2] == p[0] || p[2] == p[1] || p[2] == p[3] {
            continue;
        }
        let (u, t) = (p[2] as u32, p[3] as u32);
        let clash = |x: u16| (x as u32) > t && (x as u32) < t + n as u32;
        if u + n as u32 > 65_536 || t + n as u32 > 65_536 || clash(p[0]) || clash(p[1]) {
            continue;
        }
        let rest_free = (1..n).all(|i| {
            UdpSocket::bind(("127.0.0.1", p[2] + i)).is_ok()
                && TcpListener::bind(("127.0.0.1", p[3] + i)).is_ok()
        });
        let media = (0..n).flat_map(|i| [p[2] + i, p[3] + i]);
        let all: Vec<u16> = [p[0], p[1]].into_iter().chain(media).collect();
        if rest_free && claim(&all) {
            return p;
        }
    }
}

/// How many media threads a daemon started without `CONFAB_MEDIA_THREADS` runs here.
pub fn media_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: PathBuf,
    pub https: u16,
    pub http: u16,
    pub udp: u16,
    pub tcp: u16,
    pub stderr_path: PathBuf,
}

/// The environment a test daemon runs with: only what we set (no inherited CONFAB_* or LIVEKIT_*).
pub fn base_command(dir: &Path, ports: [u16; 4]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONFAB_STATE_DIR", dir.join("data"))
        .env("CONFAB_BIND", "127.0.0.1")
        .env("CONFAB_HTTPS_PORT", ports[0].to_string())
        .env("CONFAB_HTTP_PORT", ports[1].to_string())
        .env("CONFAB_UDP_PORT", ports[2].to_string())
        .env("CONFAB_TCP_PORT", ports[3].to_string())
        // TURN's own ports off (tests run many daemons at once; the defaults 3478/5349 would be
        // taken by the first): TURN over TLS on the HTTPS port stays. tests/turn.rs and the
        // TURN tests in tests/signal.rs give it ports of their own.
        .env("CONFAB_TURN_UDP_PORT", "0")
        .env("CONFAB_TURN_TLS_PORT", "0")
        .env("CONFAB_LOG_LEVEL", "info")
        .current_dir(dir);
    cmd
}

impl Daemon {
    /// Starts `confab serve` in `dir` and waits until it is live.
    pub fn start(dir: &Path) -> Daemon {
        Self::start_with(dir, free_ports(), |_| {})
    }

    pub fn start_with(dir: &Path, ports: [u16; 4], customize: impl FnOnce(&mut Command)) -> Daemon {
        let stderr_path = dir.join(format!("stderr-{}.log", ports[0]));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut cmd = base_command(dir, ports);
        cmd.arg("serve").stdout(Stdio::null()).stderr(stderr);
        customize(&mut cmd);
        let child = cmd.spawn().unwrap();
        let mut d = Daemon {
            child: Some(child),
            dir: dir.to_path_buf(),
            https: ports[0],
            http: ports[1],
            udp: ports[2],
            tcp: ports[3],
            stderr_path,
        };
        d.wait_live();
        d
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("data/tls/ca.crt")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.https)
    }

    fn wait_live(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.ca().exists() {
                let out = curl(&[
                    "-sS",
                    "--max-time",
                    "2",
                    "--cacert",
                    self.ca().to_str().unwrap(),
                    &self.url("/api/health/live"),
                ]);
                if out.status.success() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "confab exited during start-up ({status}):\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("confab did not become live within 30 s:\n{}", self.stderr());
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// The one-time admin setup code, from the copy confab keeps in its state directory.
    pub fn setup_code(&self) -> String {
        std::fs::read_to_string(self.dir.join("data/setup-code"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// `GET path` over HTTPS with curl, trusting the daemon's CA: (status code, body).
    pub fn get(&self, path: &str) -> (String, String) {
        let ca = self.ca();
        let out = curl(&[
            "-sS",
            "--cacert",
            ca.to_str().unwrap(),
            "-w",
            "\n%{http_code}",
            &self.url(path),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// Waits up to `limit` for the process to exit; returns its status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return (status, start.elapsed());
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                panic!("confab did not exit within {limit:?}:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM and wait; asserts a clean exit.
    pub fn stop(&mut self) {
        self.signal("TERM");
        let (status, _) = self.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "exit status {status}:\n{}", self.stderr());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(args)
        .output()
        .expect("curl must be installed (scripts/install-deps.sh installs it)")
}

/// A file's text, or what could be read of it (empty if it does not exist yet).
pub fn read_lossy(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

/// Runs the binary to completion with the test environment.
pub fn run(
    dir: &Path,
    ports: [u16; 4],
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = base_command(dir, ports);
    cmd.args(args);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Makes files immutable (`chattr +i`, root on ext4/xfs) until dropped, so writes to them fail
/// as on a broken disk (the server's state probe fails for real). `None` where chattr cannot.
pub struct Frozen(Vec<std::path::PathBuf>);

impl Frozen {
    pub fn try_freeze(paths: &[std::path::PathBuf]) -> Option<Frozen> {
        for p in paths {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                drop(Frozen(paths.to_vec()));
                return None;
            }
        }
        Some(Frozen(paths.to_vec()))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .args(&self.0)
            .status();
    }
}
