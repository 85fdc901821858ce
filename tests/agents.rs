//! LiveKit Agents against a real `confab serve`: real `livekit-agents` 1.x workers
//! (`tests/agents/agent.py`, started with `python agent.py start` as their users start them,
//! configured by LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET), and LiveKit's own Python
//! SDKs on the other side (`tests/agents/client.py`: `livekit.rtc` joins and checks the agent,
//! `livekit-api` mints tokens with `roomConfig` and calls `AgentDispatchService`).
//!
//! Automatic dispatch (unnamed worker), explicit dispatch with metadata (Twirp), token dispatch
//! (`roomConfig.agents`), the agent's audio received by a native-SDK participant, RPC to the
//! agent, and a worker killed (with its job processes) and restarted mid-job: the job goes to
//! the restarted worker and the agent comes back to the room.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{free_ports, Daemon};
use serde_json::Value;

const KEY: &str = "APIagents";
const SECRET: &str = "agent-test-secret-agent-test-secret-0123";

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/agents")
        .join(name)
}

/// The environment LiveKit's SDKs read, pointed at `d`.
fn livekit_env(cmd: &mut Command, d: &Daemon) {
    cmd.env("LIVEKIT_URL", format!("wss://localhost:{}", d.https))
        .env("LIVEKIT_API_KEY", KEY)
        .env("LIVEKIT_API_SECRET", SECRET)
        .env("SSL_CERT_FILE", d.ca())
        .env("PYTHONUNBUFFERED", "1");
}

/// A worker process (and its job processes: one process group), killed when dropped.
struct Worker {
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(d: &Daemon, agent_name: &str, http_port: u16, log: PathBuf) -> Worker {
        let mut cmd = Command::new(common::python());
        cmd.arg(script("agent.py")).arg("start");
        livekit_env(&mut cmd, d);
        cmd.env("AGENT_NAME", agent_name)
            .env("AGENT_HTTP_PORT", http_port.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0);
        Worker {
            child: cmd
                .spawn()
                .expect("the Python venv (scripts/install-deps.sh) is missing"),
            log,
        }
    }

    /// Waits until confab's log shows `n` registrations of workers named `agent_name`.
    fn wait_registered(d: &Daemon, agent_name: &str, n: usize) {
        let needle = "agent worker registered worker=";
        let name = format!("agent_name={agent_name} ");
        for _ in 0..600 {
            let count = d
                .stderr()
                .lines()
                .filter(|l| l.contains(needle) && l.contains(&name))
                .count();
            if count >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "no agent worker {agent_name:?} registered within 60 s:\n{}",
            d.stderr()
        );
    }

    /// SIGKILL to the whole group: the worker and every job process it started.
    fn kill(&mut self) {
        let pgid = self.child.id() as i32;
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        common::read_lossy(&self.log)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `client.py` with `args`; its JSON lines arrive on the channel as they are printed. Its
/// stderr (the SDK's own log) goes to `client.log` in the daemon's directory.
fn client(d: &Daemon, args: &[&str]) -> (Child, mpsc::Receiver<Value>) {
    let mut cmd = Command::new(common::python());
    cmd.arg(script("client.py")).args(args);
    livekit_env(&mut cmd, d);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.dir.join("client.log"))
        .unwrap();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            match serde_json::from_str(&line) {
                Ok(v) => {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                Err(_) => eprintln!("client.py: {line}"),
            }
        }
    });
    (child, rx)
}

/// Runs `client.py` to the end: its JSON lines.
fn client_run(d: &Daemon, args: &[&str]) -> Vec<Value> {
    let (mut child, rx) = client(d, args);
    let status = child.wait().unwrap();
    // Every line: the reader ends (and the channel with it) at the end of the output.
    let lines: Vec<Value> = rx.iter().collect();
    assert!(
        status.success(),
        "client.py {args:?} failed: {lines:?}\n{}\n{}",
        common::read_lossy(&d.dir.join("client.log")),
        d.stderr()
    );
    lines
}

/// The agent report of a `join` (the line with `whoami`), checked for what every agent must
/// show: kind AGENT, its tone received, an RPC answer naming this room and the caller.
fn agent_report(lines: &[Value], room: &str, caller: &str) -> Value {
    let a = lines
        .iter()
        .find(|l| l.get("whoami").is_some())
        .unwrap_or_else(|| panic!("no agent report: {lines:?}"))
        .clone();
    assert_eq!(a["kind"], "PARTICIPANT_KIND_AGENT", "{a}");
    assert!(
        a["loud_frames"].as_u64().unwrap() >= 50,
        "the agent's tone reaches the participant: {a}"
    );
    assert_eq!(a["whoami"]["room"], room, "{a}");
    assert_eq!(a["whoami"]["caller"], caller, "RPC reached the agent: {a}");
    a
}

