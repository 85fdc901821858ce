//! Access tokens and API keys, LiveKit-compatible: HS256 JWTs signed with an API secret, `iss` =
//! API key, `sub` = identity, a `video` grant. The device's own key pair is generated on first start
//! and kept in `<state_dir>/keys.toml` (mode 0600) so `confab token` can read it while the daemon
//! holds the sled database.

pub mod admin;
mod keys;

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub use keys::{random_token, ApiKeys, KeyRing, KeysError, KeysOrigin, KEYS_FILE};

/// LiveKit allows one minute of clock difference between token minter and server.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(60);

/// LiveKit's video grant (JSON field names as LiveKit spells them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_create: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_list: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_record: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_admin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_join: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_sources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_update_own_metadata: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorder: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<bool>,
}

/// The claims of a LiveKit access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// API key that signed the token.
    pub iss: String,
    /// Participant identity.
    #[serde(default)]
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub video: VideoGrant,
    /// LiveKit's participant kind: `"agent"` for an agent's job token, else absent or
    /// `"standard"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// LiveKit's `roomConfig` (a `RoomConfiguration` in protobuf JSON), applied when this
    /// token's join creates the room. Kept as JSON here and read by [`Claims::room_config`].
    #[serde(
        default,
        rename = "roomConfig",
        skip_serializing_if = "Option::is_none"
    )]
    pub room_config: Option<serde_json::Value>,
    /// confab's own claim, not LiveKit's: the bearer may download a backup of the device
    /// (`confab backup` while the server runs). No LiveKit SDK mints it, so the admin tokens that
    /// app servers hand around do not carry it.
    #[serde(
        default,
        rename = "confabBackup",
        skip_serializing_if = "Option::is_none"
    )]
    pub backup: Option<bool>,
}

impl Claims {
    /// The token's `roomConfig`, or why it cannot be read.
    pub fn room_config(&self) -> Result<Option<livekit_protocol::RoomConfiguration>, String> {
        match &self.room_config {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => serde_json::from_value(v.clone())
                .map(Some)
                .map_err(|e| format!("the token's roomConfig is not a RoomConfiguration: {e}")),
        }
    }

    /// True for an agent's token (`kind: "agent"`, or the `agent` grant).
    pub fn is_agent(&self) -> bool {
        self.kind.as_deref() == Some("agent") || self.video.agent == Some(true)
    }

    /// True if the token may list rooms or administer them (what `/api/status` asks for).
    pub fn may_list_rooms(&self) -> bool {
        self.video.room_list == Some(true) || self.video.room_admin == Some(true)
    }
}

/// What to put in a new token.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub identity: String,
    pub name: Option<String>,
    pub metadata: Option<String>,
    pub ttl: Duration,
    pub video: VideoGrant,
    pub attributes: Option<BTreeMap<String, String>>,
    /// LiveKit's participant kind (`"agent"` for an agent's job token).
    pub kind: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    #[error("no access token given")]
    Missing,
    #[error("access token is malformed")]
    Malformed,
    #[error("access token was signed with an unknown API key")]
    UnknownKey,
    #[error("access token signature is invalid")]
    BadSignature,
    #[error("access token has expired")]
    Expired,
    #[error("access token is not valid yet")]
    NotYetValid,
    #[error("access token must be signed with HS256")]
    WrongAlgorithm,
    #[error("cannot create token: {0}")]
    Mint(String),
}

/// Signs a token with `key`'s secret.
pub fn mint(keys: &ApiKeys, key: &str, req: &TokenRequest) -> Result<String, AuthError> {
    let secret = keys
        .secret(key)
        .ok_or_else(|| AuthError::Mint(format!("unknown API key {key:?}")))?;
    let now = crate::clock::unix_secs();
    let claims = Claims {
        iss: key.to_string(),
        sub: req.identity.clone(),
        nbf: Some(now),
        exp: now + req.ttl.as_secs(),
        jti: Some(req.identity.clone()),
        name: req.name.clone(),
        metadata: req.metadata.clone(),
        attributes: req.attributes.clone(),
        video: req.video.clone(),
        kind: req.kind.clone(),
        room_config: None,
        backup: None,
    };
    encode(secret, &claims)
}

/// A token for `GET /api/admin/backup` only (no video grant), valid for `ttl`.
pub fn mint_backup(keys: &ApiKeys, key: &str, ttl: Duration) -> Result<String, AuthError> {
    let secret = keys
        .secret(key)
        .ok_or_else(|| AuthError::Mint(format!("unknown API key {key:?}")))?;
    let now = crate::clock::unix_secs();
    let claims = Claims {
        iss: key.to_string(),
        sub: "confab-backup".into(),
        nbf: Some(now),
        exp: now + ttl.as_secs(),
        jti: None,
        name: None,
        metadata: None,
        attributes: None,
        video: VideoGrant::default(),
        kind: None,
        room_config: None,
        backup: Some(true),
    };
    encode(secret, &claims)
}

fn encode(secret: &crate::config::Secret, claims: &Claims) -> Result<String, AuthError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .map_err(|e| AuthError::Mint(e.to_string()))
}

/// Checks signature (with the secret of the key named in `iss`), algorithm, `exp` and `nbf`.
pub fn verify(keys: &ApiKeys, token: &str) -> Result<Claims, AuthError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::Missing);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
    if header.alg != Algorithm::HS256 {
        return Err(AuthError::WrongAlgorithm);
    }
    // The key id is inside the (not yet verified) payload; it only selects which secret to check.
    let unverified = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)
        .map_err(|_| AuthError::Malformed)?;
    let secret = keys
        .secret(&unverified.claims.iss)
        .ok_or(AuthError::UnknownKey)?;
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = CLOCK_LEEWAY.as_secs();
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "iss"]);
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.expose().as_bytes()),
        &validation,
    )
    .map(|data| data.claims)
    .map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
            _ => AuthError::Malformed,
        }
    })
}

/// The token in `Authorization: Bearer <token>`, if any.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

#[cfg(test)]
mod tests;
