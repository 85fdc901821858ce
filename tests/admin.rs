//! The admin API's newer parts against the real binary, with curl as the client: the update
//! panel proxied to a real `confab update agent` (fake bootloader, a release signed with the real
//! minisign) — status, check, "Remind me later" kept server-side, "Update now" with progress, a
//! rollback, the agent gone — and its container and dev-mode answers; guest access off with room
//! passcodes and invite links at `POST /api/join`; and API key rotation (the old key refused at
//! once by `/rtc/validate` and Twirp, the new one accepted, configured keys not rotatable).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::release::{fake_device, signed_release, start_agent, stop, update_env};
use common::{curl, free_ports, Daemon};
use confab::update::bootloader::fake::FakeBootloader;
use confab::update::bootloader::Bootloader;
use confab::update::{Slot, SlotHealth};
use serde_json::{json, Value};

/// An admin session: curl with a cookie jar.
struct Admin<'a> {
    d: &'a Daemon,
    jar: PathBuf,
}

impl<'a> Admin<'a> {
    /// Sets the admin password with the setup code and keeps the session.
    fn setup(d: &'a Daemon) -> Admin<'a> {
        let a = Admin {
            d,
            jar: d.dir.join(format!("cookies-{}", d.https)),
        };
        let (code, body) = a.post(
            "/api/admin/setup",
            json!({"password": "correct horse battery", "code": d.setup_code()}),
        );
        assert_eq!(code, 200, "{body}");
        a
    }

    /// Logs in with the password `setup` chose (after a restart: sessions live in memory).
    fn login(d: &'a Daemon) -> Admin<'a> {
        let a = Admin {
            d,
            jar: d.dir.join(format!("cookies-{}", d.https)),
        };
        let (code, body) = a.post(
            "/api/admin/login",
            json!({"password": "correct horse battery"}),
        );
        assert_eq!(code, 200, "{body}");
        a
    }

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let ca = self.d.ca();
        let url = self.d.url(path);
        let mut args = vec![
            "-sS",
            "--max-time",
            "120",
            "--cacert",
            ca.to_str().unwrap(),
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
        if let Some(b) = &body {
            text = b.to_string();
            args.extend(["-H", "content-type: application/json", "--data", &text]);
        }
        args.push(&url);
        let out = curl(&args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (
            code.parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
        )
    }

    fn get(&self, path: &str) -> (u16, Value) {
        self.request("GET", path, None)
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request("POST", path, Some(body))
    }
}

#[test]
fn update_panel_proxies_a_real_agent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rel, pubkey) = signed_release(d, "99.1.0");
    fake_device(d);
    let agent = start_agent(d, &rel, &pubkey);
    let daemon = Daemon::start_with(d, free_ports(), |c| update_env(c, d, &rel, &pubkey));
    let admin = Admin::setup(&daemon);

    // Logged out, the update API is closed.
    let anon = Admin {
        d: &daemon,
        jar: d.join("no-cookies"),
    };
    assert_eq!(anon.get("/api/admin/update").0, 401);

    let (code, v) = admin.get("/api/admin/update");
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["mode"], "agent", "{v}");
    assert_eq!(v["bootloader"], "fake");
    assert_eq!(v["slot"], "a");
    assert_eq!(v["running"], confab::version::VERSION);
    assert!(v["available"].is_null() && v["rollback"].is_null(), "{v}");

    // Check: the agent fetches and verifies the signed release.
    let (code, v) = admin.post("/api/admin/update/check", json!({}));
    assert_eq!(code, 200, "{v}");
    assert!(v["check_error"].is_null(), "{v}");
    assert_eq!(v["available"]["version"], "99.1.0", "{v}");
    assert_eq!(v["available"]["notes_url"], "https://example.org/notes");
    assert_eq!(v["can_apply"], true);
    assert!(v["snoozed_until"].is_null());

