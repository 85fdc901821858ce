//! The kill -9 campaign (issue 24 §4): a real `confab serve` takes durable writes through the
//! admin API — room passcodes, invite links and their revocation, guest access, API key
//! rotation, and the admin password set once — while it is killed with SIGKILL at a random
//! moment; then it is started again on the same state directory. Every round it must start, and
//! every write it acknowledged (200) must be there. A write in flight when it died may or may not
//! have landed; nothing else may differ.
//!
//! The same for the update agent's writes (`update_apply_survives_kill_9_at_random_moments`):
//! `confab update apply` on a fake A/B device (slots are files, the fake bootloader's state a
//! JSON file; the agent's code is the device's) is killed at a random moment of the install —
//! mid-download, mid-verify, while the bootloader state or the agent's state file is written.
//!
//! `CONFAB_CRASH_ROUNDS` sets the number of rounds of each (default 8, for CI);
//! `scripts/crash-campaign.sh` runs them big on a release build. The last lines printed are
//! `crash: N rounds, W acknowledged writes (…), 0 lost` and `crash-update: N rounds …`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{curl, free_ports, Daemon};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";
const ROOMS: [&str; 6] = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];

/// A small deterministic generator (the seed is printed, so a failure can be replayed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// curl with a cookie jar, to one daemon's HTTPS port.
struct Client {
    ca: PathBuf,
    jar: PathBuf,
    base: String,
}

impl Client {
    fn new(d: &Daemon) -> Client {
        Client {
            ca: d.ca(),
            jar: d.dir.join(format!("cookies-{}", d.https)),
            base: d.url(""),
        }
    }

    /// (status, JSON body); status 0 when the server did not answer in full (it was killed).
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut args = vec![
            "-sS",
            "--max-time",
            "20",
            "--cacert",
            self.ca.to_str().unwrap(),
            "-b",
            self.jar.to_str().unwrap(),
            "-c",
            self.jar.to_str().unwrap(),
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ];
        let text;
        if let Some(b) = body {
            text = b.to_string();
            args.extend(["-H", "content-type: application/json", "--data", &text]);
        }
        args.push(&url);
        let out = curl(&args);
        if !out.status.success() {
            // No answer, or one cut off when the server died: not acknowledged.
            return (0, Value::Null);
        }
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (
            code.parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("POST", path, Some(&body))
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }
}

/// One durable write.
#[derive(Debug, Clone)]
enum Write {
    Passcode { room: String, passcode: String },
    Guest(bool),
    Invite { room: String },
    Revoke { id: String },
    Rotate,
}

/// What the server acknowledged, and the write in flight (if any) when it died.
#[derive(Debug, Default)]
struct Model {
    passcodes: BTreeMap<String, String>,
    guest: Option<bool>,
    invites: BTreeSet<String>,
    api_key: Option<String>,
    pending: Option<Write>,
    acked: u64,
    by_kind: BTreeMap<&'static str, u64>,
}

