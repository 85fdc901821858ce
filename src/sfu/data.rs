//! Data packets: from a participant's data channel to the others in its room.

use super::*;

impl Sfu {
    pub(super) fn on_channel_data(&mut self, peer_id: PeerId, d: ChannelData) {
        let Some(peer) = self.peers.get(&peer_id) else {
            return;
        };
        let pid = peer.owner;
        let reliable = peer.reliable == Some(d.id);
        let packet = match lk::DataPacket::decode(&d.data[..]) {
            Ok(p) => p,
            Err(e) => {
                debug!("data packet that is not a LiveKit DataPacket ignored: {e}");
                return;
            }
        };
        let Some(p) = self.reg.parts.get(&pid) else {
            return;
        };
        if !p.perms.can_publish_data {
            debug!(identity = %p.identity, "data refused: the token does not grant canPublishData");
            return;
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
            self.note_limit(pid, &msg);
            return;
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
        self.deliver_data(Some(pid), &room, packet);
    }

    pub(super) fn deliver_data(&mut self, from: Option<Pid>, room: &str, packet: lk::DataPacket) {
        #[allow(deprecated)]
        let reliable = packet.kind != lk::data_packet::Kind::Lossy as i32;
        let bytes = packet.encode_to_vec();
        for other in self.reg.members(room) {
            if Some(other) == from {
                continue;
            }
            let Some(p) = self.reg.parts.get(&other) else {
                continue;
            };
            if !packet.destination_identities.is_empty()
                && !packet.destination_identities.contains(&p.identity)
            {
                continue;
            }
            let peer_id = p.subscriber;
            let Some(peer) = self.peers.get_mut(&peer_id) else {
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
            self.peers.mark(peer_id);
        }
    }
}
