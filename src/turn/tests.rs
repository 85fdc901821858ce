#![allow(clippy::unwrap_used)]
//! The TURN protocol state against a client built from `turn-types`' own message writer: the
//! long-term credential exchange, allocations, permissions, channels and data both ways, and
//! every refusal (forged and expired credentials, foreign peers, caps, lifetimes).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use turn_types::attribute::{
    ChannelNumber, Data as DataAttr, Lifetime, RequestedTransport, XorPeerAddress,
    XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};
use turn_types::stun::attribute::{ErrorCode, Nonce, Realm, Username};
use turn_types::stun::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials,
    MessageWriteExt, MessageWriteVec, Method, BINDING,
};
use turn_types::stun::prelude::*;

use super::creds::Issuer;
use super::server::{
    channel_frame, frame_len, Limits, Out, Policy, Relays, Server, Transport, Tuple,
};

const MEDIA: &str = "10.0.0.1:7882";
const UNIX: u64 = 1_800_000_000;

/// Relay sockets are handed out from one port range.
struct FakeRelays(u16);

impl Relays for FakeRelays {
    fn open(&mut self, ip: IpAddr) -> std::io::Result<SocketAddr> {
        self.0 += 1;
        Ok(SocketAddr::new(ip, self.0))
    }
}

struct Fixture {
    server: Server,
    issuer: Arc<Issuer>,
    relays: FakeRelays,
    now: Instant,
}

fn fixture(limits: Limits) -> Fixture {
    let issuer = Arc::new(Issuer::with_key(b"test-key", 3600));
    let now = Instant::now();
    let server = Server::new(
        "confab",
        issuer.clone(),
        Policy::new([MEDIA.parse().unwrap()]),
        limits,
        now,
        UNIX,
        b"nonce-key",
    );
    Fixture {
        server,
        issuer,
        relays: FakeRelays(50_000),
        now,
    }
}

fn tuple(client: &str) -> Tuple {
    Tuple {
        transport: Transport::Udp,
        client: client.parse().unwrap(),
        server: "10.0.0.1:3478".parse().unwrap(),
    }
}

/// A client: its 5-tuple, credentials and the nonce it was last given.
struct Client {
    tuple: Tuple,
    username: String,
    password: String,
    nonce: Option<String>,
}

impl Fixture {
    fn client(&self, addr: &str, identity: &str) -> Client {
        let (username, password) = self.issuer.issue(identity, UNIX);
        Client {
            tuple: tuple(addr),
            username,
            password,
            nonce: None,
        }
    }

    fn send(&mut self, t: Tuple, bytes: &[u8]) -> Vec<Out> {
        let mut out = Vec::new();
        self.server
            .from_client(self.now, t, bytes, &mut self.relays, &mut out);
        out
    }

    /// Sends a request signed with the client's credentials (after the 401 that hands out
    /// the nonce) and returns the answer's bytes.
    fn request(
        &mut self,
        c: &mut Client,
        method: Method,
        attrs: &dyn Fn(&mut MessageWriteVec),
    ) -> Vec<u8> {
        if c.nonce.is_none() {
            let first = request(method, None, attrs);
            let answer = one_answer(self.send(c.tuple, &first));
            let msg = Message::from_bytes(&answer).unwrap();
            assert_eq!(
                code(&answer),
                Some(401),
                "an unsigned request is challenged"
            );
            assert_eq!(msg.attribute::<Realm>().unwrap().realm(), "confab");
            c.nonce = Some(msg.attribute::<Nonce>().unwrap().nonce().to_string());
        }
        let signed = request(method, Some(c), attrs);
        one_answer(self.send(c.tuple, &signed))
    }

    fn allocate(&mut self, c: &mut Client) -> Vec<u8> {
        self.request(c, ALLOCATE, &|b| {
            b.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))
                .unwrap();
        })
    }
}

fn request(method: Method, c: Option<&Client>, attrs: &dyn Fn(&mut MessageWriteVec)) -> Vec<u8> {
    let mut b = Message::builder_request(method, MessageWriteVec::new());
    attrs(&mut b);
    if let Some(c) = c {
        b.add_attribute(&Username::new(&c.username).unwrap())
            .unwrap();
        b.add_attribute(&Realm::new("confab").unwrap()).unwrap();
        b.add_attribute(&Nonce::new(c.nonce.as_deref().unwrap()).unwrap())
            .unwrap();
        let creds: MessageIntegrityCredentials =
            LongTermKeyCredentials::new(c.username.clone(), c.password.clone(), "confab".into())
                .into();
        b.add_message_integrity(&creds, IntegrityAlgorithm::Sha1)
            .unwrap();
    }
    b.add_fingerprint().unwrap();
    b.finish()
}

