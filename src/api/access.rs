//! Who may join a room through the web app (`POST /api/join`), decided from the state database
//! (`settings/guest_access`, and the tree `access` for passcodes and invites):
//!
//! - **Guest access** (on by default): anyone who reaches the device (LAN, Tailscale) may join a
//!   room that has no passcode. The admin turns it off in `/admin`.
//! - **Room passcodes**: the admin sets a passcode per room name (the room need not exist yet).
//!   A room with a passcode always asks for it, guest access on or off. Passcodes are meant to be
//!   shared, so they are stored as typed and shown to the admin; they are compared in constant
//!   time and wrong guesses are limited per address.
//! - **Invite links** (`/r/<room>?invite=<token>`): made by the admin for one room, valid until
//!   they expire (1 hour – 30 days) or are revoked. The token (256 random bits) is shown once;
//!   only its SHA-256 is stored.
//!
//! With guest access off, a room without a passcode can be joined only with an invite link (or
//! by a logged-in admin). The token the web app gets is minted by the server on each join;
//! nothing secret is in the web bundle.

use std::net::IpAddr;
use std::time::Duration;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::info;

use crate::state::{StateError, Store};

/// Passcodes and invites (created on first use).
const TREE: &str = "access";
/// Guest access is one of the appliance settings (state migration 3 made it, default `true`).
const SETTINGS: &str = "settings";
const GUEST_KEY: &[u8] = b"guest_access";
const PASSCODE_PREFIX: &str = "passcode:";
const INVITE_PREFIX: &str = "invite:";
pub const MIN_INVITE_HOURS: u64 = 1;
pub const MAX_INVITE_HOURS: u64 = 30 * 24;
const MAX_PASSCODE: usize = 64;
/// Wrong passcodes (or invites) allowed per address within the window.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);

/// Why a join is refused: HTTP status, a machine-readable code for the web app, and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: &str) -> Refusal {
        Refusal {
            status,
            code,
            message: message.to_string(),
        }
    }

    pub fn json(&self) -> Value {
        json!({"error": self.message, "code": self.code})
    }
}

/// A stored invite (the token itself is not stored).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Invite {
    pub room: String,
    pub created_unix: u64,
    pub expires_unix: u64,
}

/// What a person asking to join brings.
#[derive(Debug, Default, Clone)]
pub struct Credentials<'a> {
    pub passcode: Option<&'a str>,
    pub invite: Option<&'a str>,
    /// A logged-in admin may join any room.
    pub admin: bool,
}

/// Wrong passcodes and invites per client address (in memory).
#[derive(Debug)]
pub struct Limiter(crate::http::peer::Failures);

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter(crate::http::peer::Failures::new(
            MAX_FAILURES,
            FAILURE_WINDOW,
        ))
    }
}

impl Limiter {
    fn blocked(&self, ip: IpAddr) -> bool {
        self.0.blocked(ip)
    }

    fn failed(&self, ip: IpAddr) {
        self.0.failed(ip);
    }
}

/// Room names people type and share in links: 1–64 letters, digits, `-`, `_`, `.`.
pub fn valid_room(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn sha256_hex(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Equal strings, in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// On unless the admin turned it off (`settings/guest_access` = `false`); an unreadable value
/// counts as off (closed rather than open by mistake).
pub fn guest_access(store: &dyn Store) -> bool {
    match store.get(SETTINGS, GUEST_KEY) {
        Ok(Some(v)) => v == b"true",
        Ok(None) => true,
        Err(_) => false,
    }
}

pub fn set_guest_access(store: &dyn Store, on: bool) -> Result<(), StateError> {
    store.put(SETTINGS, GUEST_KEY, if on { b"true" } else { b"false" })?;
    store.flush()
}

fn passcode_key(room: &str) -> Vec<u8> {
    format!("{PASSCODE_PREFIX}{room}").into_bytes()
}

pub fn passcode(store: &dyn Store, room: &str) -> Option<String> {
    store
        .get(TREE, &passcode_key(room))
        .ok()
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Why an access change was not made: the request (400), or the state database could not save
/// it (503: a full disk, an I/O error; nothing was changed and confab recovers by itself).
#[derive(Debug)]
pub enum AccessError {
    Invalid(String),
    NotSaved(StateError),
}

impl std::fmt::Display for AccessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AccessError::Invalid(why) => f.write_str(why),
            AccessError::NotSaved(e) => write!(f, "the change was not saved: {e}"),
        }
    }
}

