//! The TURN server's protocol state (RFC 8656), sans-IO: messages from clients and datagrams
//! from peers go in, what to send (and which relay sockets to close) comes out. Sockets, TLS and
//! timers are `io.rs`'s. STUN and TURN messages are parsed, built and signed by `turn-types` /
//! `stun-types`; this file holds what confab decides: who may allocate, where a relay may send
//! (only to confab's own media ports), how much, and for how long.

use std::collections::HashMap;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::hmac;
use turn_types::attribute::{
    ChannelNumber, Data as DataAttr, Lifetime, RequestedAddressFamily, RequestedTransport,
    XorPeerAddress, XorRelayedAddress,
};
use turn_types::channel::ChannelData;
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};
use turn_types::stun::attribute::{
    ErrorCode, MessageIntegrity, MessageIntegritySha256, Nonce, Realm, Software, UnknownAttributes,
    Username, XorMappedAddress,
};
use turn_types::stun::message::{
    IntegrityAlgorithm, IntegrityKey, LongTermKeyCredentials, Message, MessageClass,
    MessageIntegrityCredentials, MessageWriteExt, MessageWriteVec, BINDING,
};
use turn_types::stun::prelude::*;
use turn_types::AddressFamily;

use super::creds::{self, Issuer};

/// How long a permission and a channel binding last without a refresh (RFC 8656 §9, §12).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// How long a nonce is accepted before a client must take a new one (438 Stale Nonce).
const NONCE_LIFETIME: Duration = Duration::from_secs(3600);
/// Permissions and channels one allocation may hold (a WebRTC client needs a few: one per
/// remote candidate address).
const MAX_PERMISSIONS: usize = 64;
const MAX_CHANNELS: usize = 64;

/// Caps on what clients may hold. `Default` is the shipped configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Allocations at once, in all.
    pub total: usize,
    /// Allocations at once under one username identity (one participant: a few per peer
    /// connection and transport).
    pub per_user: usize,
    /// Allocations at once from one client IP address.
    pub per_address: usize,
    /// Bytes per second through one allocation, both directions together (1 s of burst).
    pub bytes_per_second: u64,
    pub default_lifetime: Duration,
    pub max_lifetime: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            total: 2000,
            // A participant takes about 4 per peer connection (UDP and TLS, one per local
            // interface of the client), 8 with two peer connections.
            per_user: 32,
            // Generous: an office behind one NAT address is many participants.
            per_address: 256,
            // 20 Mbit/s: a camera, a screen share and a meeting's worth of received video.
            bytes_per_second: 2_500_000,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
        }
    }
}

/// Where relayed data may go: confab's own media ports, nothing else (no open relay into the
/// network the server sits in).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    peers: HashSet<SocketAddr>,
    ips: HashSet<IpAddr>,
}

impl Policy {
    pub fn new(peers: impl IntoIterator<Item = SocketAddr>) -> Policy {
        let peers: HashSet<SocketAddr> = peers
            .into_iter()
            .map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()))
            .collect();
        let ips = peers.iter().map(|a| a.ip()).collect();
        Policy { peers, ips }
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.ips.contains(&ip.to_canonical())
    }

    pub fn allows(&self, peer: SocketAddr) -> bool {
        self.peers
            .contains(&SocketAddr::new(peer.ip().to_canonical(), peer.port()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    /// TCP or TLS (the same framing once decrypted).
    Tcp,
}

/// A client's 5-tuple: how it reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub transport: Transport,
    pub client: SocketAddr,
    /// The server's own address the client reached (a concrete address, not a wildcard).
    pub server: SocketAddr,
}

/// What the I/O layer is asked to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    /// Send to a client over its 5-tuple.
    Client(Tuple, Vec<u8>),
    /// Send from a relay socket to a peer.
    Peer {
        relay: SocketAddr,
        peer: SocketAddr,
        data: Vec<u8>,
    },
    /// The allocation behind this relay socket ended: close it.
    CloseRelay(SocketAddr),
    /// A TCP/TLS client's allocation ended: close its connection.
    CloseClient(Tuple),
}

