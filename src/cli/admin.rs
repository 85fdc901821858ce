//! `confab admin set-password`: sets the first admin password from the device itself.
//!
//! Over the network the admin page always asks for the one-time setup code (a reverse proxy or a
//! container's port mapping makes every request look local, so "local" proves nothing). On the
//! device, whoever can read the state directory (root, the `confab` user) has the code already:
//! `confab serve` keeps it in `<state_dir>/setup-code` (mode 0600) while no password is set. This
//! command reads it and calls the running server's `POST /api/admin/setup` over HTTPS on
//! loopback, checking the server's certificate as `confab health` does.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::config::Config;
use crate::http::client::{self, ClientError};

#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Set the admin password of the running server (first setup, from the device itself). Asks
    /// for it twice on a terminal; otherwise reads one line from standard input.
    SetPassword(SetPasswordArgs),
}

#[derive(Args, Debug)]
struct SetPasswordArgs {
    /// CA certificate to trust (default: the local CA in the state directory, or the configured
    /// certificate chain).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

/// Where `confab serve` keeps the one-time setup code while no admin password is set.
pub fn setup_code_file(config: &Config) -> PathBuf {
    config.state_dir.join(crate::auth::admin::SETUP_CODE_FILE)
}

pub fn run(config: Config, args: AdminArgs) -> ExitCode {
    match args.command {
        AdminCommand::SetPassword(a) => match set_password(&config, &a) {
            Ok(()) => {
                println!("admin password set; log in on the admin page (/admin)");
                ExitCode::SUCCESS
            }
            Err(e) => super::fail(e),
        },
    }
}

fn set_password(config: &Config, args: &SetPasswordArgs) -> Result<(), String> {
    let path = setup_code_file(config);
    let code = match std::fs::read_to_string(&path) {
        Ok(c) => c.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no setup code at {}: either the admin password is set already (log in on the \
                 admin page), or confab is not running with this state directory (start it first)",
                path.display()
            ))
        }
        Err(e) => {
            return Err(format!(
                "cannot read {}: {e} (run this as root or as the user confab runs as)",
                path.display()
            ))
        }
    };
    let password = read_password()?;
    let addr = super::health::probe_addr(config);
    let (ca, server_name) = super::health::trust(config, args.ca.as_deref());
    let (connector, runtime) = super::health::client_for(&ca)?;
    let body = json!({ "password": password, "code": code });
    let request = client::post_json(
        &connector,
        addr,
        &server_name,
        "/api/admin/setup",
        &body,
        None,
    );
    let answer =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(30), request).await });
    let (status, body) = match answer {
        Err(_) => return Err(format!("no answer from https://{addr} within 30 s")),
        Ok(Err(ClientError::Connect { target, source })) => {
            return Err(format!(
                "confab is not running (nothing answers on {target}: {source})"
            ))
        }
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(a)) => a,
    };
    if status.is_success() {
        return Ok(());
    }
    let reason = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    Err(format!(
        "the server refused ({}): {reason}",
        status.as_u16()
    ))
}

/// The new password: typed twice without echo on a terminal, else the first line of stdin.
fn read_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    let first = prompt_hidden("New admin password: ")?;
    let second = prompt_hidden("Again: ")?;
    if first != second {
        return Err("the two passwords differ; nothing was changed".into());
    }
    Ok(first)
}

fn prompt_hidden(prompt: &str) -> Result<String, String> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let echo = EchoOff::new();
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    drop(echo);
    eprintln!();
    read.map_err(|e| format!("cannot read the password: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Turns the terminal's echo off on standard input until dropped.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: termios is plain old data; tcgetattr fills it for fd 0 or fails, and only a
        // filled one is used.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return EchoOff(None);
        }
        let saved = t;
        t.c_lflag &= !libc::ECHO;
        // SAFETY: fd 0 with a termios that tcgetattr returned, one flag cleared.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) } != 0 {
            return EchoOff(None);
        }
        EchoOff(Some(saved))
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings tcgetattr returned for the same fd.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, saved);
            }
        }
    }
}
