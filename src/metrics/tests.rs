#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use prometheus_client::metrics::counter::Counter;

use super::*;

/// The samples of an exposition, `name{labels}` → value, after checking every line's shape: a
/// `# HELP` and `# TYPE` before each family's samples, and `name[{k="v",…}] value` samples of
/// a declared family.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "twice: {line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap();
        let family = types.keys().find(|f| {
            name == f.as_str()
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name == format!("{f}{s}"))
        });
        assert!(family.is_some(), "sample of an undeclared family: {line}");
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
        };
        assert!(
            samples.insert(series.to_string(), v).is_none(),
            "twice: {line}"
        );
    }
    samples
}

fn encode(s: Snapshot) -> String {
    let mut reg = Registry::default();
    reg.register_collector(Box::new(s));
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &reg).unwrap();
    out
}

fn busy_snapshot() -> Snapshot {
    let mut fine = vec![];
    let h = crate::sfu::delay::DelayHistogram::default();
    for us in [30, 40, 700, 3_000, 3_000_000] {
        h.record(Duration::from_micros(us));
    }
    h.add_to(&mut fine);
    Snapshot {
        uptime: 12.5,
        rss_bytes: Some(30 << 20),
        process_cpu_seconds: Some(1.25),
        rooms: 2,
        participants: 5,
        census: Some(Census {
            published_audio: 3,
            published_video: 2,
            subscribed_audio: 6,
            subscribed_video: 4,
        }),
        events: vec![(events::PARTICIPANT_JOINED, 7), (events::ROOM_STARTED, 2)],
        threads: vec![
            ThreadFigures {
                participants: 5,
                rooms: 2,
                cpu_seconds: Some(0.5),
                busy_seconds: 0.25,
                heartbeat_age: 0.05,
            },
            ThreadFigures {
                cpu_seconds: None,
                ..Default::default()
            },
        ],
        rtp_in: Rtp {
            packets: 1000,
            bytes: 900_000,
            nacks: 3,
            plis: 1,
            firs: 0,
        },
        rtp_out: Rtp {
            packets: 4000,
            bytes: 3_600_000,
            nacks: 9,
            plis: 2,
            firs: 1,
        },
        lost_out: 11,
        udp: [1100, 1_000_000, 4100, 3_700_000],
        tcp_connections: 1,
        delay: coarse(&fine, h.sum_us()),
        delay_audio: coarse(&[], 0),
        media: true,
    }
}

