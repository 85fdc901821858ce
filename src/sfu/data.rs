//! Data packets: what a participant's data channel sent ([`incoming`]: checked, stamped with
//! its sender), and its delivery to (some of) the others in its room ([`deliver`]).

use livekit_protocol as lk;
use prost::Message as _;
use str0m::channel::ChannelData;
use tracing::debug;

use super::peers::Peers;
use super::registry::Registry;
use super::{limits, PeerId, Pid};

/// What to do with a data channel message.
pub enum Incoming {
    /// Deliver it in `room`, from `from`.
    Deliver {
        from: Pid,
        room: String,
        packet: Box<lk::DataPacket>,
    },
    /// Dropped for a limit; the sender is told `msg`.
    Refused { pid: Pid, msg: String },
    /// Not a LiveKit data packet, or not allowed: dropped.
    Ignored,
}

/// A message on a data channel of `peer_id`.
pub fn incoming(reg: &Registry, peers: &Peers, peer_id: PeerId, d: &ChannelData) -> Incoming {
    let Some(peer) = peers.get(&peer_id) else {
        return Incoming::Ignored;
    };
    let pid = peer.owner;
    let reliable = peer.reliable == Some(d.id);
    let packet = match lk::DataPacket::decode(&d.data[..]) {
        Ok(p) => p,
        Err(e) => {
            debug!("data packet that is not a LiveKit DataPacket ignored: {e}");
            return Incoming::Ignored;
        }
    };
    let Some(p) = reg.parts.get(&pid) else {
        return Incoming::Ignored;
    };
    if !p.perms.can_publish_data {
        debug!(identity = %p.identity, "data refused: the token does not grant canPublishData");
        return Incoming::Ignored;
    }
    let dests = packet
        .destination_identities
        .len()
        .max(match &packet.value {
            Some(lk::data_packet::Value::User(u)) => u.destination_identities.len(),
            _ => 0,
        });
    if dests > limits::MAX_DATA_DESTINATIONS {
        let msg = format!(
            "data packet dropped: {dests} destinations; at most {} are allowed",
            limits::MAX_DATA_DESTINATIONS
        );
        return Incoming::Refused { pid, msg };
    }
    let room = p.room.clone();
    let mut packet = packet;
    packet.participant_identity = p.identity.clone();
    packet.participant_sid = p.sid.clone();
    #[allow(deprecated)]
    {
        packet.kind = if reliable {
            lk::data_packet::Kind::Reliable as i32
        } else {
            lk::data_packet::Kind::Lossy as i32
        };
    }
    if let Some(lk::data_packet::Value::User(u)) = &mut packet.value {
        u.participant_identity = p.identity.clone();
        u.participant_sid = p.sid.clone();
        if packet.destination_identities.is_empty() {
            packet.destination_identities = u.destination_identities.clone();
        }
    }
    Incoming::Deliver {
        from: pid,
        room,
        packet: Box::new(packet),
    }
}

/// Sends `packet` to the room's members (its destinations, if it names any) but `from`; their
/// peers are queued for polling.
pub fn deliver(
    reg: &Registry,
    peers: &mut Peers,
    from: Option<Pid>,
    room: &str,
    packet: &lk::DataPacket,
) {
    #[allow(deprecated)]
    let reliable = packet.kind != lk::data_packet::Kind::Lossy as i32;
    let bytes = packet.encode_to_vec();
    for other in reg.members(room) {
        if Some(other) == from {
            continue;
        }
        let Some(p) = reg.parts.get(&other) else {
            continue;
        };
        if !packet.destination_identities.is_empty()
            && !packet.destination_identities.contains(&p.identity)
        {
            continue;
        }
        let peer_id = p.subscriber;
        let Some(peer) = peers.get_mut(&peer_id) else {
            continue;
        };
        let Some(ch) = peer.data_channel(reliable).or(peer.reliable) else {
            debug!(identity = %p.identity, "data not delivered: no data channel open yet");
            continue;
        };
        if let Some(mut c) = peer.rtc.channel(ch) {
            if let Err(e) = c.write(true, &bytes) {
                debug!("data not delivered: {e}");
            }
        }
        peers.mark(peer_id);
    }
}
