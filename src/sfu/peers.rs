//! The SFU's PeerConnections as a set: each [`Peer`] by id, which peer a network 5-tuple
//! belongs to (learnt from the first datagram a peer's `Rtc` accepts), and the queue of peers
//! that got input and are to be polled.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::net::Protocol;
use str0m::Input;

use super::peer::Peer;
use super::{FastMap, PeerId, Pid};

/// A datagram's route: protocol, remote address, local address.
pub type RouteKey = (Protocol, SocketAddr, SocketAddr);

#[derive(Default)]
pub struct Peers {
    /// Boxed: an `Rtc` is ≈ 10 KB, and a map's spare slots would hold that much each.
    pub(super) map: FastMap<PeerId, Box<Peer>>,
    /// Keyed by what the network sends: SipHash, not foldhash.
    routes: HashMap<RouteKey, PeerId>,
    /// Peers to poll (a stack; forwarding queues a peer once, by its `queued` flag).
    pub(super) dirty: Vec<PeerId>,
}

impl Peers {
    pub fn get(&self, id: &PeerId) -> Option<&Peer> {
        self.map.get(id).map(|p| &**p)
    }

    pub fn get_mut(&mut self, id: &PeerId) -> Option<&mut Peer> {
        self.map.get_mut(id).map(|p| &mut **p)
    }

    pub fn insert(&mut self, id: PeerId, peer: Peer) {
        self.map.insert(id, Box::new(peer));
    }

    /// Removes a peer and its routes.
    pub fn remove(&mut self, id: &PeerId) -> Option<Box<Peer>> {
        self.routes.retain(|_, v| v != id);
        self.map.remove(id)
    }

    /// The peer a datagram on `key` is for: the known route, else the peer whose `Rtc`
    /// accepts `input` (then remembered).
    pub fn route(&mut self, key: RouteKey, input: &Input) -> Option<PeerId> {
        if let Some(id) = self.routes.get(&key) {
            return Some(*id);
        }
        let found = self
            .map
            .iter()
            .find(|(_, p)| p.rtc.accepts(input))
            .map(|(id, _)| *id);
        if let Some(id) = found {
            self.routes.insert(key, id);
        }
        found
    }

    /// The earliest instant a peer's str0m wants to be polled.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.map.values().map(|p| p.timeout).min()
    }

    /// The peers whose str0m timer is due at `now`.
    pub fn due(&self, now: Instant) -> Vec<PeerId> {
        self.map
            .iter()
            .filter(|(_, p)| p.timeout <= now)
            .map(|(id, _)| *id)
            .collect()
    }

    /// When the oldest unanswered offer times out (`timeout` after it went out).
    pub fn next_offer_timeout(&self, timeout: Duration) -> Option<Instant> {
        self.map
            .values()
            .filter_map(|p| p.offered_at.map(|t| t + timeout))
            .min()
    }

    /// The owners of peers whose offer has waited `timeout` for an answer by `now`.
    pub fn unanswered(&self, now: Instant, timeout: Duration) -> Vec<Pid> {
        self.map
            .values()
            .filter(|p| {
                p.offered_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
            })
            .map(|p| p.owner)
            .collect()
    }

    /// Queues a peer for polling.
    pub fn mark(&mut self, id: PeerId) {
        self.dirty.push(id);
    }

    /// The next peer to poll.
    pub fn next_dirty(&mut self) -> Option<PeerId> {
        let id = self.dirty.pop()?;
        if let Some(peer) = self.map.get_mut(&id) {
            peer.queued = false;
        }
        Some(id)
    }

    /// Whether peers wait to be polled.
    pub fn any_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }
}

/// For tests, which know their peers (a missing one panics).
#[cfg(test)]
impl std::ops::Index<&PeerId> for Peers {
    type Output = Peer;

    fn index(&self, id: &PeerId) -> &Peer {
        &self.map[id]
    }
}
