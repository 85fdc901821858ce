//! `confab backup <file>` and `confab restore <file>` (format and checks: `crate::backup`).
//!
//! sled lets one process open the database. With confab stopped, `backup` copies it under its
//! lock and makes the archive from the copy; while confab runs (the database is locked) it asks
//! the server for `GET /api/admin/backup` over HTTPS on loopback, as `confab status` does, with a
//! 60-second token minted from this device's API key (`keys.toml`, readable only by root and
//! confab's user) that carries confab's own backup claim. Either way the file is written
//! atomically with mode 0600: it holds the API secret, the CA key and the admin password hash.
//!
//! `restore` needs confab stopped: it refuses while the database is locked.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

use crate::auth::ApiKeys;
use crate::backup::{self, BackupError};
use crate::config::Config;
use crate::http::client::{self, ClientError};
use crate::state::StateError;

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Where to write the archive (a tar file, written with mode 0600: it holds secrets). `-`
    /// writes it to standard output (not to a terminal), e.g. out of a container.
    file: PathBuf,
    /// CA certificate to trust when asking the running server (default: the local CA in the
    /// state directory, or the configured certificate chain).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A backup made by `confab backup` or the admin page's "Download backup"; `-` reads it
    /// from standard input.
    file: PathBuf,
}

pub fn run_backup(config: Config, args: BackupArgs) -> ExitCode {
    let started = Instant::now();
    let made = match direct(&config) {
        Ok(a) => Ok((a.bytes, "the state directory")),
        Err(BackupError::State(StateError::Locked { .. })) => {
            from_server(&config, &args).map(|b| (b, "the running server"))
        }
        Err(e) => Err(e.to_string()),
    };
    let (bytes, source) = match made {
        Ok(m) => m,
        Err(e) => return super::fail(e),
    };
    // Check what we got before keeping it: a backup that would not restore is no backup.
    let contents = match backup::read(&bytes) {
        Ok(c) => c,
        Err(e) => return super::fail(format!("the backup from {source} is unusable: {e}")),
    };
    let to_stdout = args.file.as_os_str() == "-";
    let written = if to_stdout {
        use std::io::{IsTerminal, Write};
        let mut out = std::io::stdout().lock();
        if out.is_terminal() {
            return super::fail(
                "not writing a backup to a terminal: give a file, or redirect standard output",
            );
        }
        out.write_all(&bytes).and_then(|()| out.flush())
    } else {
        crate::fsutil::write_atomic(&args.file, &bytes, 0o600)
    };
    if let Err(e) = written {
        return super::fail(format!("cannot write {}: {e}", args.file.display()));
    }
    // On standard error when the archive goes to standard output.
    let say = |line: String| {
        if to_stdout {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(format!(
        "backup written to {} ({}, {} files, state schema {}, from {source}, {} ms)",
        if to_stdout {
            "standard output".into()
        } else {
            args.file.display().to_string()
        },
        human_size(bytes.len()),
        contents.manifest.files.len() + 1,
        contents.manifest.schema_version,
        started.elapsed().as_millis()
    ));
    say("it holds the API secret and the CA key: keep it as safe as the device".into());
    ExitCode::SUCCESS
}

/// With confab stopped: the archive made here, from a copy of the database taken under its lock
/// (opening the original would write into it, as root on the appliance, files confab's user could
/// then not replace).
fn direct(config: &Config) -> Result<backup::Archive, BackupError> {
    let lock = crate::state::lock(&config.state_dir)?.ok_or_else(|| BackupError::Io {
        path: config.state_dir.join(crate::state::DB_DIR),
        detail: "no state database here (has confab ever started with this state_dir?)".into(),
    })?;
    let scratch = Scratch::new()?;
    let store = crate::state::open_copy(&config.state_dir, &lock, &scratch.0)?;
    drop(lock);
    let archive = backup::create(&store, &config.state_dir);
    drop(store);
    archive
}

/// A private temporary directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, BackupError> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = crate::clock::since_epoch().subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("confab-backup-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| BackupError::Io {
                path: dir.clone(),
                detail: e.to_string(),
            })?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// While confab runs: `GET /api/admin/backup` with a backup token.
