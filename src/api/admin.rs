//! The admin API behind the web app's `/admin` page. One admin password (Argon2id hash in the
//! state database, tree `admin`), set on first visit with the one-time setup code confab prints at
//! start-up while no password is set — over the network always, whatever address a request comes
//! from (behind a reverse proxy every request comes from loopback) — or on the device itself with
//! `confab admin set-password`, which reads the code from the state directory. Login gives a
//! session cookie (HttpOnly, Secure, SameSite=Strict, 12 h); failed logins and wrong setup codes
//! are limited per client address (`http::peer`: the TCP peer, or the client a trusted proxy
//! names). State-changing calls must be JSON posts (a plain HTML form cannot send them), which
//! with SameSite=Strict keeps other sites from acting for the admin.

use std::net::IpAddr;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::session::{cookie_token, with_cookie};
use super::App;
use crate::auth::admin::{self as password, AdminState, MIN_PASSWORD, SESSION_TTL};
use crate::http::{json_response, Body};

pub const PREFIX: &str = "/api/admin/";
const MAX_BODY: usize = 8 << 10;

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// `429` while `client` has used up its failed attempts in the window.
fn locked_out(admin: &AdminState, client: IpAddr) -> Option<Response<Body>> {
    admin.locked_out(client).then(|| {
        error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed attempts from this address; wait five minutes",
        )
    })
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct RemoveBody {
    identity: String,
}

/// The JSON body (the content type was checked for every admin POST).
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response<Body>>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &format!("bad request: {e}"))))
}

/// Whether a request is a JSON post (every state-changing admin call must be one).
fn is_json<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"))
}

/// One admin request, as read: who sent it, what it asks, and its body.
struct Call<'a> {
    app: &'a App,
    admin: &'a AdminState,
    client: IpAddr,
    post: bool,
    path: String,
    logged_in: bool,
    /// The session cookie, for logout.
    cookie: Option<String>,
    /// A valid bearer token with the backup claim (for `GET backup` without a session).
    backup_bearer: bool,
    /// `DELETE` (a recording).
    delete: bool,
    /// The `Range` header (a recording's download).
    range: Option<String>,
    body: bytes::Bytes,
}

pub async fn handle(app: &App, req: Request<Incoming>) -> Response<Body> {
    let Some(admin) = app.admin() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the admin API is not available",
        );
    };
    let path = req
        .uri()
        .path()
        .strip_prefix(PREFIX)
        .unwrap_or_default()
        .to_string();
    let client = app.client_ip(&req);
    let post = req.method() == Method::POST;
    let delete = req.method() == Method::DELETE;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if post && !is_json(&req) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON (content-type: application/json)",
        );
    }
    let logged_in = app.logged_in(&req);
    let cookie = cookie_token(&req);
    // `confab backup` on the device, while the server runs: a token with the backup claim.
    let backup_bearer = match (post, path.as_str()) {
        (false, "backup") if !logged_in => match backup_token(app, &req, client) {
            Some(Err(r)) => return r,
            Some(Ok(())) => true,
            None => false,
        },
        _ => false,
    };
    // Read the whole body first: answering before it is read resets the HTTP/2 stream.
    let body = match crate::http::conn::read_body(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error(e.status(), &e.to_string()),
    };
    let call = Call {
        app,
        admin,
        client,
        post,
        path,
        logged_in,
        cookie,
        backup_bearer,
        delete,
        range,
        body,
    };
    route(&call).await
}

