//! The v1 `join_request` URL parameter: base64url of a `WrappedJoinRequest`, maybe gzipped.
//! Must never panic or allocate without bound (the decompressed size is capped).
#![no_main]

use libfuzzer_sys::fuzz_target;

mod seeds;

fuzz_target!(init: seeds::write(&join_request_seeds()), |data: &[u8]| {
    if let Ok(param) = std::str::from_utf8(data) {
        let _ = confab::signal::ws::decode_join_request(param);
    }
});

/// A `WrappedJoinRequest` as livekit-client 2.x sends it (uncompressed), base64url.
fn join_request_seeds() -> Vec<Vec<u8>> {
    use base64::Engine as _;
    use prost::Message as _;
    let join = livekit_protocol::JoinRequest {
        client_info: Some(livekit_protocol::ClientInfo {
            sdk: livekit_protocol::client_info::Sdk::Js as i32,
            version: "2.23.0".into(),
            protocol: 16,
            ..Default::default()
        }),
        ..Default::default()
    };
    let wrapped = livekit_protocol::WrappedJoinRequest {
        join_request: join.encode_to_vec(),
        ..Default::default()
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(wrapped.encode_to_vec());
    vec![b64.into_bytes(), b"AAAA".to_vec()]
}
