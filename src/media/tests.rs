//! Sharding: rooms spread over media threads, calls and signals reach the right one, the room
//! limit holds over all of them, a closed room's name is free again, and one stalled thread fails
//! readiness.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::sfu::{JoinError, JoinParams, Mode, SfuConfig};

fn driver(threads: usize, max_rooms: u32) -> MediaDriver {
    MediaDriver::start(
        &MediaPlan {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            udp_port: 0,
            tcp_port: 0,
            threads,
            events: Default::default(),
            record: None,
        },
        SfuConfig {
            max_rooms,
            empty_timeout: Duration::from_secs(300),
            ..Default::default()
        },
    )
    .unwrap()
}

fn list(room: &str) -> Request {
    Request::ListParticipants { room: room.into() }
}

fn participants(reply: Result<Reply, MediaGone>) -> Option<Vec<lk::ParticipantInfo>> {
    match reply {
        Ok(Reply::Participants(p)) => p,
        other => panic!("not a participant list: {other:?}"),
    }
}

fn create(name: &str) -> Request {
    Request::CreateRoom {
        name: name.into(),
        settings: Default::default(),
        unix_ms: 0,
    }
}

fn created(reply: Result<Reply, MediaGone>) -> Result<lk::Room, JoinError> {
    match reply {
        Ok(Reply::Created(r)) => r,
        other => panic!("not a created room: {other:?}"),
    }
}

fn params(room: &str, identity: &str) -> JoinParams {
    JoinParams::for_test(room, identity, Mode::V0, 16)
}

async fn join(
    h: &MediaHandle,
    room: &str,
    identity: &str,
) -> (Result<(ShardPid, String), JoinError>, SessionRx) {
    let (tx, rx) = session_channel();
    let r = h
        .join(params(room, identity), h.new_conn_id(), tx)
        .await
        .unwrap();
    (r, rx)
}