fn one_answer(out: Vec<Out>) -> Vec<u8> {
    match &out[..] {
        [Out::Client(_, bytes)] => bytes.clone(),
        other => panic!("expected one answer, got {other:?}"),
    }
}

/// The error code of an answer, `None` for a success.
fn code(answer: &[u8]) -> Option<u16> {
    let msg = Message::from_bytes(answer).unwrap();
    match msg.class() {
        MessageClass::Success => None,
        MessageClass::Error => Some(msg.attribute::<ErrorCode>().unwrap().code()),
        other => panic!("not an answer: {other:?}"),
    }
}

fn relayed(answer: &[u8]) -> SocketAddr {
    let msg = Message::from_bytes(answer).unwrap();
    msg.attribute::<XorRelayedAddress>()
        .unwrap()
        .addr(msg.transaction_id())
}

fn peer_attr(peer: &str) -> impl Fn(&mut MessageWriteVec) + '_ {
    move |b: &mut MessageWriteVec| {
        let tid = b.transaction_id();
        b.add_attribute(&XorPeerAddress::new(peer.parse().unwrap(), tid))
            .unwrap();
    }
}

fn send_indication(peer: &str, data: &[u8]) -> Vec<u8> {
    let mut b = Message::builder_indication(SEND, MessageWriteVec::new());
    let tid = b.transaction_id();
    b.add_attribute(&XorPeerAddress::new(peer.parse().unwrap(), tid))
        .unwrap();
    b.add_attribute(&DataAttr::new(data)).unwrap();
    b.finish()
}

#[test]
fn a_client_allocates_with_its_credentials_and_relays_to_the_media_port_both_ways() {
    let mut f = fixture(Limits::default());
    let mut c = f.client("192.0.2.5:40000", "alice");
    let answer = f.allocate(&mut c);
    assert_eq!(code(&answer), None, "allocated");
    let relay = relayed(&answer);
    assert_eq!(
        relay.ip(),
        "10.0.0.1".parse::<IpAddr>().unwrap(),
        "on the address reached"
    );
    let msg = Message::from_bytes(&answer).unwrap();
    assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), 600);
    // The answer is signed with the client's key.
    let creds: MessageIntegrityCredentials =
        LongTermKeyCredentials::new(c.username.clone(), c.password.clone(), "confab".into()).into();
    msg.validate_integrity(&creds).unwrap();

    // Without a permission nothing goes out; with one, a Send indication reaches the peer.
    assert!(f
        .send(c.tuple, &send_indication(MEDIA, b"early"))
        .is_empty());
    assert_eq!(
        code(&f.request(&mut c, CREATE_PERMISSION, &peer_attr(MEDIA))),
        None
    );
    let out = f.send(c.tuple, &send_indication(MEDIA, b"hello"));
    assert_eq!(
        out,
        vec![Out::Peer {
            relay,
            peer: MEDIA.parse().unwrap(),
            data: b"hello".to_vec()
        }]
    );
    // The peer's answer comes back as a Data indication.
    let mut out = Vec::new();
    f.server
        .from_peer(f.now, relay, MEDIA.parse().unwrap(), b"back", &mut out);
    let [Out::Client(t, bytes)] = &out[..] else {
        panic!("{out:?}")
    };
    assert_eq!(*t, c.tuple);
    let data = Message::from_bytes(bytes).unwrap();
    assert!(data.has_method(DATA));
    assert_eq!(data.attribute::<DataAttr>().unwrap().data(), b"back");

    // A channel: ChannelData both ways.
    let bind = f.request(&mut c, CHANNEL_BIND, &|b| {
        b.add_attribute(&ChannelNumber::new(0x4001)).unwrap();
        peer_attr(MEDIA)(b);
    });
    assert_eq!(code(&bind), None);
    let out = f.send(c.tuple, &channel_frame(0x4001, b"chan", Transport::Udp));
    assert!(
        matches!(&out[..], [Out::Peer { data, .. }] if data == b"chan"),
        "{out:?}"
    );
    let mut out = Vec::new();
    f.server
        .from_peer(f.now, relay, MEDIA.parse().unwrap(), b"xyz", &mut out);
    assert_eq!(
        out,
        vec![Out::Client(
            c.tuple,
            channel_frame(0x4001, b"xyz", Transport::Udp)
        )]
    );
    let stats = f.server.stats();
    assert_eq!((stats.allocations, stats.relayed_bytes), (1, 5 + 4 + 4 + 3));
}

