//! The baseline: a naive SFU of the kind str0m's chat example shows, written here for the bench.
//! One thread, one UDP socket, one loop; every datagram is matched to its connection by asking
//! each `Rtc` in turn whether it `accepts` it; every turn hands a timeout to every `Rtc`;
//! frames are forwarded with the frame-level API (one simulcast layer, `h`). It takes the same
//! synthetic participants as confab, with their LiveKit signal messages passed over channels
//! instead of a WebSocket (v0 shape: the client offers its publisher connection, the baseline
//! offers the subscriber connection with one section per track of the others).

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_request::Message as Req;
use lk::signal_response::Message as Resp;
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc as tmpsc;

use super::client::{Cmd, Link};

pub struct Baseline {
    tx: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    tid: Arc<AtomicI32>,
    next_id: AtomicU64,
    thread: Option<JoinHandle<()>>,
}

const SOCKET: Token = Token(1);
const WAKER: Token = Token(0);
/// The one simulcast layer forwarded.
const LAYER: &str = "h";

impl Baseline {
    pub fn start(core: Option<usize>) -> Result<Baseline, String> {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let poll = Poll::new().map_err(|e| e.to_string())?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?);
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicI32::new(0));
        let (stop2, tid2) = (stop.clone(), tid.clone());
        let thread = std::thread::Builder::new()
            .name("bench-baseline".into())
            .spawn(move || {
                if let Some(c) = core {
                    super::pin_current_thread(&[c]);
                }
                // SAFETY: gettid has no preconditions.
                tid2.store(unsafe { libc::gettid() }, Ordering::Relaxed);
                let local = match sock.local_addr() {
                    Ok(a) => a,
                    Err(_) => return,
                };
                let mut sfu = Naive {
                    sock,
                    local,
                    clients: vec![],
                    tracks: vec![],
                };
                sfu.run(poll, rx, &stop2);
            })
            .map_err(|e| e.to_string())?;
        Ok(Baseline {
            tx,
            waker,
            stop,
            tid,
            next_id: AtomicU64::new(1),
            thread: Some(thread),
        })
    }

    /// A new participant's signalling link.
    pub fn connect(&self) -> Link {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (resp_tx, rx) = tmpsc::unbounded_channel();
        let _ = self.tx.send(Cmd::Join(id, resp_tx));
        let _ = self.waker.wake();
        Link::Direct {
            id,
            tx: self.tx.clone(),
            waker: self.waker.clone(),
            rx,
        }
    }

    /// CPU seconds of the baseline's thread.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let tid = self.tid.load(Ordering::Relaxed);
        super::cpu_seconds(std::path::Path::new(&format!("/proc/self/task/{tid}/stat")))
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Conn {
    rtc: Rtc,
    timeout: Instant,
}

struct Client {
    id: u64,
    resp: tmpsc::UnboundedSender<Resp>,
    publ: Conn,
    sub: Conn,
    pending: Option<SdpPendingOffer>,
    /// Tracks of others still to be offered on the subscriber connection.
    to_add: Vec<Track>,
    /// (publisher id, publisher mid) → mid on this client's subscriber connection.
    out: Vec<(u64, Mid, Mid)>,
}

#[derive(Clone, Copy)]
struct Track {
    owner: u64,
    mid: Mid,
    kind: MediaKind,
}

struct Naive {
    sock: UdpSocket,
    local: SocketAddr,
    clients: Vec<Client>,
    tracks: Vec<Track>,
}