/// Waits until `f` holds (the media threads update counters and routes at the end of a turn).
async fn until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_shard_binds_its_own_ports_and_offers_only_them() {
    let d = driver(3, 10);
    assert_eq!(d.shards.len(), 3);
    let mut ports: Vec<u16> = d.shards.iter().map(|s| s.udp_addrs[0].port()).collect();
    ports.extend(d.shards.iter().map(|s| s.tcp_addr.port()));
    let n = ports.len();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), n, "every shard has its own ports");
    assert_eq!(d.handle.shards(), 3);
    assert_eq!(d.heartbeats().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn new_rooms_go_to_the_least_loaded_shard_and_stay_there() {
    let d = driver(2, 10);
    let h = d.handle.clone();
    let (a1, _rx1) = join(&h, "a", "a1").await;
    let a1 = a1.unwrap().0;
    assert_eq!(a1.shard, 0);
    until("a's participant counted", || {
        h.shard_stats(0)
            .unwrap()
            .participants
            .load(Ordering::Relaxed)
            == 1
    })
    .await;
    // Shard 1 has fewer participants: the next new room goes there.
    let (b1, _rx2) = join(&h, "b", "b1").await;
    assert_eq!(b1.unwrap().0.shard, 1);
    // Joins to an existing room follow it, however loaded its shard is.
    let mut keep = vec![];
    for i in 0..3 {
        let (r, rx) = join(&h, "b", &format!("b{}", i + 2)).await;
        assert_eq!(r.unwrap().0.shard, 1);
        keep.push(rx);
    }
    until("b's participants counted", || {
        h.shard_stats(1)
            .unwrap()
            .participants
            .load(Ordering::Relaxed)
            == 4
    })
    .await;
    // Shard 0 (1 participant) is now the less loaded one.
    let (c1, _rx3) = join(&h, "c", "c1").await;
    assert_eq!(c1.unwrap().0.shard, 0);
    assert_eq!(h.shard_of("a"), Some(0));
    assert_eq!(h.shard_of("b"), Some(1));
    assert_eq!(h.shard_of("c"), Some(0));

    // Room-scoped calls reach the room's shard; fan-out calls see every room.
    let names: Vec<String> = h
        .list_rooms(vec![])
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    let b_people = participants(h.request("b", list("b")).await).unwrap();
    assert_eq!(b_people.len(), 4);
    assert!(participants(h.request_shard(0, list("b")).await).is_none());
    until("totals", || {
        let t = h.totals();
        t.rooms == 3 && t.participants == 6
    })
    .await;

    // A signal reaches the participant's own shard: a1 leaves, room a stays (empty timeout)
    // with nobody in it.
    h.signal(a1, lk::signal_request::Message::Leave(Default::default()))
        .unwrap();
    until("a1 gone", || h.totals().participants == 5).await;
    let a_people = participants(h.request("a", list("a")).await).unwrap();
    assert!(a_people.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_room_limit_holds_over_all_shards_and_a_closed_room_frees_its_slot() {
    let d = driver(2, 3);
    let h = d.handle.clone();
    for name in ["r1", "r2", "r3"] {
        let room = created(h.request(name, create(name)).await);
        assert_eq!(room.unwrap().name, name);
    }
    // Spread over both shards, three in all: a fourth is refused, by a join or a create.
    assert_ne!(h.shard_of("r1"), h.shard_of("r2"));
    let (r, _rx) = join(&h, "r4", "x").await;
    assert_eq!(r.unwrap_err(), JoinError::TooManyRooms(3));
    let refused = created(h.request("r4", create("r4")).await);
    assert_eq!(refused.unwrap_err(), JoinError::TooManyRooms(3));
    // A join to an existing room is not a new room.
    let (r, _rx2) = join(&h, "r2", "y").await;
    assert!(r.is_ok());

    // Deleting a room (on its shard) frees its name and its slot.
    let shard = h.shard_of("r1").unwrap();
    let deleted = h.request("r1", Request::DeleteRoom { room: "r1".into() });
    assert!(matches!(deleted.await, Ok(Reply::Found(true))));
    until("r1's route dropped", || h.shard_of("r1").is_none()).await;
    let (r, _rx3) = join(&h, "r4", "z").await;
    assert_eq!(
        r.unwrap().0.shard,
        shard,
        "the freed shard is the least loaded"
    );
    assert_eq!(h.list_rooms(vec![]).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn resuming_in_a_room_that_is_gone_is_refused() {
    let d = driver(2, 10);
    let mut p = params("nowhere", "ghost");
    p.resume_sid = Some("PA_gone".into());
    let (tx, _rx) = session_channel();
    let r = d.handle.join(p, 1, tx).await.unwrap();
    assert_eq!(r.unwrap_err(), JoinError::CannotResume("PA_gone".into()));
    assert_eq!(d.handle.shard_of("nowhere"), None);
}

/// One media thread that stops turning fails readiness (and the watchdog's age) although the
/// others turn; readiness recovers when it turns again.
#[tokio::test(flavor = "multi_thread")]
async fn one_stalled_shard_fails_readiness() {
    let d = driver(2, 10);
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::state::SledStore::open(dir.path()).unwrap());
    let readiness = crate::api::Readiness::new(store, d.heartbeats());
    let media_check = |r: &crate::api::Readiness| {
        r.checks()
            .into_iter()
            .find(|c| c.name == "media")
            .map(|c| (c.ok, c.detail))
            .unwrap()
    };
    let (ok, detail) = media_check(&readiness);
    assert!(ok, "{detail}");
    assert!(
        detail.starts_with("2 media loops, the slowest last turned "),
        "{detail}"
    );

    let stall = crate::api::MEDIA_STALL + Duration::from_millis(700);
    let h = d.handle.clone();
    let blocked = tokio::spawn(async move {
        h.call_shard(1, move |_, _| std::thread::sleep(stall))
            .await
            .unwrap()
    });
    tokio::time::sleep(crate::api::MEDIA_STALL + Duration::from_millis(300)).await;
    let (ok, detail) = media_check(&readiness);
    assert!(!ok, "{detail}");
    assert!(detail.starts_with("media loop 1 of 2 stalled"), "{detail}");
    assert!(d.heartbeats()[0].age() < Duration::from_secs(1));
    assert!(oldest(&d.heartbeats()) >= crate::api::MEDIA_STALL);
    blocked.await.unwrap();
    until("shard 1 turns again", || {
        oldest(&d.heartbeats()) < Duration::from_secs(1)
    })
    .await;
    assert!(media_check(&readiness).0);
}

/// What `/metrics` reads per media thread: its Linux thread id (its `/proc/self/task/<tid>`
/// is that thread), its busy time, and the UDP datagrams and bytes it received (garbage is
/// counted too: it arrived).
#[tokio::test(flavor = "multi_thread")]
async fn each_shard_tells_its_thread_id_busy_time_and_udp_traffic() {
    let d = driver(2, 10);
    let stats: Vec<Arc<MediaStats>> = (0..2).map(|i| d.handle.shard_stats(i).unwrap()).collect();
    until("thread ids", || {
        stats.iter().all(|s| s.tid.load(Ordering::Relaxed) != 0)
    })
    .await;
    for (i, s) in stats.iter().enumerate() {
        let tid = s.tid.load(Ordering::Relaxed);
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap();
        assert_eq!(comm.trim(), format!("confab-media{i}"));
    }
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..10 {
        sock.send_to(&[0x42; 100], d.shards[1].udp_addrs[0])
            .unwrap();
    }
    until("10 datagrams of 100 bytes on shard 1", || {
        stats[1].datagrams.load(Ordering::Relaxed) == 10
            && stats[1].udp_bytes_in.load(Ordering::Relaxed) == 1000
    })
    .await;
    assert_eq!(stats[0].datagrams.load(Ordering::Relaxed), 0);
    // Every turn (at least each 100 ms) adds its work; the threads are mostly idle.
    until("busy time", || {
        stats.iter().all(|s| s.busy_ns.load(Ordering::Relaxed) > 0)
    })
    .await;
    let busy = Duration::from_nanos(stats[0].busy_ns.load(Ordering::Relaxed));
    assert!(
        busy < Duration::from_secs(5),
        "an idle thread is mostly waiting: {busy:?}"
    );
}