#[test]
fn forged_expired_and_stale_credentials_are_refused() {
    let mut f = fixture(Limits::default());
    let mut forged = f.client("192.0.2.5:40000", "mallory");
    forged.password = "guessed".into();
    assert_eq!(code(&f.allocate(&mut forged)), Some(401));
    // A username with a later expiry than issued: its password no longer matches.
    let mut stretched = f.client("192.0.2.5:40001", "mallory");
    stretched.username = format!("{}:mallory", UNIX + 10 * 86_400);
    assert_eq!(code(&f.allocate(&mut stretched)), Some(401));
    // Another server's key.
    let other = Issuer::with_key(b"another-key", 3600);
    let (username, password) = other.issue("mallory", UNIX);
    let mut foreign = Client {
        tuple: tuple("192.0.2.5:40002"),
        username,
        password,
        nonce: None,
    };
    assert_eq!(code(&f.allocate(&mut foreign)), Some(401));
    assert_eq!(f.server.stats().refused_credentials, 3);

    // An issued credential past its expiry.
    let mut late = f.client("192.0.2.5:40003", "alice");
    f.now += Duration::from_secs(3601);
    assert_eq!(code(&f.allocate(&mut late)), Some(401));
    // A nonce from long ago is stale (438, with a new one), and the new one works.
    let mut c = f.client("192.0.2.5:40004", "alice");
    c.username = f.issuer.issue("alice", UNIX + 7200).0;
    c.password = f.issuer.issue("alice", UNIX + 7200).1;
    c.nonce = Some("1-0000000000000000".into());
    let stale = f.allocate(&mut c);
    assert_eq!(code(&stale), Some(438));
    c.nonce = Some(
        Message::from_bytes(&stale)
            .unwrap()
            .attribute::<Nonce>()
            .unwrap()
            .nonce()
            .to_string(),
    );
    assert_eq!(code(&f.allocate(&mut c)), None);
    assert_eq!(f.server.stats().allocations, 1);
}

#[test]
fn relays_to_anything_but_the_media_ports_are_refused() {
    let mut f = fixture(Limits::default());
    let mut c = f.client("192.0.2.5:40000", "alice");
    let relay = relayed(&f.allocate(&mut c));
    for foreign in ["10.0.0.2:7882", "192.168.1.1:53", "127.0.0.1:22"] {
        let answer = f.request(&mut c, CREATE_PERMISSION, &peer_attr(foreign));
        assert_eq!(code(&answer), Some(403), "{foreign}");
    }
    // The media host, another port: a permission is per address, but a channel to another
    // port is refused, and data sent there is dropped.
    assert_eq!(
        code(&f.request(&mut c, CREATE_PERMISSION, &peer_attr("10.0.0.1:9"))),
        None
    );
    let bind = f.request(&mut c, CHANNEL_BIND, &|b| {
        b.add_attribute(&ChannelNumber::new(0x4002)).unwrap();
        peer_attr("10.0.0.1:22")(b);
    });
    assert_eq!(code(&bind), Some(403));
    assert!(f
        .send(c.tuple, &send_indication("10.0.0.1:22", b"ssh?"))
        .is_empty());
    // Nor does anything but the media port get through to the client.
    let mut out = Vec::new();
    f.server
        .from_peer(f.now, relay, "10.0.0.1:9".parse().unwrap(), b"x", &mut out);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(f.server.stats().refused_peers, 4);
}

#[test]
fn allocation_caps_per_user_per_address_and_in_all_hold() {
    let limits = Limits {
        per_user: 3,
        per_address: 5,
        total: 8,
        ..Limits::default()
    };
    let mut f = fixture(limits);
    for i in 0..3 {
        let mut c = f.client(&format!("192.0.2.5:{}", 41000 + i), "flood");
        assert_eq!(code(&f.allocate(&mut c)), None);
    }
    let mut c = f.client("192.0.2.5:41003", "flood");
    assert_eq!(code(&f.allocate(&mut c)), Some(486), "per user");
    for i in 0..2 {
        let mut c = f.client(&format!("192.0.2.5:{}", 42000 + i), &format!("u{i}"));
        assert_eq!(code(&f.allocate(&mut c)), None);
    }
    let mut c = f.client("192.0.2.5:42002", "u9");
    assert_eq!(code(&f.allocate(&mut c)), Some(486), "per address");
    for i in 0..3 {
        let mut c = f.client(&format!("198.51.100.{i}:5000"), &format!("v{i}"));
        assert_eq!(code(&f.allocate(&mut c)), None);
    }
    let mut c = f.client("198.51.100.9:5000", "w");
    assert_eq!(code(&f.allocate(&mut c)), Some(508), "in all");
    assert_eq!(f.server.stats().refused_quota, 3);
    assert_eq!(f.server.stats().allocations, 8);
}

