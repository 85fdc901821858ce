//! `confab serve` as a user runs it: HTTPS with the local CA, redirects, health, readiness,
//! persistence across restarts, clean shutdown, and clear errors for bad input.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{curl, free_ports, run, Daemon, Frozen};

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

#[test]
fn serves_health_over_https_trusted_by_the_local_ca() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    let ca = d.ca();
    let ca = ca.to_str().unwrap();

    let out = curl(&["-sS", "--fail", "--cacert", ca, &d.url("/api/health")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let health = json(&out.stdout);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert!(health["commit"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(health["timestamp"].as_u64().unwrap() > 1_700_000_000_000);

    let (code, body) = d.get("/api/health/ready");
    assert_eq!(code, "200", "{body}");
    let ready = json(body.as_bytes());
    assert_eq!(ready["status"], "ready");
    for check in ["state", "media", "tls"] {
        assert_eq!(ready["checks"][check]["ok"], true, "{ready}");
    }

    let out = curl(&["-sS", "--cacert", ca, &d.url("/api/health/live")]);
    assert_eq!(json(&out.stdout), serde_json::json!({"status": "alive"}));

    // HTTP/2 is negotiated by ALPN; the same answer comes back.
    let out = curl(&[
        "-sS",
        "--http2",
        "--cacert",
        ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &d.url("/api/health"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2");

    // The CA users download is the one that signed the server certificate.
    let out = curl(&["-sS", "--cacert", ca, &d.url("/ca.crt")]);
    assert_eq!(out.stdout, std::fs::read(d.ca()).unwrap());

    // Without trusting the CA, a client refuses the connection (it is not a public certificate).
    let out = curl(&[
        "-sS",
        "--capath",
        "/nonexistent",
        "--cacert",
        "/dev/null",
        &d.url("/api/health"),
    ]);
    assert!(!out.status.success());

    d.stop();
}

#[test]
fn plain_http_redirects_to_https_but_serves_ca_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    let http = |path: &str| format!("http://127.0.0.1:{}{path}", d.http);
    let out = curl(&[
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        &http("/rooms/standup?x=1"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("308 https://127.0.0.1:{}/rooms/standup?x=1", d.https)
    );
    let out = curl(&["-sS", "--fail", &http("/ca.crt")]);
    assert_eq!(out.stdout, std::fs::read(d.ca()).unwrap());
    let out = curl(&["-sS", "--fail", &http("/api/health")]);
    assert_eq!(json(&out.stdout)["status"], "ok");
    d.stop();
}

#[test]
fn sigterm_drains_and_exits_zero_and_state_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let mut d = Daemon::start_with(dir.path(), ports, |_| {});
    let ca_before = std::fs::read(d.ca()).unwrap();
    let keys_before = std::fs::read(dir.path().join("data/keys.toml")).unwrap();
    d.signal("TERM");
    let (status, took) = d.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", d.stderr());
    assert!(
        took < Duration::from_secs(11),
        "shutdown took {took:?}, grace is 10 s"
    );
    let log = d.stderr();
    assert!(
        log.contains("SIGTERM") && log.contains("state flushed"),
        "{log}"
    );
    assert!(log.contains("applied state migration"));

    // Second start: same CA (browsers keep trusting it), same keys, no migration re-run.
    let mut again = Daemon::start_with(dir.path(), ports, |_| {});
    assert_eq!(std::fs::read(again.ca()).unwrap(), ca_before);
    assert_eq!(
        std::fs::read(dir.path().join("data/keys.toml")).unwrap(),
        keys_before
    );
    assert!(
        !again.stderr().contains("applied state migration"),
        "{}",
        again.stderr()
    );

    // SIGINT (Ctrl-C) is a clean stop too.
    again.signal("INT");
    let (status, _) = again.wait_exit(Duration::from_secs(20));
    assert!(status.success());
}

#[test]
fn api_secret_is_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    d.stop();
    let keys = std::fs::read_to_string(dir.path().join("data/keys.toml")).unwrap();
    let table: toml::Table = keys.parse().unwrap();
    let (key, secret) = table["keys"].as_table().unwrap().iter().next().unwrap();
    let secret = secret.as_str().unwrap();
    assert!(secret.len() >= 32);
    let log = d.stderr();
    assert!(
        log.contains(key.as_str()),
        "the key id is logged so users can find it"
    );
    assert!(!log.contains(secret), "the secret must not be in the log");
}

#[test]
fn invalid_configuration_lists_every_problem_exits_2_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    std::fs::write(
        dir.path().join("confab.toml"),
        "[http]\nhttps_prot = 1\n[update]\ncheck = \"sometimes\"\n",
    )
    .unwrap();
    let out = run(
        dir.path(),
        ports,
        &["serve"],
        &[
            ("CONFAB_HTTP_PORT", "eighty"),
            ("TOKEN_EXPIRY_SECONDS", "-5"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "invalid configuration (4 problems)",
        "http.https_prot (in confab.toml): unknown setting",
        "update.check (in confab.toml): expected true or false, got string",
        "CONFAB_HTTP_PORT: expected a whole number",
        "TOKEN_EXPIRY_SECONDS: expected a whole number",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(
        !dir.path().join("data").exists(),
        "nothing may be created before validation passes"
    );
    // Nothing was bound: the ports are still free.
    std::net::TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
}

#[test]
fn a_port_in_use_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut ports = free_ports();
    ports[0] = squatter.local_addr().unwrap().port();
    let out = run(dir.path(), ports, &["serve"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on HTTPS port (http.https_port) {}",
            ports[0]
        )) && err.contains("already in use"),
        "{err}"
    );
}

#[test]
fn bad_certificate_files_get_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let out = run(
        dir.path(),
        ports,
        &["serve"],
        &[
            ("CONFAB_TLS_CERT", "/nonexistent/cert.pem"),
            ("CONFAB_TLS_KEY", "/nonexistent/key.pem"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.tls_cert: cannot read /nonexistent/cert.pem"),
        "{err}"
    );
    assert!(
        err.contains("http.tls_key: cannot read /nonexistent/key.pem"),
        "{err}"
    );

    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let out = run(
        dir.path(),
        ports,
        &["serve"],
        &[
            ("CONFAB_TLS_CERT", cert.to_str().unwrap()),
            ("CONFAB_TLS_KEY", cert.to_str().unwrap()),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read TLS certificate file") && err.contains("cert.pem"),
        "{err}"
    );
}

#[test]
fn damaged_state_is_refused_with_recovery_steps() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let mut d = Daemon::start_with(dir.path(), ports, |_| {});
    d.stop();
    let db = dir.path().join("data/state/db");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0x5a; len.max(4096)]).unwrap();
    let out = run(dir.path(), ports, &["serve"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("data/state is damaged"), "{err}");
    assert!(err.contains("data/state.last-good"), "{err}");
    assert!(dir.path().join("data/state.last-good/db").exists());
}

#[test]
fn token_and_status_commands() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    // Before the first start there is no device key yet: say so.
    let out = run(
        dir.path(),
        ports,
        &["token", "--identity", "alice", "--room", "standup"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("start `confab serve` once"));

    let out = run(dir.path(), ports, &["status"], &[]);
    assert_eq!(out.status.code(), Some(1));

    let mut d = Daemon::start_with(dir.path(), ports, |_| {});
    let out = run(
        dir.path(),
        ports,
        &[
            "token",
            "--identity",
            "alice",
            "--room",
            "standup",
            "--name",
            "Alice",
            "--ttl",
            "30m",
            "--json",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = json(&out.stdout);
    assert_eq!(t["ttl_seconds"], 1800);
    assert_eq!(t["video"]["roomJoin"], true);
    let keys: toml::Table = std::fs::read_to_string(dir.path().join("data/keys.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let (key, secret) = keys["keys"].as_table().unwrap().iter().next().unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        t["token"].as_str().unwrap(),
        &jsonwebtoken::DecodingKey::from_secret(secret.as_str().unwrap().as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["iss"], key.as_str());
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["name"], "Alice");
    assert_eq!(claims["video"]["room"], "standup");

    let out = run(dir.path(), ports, &["status", "--json"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = json(&out.stdout);
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["ready"], true);
    assert_eq!(s["rooms"], 0);

    let out = run(dir.path(), ports, &["status"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("uptime:") && text.contains("ready:        yes"),
        "{text}"
    );

    d.stop();
    let out = run(dir.path(), ports, &["status"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("confab is not running"));
}

#[test]
fn version_names_semver_commit_and_date() {
    for args in [&["--version"][..], &["version"][..]] {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap()
            .to_string();
        let rest = line.strip_prefix("confab ").unwrap();
        let (semver, paren) = rest.split_once(' ').unwrap();
        assert_eq!(semver, env!("CARGO_PKG_VERSION"));
        let inner = paren.strip_prefix('(').unwrap().strip_suffix(')').unwrap();
        let (commit, date) = inner.split_once(' ').unwrap();
        assert!(!commit.is_empty());
        assert_eq!(date.len(), 10, "{date}");
        assert!(date.starts_with("20") && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-');
    }
}

#[test]
fn rtc_validate_answers_like_livekit() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports();
    let mut d = Daemon::start_with(dir.path(), ports, |_| {});
    let validate = |path_and_query: &str| d.get(path_and_query);
    let out = run(
        dir.path(),
        ports,
        &["token", "--identity", "alice", "--room", "standup"],
        &[],
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        validate(&format!("/rtc/validate?access_token={token}&room=standup")),
        ("200".into(), "success".into())
    );

    // Signed with another secret under the device's key id.
    let keys: toml::Table = std::fs::read_to_string(dir.path().join("data/keys.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let key = keys["keys"]
        .as_table()
        .unwrap()
        .keys()
        .next()
        .unwrap()
        .clone();
    let sign = |claims: serde_json::Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let forged = sign(
        serde_json::json!({"iss": key, "sub": "mallory", "exp": now + 600, "video": {"roomJoin": true, "room": "standup"}}),
        &"x".repeat(40),
    );
    let (code, body) = validate(&format!("/rtc/validate?access_token={forged}"));
    assert_eq!(code, "401");
    assert!(body.contains("signature"), "{body}");
    let secret = keys["keys"][&key].as_str().unwrap();
    let expired = sign(
        serde_json::json!({"iss": key, "sub": "alice", "exp": now - 3600, "video": {"roomJoin": true, "room": "standup"}}),
        secret,
    );
    let (code, body) = validate(&format!("/rtc/validate?access_token={expired}"));
    assert_eq!(
        (code.as_str(), body.contains("expired")),
        ("401", true),
        "{body}"
    );
    let admin_only = run(
        dir.path(),
        ports,
        &["token", "--identity", "ops", "--admin"],
        &[],
    );
    let admin_only = String::from_utf8_lossy(&admin_only.stdout)
        .trim()
        .to_string();
    let (code, body) = validate(&format!("/rtc/validate?access_token={admin_only}"));
    assert_eq!(
        (code.as_str(), body.contains("roomJoin")),
        ("401", true),
        "{body}"
    );
    let (code, _) = validate("/rtc/validate");
    assert_eq!(code, "401");

    // The single-PC path validates the same way.
    let (code, body) = validate(&format!("/rtc/v1/validate?access_token={token}"));
    assert_eq!((code.as_str(), body.as_str()), ("200", "success"));
    d.stop();
}

#[test]
fn ready_turns_503_when_state_cannot_be_written_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    let ca = d.ca().to_str().unwrap().to_string();
    let ready = || d.get("/api/health/ready");
    let wait_for = |want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(40);
        loop {
            let (code, body) = ready();
            if code == want {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "ready stayed {code}: {body}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    assert_eq!(ready().0, "200");
    let state = dir.path().join("data/state");
    let Some(frozen) = Frozen::try_freeze(&[state.join("db"), state.clone()]) else {
        eprintln!("chattr +i is not available here (needs root on ext4/xfs); skipping");
        return;
    };
    // The state probe (every 10 s) fails to write: readiness names the state check.
    let body = wait_for("503");
    let report = json(body.as_bytes());
    assert_eq!(report["failing"], serde_json::json!(["state"]), "{body}");
    assert_eq!(report["checks"]["media"]["ok"], true);
    // Liveness is unaffected: the process is fine, its disk is not.
    let out = curl(&["-sS", "--cacert", &ca, &d.url("/api/health/live")]);
    assert_eq!(json(&out.stdout)["status"], "alive");
    // sled refuses writes after an I/O error, so readiness stays red until a restart; once the
    // disk works again, a restart finds the data intact and is ready.
    drop(frozen);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ready().0, "503");
    d.signal("TERM");
    let (status, _) = d.wait_exit(Duration::from_secs(20));
    assert!(
        !status.success(),
        "a shutdown that could not flush state must not report success"
    );
    assert!(d.stderr().contains("could not flush state at shutdown"));
    let ports = [d.https, d.http, d.udp, d.tcp];
    let mut again = Daemon::start_with(dir.path(), ports, |_| {});
    let out = curl(&[
        "-sS",
        "--cacert",
        &ca,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &again.url("/api/health/ready"),
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    again.stop();
}

/// HEAD works on HTTP/2 and HTTP/1.1 (livekit-client sends HEAD to the server when the browser
/// comes back online; a body on a HEAD answer broke the HTTP/2 stream).
#[test]
fn head_requests_get_headers_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path());
    let ca = d.ca();
    for proto in ["--http2", "--http1.1"] {
        for path in ["/", "/api/health"] {
            let out = curl(&[
                "-sS",
                "-I",
                proto,
                "--cacert",
                ca.to_str().unwrap(),
                "-w",
                "%{http_code}",
                &d.url(path),
            ]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.ends_with("200"),
                "HEAD {path} {proto}: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    d.stop();
}
