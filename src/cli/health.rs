//! `confab health`: is the local server ready? Probes `/api/health/ready` over HTTPS on this
//! host and exits 0 when it answers 200, 1 otherwise with a one-line reason on stderr. Made for
//! container health checks (`HEALTHCHECK`, compose `healthcheck:`): the image has no curl.
//!
//! The server certificate is verified, not skipped: with the local CA (the default) the probe
//! trusts only `<state_dir>/tls/ca.crt` and checks the name `localhost`, which the local CA
//! always signs; with operator certificates (`http.tls_cert`) it trusts that chain and checks the
//! host of `public_url` (or `localhost`). So "healthy" also means "serves the certificate this
//! configuration says it should", and the probe never talks to an impostor on the port.
//!
//! Exit codes follow Docker's health-check contract: 0 ready, 1 anything else — including a
//! configuration that does not validate (Docker reserves 2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::config::{self, Config, TlsSource};
use crate::http::client::{self, ClientError};

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Give up after this many seconds (connect, TLS handshake and answer together).
    #[arg(long, default_value_t = 5, value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=300))]
    timeout: u64,
    /// CA certificate to trust (default: the local CA in the state directory, or the configured
    /// certificate chain).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Print nothing when ready (the reason for a failure is still printed).
    #[arg(long, short)]
    quiet: bool,
}

/// Loads the configuration itself (a bad one is exit 1 with a one-line reason, not exit 2) and
/// probes the server.
pub fn run(config_path: Option<&Path>, args: HealthArgs) -> ExitCode {
    let config = match Config::load(config_path, &config::process_env()) {
        Ok(c) => c,
        Err(errors) => {
            let first = errors
                .0
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            let more = match errors.0.len() {
                0 | 1 => String::new(),
                n => format!(" (and {} more; `confab serve` lists them all)", n - 1),
            };
            return unhealthy(format!("invalid configuration: {first}{more}"));
        }
    };
    match probe(&config, &args) {
        Ok(target) => {
            if !args.quiet {
                println!("ready ({target})");
            }
            ExitCode::SUCCESS
        }
        Err(reason) => unhealthy(reason),
    }
}

fn unhealthy(reason: String) -> ExitCode {
    // One line, whatever the server or the OS put into the reason.
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    eprintln!("confab: not ready: {line}");
    ExitCode::FAILURE
}

/// Where to connect: the configured bind address, or loopback when it is a wildcard.
pub(super) fn probe_addr(config: &Config) -> SocketAddr {
    let ip = match config.http.bind {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        // `::` is dual-stack (or fell back to IPv4 only): 127.0.0.1 reaches it either way.
        IpAddr::V6(a) if a == Ipv6Addr::UNSPECIFIED => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, config.http.https_port)
}

/// The CA file to trust and the name to check on the server's certificate.
pub(super) fn trust(config: &Config, ca: Option<&Path>) -> (PathBuf, String) {
    match (ca, &config.http.tls) {
        (Some(ca), TlsSource::Files { .. }) => (ca.to_path_buf(), public_host(config)),
        (Some(ca), TlsSource::LocalCa) => (ca.to_path_buf(), "localhost".into()),
        (None, TlsSource::LocalCa) => (
            config.state_dir.join("tls").join(crate::tls::CA_CERT_FILE),
            "localhost".into(),
        ),
        (None, TlsSource::Files { cert, .. }) => (cert.clone(), public_host(config)),
    }
}

