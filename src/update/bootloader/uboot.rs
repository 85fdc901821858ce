//! `Uboot`: A/B with boot counting in the U-Boot environment (the scheme of Home Assistant OS
//! and RAUC's U-Boot integration), for Debian's U-Boot on the Raspberry Pi and in QEMU. The
//! environment lives in two copies on the boot partition (`boot_dir`), each a U-Boot
//! environment image (CRC32 + `key=value\0`, `uboot_env.rs`) that the boot script reads with
//! `env import -c` and writes back with `env export -c`:
//!
//! ```text
//! BOOT_ORDER=B A         slots to try, in order
//! BOOT_B_LEFT=2          tries left for a slot on trial; absent for a good slot
//! CONFAB_A_STATE=good    this backend's record: good | trying | bad, and the version
//! CONFAB_B_STATE=trying  CONFAB_A_VERSION=1.2.0  CONFAB_B_VERSION=1.3.0
//! CONFAB_ENV_SEQ=7       the copy with the higher number (and a good CRC) is current
//! ```
//!
//! The boot script: the first slot of `BOOT_ORDER` without `BOOT_<x>_LEFT` boots as it is; one
//! with tries left has them decremented (the environment saved first) and boots; one with none
//! left is skipped. So a trial that never commits is tried `tries` times, then the good slot
//! boots by itself. `root=PARTLABEL=root-<x>` on the kernel command line says which booted.
//!
//! Power cuts: every write goes to the copy that is not current, with the next sequence number
//! ([`super::replace_file`]: new file, fsync, rename); the current copy is untouched until the
//! other is whole, and a torn copy fails its CRC and is ignored, by U-Boot and by this backend.
//! With one copy (`with_single_copy`) the FAT rename window of the other backends remains.

use std::path::PathBuf;

use super::uboot_env::{self, Vars, DEFAULT_SIZE, SEQ};
use super::{cmdline_slot, replace_file, BootError, Bootloader, TryBoot};
use crate::update::{Slot, SlotHealth};

/// The two copies' file names on the boot partition.
pub const ENV_FILES: [&str; 2] = ["confab-uboot.env", "confab-uboot-redund.env"];
/// Tries a trial slot gets before the boot script falls back.
pub const DEFAULT_TRIES: u32 = 3;

const ORDER: &str = "BOOT_ORDER";

fn left_key(slot: Slot) -> String {
    format!("BOOT_{}_LEFT", slot.letter().to_uppercase())
}

fn state_key(slot: Slot) -> String {
    format!("CONFAB_{}_STATE", slot.letter().to_uppercase())
}

fn version_key(slot: Slot) -> String {
    format!("CONFAB_{}_VERSION", slot.letter().to_uppercase())
}

/// The U-Boot boot-counting backend over the boot partition's directory.
#[derive(Debug, Clone)]
pub struct Uboot {
    boot_dir: PathBuf,
    copies: usize,
    size: usize,
    tries: u32,
    cmdline: PathBuf,
}

/// The current environment and which copy holds it.
struct Loaded {
    vars: Vars,
    current: Option<usize>,
}

impl Uboot {
    pub fn new(boot_dir: PathBuf) -> Uboot {
        Uboot {
            boot_dir,
            copies: 2,
            size: DEFAULT_SIZE,
            tries: DEFAULT_TRIES,
            cmdline: PathBuf::from("/proc/cmdline"),
        }
    }

    /// One environment copy instead of two.
    pub fn with_single_copy(mut self) -> Uboot {
        self.copies = 1;
        self
    }

    /// The environment size the boot script exports with.
    pub fn with_env_size(mut self, size: usize) -> Uboot {
        self.size = size;
        self
    }

    pub fn with_tries(mut self, tries: u32) -> Uboot {
        self.tries = tries.max(1);
        self
    }

    /// The running kernel's command line (`/proc/cmdline`).
    pub fn with_cmdline(mut self, path: PathBuf) -> Uboot {
        self.cmdline = path;
        self
    }

    fn path(&self, copy: usize) -> PathBuf {
        self.boot_dir.join(ENV_FILES[copy])
    }

    /// The initial environment of a fresh image: slot A good, nothing else.
    pub fn initial() -> Vars {
        let mut v = Vars::new();
        v.insert(ORDER.into(), "A".into());
        v.insert(state_key(Slot::A), "good".into());
        v.insert(state_key(Slot::B), "bad".into());
        v
    }

