#![allow(clippy::unwrap_used)]

use std::time::Duration;

use super::*;
use crate::config::Secret;
use crate::media::Heartbeat;
use crate::state::SledStore;

fn app(heartbeat: Heartbeat) -> (App, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let readiness = Readiness::new(store, vec![Arc::new(heartbeat)]);
    readiness
        .tls_loaded
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let keys = ApiKeys::from_map(
        [("APIk".to_string(), Secret::new("s".repeat(40)))]
            .into_iter()
            .collect(),
    );
    let app = App::new(AppInner {
        readiness,
        keys: crate::auth::KeyRing::new(keys, &crate::auth::KeysOrigin::Config),
        ca_pem: Some("-----BEGIN CERTIFICATE-----\n".into()),
        https_port: 7880,
        started: Instant::now(),
        update_state: dir.path().join("update-state.json"),
        has_slots: false,
        media: None,
        token_ttl: std::time::Duration::from_secs(3600),
        admin: None,
        updates: None,
        join_failures: Default::default(),
        trusted_proxies: Default::default(),
        token_failures: crate::api::token_failures(),
        agents: None,
        metrics: None,
        recorder: None,
        turn: None,
        metrics_open: false,
    });
    (app, dir)
}

fn live_heartbeat() -> Heartbeat {
    let h = Heartbeat::default();
    h.beat();
    h
}

fn get(app: &App, path: &str, tls: bool) -> (StatusCode, serde_json::Value, Response<Body>) {
    let req = Request::get(path)
        .header("host", "pi.local:7879")
        .body(())
        .unwrap();
    let resp = app.handle(&req, tls);
    let status = resp.status();
    let bytes = futures_body(&resp);
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json, resp)
}

fn futures_body(resp: &Response<Body>) -> Bytes {
    resp.body().whole()
}

#[test]
fn health_reports_version_and_time() {
    let (app, _d) = app(live_heartbeat());
    let (status, json, _) = get(&app, "/api/health", true);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["status"], "ok");
    assert_eq!(json["version"], crate::version::VERSION);
    assert!(json["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    let (_, live, _) = get(&app, "/api/health/live", true);
    assert_eq!(live, serde_json::json!({"status": "alive"}));
}

#[test]
fn ready_lists_checks_and_fails_when_media_loop_stalls() {
    let (app, _d) = app(live_heartbeat());
    let (status, json, _) = get(&app, "/api/health/ready", true);
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["status"], "ready");
    for check in ["state", "media", "tls", "shutdown"] {
        assert_eq!(json["checks"][check]["ok"], true, "{json}");
    }
    // A media loop that last turned 10 s ago.
    let stalled = Heartbeat::started_at(Instant::now() - Duration::from_secs(10));
    let (app, _d) = self::app(stalled);
    let (status, json, _) = get(&app, "/api/health/ready", true);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["failing"], serde_json::json!(["media"]), "{json}");
}

#[test]
fn ready_fails_while_draining() {
    let (app, _d) = app(live_heartbeat());
    app.readiness()
        .draining
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (status, json, _) = get(&app, "/api/health/ready", true);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json["failing"], serde_json::json!(["shutdown"]));
}

#[test]
fn plain_http_redirects_except_ca_and_health() {
    let (app, _d) = app(live_heartbeat());
    let (status, _, resp) = get(&app, "/rooms/x?y=1", false);
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        resp.headers()["location"],
        "https://pi.local:7880/rooms/x?y=1"
    );
    let (status, _, resp) = get(&app, "/ca.crt", false);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/x-x509-ca-cert");
    assert_eq!(get(&app, "/api/health", false).0, StatusCode::OK);
    assert_eq!(
        get(&app, "/api/status", false).0,
        StatusCode::PERMANENT_REDIRECT
    );
}

#[test]
fn status_needs_a_listing_token() {
    let (app, _d) = app(live_heartbeat());
    assert_eq!(get(&app, "/api/status", true).0, StatusCode::UNAUTHORIZED);
    let keys = app.keys();
    let mint = |video: crate::auth::VideoGrant| {
        crate::auth::mint(
            &keys,
            "APIk",
            &crate::auth::TokenRequest {
                identity: "cli".into(),
                ttl: Duration::from_secs(60),
                video,
                ..Default::default()
            },
        )
        .unwrap()
    };
    let call = |token: &str| {
        let req = Request::get("/api/status")
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        let resp = app.handle(&req, true);
        (resp.status(), futures_body(&resp))
    };
    let joiner = mint(crate::auth::VideoGrant {
        room_join: Some(true),
        ..Default::default()
    });
    assert_eq!(call(&joiner).0, StatusCode::FORBIDDEN);
    let lister = mint(crate::auth::VideoGrant {
        room_list: Some(true),
        ..Default::default()
    });
    let (status, body) = call(&lister);
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["version"], crate::version::VERSION);
    assert_eq!(json["ready"], true);
}

#[test]
fn unknown_paths_and_methods() {
    let (app, _d) = app(live_heartbeat());
    assert_eq!(get(&app, "/nope", true).0, StatusCode::NOT_FOUND);
    let req = Request::post("/api/health").body(()).unwrap();
    assert_eq!(
        app.handle(&req, true).status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[test]
fn dev_page_loads_the_embedded_livekit_client() {
    let (app, _d) = app(live_heartbeat());
    let (status, _, resp) = get(&app, "/dev", true);
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(futures_body(&resp).to_vec()).unwrap();
    assert!(
        page.contains("from '/assets/livekit-client.esm.mjs'"),
        "{page:.200}"
    );
    let (status, _, resp) = get(&app, "/assets/livekit-client.esm.mjs", true);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    let module = futures_body(&resp);
    // scripts/install-deps.sh installs web/node_modules, so a test build embeds the client.
    assert_eq!(
        env!("CONFAB_WEB_CLIENT"),
        "embedded",
        "web/node_modules missing at build"
    );
    assert!(module.len() > 100_000, "the whole client, not a stub");
    assert!(
        String::from_utf8_lossy(&module).contains("class Room"),
        "it is livekit-client"
    );
}
