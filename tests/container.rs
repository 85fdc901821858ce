//! The container settings, proven without a container engine: the real binary runs in a
//! bubblewrap sandbox built like the image and docker-compose.yml — an empty read-only root
//! holding only the binary and the CA bundle, `/data` a writable volume, `/tmp` a separate
//! writable directory (compose's tmpfs), UID 65532 (the image's `USER`) with no capabilities
//! and no-new-privileges (bubblewrap sets both), the binary as PID 1 (Docker runs no init), the
//! host's network (`network_mode: host`), and no environment but the image's `ENV` and the lines
//! of `.env.example`. It must start, generate its key and CA in the volume, pass the Dockerfile's
//! own `HEALTHCHECK` command, stop cleanly on SIGTERM, and write nothing outside the volume.
//!
//! Needs `bwrap` (Debian package bubblewrap) and user namespaces; run as root it also drops to
//! UID 65532 for real with util-linux's `setpriv`, so the volume's files are owned by that UID.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, read_lossy, BIN};

const UID: u32 = 65532;
const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn repo_file(name: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(name))
        .unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
}

/// `KEY=VALUE` pairs of the Dockerfile's `ENV` instruction (continued lines included).
fn dockerfile_env(dockerfile: &str) -> Vec<(String, String)> {
    let mut text = String::new();
    let mut lines = dockerfile.lines().skip_while(|l| !l.starts_with("ENV "));
    for line in lines.by_ref() {
        let continued = line.trim_end().ends_with('\\');
        text.push_str(line.trim_end().trim_end_matches('\\'));
        text.push(' ');
        if !continued {
            break;
        }
    }
    text.trim_start_matches("ENV ")
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("ENV KEY=VALUE");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// The exec-form command of the Dockerfile's `HEALTHCHECK … CMD [...]`.
fn dockerfile_healthcheck(dockerfile: &str) -> Vec<String> {
    let start = dockerfile
        .find("HEALTHCHECK")
        .expect("Dockerfile has a HEALTHCHECK");
    let rest = &dockerfile[start..];
    let json = &rest[rest.find("CMD [").expect("HEALTHCHECK CMD in exec form") + 4..];
    let json = &json[..=json.find(']').unwrap()];
    serde_json::from_str(json).unwrap()
}

/// The uncommented `KEY=VALUE` lines of `.env.example`.
fn env_example() -> Vec<(String, String)> {
    repo_file(".env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect(".env.example: KEY=VALUE lines");
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// Is `bin` dynamically linked (it then needs the host's libraries in the sandbox)? True when
/// the 64-bit ELF has a PT_INTERP program header (the dynamic loader).
fn is_dynamic(bin: &Path) -> bool {
    let elf = std::fs::read(bin).unwrap();
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "not a 64-bit little-endian ELF"
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let o = phoff + i * size;
        u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) == 3 // PT_INTERP
    })
}

struct Sandbox {
    volume: PathBuf,
    tmp: PathBuf,
    env: Vec<(String, String)>,
    bin: PathBuf,
}

