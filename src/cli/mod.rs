//! The command line: `serve` (default), `version`, `token`, `status`, `admin`, `backup`,
//! `restore`, `update`, …

mod admin;
mod appliance;
mod backup;
mod health;
mod serve;
mod status;
mod token;
mod update;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config};

/// Exit code for a configuration that does not validate.
pub const EXIT_CONFIG: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "confab",
    version = crate::version::LONG,
    about = "Self-hosted, LiveKit-compatible video conferencing in one binary"
)]
pub struct Cli {
    /// Read only this configuration file (default: /usr/lib/confab/confab.toml,
    /// /etc/confab/confab.toml and ./confab.toml, those that exist, later ones winning).
    #[arg(long, global = true, env = "CONFAB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (the default when no command is given).
    Serve,
    /// Print version, commit and build date.
    Version,
    /// Mint a LiveKit-compatible access token with this device's API key.
    Token(token::TokenArgs),
    /// Ask the running server for its version, uptime and rooms.
    Status(status::StatusArgs),
    /// Admin tasks on the device itself (`set-password`: the first admin password).
    Admin(admin::AdminArgs),
    /// Write a backup of this device (state, API key, local CA, settings) to a file; works while
    /// confab runs.
    Backup(backup::BackupArgs),
    /// Replace this device's state with a backup (confab must be stopped; the current state is
    /// kept aside).
    Restore(backup::RestoreArgs),
    /// Check for, install and commit signed A/B updates.
    Update(update::UpdateArgs),
    /// Exit 0 if the local server answers ready, 1 otherwise (for container health checks).
    Health(health::HealthArgs),
    /// Steps of the appliance image run by its systemd units (setup, console banner).
    #[command(hide = true)]
    Appliance(appliance::ApplianceArgs),
}

pub fn run(cli: Cli) -> ExitCode {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Version => {
            println!("confab {}", crate::version::long());
            println!("target: {}", std::env::consts::ARCH);
            ExitCode::SUCCESS
        }
        Command::Serve => with_config(cli.config, serve::run),
        Command::Token(args) => with_config(cli.config, |c| token::run(c, args)),
        Command::Status(args) => with_config(cli.config, |c| status::run(c, args)),
        Command::Admin(args) => with_config(cli.config, |c| admin::run(c, args)),
        Command::Backup(args) => with_config(cli.config, |c| backup::run_backup(c, args)),
        Command::Restore(args) => with_config(cli.config, |c| backup::run_restore(c, args)),
        Command::Update(args) => with_config(cli.config, |c| update::run(c, args)),
        Command::Health(args) => health::run(cli.config.as_deref(), args),
        Command::Appliance(args) => appliance::run(cli.config.as_deref(), args),
    }
}

/// Loads and validates the configuration; on failure prints every problem and exits with 2.
fn with_config(path: Option<PathBuf>, f: impl FnOnce(Config) -> ExitCode) -> ExitCode {
    match Config::load(path.as_deref(), &config::process_env()) {
        Ok(c) => f(c),
        Err(errors) => {
            eprint!("confab: {errors}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Prints an error for the user and returns exit code 1.
fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("confab: {message}");
    ExitCode::FAILURE
}