#[test]
fn the_exposition_parses_and_carries_the_figures() {
    let text = encode(busy_snapshot());
    let m = parse(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in:\n{text}"));
    assert_eq!(get("livekit_room_total"), 2.0);
    assert_eq!(get("livekit_participant_total"), 5.0);
    assert_eq!(get("livekit_track_published_total{kind=\"AUDIO\"}"), 3.0);
    assert_eq!(get("livekit_track_subscribed_total{kind=\"VIDEO\"}"), 4.0);
    assert_eq!(get("livekit_packet_total{direction=\"incoming\"}"), 1000.0);
    assert_eq!(
        get("livekit_packet_bytes_total{direction=\"outgoing\"}"),
        3_600_000.0
    );
    assert_eq!(get("livekit_nack_total{direction=\"outgoing\"}"), 9.0);
    assert_eq!(get("livekit_pli_total{direction=\"incoming\"}"), 1.0);
    assert_eq!(get("livekit_fir_total{direction=\"outgoing\"}"), 1.0);
    assert_eq!(
        get("livekit_packet_loss_total{direction=\"outgoing\"}"),
        11.0
    );
    assert_eq!(
        get("confab_udp_datagrams_total{direction=\"incoming\"}"),
        1100.0
    );
    assert_eq!(
        get("confab_udp_bytes_total{direction=\"outgoing\"}"),
        3_700_000.0
    );
    assert_eq!(
        get("confab_events_total{event=\"participant_joined\"}"),
        7.0
    );
    assert_eq!(
        get("confab_media_thread_cpu_seconds_total{thread=\"0\"}"),
        0.5
    );
    assert!(
        !m.contains_key("confab_media_thread_cpu_seconds_total{thread=\"1\"}"),
        "a thread whose CPU time is unknown is left out"
    );
    assert_eq!(
        get("confab_media_thread_busy_seconds_total{thread=\"1\"}"),
        0.0
    );
    assert_eq!(get("confab_media_thread_participants{thread=\"0\"}"), 5.0);
    assert_eq!(get("process_resident_memory_bytes"), (30 << 20) as f64);
    assert_eq!(get("process_cpu_seconds_total"), 1.25);
    assert_eq!(get("confab_uptime_seconds"), 12.5);
    let build = format!(
        "confab_build_info{{version=\"{}\",commit=\"{}\"}}",
        crate::version::VERSION,
        crate::version::COMMIT
    );
    assert_eq!(get(&build), 1.0);
    // The histogram is cumulative, in seconds, with the sum of what was recorded.
    let b = |le: &str| {
        get(&format!(
            "confab_forward_delay_seconds_bucket{{le=\"{le}\"}}"
        ))
    };
    assert_eq!(b("5e-05"), 2.0, "30 and 40 µs:\n{text}");
    assert_eq!(b("0.001"), 3.0);
    assert_eq!(b("0.005"), 4.0);
    assert_eq!(b("1"), 4.0);
    assert_eq!(b("+Inf"), 5.0, "3 s is beyond the last bound");
    assert_eq!(get("confab_forward_delay_seconds_count"), 5.0);
    let sum = get("confab_forward_delay_seconds_sum");
    assert!((sum - 3.00377).abs() < 1e-9, "{sum}");
    assert_eq!(get("confab_forward_delay_audio_seconds_count"), 0.0);
}

#[test]
fn without_media_threads_no_media_figure_is_made_up() {
    let s = Snapshot {
        census: None,
        events: EventCounts::default().read(),
        ..Default::default()
    };
    let m = parse(&encode(s));
    assert!(m.keys().all(|k| !k.starts_with("livekit_")), "{m:?}");
    assert!(m.contains_key("confab_events_total{event=\"room_started\"}"));
}

#[test]
fn a_census_that_did_not_come_leaves_the_track_gauges_out() {
    let s = Snapshot {
        census: None,
        ..busy_snapshot()
    };
    let m = parse(&encode(s));
    assert!(m.keys().all(|k| !k.starts_with("livekit_track_")), "{m:?}");
    assert_eq!(m["livekit_participant_total"], 5.0);
}

#[test]
fn every_fine_delay_bucket_lands_in_exactly_one_coarse_one() {
    let fine = vec![1u64; 400];
    let d = coarse(&fine, 0);
    assert_eq!(d.count, 400);
    assert_eq!(d.buckets.iter().map(|b| b.1).sum::<u64>(), 400);
    // 10 µs wide below 1 ms: 5 fine buckets end at or below 50 µs.
    assert_eq!(d.buckets[0], (50e-6, 5));
    assert_eq!(d.buckets.last().map(|b| b.0), Some(f64::INFINITY));
    // Every coarse bound is a fine bucket's upper bound (none straddles it).
    for b in DELAY_BOUNDS_US {
        assert!(
            (0..400).any(|i| delay::bucket_upper_us(i) == b),
            "{b} µs is not a fine bucket's bound"
        );
    }
}

#[test]
fn events_are_counted_by_name() {
    let counts = EventCounts::default();
    let ev = |name: &str| {
        Arc::new(Event {
            webhook: livekit_protocol::WebhookEvent {
                event: name.into(),
                ..Default::default()
            },
            agents: None,
        })
    };
    for name in [
        events::PARTICIPANT_JOINED,
        events::PARTICIPANT_JOINED,
        events::PARTICIPANT_LEFT,
        "something_new",
    ] {
        counts.deliver(&ev(name));
    }
    let read: BTreeMap<_, _> = counts.read().into_iter().collect();
    assert_eq!(read[events::PARTICIPANT_JOINED], 2);
    assert_eq!(read[events::PARTICIPANT_LEFT], 1);
    assert_eq!(read[events::ROOM_STARTED], 0);
}

#[test]
fn cpu_time_is_read_after_the_command_name() {
    // pid (comm) state ppid … utime stime: a command name with spaces and a ')'.
    let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100";
    assert_eq!(procfs::parse_cpu_seconds(stat, 100.0), Some(3.0));
    assert_eq!(procfs::parse_cpu_seconds("garbage", 100.0), None);
    assert_eq!(procfs::parse_cpu_seconds("1 (x) S 1", 100.0), None);
    let own = procfs::cpu_seconds("/proc/self/stat");
    assert!(own.is_some_and(|s| s >= 0.0), "{own:?}");
    assert!(procfs::rss_bytes().is_some_and(|b| b > 1 << 20));
}

#[tokio::test]
async fn other_subsystems_metrics_are_scraped_with_ours() {
    let m = Metrics::new();
    let delivered = Counter::<u64>::default();
    m.register(
        "confab_webhook_delivered",
        "Webhook requests answered with 2xx",
        delivered.clone(),
    );
    #[derive(Debug)]
    struct Jobs;
    impl Collector for Jobs {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            gauge(
                &mut enc,
                "confab_agent_workers",
                "Registered agent workers",
                2u64,
            )?;
            let jobs = [("running", 1u64), ("pending", 3)];
            labelled(
                &mut enc,
                "confab_agent_jobs",
                "Agent jobs by state",
                MetricType::Gauge,
                "state",
                &jobs,
            )
        }
    }
    m.register_collector(Box::new(Jobs));
    delivered.inc();
    let text = m.render().await;
    let s = parse(&text);
    assert_eq!(s["confab_webhook_delivered_total"], 1.0, "{text}");
    assert_eq!(s["confab_agent_workers"], 2.0);
    assert_eq!(s["confab_agent_jobs{state=\"pending\"}"], 3.0);
    assert!(s.contains_key("confab_uptime_seconds"));
}