/// Answers a read admin request: the password calls for anyone, the rest for a session.
async fn route(call: &Call<'_>) -> Response<Body> {
    let (app, client, body) = (call.app, call.client, &call.body);
    let store = app.0.readiness.state.clone();
    match (call.post, call.path.as_str()) {
        (false, "session") => {
            let set = password::password_set(store.as_ref());
            json_response(
                StatusCode::OK,
                &json!({"setup_needed": !set, "logged_in": call.logged_in}),
            )
        }
        (true, "setup") => setup(call),
        (true, "login") => login(call),
        (true, "logout") => {
            if let Some(t) = &call.cookie {
                call.admin.end_session(t);
            }
            with_cookie(
                json_response(StatusCode::OK, &json!({"logged_in": false})),
                "",
                0,
            )
        }
        (false, "backup") if call.backup_bearer => {
            backup_download(app, client, "confab backup").await
        }
        _ if !call.logged_in => error(StatusCode::UNAUTHORIZED, "log in first"),
        (false, "backup") => backup_download(app, client, "the admin page").await,
        (false, p) if p == "recordings" || p.starts_with("recordings/") => {
            super::recordings::admin(app, p, call.delete, call.range.as_deref()).await
        }
        (false, "overview") => overview(app).await,
        (false, "keys") => keys_view(app),
        (true, "keys/reveal") => reveal_secret(app, client),
        (true, "keys/rotate") => rotate_key(app, client),
        (false, "access") => {
            json_response(StatusCode::OK, &super::access::admin_view(store.as_ref()))
        }
        (true, p) if p.starts_with("access/") => access_action(app, p, body),
        (_, p) if p == "update" || p.starts_with("update/") => {
            super::update::handle(app, call.post, p).await
        }
        (true, p) if p.starts_with("rooms/") => room_action(app, p, body).await,
        _ => error(StatusCode::NOT_FOUND, "no such admin call"),
    }
}

/// The answer that logs the admin in: a new session in a cookie.
fn logged_in_response(admin: &AdminState) -> Response<Body> {
    let token = admin.new_session();
    with_cookie(
        json_response(StatusCode::OK, &json!({"logged_in": true})),
        &token,
        SESSION_TTL.as_secs(),
    )
}

/// `POST setup`: the first admin password, with the one-time setup code.
fn setup(call: &Call<'_>) -> Response<Body> {
    let (admin, client) = (call.admin, call.client);
    let store = call.app.0.readiness.state.clone();
    if password::password_set(store.as_ref()) {
        return error(
            StatusCode::CONFLICT,
            "the admin password is already set; log in",
        );
    }
    if let Some(r) = locked_out(admin, client) {
        return r;
    }
    let body: PasswordBody = match json_body(&call.body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    // No exception for loopback: behind a reverse proxy or a container's port mapping
    // every request comes from a local address. On the device itself, use
    // `confab admin set-password`.
    if !admin.setup_code_matches(body.code.as_deref()) {
        let failures = admin.failed(client);
        warn!(from = %client, failures, "admin setup with a wrong or missing setup code");
        return error(
            StatusCode::FORBIDDEN,
            "enter the setup code confab printed when it started (in the journal: journalctl -u confab), or run confab admin set-password on the device",
        );
    }
    if body.password.chars().count() < MIN_PASSWORD {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("choose a password of at least {MIN_PASSWORD} characters"),
        );
    }
    let hash = match password::hash_password(&body.password) {
        Ok(h) => h,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    if let Err(e) = password::save_hash(store.as_ref(), &hash) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot save: {e}"),
        );
    }
    admin.spend_code();
    admin.succeeded(client);
    info!(from = %client, "admin password set");
    logged_in_response(admin)
}

