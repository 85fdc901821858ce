//! The IO side of updates: fetch and verify a release, run an [`InstallPlan`] against the real
//! bootloader and slot devices, commit after the health gate, and keep the agent's own small state
//! file (atomic write + fsync + rename; never sled, which belongs to `confab serve`).

pub mod client;
pub mod fetch;
pub mod server;
pub mod slot;
pub mod state;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use self::fetch::{FetchError, Source};
use self::slot::SlotError;
use self::state::{AgentState, CheckRecord, InstallRecord};
use super::bootloader::fake::FakeBootloader;
use super::bootloader::rpi_tryboot::RpiTryboot;
use super::bootloader::systemd_boot::SystemdBoot;
use super::bootloader::uboot::Uboot;
use super::bootloader::{BootError, Bootloader};
use super::install::{InstallPlan, PlanError, Step};
use super::manifest::Manifest;
use super::verify::{verify_release, TrustedKeys, Verified, VerifyError};
use super::{Slot, SlotHealth};
use crate::config::{BootloaderKind, Config};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const SIGNATURE_FILE: &str = "manifest.json.minisig";
const MANIFEST_LIMIT: usize = 64 * 1024;
const SIGNATURE_LIMIT: usize = 4 * 1024;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpdateError {
    #[error("no update source: set update.url (CONFAB_UPDATE_URL) or pass --from")]
    NoSource,
    #[error(
        "this installation has no A/B slots (update.bootloader = none), so updates cannot be \
         installed here{0}"
    )]
    NoSlots(String),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("cannot load the trusted release keys: {0}")]
    Keys(String),
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(
        "{file} is {found} bytes but the signed manifest says {signed}: the release is incomplete \
         (truncated or still uploading); nothing was written"
    )]
    Incomplete {
        file: String,
        found: u64,
        signed: u64,
    },
    #[error("the health check did not pass within {0:?}: {1}")]
    Unhealthy(Duration, String),
    #[error("cannot run {0:?}: {1}")]
    Reboot(Vec<String>, String),
    #[error("update state file {path}: {detail}")]
    State { path: PathBuf, detail: String },
}

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub current: String,
    pub available: String,
    pub newer: bool,
    pub notes_url: Option<String>,
    pub signed_by: String,
}

/// Both slots as the bootloader sees them.
#[derive(Debug, Clone, Serialize)]
pub struct SlotReport {
    pub slot: Slot,
    pub health: SlotHealth,
    pub version: Option<String>,
    pub booted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub bootloader: &'static str,
    pub board: String,
    pub running: String,
    pub slots: Vec<SlotReport>,
    pub state: AgentState,
    /// Set when the last installed release did not become healthy and the device went back.
    pub rollback: Option<String>,
}

/// Progress of an install, for the terminal and the API.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyProgress {
    pub step: usize,
    pub steps: usize,
    pub description: String,
    pub bytes: u64,
    pub total: u64,
}

/// The running version: the image's release version on the appliance (os-release
/// `IMAGE_VERSION`), this binary's elsewhere.
pub fn running_version() -> semver::Version {
    semver::Version::parse(&crate::version::system_version())
        .unwrap_or_else(|_| semver::Version::new(0, 0, 0))
}

/// The bootloader this device is configured with, or `None` for a device without slots.
pub fn open_bootloader(config: &Config) -> Result<Option<Box<dyn Bootloader>>, UpdateError> {
    let u = &config.update;
    Ok(match u.bootloader {
        BootloaderKind::None => None,
        BootloaderKind::SystemdBoot => Some(Box::new(SystemdBoot::new(u.esp_dir.clone()))),
        BootloaderKind::RpiTryboot => Some(Box::new(RpiTryboot::new(u.boot_dir.clone()))),
        BootloaderKind::Uboot => Some(Box::new(Uboot::new(u.boot_dir.clone()))),
        BootloaderKind::Fake => Some(Box::new(FakeBootloader::open(&u.esp_dir)?)),
    })
}

