//! Slow and idle clients cannot pile up connections in a running `confab serve` (issue 24 §3):
//! half-sent request headers, TLS connections that never send a request, idle HTTP/2 connections
//! and trickled request bodies are closed on time; connections beyond the per-address cap are
//! closed at once; and while one address floods, another still gets `/api/health` answered.
//!
//! Before the fix, 500 connections with half a request header stayed open 75 s and more, and
//! every one of them was accepted.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Daemon;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The daemon's per-address cap in this test (its default is 256).
const CAP: usize = 100;
/// Connections the flooding address tries.
const FLOOD: usize = 500;
/// The server's header and first-request timeouts are 10 s; allow for a loaded CI machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(20);

const FLOODER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// Another loopback address: Linux routes all of 127/8 to `lo`, so the server sees a second client.
const OWNER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn connector(ca: &Path, alpn: &[&[u8]]) -> TlsConnector {
    let roots = confab::http::client::roots_from_pem_files(&[ca]).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(confab::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

async fn tcp_from(from: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(SocketAddr::new(FLOODER, port)).await
}

async fn tls_from(
    tls: &TlsConnector,
    from: IpAddr,
    port: u16,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(from, port).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(Duration::from_secs(10), tls.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// Reads until the server closes the connection; how long that took (`None`: still open at
/// `limit`). Whatever the server says first (an HTTP/2 SETTINGS frame, a 408) is skipped.
async fn closed_after(mut s: TlsStream<TcpStream>, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| t.elapsed())
}

/// One whole `GET /api/health` over a new HTTP/1.1 connection from `from`: (status line, time).
async fn health_from(tls: &TlsConnector, from: IpAddr, port: u16) -> (String, Duration) {
    let t = Instant::now();
    let mut s = match tls_from(tls, from, port).await {
        Ok(s) => s,
        Err(e) => return (format!("no connection: {e}"), t.elapsed()),
    };
    let req = "GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return (format!("write failed: {e}"), t.elapsed());
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    (text.lines().next().unwrap_or("").to_string(), t.elapsed())
}

fn open_files(d: &Daemon) -> usize {
    let pid = d.child.as_ref().unwrap().id();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_capped_and_do_not_starve_others() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_with(dir.path(), common::free_ports(), |c| {
        c.env("CONFAB_MAX_CONNECTIONS_PER_ADDRESS", CAP.to_string());
    });
    let port = d.https;
    let h1 = connector(&d.ca(), &[]);
    let h2 = connector(&d.ca(), &[b"h2"]);
    let files_before = open_files(&d);

    // The flood: half send half a request header, half send nothing after the handshake.
    let started = Instant::now();
    let mut tries = Vec::new();
    for i in 0..FLOOD {
        let h1 = h1.clone();
        tries.push(tokio::spawn(async move {
            let mut s = tls_from(&h1, FLOODER, port).await.ok()?;
            if i % 2 == 0 {
                let half = "GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
                s.write_all(half.as_bytes()).await.ok()?;
            }
            // A refused connection shows as EOF (or a reset) at the first read: wait for it.
            let mut probe = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(1500), s.read(&mut probe)).await {
                Err(_) => Some(s),
                Ok(_) => None,
            }
        }));
    }
    let mut held = Vec::new();
    for t in tries {
        if let Some(s) = t.await.unwrap() {
            held.push(s);
        }
    }
    let accepted = held.len();
    let files_flooded = open_files(&d);
    eprintln!(
        "slowloris: {accepted} of {FLOOD} connections from {FLOODER} held open (cap {CAP}); \
         open files {files_before} → {files_flooded}"
    );
    assert!(
        accepted <= CAP,
        "{accepted} connections from one address were accepted; the cap is {CAP}"
    );
    assert!(
        accepted >= CAP - 10,
        "only {accepted} of the first {CAP} connections were kept"
    );
    assert!(
        files_flooded <= files_before + CAP + 20,
        "open files grew from {files_before} to {files_flooded} with {accepted} connections held"
    );

    // Another address is served meanwhile; the flooding one gets no new connection.
    let (status, took) = health_from(&h1, OWNER, port).await;
    eprintln!("slowloris: /api/health from {OWNER} during the flood: {status:?} in {took:?}");
    assert!(status.contains(" 200"), "health during the flood: {status}");
    let (refused, _) = health_from(&h1, FLOODER, port).await;
    assert!(
        !refused.contains(" 200"),
        "a connection beyond the per-address cap was served: {refused}"
    );

    // An idle HTTP/2 connection (preface and SETTINGS, then nothing) is closed too.
    let mut idle_h2 = tls_from(&h2, OWNER, port).await.unwrap();
    assert_eq!(
        idle_h2.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the server did not pick HTTP/2"
    );
    idle_h2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();

    // A body that trickles: the first bytes, then nothing.
    let mut trickle = tls_from(&h1, OWNER, port).await.unwrap();
    trickle
        .write_all(
            b"POST /api/join HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"room\":",
        )
        .await
        .unwrap();

    // Every held flood connection is closed by the server, none stays.
    let waits: Vec<_> = held
        .into_iter()
        .map(|s| tokio::spawn(closed_after(s, CLOSED_WITHIN)))
        .collect();
    let mut slowest = Duration::ZERO;
    let mut still_open = 0;
    for w in waits {
        match w.await.unwrap() {
            Some(_) => slowest = slowest.max(started.elapsed()),
            None => still_open += 1,
        }
    }
    eprintln!("slowloris: the last flood connection closed {slowest:?} after the flood began");
    assert_eq!(
        still_open, 0,
        "{still_open} half-open connections still open after {CLOSED_WITHIN:?}"
    );

    let h2_closed = closed_after(idle_h2, CLOSED_WITHIN).await;
    eprintln!("slowloris: an idle HTTP/2 connection closed after {h2_closed:?}");
    assert!(h2_closed.is_some(), "an idle HTTP/2 connection stayed open");

    let mut answer = Vec::new();
    let read = tokio::time::timeout(CLOSED_WITHIN, trickle.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "a trickled body kept its connection open");
    assert!(
        answer.starts_with("HTTP/1.1 408"),
        "a trickled body was answered {:?}",
        answer.lines().next()
    );

    // Once the flood is gone, its address is served again.
    let (status, _) = health_from(&h1, FLOODER, port).await;
    assert!(status.contains(" 200"), "health after the flood: {status}");
    let stderr = d.stderr();
    assert!(
        stderr.contains("http.max_connections_per_address"),
        "the refusals were not logged with the setting to change"
    );
}