impl From<StateError> for AccessError {
    fn from(e: StateError) -> AccessError {
        AccessError::NotSaved(e)
    }
}

impl AccessError {
    pub fn status(&self) -> StatusCode {
        match self {
            AccessError::Invalid(_) => StatusCode::BAD_REQUEST,
            AccessError::NotSaved(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Sets (or, with an empty passcode, removes) a room's passcode.
pub fn set_passcode(store: &dyn Store, room: &str, code: &str) -> Result<(), AccessError> {
    let code = code.trim();
    if code.chars().count() > MAX_PASSCODE {
        return Err(AccessError::Invalid(format!(
            "a passcode has at most {MAX_PASSCODE} characters"
        )));
    }
    let r = if code.is_empty() {
        store.remove(TREE, &passcode_key(room))
    } else {
        store.put(TREE, &passcode_key(room), code.as_bytes())
    };
    Ok(r.and_then(|_| store.flush())?)
}

/// Every room passcode, by room name.
pub fn passcodes(store: &dyn Store) -> Vec<(String, String)> {
    prefixed(store, PASSCODE_PREFIX)
        .into_iter()
        .map(|(room, v)| (room, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

fn prefixed(store: &dyn Store, prefix: &str) -> Vec<(String, Vec<u8>)> {
    store
        .entries(TREE)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| {
            let k = String::from_utf8(k).ok()?;
            Some((k.strip_prefix(prefix)?.to_string(), v))
        })
        .collect()
}

/// Makes an invite for `room`, valid for `hours`; returns the token (shown once) and its id.
pub fn create_invite(
    store: &dyn Store,
    room: &str,
    hours: u64,
) -> Result<(String, String, Invite), AccessError> {
    if !(MIN_INVITE_HOURS..=MAX_INVITE_HOURS).contains(&hours) {
        return Err(AccessError::Invalid(format!(
            "an invite is valid for {MIN_INVITE_HOURS} hour to {} days",
            MAX_INVITE_HOURS / 24
        )));
    }
    let token = crate::auth::random_token(43).map_err(|e| AccessError::Invalid(e.to_string()))?;
    let hash = sha256_hex(&token);
    let now = crate::clock::unix_secs();
    let invite = Invite {
        room: room.to_string(),
        created_unix: now,
        expires_unix: now + hours * 3600,
    };
    let value = serde_json::to_vec(&invite).map_err(|e| AccessError::Invalid(e.to_string()))?;
    store
        .put(TREE, format!("{INVITE_PREFIX}{hash}").as_bytes(), &value)
        .and_then(|_| store.flush())?;
    Ok((token, invite_id(&hash), invite))
}

/// The short id the admin page names an invite by (a prefix of its hash; not the token).
fn invite_id(hash: &str) -> String {
    hash.chars().take(12).collect()
}

/// Every invite: (id, invite), expired ones included (the admin sees and removes them).
pub fn invites(store: &dyn Store) -> Vec<(String, Invite)> {
    let mut list: Vec<(String, Invite)> = prefixed(store, INVITE_PREFIX)
        .into_iter()
        .filter_map(|(hash, v)| Some((invite_id(&hash), serde_json::from_slice(&v).ok()?)))
        .collect();
    list.sort_by_key(|(_, i)| std::cmp::Reverse(i.created_unix));
    list
}

/// Revokes the invite with id `id`; false if there is none.
pub fn revoke_invite(store: &dyn Store, id: &str) -> Result<bool, AccessError> {
    if id.len() != 12 {
        return Ok(false);
    }
    let Some((hash, _)) = prefixed(store, INVITE_PREFIX)
        .into_iter()
        .find(|(hash, _)| hash.starts_with(id))
    else {
        return Ok(false);
    };
    store
        .remove(TREE, format!("{INVITE_PREFIX}{hash}").as_bytes())
        .and_then(|_| store.flush())?;
    Ok(true)
}

fn find_invite(store: &dyn Store, token: &str) -> Option<Invite> {
    let key = format!("{INVITE_PREFIX}{}", sha256_hex(token.trim()));
    let raw = store.get(TREE, key.as_bytes()).ok()??;
    serde_json::from_slice(&raw).ok()
}

/// How a room is joined, for the pre-join page: `open`, `passcode` or `invite`.
pub fn room_access(store: &dyn Store, room: &str) -> &'static str {
    if passcode(store, room).is_some() {
        "passcode"
    } else if guest_access(store) {
        "open"
    } else {
        "invite"
    }
}

/// May someone with `creds` join `room`? `ip` is where the request came from (for the limit on
/// wrong guesses).
pub fn decide(
    store: &dyn Store,
    limiter: &Limiter,
    ip: IpAddr,
    room: &str,
    creds: &Credentials<'_>,
    now: u64,
) -> Result<(), Refusal> {
    let code = passcode(store, room);
    if creds.admin || (code.is_none() && guest_access(store)) {
        return Ok(());
    }
    let has_invite = creds.invite.is_some_and(|t| !t.trim().is_empty());
    let has_passcode = creds.passcode.is_some_and(|p| !p.trim().is_empty());
    if (has_invite || has_passcode) && limiter.blocked(ip) {
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many wrong passcodes or invite links from this device; wait five minutes",
        ));
    }
    if let (true, Some(token)) = (has_invite, creds.invite) {
        return match find_invite(store, token) {
            None => {
                limiter.failed(ip);
                Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "invite_invalid",
                    "this invite link is not valid (it may have been revoked); ask for a new one",
                ))
            }
            Some(i) if i.room != room => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "invite_other_room",
                &format!("this invite link is for the room {}, not {room}", i.room),
            )),
            Some(i) if i.expires_unix <= now => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "invite_expired",
                "this invite link has expired; ask for a new one",
            )),
            Some(_) => Ok(()),
        };
    }
    match (code, has_passcode.then_some(creds.passcode).flatten()) {
        (Some(expected), Some(given)) => {
            if same(expected.trim(), given.trim()) {
                Ok(())
            } else {
                limiter.failed(ip);
                Err(Refusal::new(
                    StatusCode::FORBIDDEN,
                    "passcode_wrong",
                    "wrong passcode",
                ))
            }
        }
        (Some(_), None) => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "passcode_required",
            "this room needs a passcode",
        )),
        (None, _) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "invite_required",
            "guest access is off: joining needs an invite link (or the room's passcode) from the admin",
        )),
    }
}

