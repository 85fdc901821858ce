//! The first admin password cannot be taken over in any deployment shape confab ships or
//! documents, and nobody can lock the real admin out from behind a shared proxy — against the
//! real binary, with curl as the client:
//!
//! - **directly on the device** (the peer is 127.0.0.1): the setup code is required; without it,
//!   `confab admin set-password` on the device (it reads the code from the state directory);
//! - **a reverse proxy on loopback** (Caddy in `docker-compose.prod.yml`, `tailscale serve`): the
//!   peer is 127.0.0.1 and the client is in `X-Forwarded-For`; the code is required, and with
//!   `http.trusted_proxies` failures count per real client, so one client's wrong guesses do not
//!   lock out another;
//! - **a container's port mapping** (the peer is the bridge's gateway, another local address):
//!   curl from 127.0.0.2; the code is required there too;
//! - **a proxy that is not listed** in `http.trusted_proxies`: its `X-Forwarded-For` is ignored,
//!   so a direct client cannot dodge the lockout with a forged header, and confab says in its log
//!   that the proxy should be listed.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{curl, free_ports, Daemon, BIN};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

/// `POST path` with a JSON body: (status, body). `from` is curl's source address, `xff` an
/// `X-Forwarded-For` header as a proxy would add it.
fn post(
    d: &Daemon,
    path: &str,
    body: Value,
    from: Option<&str>,
    xff: Option<&str>,
) -> (u16, Value) {
    let ca = d.ca();
    let text = body.to_string();
    let header;
    let mut args = vec![
        "-sS",
        "--max-time",
        "60",
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        "content-type: application/json",
        "--data",
        &text,
        "-w",
        "\n%{http_code}",
    ];
    if let Some(ip) = from {
        args.extend(["--interface", ip]);
    }
    if let Some(x) = xff {
        header = format!("x-forwarded-for: {x}");
        args.extend(["-H", &header]);
    }
    let url = d.url(path);
    args.push(&url);
    let out = curl(&args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        code.parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

fn setup(d: &Daemon, code: Option<&str>, from: Option<&str>, xff: Option<&str>) -> u16 {
    let body = match code {
        Some(c) => json!({"password": PASSWORD, "code": c}),
        None => json!({"password": PASSWORD}),
    };
    post(d, "/api/admin/setup", body, from, xff).0
}

fn login(d: &Daemon, password: &str, xff: Option<&str>) -> u16 {
    post(
        d,
        "/api/admin/login",
        json!({ "password": password }),
        None,
        xff,
    )
    .0
}

#[test]
fn the_setup_code_is_required_from_every_address() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let code = d.setup_code();
    assert!(
        d.stderr().contains(&format!("setup_code={code}")),
        "the state directory's copy is the code in the log"
    );
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(dir.path().join("data/setup-code"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode, 0o600, "only confab's user may read the code");

    // On the device itself, and through a reverse proxy on loopback: no code, no password.
    assert_eq!(setup(&d, None, None, None), 403, "loopback without a code");
    assert_eq!(
        setup(&d, Some("WRONG-CODE"), None, Some("198.51.100.7")),
        403,
        "a proxied request with a wrong code"
    );
    // A container's port mapping: the peer is another local address.
    assert_eq!(
        setup(&d, None, Some("127.0.0.2"), None),
        403,
        "port mapping"
    );
    // Guessing is limited: the fifth failure from one address locks it out for a while.
    for _ in 0..4 {
        assert_eq!(setup(&d, Some("WRONG-CODE"), Some("127.0.0.2"), None), 403);
    }
    let (status, v) = post(
        &d,
        "/api/admin/setup",
        json!({"password": PASSWORD, "code": code}),
        Some("127.0.0.2"),
        None,
    );
    assert_eq!(status, 429, "locked out even with the right code: {v}");
    assert!(v["error"].as_str().unwrap().contains("wait"), "{v}");
    assert!(
        d.stderr().contains("wrong or missing setup code"),
        "failures are logged"
    );

    // The owner with the code, from anywhere else: set, and the code is spent.
    assert_eq!(setup(&d, Some(&code.to_lowercase()), None, None), 200);
    assert!(
        !dir.path().join("data/setup-code").exists(),
        "spent code kept"
    );
    assert_eq!(setup(&d, Some(&code), None, None), 409, "set once");
    assert_eq!(login(&d, PASSWORD, None), 200);
}

#[test]
fn behind_a_trusted_proxy_one_client_cannot_lock_out_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), free_ports(), |c| {
        c.env("CONFAB_TRUSTED_PROXIES", "127.0.0.1, ::1");
    });
    let code = d.setup_code();
    // An attacker behind the proxy guesses setup codes until locked out…
    for _ in 0..5 {
        assert_eq!(
            setup(&d, Some("WRONG-CODE"), None, Some("203.0.113.66")),
            403
        );
    }
    assert_eq!(setup(&d, Some(&code), None, Some("203.0.113.66")), 429);
    // …and the owner, behind the same proxy, is not.
    assert_eq!(setup(&d, Some(&code), None, Some("198.51.100.7")), 200);

    // The same for logins (another attacker: wrong codes and passwords count together).
    for _ in 0..5 {
        assert_eq!(login(&d, "wrong password!", Some("203.0.113.77")), 401);
    }
    assert_eq!(login(&d, PASSWORD, Some("203.0.113.77")), 429);
    // A client that puts a fake first hop in front cannot pose as the owner: the proxy appended
    // the attacker's real address, and that is what counts.
    assert_eq!(login(&d, PASSWORD, Some("198.51.100.7, 203.0.113.77")), 429);
    assert_eq!(login(&d, PASSWORD, Some("198.51.100.7")), 200);
    assert!(
        d.stderr().contains("from=203.0.113.77"),
        "the real client is logged"
    );
}

#[test]
fn an_untrusted_proxy_header_is_ignored_and_named_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let code = d.setup_code();
    assert_eq!(setup(&d, Some(&code), None, None), 200);
    // A direct client rotating forged addresses is still one client.
    for i in 0..5 {
        let forged = format!("192.0.2.{i}");
        assert_eq!(login(&d, "wrong password!", Some(&forged)), 401);
    }
    assert_eq!(login(&d, PASSWORD, Some("192.0.2.99")), 429);
    let log = d.stderr();
    assert_eq!(
        log.matches("proxy that is not in http.trusted_proxies")
            .count(),
        1,
        "named once:\n{log}"
    );
    assert!(log.contains("CONFAB_TRUSTED_PROXIES"), "says what to set");
}

/// `confab admin set-password` with the test daemon's environment and `input` on stdin.
fn set_password(d: &Daemon, input: &str) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CONFAB_STATE_DIR", d.dir.join("data"))
        .env("CONFAB_BIND", "127.0.0.1")
        .env("CONFAB_HTTPS_PORT", d.https.to_string())
        .env("CONFAB_HTTP_PORT", d.http.to_string())
        .env("CONFAB_UDP_PORT", d.udp.to_string())
        .env("CONFAB_TCP_PORT", d.tcp.to_string())
        .args(["admin", "set-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_cli_sets_the_password_from_the_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path());
    let out = set_password(&d, "short\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 10 characters"), "{err}");

    let out = set_password(&d, &format!("{PASSWORD}\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(login(&d, PASSWORD, None), 200);
    assert_eq!(
        login(&d, &format!("{PASSWORD}\n"), None),
        401,
        "newline kept"
    );

    // Set already: the CLI says so instead of replacing it.
    let out = set_password(&d, "another long password\n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set already"), "{err}");
    assert_eq!(login(&d, PASSWORD, None), 200);
}
