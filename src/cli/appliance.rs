//! `confab appliance setup|banner`: steps of the appliance image, run by its systemd units
//! (confab-setup.service, confab-banner.service). See `crate::appliance`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::appliance;

#[derive(Args, Debug)]
pub struct ApplianceArgs {
    #[command(subcommand)]
    command: ApplianceCommand,
}

#[derive(Subcommand, Debug)]
enum ApplianceCommand {
    /// Apply the owner's confab.toml from the boot partition, the hostname and console login.
    Setup,
    /// Wait for confab to be ready, then print where to reach it (and the admin setup code).
    Banner {
        /// The setup code file confab serve writes while no admin password is set.
        #[arg(long, default_value = "/run/confab/setup-code")]
        setup_code_file: PathBuf,
        /// How long to wait for /api/health/ready.
        #[arg(long, default_value = "600")]
        timeout_seconds: u64,
    },
}

pub fn run(config_path: Option<&std::path::Path>, args: ApplianceArgs) -> ExitCode {
    match args.command {
        ApplianceCommand::Setup => match appliance::setup(&appliance::Paths::default()) {
            Ok(report) => {
                if let Some(file) = &report.imported {
                    println!(
                        "confab-setup: applied {} (secrets moved to the data partition)",
                        file.display()
                    );
                }
                println!(
                    "confab-setup: hostname {}, console login {}",
                    report
                        .hostname
                        .as_deref()
                        .unwrap_or("confab (image default)"),
                    if report.console_login {
                        "enabled for root"
                    } else {
                        "disabled (every account locked)"
                    }
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("confab-setup: {e}");
                }
                ExitCode::FAILURE
            }
        },
        ApplianceCommand::Banner {
            setup_code_file,
            timeout_seconds,
        } => {
            let config =
                match crate::config::Config::load(config_path, &crate::config::process_env()) {
                    Ok(c) => c,
                    Err(errors) => {
                        eprint!("confab: {errors}");
                        return ExitCode::from(super::EXIT_CONFIG);
                    }
                };
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => return super::fail(e),
            };
            let text = runtime.block_on(appliance::banner(
                &config,
                &setup_code_file,
                Duration::from_secs(timeout_seconds),
            ));
            println!("{text}");
            ExitCode::SUCCESS
        }
    }
}
