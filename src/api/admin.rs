//! The admin API behind the web app's `/admin` page. One admin password (Argon2id hash in the
//! state database, tree `admin`), set on first visit with the one-time setup code confab prints at
//! start-up while no password is set — over the network always, whatever address a request comes
//! from (behind a reverse proxy every request comes from loopback) — or on the device itself with
//! `confab admin set-password`, which reads the code from the state directory. Login gives a
//! session cookie (HttpOnly, Secure, SameSite=Strict, 12 h); failed logins and wrong setup codes
//! are limited per client address (`api::peer`: the TCP peer, or the client a trusted proxy
//! names). State-changing calls must be JSON posts (a plain HTML form cannot send them), which
//! with SameSite=Strict keeps other sites from acting for the admin.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use super::{json_response, App, Body};

pub const PREFIX: &str = "/api/admin/";
const TREE: &str = "admin";
const PASSWORD_KEY: &[u8] = b"password_hash";
const COOKIE: &str = "confab_admin";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
const MIN_PASSWORD: usize = 10;
/// Failed logins and wrong setup codes allowed per client address within the window, then
/// refused until it passes.
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
const MAX_BODY: usize = 8 << 10;

/// The setup code's copy in the state directory, for `confab admin set-password`.
pub const SETUP_CODE_FILE: &str = "setup-code";

/// Sessions, failures and the setup code: in memory (a restart logs the admin out).
pub struct AdminState {
    setup_code: Mutex<Option<String>>,
    /// Files that hold a copy of the setup code (mode 0600), removed once the password is set.
    code_files: Vec<std::path::PathBuf>,
    sessions: Mutex<HashMap<String, Instant>>,
    failures: super::peer::Failures,
    /// The state directory, for `GET /api/admin/backup` (None: no backups, as in unit tests).
    state_dir: Option<std::path::PathBuf>,
}