impl Naive {
    fn run(&mut self, mut poll: Poll, rx: mpsc::Receiver<Cmd>, stop: &AtomicBool) {
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; 2048];
        let mut mio_sock = mio::net::UdpSocket::from_std(match self.sock.try_clone() {
            Ok(s) => s,
            Err(_) => return,
        });
        if poll
            .registry()
            .register(&mut mio_sock, SOCKET, Interest::READABLE)
            .is_err()
        {
            return;
        }
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let next = self
                .clients
                .iter()
                .flat_map(|c| [c.publ.timeout, c.sub.timeout])
                .min()
                .unwrap_or(now + Duration::from_millis(100));
            let wait = next
                .saturating_duration_since(now)
                .min(Duration::from_millis(100));
            let _ = poll.poll(&mut events, Some(wait));
            while let Ok(cmd) = rx.try_recv() {
                self.command(cmd);
            }
            while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
                self.datagram(from, buf.get(..n).unwrap_or_default());
            }
            // Naive: every connection gets the time every turn.
            let now = Instant::now();
            for i in 0..self.clients.len() {
                for publ in [true, false] {
                    if let Some(c) = self.clients.get_mut(i) {
                        let conn = if publ { &mut c.publ } else { &mut c.sub };
                        let _ = conn.rtc.handle_input(Input::Timeout(now));
                    }
                    self.drain(i, publ);
                }
            }
            for i in 0..self.clients.len() {
                self.offer(i);
            }
        }
    }

    fn new_conn(&self) -> Conn {
        let mut rtc = Rtc::builder().set_ice_lite(true).build(Instant::now());
        if let Ok(c) = Candidate::host(self.local, "udp") {
            rtc.add_local_candidate(c);
        }
        Conn {
            rtc,
            timeout: Instant::now(),
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Join(id, resp) => {
                let to_add = self.tracks.clone();
                let (publ, sub) = (self.new_conn(), self.new_conn());
                self.clients.push(Client {
                    id,
                    resp,
                    publ,
                    sub,
                    pending: None,
                    to_add,
                    out: vec![],
                });
            }
            Cmd::Req(id, req) => {
                let Some(i) = self.clients.iter().position(|c| c.id == id) else {
                    return;
                };
                self.request(i, *req);
            }
        }
    }

    fn request(&mut self, i: usize, req: Req) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        match req {
            Req::AddTrack(t) => {
                let _ = c
                    .resp
                    .send(Resp::TrackPublished(lk::TrackPublishedResponse {
                        track: Some(lk::TrackInfo {
                            sid: format!("TR_{}_{}", c.id, t.cid),
                            r#type: t.r#type,
                            ..Default::default()
                        }),
                        cid: t.cid,
                    }));
            }
            Req::Offer(sd) => {
                let Ok(offer) = SdpOffer::from_sdp_string(&sd.sdp) else {
                    return;
                };
                let Ok(answer) = c.publ.rtc.sdp_api().accept_offer(offer) else {
                    return;
                };
                let _ = c.resp.send(Resp::Answer(lk::SessionDescription {
                    r#type: "answer".into(),
                    sdp: answer.to_sdp_string(),
                    id: sd.id,
                    mid_to_track_id: Default::default(),
                }));
                self.drain(i, true);
            }
            Req::Answer(sd) => {
                let (Some(pending), Ok(answer)) =
                    (c.pending.take(), SdpAnswer::from_sdp_string(&sd.sdp))
                else {
                    return;
                };
                let _ = c.sub.rtc.sdp_api().accept_answer(pending, answer);
                self.drain(i, false);
            }
            Req::Leave(_) => {
                let id = c.id;
                self.clients.remove(i);
                self.tracks.retain(|t| t.owner != id);
            }
            _ => {}
        }
    }

    /// Offers the subscriber connection the tracks it does not have yet.
    fn offer(&mut self, i: usize) {
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        if c.pending.is_some() || c.to_add.is_empty() {
            return;
        }
        let mut api = c.sub.rtc.sdp_api();
        for t in c.to_add.drain(..) {
            let mid = api.add_media(
                t.kind,
                Direction::SendOnly,
                Some(format!("PA_{}", t.owner)),
                Some(format!("TR_{}_{}", t.owner, t.mid)),
                None,
            );
            c.out.push((t.owner, t.mid, mid));
        }
        if let Some((offer, pending)) = api.apply() {
            c.pending = Some(pending);
            let _ = c.resp.send(Resp::Offer(lk::SessionDescription {
                r#type: "offer".into(),
                sdp: offer.to_sdp_string(),
                id: 1,
                mid_to_track_id: Default::default(),
            }));
        }
        self.drain(i, false);
    }

    fn datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let Ok(r) = Receive::new(Protocol::Udp, from, self.local, data) else {
            return;
        };
        let input = Input::Receive(Instant::now(), r);
        // The linear scan: ask every connection.
        let mut found = None;
        for (i, c) in self.clients.iter().enumerate() {
            if c.publ.rtc.accepts(&input) {
                found = Some((i, true));
                break;
            }
            if c.sub.rtc.accepts(&input) {
                found = Some((i, false));
                break;
            }
        }
        let Some((i, publ)) = found else {
            return;
        };
        if let Some(c) = self.clients.get_mut(i) {
            let conn = if publ { &mut c.publ } else { &mut c.sub };
            let _ = conn.rtc.handle_input(input);
        }
        self.drain(i, publ);
    }

    fn drain(&mut self, i: usize, publ: bool) {
        let mut events = vec![];
        {
            let Some(c) = self.clients.get_mut(i) else {
                return;
            };
            let conn = if publ { &mut c.publ } else { &mut c.sub };
            loop {
                match conn.rtc.poll_output() {
                    Ok(Output::Timeout(t)) => {
                        conn.timeout = t;
                        break;
                    }
                    Ok(Output::Transmit(t)) => {
                        let _ = self.sock.send_to(&t.contents, t.destination);
                    }
                    Ok(Output::Event(e)) => events.push(e),
                    Err(_) => {
                        conn.timeout = Instant::now() + Duration::from_secs(3600);
                        break;
                    }
                }
            }
        }
        let Some(owner) = self.clients.get(i).map(|c| c.id) else {
            return;
        };
        for e in events {
            match e {
                Event::MediaAdded(m) if publ && m.direction == Direction::RecvOnly => {
                    let t = Track {
                        owner,
                        mid: m.mid,
                        kind: m.kind,
                    };
                    self.tracks.push(t);
                    for c in self.clients.iter_mut().filter(|c| c.id != owner) {
                        c.to_add.push(t);
                    }
                }
                Event::MediaData(d) if publ => {
                    if d.rid.is_some_and(|r| &*r != LAYER) {
                        continue;
                    }
                    for j in 0..self.clients.len() {
                        let Some(c) = self.clients.get_mut(j) else {
                            continue;
                        };
                        if c.id == owner {
                            continue;
                        }
                        let Some(&(_, _, mid)) =
                            c.out.iter().find(|(o, m, _)| *o == owner && *m == d.mid)
                        else {
                            continue;
                        };
                        let Some(w) = c.sub.rtc.writer(mid) else {
                            continue;
                        };
                        let Some(pt) = w.match_params(d.params) else {
                            continue;
                        };
                        let _ = w.write(pt, d.network_time, d.time, d.data.clone());
                        self.drain(j, false);
                    }
                }
                _ => {}
            }
        }
    }
}