impl Sandbox {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = if running_as_root() {
            let mut c = Command::new("setpriv");
            c.args([
                "--reuid",
                &UID.to_string(),
                "--regid",
                &UID.to_string(),
                "--clear-groups",
                "--inh-caps=-all",
                "--bounding-set=-all",
                "--no-new-privs",
                "bwrap",
            ]);
            c
        } else {
            let mut c = Command::new("bwrap");
            c.args(["--uid", &UID.to_string(), "--gid", &UID.to_string()]);
            c
        };
        cmd.env_clear();
        cmd.args([
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--as-pid-1",
            "--die-with-parent",
            "--new-session",
            "--clearenv",
        ]);
        for (k, v) in &self.env {
            cmd.args(["--setenv", k, v]);
        }
        let bin = self.bin.to_str().unwrap();
        cmd.args(["--ro-bind", bin, "/usr/bin/confab"]);
        let bundle = "/etc/ssl/certs/ca-certificates.crt";
        if Path::new(bundle).exists() {
            cmd.args(["--ro-bind", bundle, bundle]);
        }
        if is_dynamic(&self.bin) {
            // The test build links glibc; the image's static musl binary needs none of this.
            for dir in ["/lib", "/lib64", "/usr/lib", "/usr/lib64"] {
                if Path::new(dir).exists() {
                    cmd.args(["--ro-bind", dir, dir]);
                }
            }
        }
        cmd.args(["--bind", self.volume.to_str().unwrap(), "/data"]);
        cmd.args(["--bind", self.tmp.to_str().unwrap(), "/tmp"]);
        cmd.args(["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/"]);
        cmd.args(["--chdir", "/data", "/usr/bin/confab"]);
        cmd.args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

/// The PID (outside the sandbox) of bwrap's child, i.e. confab as PID 1 of its namespace.
fn sandboxed_pid(bwrap: &Child) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Under setpriv the chain is setpriv (exec'd into bwrap) -> confab.
        let path = format!("/proc/{0}/task/{0}/children", bwrap.id());
        if let Some(pid) = read_lossy(Path::new(&path))
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "bwrap started no child");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn compose_file_keeps_the_settings_this_test_proves() {
    let compose = repo_file("docker-compose.yml");
    for setting in [
        "network_mode: host",
        "read_only: true",
        "- /tmp",
        "no-new-privileges:true",
        "cap_drop:\n      - ALL",
        "cap_add:\n      - NET_BIND_SERVICE",
        "restart: unless-stopped",
        "- confab-data:/data",
        "env_file: .env",
        "mem_limit:",
    ] {
        assert!(
            compose.contains(setting),
            "docker-compose.yml lost `{setting}`"
        );
    }
    let dockerfile = repo_file("Dockerfile");
    assert!(dockerfile.contains(&format!("\nUSER {UID}:{UID}\n")));
    // Both targets are the `runtime` stage (FROM scratch) plus files.
    for stage in [
        "\nFROM scratch AS runtime\n",
        "\nFROM runtime AS prebuilt\n",
        "\nFROM runtime AS source\n",
    ] {
        assert!(
            dockerfile.contains(stage),
            "Dockerfile lost `{}`",
            stage.trim()
        );
    }
    let env = dockerfile_env(&dockerfile);
    assert!(
        env.contains(&("CONFAB_STATE_DIR".into(), "/data".into())),
        "{env:?}"
    );
    assert_eq!(
        dockerfile_healthcheck(&dockerfile)[..2],
        ["/usr/bin/confab".to_string(), "health".to_string()]
    );
}

#[test]
fn runs_read_only_as_an_unprivileged_user_with_only_the_compose_environment() {
    assert!(
        Command::new("bwrap")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "bwrap not found: install Debian's bubblewrap (scripts/install-deps.sh)"
    );
    // Can this machine make the sandbox at all? (Docker's default seccomp profile, for one,
    // refuses the user namespace: CI containers then need --privileged or a seccomp exception.)
    let mut probe = Sandbox {
        volume: PathBuf::from("/tmp"),
        tmp: PathBuf::from("/tmp"),
        env: Vec::new(),
        bin: PathBuf::from(BIN),
    }
    .command(&["--version"]);
    let out = probe.output().unwrap();
    assert!(
        out.status.success(),
        "cannot create the sandbox here (user namespaces, as UID {UID}): {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    // The sandbox user must be able to reach the bind-mount sources.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let volume = dir.path().join("volume");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&volume).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    if running_as_root() {
        // What the image's `COPY --chown=65532:65532` gives a fresh named volume.
        std::os::unix::fs::chown(&volume, Some(UID), Some(UID)).unwrap();
    }

    let dockerfile = repo_file("Dockerfile");
    let ports = free_ports();
    let mut env = vec![("PATH".to_string(), "/usr/bin:/bin".to_string())];
    env.extend(dockerfile_env(&dockerfile));
    for (k, v) in env_example() {
        // The example's ports, moved to free ones so tests can run side by side.
        let v = match k.as_str() {
            "CONFAB_HTTPS_PORT" => ports[0].to_string(),
            "CONFAB_HTTP_PORT" => ports[1].to_string(),
            "CONFAB_UDP_PORT" => ports[2].to_string(),
            "CONFAB_TCP_PORT" => ports[3].to_string(),
            _ => v,
        };
        env.push((k, v));
    }
    for k in [
        "CONFAB_HTTPS_PORT",
        "CONFAB_HTTP_PORT",
        "CONFAB_UDP_PORT",
        "CONFAB_TCP_PORT",
    ] {
        assert!(
            env.iter().any(|(e, _)| e == k),
            ".env.example no longer sets {k}"
        );
    }
    let sandbox = Sandbox {
        volume: volume.clone(),
        tmp: tmp.clone(),
        env,
        bin: PathBuf::from(BIN),
    };

    // The image's `confab --version` works in the empty root.
    let out = sandbox.run(&["--version"]);
    assert!(out.status.success(), "{out:?}");

    let log_path = dir.path().join("serve.log");
    let mut server = sandbox
        .command(&["serve"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let pid = sandboxed_pid(&server);
    let log = || read_lossy(&log_path);

    // The Dockerfile's HEALTHCHECK command, run inside the same kind of sandbox (as `docker exec`).
    let health = dockerfile_healthcheck(&dockerfile);
    let health_args: Vec<&str> = health[1..].iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = sandbox.run(&health_args);
        if out.status.success() {
            break;
        }
        if let Some(status) = server.try_wait().unwrap() {
            panic!("confab exited in the sandbox ({status}):\n{}", log());
        }
        assert!(
            Instant::now() < deadline,
            "not healthy within 30 s: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // What the kernel says about PID 1 of the sandbox: the image's user, no capabilities, no
    // new privileges (a fixed seccomp-free view of compose's user/cap_drop/security_opt).
    let status = read_lossy(Path::new(&format!("/proc/{pid}/status")));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<&str>>())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    if running_as_root() {
        let uid = UID.to_string();
        assert_eq!(field("Uid:"), [uid.as_str(); 4], "{status}");
        assert_eq!(field("Gid:"), [uid.as_str(); 4], "{status}");
        assert_eq!(field("Groups:"), Vec::<&str>::new(), "{status}");
    }
    assert_eq!(field("CapEff:"), ["0000000000000000"], "{status}");
    assert_eq!(field("CapPrm:"), ["0000000000000000"], "{status}");
    assert_eq!(field("NoNewPrivs:"), ["1"], "{status}");
    let mounts = read_lossy(Path::new(&format!("/proc/{pid}/mounts")));
    let root = mounts
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("/"))
        .unwrap_or_else(|| panic!("no / in the sandbox's mounts:\n{mounts}"));
    assert!(
        root.split_whitespace()
            .nth(3)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "root is not read-only: {root}"
    );

    // Key and CA were generated in the volume, owned by the image's user.
    let keys = volume.join("keys.toml");
    let meta = std::fs::metadata(&keys).unwrap_or_else(|e| panic!("{e}: {}", log()));
    assert_eq!(meta.mode() & 0o777, 0o600);
    if running_as_root() {
        assert_eq!((meta.uid(), meta.gid()), (UID, UID));
    }
    assert!(volume.join("tls/ca.crt").exists());
    // The CLI works in the container too (`docker compose exec confab confab token …`).
    let out = sandbox.run(&["token", "--identity", "alice", "--room", "standup"]);
    assert!(
        out.status.success() && out.stdout.starts_with(b"eyJ"),
        "{out:?}"
    );

    // `docker compose stop`: SIGTERM to PID 1, clean exit well within stop_grace_period.
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit 20 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = log();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("state flushed"), "{log}");
    assert!(!log.contains("Read-only file system"), "{log}");
    // Nothing was written outside the volume: /tmp stayed empty (the root is read-only, so
    // any other write would have failed and been reported).
    assert_eq!(files_under(&tmp), Vec::<String>::new());
    let written = files_under(&volume);
    assert!(written.contains(&"state".to_string()), "{written:?}");
}