fn random_token(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    let _ = getrandom::fill(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl AdminState {
    /// With `password_set` false, makes the one-time setup code (returned to be shown once).
    pub fn new(password_set: bool) -> (AdminState, Option<String>) {
        AdminState::with_code(password_set, None)
    }

    /// Like [`AdminState::new`], with the owner's preset setup code instead of a random one.
    pub fn with_code(password_set: bool, preset: Option<String>) -> (AdminState, Option<String>) {
        let code = (!password_set).then(|| {
            preset.unwrap_or_else(|| {
                let t = random_token(4).to_uppercase();
                format!("{}-{}", &t[..4], &t[4..])
            })
        });
        (
            AdminState {
                setup_code: Mutex::new(code.clone()),
                code_files: Vec::new(),
                sessions: Mutex::new(HashMap::new()),
                failures: super::peer::Failures::new(MAX_FAILURES, FAILURE_WINDOW),
                state_dir: None,
            },
            code,
        )
    }
}

impl AdminState {
    /// `429` while `client` has used up its failures in the window.
    fn locked_out(&self, client: IpAddr) -> Option<Response<Body>> {
        self.failures.blocked(client).then(|| {
            error(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed attempts from this address; wait five minutes",
            )
        })
    }

    /// Counts a wrong password or setup code from `client`; returns its count in the window.
    fn failed(&self, client: IpAddr) -> u32 {
        self.failures.failed(client)
    }

    fn succeeded(&self, client: IpAddr) {
        self.failures.forget(client);
    }

    /// Keeps a copy of the setup code (mode 0600) in each of `files` while no password is set,
    /// and removes stale copies when there is none: for `confab admin set-password`
    /// (`<state_dir>/setup-code`) and the appliance's console banner (`/run/confab/setup-code`).
    /// Best effort: the code is in the log either way.
    pub fn publish_code(&mut self, files: Vec<std::path::PathBuf>) {
        let code = self
            .setup_code
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for path in &files {
            let result = match &code {
                Some(code) => write_private(path, code),
                None => remove_if_present(path),
            };
            if let Err(e) = result {
                warn!(path = %path.display(), error = %e, "cannot update the setup code file");
            }
        }
        self.code_files = files;
    }

    /// Where the keys file and the local CA are, for backups.
    pub fn set_state_dir(&mut self, dir: std::path::PathBuf) {
        self.state_dir = Some(dir);
    }

    /// The password is set: the code is spent, and so are its copies.
    fn spend_code(&self) {
        *self.setup_code.lock().unwrap_or_else(|e| e.into_inner()) = None;
        for path in &self.code_files {
            if let Err(e) = remove_if_present(path) {
                warn!(path = %path.display(), error = %e, "cannot remove the spent setup code");
            }
        }
    }
}

fn write_private(path: &std::path::Path, code: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Replace rather than rewrite: a file left from an older start may have a wider mode.
    remove_if_present(path)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(f, "{code}")
}

fn remove_if_present(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The owner's admin settings from the appliance's boot partition (`confab appliance setup` writes
/// them to `<state_dir>/admin-preset.toml`; confab serve applies and removes the file at start).
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// An Argon2 PHC hash (`$argon2id$…`) to use as the admin password if none is set yet.
    pub password_hash: Option<String>,
    /// The one-time setup code to use instead of a random one.
    pub setup_code: Option<String>,
}

pub const PRESET_FILE: &str = "admin-preset.toml";

/// Whether `hash` is an Argon2 PHC string confab can verify passwords against.
pub fn valid_preset_hash(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

/// Applies and removes `<state_dir>/admin-preset.toml`: the password hash is stored if no admin
/// password is set yet (a set password is never replaced from a file); the setup code is
/// returned for [`AdminState::with_code`]. The file is removed only after the hash is saved.
pub fn apply_preset(
    store: &dyn crate::state::Store,
    state_dir: &std::path::Path,
) -> Result<Option<String>, String> {
    let path = state_dir.join(PRESET_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let preset: Preset = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(hash) = &preset.password_hash {
        if !valid_preset_hash(hash) {
            return Err(format!(
                "{}: password_hash is not an Argon2 hash",
                path.display()
            ));
        }
        if !password_set(store) {
            store
                .put(TREE, PASSWORD_KEY, hash.as_bytes())
                .and_then(|_| store.flush())
                .map_err(|e| format!("cannot save the preset admin password: {e}"))?;
            info!("admin password set from the boot partition's confab.toml");
        }
    }
    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(preset.setup_code)
}

/// True if the admin password is set in `store`.
pub fn password_set(store: &dyn crate::state::Store) -> bool {
    matches!(store.get(TREE, PASSWORD_KEY), Ok(Some(_)))
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

fn cookie_token<B>(req: &Request<B>) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn with_cookie(mut r: Response<Body>, value: &str, max_age: u64) -> Response<Body> {
    let c =
        format!("{COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={max_age}");
    if let Ok(v) = HeaderValue::from_str(&c) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

impl App {
    fn admin(&self) -> Option<&AdminState> {
        self.0.admin.as_ref()
    }

    pub(super) fn logged_in<B>(&self, req: &Request<B>) -> bool {
        let (Some(admin), Some(token)) = (self.admin(), cookie_token(req)) else {
            return false;
        };
        let mut sessions = admin.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        sessions.retain(|_, exp| *exp > now);
        sessions.contains_key(&token)
    }

    fn new_session(&self) -> Option<String> {
        let admin = self.admin()?;
        let token = random_token(32);
        admin
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), Instant::now() + SESSION_TTL);
        Some(token)
    }
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

fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify_password(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
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
    let store = app.0.readiness.state.clone();
    let post = req.method() == Method::POST;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if post && !is_json {
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
    let body = match super::conn::read_body(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error(e.status(), &e.to_string()),
    };
    match (post, path.as_str()) {
        (false, "session") => {
            let set = password_set(store.as_ref());
            json_response(
                StatusCode::OK,
                &json!({"setup_needed": !set, "logged_in": logged_in}),
            )
        }
        (true, "setup") => {
            if password_set(store.as_ref()) {
                return error(
                    StatusCode::CONFLICT,
                    "the admin password is already set; log in",
                );
            }
            if let Some(r) = admin.locked_out(client) {
                return r;
            }
            let body: PasswordBody = match json_body(&body) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let expected = admin
                .setup_code
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let code_ok = match (&expected, &body.code) {
                (Some(e), Some(c)) => e.eq_ignore_ascii_case(c.trim()),
                _ => false,
            };
            // No exception for loopback: behind a reverse proxy or a container's port mapping
            // every request comes from a local address. On the device itself, use
            // `confab admin set-password`.
            if !code_ok {
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
            let hash = match hash_password(&body.password) {
                Ok(h) => h,
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            };
            if let Err(e) = store
                .put(TREE, PASSWORD_KEY, hash.as_bytes())
                .and_then(|_| store.flush())
            {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot save: {e}"),
                );
            }
            admin.spend_code();
            admin.succeeded(client);
            info!(from = %client, "admin password set");
            let token = app.new_session().unwrap_or_default();
            with_cookie(
                json_response(StatusCode::OK, &json!({"logged_in": true})),
                &token,
                SESSION_TTL.as_secs(),
            )
        }
        (true, "login") => {
            if let Some(r) = admin.locked_out(client) {
                return r;
            }
            let body: PasswordBody = match json_body(&body) {
                Ok(b) => b,
                Err(r) => return *r,
            };
            let stored = match store.get(TREE, PASSWORD_KEY) {
                Ok(Some(h)) => String::from_utf8_lossy(&h).into_owned(),
                Ok(None) => {
                    return error(StatusCode::CONFLICT, "no admin password yet: set one first")
                }
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            };
            if !verify_password(&stored, &body.password) {
                let failures = admin.failed(client);
                warn!(from = %client, failures, "admin login failed");
                return error(StatusCode::UNAUTHORIZED, "wrong password");
            }
            admin.succeeded(client);
            info!(from = %client, "admin logged in");
            let token = app.new_session().unwrap_or_default();
            with_cookie(
                json_response(StatusCode::OK, &json!({"logged_in": true})),
                &token,
                SESSION_TTL.as_secs(),
            )
        }
        (true, "logout") => {
            if let Some(t) = cookie {
                admin
                    .sessions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&t);
            }
            with_cookie(
                json_response(StatusCode::OK, &json!({"logged_in": false})),
                "",
                0,
            )
        }
        (false, "backup") if backup_bearer => backup_download(app, client, "confab backup").await,
        _ if !logged_in => error(StatusCode::UNAUTHORIZED, "log in first"),
        (false, "backup") => backup_download(app, client, "the admin page").await,
        (false, "overview") => overview(app).await,
        (false, "keys") => keys_view(app),
        (true, "keys/reveal") => {
            // The secret leaves the server only on this explicit request (the page's "Show").
            info!(from = %client, "API secret shown on the admin page");
            let secret = app
                .keys()
                .primary()
                .map(|(_, s)| s.expose().to_string())
                .unwrap_or_default();
            json_response(StatusCode::OK, &json!({"api_secret": secret}))
        }
        (true, "keys/rotate") => match app.0.keys.rotate() {
            Ok(key) => {
                // Only the key id is logged, never the secret.
                info!(api_key = %key, from = %client, "API key rotated by the admin; the old key is refused from now on");
                keys_view(app)
            }
            Err(e @ crate::auth::KeysError::Configured) => {
                error(StatusCode::CONFLICT, &e.to_string())
            }
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        },
        (false, "access") => {
            json_response(StatusCode::OK, &super::access::admin_view(store.as_ref()))
        }
        (true, p) if p.starts_with("access/") => access_action(app, p, &body),
        (_, p) if p == "update" || p.starts_with("update/") => {
            super::update::handle(app, post, p).await
        }
        (true, p) if p.starts_with("rooms/") => room_action(app, p, &body).await,
        _ => error(StatusCode::NOT_FOUND, "no such admin call"),
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
    let Some(dir) = app.admin().and_then(|a| a.state_dir.clone()) else {
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
            if !super::rooms::valid_room(room) {
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
            if !super::rooms::valid_room(room) {
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

#[cfg(test)]
mod preset_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::state::{SledStore, Store};

    #[test]
    fn a_preset_sets_the_password_once_and_hands_over_the_setup_code() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let hash = hash_password("correct horse battery").unwrap();
        let preset = format!("password_hash = \"{hash}\"\nsetup_code = \"OWNER-CODE-1\"\n");
        std::fs::write(dir.path().join(PRESET_FILE), &preset).unwrap();
        let code = apply_preset(&store, dir.path()).unwrap();
        assert_eq!(code.as_deref(), Some("OWNER-CODE-1"));
        assert!(!dir.path().join(PRESET_FILE).exists(), "preset kept");
        let stored = store.get(TREE, PASSWORD_KEY).unwrap().unwrap();
        assert!(verify_password(
            &String::from_utf8(stored).unwrap(),
            "correct horse battery"
        ));
        // With a password set, the setup code is not used and a later preset changes nothing.
        let (_, shown) = AdminState::with_code(password_set(&store), code);
        assert_eq!(shown, None);
        let other = hash_password("another password!").unwrap();
        std::fs::write(
            dir.path().join(PRESET_FILE),
            format!("password_hash = \"{other}\"\n"),
        )
        .unwrap();
        apply_preset(&store, dir.path()).unwrap();
        let stored = store.get(TREE, PASSWORD_KEY).unwrap().unwrap();
        assert!(verify_password(
            &String::from_utf8(stored).unwrap(),
            "correct horse battery"
        ));
        // Without a password, the owner's code replaces the random one.
        let (_, shown) = AdminState::with_code(false, Some("OWNER-CODE-1".into()));
        assert_eq!(shown.as_deref(), Some("OWNER-CODE-1"));
    }

    #[test]
    fn a_bad_preset_is_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        std::fs::write(
            dir.path().join(PRESET_FILE),
            "password_hash = \"hunter2\"\n",
        )
        .unwrap();
        let err = apply_preset(&store, dir.path()).unwrap_err();
        assert!(err.contains("not an Argon2 hash"), "{err}");
        assert!(dir.path().join(PRESET_FILE).exists());
        assert!(!password_set(&store));
    }
}
