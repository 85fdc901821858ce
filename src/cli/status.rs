//! `confab status`: asks the running server (over HTTPS on loopback, with a short-lived token
//! signed by this device's key) and prints version, uptime, rooms and readiness.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::auth::{self, ApiKeys, TokenRequest, VideoGrant};
use crate::config::{Config, TlsSource};
use crate::http::client;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the server's answer as JSON.
    #[arg(long)]
    json: bool,
    /// CA certificate to trust (default: the local CA in the state directory, or the configured
    /// certificate chain).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

pub fn run(config: Config, args: StatusArgs) -> ExitCode {
    let keys = match ApiKeys::load(&config, false) {
        Ok((k, _)) => k,
        Err(e) => return super::fail(e),
    };
    let Some((key, _)) = keys.primary() else {
        return super::fail("no API key configured");
    };
    let req = TokenRequest {
        identity: "confab-status".into(),
        ttl: Duration::from_secs(60),
        video: VideoGrant {
            room_list: Some(true),
            ..Default::default()
        },
        ..Default::default()
    };
    let token = match auth::mint(&keys, key, &req) {
        Ok(t) => t,
        Err(e) => return super::fail(e),
    };
    let (ca, server_name) = match (&args.ca, &config.http.tls) {
        (Some(ca), _) => (ca.clone(), "localhost".to_string()),
        (None, TlsSource::LocalCa) => (
            config.state_dir.join("tls").join(crate::tls::CA_CERT_FILE),
            "localhost".to_string(),
        ),
        (None, TlsSource::Files { cert, .. }) => (cert.clone(), public_host(&config)),
    };
    let connector = match client::connector_for_ca(&ca) {
        Ok(c) => c,
        Err(e) => return super::fail(e),
    };
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), config.http.https_port);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(e),
    };
    let result = runtime.block_on(client::get(
        &connector,
        addr,
        &server_name,
        "/api/status",
        Some(&token),
    ));
    let (status, body) = match result {
        Ok(r) => r,
        Err(client::ClientError::Connect { target, source }) => {
            return super::fail(format!(
                "confab is not running (nothing answers on {target}: {source})"
            ))
        }
        Err(e) => return super::fail(e),
    };
    if !status.is_success() {
        return super::fail(format!(
            "the server answered {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let json: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => return super::fail(format!("unexpected answer from the server: {e}")),
    };
    if args.json {
        println!("{json}");
    } else {
        println!(
            "confab {} ({} {})",
            json["version"].as_str().unwrap_or("?"),
            json["commit"].as_str().unwrap_or("?"),
            json["build_date"].as_str().unwrap_or("?")
        );
        println!(
            "uptime:       {}",
            human_duration(json["uptime_seconds"].as_u64().unwrap_or(0))
        );
        println!("rooms:        {}", json["rooms"]);
        println!("participants: {}", json["participants"]);
        let delay = &json["forward_delay_us"];
        match (delay["p50"].as_u64(), delay["p99"].as_u64()) {
            (Some(p50), Some(p99)) => {
                // The last bucket (over 1 s) has no upper bound.
                let ms = |us: u64| match us {
                    u64::MAX => "over 1000 ms".to_string(),
                    _ => format!("{:.2} ms", us as f64 / 1000.0),
                };
                // Audio alone: str0m does not pace it, so this is confab's processing.
                let audio = json["forward_delay_audio_us"]["p99"]
                    .as_u64()
                    .map(|p99| format!("; audio p99 {}", ms(p99)))
                    .unwrap_or_default();
                println!(
                    "forwarding:   p50 {}, p99 {} added by confab ({} packets measured{audio})",
                    ms(p50),
                    ms(p99),
                    delay["count"]
                )
            }
            _ => println!("forwarding:   nothing forwarded yet"),
        }
        println!(
            "ready:        {}",
            if json["ready"] == true {
                "yes"
            } else {
                "no (see /api/health/ready)"
            }
        );
        println!("update:       {}", json["update"].as_str().unwrap_or("?"));
    }
    ExitCode::SUCCESS
}

fn public_host(config: &Config) -> String {
    config
        .public_url
        .as_deref()
        .and_then(|u| u.parse::<hyper::Uri>().ok())
        .and_then(|u| u.host().map(str::to_string))
        .unwrap_or_else(|| "localhost".to_string())
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}