impl Model {
    fn kind(w: &Write) -> &'static str {
        match w {
            Write::Passcode { .. } => "passcodes",
            Write::Guest(_) => "guest access",
            Write::Invite { .. } => "invites",
            Write::Revoke { .. } => "revocations",
            Write::Rotate => "key rotations",
        }
    }

    fn ack(&mut self, w: &Write, answer: &Value) {
        match w {
            Write::Passcode { room, passcode } => {
                if passcode.is_empty() {
                    self.passcodes.remove(room);
                } else {
                    self.passcodes.insert(room.clone(), passcode.clone());
                }
            }
            Write::Guest(on) => self.guest = Some(*on),
            Write::Invite { .. } => {
                let id = answer["id"].as_str().unwrap().to_string();
                self.invites.insert(id);
            }
            Write::Revoke { id } => {
                self.invites.remove(id);
            }
            Write::Rotate => {
                self.api_key = Some(answer["api_key"].as_str().unwrap().to_string());
            }
        }
        self.acked += 1;
        *self.by_kind.entry(Model::kind(w)).or_default() += 1;
    }

    /// The differences between what the restarted server has and what was acknowledged,
    /// allowing the write in flight either way.
    fn lost(&self, access: &Value, api_key: &str) -> Vec<String> {
        let mut lost = vec![];
        let pending = self.pending.as_ref();
        let have: BTreeMap<String, String> = access["passcodes"]
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
        for room in ROOMS {
            let want = self.passcodes.get(room);
            let got = have.get(room);
            let in_flight = match pending {
                Some(Write::Passcode { room: r, passcode }) if r == room => {
                    let p = (!passcode.is_empty()).then_some(passcode);
                    got == p
                }
                _ => false,
            };
            if want != got && !in_flight {
                lost.push(format!(
                    "passcode of {room}: acknowledged {want:?}, found {got:?}"
                ));
            }
        }
        let guest = access["guest_access"].as_bool().unwrap();
        let want_guest = self.guest.unwrap_or(true);
        if guest != want_guest && !matches!(pending, Some(Write::Guest(g)) if *g == guest) {
            lost.push(format!(
                "guest access: acknowledged {want_guest}, found {guest}"
            ));
        }
        let ids: BTreeSet<String> = access["invites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        for id in &self.invites {
            if !ids.contains(id) && !matches!(pending, Some(Write::Revoke { id: r }) if r == id) {
                lost.push(format!("invite {id} acknowledged, missing"));
            }
        }
        for id in &ids {
            // An extra invite is the one in flight, or one revoked while the revocation was.
            let fine = self.invites.contains(id)
                || matches!(pending, Some(Write::Invite { .. }))
                || matches!(pending, Some(Write::Revoke { id: r }) if r == id);
            if !fine {
                lost.push(format!("invite {id} present, revocation acknowledged"));
            }
        }
        if let Some(want) = &self.api_key {
            if want != api_key && !matches!(pending, Some(Write::Rotate)) {
                lost.push(format!("API key: acknowledged {want}, found {api_key}"));
            }
        }
        lost
    }

    /// Takes what the restarted server has as the new truth for the write in flight.
    fn settle(&mut self, access: &Value, api_key: &str) {
        self.passcodes = access["passcodes"]
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
        self.guest = access["guest_access"].as_bool();
        self.invites = access["invites"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        self.api_key = Some(api_key.to_string());
        self.pending = None;
    }
}

fn next_write(rng: &mut Rng, model: &Mutex<Model>, n: u64) -> Write {
    let room = ROOMS[rng.below(ROOMS.len() as u64) as usize].to_string();
    match rng.below(20) {
        0..=9 => Write::Passcode {
            room,
            // Now and then a removal.
            passcode: if rng.below(5) == 0 {
                String::new()
            } else {
                format!("pass-{n}-{}", rng.below(1_000_000))
            },
        },
        10..=11 => Write::Guest(rng.below(2) == 0),
        12..=15 => Write::Invite { room },
        16..=17 => {
            let m = model.lock().unwrap();
            match m
                .invites
                .iter()
                .nth(rng.below(m.invites.len().max(1) as u64) as usize)
            {
                Some(id) => Write::Revoke { id: id.clone() },
                None => Write::Invite { room },
            }
        }
        _ => Write::Rotate,
    }
}

fn send(c: &Client, w: &Write) -> (u16, Value) {
    match w {
        Write::Passcode { room, passcode } => c.post(
            "/api/admin/access/passcode",
            json!({"room": room, "passcode": passcode}),
        ),
        Write::Guest(on) => c.post("/api/admin/access/guest", json!({ "enabled": on })),
        Write::Invite { room } => c.post(
            "/api/admin/access/invite",
            json!({"room": room, "hours": 24}),
        ),
        Write::Revoke { id } => c.post("/api/admin/access/invite/revoke", json!({ "id": id })),
        Write::Rotate => c.post("/api/admin/keys/rotate", json!({})),
    }
}