/// The admin page's view of access settings.
pub fn admin_view(store: &dyn Store) -> Value {
    let now = crate::clock::unix_secs();
    json!({
        "guest_access": guest_access(store),
        "passcodes": passcodes(store)
            .into_iter()
            .map(|(room, passcode)| json!({"room": room, "passcode": passcode}))
            .collect::<Vec<_>>(),
        "invites": invites(store)
            .into_iter()
            .map(|(id, i)| json!({
                "id": id,
                "room": i.room,
                "created_unix": i.created_unix,
                "expires_unix": i.expires_unix,
                "expired": i.expires_unix <= now,
            }))
            .collect::<Vec<_>>(),
        "invite_hours": {"min": MIN_INVITE_HOURS, "max": MAX_INVITE_HOURS},
    })
}

pub fn log_change(what: &str, room: Option<&str>) {
    info!(room = room.unwrap_or("-"), "{what}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::SledStore;

    fn store() -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path()).expect("open");
        (dir, s)
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn code(r: Result<(), Refusal>) -> &'static str {
        match r {
            Ok(()) => "ok",
            Err(r) => r.code,
        }
    }

    #[test]
    fn guest_access_passcodes_and_invites() {
        let (_dir, s) = store();
        let lim = Limiter::default();
        let now = crate::clock::unix_secs();
        let none = Credentials::default();
        assert!(guest_access(&s), "on by default");
        assert_eq!(code(decide(&s, &lim, IP, "a", &none, now)), "ok");
        assert_eq!(room_access(&s, "a"), "open");

        // A passcode protects its room even with guest access on.
        set_passcode(&s, "a", " 4711 ").expect("set");
        assert_eq!(room_access(&s, "a"), "passcode");
        assert_eq!(
            code(decide(&s, &lim, IP, "a", &none, now)),
            "passcode_required"
        );
        let with = |p| Credentials {
            passcode: Some(p),
            ..Default::default()
        };
        assert_eq!(
            code(decide(&s, &lim, IP, "a", &with("4712"), now)),
            "passcode_wrong"
        );
        assert_eq!(code(decide(&s, &lim, IP, "a", &with(" 4711"), now)), "ok");
        assert_eq!(code(decide(&s, &lim, IP, "b", &none, now)), "ok");

        set_guest_access(&s, false).expect("off");
        assert!(!guest_access(&s));
        assert_eq!(room_access(&s, "b"), "invite");
        assert_eq!(
            code(decide(&s, &lim, IP, "b", &none, now)),
            "invite_required"
        );
        assert_eq!(code(decide(&s, &lim, IP, "a", &with("4711"), now)), "ok");
        let admin = Credentials {
            admin: true,
            ..Default::default()
        };
        assert_eq!(code(decide(&s, &lim, IP, "b", &admin, now)), "ok");

        let (token, id, invite) = create_invite(&s, "b", 2).expect("invite");
        assert_eq!(invite.expires_unix, invite.created_unix + 7200);
        assert!(token.len() >= 40 && !id.is_empty() && !token.starts_with(&id));
        let inv = |t| Credentials {
            invite: Some(t),
            ..Default::default()
        };
        assert_eq!(code(decide(&s, &lim, IP, "b", &inv(&token), now)), "ok");
        assert_eq!(
            code(decide(&s, &lim, IP, "a", &inv(&token), now)),
            "invite_other_room"
        );
        assert_eq!(
            code(decide(&s, &lim, IP, "b", &inv(&token), now + 7200)),
            "invite_expired"
        );
        assert_eq!(
            code(decide(&s, &lim, IP, "b", &inv("nonsense"), now)),
            "invite_invalid"
        );
        assert!(
            !serde_json::to_string(&admin_view(&s))
                .expect("json")
                .contains(&token),
            "the token is never shown again"
        );
        assert!(revoke_invite(&s, &id).expect("revoke"));
        assert!(!revoke_invite(&s, &id).expect("again"));
        assert_eq!(
            code(decide(&s, &lim, IP, "b", &inv(&token), now)),
            "invite_invalid"
        );
        assert!(create_invite(&s, "b", 0).is_err() && create_invite(&s, "b", 24 * 31).is_err());

        set_passcode(&s, "a", "").expect("remove");
        assert_eq!(room_access(&s, "a"), "invite");
    }

    #[test]
    fn wrong_guesses_are_limited_per_address() {
        let (_dir, s) = store();
        let lim = Limiter::default();
        set_passcode(&s, "a", "right").expect("set");
        let wrong = Credentials {
            passcode: Some("wrong"),
            ..Default::default()
        };
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                code(decide(&s, &lim, IP, "a", &wrong, crate::clock::unix_secs())),
                "passcode_wrong"
            );
        }
        let right = Credentials {
            passcode: Some("right"),
            ..Default::default()
        };
        assert_eq!(
            code(decide(&s, &lim, IP, "a", &right, crate::clock::unix_secs())),
            "too_many_attempts"
        );
        let other: IpAddr = "192.0.2.7".parse().expect("ip");
        assert_eq!(
            code(decide(
                &s,
                &lim,
                other,
                "a",
                &right,
                crate::clock::unix_secs()
            )),
            "ok"
        );
    }
}