/// The cost of a scrape with 50 participants in 5 rooms on 2 media threads (signalling joins:
/// each has its PeerConnection set up, no media flows). Prints the figures (`--nocapture`);
/// asserts only a generous bound, so a slow debug build on a shared machine passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrape_cost_with_fifty_participants() {
    use crate::media::{session_channel, MediaDriver, MediaPlan};
    use crate::sfu::{JoinParams, Mode, SfuConfig};
    let metrics = Arc::new(Metrics::new());
    let plan = MediaPlan {
        bind: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        udp_port: 0,
        tcp_port: 0,
        threads: 2,
        events: events::Bus::new(vec![metrics.events_sink()]),
        record: None,
    };
    let driver = MediaDriver::start(&plan, SfuConfig::default()).unwrap();
    metrics.set_media(driver.handle.clone());
    let mut sessions = vec![];
    for i in 0..50 {
        let (tx, rx) = session_channel();
        let params =
            JoinParams::for_test(&format!("room{}", i % 5), &format!("p{i}"), Mode::V0, 16);
        let h = &driver.handle;
        h.join(params, h.new_conn_id(), tx).await.unwrap().unwrap();
        sessions.push(rx);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while driver.handle.totals().participants < 50 {
        assert!(Instant::now() < deadline, "participants counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut times = vec![];
    let mut len = 0;
    for _ in 0..200 {
        let t = Instant::now();
        let text = metrics.render().await;
        times.push(t.elapsed());
        len = text.len();
        assert!(text.contains("\nlivekit_participant_total 50\n"), "{text}");
    }
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    let p99 = times[times.len() * 99 / 100];
    println!(
        "scrape with 50 participants on 2 media threads: mean {mean:?}, median {:?}, p99 {p99:?}, {len} bytes",
        times[times.len() / 2]
    );
    assert!(
        mean < Duration::from_millis(100),
        "a scrape took {mean:?} on average"
    );
    drop(sessions);
}