fn source(config: &Config, from: Option<&str>) -> Result<Source, UpdateError> {
    let url = from
        .map(str::to_string)
        .or_else(|| config.update.url.clone())
        .ok_or(UpdateError::NoSource)?;
    // A plain path given with --from is a file source: the release directory, or its manifest.
    let url = if url.starts_with('/') || url.starts_with('.') {
        let path = std::path::Path::new(&url);
        let dir = if path.is_file() {
            path.parent().unwrap_or(path)
        } else {
            path
        };
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        format!("file://{}", absolute.display())
    } else {
        url
    };
    Ok(Source::new(&url, config.update.ca_file.as_deref())?)
}

fn trusted_keys(config: &Config) -> Result<TrustedKeys, UpdateError> {
    TrustedKeys::from_pub_files(&config.update.trusted_keys)
        .map_err(|e| UpdateError::Keys(e.to_string()))
}

/// Fetches the manifest and its signature and verifies them for this device.
async fn fetch_release(
    config: &Config,
    source: &Source,
    allow_downgrade: bool,
) -> Result<Verified<Manifest>, UpdateError> {
    let keys = trusted_keys(config)?;
    let manifest = source.fetch_small(MANIFEST_FILE, MANIFEST_LIMIT).await?;
    let signature = source.fetch_small(SIGNATURE_FILE, SIGNATURE_LIMIT).await?;
    let signature = String::from_utf8_lossy(&signature);
    Ok(verify_release(
        &keys,
        &manifest,
        &signature,
        &config.update.board,
        &running_version(),
        allow_downgrade,
    )?)
}

/// `confab update check`: is a newer signed release available? Records the result.
pub async fn check(config: &Config, from: Option<&str>) -> Result<CheckReport, UpdateError> {
    let result = async {
        let source = source(config, from)?;
        // Downgrades are "available" only to report them; apply refuses them by default.
        let release = fetch_release(config, &source, true).await?;
        let running = running_version();
        Ok::<_, UpdateError>(CheckReport {
            current: running.to_string(),
            available: release.version.to_string(),
            newer: release.version > running,
            notes_url: release.notes_url.clone(),
            signed_by: release.key_id().to_string(),
        })
    };
    let result = match result.await {
        Err(UpdateError::Verify(VerifyError::AlreadyRunning { .. })) => Ok(CheckReport {
            current: running_version().to_string(),
            available: running_version().to_string(),
            newer: false,
            notes_url: None,
            signed_by: String::new(),
        }),
        other => other,
    };
    let record = CheckRecord::now(&result);
    state::update(&config.update.state_file, |s| s.last_check = Some(record))?;
    result
}

/// Refuses a release whose files at the source do not have the signed sizes (a truncated or
/// half-finished upload) before the bootloader or a slot is touched.
async fn check_sizes(source: &Source, release: &Verified<Manifest>) -> Result<(), UpdateError> {
    for artifact in std::iter::once(&release.image).chain(release.boot_files.iter()) {
        if let Some(size) = source
            .size(&artifact.file)
            .await
            .map_err(UpdateError::Fetch)?
        {
            if size != artifact.size {
                return Err(UpdateError::Incomplete {
                    file: source.describe(&artifact.file),
                    found: size,
                    signed: artifact.size,
                });
            }
        }
    }
    Ok(())
}

