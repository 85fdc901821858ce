//! TURN credentials in the "TURN REST API" style that coturn, LiveKit and every WebRTC client
//! know: the username is `<expiry, unix seconds>:<identity>`, the password is
//! base64(HMAC-SHA1(key, username)). Nothing is stored per credential: the server recomputes the
//! password from the username, so a credential cannot outlive its expiry and cannot be made
//! without the key. The key is random per process (a restart ends every relay allocation anyway,
//! and every client then rejoins and is handed new credentials).

use aws_lc_rs::hmac;
use base64::Engine;

/// The longest identity kept in a username (STUN allows 513 bytes; names only need to tell
/// users apart for the per-user allocation cap).
const MAX_IDENTITY: usize = 128;

/// Why a username was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not `<digits>:<identity>`.
    Malformed,
    /// Its expiry has passed.
    Expired,
}

/// Makes and checks credentials.
pub struct Issuer {
    key: hmac::Key,
    ttl_secs: u64,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never printed.
        f.debug_struct("Issuer")
            .field("ttl_secs", &self.ttl_secs)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// An issuer with a fresh random key; credentials valid for `ttl_secs`.
    pub fn random(ttl_secs: u64) -> Result<Issuer, getrandom::Error> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(Issuer::with_key(&key, ttl_secs))
    }

    pub fn with_key(key: &[u8], ttl_secs: u64) -> Issuer {
        Issuer {
            // SHA-1 is what the scheme (and coturn) use for this HMAC; it is a MAC, not a hash
            // relied on for collision resistance.
            key: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key),
            ttl_secs,
        }
    }

    /// A username and password for `identity`, valid from `now_unix` for the issuer's TTL.
    pub fn issue(&self, identity: &str, now_unix: u64) -> (String, String) {
        let mut end = identity.len().min(MAX_IDENTITY);
        while !identity.is_char_boundary(end) {
            end -= 1;
        }
        let username = format!("{}:{}", now_unix + self.ttl_secs, &identity[..end]);
        let password = self.sign(&username);
        (username, password)
    }

    /// The password of `username`, if it is well formed and not expired at `now_unix`.
    pub fn password(&self, username: &str, now_unix: u64) -> Result<String, Refusal> {
        let (expiry, _identity) = split(username).ok_or(Refusal::Malformed)?;
        if expiry < now_unix {
            return Err(Refusal::Expired);
        }
        Ok(self.sign(username))
    }

    fn sign(&self, username: &str) -> String {
        let tag = hmac::sign(&self.key, username.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    }
}

/// `<expiry>:<identity>` → (expiry, identity).
pub fn split(username: &str) -> Option<(u64, &str)> {
    let (expiry, identity) = username.split_once(':')?;
    if expiry.is_empty() || expiry.len() > 20 || !expiry.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((expiry.parse().ok()?, identity))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_credential_checks_until_it_expires_and_only_with_its_key() {
        let issuer = Issuer::with_key(b"k1", 600);
        let (user, pass) = issuer.issue("alice", 1_000);
        assert_eq!(user, "1600:alice");
        assert_eq!(issuer.password(&user, 1_599), Ok(pass.clone()));
        assert_eq!(issuer.password(&user, 1_600), Ok(pass.clone()));
        assert_eq!(issuer.password(&user, 1_601), Err(Refusal::Expired));
        // Another key (another server, or a forger) makes another password.
        let other = Issuer::with_key(b"k2", 600);
        assert_ne!(other.password(&user, 1_000).unwrap(), pass);
        // The expiry is covered by the MAC: moving it changes the password.
        assert_ne!(issuer.password("9999:alice", 1_000).unwrap(), pass);
    }

    #[test]
    fn malformed_usernames_are_refused_and_long_identities_cut() {
        let issuer = Issuer::with_key(b"k", 60);
        for bad in [
            "alice",
            ":alice",
            "12a:alice",
            "-1:x",
            "99999999999999999999999:x",
        ] {
            assert_eq!(issuer.password(bad, 0), Err(Refusal::Malformed), "{bad}");
        }
        let (user, _) = issuer.issue(&"é".repeat(200), 0);
        let (_, identity) = split(&user).unwrap();
        assert!(identity.len() <= MAX_IDENTITY, "{}", identity.len());
        assert!(identity.chars().all(|c| c == 'é'));
    }
}