    // "Remind me later": hidden for 24 h, kept by the server (another session sees it too).
    let (code, v) = admin.post("/api/admin/update/remind-later", json!({}));
    assert_eq!(code, 200, "{v}");
    let until = v["snoozed_until"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 24 * 3600 - 60..=now + 24 * 3600 + 60).contains(&until),
        "{until}"
    );
    let (_, v) = admin.get("/api/admin/update");
    assert_eq!(v["snoozed_until"].as_u64(), Some(until));

    // "Update now": the agent installs into slot B; progress is proxied until it is done.
    let (code, v) = admin.post("/api/admin/update/apply", json!({}));
    assert_eq!(code, 202, "{v}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let progress = loop {
        let (code, p) = admin.get("/api/admin/update/progress");
        assert_eq!(code, 200, "{p}");
        if p["running"] == false && (p["result"].is_string() || p["error"].is_string()) {
            break p;
        }
        assert!(Instant::now() < deadline, "install did not finish: {p}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(progress["error"].is_null(), "{progress}");
    assert_eq!(progress["result"], "rebooting into the new slot");
    assert!(
        progress["progress"]["steps"].as_u64().unwrap() >= 3,
        "{progress}"
    );
    let mut fake = FakeBootloader::open(&d.join("boot")).unwrap();
    assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Trying);

    // The new release failed its health check and the device went back: the panel says so.
    fake.mark_bad(Slot::B).unwrap();
    let (_, v) = admin.get("/api/admin/update");
    let rollback = v["rollback"].as_str().unwrap_or_default();
    assert!(
        rollback.contains("v99.1.0") && rollback.contains("went back"),
        "{v}"
    );

    // The agent stops: the panel says it is not running, and "Update now" cannot be proxied.
    stop(agent);
    let (code, v) = admin.get("/api/admin/update");
    assert_eq!(code, 200);
    assert_eq!(v["mode"], "agent-missing", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("not running"),
        "{v}"
    );
    let (code, v) = admin.post("/api/admin/update/apply", json!({}));
    assert_eq!(code, 502, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not running"), "{v}");
}

#[test]
fn update_panel_in_a_container_and_in_dev_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (rel, pubkey) = signed_release(d, "99.2.0");
    // A container (the `container` variable, as Podman and systemd-nspawn set it) with a source
    // and no A/B slots.
    let daemon = Daemon::start_with(d, free_ports(), |c| {
        update_env(c, d, &rel, &pubkey);
        c.env("CONFAB_BOOTLOADER", "none")
            .env("container", "podman");
    });
    let admin = Admin::setup(&daemon);
    let (_, v) = admin.get("/api/admin/update");
    assert_eq!(v["mode"], "container", "{v}");
    assert_eq!(v["command"], "docker compose pull && docker compose up -d");
    assert!(v["available"].is_null());
    let (code, v) = admin.post("/api/admin/update/check", json!({}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["available"]["version"], "99.2.0", "{v}");
    assert_eq!(v["can_apply"], false);
    let (code, v) = admin.post("/api/admin/update/apply", json!({}));
    assert_eq!(code, 409);
    assert!(
        v["error"].as_str().unwrap().contains("docker compose pull"),
        "{v}"
    );
    drop(daemon);

    // No update source: dev mode, whatever the machine.
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let admin = Admin::setup(&daemon);
    let (_, v) = admin.get("/api/admin/update");
    assert_eq!(v["mode"], "dev", "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("not available in dev mode"),
        "{v}"
    );
    let (code, _) = admin.post("/api/admin/update/check", json!({}));
    assert_eq!(code, 409);
}

/// `POST /api/join` without a session: (status, body).
fn join(d: &Daemon, body: Value) -> (u16, Value) {
    let anon = Admin {
        d,
        jar: d.dir.join("guest-cookies"),
    };
    anon.post("/api/join", body)
}

#[test]
fn guest_access_off_needs_a_passcode_or_an_invite() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let who = |room: &str| json!({"room": room, "name": "Guest"});
    // On by default: anyone may join.
    assert_eq!(join(&daemon, who("open-room")).0, 200);

    let admin = Admin::setup(&daemon);
    let (code, v) = admin.post("/api/admin/access/guest", json!({"enabled": false}));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["guest_access"], false);
    let (code, v) = join(&daemon, who("open-room"));
    assert_eq!(
        (code, v["code"].as_str()),
        (403, Some("invite_required")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("invite link"));
    let (_, status) = daemon.get("/api/rooms/open-room");
    assert!(status.contains("\"access\":\"invite\""), "{status}");

    // A room passcode.
    let (code, _) = admin.post(
        "/api/admin/access/passcode",
        json!({"room": "board", "passcode": "blue-42"}),
    );
    assert_eq!(code, 200);
    let (_, status) = daemon.get("/api/rooms/board");
    assert!(status.contains("\"access\":\"passcode\""), "{status}");
    let (code, v) = join(&daemon, who("board"));
    assert_eq!(
        (code, v["error"].as_str()),
        (401, Some("this room needs a passcode"))
    );
    let (code, v) = join(
        &daemon,
        json!({"room": "board", "name": "G", "passcode": "red-42"}),
    );
    assert_eq!((code, v["code"].as_str()), (403, Some("passcode_wrong")));
    let (code, v) = join(
        &daemon,
        json!({"room": "board", "name": "G", "passcode": "blue-42"}),
    );
    assert_eq!(code, 200, "{v}");
    assert!(v["token"].as_str().unwrap().len() > 20);

    // An invite link for one room.
    let (code, inv) = admin.post(
        "/api/admin/access/invite",
        json!({"room": "standup", "hours": 24}),
    );
    assert_eq!(code, 200, "{inv}");
    let path = inv["path"].as_str().unwrap();
    let token = path.split_once("?invite=").unwrap().1;
    assert!(path.starts_with("/r/standup?invite=") && token.len() >= 40);
    let with = |room: &str, t: &str| json!({"room": room, "name": "G", "invite": t});
    assert_eq!(join(&daemon, with("standup", token)).0, 200);
    let (code, v) = join(&daemon, with("other", token));
    assert_eq!((code, v["code"].as_str()), (403, Some("invite_other_room")));
    let (_, list) = admin.get("/api/admin/access");
    assert!(
        !list.to_string().contains(token),
        "the token is shown only once"
    );
    assert_eq!(list["invites"][0]["room"], "standup");
    let (code, _) = admin.post("/api/admin/access/invite/revoke", json!({"id": inv["id"]}));
    assert_eq!(code, 200);
    let (code, v) = join(&daemon, with("standup", token));
    assert_eq!(
        (code, v["code"].as_str()),
        (403, Some("invite_invalid")),
        "{v}"
    );
    // A bad expiry and bad room names are refused.
    assert_eq!(
        admin
            .post("/api/admin/access/invite", json!({"room": "x", "hours": 0}))
            .0,
        400
    );
    assert_eq!(
        admin
            .post(
                "/api/admin/access/passcode",
                json!({"room": "../x", "passcode": "p"})
            )
            .0,
        400
    );

    // The logged-in admin joins any room.
    let (code, v) = admin.post("/api/join", who("open-room"));
    assert_eq!(code, 200, "{v}");

    // Guest access back on: open rooms open again; a passcode still protects its room.
    admin.post("/api/admin/access/guest", json!({"enabled": true}));
    assert_eq!(join(&daemon, who("open-room")).0, 200);
    assert_eq!(join(&daemon, who("board")).0, 401);
}