/// `confab update apply`: verify, write the inactive slot, arm a trial boot, and (unless
/// `reboot` is false) reboot into it.
pub async fn apply(
    config: &Config,
    from: Option<&str>,
    allow_downgrade: bool,
    reboot: bool,
    progress: &(dyn Fn(&ApplyProgress) + Sync),
) -> Result<InstallRecord, UpdateError> {
    let mut bootloader =
        open_bootloader(config)?.ok_or_else(|| UpdateError::NoSlots(String::new()))?;
    let source = source(config, from)?;
    let release = fetch_release(config, &source, allow_downgrade).await?;
    check_sizes(&source, &release).await?;
    let booted = bootloader.booted()?;
    let health = bootloader.health(booted)?;
    let mut plan = InstallPlan::new(&release, booted, health, reboot)?;
    info!(version = %release.version, target = %plan.target(), "installing update");
    let started = Instant::now();
    while let Some(step) = plan.next_step().cloned() {
        let (done, steps) = plan.progress();
        let report = |bytes: u64, total: u64| {
            progress(&ApplyProgress {
                step: done + 1,
                steps,
                description: step.describe(),
                bytes,
                total,
            })
        };
        report(0, 0);
        if step == Step::Reboot {
            let record = InstallRecord::new(
                &release,
                plan.target(),
                started,
                "rebooting into the new slot",
            );
            state::update(&config.update.state_file, |s| {
                s.last_install = Some(record.clone())
            })?;
        }
        execute_next(config, &source, bootloader.as_mut(), &mut plan, &report).await?;
    }
    let record = InstallRecord::new(
        &release,
        plan.target(),
        started,
        if reboot {
            "rebooting into the new slot"
        } else {
            "installed; reboot to try it"
        },
    );
    state::update(&config.update.state_file, |s| {
        s.last_install = Some(record.clone())
    })?;
    Ok(record)
}