fn from_server(config: &Config, args: &BackupArgs) -> Result<Vec<u8>, String> {
    let (keys, _) = ApiKeys::load(config, false).map_err(|e| e.to_string())?;
    let (key, _) = keys
        .primary()
        .ok_or("confab is running, and no API key is configured to ask it with")?;
    let token =
        crate::auth::mint_backup(&keys, key, Duration::from_secs(60)).map_err(|e| e.to_string())?;
    let addr = super::health::probe_addr(config);
    let (ca, server_name) = super::health::trust(config, args.ca.as_deref());
    let (connector, runtime) = super::health::client_for(&ca)?;
    let request = client::get(
        &connector,
        addr,
        &server_name,
        "/api/admin/backup",
        Some(&token),
    );
    let answer =
        runtime.block_on(async { tokio::time::timeout(Duration::from_secs(120), request).await });
    let (status, body) = match answer {
        Err(_) => return Err(format!("no answer from https://{addr} within 120 s")),
        Ok(Err(ClientError::Connect { target, source })) => {
            return Err(format!(
                "the state database is locked, but nothing answers on {target} ({source}): \
                 is another process using {}?",
                config.state_dir.display()
            ))
        }
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(a)) => a,
    };
    if !status.is_success() {
        let reason = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(format!(
            "the server refused the backup ({}): {reason}",
            status.as_u16()
        ));
    }
    Ok(body.to_vec())
}

pub fn run_restore(config: Config, args: RestoreArgs) -> ExitCode {
    let bytes = match read_limited(&args.file) {
        Ok(b) => b,
        Err(e) => return super::fail(e),
    };
    let contents = match backup::read(&bytes) {
        Ok(c) => c,
        Err(e) => return super::fail(format!("{}: {e}. Nothing was changed", args.file.display())),
    };
    let m = &contents.manifest;
    println!(
        "backup of device {} made by confab {} at {} (state schema {}, {} files)",
        m.device_id.as_deref().unwrap_or("?"),
        m.confab_version,
        time::OffsetDateTime::from_unix_timestamp(i64::try_from(m.created_unix).unwrap_or(0))
            .map(|t| format!(
                "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute()
            ))
            .unwrap_or_else(|_| "?".into()),
        m.schema_version,
        m.files.len() + 1
    );
    match backup::restore(&config.state_dir, &contents) {
        Ok(r) => {
            println!(
                "restored into {} (state schema {})",
                config.state_dir.display(),
                r.schema_version
            );
            if r.schema_version > m.schema_version {
                println!(
                    "the state was migrated from schema {} to {}",
                    m.schema_version, r.schema_version
                );
            }
            if let Some(kept) = &r.kept {
                println!(
                    "the previous state is kept in {} (remove it once the restored device works)",
                    kept.display()
                );
            }
            println!("start confab again (systemctl start confab, or docker compose start confab)");
            ExitCode::SUCCESS
        }
        Err(e @ BackupError::Running(_)) => super::fail(e),
        Err(e) => super::fail(format!("restore failed: {e}")),
    }
}

fn read_limited(path: &std::path::Path) -> Result<Vec<u8>, String> {
    if path.as_os_str() == "-" {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::io::stdin()
            .lock()
            .take(backup::MAX_ARCHIVE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        if bytes.len() as u64 > backup::MAX_ARCHIVE_BYTES {
            return Err("standard input is too large to be a confab backup".into());
        }
        return Ok(bytes);
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > backup::MAX_ARCHIVE_BYTES {
        return Err(format!(
            "{} is {}: too large to be a confab backup",
            path.display(),
            human_size(usize::try_from(meta.len()).unwrap_or(usize::MAX))
        ));
    }
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn human_size(bytes: usize) -> String {
    if bytes < 10 * 1024 {
        format!("{bytes} bytes")
    } else if bytes < 10 << 20 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}
