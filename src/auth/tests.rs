#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::Secret;

fn keys() -> ApiKeys {
    ApiKeys::from_map(
        [
            ("APIone".to_string(), Secret::new("a".repeat(40))),
            ("APItwo".to_string(), Secret::new("b".repeat(40))),
        ]
        .into_iter()
        .collect(),
    )
}

fn request() -> TokenRequest {
    TokenRequest {
        identity: "alice".into(),
        name: Some("Alice".into()),
        ttl: Duration::from_secs(600),
        video: VideoGrant {
            room_join: Some(true),
            room: Some("standup".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn minted_token_verifies_with_the_right_key() {
    let k = keys();
    for key in ["APIone", "APItwo"] {
        let t = mint(&k, key, &request()).unwrap();
        let c = verify(&k, &t).unwrap();
        assert_eq!(c.iss, key);
        assert_eq!(c.sub, "alice");
        assert_eq!(c.video.room.as_deref(), Some("standup"));
        assert!(c.exp > c.nbf.unwrap());
    }
}

#[test]
fn grant_json_uses_livekit_field_names() {
    let t = mint(&keys(), "APIone", &request()).unwrap();
    let payload = t.split('.').nth(1).unwrap();
    let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&t)
        .unwrap()
        .claims;
    assert_eq!(claims["video"]["roomJoin"], true, "{payload}");
    assert_eq!(claims["video"]["room"], "standup");
    assert!(
        claims["video"].get("canPublish").is_none(),
        "unset grants are omitted"
    );
}

#[test]
fn tampering_expiry_and_unknown_keys_are_rejected() {
    let k = keys();
    let t = mint(&k, "APIone", &request()).unwrap();
    // Signed by a key this server does not know.
    let other = ApiKeys::from_map(
        [("APIzzz".to_string(), Secret::new("z".repeat(40)))]
            .into_iter()
            .collect(),
    );
    let foreign = mint(&other, "APIzzz", &request()).unwrap();
    assert_eq!(verify(&k, &foreign), Err(AuthError::UnknownKey));
    // Same key id, wrong secret.
    let forged_keys = ApiKeys::from_map(
        [("APIone".to_string(), Secret::new("x".repeat(40)))]
            .into_iter()
            .collect(),
    );
    let forged = mint(&forged_keys, "APIone", &request()).unwrap();
    assert_eq!(verify(&k, &forged), Err(AuthError::BadSignature));
    // Garbage and empty.
    assert_eq!(verify(&k, "not.a.jwt"), Err(AuthError::Malformed));
    assert_eq!(verify(&k, ""), Err(AuthError::Missing));
    assert_eq!(verify(&k, &t[..t.len() - 3]), Err(AuthError::BadSignature));
}

#[test]
fn expiry_allows_one_minute_of_clock_skew() {
    let k = keys();
    let sign = |exp: u64, nbf: u64| {
        let claims = Claims {
            iss: "APIone".into(),
            sub: "bob".into(),
            nbf: Some(nbf),
            exp,
            jti: None,
            name: None,
            metadata: None,
            attributes: None,
            video: VideoGrant::default(),
            kind: None,
            room_config: None,
            backup: None,
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret("a".repeat(40).as_bytes()),
        )
        .unwrap()
    };
    let now = crate::clock::unix_secs();
    assert!(
        verify(&k, &sign(now - 30, now - 600)).is_ok(),
        "within leeway"
    );
    assert_eq!(
        verify(&k, &sign(now - 120, now - 600)),
        Err(AuthError::Expired)
    );
    assert_eq!(
        verify(&k, &sign(now + 600, now + 300)),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn other_algorithms_are_refused() {
    let claims =
        serde_json::json!({"iss": "APIone", "sub": "x", "exp": crate::clock::unix_secs() + 60});
    let t = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims,
        &EncodingKey::from_secret("a".repeat(40).as_bytes()),
    )
    .unwrap();
    assert_eq!(verify(&keys(), &t), Err(AuthError::WrongAlgorithm));
}

#[test]
fn bearer_header_parsing() {
    assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
    assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
    assert_eq!(bearer(Some("Basic abc")), None);
    assert_eq!(bearer(None), None);
}

#[test]
fn device_keys_are_generated_once_private_and_random() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::config::Config::from_layers(&[], &crate::config::Env::new()).unwrap();
    config.state_dir = dir.path().to_path_buf();
    let (first, origin) = ApiKeys::load(&config, true).unwrap();
    assert!(matches!(origin, keys::KeysOrigin::Generated(_)));
    let path = dir.path().join(KEYS_FILE);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (again, origin) = ApiKeys::load(&config, false).unwrap();
    assert!(matches!(origin, keys::KeysOrigin::DeviceFile(_)));
    assert_eq!(first.names(), again.names());
    assert_eq!(first.primary().unwrap().1, again.primary().unwrap().1);
    // Another device gets other keys.
    let other = tempfile::tempdir().unwrap();
    config.state_dir = other.path().to_path_buf();
    let (second, _) = ApiKeys::load(&config, true).unwrap();
    assert_ne!(first.primary().unwrap().1, second.primary().unwrap().1);
    assert!(second.primary().unwrap().1.expose().len() >= 32);
}

#[test]
fn missing_device_keys_without_create_explain_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::config::Config::from_layers(&[], &crate::config::Env::new()).unwrap();
    config.state_dir = dir.path().to_path_buf();
    let err = ApiKeys::load(&config, false).unwrap_err().to_string();
    assert!(err.contains("start `confab serve` once"), "{err}");
}

#[test]
fn rotation_replaces_the_device_key_on_disk_and_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::config::Config::from_layers(&[], &crate::config::Env::new()).unwrap();
    config.state_dir = dir.path().to_path_buf();
    let (device, origin) = ApiKeys::load(&config, true).unwrap();
    let ring = KeyRing::new(device, &origin);
    let shared = ring.clone();
    let before = ring.current();
    let (old_key, _) = before.primary().unwrap();
    let old_token = mint(&before, old_key, &request()).unwrap();
    let new_key = ring.rotate().unwrap();
    assert_ne!(new_key, old_key);
    let now = ring.current();
    assert_eq!(
        now.names(),
        vec![new_key.as_str()],
        "the old key is gone at once"
    );
    assert_eq!(
        shared.current().names(),
        now.names(),
        "clones share the keys"
    );
    assert_eq!(verify(&now, &old_token), Err(AuthError::UnknownKey));
    let new_token = mint(&now, &new_key, &request()).unwrap();
    assert!(verify(&now, &new_token).is_ok());
    // `confab token` (which reads the file) gets the new key too.
    let (from_file, _) = ApiKeys::load(&config, false).unwrap();
    assert_eq!(from_file.primary().unwrap().1, now.primary().unwrap().1);

    // Configured keys are the operator's: not rotated from the UI.
    let ring = KeyRing::new(keys(), &keys::KeysOrigin::Config);
    assert!(ring.file().is_none());
    assert!(ring
        .rotate()
        .unwrap_err()
        .to_string()
        .contains("configuration"));
}