#[test]
fn lifetimes_refresh_and_expiry_close_the_relay() {
    let mut f = fixture(Limits::default());
    let mut c = f.client("192.0.2.5:40000", "alice");
    let relay = relayed(&f.allocate(&mut c));
    // A retransmitted Allocate gets the same answer; a new one on the same 5-tuple is 437.
    let refresh = f.request(&mut c, REFRESH, &|b| {
        b.add_attribute(&Lifetime::new(100_000)).unwrap();
    });
    let msg = Message::from_bytes(&refresh).unwrap();
    assert_eq!(
        msg.attribute::<Lifetime>().unwrap().seconds(),
        3600,
        "capped at the maximum"
    );
    assert_eq!(code(&f.allocate(&mut c)), Some(437));
    f.now += Duration::from_secs(3599);
    let mut out = Vec::new();
    f.server.tick(f.now, &mut out);
    assert!(out.is_empty(), "still alive: {out:?}");
    f.now += Duration::from_secs(2);
    f.server.tick(f.now, &mut out);
    assert_eq!(out, vec![Out::CloseRelay(relay)]);
    assert_eq!(f.server.stats().allocations, 0);

    // Refresh with lifetime 0 deletes at once; a TCP client's connection is closed with it.
    let mut c = f.client("192.0.2.5:40001", "bob");
    // Issued now (an hour after the first client's credentials).
    (c.username, c.password) = f.issuer.issue("bob", UNIX + 3601);
    c.tuple.transport = Transport::Tcp;
    let relay = relayed(&f.allocate(&mut c));
    let signed = request(REFRESH, Some(&c), &|b| {
        b.add_attribute(&Lifetime::new(0)).unwrap();
    });
    let out = f.send(c.tuple, &signed);
    assert!(
        matches!(&out[..], [Out::CloseRelay(r), Out::CloseClient(t), Out::Client(_, answer)]
        if *r == relay && *t == c.tuple && code(answer).is_none()),
        "{out:?}"
    );
    assert_eq!(f.server.stats().allocations, 0);
}

#[test]
fn the_bandwidth_cap_drops_what_exceeds_it() {
    let limits = Limits {
        bytes_per_second: 10_000,
        ..Limits::default()
    };
    let mut f = fixture(limits);
    let mut c = f.client("192.0.2.5:40000", "alice");
    f.allocate(&mut c);
    f.request(&mut c, CREATE_PERMISSION, &peer_attr(MEDIA));
    let chunk = vec![7u8; 1000];
    let sent = (0..30)
        .filter(|_| !f.send(c.tuple, &send_indication(MEDIA, &chunk)).is_empty())
        .count();
    assert_eq!(sent, 10, "one second's worth passes");
    f.now += Duration::from_millis(500);
    let later = (0..30)
        .filter(|_| !f.send(c.tuple, &send_indication(MEDIA, &chunk)).is_empty())
        .count();
    assert_eq!(later, 5, "then half a second's worth");
    assert_eq!(f.server.stats().dropped_bytes, 45_000);
}

#[test]
fn garbage_is_counted_not_answered_and_binding_works() {
    let mut f = fixture(Limits::default());
    let t = tuple("192.0.2.5:40000");
    for junk in [
        &b""[..],
        b"\xff\xff\xff\xff",
        b"\x00\x01\x00\x10short",
        b"\x40\x00\xff\xff",
    ] {
        assert!(f.send(t, junk).is_empty(), "{junk:?}");
    }
    assert_eq!(f.server.stats().malformed, 4);
    let answer = one_answer(f.send(t, &request(BINDING, None, &|_| {})));
    assert_eq!(
        code(&answer),
        None,
        "a Binding request is answered without credentials"
    );
}

#[test]
fn tcp_frames_are_cut_at_message_boundaries() {
    let stun = request(BINDING, None, &|_| {});
    let chan = channel_frame(0x4000, b"abcde", Transport::Tcp);
    assert_eq!(chan.len(), 12, "padded to four bytes over TCP");
    let mut stream = stun.clone();
    stream.extend_from_slice(&chan);
    assert_eq!(frame_len(&stream), Some(stun.len()));
    assert_eq!(frame_len(&stream[stun.len()..]), Some(12));
    assert_eq!(frame_len(&stream[..stun.len() - 1]), None);
    assert_eq!(frame_len(&chan[..11]), None);
}