/// `POST login`: the admin password for a session.
fn login(call: &Call<'_>) -> Response<Body> {
    let (admin, client) = (call.admin, call.client);
    if let Some(r) = locked_out(admin, client) {
        return r;
    }
    let body: PasswordBody = match json_body(&call.body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let stored = match password::stored_hash(call.app.0.readiness.state.as_ref()) {
        Ok(Some(h)) => h,
        Ok(None) => return error(StatusCode::CONFLICT, "no admin password yet: set one first"),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if !password::verify_password(&stored, &body.password) {
        let failures = admin.failed(client);
        warn!(from = %client, failures, "admin login failed");
        return error(StatusCode::UNAUTHORIZED, "wrong password");
    }
    admin.succeeded(client);
    info!(from = %client, "admin logged in");
    logged_in_response(admin)
}

/// `POST keys/reveal`: the API secret leaves the server only on this explicit request (the
/// page's "Show").
fn reveal_secret(app: &App, client: IpAddr) -> Response<Body> {
    info!(from = %client, "API secret shown on the admin page");
    let secret = app
        .keys()
        .primary()
        .map(|(_, s)| s.expose().to_string())
        .unwrap_or_default();
    json_response(StatusCode::OK, &json!({"api_secret": secret}))
}

/// `POST keys/rotate`: a new device key; the old one is refused from now on.
fn rotate_key(app: &App, client: IpAddr) -> Response<Body> {
    match app.0.keys.rotate() {
        Ok(key) => {
            // Only the key id is logged, never the secret.
            info!(api_key = %key, from = %client, "API key rotated by the admin; the old key is refused from now on");
            keys_view(app)
        }
        Err(e @ crate::auth::KeysError::Configured) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// For `GET backup` without a session: None when no bearer token is given; Ok for a valid token
/// with the backup claim ([`crate::auth::mint_backup`]); otherwise the answer refusing it.
fn backup_token<B>(
    app: &App,
    req: &Request<B>,
    client: IpAddr,
) -> Option<Result<(), Response<Body>>> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = crate::auth::bearer(header)?;
    if let Some((status, reason)) = app.token_blocked(client) {
        return Some(Err(error(status, &reason)));
    }
    Some(match crate::auth::verify(&app.keys(), token) {
        Ok(c) if c.backup == Some(true) => Ok(()),
        Ok(_) => Err(error(
            StatusCode::FORBIDDEN,
            "this token may not download backups (use confab backup on the device, or log in)",
        )),
        Err(e) => {
            app.token_refused(client, "/api/admin/backup", &e.to_string());
            Err(error(StatusCode::UNAUTHORIZED, &e.to_string()))
        }
    })
}

/// A backup archive of this device (`crate::backup`), made while the server runs.
async fn backup_download(app: &App, client: IpAddr, via: &'static str) -> Response<Body> {
    let Some(dir) = app
        .admin()
        .and_then(|a| a.state_dir().map(|d| d.to_path_buf()))
    else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backups are not available on this server",
        );
    };
    let store = app.0.readiness.state.clone();
    let started = Instant::now();
    let made =
        tokio::task::spawn_blocking(move || crate::backup::create(store.as_ref(), &dir)).await;
    let archive = match made {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            warn!(from = %client, error = %e, "backup failed");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot make the backup: {e}"),
            );
        }
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot make the backup: {e}"),
            )
        }
    };
    info!(
        from = %client,
        via,
        bytes = archive.bytes.len(),
        files = archive.manifest.files.len() + 1,
        ms = started.elapsed().as_millis() as u64,
        "backup downloaded"
    );
    let name = crate::backup::file_name(&archive.manifest);
    let mut r = Response::new(Body::from(archive.bytes));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// The API key id and whether "Rotate" can replace it. The secret is not in it: the page asks
/// for it (`keys/reveal`) only when the admin presses "Show".
fn keys_view(app: &App) -> Response<Body> {
    let keys = app.keys();
    let key = keys
        .primary()
        .map(|(k, _)| k.to_string())
        .unwrap_or_default();
    let file = app.0.keys.file();
    json_response(
        StatusCode::OK,
        &json!({
            "api_key": key,
            "rotatable": file.is_some(),
            "source": if file.is_some() { "device" } else { "config" },
        }),
    )
}

#[derive(Deserialize)]
struct GuestBody {
    enabled: bool,
}

#[derive(Deserialize)]
struct PasscodeBody {
    room: String,
    passcode: String,
}

#[derive(Deserialize)]
struct InviteBody {
    room: String,
    hours: u64,
}

#[derive(Deserialize)]
struct RevokeBody {
    id: String,
}