/// `CONFAB_CRASH_ROUNDS` (default 8) and `CONFAB_CRASH_SEED` (default: from the clock).
fn rounds_and_seed() -> (u64, u64) {
    let rounds: u64 = std::env::var("CONFAB_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("CONFAB_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    (rounds, seed)
}

#[test]
fn acknowledged_writes_survive_kill_9_at_random_moments() {
    let (rounds, seed) = rounds_and_seed();
    eprintln!("crash: {rounds} rounds, seed {seed} (CONFAB_CRASH_SEED to replay)");
    let dir = tempfile::tempdir().unwrap();
    let model = Arc::new(Mutex::new(Model::default()));
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut restarts = Duration::ZERO;
    // Round `rounds` only checks the last round's writes and stops cleanly.
    for round in 0..=rounds {
        let t = Instant::now();
        let d = Daemon::start_with(dir.path(), free_ports(), |_| {});
        restarts += t.elapsed();
        let c = Client::new(&d);
        if round == 0 {
            let (code, body) = c.post(
                "/api/admin/setup",
                json!({"password": PASSWORD, "code": d.setup_code()}),
            );
            assert_eq!(code, 200, "admin setup: {body}");
        } else {
            // The password set in round 0 (acknowledged once) logs in after every crash.
            let (code, body) = c.post("/api/admin/login", json!({ "password": PASSWORD }));
            assert_eq!(
                code, 200,
                "round {round}: admin login after kill -9: {body}"
            );
            let (_, access) = c.get("/api/admin/access");
            let (_, keys) = c.get("/api/admin/keys");
            let api_key = keys["api_key"].as_str().unwrap_or_default().to_string();
            let mut m = model.lock().unwrap();
            let lost = m.lost(&access, &api_key);
            assert!(
                lost.is_empty(),
                "round {round} (seed {seed}): acknowledged writes lost after kill -9 (in \
                 flight: {:?}):\n{}",
                m.pending,
                lost.join("\n")
            );
            m.settle(&access, &api_key);
        }
        if round == rounds {
            let mut d = d;
            d.stop();
            break;
        }

        // Writes until the kill, one after another, as fast as curl goes.
        let writer = {
            let model = model.clone();
            let mut wrng = Rng(rng.next() | 1);
            std::thread::spawn(move || {
                for n in 0.. {
                    let w = next_write(&mut wrng, &model, n);
                    model.lock().unwrap().pending = Some(w.clone());
                    let (code, answer) = send(&c, &w);
                    let mut m = model.lock().unwrap();
                    match code {
                        200 => {
                            m.ack(&w, &answer);
                            m.pending = None;
                        }
                        // Killed: this one stays in flight.
                        0 => return,
                        other => panic!("{w:?} answered {other}: {answer}"),
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(200 + rng.below(1800)));
        d.signal("KILL");
        writer.join().unwrap();
        drop(d);
    }
    let m = model.lock().unwrap();
    let kinds: Vec<String> = m.by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
    eprintln!(
        "crash: {rounds} rounds in {:?} (restarts {:?} in all), {} acknowledged writes ({}), 0 lost",
        started.elapsed(),
        restarts,
        m.acked,
        kinds.join(", ")
    );
    assert!(
        m.acked > rounds,
        "too few writes to prove anything: {}",
        m.acked
    );
}

/// A fake A/B device booted from slot A, and two signed releases for it (`dir/rel-0`,
/// `dir/rel-1`: different 16 MiB root images and boot files), so that a slot half rewritten
/// with one over the other is told from a whole one.
struct UpdateDevice {
    dir: tempfile::TempDir,
    /// Per release: version, root image, boot file.
    releases: Vec<(String, Vec<u8>, Vec<u8>)>,
    pubkey: PathBuf,
}

const SLOT_BYTES: usize = 24 << 20;

impl UpdateDevice {
    fn new(seed: u64) -> UpdateDevice {
        use common::release::{ok, script};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ok(std::process::Command::new(script())
            .arg("--generate-key")
            .arg(d.join("keys")));
        let mut rng = Rng(seed | 1);
        let mut releases = Vec::new();
        for n in 0..2 {
            let version = format!("99.0.{n}");
            let image: Vec<u8> = (0..16 << 20).map(|_| rng.next() as u8).collect();
            let kernel: Vec<u8> = (0..256 << 10).map(|_| rng.next() as u8).collect();
            let (img, linux) = (
                d.join(format!("root-{n}.img")),
                d.join(format!("linux-{n}")),
            );
            std::fs::create_dir_all(&linux).unwrap();
            std::fs::write(&img, &image).unwrap();
            std::fs::write(linux.join("linux"), &kernel).unwrap();
            ok(std::process::Command::new(script()).args([
                "--key",
                d.join("keys/confab.key").to_str().unwrap(),
                "--board",
                "test-board",
                "--version",
                &version,
                "--image",
                img.to_str().unwrap(),
                "--boot-file",
                linux.join("linux").to_str().unwrap(),
                "--out",
                d.join(format!("rel-{n}")).to_str().unwrap(),
            ]));
            releases.push((version, image, kernel));
        }
        confab::update::bootloader::fake::FakeBootloader::create(
            &d.join("boot"),
            confab::update::Slot::A,
            confab::version::VERSION,
        )
        .unwrap();
        std::fs::create_dir_all(d.join("slots")).unwrap();
        for slot in ["root-a", "root-b"] {
            std::fs::write(d.join("slots").join(slot), vec![0u8; SLOT_BYTES]).unwrap();
        }
        UpdateDevice {
            pubkey: d.join("keys/confab.pub"),
            dir,
            releases,
        }
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let d = self.dir.path();
        let mut cmd = common::base_command(d, free_ports());
        common::release::update_env(&mut cmd, d, &d.join("rel-0"), &self.pubkey);
        cmd.env("CONFAB_UPDATE_STATE_FILE", d.join("update-state.json"))
            .env("CONFAB_DISABLE_UPDATE_CHECK", "true")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    /// `confab update apply --no-reboot` of release `n` (a downgrade allowed: the two take
    /// turns), killed after `kill_after` (None: left to finish). Whether it finished (exit 0)
    /// before the kill.
    fn apply(&self, n: usize, kill_after: Option<Duration>) -> bool {
        let from = self.dir.path().join(format!("rel-{n}"));
        let mut child = self
            .command(&[
                "update",
                "apply",
                "--no-reboot",
                "--allow-downgrade",
                "--from",
            ])
            .arg(&from)
            .spawn()
            .unwrap();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                assert!(status.success(), "update apply failed ({status}): {err}");
                return true;
            }
            if kill_after.is_some_and(|k| started.elapsed() >= k) {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                return false;
            }
            assert!(Instant::now() < deadline, "update apply did not finish");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// What the device would boot now (on a copy of the bootloader's state, which a boot
    /// changes), and whether that slot holds exactly the signed image and boot file of the
    /// version the bootloader has for it (slot A: the running system, never written).
    fn next_boot_is_whole(&self) -> (confab::update::Slot, bool) {
        use confab::update::bootloader::fake::FakeBootloader;
        use confab::update::bootloader::Bootloader;
        use confab::update::Slot;
        let d = self.dir.path();
        let copy = d.join("boot-copy");
        let _ = std::fs::remove_dir_all(&copy);
        std::fs::create_dir_all(&copy).unwrap();
        for entry in std::fs::read_dir(d.join("boot")).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
            }
        }
        let slot = FakeBootloader::simulate_boot(&copy).expect("the device must boot a slot");
        if slot == Slot::A {
            return (slot, true);
        }
        let boot = FakeBootloader::open(&d.join("boot")).unwrap();
        let version = boot.version(Slot::B).unwrap().unwrap_or_default();
        let Some((_, image, kernel)) = self.releases.iter().find(|r| r.0 == version) else {
            return (slot, false);
        };
        let bytes = std::fs::read(d.join("slots/root-b")).unwrap();
        let dir = boot.boot_files_dir(Slot::B).unwrap();
        let installed = std::fs::read(dir.join("linux")).unwrap_or_default();
        (
            slot,
            bytes[..image.len()] == image[..] && installed == *kernel,
        )
    }

    /// `confab update status --json` reads the agent's state file; its last install.
    fn last_install(&self) -> Option<String> {
        let out = self
            .command(&["update", "status", "--json"])
            .stdout(std::process::Stdio::piped())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "update status after kill -9: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["state"]["last_install"]["version"]
            .as_str()
            .map(str::to_string)
    }
}

#[test]
fn update_apply_survives_kill_9_at_random_moments() {
    use confab::update::Slot;
    let (rounds, seed) = rounds_and_seed();
    let mut rng = Rng(seed ^ 0x5eed);
    let dev = UpdateDevice::new(seed);
    // One install left to finish: how long one takes, and what a finished one leaves.
    let t = Instant::now();
    assert!(dev.apply(0, None));
    let full = t.elapsed();
    assert_eq!(dev.next_boot_is_whole(), (Slot::B, true));
    assert_eq!(dev.last_install().as_deref(), Some("99.0.0"));
    eprintln!("crash-update: {rounds} rounds, seed {seed}; an install takes {full:?}");
    let (mut finished, mut old_slot, mut new_slot) = (0, 0, 0);
    for round in 0..rounds {
        let n = (round % 2 + 1) as usize % 2;
        let at = full.mul_f64(rng.below(1300) as f64 / 1000.0);
        let done = dev.apply(n, Some(at));
        let (slot, whole) = dev.next_boot_is_whole();
        assert!(
            whole,
            "round {round} (seed {seed}, killed after {at:?}): the next boot is slot {slot}, \
             whose image or kernel is not the signed one of its version"
        );
        if done {
            finished += 1;
            assert_eq!(
                slot,
                Slot::B,
                "round {round}: a finished install is not armed"
            );
            assert_eq!(dev.last_install(), Some(dev.releases[n].0.clone()));
        }
        // The state file reads (old or new, never torn).
        let _ = dev.last_install();
        match slot {
            Slot::A => old_slot += 1,
            Slot::B => new_slot += 1,
        }
    }
    // After all that, an install runs to the end and arms the new slot.
    assert!(dev.apply(1, None));
    assert_eq!(dev.next_boot_is_whole(), (Slot::B, true));
    eprintln!(
        "crash-update: {rounds} rounds: {finished} finished before the kill; after the kill the \
         device would boot the old slot {old_slot} times and the new, whole slot {new_slot} \
         times; 0 unbootable, 0 torn"
    );
}