/// Performs the plan's current step and advances it. Taking the plan (which only a verified
/// release can produce) rather than a bare step keeps slot writes behind the signature check.
pub async fn execute_next(
    config: &Config,
    source: &Source,
    bootloader: &mut dyn Bootloader,
    plan: &mut InstallPlan,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(), UpdateError> {
    let Some(step) = plan.next_step().cloned() else {
        return Ok(());
    };
    execute(config, source, bootloader, &step, progress).await?;
    plan.step_done();
    Ok(())
}

async fn execute(
    config: &Config,
    source: &Source,
    bootloader: &mut dyn Bootloader,
    step: &Step,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(), UpdateError> {
    match step {
        Step::MarkBad(slot) => bootloader.mark_bad(*slot)?,
        Step::WriteImage { slot, image } => {
            let device = config.update.slot_dir.join(slot.partlabel());
            slot::download_into(source, image, &device, false, progress).await?;
        }
        Step::VerifySlot { slot, image } => {
            slot::verify_slot(&config.update.slot_dir.join(slot.partlabel()), image)?;
        }
        Step::WriteBootFiles { slot, files } => {
            let dir = bootloader.boot_files_dir(*slot).ok_or_else(|| {
                UpdateError::Boot(BootError::Inconsistent(format!(
                    "the {} bootloader has no place for boot files",
                    bootloader.name()
                )))
            })?;
            slot::install_boot_files(source, files, &dir, progress).await?;
        }
        Step::ArmTrial(try_boot) => bootloader.set_try(try_boot)?,
        Step::Reboot => {
            let cmd = bootloader.reboot_command();
            let (program, args) = cmd
                .split_first()
                .ok_or_else(|| UpdateError::Reboot(cmd.clone(), "empty command".into()))?;
            let status = std::process::Command::new(program)
                .args(args)
                .status()
                .map_err(|e| UpdateError::Reboot(cmd.clone(), e.to_string()))?;
            if !status.success() {
                return Err(UpdateError::Reboot(cmd, status.to_string()));
            }
        }
    }
    Ok(())
}

/// `confab update status`.
pub fn status(config: &Config) -> Result<StatusReport, UpdateError> {
    let state = state::load(&config.update.state_file)?;
    let mut slots = Vec::new();
    let mut name = "none";
    if let Some(bootloader) = open_bootloader(config)? {
        name = bootloader.name();
        let booted = bootloader.booted().ok();
        for slot in [Slot::A, Slot::B] {
            slots.push(SlotReport {
                slot,
                health: bootloader.health(slot)?,
                version: bootloader.version(slot)?,
                booted: booted == Some(slot),
            });
        }
    }
    let running = crate::version::system_version();
    let booted = slots.iter().find(|s| s.booted).map(|s| s.slot);
    let rollback = match (&state.last_install, booted) {
        (Some(install), Some(booted)) if install.slot != booted => slots
            .iter()
            .find(|s| s.slot == install.slot && s.health == SlotHealth::Bad)
            .map(|_| {
                format!(
                    "v{} was installed into slot {} but did not pass its health check when \
                     booted, so the device went back to v{running} in slot {booted}",
                    install.version, install.slot
                )
            }),
        _ => None,
    };
    Ok(StatusReport {
        bootloader: name,
        board: config.update.board.clone(),
        running,
        slots,
        state,
        rollback,
    })
}

/// `confab update mark-good`: waits until the local server reports ready, then makes the booted
/// slot the default. An error means the boot is not good; the caller exits non-zero so
/// `FailureAction=reboot` returns to the previous slot.
pub async fn mark_good(config: &Config, timeout: Duration) -> Result<Slot, UpdateError> {
    let mut bootloader = open_bootloader(config)?
        .ok_or_else(|| UpdateError::NoSlots(": nothing to commit".into()))?;
    let booted = bootloader.booted()?;
    wait_ready_unless(config, timeout, &confab_service_gave_up).await?;
    bootloader.commit(booted)?;
    let version = bootloader
        .version(booted)?
        .unwrap_or_else(crate::version::system_version);
    // The bootloader commit above is what makes the boot good; the state file only records it
    // for `confab update status`. Failing here would reboot (FailureAction=reboot) a device that
    // is committed and healthy, so a recording error is logged, not returned.
    if let Err(e) = state::update(&config.update.state_file, |s| {
        s.committed = Some(state::Committed::now(booted, &version))
    }) {
        warn!(slot = %booted, %version, "boot committed, but not recorded: {e}");
    }
    info!(slot = %booted, %version, "boot committed");
    Ok(booted)
}

/// Under systemd (mark-good runs in confab-health.service): a reason to stop waiting when
/// confab.service has failed for good or keeps crashing, so a release whose daemon cannot start
/// rolls back in seconds instead of after the whole timeout.
fn confab_service_gave_up() -> Option<String> {
    std::env::var_os("INVOCATION_ID")?;
    let out = std::process::Command::new("systemctl")
        .args(["show", "--property=ActiveState,NRestarts", "confab.service"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let restarts: u32 = value("NRestarts")?.parse().ok()?;
    let state = value("ActiveState")?;
    if state == "failed" || restarts >= GIVE_UP_RESTARTS {
        Some(format!(
            "confab.service is {state} after {restarts} restarts (see journalctl -u confab)"
        ))
    } else {
        None
    }
}

/// Restarts of confab.service during a trial boot after which the boot counts as failed.
const GIVE_UP_RESTARTS: u32 = 3;

pub(crate) async fn wait_ready(config: &Config, timeout: Duration) -> Result<(), UpdateError> {
    wait_ready_unless(config, timeout, &|| None).await
}

/// Polls `/api/health/ready` until it answers 200, `timeout` passes, or `give_up` (asked every
/// few seconds) names a reason to stop.
async fn wait_ready_unless(
    config: &Config,
    timeout: Duration,
    give_up: &(dyn Fn() -> Option<String> + Sync),
) -> Result<(), UpdateError> {
    use crate::http::client;
    let ca = match &config.http.tls {
        crate::config::TlsSource::LocalCa => {
            config.state_dir.join("tls").join(crate::tls::CA_CERT_FILE)
        }
        crate::config::TlsSource::Files { cert, .. } => cert.clone(),
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], config.http.https_port));
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer yet");
    let mut round = 0u32;
    while Instant::now() < deadline {
        round += 1;
        if round % 6 == 0 {
            if let Some(reason) = give_up() {
                return Err(UpdateError::Unhealthy(
                    timeout,
                    format!("{reason}; last answer: {last}"),
                ));
            }
        }
        match client::connector_for_ca(&ca) {
            Ok(connector) => {
                match client::get(&connector, addr, "localhost", "/api/health/ready", None).await {
                    Ok((status, _)) if status.is_success() => return Ok(()),
                    Ok((status, body)) => {
                        last = format!("{status}: {}", String::from_utf8_lossy(&body))
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(UpdateError::Unhealthy(timeout, last))
}

#[cfg(test)]
mod tests;