/// Guest access, room passcodes and invite links (`api::access`).
fn access_action(app: &App, path: &str, body: &[u8]) -> Response<Body> {
    use super::access;
    let store = app.0.readiness.state.as_ref();
    let bad_room = || {
        error(
            StatusCode::BAD_REQUEST,
            "a room name has 1 to 64 letters, digits, '-', '_' or '.'",
        )
    };
    let done = |r: Result<(), access::AccessError>| match r {
        Ok(()) => json_response(StatusCode::OK, &access::admin_view(store)),
        Err(e) => error(e.status(), &e.to_string()),
    };
    match path {
        "access/guest" => {
            let b: GuestBody = match json_body(body) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            access::log_change(
                if b.enabled {
                    "guest access turned on"
                } else {
                    "guest access turned off"
                },
                None,
            );
            done(access::set_guest_access(store, b.enabled).map_err(Into::into))
        }
        "access/passcode" => {
            let b: PasscodeBody = match json_body(body) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let room = b.room.trim();
            if !super::access::valid_room(room) {
                return bad_room();
            }
            access::log_change(
                if b.passcode.trim().is_empty() {
                    "room passcode removed"
                } else {
                    "room passcode set"
                },
                Some(room),
            );
            done(access::set_passcode(store, room, &b.passcode))
        }
        "access/invite" => {
            let b: InviteBody = match json_body(body) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let room = b.room.trim();
            if !super::access::valid_room(room) {
                return bad_room();
            }
            match access::create_invite(store, room, b.hours) {
                Ok((token, id, invite)) => {
                    access::log_change("invite link created", Some(room));
                    json_response(
                        StatusCode::OK,
                        &json!({
                            "id": id,
                            "room": room,
                            "path": format!("/r/{room}?invite={token}"),
                            "expires_unix": invite.expires_unix,
                            "access": access::admin_view(store),
                        }),
                    )
                }
                Err(e) => error(e.status(), &e.to_string()),
            }
        }
        "access/invite/revoke" => {
            let b: RevokeBody = match json_body(body) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            match access::revoke_invite(store, b.id.trim()) {
                Ok(true) => {
                    access::log_change("invite link revoked", None);
                    done(Ok(()))
                }
                Ok(false) => error(StatusCode::NOT_FOUND, "no such invite"),
                Err(e) => error(e.status(), &e.to_string()),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin call"),
    }
}

/// Version, uptime, checks, this process's CPU and memory, and the live rooms.
async fn overview(app: &App) -> Response<Body> {
    let mut v = app.status_json();
    let checks: Vec<Value> = app
        .0
        .readiness
        .checks()
        .iter()
        .map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail}))
        .collect();
    v["checks"] = json!(checks);
    v["process"] = process_figures();
    let rooms = match &app.0.media {
        Some(m) => {
            let mut rooms: Vec<(String, Value)> = m
            .request_all(crate::sfu::Request::Overview)
            .await
            .unwrap_or_default()
            .into_iter()
            .flat_map(|reply| match reply {
                crate::sfu::Reply::Overview(rooms) => rooms,
                _ => vec![],
            })
            .map(|(r, people)| {
                let people: Vec<Value> = people
                    .into_iter()
                    .map(|p| json!({"identity": p.identity, "name": p.name, "tracks": p.tracks.len()}))
                    .collect();
                (r.name.clone(), json!({"name": r.name, "participants": people, "created_at": r.creation_time}))
            })
            .collect();
            rooms.sort_by(|a, b| a.0.cmp(&b.0));
            rooms.into_iter().map(|(_, v)| v).collect()
        }
        None => vec![],
    };
    v["room_list"] = json!(rooms);
    json_response(StatusCode::OK, &v)
}

/// CPU seconds and resident memory of this process, from /proc (Linux).
fn process_figures() -> Value {
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        });
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) start after the last ')'.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = f.get(11)?.parse().ok()?;
            let stime: u64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) as f64 / 100.0)
        });
    json!({"rss_bytes": rss_kib.map(|k| k * 1024), "cpu_seconds": cpu_seconds})
}

async fn room_action(app: &App, path: &str, body: &[u8]) -> Response<Body> {
    let Some(media) = app.0.media.clone() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the media engine is not running",
        );
    };
    let rest = path.strip_prefix("rooms/").unwrap_or_default();
    let Some((room, action)) = rest.rsplit_once('/') else {
        return error(StatusCode::NOT_FOUND, "no such admin call");
    };
    let room = room.to_string();
    match action {
        "end" => {
            let r = room.clone();
            match media
                .request(&room, crate::sfu::Request::DeleteRoom { room: r })
                .await
                .map(|reply| matches!(reply, crate::sfu::Reply::Found(true)))
            {
                Ok(true) => {
                    info!(%room, "room ended by the admin");
                    json_response(StatusCode::OK, &json!({"ended": room}))
                }
                Ok(false) => error(StatusCode::NOT_FOUND, "no such room"),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            }
        }
        "remove" => {
            let body: RemoveBody = match json_body(body) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let (r, id) = (room.clone(), body.identity.clone());
            let found = media
                .request(
                    &room,
                    crate::sfu::Request::RemoveParticipant {
                        room: r,
                        identity: id,
                    },
                )
                .await
                .map(|reply| matches!(reply, crate::sfu::Reply::Found(true)));
            match found {
                Ok(true) => {
                    info!(%room, identity = %body.identity, "participant removed by the admin");
                    json_response(StatusCode::OK, &json!({"removed": body.identity}))
                }
                Ok(false) => error(StatusCode::NOT_FOUND, "no such participant"),
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no such admin call"),
    }
}