/// Opens relay sockets (the I/O layer's, or a fake in tests).
pub trait Relays {
    /// Binds a UDP socket on `ip` (any port) and returns its address.
    fn open(&mut self, ip: IpAddr) -> std::io::Result<SocketAddr>;
}

/// Counters for `/metrics` and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocations: u64,
    pub allocations_total: u64,
    /// Requests refused: bad or missing credentials (401), stale nonce not counted.
    pub refused_credentials: u64,
    /// Permissions or channels refused because the peer is not one of confab's media ports.
    pub refused_peers: u64,
    /// Allocations refused by a cap (486 / 508).
    pub refused_quota: u64,
    pub relayed_bytes: u64,
    /// Data dropped: over the bandwidth cap, no permission, or not a confab media port.
    pub dropped_bytes: u64,
    pub malformed: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant, rate: u64, n: usize) -> bool {
        let rate = rate as f64;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.at = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Allocation {
    relay: SocketAddr,
    username: String,
    identity: String,
    expires: Instant,
    permissions: HashMap<IpAddr, Instant>,
    /// channel number → (peer, expiry); and the reverse.
    channels: HashMap<u16, (SocketAddr, Instant)>,
    channel_of: HashMap<SocketAddr, u16>,
    bucket: Bucket,
    /// The Allocate that made it and the answer, for a retransmitted request.
    made_by: ([u8; 12], Vec<u8>),
}

impl Allocation {
    fn permitted(&self, now: Instant, ip: IpAddr) -> bool {
        self.permissions
            .get(&ip.to_canonical())
            .is_some_and(|t| *t > now)
    }
}

/// An authenticated request's key and algorithm (to sign the answer) and username.
struct Authed {
    key: IntegrityKey,
    algorithm: IntegrityAlgorithm,
    username: String,
}

type Answer = Result<Vec<u8>, Vec<u8>>;

/// The server state.
pub struct Server {
    realm: String,
    issuer: Arc<Issuer>,
    policy: Policy,
    limits: Limits,
    epoch: Instant,
    unix_at_epoch: u64,
    nonce_key: hmac::Key,
    allocs: HashMap<Tuple, Allocation>,
    by_relay: HashMap<SocketAddr, Tuple>,
    per_user: HashMap<String, usize>,
    per_address: HashMap<IpAddr, usize>,
    stats: Stats,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("realm", &self.realm)
            .field("allocations", &self.allocs.len())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// `unix_now` is the wall clock at `now` (credentials carry unix expiries).
    pub fn new(
        realm: &str,
        issuer: Arc<Issuer>,
        policy: Policy,
        limits: Limits,
        now: Instant,
        unix_now: u64,
        nonce_key: &[u8],
    ) -> Server {
        Server {
            realm: realm.to_string(),
            issuer,
            policy,
            limits,
            epoch: now,
            unix_at_epoch: unix_now,
            nonce_key: hmac::Key::new(hmac::HMAC_SHA256, nonce_key),
            allocs: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            per_address: HashMap::new(),
            stats: Stats::default(),
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            allocations: self.allocs.len() as u64,
            ..self.stats
        }
    }

    fn unix(&self, now: Instant) -> u64 {
        self.unix_at_epoch + now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Bytes from a client (one datagram, or one framed message of a TCP stream).
    pub fn from_client(
        &mut self,
        now: Instant,
        tuple: Tuple,
        data: &[u8],
        relays: &mut dyn Relays,
        out: &mut Vec<Out>,
    ) {
        match data.first().map(|b| b >> 6) {
            Some(0) => self.stun(now, tuple, data, relays, out),
            Some(1) => self.channel_data(now, tuple, data, out),
            _ => self.stats.malformed += 1,
        }
    }

    fn stun(
        &mut self,
        now: Instant,
        tuple: Tuple,
        data: &[u8],
        relays: &mut dyn Relays,
        out: &mut Vec<Out>,
    ) {
        let Ok(msg) = Message::from_bytes(data) else {
            self.stats.malformed += 1;
            return;
        };
        let answer = match (msg.class(), msg.method()) {
            (MessageClass::Request, BINDING) => Ok(binding(&msg, tuple.client)),
            (MessageClass::Request, ALLOCATE) => self.allocate(now, tuple, &msg, relays),
            (MessageClass::Request, REFRESH) => self.refresh(now, tuple, &msg, out),
            (MessageClass::Request, CREATE_PERMISSION) => self.create_permission(now, tuple, &msg),
            (MessageClass::Request, CHANNEL_BIND) => self.channel_bind(now, tuple, &msg),
            (MessageClass::Indication, SEND) => return self.send(now, tuple, &msg, out),
            (MessageClass::Request, _) => Err(error(&msg, ErrorCode::BAD_REQUEST, None)),
            // Answers and other indications are not for a server.
            _ => return,
        };
        let bytes = answer.unwrap_or_else(|e| e);
        out.push(Out::Client(tuple, bytes));
    }

    /// The long-term credential check (RFC 8489 §9.2): the answer to send when it fails.
    fn authenticate(
        &mut self,
        now: Instant,
        tuple: Tuple,
        msg: &Message,
    ) -> Result<Authed, Vec<u8>> {
        let has_integrity = msg.has_attribute(MessageIntegrity::TYPE)
            || msg.has_attribute(MessageIntegritySha256::TYPE);
        if !has_integrity {
            return Err(self.challenge(now, tuple, msg, ErrorCode::UNAUTHORIZED));
        }
        let (Ok(username), Ok(realm), Ok(nonce)) = (
            msg.attribute::<Username>(),
            msg.attribute::<Realm>(),
            msg.attribute::<Nonce>(),
        ) else {
            return Err(error(msg, ErrorCode::BAD_REQUEST, None));
        };
        if !self.nonce_valid(now, tuple.client.ip(), nonce.nonce()) {
            return Err(self.challenge(now, tuple, msg, ErrorCode::STALE_NONCE));
        }
        let refused = |s: &mut Server| {
            s.stats.refused_credentials += 1;
            s.challenge(now, tuple, msg, ErrorCode::UNAUTHORIZED)
        };
        if realm.realm() != self.realm {
            return Err(refused(self));
        }
        let name = username.username().to_string();
        let Ok(password) = self.issuer.password(&name, self.unix(now)) else {
            return Err(refused(self));
        };
        let credentials: MessageIntegrityCredentials =
            LongTermKeyCredentials::new(name.clone(), password, self.realm.clone()).into();
        let Ok(algorithm) = msg.validate_integrity(&credentials) else {
            return Err(refused(self));
        };
        let key = credentials.make_key(algorithm);
        Ok(Authed {
            key,
            algorithm,
            username: name,
        })
    }

    /// 401 or 438 with the realm and a fresh nonce.
    fn challenge(&self, now: Instant, tuple: Tuple, msg: &Message, code: u16) -> Vec<u8> {
        let nonce = self.nonce(now, tuple.client.ip());
        let mut b = Message::builder_error(msg, MessageWriteVec::new());
        let attrs = (
            ErrorCode::builder(code).build(),
            Realm::new(&self.realm),
            Nonce::new(&nonce),
        );
        if let (Ok(e), Ok(r), Ok(n)) = attrs {
            let _ = b.add_attribute(&e);
            let _ = b.add_attribute(&r);
            let _ = b.add_attribute(&n);
        }
        let _ = b.add_fingerprint();
        b.finish()
    }

    /// A stateless nonce: its expiry (seconds since the server started) and a MAC over it and
    /// the client's address.
    fn nonce(&self, now: Instant, ip: IpAddr) -> String {
        let expiry = (now.saturating_duration_since(self.epoch) + NONCE_LIFETIME).as_secs();
        format!("{expiry:x}-{}", self.nonce_mac(expiry, ip))
    }

    fn nonce_mac(&self, expiry: u64, ip: IpAddr) -> String {
        let mut ctx = hmac::Context::with_key(&self.nonce_key);
        ctx.update(&expiry.to_be_bytes());
        ctx.update(ip.to_canonical().to_string().as_bytes());
        let tag = ctx.sign();
        tag.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn nonce_valid(&self, now: Instant, ip: IpAddr, nonce: &str) -> bool {
        let Some((expiry, mac)) = nonce.split_once('-') else {
            return false;
        };
        let Ok(expiry) = u64::from_str_radix(expiry, 16) else {
            return false;
        };
        let age = now.saturating_duration_since(self.epoch).as_secs();
        expiry >= age
            && aws_lc_rs::constant_time::verify_slices_are_equal(
                mac.as_bytes(),
                self.nonce_mac(expiry, ip).as_bytes(),
            )
            .is_ok()
    }

    /// Comprehension-required attributes this server does not know: 420 names them.
    fn unknown(msg: &Message, authed: &Authed) -> Option<Vec<u8>> {
        let known = [
            Username::TYPE,
            Realm::TYPE,
            Nonce::TYPE,
            MessageIntegrity::TYPE,
            MessageIntegritySha256::TYPE,
            RequestedTransport::TYPE,
            RequestedAddressFamily::TYPE,
            Lifetime::TYPE,
            XorPeerAddress::TYPE,
            ChannelNumber::TYPE,
            turn_types::attribute::DontFragment::TYPE,
            turn_types::attribute::EvenPort::TYPE,
        ];
        let unknown: Vec<_> = msg
            .iter_attributes()
            .map(|(_, a)| a.get_type())
            .filter(|t| t.comprehension_required() && !known.contains(t))
            .collect();
        if unknown.is_empty() {
            return None;
        }
        let mut b = Message::builder_error(msg, MessageWriteVec::new());
        if let Ok(e) = ErrorCode::builder(ErrorCode::UNKNOWN_ATTRIBUTE).build() {
            let _ = b.add_attribute(&e);
        }
        let _ = b.add_attribute(&UnknownAttributes::new(&unknown));
        Some(sign(b, authed))
    }

    fn allocate(
        &mut self,
        now: Instant,
        tuple: Tuple,
        msg: &Message,
        relays: &mut dyn Relays,
    ) -> Answer {
        let authed = self.authenticate(now, tuple, msg)?;
        if let Some(a) = self.allocs.get(&tuple) {
            // A retransmission of the Allocate that made it gets the same answer.
            if a.made_by.0 == transaction(msg) {
                return Ok(a.made_by.1.clone());
            }
            return Err(error(msg, ErrorCode::ALLOCATION_MISMATCH, Some(&authed)));
        }
        if let Some(e) = Self::unknown(msg, &authed) {
            return Err(e);
        }
        match msg.attribute::<RequestedTransport>() {
            Ok(t) if t.protocol() == RequestedTransport::UDP => {}
            Ok(_) => {
                let code = ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL;
                return Err(error(msg, code, Some(&authed)));
            }
            Err(_) => return Err(error(msg, ErrorCode::BAD_REQUEST, Some(&authed))),
        }
        let family = match tuple.server.ip() {
            IpAddr::V4(_) => AddressFamily::IPV4,
            IpAddr::V6(_) => AddressFamily::IPV6,
        };
        if let Ok(f) = msg.attribute::<RequestedAddressFamily>() {
            if f.family() != family {
                let code = ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED;
                return Err(error(msg, code, Some(&authed)));
            }
        }
        // The identity the per-user cap counts (authenticated usernames always split).
        let identity = creds::split(&authed.username)
            .map(|(_, i)| i.to_string())
            .unwrap_or_default();
        self.within_quota(tuple, &identity, &authed, msg)?;
        let relay = relays.open(tuple.server.ip()).map_err(|e| {
            tracing::warn!(error = %e, "TURN: cannot open a relay socket");
            error(msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(&authed))
        })?;
        let lifetime = self.lifetime(msg, self.limits.default_lifetime);
        let answer = allocated(msg, &authed, relay, tuple.client, lifetime);
        *self.per_user.entry(identity.clone()).or_default() += 1;
        *self.per_address.entry(tuple.client.ip()).or_default() += 1;
        self.by_relay.insert(relay, tuple);
        self.allocs.insert(
            tuple,
            Allocation {
                relay,
                username: authed.username,
                identity,
                expires: now + lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of: HashMap::new(),
                bucket: Bucket {
                    tokens: self.limits.bytes_per_second as f64,
                    at: now,
                },
                made_by: (transaction(msg), answer.clone()),
            },
        );
        self.stats.allocations_total += 1;
        tracing::debug!(client = %tuple.client, %relay, "TURN allocation");
        Ok(answer)
    }

    /// 486 / 508 when a cap is reached.
    fn within_quota(
        &mut self,
        tuple: Tuple,
        identity: &str,
        authed: &Authed,
        msg: &Message,
    ) -> Result<(), Vec<u8>> {
        let user = self.per_user.get(identity).copied().unwrap_or(0);
        let address = self
            .per_address
            .get(&tuple.client.ip())
            .copied()
            .unwrap_or(0);
        let code = if self.allocs.len() >= self.limits.total {
            ErrorCode::INSUFFICIENT_CAPACITY
        } else if user >= self.limits.per_user || address >= self.limits.per_address {
            ErrorCode::ALLOCATION_QUOTA_REACHED
        } else {
            return Ok(());
        };
        self.stats.refused_quota += 1;
        Err(error(msg, code, Some(authed)))
    }

    /// The lifetime asked for, within the server's bounds (0 stays 0: a Refresh that deletes).
    fn lifetime(&self, msg: &Message, default: Duration) -> Duration {
        match msg.attribute::<Lifetime>() {
            Ok(l) if l.seconds() == 0 => Duration::ZERO,
            Ok(l) => Duration::from_secs(u64::from(l.seconds())).clamp(
                self.limits.default_lifetime.min(default),
                self.limits.max_lifetime,
            ),
            Err(_) => default,
        }
    }

    /// The caller's allocation, checked to be its own (437 / 441 otherwise).
    fn own(
        &mut self,
        tuple: Tuple,
        msg: &Message,
        authed: &Authed,
    ) -> Result<&mut Allocation, Vec<u8>> {
        match self.allocs.get_mut(&tuple) {
            None => Err(error(msg, ErrorCode::ALLOCATION_MISMATCH, Some(authed))),
            Some(a) if a.username != authed.username => {
                Err(error(msg, ErrorCode::WRONG_CREDENTIALS, Some(authed)))
            }
            Some(a) => Ok(a),
        }
    }

    fn refresh(&mut self, now: Instant, tuple: Tuple, msg: &Message, out: &mut Vec<Out>) -> Answer {
        let authed = self.authenticate(now, tuple, msg)?;
        let lifetime = self.lifetime(msg, self.limits.default_lifetime);
        self.own(tuple, msg, &authed)?.expires = now + lifetime;
        if lifetime.is_zero() {
            self.remove(tuple, out);
        }
        let mut b = Message::builder_success(msg, MessageWriteVec::new());
        let _ = b.add_attribute(&Lifetime::new(lifetime.as_secs() as u32));
        Ok(sign(b, &authed))
    }

    /// The XOR-PEER-ADDRESS attributes of a request, refused (403) unless every one is a
    /// confab media address.
    fn peers(
        &mut self,
        tuple: Tuple,
        msg: &Message,
        authed: &Authed,
    ) -> Result<Vec<SocketAddr>, Vec<u8>> {
        let tid = msg.transaction_id();
        let peers: Vec<SocketAddr> = (0..MAX_PERMISSIONS)
            .map_while(|n| msg.nth_attribute::<XorPeerAddress>(n).ok())
            .map(|a| a.addr(tid))
            .collect();
        if peers.is_empty() {
            return Err(error(msg, ErrorCode::BAD_REQUEST, Some(authed)));
        }
        if peers.iter().any(|p| p.is_ipv4() != tuple.server.is_ipv4()) {
            let code = ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH;
            return Err(error(msg, code, Some(authed)));
        }
        if let Some(p) = peers.iter().find(|p| !self.policy.allows_ip(p.ip())) {
            return Err(self.foreign_peer(tuple, *p, msg, authed));
        }
        Ok(peers)
    }

    /// 403 for a relay to anything but confab's media ports (counted and logged).
    fn foreign_peer(
        &mut self,
        tuple: Tuple,
        peer: SocketAddr,
        msg: &Message,
        authed: &Authed,
    ) -> Vec<u8> {
        self.stats.refused_peers += 1;
        tracing::info!(client = %tuple.client, %peer, "TURN: relay to a foreign address refused");
        error_reason(
            msg,
            ErrorCode::FORBIDDEN,
            "this relay reaches only this server's media ports",
            Some(authed),
        )
    }

    fn create_permission(&mut self, now: Instant, tuple: Tuple, msg: &Message) -> Answer {
        let authed = self.authenticate(now, tuple, msg)?;
        self.own(tuple, msg, &authed)?;
        let peers = self.peers(tuple, msg, &authed)?;
        let a = self.own(tuple, msg, &authed)?;
        for p in peers {
            let ip = p.ip().to_canonical();
            if a.permissions.len() >= MAX_PERMISSIONS && !a.permissions.contains_key(&ip) {
                return Err(error(msg, ErrorCode::INSUFFICIENT_CAPACITY, Some(&authed)));
            }
            a.permissions.insert(ip, now + PERMISSION_LIFETIME);
        }
        Ok(sign(
            Message::builder_success(msg, MessageWriteVec::new()),
            &authed,
        ))
    }

    fn channel_bind(&mut self, now: Instant, tuple: Tuple, msg: &Message) -> Answer {
        let authed = self.authenticate(now, tuple, msg)?;
        self.own(tuple, msg, &authed)?;
        let bad = |authed: &Authed| error(msg, ErrorCode::BAD_REQUEST, Some(authed));
        let Ok(number) = msg.attribute::<ChannelNumber>().map(|c| c.channel()) else {
            return Err(bad(&authed));
        };
        if !(0x4000..=0x4FFF).contains(&number) {
            return Err(bad(&authed));
        }
        let peers = self.peers(tuple, msg, &authed)?;
        let [peer] = peers[..] else {
            return Err(bad(&authed));
        };
        if !self.policy.allows(peer) {
            return Err(self.foreign_peer(tuple, peer, msg, &authed));
        }
        let a = self.own(tuple, msg, &authed)?;
        let taken = a.channels.get(&number).is_some_and(|(p, _)| *p != peer);
        let other = a.channel_of.get(&peer).is_some_and(|n| *n != number);
        let full = a.channels.len() >= MAX_CHANNELS && !a.channels.contains_key(&number);
        if taken || other || full {
            return Err(bad(&authed));
        }
        a.channels.insert(number, (peer, now + CHANNEL_LIFETIME));
        a.channel_of.insert(peer, number);
        let ip = peer.ip().to_canonical();
        let until = (now + PERMISSION_LIFETIME).max(a.permissions.get(&ip).copied().unwrap_or(now));
        a.permissions.insert(ip, until);
        Ok(sign(
            Message::builder_success(msg, MessageWriteVec::new()),
            &authed,
        ))
    }

    /// A Send indication: data to a peer (no answer, by the protocol).
    fn send(&mut self, now: Instant, tuple: Tuple, msg: &Message, out: &mut Vec<Out>) {
        let tid = msg.transaction_id();
        let (Ok(peer), Ok(data)) = (
            msg.attribute::<XorPeerAddress>(),
            msg.attribute::<DataAttr>(),
        ) else {
            self.stats.malformed += 1;
            return;
        };
        self.relay_out(now, tuple, peer.addr(tid), data.data(), out);
    }

    fn channel_data(&mut self, now: Instant, tuple: Tuple, data: &[u8], out: &mut Vec<Out>) {
        let Ok(cd) = ChannelData::parse(data) else {
            self.stats.malformed += 1;
            return;
        };
        let peer = self
            .allocs
            .get(&tuple)
            .and_then(|a| a.channels.get(&cd.id()))
            .filter(|(_, until)| *until > now)
            .map(|(p, _)| *p);
        match peer {
            Some(peer) => self.relay_out(now, tuple, peer, cd.data(), out),
            None => self.stats.dropped_bytes += cd.data().len() as u64,
        }
    }

    /// Whether `len` bytes between the allocation of `tuple` and `peer` may pass (a media
    /// port, a permission, within the bandwidth cap); counted either way.
    fn passes(&mut self, now: Instant, tuple: Tuple, peer: SocketAddr, len: usize) -> bool {
        let rate = self.limits.bytes_per_second;
        let allowed = self.policy.allows(peer);
        let ok = self.allocs.get_mut(&tuple).is_some_and(|a| {
            allowed && a.permitted(now, peer.ip()) && a.bucket.take(now, rate, len)
        });
        if ok {
            self.stats.relayed_bytes += len as u64;
        } else {
            self.stats.dropped_bytes += len as u64;
        }
        ok
    }

    /// Client → peer through the allocation, if permitted, allowed and within the cap.
    fn relay_out(
        &mut self,
        now: Instant,
        tuple: Tuple,
        peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<Out>,
    ) {
        if !self.passes(now, tuple, peer, data.len()) {
            return;
        }
        let Some(a) = self.allocs.get(&tuple) else {
            return;
        };
        out.push(Out::Peer {
            relay: a.relay,
            peer,
            data: data.to_vec(),
        });
    }

    /// A datagram a relay socket received from `peer`: to its client, as ChannelData when a
    /// channel is bound, else as a Data indication.
    pub fn from_peer(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        out: &mut Vec<Out>,
    ) {
        let Some(tuple) = self.by_relay.get(&relay).copied() else {
            return;
        };
        if !self.passes(now, tuple, peer, data.len()) {
            return;
        }
        let Some(a) = self.allocs.get(&tuple) else {
            return;
        };
        let bytes = match a.channel_of.get(&peer) {
            Some(n) if a.channels.get(n).is_some_and(|(_, t)| *t > now) => {
                channel_frame(*n, data, tuple.transport)
            }
            _ => data_indication(peer, data),
        };
        out.push(Out::Client(tuple, bytes));
    }

    /// Ends what has expired: allocations (their sockets closed), permissions, channels.
    pub fn tick(&mut self, now: Instant, out: &mut Vec<Out>) {
        let expired: Vec<Tuple> = self
            .allocs
            .iter()
            .filter(|(_, a)| a.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            self.remove(t, out);
        }
        for a in self.allocs.values_mut() {
            a.permissions.retain(|_, until| *until > now);
            a.channels.retain(|_, (_, until)| *until > now);
            let channels = &a.channels;
            a.channel_of.retain(|_, n| channels.contains_key(n));
        }
    }

    /// A TCP/TLS client's connection closed: its allocation ends with it (RFC 6062 §5.3...
    /// and RFC 8656 §3.1: the 5-tuple is gone).
    pub fn client_gone(&mut self, tuple: Tuple, out: &mut Vec<Out>) {
        if self.allocs.contains_key(&tuple) {
            self.remove(tuple, out);
        }
    }

    fn remove(&mut self, tuple: Tuple, out: &mut Vec<Out>) {
        let Some(a) = self.allocs.remove(&tuple) else {
            return;
        };
        self.by_relay.remove(&a.relay);
        decrement(&mut self.per_user, &a.identity);
        decrement(&mut self.per_address, &tuple.client.ip());
        out.push(Out::CloseRelay(a.relay));
        if tuple.transport == Transport::Tcp {
            out.push(Out::CloseClient(tuple));
        }
        tracing::debug!(client = %tuple.client, relay = %a.relay, "TURN allocation ended");
    }
}

fn decrement<K: std::hash::Hash + Eq + Clone>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

fn transaction(msg: &Message) -> [u8; 12] {
    let mut t = [0u8; 12];
    t.copy_from_slice(&msg.as_bytes()[8..20]);
    t
}

/// Signs (MESSAGE-INTEGRITY with the request's algorithm) and fingerprints an answer.
fn sign(mut b: MessageWriteVec, authed: &Authed) -> Vec<u8> {
    let _ = b.add_message_integrity_with_key(&authed.key, authed.algorithm);
    let _ = b.add_fingerprint();
    b.finish()
}

fn error(msg: &Message, code: u16, authed: Option<&Authed>) -> Vec<u8> {
    error_reason(msg, code, ErrorCode::default_reason_for_code(code), authed)
}

fn error_reason(msg: &Message, code: u16, reason: &str, authed: Option<&Authed>) -> Vec<u8> {
    let mut b = Message::builder_error(msg, MessageWriteVec::new());
    if let Ok(e) = ErrorCode::builder(code).reason(reason).build() {
        let _ = b.add_attribute(&e);
    }
    match authed {
        Some(a) => sign(b, a),
        None => {
            let _ = b.add_fingerprint();
            b.finish()
        }
    }
}

fn binding(msg: &Message, client: SocketAddr) -> Vec<u8> {
    let mut b = Message::builder_success(msg, MessageWriteVec::new());
    let _ = b.add_attribute(&XorMappedAddress::new(client, msg.transaction_id()));
    let _ = b.add_fingerprint();
    b.finish()
}

fn allocated(
    msg: &Message,
    authed: &Authed,
    relay: SocketAddr,
    client: SocketAddr,
    lifetime: Duration,
) -> Vec<u8> {
    let tid = msg.transaction_id();
    let mut b = Message::builder_success(msg, MessageWriteVec::new());
    let _ = b.add_attribute(&XorRelayedAddress::new(relay, tid));
    let _ = b.add_attribute(&Lifetime::new(lifetime.as_secs() as u32));
    let _ = b.add_attribute(&XorMappedAddress::new(client, tid));
    if let Ok(s) = Software::new("confab") {
        let _ = b.add_attribute(&s);
    }
    sign(b, authed)
}

fn data_indication(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut b = Message::builder_indication(DATA, MessageWriteVec::new());
    let tid = b.transaction_id();
    let _ = b.add_attribute(&XorPeerAddress::new(peer, tid));
    let _ = b.add_attribute(&DataAttr::new(data));
    b.finish()
}

/// ChannelData; over TCP padded to a multiple of four bytes (RFC 8656 §12.5).
pub fn channel_frame(number: u16, data: &[u8], transport: Transport) -> Vec<u8> {
    let pad = match transport {
        Transport::Tcp => (4 - data.len() % 4) % 4,
        Transport::Udp => 0,
    };
    let mut v = Vec::with_capacity(4 + data.len() + pad);
    v.extend_from_slice(&number.to_be_bytes());
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    v.resize(4 + data.len() + pad, 0);
    v
}

/// The length of the first whole message at the start of a TCP stream's buffer (STUN, or
/// ChannelData with its padding), `None` while more bytes are needed.
pub fn frame_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let whole = match buf[0] >> 6 {
        0 => 20 + len,
        _ => 4 + len + (4 - len % 4) % 4,
    };
    (buf.len() >= whole).then_some(whole)
}
