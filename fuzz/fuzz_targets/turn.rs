//! The TURN server's protocol state (confab::turn::server) fed a sequence of events from one
//! input: datagrams from a UDP client, framed messages from a TCP client, datagrams a relay
//! socket received from a peer, and clock ticks. Seeds are a real exchange: the unsigned
//! Allocate and its 401, then signed Allocate, CreatePermission, ChannelBind, Send and
//! ChannelData, so the authenticated paths are reached. Must never panic.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab::turn::creds::Issuer;
use confab::turn::server::{channel_frame, Limits, Out, Policy, Relays, Server, Transport, Tuple};
use libfuzzer_sys::fuzz_target;
use turn_types::attribute::{ChannelNumber, Data, RequestedTransport, XorPeerAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, SEND};
use turn_types::stun::attribute::{Nonce, Realm, Username};
use turn_types::stun::message::{
    IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageIntegrityCredentials,
    MessageWriteExt, MessageWriteVec, Method,
};
use turn_types::stun::prelude::*;

mod seeds;

const UNIX: u64 = 1_800_000_000;
const MEDIA: &str = "10.0.0.1:7882";

struct Ports(u16);

impl Relays for Ports {
    fn open(&mut self, ip: IpAddr) -> std::io::Result<SocketAddr> {
        self.0 = self.0.wrapping_add(1);
        Ok(SocketAddr::new(ip, self.0))
    }
}

fn server(now: Instant) -> Server {
    let issuer = Arc::new(Issuer::with_key(b"fuzz-key", 3600));
    let limits = Limits { total: 8, per_user: 4, per_address: 6, ..Limits::default() };
    Server::new("confab", issuer, Policy::new([MEDIA.parse().unwrap()]), limits, now, UNIX, b"nonce")
}

fn tuple(transport: Transport) -> Tuple {
    Tuple {
        transport,
        client: "192.0.2.5:40000".parse().unwrap(),
        server: "10.0.0.1:3478".parse().unwrap(),
    }
}

fuzz_target!(init: seeds::write(&turn_seeds()), |data: &[u8]| {
    let now = Instant::now();
    let mut s = server(now);
    let mut relays = Ports(50_000);
    let mut out: Vec<Out> = Vec::new();
    let mut clock = now;
    let mut rest = data;
    // Records: kind (1 byte), length (2 bytes, big-endian), bytes.
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let (bytes, tail) = rest[3..].split_at(len);
        rest = tail;
        match kind % 4 {
            0 => s.from_client(clock, tuple(Transport::Udp), bytes, &mut relays, &mut out),
            1 => s.from_client(clock, tuple(Transport::Tcp), bytes, &mut relays, &mut out),
            2 => {
                let relay = SocketAddr::new("10.0.0.1".parse().unwrap(), 50_001);
                s.from_peer(clock, relay, MEDIA.parse().unwrap(), bytes, &mut out);
            }
            _ => {
                clock += Duration::from_secs(u64::from(kind / 4));
                s.tick(clock, &mut out);
            }
        }
        // Every answer the server writes must itself parse.
        for o in out.drain(..) {
            if let Out::Client(_, bytes) = o {
                if bytes.first().is_some_and(|b| b >> 6 == 0) {
                    assert!(Message::from_bytes(&bytes).is_ok(), "an answer that does not parse");
                }
            }
        }
    }
});

fn record(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![kind];
    v.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    v.extend_from_slice(bytes);
    v
}

fn signed(method: Method, nonce: &str, attrs: &dyn Fn(&mut MessageWriteVec)) -> Vec<u8> {
    let (user, pass) = Issuer::with_key(b"fuzz-key", 3600).issue("alice", UNIX);
    let mut b = Message::builder_request(method, MessageWriteVec::new());
    attrs(&mut b);
    b.add_attribute(&Username::new(&user).unwrap()).unwrap();
    b.add_attribute(&Realm::new("confab").unwrap()).unwrap();
    b.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
    let creds: MessageIntegrityCredentials =
        LongTermKeyCredentials::new(user, pass, "confab".into()).into();
    b.add_message_integrity(&creds, IntegrityAlgorithm::Sha1).unwrap();
    b.add_fingerprint().unwrap();
    b.finish()
}

/// An exchange as a WebRTC client makes it (the nonce from a real challenge: nonces depend
/// only on the server's key and its age, so it holds for every fresh server of the run).
fn turn_seeds() -> Vec<Vec<u8>> {
    let mut first = Message::builder_request(ALLOCATE, MessageWriteVec::new());
    first.add_attribute(&RequestedTransport::new(RequestedTransport::UDP)).unwrap();
    let first = first.finish();
    let mut s = server(Instant::now());
    let mut out = Vec::new();
    s.from_client(Instant::now(), tuple(Transport::Udp), &first, &mut Ports(50_000), &mut out);
    let Some(Out::Client(_, challenge)) = out.first() else { return vec![record(0, &first)] };
    let challenge = Message::from_bytes(challenge).unwrap();
    let nonce = challenge.attribute::<Nonce>().unwrap().nonce().to_string();
    let media: SocketAddr = MEDIA.parse().unwrap();
    let allocate = signed(ALLOCATE, &nonce, &|b| {
        b.add_attribute(&RequestedTransport::new(RequestedTransport::UDP)).unwrap();
    });
    let permission = signed(CREATE_PERMISSION, &nonce, &|b| {
        let tid = b.transaction_id();
        b.add_attribute(&XorPeerAddress::new(media, tid)).unwrap();
    });
    let bind = signed(CHANNEL_BIND, &nonce, &|b| {
        let tid = b.transaction_id();
        b.add_attribute(&ChannelNumber::new(0x4000)).unwrap();
        b.add_attribute(&XorPeerAddress::new(media, tid)).unwrap();
    });
    let mut send = Message::builder_indication(SEND, MessageWriteVec::new());
    let tid = send.transaction_id();
    send.add_attribute(&XorPeerAddress::new(media, tid)).unwrap();
    send.add_attribute(&Data::new(b"stun binding to the SFU")).unwrap();
    let send = send.finish();
    let chan = channel_frame(0x4000, b"srtp", Transport::Udp);
    let exchange: Vec<u8> = [
        record(0, &first),
        record(0, &allocate),
        record(0, &permission),
        record(0, &bind),
        record(0, &send),
        record(0, &chan),
        record(2, b"from the sfu"),
        record(3 + 4 * 30, b""),
    ]
    .concat();
    let tcp: Vec<u8> = [record(1, &allocate), record(1, &permission), record(2, b"x")].concat();
    vec![exchange, tcp, record(0, &first)]
}
