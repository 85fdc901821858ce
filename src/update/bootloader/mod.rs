//! Bootloader backends behind one trait, chosen once at start: `systemd_boot` (UEFI: BLS entries
//! with boot counting), `rpi_tryboot` (Raspberry Pi firmware: `autoboot.txt` + one-shot tryboot
//! flag), `uboot` (U-Boot: boot counting in the U-Boot environment), and `fake` (plain files,
//! for tests — a named fake, not a bootloader).
//!
//! Contract every backend keeps, so that a power cut at any moment leaves a bootable device:
//! - `mark_bad(target)` happens before a single byte of the target slot is written, and after it
//!   the firmware never picks `target` until `set_try(target)`.
//! - `set_try(target)` makes the *next* boot use `target` once (or a bounded number of times); if
//!   that boot does not reach `commit`, a later boot returns to the previous good slot by itself.
//! - `commit(booted)` makes the booted slot the default. It is only called after the health gate.
//! - Every write to bootloader files is write-new + fsync + rename (+ fsync of the directory).
//! - Nothing may leave the device without a good slot: `mark_bad(slot)` and `set_try(slot)` are
//!   refused unless the other slot is Good, and `commit(slot)` unless `slot` is the booted one.
//! - Backends keep no state in memory; every call reads the files afresh.

pub mod fake;
pub mod rpi_tryboot;
pub mod systemd_boot;
pub mod uboot;
pub mod uboot_env;

use std::path::{Path, PathBuf};

use super::{Slot, SlotHealth};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    #[error("bootloader file {path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("cannot tell which slot is booted: {0}")]
    UnknownBootedSlot(String),
    #[error("bootloader state is inconsistent: {0}")]
    Inconsistent(String),
    #[error("cannot arm the one-time trial boot: {0}")]
    Arm(String),
}

/// Version and kernel command line the new slot's boot entry should carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TryBoot {
    pub slot: Slot,
    /// Release version, shown by the boot menu and used to order entries.
    pub version: String,
}

pub trait Bootloader: Send {
    /// A short name for logs and status (`systemd-boot`, `rpi-tryboot`, `fake`).
    fn name(&self) -> &'static str;
    /// The slot the running system booted from.
    fn booted(&self) -> Result<Slot, BootError>;
    /// How the bootloader regards `slot` now.
    fn health(&self, slot: Slot) -> Result<SlotHealth, BootError>;
    /// The version recorded for `slot`'s boot entry, if any.
    fn version(&self, slot: Slot) -> Result<Option<String>, BootError>;
    /// Where `slot`'s boot files (kernel, initrd, …) go before `set_try`: the ESP's `slot-<x>/`
    /// directory for systemd-boot, the slot's boot partition mount directory for the Raspberry
    /// Pi, a directory under the fake's root for the fake. `None` if the bootloader has no such
    /// place. The directory may not exist yet; the caller creates it.
    fn boot_files_dir(&self, slot: Slot) -> Option<PathBuf>;
    /// Makes `slot` unbootable. Called before writing into it.
    fn mark_bad(&mut self, slot: Slot) -> Result<(), BootError>;
    /// Arranges for the next boot to try `try_boot.slot`, falling back on failure.
    fn set_try(&mut self, try_boot: &TryBoot) -> Result<(), BootError>;
    /// Makes `slot` (the booted, healthy one) the default.
    fn commit(&mut self, slot: Slot) -> Result<(), BootError>;
    /// Reboots into the trial (for rpi-tryboot the reboot itself carries the tryboot flag).
    fn reboot_command(&self) -> Vec<String>;
}

// --- File handling shared by the backends --------------------------------------------------------

impl BootError {
    fn file(path: &Path, detail: impl std::fmt::Display) -> BootError {
        BootError::File {
            path: path.to_path_buf(),
            detail: detail.to_string(),
        }
    }
}

/// Reads a small bootloader file as UTF-8 text.
fn read_text(path: &Path) -> Result<String, BootError> {
    let bytes = std::fs::read(path).map_err(|e| BootError::file(path, e))?;
    String::from_utf8(bytes).map_err(|_| BootError::file(path, "not UTF-8 text"))
}

use crate::fsutil::parent_dir;

/// Replaces `path` with `contents` ([`crate::fsutil::write_atomic`]: `<path>.new`, fsync,
/// rename, fsync of the directory). On FAT (ESP, Pi boot partition) the rename is not atomic, so a
/// power cut exactly during the rename can lose the directory entry — one directory-block update.
fn replace_file(path: &Path, contents: &[u8]) -> Result<(), BootError> {
    crate::fsutil::write_atomic(path, contents, 0o644).map_err(|e| BootError::file(path, e))
}

/// Renames `from` to `to` (replacing `to`) and fsyncs the directory.
fn rename_file(from: &Path, to: &Path) -> Result<(), BootError> {
    std::fs::rename(from, to)
        .map_err(|e| BootError::file(from, format!("cannot rename it to {}: {e}", to.display())))?;
    sync_dir(parent_dir(to))
}

/// Removes `path` (already gone is fine). The caller fsyncs the directory once afterwards.
fn remove_file(path: &Path) -> Result<(), BootError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(BootError::file(path, e)),
        _ => Ok(()),
    }
}

/// Makes renames and removals in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), BootError> {
    crate::fsutil::sync_dir(dir)
        .map_err(|e| BootError::file(dir, format!("cannot fsync the directory: {e}")))
}

/// The slot named by `root=PARTLABEL=root-<x>` in a kernel command line file (`/proc/cmdline`),
/// or `None` if the file has no such argument.
fn cmdline_slot(path: &Path) -> Result<Option<Slot>, BootError> {
    Ok(Slot::from_cmdline(&read_text(path)?))
}
