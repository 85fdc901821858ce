//! Access tokens: whatever arrives as `access_token` or `Authorization: Bearer` goes through
//! the same verification as a join. Must never panic; a forged token must never verify.
#![no_main]

use std::collections::BTreeMap;

use confab::auth::{self, ApiKeys};
use confab::config::Secret;
use libfuzzer_sys::fuzz_target;

mod seeds;

fuzz_target!(init: seeds::write(&token_seeds()), |data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let keys = ApiKeys::from_map(BTreeMap::from([(
        "APIfuzz".to_string(),
        Secret::new("f".repeat(40)),
    )]));
    let _ = auth::verify(&keys, token);
});

/// A real token minted for the fuzz key (it verifies), one for another key, and junk.
fn token_seeds() -> Vec<Vec<u8>> {
    use confab::auth::{mint, TokenRequest, VideoGrant};
    let keys = ApiKeys::from_map(BTreeMap::from([(
        "APIfuzz".to_string(),
        Secret::new("f".repeat(40)),
    )]));
    let good = mint(
        &keys,
        "APIfuzz",
        &TokenRequest {
            identity: "alice".into(),
            ttl: std::time::Duration::from_secs(600),
            video: VideoGrant {
                room_join: Some(true),
                room: Some("standup".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap_or_default();
    vec![good.into_bytes(), b"eyJhbGciOiJIUzI1NiJ9.e30.x".to_vec()]
}