    /// The newest copy with a good CRC; an error naming every copy if none reads.
    fn load(&self) -> Result<Loaded, BootError> {
        let mut best: Option<(u64, usize, Vars)> = None;
        let mut problems = Vec::new();
        for copy in 0..self.copies {
            let path = self.path(copy);
            let parsed = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| uboot_env::parse(&b).map_err(|e| e.to_string()));
            match parsed {
                Ok(vars) => {
                    let seq = uboot_env::seq(&vars);
                    if best.as_ref().is_none_or(|(s, _, _)| seq > *s) {
                        best = Some((seq, copy, vars));
                    }
                }
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        match best {
            Some((_, copy, vars)) => Ok(Loaded {
                vars,
                current: Some(copy),
            }),
            None => Err(BootError::Inconsistent(format!(
                "no U-Boot environment copy reads ({})",
                problems.join("; ")
            ))),
        }
    }

    /// Writes `vars` as the next copy: into the copy that is not current, numbered after it.
    fn store(&self, loaded: &Loaded, mut vars: Vars) -> Result<(), BootError> {
        if vars == loaded.vars {
            return Ok(());
        }
        let seq = uboot_env::seq(&loaded.vars) + 1;
        vars.insert(SEQ.into(), seq.to_string());
        let copy = match (self.copies, loaded.current) {
            (1, _) | (_, None) => 0,
            (_, Some(c)) => 1 - c,
        };
        let path = self.path(copy);
        let image =
            uboot_env::serialize(&vars, self.size).map_err(|e| BootError::file(&path, e))?;
        replace_file(&path, &image)
    }

    fn state(vars: &Vars, slot: Slot) -> SlotHealth {
        let in_order = vars
            .get(ORDER)
            .is_some_and(|o| o.split_whitespace().any(|s| Slot::parse(s) == Some(slot)));
        let left: Option<u32> = vars.get(&left_key(slot)).and_then(|v| v.parse().ok());
        match vars.get(&state_key(slot)).map(String::as_str) {
            Some("good") if in_order => SlotHealth::Good,
            Some("trying") if in_order && left.is_some_and(|n| n > 0) => SlotHealth::Trying,
            _ => SlotHealth::Bad,
        }
    }

    /// `slot` first, then the other if it is good.
    fn order(vars: &Vars, slot: Slot) -> String {
        let mut order = slot.letter().to_uppercase();
        if Self::state(vars, slot.other()) == SlotHealth::Good {
            order.push(' ');
            order.push_str(&slot.other().letter().to_uppercase());
        }
        order
    }

    fn require_good_other(vars: &Vars, slot: Slot, what: &str) -> Result<(), BootError> {
        if Self::state(vars, slot.other()) == SlotHealth::Good {
            return Ok(());
        }
        Err(BootError::Inconsistent(format!(
            "refusing to {what} slot {slot}: slot {} is not good, so nothing would be left to boot",
            slot.other()
        )))
    }
}

impl Bootloader for Uboot {
    fn name(&self) -> &'static str {
        "u-boot"
    }

    fn booted(&self) -> Result<Slot, BootError> {
        cmdline_slot(&self.cmdline)?.ok_or_else(|| {
            BootError::UnknownBootedSlot(format!(
                "{} has no root=PARTLABEL=root-a|b (the boot script sets it)",
                self.cmdline.display()
            ))
        })
    }

    fn health(&self, slot: Slot) -> Result<SlotHealth, BootError> {
        Ok(Self::state(&self.load()?.vars, slot))
    }

    fn version(&self, slot: Slot) -> Result<Option<String>, BootError> {
        Ok(self.load()?.vars.get(&version_key(slot)).cloned())
    }

    fn boot_files_dir(&self, slot: Slot) -> Option<PathBuf> {
        Some(self.boot_dir.join(format!("slot-{slot}")))
    }

    fn mark_bad(&mut self, slot: Slot) -> Result<(), BootError> {
        let loaded = self.load()?;
        Self::require_good_other(&loaded.vars, slot, "mark bad")?;
        let mut vars = loaded.vars.clone();
        vars.insert(ORDER.into(), slot.other().letter().to_uppercase());
        vars.remove(&left_key(slot));
        vars.insert(state_key(slot), "bad".into());
        vars.remove(&version_key(slot));
        self.store(&loaded, vars)
    }

    fn set_try(&mut self, try_boot: &TryBoot) -> Result<(), BootError> {
        let slot = try_boot.slot;
        let loaded = self.load()?;
        Self::require_good_other(&loaded.vars, slot, "try")?;
        let mut vars = loaded.vars.clone();
        vars.insert(
            ORDER.into(),
            format!(
                "{} {}",
                slot.letter().to_uppercase(),
                slot.other().letter().to_uppercase()
            ),
        );
        vars.insert(left_key(slot), self.tries.to_string());
        vars.insert(state_key(slot), "trying".into());
        vars.insert(version_key(slot), try_boot.version.clone());
        self.store(&loaded, vars)
    }

    fn commit(&mut self, slot: Slot) -> Result<(), BootError> {
        let booted = self.booted()?;
        if booted != slot {
            return Err(BootError::Inconsistent(format!(
                "refusing to commit slot {slot}: slot {booted} is the one running"
            )));
        }
        let loaded = self.load()?;
        let mut vars = loaded.vars.clone();
        // A trial of the other slot that brought us back here has failed.
        if Self::state(&vars, slot.other()) != SlotHealth::Good {
            vars.insert(state_key(slot.other()), "bad".into());
            vars.remove(&left_key(slot.other()));
        }
        vars.remove(&left_key(slot));
        vars.insert(state_key(slot), "good".into());
        let order = Self::order(&vars, slot);
        vars.insert(ORDER.into(), order);
        self.store(&loaded, vars)
    }

    fn reboot_command(&self) -> Vec<String> {
        vec!["systemctl".to_string(), "reboot".to_string()]
    }
}

#[cfg(test)]
mod tests;
