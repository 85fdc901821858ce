//! Health endpoint latency, idle and while the server is busy.
//!
//! Starts the real `confab serve` on loopback, then probes `/api/health`, `/api/health/ready` and
//! `/api/health/live` one request per new TLS connection (as a health checker does): first on an
//! idle server, then while 64 clients keep it busy opening TLS connections and fetching `/ca.crt`
//! and `/`. Prints count, p50/p90/p99/max per endpoint and phase, and whether every p99 and max is
//! under the 100 ms target. `CONFAB_BENCH_QUICK=1` runs short phases (CI).
//! A missed target is reported, not failed: this is a measurement, not a test.
#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use confab::http::client::{connector_for_ca, get};

const TARGET: Duration = Duration::from_millis(100);
const ENDPOINTS: [&str; 3] = ["/api/health", "/api/health/ready", "/api/health/live"];
const LOAD_CLIENTS: usize = 64;

/// Kills the server however the benchmark ends.
struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn free_port_tcp() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(dir: &Path) -> (Server, u16) {
    let https = free_port_tcp();
    let udp = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tcp = free_port_tcp();
    let child = Command::new(env!("CARGO_BIN_EXE_confab"))
        .arg("serve")
        .env_clear()
        .env("CONFAB_STATE_DIR", dir.join("data"))
        .env("CONFAB_BIND", "127.0.0.1")
        .env("CONFAB_HTTPS_PORT", https.to_string())
        .env("CONFAB_HTTP_PORT", "0")
        .env("CONFAB_UDP_PORT", udp.to_string())
        .env("CONFAB_TCP_PORT", tcp.to_string())
        .env("CONFAB_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start confab");
    (Server(child), https)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var_os("CONFAB_BENCH_QUICK").is_some();
    let (probes, phase) = if quick {
        (40, Duration::from_secs(1))
    } else {
        (300, Duration::from_secs(5))
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, port) = start(dir.path());
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ca = dir.path().join("data/tls/ca.crt");

    let deadline = Instant::now() + Duration::from_secs(30);
    let connector = loop {
        if let Ok(c) = connector_for_ca(&ca) {
            if get(&c, addr, "localhost", "/api/health/live", None)
                .await
                .is_ok()
            {
                break c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "confab did not become live within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    println!(
        "health endpoint latency, one TLS connection per request, target < {} ms",
        TARGET.as_millis()
    );
    println!(
        "machine: {} cores; mode: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if quick { "quick" } else { "full" }
    );
    println!(
        "{:<6} {:<20} {:>6} {:>8} {:>8} {:>8} {:>8}",
        "phase", "endpoint", "count", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    let mut all_ok = true;

    for busy in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let mut load = Vec::new();
        if busy {
            for i in 0..LOAD_CLIENTS {
                let (c, stop, served) = (connector.clone(), stop.clone(), served.clone());
                load.push(tokio::spawn(async move {
                    let path = if i % 2 == 0 { "/ca.crt" } else { "/" };
                    while !stop.load(Ordering::Relaxed) {
                        if get(&c, addr, "localhost", path, None).await.is_ok() {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            // Let the load reach steady state before probing.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let started = Instant::now();
        for endpoint in ENDPOINTS {
            let mut times = Vec::with_capacity(probes);
            let phase_end = Instant::now() + phase;
            while times.len() < probes && (Instant::now() < phase_end || times.len() < 10) {
                let t = Instant::now();
                let (status, _) = get(&connector, addr, "localhost", endpoint, None)
                    .await
                    .unwrap();
                times.push(t.elapsed());
                assert!(status.is_success(), "{endpoint} answered {status}");
            }
            times.sort();
            let (p99, max) = (percentile(&times, 0.99), *times.last().unwrap());
            all_ok &= p99 < TARGET && max < TARGET;
            println!(
                "{:<6} {:<20} {:>6} {:>8} {:>8} {:>8} {:>8}",
                if busy { "busy" } else { "idle" },
                endpoint,
                times.len(),
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.9)),
                ms(p99),
                ms(max)
            );
        }
        if busy {
            stop.store(true, Ordering::Relaxed);
            let elapsed = started.elapsed().as_secs_f64();
            for t in load {
                let _ = t.await;
            }
            println!(
                "busy load: {LOAD_CLIENTS} clients, {:.0} requests/s on new TLS connections during the probes",
                served.load(Ordering::Relaxed) as f64 / (elapsed + 0.3)
            );
        }
    }
    println!(
        "target (every p99 and max < {} ms): {}",
        TARGET.as_millis(),
        if all_ok { "met" } else { "MISSED" }
    );
}
