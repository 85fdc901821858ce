//! Twirp request bodies as JSON (what livekit-server-sdk sends) for every RoomService method
//! confab serves. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod seeds;
use livekit_protocol as lk;

fuzz_target!(init: seeds::write(&twirp_seeds()), |data: &[u8]| {
    let _ = serde_json::from_slice::<lk::CreateRoomRequest>(data);
    let _ = serde_json::from_slice::<lk::ListRoomsRequest>(data);
    let _ = serde_json::from_slice::<lk::DeleteRoomRequest>(data);
    let _ = serde_json::from_slice::<lk::ListParticipantsRequest>(data);
    let _ = serde_json::from_slice::<lk::RoomParticipantIdentity>(data);
    let _ = serde_json::from_slice::<lk::MuteRoomTrackRequest>(data);
    let _ = serde_json::from_slice::<lk::UpdateParticipantRequest>(data);
    let _ = serde_json::from_slice::<lk::UpdateSubscriptionsRequest>(data);
    let _ = serde_json::from_slice::<lk::SendDataRequest>(data);
    let _ = serde_json::from_slice::<lk::UpdateRoomMetadataRequest>(data);
});

/// Bodies as livekit-server-sdk sends them.
fn twirp_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"name":"standup","emptyTimeout":300,"maxParticipants":20,"metadata":"{}"}"#,
        r#"{"names":["standup"]}"#,
        r#"{"room":"standup"}"#,
        r#"{"room":"standup","identity":"alice"}"#,
        r#"{"room":"standup","identity":"alice","trackSid":"TR_x","muted":true}"#,
        r#"{"room":"standup","identity":"alice","metadata":"m","permission":{"canPublish":true,"canSubscribe":true},"name":"Alice","attributes":{"k":"v"}}"#,
        r#"{"room":"standup","identity":"alice","trackSids":["TR_x"],"subscribe":true}"#,
        r#"{"room":"standup","data":"aGk=","kind":"RELIABLE","destinationIdentities":["bob"],"topic":"chat"}"#,
        r#"{"room":"standup","metadata":"{\"agenda\":1}"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