fn public_host(config: &Config) -> String {
    config
        .public_url
        .as_deref()
        .and_then(|u| u.parse::<hyper::Uri>().ok())
        .and_then(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// A connector trusting only `ca`, and a runtime to run one request to the local server on
/// (`confab health`, `admin set-password`, `backup`).
pub(super) fn client_for(
    ca: &Path,
) -> Result<(tokio_rustls::TlsConnector, tokio::runtime::Runtime), String> {
    let connector = client::connector_for_ca(ca).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    Ok((connector, runtime))
}

/// Ok(description of what answered) when the server is ready; Err(one-line reason) otherwise.
fn probe(config: &Config, args: &HealthArgs) -> Result<String, String> {
    let addr = probe_addr(config);
    let (ca, server_name) = trust(config, args.ca.as_deref());
    if !ca.exists() {
        return Err(match config.http.tls {
            TlsSource::LocalCa if args.ca.is_none() => format!(
                "no local CA at {} yet (confab has not finished its first start, or \
                 state_dir points elsewhere than the server's)",
                ca.display()
            ),
            _ => format!("CA certificate {} does not exist", ca.display()),
        });
    }
    let (connector, runtime) = client_for(&ca)?;
    let timeout = Duration::from_secs(args.timeout);
    let request = client::get(&connector, addr, &server_name, "/api/health/ready", None);
    let (status, body) =
        match runtime.block_on(async { tokio::time::timeout(timeout, request).await }) {
            Err(_) => {
                return Err(format!(
                    "no answer from https://{addr} within {} s",
                    args.timeout
                ))
            }
            Ok(Err(ClientError::Connect { target, source })) => {
                return Err(format!(
                    "confab is not running (nothing answers on {target}: {source})"
                ))
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(answer)) => answer,
        };
    if status.is_success() {
        return Ok(format!("https://{server_name}:{} via {addr}", addr.port()));
    }
    Err(describe_not_ready(status, &body))
}

/// "503: media (media loop last turned 6012 ms ago), shutdown (…)" from the readiness answer.
fn describe_not_ready(status: hyper::StatusCode, body: &[u8]) -> String {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let failing: Vec<String> = json
        .as_ref()
        .and_then(|j| j["failing"].as_array())
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.as_str())
                .map(|name| {
                    let detail = json
                        .as_ref()
                        .and_then(|j| j["checks"][name]["detail"].as_str());
                    match detail {
                        Some(d) => format!("{name} ({d})"),
                        None => name.to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if failing.is_empty() {
        let text = String::from_utf8_lossy(body);
        let text: String = text.chars().take(200).collect();
        format!("the server answered {status}: {text}")
    } else {
        format!("{}: {}", status.as_u16(), failing.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_503_names_each_failing_check_with_its_detail() {
        let body = br#"{"status":"not ready","failing":["media","shutdown"],"checks":{
            "state":{"ok":true,"detail":"open"},
            "media":{"ok":false,"detail":"media loop last turned 6012 ms ago"},
            "shutdown":{"ok":false,"detail":"shutting down, draining connections"}}}"#;
        assert_eq!(
            describe_not_ready(hyper::StatusCode::SERVICE_UNAVAILABLE, body),
            "503: media (media loop last turned 6012 ms ago), \
             shutdown (shutting down, draining connections)"
        );
    }

    #[test]
    fn an_unexpected_answer_is_quoted_not_parsed() {
        assert_eq!(
            describe_not_ready(hyper::StatusCode::NOT_FOUND, b"{\"error\":\"not found\"}"),
            "the server answered 404 Not Found: {\"error\":\"not found\"}"
        );
    }

    fn config(bind: &str) -> Config {
        let env: config::Env = [("CONFAB_BIND", bind), ("CONFAB_HTTPS_PORT", "8443")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_layers(&[], &env).unwrap()
    }

    #[test]
    fn wildcard_binds_are_probed_on_loopback_specific_ones_on_their_address() {
        let loopback: SocketAddr = "127.0.0.1:8443".parse().unwrap();
        assert_eq!(probe_addr(&config("::")), loopback);
        assert_eq!(probe_addr(&config("0.0.0.0")), loopback);
        assert_eq!(
            probe_addr(&config("192.0.2.7")),
            "192.0.2.7:8443".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            probe_addr(&config("::1")),
            "[::1]:8443".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn operator_certificates_are_checked_for_the_public_host() {
        let dir = tempfile::tempdir().unwrap();
        let (chain, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
        std::fs::write(&chain, "").unwrap();
        std::fs::write(&key, "").unwrap();
        let env: config::Env = [
            ("CONFAB_TLS_CERT", chain.to_str().unwrap()),
            ("CONFAB_TLS_KEY", key.to_str().unwrap()),
            ("CONFAB_PUBLIC_URL", "wss://meet.example.org"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let c = Config::from_layers(&[], &env).unwrap();
        assert_eq!(trust(&c, None), (chain, "meet.example.org".to_string()));
        let (ca, name) = trust(&config("::"), None);
        assert!(ca.ends_with("tls/ca.crt"), "{}", ca.display());
        assert_eq!(name, "localhost");
    }
}
