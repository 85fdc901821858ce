//! `confab backup` and `confab restore` against the real binary, with curl as the admin page:
//! a backup taken while the server runs (and one while it is stopped) brings back the admin
//! password, the API key (tokens minted before still validate), the access settings and the local
//! CA onto a wiped device; restore refuses while confab runs, a damaged archive and a newer
//! schema, changing nothing; the admin download needs a session or the backup token.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use common::{curl, Daemon};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

/// An admin session: curl with a cookie jar.
struct Admin<'a> {
    d: &'a Daemon,
    jar: PathBuf,
}

impl<'a> Admin<'a> {
    fn new(d: &'a Daemon, name: &str) -> Admin<'a> {
        Admin {
            d,
            jar: d.dir.join(format!("cookies-{name}-{}", d.https)),
        }
    }

    fn setup(d: &'a Daemon) -> Admin<'a> {
        let a = Admin::new(d, "admin");
        let (code, body) = a.post(
            "/api/admin/setup",
            json!({"password": PASSWORD, "code": d.setup_code()}),
        );
        assert_eq!(code, 200, "{body}");
        a
    }

    fn login(d: &'a Daemon, password: &str) -> (Admin<'a>, u16) {
        let a = Admin::new(d, "admin");
        let (code, _) = a.post("/api/admin/login", json!({ "password": password }));
        (a, code)
    }

    /// (status, body bytes) of a request; `out` saves the body to a file instead.
    fn raw(&self, method: &str, path: &str, body: Option<Value>, extra: &[&str]) -> (u16, Vec<u8>) {
        let ca = self.d.ca();
        let url = self.d.url(path);
        let out_file = self.d.dir.join("curl-body");
        let mut args = vec![
            "-sS",
            "--max-time",
            "60",
            "--cacert",
            ca.to_str().unwrap(),
            "-b",
            self.jar.to_str().unwrap(),
            "-c",
            self.jar.to_str().unwrap(),
            "-X",
            method,
            "-o",
            out_file.to_str().unwrap(),
            "-w",
            "%{http_code}",
        ];
        args.extend(extra);
        let text;
        if let Some(b) = &body {
            text = b.to_string();
            args.extend(["-H", "content-type: application/json", "--data", &text]);
        }
        args.push(&url);
        let out = curl(&args);
        let code = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        (code, std::fs::read(&out_file).unwrap_or_default())
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (code, body) = self.raw("GET", path, None, &[]);
        (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (code, body) = self.raw("POST", path, Some(body), &[]);
        (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }
}

fn ports(d: &Daemon) -> [u16; 4] {
    [d.https, d.http, d.udp, d.tcp]
}

fn confab(dir: &Path, ports: [u16; 4], args: &[&str]) -> Output {
    common::run(dir, ports, args, &[])
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn cli_token(d: &Daemon, extra: &[&str]) -> String {
    let out = confab(
        &d.dir,
        ports(d),
        &[&["token", "--identity", "ops"], extra].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn validate(d: &Daemon, token: &str) -> u16 {
    let (code, _) = d.get(&format!("/rtc/validate?access_token={token}"));
    code.parse().unwrap()
}

fn data(dir: &Path) -> PathBuf {
    dir.join("data")
}

/// Entries beside the state directory that earlier restores kept.
fn kept_aside(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("before-restore") || n.contains(".restore-"))
        .collect()
}

#[test]
fn a_backup_taken_while_running_restores_onto_a_wiped_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut daemon = Daemon::start(d);
    let admin = Admin::setup(&daemon);
    // A rotated key (not the first one generated), a passcode and guest access off.
    let (code, v) = admin.post("/api/admin/keys/rotate", json!({}));
    assert_eq!(code, 200, "{v}");
    let (code, v) = admin.post(
        "/api/admin/access/passcode",
        json!({"room": "standup", "passcode": "blue-42"}),
    );
    assert_eq!(code, 200, "{v}");
    let (code, v) = admin.post("/api/admin/access/guest", json!({"enabled": false}));
    assert_eq!(code, 200, "{v}");
    let token = cli_token(&daemon, &["--room", "standup", "--ttl", "1h"]);
    assert_eq!(validate(&daemon, &token), 200);
    let ca = std::fs::read(daemon.ca()).unwrap();
    let keys = std::fs::read(data(d).join("keys.toml")).unwrap();

    // While running: the CLI asks the server.
    let file = d.join("backup.tar");
    let started = Instant::now();
    let out = confab(d, ports(&daemon), &["backup", file.to_str().unwrap()]);
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("from the running server"),
        "{}",
        text(&out)
    );
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    eprintln!(
        "backup while running: {} bytes in {} ms",
        meta.len(),
        took.as_millis()
    );
    // Any tar lists it.
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&file)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    for name in [
        "confab-backup.json",
        "state.json",
        "keys.toml",
        "tls/ca.crt",
        "tls/ca.key",
    ] {
        assert!(
            listing.lines().any(|l| l == name),
            "{name} missing:\n{listing}"
        );
    }

    // Restore refuses while confab runs, and changes nothing.
    let out = confab(d, ports(&daemon), &["restore", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("confab is running"), "{}", text(&out));
    assert!(kept_aside(d).is_empty(), "{:?}", kept_aside(d));
    // The secret never reaches the log.
    let secret = String::from_utf8_lossy(&keys).to_string();
    let secret = secret.split('"').nth(1).unwrap().to_string();
    assert!(secret.len() >= 32, "{secret}");
    assert!(daemon.stderr().contains("backup downloaded"));
    assert!(!daemon.stderr().contains(&secret));
    daemon.stop();

    // Stopped: the CLI makes it from a copy of the database, writing nothing into the state
    // directory (as root it would leave files confab's user cannot replace).
    let listing = |p: &Path| {
        let mut v: Vec<(String, std::time::SystemTime)> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().modified().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = (listing(&data(d)), listing(&data(d).join("state")));
    let stopped_file = d.join("backup-stopped.tar");
    let out = confab(
        d,
        ports(&daemon),
        &["backup", stopped_file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("from the state directory"),
        "{}",
        text(&out)
    );
    assert_eq!(before, (listing(&data(d)), listing(&data(d).join("state"))));
    let stopped = confab::backup::read(&std::fs::read(&stopped_file).unwrap()).unwrap();
    assert!(stopped.files.contains_key("tls/ca.key"));

    // A wiped device: new state, new CA, new key, no password.
    std::fs::remove_dir_all(data(d)).unwrap();
    let mut fresh = Daemon::start(d);
    assert_ne!(std::fs::read(fresh.ca()).unwrap(), ca);
    assert_eq!(validate(&fresh, &token), 401);
    fresh.stop();

    let started = Instant::now();
    let out = confab(d, ports(&fresh), &["restore", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    eprintln!("restore: {} ms", started.elapsed().as_millis());
    let said = text(&out);
    assert!(said.contains("previous state is kept in"), "{said}");
    let kept = kept_aside(d);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].starts_with("data.before-restore-"), "{kept:?}");
    assert!(said.contains(&kept[0]), "{said}");

    let daemon = Daemon::start(d);
    assert_eq!(std::fs::read(daemon.ca()).unwrap(), ca, "the same CA");
    assert_eq!(std::fs::read(data(d).join("keys.toml")).unwrap(), keys);
    assert_eq!(
        validate(&daemon, &token),
        200,
        "tokens of the same key work"
    );
    let (admin, code) = Admin::login(&daemon, PASSWORD);
    assert_eq!(code, 200, "the admin password is back");
    let (_, access) = admin.get("/api/admin/access");
    assert_eq!(access["guest_access"], false, "{access}");
    assert_eq!(
        access["passcodes"],
        json!([{"room": "standup", "passcode": "blue-42"}]),
        "{access}"
    );
}

#[test]
fn the_admin_download_needs_a_session_or_the_backup_token() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let anon = Admin::new(&daemon, "anon");
    let (code, _) = anon.raw("GET", "/api/admin/backup", None, &[]);
    assert_eq!(code, 401);
    // LiveKit admin tokens (what app servers mint) may not download the device's secrets.
    let admin_token = cli_token(&daemon, &["--admin"]);
    let bearer = format!("authorization: Bearer {admin_token}");
    let (code, body) = anon.raw("GET", "/api/admin/backup", None, &["-H", &bearer]);
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    let (code, _) = anon.raw(
        "GET",
        "/api/admin/backup",
        None,
        &["-H", "authorization: Bearer not.a.token"],
    );
    assert_eq!(code, 401);

    let admin = Admin::setup(&daemon);
    let (code, bytes) = admin.raw("GET", "/api/admin/backup", None, &[]);
    assert_eq!(code, 200);
    let contents = confab::backup::read(&bytes).unwrap();
    assert_eq!(contents.manifest.confab_version, confab::version::VERSION);
    assert!(contents.files.contains_key("keys.toml"));
    assert!(contents.files.contains_key("tls/ca.crt"));
    // The headers of a download.
    let ca = daemon.ca();
    let out = curl(&[
        "-sS",
        "--cacert",
        ca.to_str().unwrap(),
        "-b",
        admin.jar.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-D",
        "-",
        &daemon.url("/api/admin/backup"),
    ]);
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        headers.contains("content-type: application/x-tar"),
        "{headers}"
    );
    assert!(
        headers.contains("content-disposition: attachment; filename=\"confab-backup-"),
        "{headers}"
    );
    assert!(headers.contains("cache-control: no-store"), "{headers}");
}

/// The archive with its manifest changed by `edit` (hashes left as they are).
fn with_manifest(bytes: &[u8], edit: impl Fn(&mut Value)) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    let mut a = tar::Archive::new(bytes);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        if name == "confab-backup.json" {
            let mut m: Value = serde_json::from_slice(&data).unwrap();
            edit(&mut m);
            data = serde_json::to_vec(&m).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        out.append_data(&mut h, &name, &data[..]).unwrap();
    }
    out.into_inner().unwrap()
}

#[test]
fn restore_refuses_a_damaged_archive_and_a_newer_schema_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut daemon = Daemon::start(d);
    let p = ports(&daemon);
    // To standard output (as out of a container), the summary on standard error.
    let out = confab(d, p, &["backup", "-"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("backup written to standard output"));
    daemon.stop();
    let good = out.stdout;
    confab::backup::read(&good).unwrap();
    let file = d.join("good.tar");
    std::fs::write(&file, &good).unwrap();
    let keys = std::fs::read(data(d).join("keys.toml")).unwrap();

    // One flipped byte in the middle (inside the state dump or a file's data).
    let mut bad = good.clone();
    let at = good.windows(8).position(|w| w == b"\"trees\":").unwrap() + 12;
    bad[at] ^= 0x20;
    let damaged = d.join("damaged.tar");
    std::fs::write(&damaged, &bad).unwrap();
    let out = confab(d, p, &["restore", damaged.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("damaged"), "{}", text(&out));
    assert!(text(&out).contains("Nothing was changed"), "{}", text(&out));

    // Truncated (an interrupted copy).
    let truncated = d.join("truncated.tar");
    std::fs::write(&truncated, &good[..good.len() / 3]).unwrap();
    let out = confab(d, p, &["restore", truncated.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("not a usable confab backup"),
        "{}",
        text(&out)
    );

    // From a newer confab.
    let newer = d.join("newer.tar");
    std::fs::write(
        &newer,
        with_manifest(&good, |m| m["schema_version"] = json!(999)),
    )
    .unwrap();
    let out = confab(d, p, &["restore", newer.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("state schema 999"), "{}", text(&out));
    assert!(text(&out).contains("newer confab"), "{}", text(&out));

    assert!(kept_aside(d).is_empty(), "{:?}", kept_aside(d));
    assert_eq!(std::fs::read(data(d).join("keys.toml")).unwrap(), keys);

    // The good one restores over the same device, from standard input.
    let out = common::base_command(d, p)
        .args(["restore", "-"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("previous state is kept in"),
        "{}",
        text(&out)
    );
    Daemon::start(d);
}
