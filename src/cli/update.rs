//! `confab update …`: check for, install and commit signed A/B updates, and show slot status.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::update::agent::{self, ApplyProgress};

#[derive(Args, Debug)]
pub struct UpdateArgs {
    #[command(subcommand)]
    command: UpdateCommand,
}

#[derive(Subcommand, Debug)]
enum UpdateCommand {
    /// Look for a newer signed release (update.url, or --from).
    Check {
        /// Release location: https://…/, file:///…/, a directory, or its manifest.json.
        #[arg(long, value_name = "URL|DIR")]
        from: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Install a release into the inactive slot and reboot into it once.
    Apply {
        #[arg(long, value_name = "URL|DIR")]
        from: Option<String>,
        /// Allow installing an older version than the running one.
        #[arg(long)]
        allow_downgrade: bool,
        /// Arm the trial boot but do not reboot now.
        #[arg(long)]
        no_reboot: bool,
    },
    /// Show both slots, the last check and the last install.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run the update agent service: periodic checks and the API socket for the admin UI.
    Agent,
    /// Commit the booted slot once the server reports ready (run by confab-health.service).
    MarkGood {
        /// How long to wait for /api/health/ready.
        #[arg(long, default_value = "120")]
        timeout_seconds: u64,
    },
}

pub fn run(config: Config, args: UpdateArgs) -> ExitCode {
    crate::systemd::init_logging(&config.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return super::fail(e),
    };
    match args.command {
        UpdateCommand::Check { from, json } => check(&runtime, &config, from.as_deref(), json),
        UpdateCommand::Apply {
            from,
            allow_downgrade,
            no_reboot,
        } => apply(
            &runtime,
            &config,
            from.as_deref(),
            allow_downgrade,
            no_reboot,
        ),
        UpdateCommand::Status { json } => status(&config, json),
        UpdateCommand::Agent => {
            let socket = config.update.socket.clone();
            match runtime.block_on(agent::server::run(config, &socket)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => super::fail(e),
            }
        }
        UpdateCommand::MarkGood { timeout_seconds } => {
            match runtime.block_on(agent::mark_good(
                &config,
                Duration::from_secs(timeout_seconds),
            )) {
                Ok(slot) => {
                    println!("slot {slot} committed");
                    ExitCode::SUCCESS
                }
                Err(e) => super::fail(e),
            }
        }
    }
}

/// `confab update check`.
fn check(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    from: Option<&str>,
    json: bool,
) -> ExitCode {
    match runtime.block_on(agent::check(config, from)) {
        Ok(r) if json => print_json(&r),
        Ok(r) if r.newer => {
            println!(
                "Update available: v{} (running v{})",
                r.available, r.current
            );
            if let Some(url) = &r.notes_url {
                println!("Release notes: {url}");
            }
            println!("Install it with: confab update apply");
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!(
                "Up to date: v{} (newest release: v{})",
                r.current, r.available
            );
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

/// `confab update apply`.
fn apply(
    runtime: &tokio::runtime::Runtime,
    config: &Config,
    from: Option<&str>,
    allow_downgrade: bool,
    no_reboot: bool,
) -> ExitCode {
    let reporter = Reporter::new();
    let result = runtime.block_on(agent::apply(
        config,
        from,
        allow_downgrade,
        !no_reboot,
        &|p| reporter.show(p),
    ));
    reporter.finish();
    match result {
        Ok(record) => {
            println!(
                "Installed v{} into slot {}: {}",
                record.version, record.slot, record.result
            );
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

/// `confab update status`.
fn status(config: &Config, json: bool) -> ExitCode {
    match agent::status(config) {
        Ok(s) if json => print_json(&s),
        Ok(s) => {
            println!(
                "running v{} on board {} (bootloader: {})",
                s.running, s.board, s.bootloader
            );
            for slot in &s.slots {
                println!(
                    "slot {}: {:?}{} {}",
                    slot.slot,
                    slot.health,
                    if slot.booted { " (booted)" } else { "" },
                    slot.version
                        .as_deref()
                        .map(|v| format!("v{v}"))
                        .unwrap_or_default()
                );
            }
            match &s.state.last_check {
                Some(c) => println!(
                    "last check: {}",
                    c.error.clone().unwrap_or_else(|| format!(
                        "v{}{}",
                        c.available.as_deref().unwrap_or("?"),
                        if c.newer {
                            " available"
                        } else {
                            " (up to date)"
                        }
                    ))
                ),
                None => println!("last check: never"),
            }
            if let Some(rollback) = &s.rollback {
                println!("rolled back: {rollback}");
            }
            if let Some(i) = &s.state.last_install {
                println!(
                    "last install: v{} into slot {}: {}",
                    i.version, i.slot, i.result
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

fn print_json(value: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string(value) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

/// A progress bar on a terminal; otherwise one line per step and per 10 % of a download.
struct Reporter {
    bar: Option<ProgressBar>,
    last: Mutex<(usize, u64)>,
}

impl Reporter {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg}\n{wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        Reporter {
            bar,
            last: Mutex::new((0, 0)),
        }
    }

    fn show(&self, p: &ApplyProgress) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let new_step = last.0 != p.step;
        if let Some(bar) = &self.bar {
            if new_step {
                bar.set_message(format!("step {}/{}: {}", p.step, p.steps, p.description));
            }
            bar.set_length(p.total);
            bar.set_position(p.bytes);
        } else {
            let tenth = (p.bytes * 10).checked_div(p.total).unwrap_or(0);
            if new_step {
                eprintln!("step {}/{}: {}", p.step, p.steps, p.description);
            } else if tenth != last.1 {
                eprintln!("  {}% ({} of {} bytes)", tenth * 10, p.bytes, p.total);
            }
            last.1 = tenth;
        }
        last.0 = p.step;
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
