//! The `Authorization` header of a webhook request, as LiveKit's `webhook.URLNotifier` makes it:
//! a bare HS256 JWT (no `Bearer`) from the signing key's secret with `iss` = the key, `sha256` =
//! standard, padded base64 of the body's SHA-256, and `iat`/`nbf`/`exp` (5 minutes). Receivers
//! (`WebhookReceiver` in every LiveKit server SDK) check the signature, then compare `sha256`
//! with the body they got.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tracing::warn;

use crate::auth::KeyRing;

/// How long a signature is valid (LiveKit: `SetValidFor(5 * time.Minute)`).
pub const TOKEN_VALIDITY: Duration = Duration::from_secs(5 * 60);

/// The claims of a webhook signature. Names as in livekit/protocol's `auth.ClaimGrants`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WebhookClaims {
    pub iss: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub sha256: String,
}

/// Base64 (standard alphabet, padded) of the SHA-256 of `body`.
pub fn body_sha256(body: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

/// Signs webhook bodies with the current secret of one API key (or the first key).
#[derive(Debug)]
pub struct Signer {
    keys: KeyRing,
    /// `webhook.api_key`; `None`: the first key of the ring, whatever it is now.
    key: Option<String>,
    warned_missing: AtomicBool,
}

impl Signer {
    pub fn new(keys: KeyRing, key: Option<String>) -> Signer {
        Signer {
            keys,
            key,
            warned_missing: AtomicBool::new(false),
        }
    }

    /// The key that signs now (for the startup log): never a secret.
    pub fn key_name(&self) -> Option<String> {
        let keys = self.keys.current();
        match &self.key {
            Some(k) if keys.secret(k).is_some() => Some(k.clone()),
            _ => keys.primary().map(|(k, _)| k.to_string()),
        }
    }

    /// The `Authorization` value for `body`, read from the keys as they are now (the device key
    /// may have been rotated since start-up).
    pub fn sign(&self, body: &[u8]) -> Result<String, String> {
        let keys = self.keys.current();
        let named = self
            .key
            .as_deref()
            .and_then(|k| keys.secret(k).map(|s| (k, s)));
        let (key, secret) = match (named, &self.key) {
            (Some(pair), _) => pair,
            (None, configured) => {
                if let Some(k) = configured {
                    // Only a rotated device key can disappear; its successor signs instead.
                    if !self.warned_missing.swap(true, Ordering::Relaxed) {
                        warn!(api_key = %k, "webhook.api_key is no longer a key of this server \
                              (rotated?); signing webhooks with the current key instead");
                    }
                }
                keys.primary().ok_or("no API key to sign webhooks with")?
            }
        };
        let now = crate::clock::unix_secs();
        let claims = WebhookClaims {
            iss: key.to_string(),
            iat: now,
            nbf: now,
            exp: now + TOKEN_VALIDITY.as_secs(),
            sha256: body_sha256(body),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.expose().as_bytes()),
        )
        .map_err(|e| format!("cannot sign the webhook: {e}"))
    }
}