#[test]
fn livekit_agents_workers_get_rooms_by_automatic_api_and_token_dispatch_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), free_ports(), |c| {
        c.env("LIVEKIT_API_KEY", KEY)
            .env("LIVEKIT_API_SECRET", SECRET);
    });
    let http = free_ports();
    let mut auto = Worker::start(&d, "", http[0], dir.path().join("worker-auto.log"));
    let notes = Worker::start(&d, "notes", http[1], dir.path().join("worker-notes.log"));
    Worker::wait_registered(&d, "", 1);
    Worker::wait_registered(&d, "notes", 1);

    // Automatic dispatch: a room nobody configured gets the unnamed worker's agent.
    let lines = client_run(&d, &["join", "lobby", "alice", "--timeout", "60"]);
    let a = agent_report(&lines, "lobby", "alice");
    assert_eq!(a["whoami"]["agent_name"], "", "{a}");

    // Token dispatch: roomConfig.agents names the agent and its metadata; no automatic one.
    let lines = client_run(
        &d,
        &[
            "join",
            "planning",
            "bob",
            "--dispatch",
            "notes:{\"lang\":\"en\"}",
        ],
    );
    let a = agent_report(&lines, "planning", "bob");
    assert_eq!(a["whoami"]["agent_name"], "notes", "{a}");
    assert_eq!(a["whoami"]["metadata"], "{\"lang\":\"en\"}", "{a}");
    let listed = client_run(&d, &["dispatch", "list", "planning"]);
    let dispatches = listed[0]["dispatches"].as_array().unwrap().clone();
    assert_eq!(dispatches.len(), 1, "only the token's dispatch: {listed:?}");
    assert_eq!(dispatches[0]["agentName"], "notes");

    // Explicit dispatch through AgentDispatchService, before anyone is in the room.
    let created = client_run(&d, &["dispatch", "create", "review", "notes", "ticket-42"]);
    let id = created[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("AD_"), "{created:?}");
    let lines = client_run(&d, &["join", "review", "carol"]);
    let a = agent_report(&lines, "review", "carol");
    assert_eq!(a["whoami"]["metadata"], "ticket-42", "{a}");
    assert_eq!(a["whoami"]["dispatch_id"], id.as_str(), "{a}");
    let listed = client_run(&d, &["dispatch", "list", "review"]);
    let jobs = listed[0]["dispatches"][0]["state"]["jobs"]
        .as_array()
        .unwrap();
    assert_eq!(jobs.len(), 1, "{listed:?}");
    assert!(
        jobs[0]["state"]["workerId"]
            .as_str()
            .unwrap()
            .starts_with("AW_"),
        "{listed:?}"
    );
    client_run(&d, &["dispatch", "delete", "review", &id]);
    let listed = client_run(&d, &["dispatch", "list", "review"]);
    assert!(
        listed[0]["dispatches"]
            .as_array()
            .is_none_or(|l| l.is_empty()),
        "{listed:?}"
    );

    // A worker killed with its jobs mid-call and started again: the job goes to the restarted
    // worker and the agent comes back to the room the participant is still in.
    let (mut dave, rx) = client(
        &d,
        &[
            "join",
            "standup",
            "dave",
            "--agents",
            "2",
            "--timeout",
            "120",
        ],
    );
    let first = rx
        .iter()
        .find(|l| l.get("whoami").is_some())
        .expect("the first agent");
    agent_report(std::slice::from_ref(&first), "standup", "dave");
    auto.kill();
    let auto_log = auto.log();
    let _restarted = Worker::start(&d, "", http[2], dir.path().join("worker-auto-2.log"));
    Worker::wait_registered(&d, "", 2);
    let second = rx
        .recv_timeout(Duration::from_secs(90))
        .unwrap_or_else(|_| panic!("the agent did not come back:\n{}\n{auto_log}", d.stderr()));
    agent_report(std::slice::from_ref(&second), "standup", "dave");
    assert_eq!(
        second["whoami"]["job_id"], first["whoami"]["job_id"],
        "the same job, resumed by the new worker"
    );
    assert!(dave.wait().unwrap().success());

    // The dispatcher's figures in /metrics: two workers now, every assignment counted.
    let figures = metrics(&d);
    assert!(figures.contains("confab_agent_workers 2\n"), "{figures}");
    let assigned: u64 = figures
        .lines()
        .find_map(|l| l.strip_prefix("confab_agent_jobs_assigned_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no assignment count: {figures}"));
    assert!(assigned >= 5, "{figures}");
    drop(notes);
}

/// `GET /metrics` with a roomList token.
fn metrics(d: &Daemon) -> String {
    let keys = confab::auth::ApiKeys::from_map(std::collections::BTreeMap::from([(
        KEY.to_string(),
        confab::config::Secret::new(SECRET.to_string()),
    )]));
    let req = confab::auth::TokenRequest {
        identity: "prometheus".into(),
        ttl: Duration::from_secs(600),
        video: confab::auth::VideoGrant {
            room_list: Some(true),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = confab::auth::mint(&keys, KEY, &req).unwrap();
    let out = common::curl(&[
        "-sS",
        "--cacert",
        d.ca().to_str().unwrap(),
        "-H",
        &format!("Authorization: Bearer {token}"),
        &d.url("/metrics"),
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}