/// `confab token` for `room` (it reads the device's keys file, as an operator would).
fn cli_token(d: &Daemon, extra: &[&str]) -> String {
    let out = common::run(
        &d.dir,
        [d.https, d.http, d.udp, d.tcp],
        &[&["token", "--identity", "ops"], extra].concat(),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn validate(d: &Daemon, token: &str) -> u16 {
    let (code, _) = d.get(&format!("/rtc/validate?access_token={token}"));
    code.parse().unwrap()
}

fn twirp_list(d: &Daemon, token: &str) -> u16 {
    let ca = d.ca();
    let out = curl(&[
        "-sS",
        "--cacert",
        ca.to_str().unwrap(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-H",
        &format!("authorization: Bearer {token}"),
        "-H",
        "content-type: application/json",
        "--data",
        "{}",
        &d.url("/twirp/livekit.RoomService/ListRooms"),
    ]);
    String::from_utf8_lossy(&out.stdout).parse().unwrap()
}

#[test]
fn rotating_the_api_key_refuses_the_old_one_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path());
    let admin = Admin::setup(&daemon);
    let (_, before) = admin.get("/api/admin/keys");
    assert_eq!(before["rotatable"], true, "{before}");
    // The secret comes only on an explicit request ("Show").
    assert!(before.get("api_secret").is_none(), "{before}");
    let reveal = || {
        let (code, v) = admin.post("/api/admin/keys/reveal", json!({}));
        assert_eq!(code, 200, "{v}");
        v["api_secret"].as_str().unwrap().to_string()
    };
    let old_secret = reveal();
    assert!(old_secret.len() >= 32);
    let old_join = cli_token(&daemon, &["--room", "r1"]);
    let old_admin = cli_token(&daemon, &["--admin"]);
    assert_eq!(validate(&daemon, &old_join), 200);
    assert_eq!(twirp_list(&daemon, &old_admin), 200);

    let (code, after) = admin.post("/api/admin/keys/rotate", json!({}));
    assert_eq!(code, 200, "{after}");
    assert_ne!(after["api_key"], before["api_key"]);
    let secret = reveal();
    assert!(secret != old_secret && secret.len() >= 32);
    // The old key is refused by the running server at once; the new one works (and `confab
    // token` already uses it: the keys file was rewritten).
    assert_eq!(validate(&daemon, &old_join), 401);
    assert_eq!(twirp_list(&daemon, &old_admin), 401);
    assert_eq!(
        validate(&daemon, &cli_token(&daemon, &["--room", "r1"])),
        200
    );
    assert_eq!(twirp_list(&daemon, &cli_token(&daemon, &["--admin"])), 200);
    // The web app's joins use the new key.
    assert_eq!(join(&daemon, json!({"room": "r2", "name": "A"})).0, 200);
    // Secrets are never logged.
    assert!(!daemon.stderr().contains(&secret) && !daemon.stderr().contains(&old_secret));
    assert!(daemon.stderr().contains("API key rotated"));
    drop(daemon);

    // Configured keys are the operator's: not rotatable from the admin page.
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start_with(dir.path(), free_ports(), |c| {
        c.env("LIVEKIT_API_KEY", "APIconfigured").env(
            "LIVEKIT_API_SECRET",
            "a-configured-secret-of-forty-characters!!",
        );
    });
    let admin = Admin::setup(&daemon);
    // Logged out, neither the key nor its secret is given.
    let anon = Admin {
        d: &daemon,
        jar: dir.path().join("no-cookies"),
    };
    assert_eq!(anon.post("/api/admin/keys/reveal", json!({})).0, 401);
    let (_, keys) = admin.get("/api/admin/keys");
    assert_eq!(keys["rotatable"], false);
    assert_eq!(keys["source"], "config");
    let (code, v) = admin.post("/api/admin/keys/rotate", json!({}));
    assert_eq!(code, 409);
    assert!(
        v["error"].as_str().unwrap().contains("LIVEKIT_API_KEY"),
        "{v}"
    );
}

#[test]
fn access_settings_survive_a_restart_and_expired_invites_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path());
    let admin = Admin::setup(&daemon);
    admin.post("/api/admin/access/guest", json!({"enabled": false}));
    let (_, inv) = admin.post(
        "/api/admin/access/invite",
        json!({"room": "later", "hours": 1}),
    );
    let token = inv["path"]
        .as_str()
        .unwrap()
        .split_once("?invite=")
        .unwrap()
        .1
        .to_string();
    daemon.stop();

    // An hour and a bit later: the stored invite's expiry is in the past (edited in the real
    // database while confab is stopped).
    {
        use confab::state::Store;
        let store = confab::state::SledStore::open(&dir.path().join("data")).unwrap();
        let invites: Vec<(Vec<u8>, Vec<u8>)> = store
            .entries("access")
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with(b"invite:"))
            .collect();
        assert_eq!(invites.len(), 1, "one invite stored (by its hash)");
        let (key, value) = &invites[0];
        assert!(
            !String::from_utf8_lossy(key).contains(&token),
            "only the hash is stored"
        );
        let mut invite: Value = serde_json::from_slice(value).unwrap();
        invite["expires_unix"] = json!(invite["created_unix"].as_u64().unwrap() - 1);
        store
            .put("access", key, invite.to_string().as_bytes())
            .unwrap();
        store.flush().unwrap();
    }

    let daemon = Daemon::start_with(dir.path(), free_ports(), |_| {});
    let (code, v) = join(
        &daemon,
        json!({"room": "later", "name": "G", "invite": token}),
    );
    assert_eq!(
        (code, v["code"].as_str()),
        (403, Some("invite_expired")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("expired"));
    // Guest access is still off after the restart.
    let (code, v) = join(&daemon, json!({"room": "open", "name": "G"}));
    assert_eq!(
        (code, v["code"].as_str()),
        (403, Some("invite_required")),
        "{v}"
    );
    let admin = Admin::login(&daemon);
    let (_, list) = admin.get("/api/admin/access");
    assert_eq!(list["guest_access"], false);
    assert_eq!(list["invites"][0]["expired"], true, "{list}");
}
