//! The kill -9 campaign (issue 24 §4): a real `confab serve` takes durable writes through the
//! admin API — room passcodes, invite links and their revocation, guest access, API key
//! rotation, and the admin password set once — while it is killed with SIGKILL at a random
//! moment; then it is started again on the same state directory. Every round it must start, and
//! every write it acknowledged (200) must be there. A write in flight when it died may or may not
//! have landed; nothing else may differ.
//!
//! `CONFAB_CRASH_ROUNDS` sets the number of rounds (default 8, for CI);
//! `scripts/crash-campaign.sh` runs it big on a release build. The last line printed is
//! `crash: N rounds, W acknowledged writes (…), 0 lost`.
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

#[test]
fn acknowledged_writes_survive_kill_9_at_random_moments() {
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
