//! `FakeBootloader`: a named fake for tests, not a bootloader. It owns one JSON file,
//! `<root>/fake-bootloader.json`, holding what real firmware would hold (default slot, a pending
//! trial with its tries left, the slots marked bad, each slot's version, the booted slot), and
//! `<root>/slot-<x>/` for boot files.
//!
//! Every method reads the file afresh and writes it back atomically, so nothing lives only in
//! memory: a test can drop the bootloader at any point (a power cut) and call
//! [`FakeBootloader::simulate_boot`], the "firmware", to see which slot would boot. The firmware
//! follows systemd-boot's counter: a trial gets [`TRIAL_TRIES`] boot(s), each boot consumes one,
//! and a trial that was booted but never committed is not chosen again — the default boots. A
//! slot marked bad is never chosen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{read_text, replace_file, BootError, Bootloader, TryBoot};
use crate::update::{Slot, SlotHealth};

/// The state file inside the fake's root directory.
pub const STATE_FILE: &str = "fake-bootloader.json";
/// Boots a trial gets before the firmware falls back: one, like the Pi's one-shot tryboot flag.
pub const TRIAL_TRIES: u32 = 1;

/// What the fake firmware knows, exactly as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeState {
    /// Boots when no trial is pending.
    pub default: Slot,
    /// A slot armed by `set_try`, until committed or replaced.
    pub trial: Option<Trial>,
    /// Slots the firmware must never choose.
    pub bad: BTreeSet<Slot>,
    pub versions: BTreeMap<Slot, String>,
    /// The slot the last (simulated) boot chose.
    pub booted: Slot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trial {
    pub slot: Slot,
    pub tries_left: u32,
}

impl FakeState {
    fn health(&self, slot: Slot) -> SlotHealth {
        if self.bad.contains(&slot) {
            return SlotHealth::Bad;
        }
        match self.trial {
            // Booted on its last try, it can still be committed.
            Some(t) if t.slot == slot && (t.tries_left > 0 || self.booted == slot) => {
                SlotHealth::Trying
            }
            Some(t) if t.slot == slot => SlotHealth::Bad,
            _ => SlotHealth::Good,
        }
    }

    /// The firmware's choice; consumes one try of a pending trial.
    fn choose_boot(&mut self) -> Result<Slot, BootError> {
        if let Some(trial) = self.trial.as_mut() {
            if trial.tries_left > 0 && !self.bad.contains(&trial.slot) {
                trial.tries_left -= 1;
                return Ok(trial.slot);
            }
        }
        if self.bad.contains(&self.default) {
            return Err(BootError::Inconsistent(format!(
                "nothing to boot: the default slot {} is marked bad and no trial is pending",
                self.default
            )));
        }
        Ok(self.default)
    }
}

/// The named fake. Holds only its root directory; the state is always the file's.
#[derive(Debug, Clone)]
pub struct FakeBootloader {
    root: PathBuf,
}

impl FakeBootloader {
    /// A fresh device booted from `booted` at `version`, the other slot empty (bad). Creates
    /// `root` if needed and replaces any previous state.
    pub fn create(root: &Path, booted: Slot, version: &str) -> Result<FakeBootloader, BootError> {
        std::fs::create_dir_all(root).map_err(|e| BootError::file(root, e))?;
        let state = FakeState {
            default: booted,
            trial: None,
            bad: BTreeSet::from([booted.other()]),
            versions: BTreeMap::from([(booted, version.to_string())]),
            booted,
        };
        write_state(root, &state)?;
        Ok(FakeBootloader {
            root: root.to_path_buf(),
        })
    }

    /// The fake device at `root`, made earlier by [`FakeBootloader::create`].
    pub fn open(root: &Path) -> Result<FakeBootloader, BootError> {
        read_state(root)?;
        Ok(FakeBootloader {
            root: root.to_path_buf(),
        })
    }

    /// The persisted state, for tests to inspect.
    pub fn state(&self) -> Result<FakeState, BootError> {
        read_state(&self.root)
    }

    /// The firmware: a (re)boot of the device at `root`. Reads the persisted state, consumes one
    /// try of a pending trial, records and returns the slot that boots. A boot that is not
    /// followed by `commit` is a failed boot; the next call then falls back to the default.
    pub fn simulate_boot(root: &Path) -> Result<Slot, BootError> {
        let mut state = read_state(root)?;
        let slot = state.choose_boot()?;
        state.booted = slot;
        write_state(root, &state)?;
        Ok(slot)
    }

    fn update(
        &self,
        change: impl FnOnce(&mut FakeState) -> Result<(), BootError>,
    ) -> Result<(), BootError> {
        let mut state = read_state(&self.root)?;
        change(&mut state)?;
        write_state(&self.root, &state)
    }
}

fn state_path(root: &Path) -> PathBuf {
    root.join(STATE_FILE)
}

fn read_state(root: &Path) -> Result<FakeState, BootError> {
    let path = state_path(root);
    serde_json::from_str(&read_text(&path)?).map_err(|e| BootError::file(&path, e))
}

fn write_state(root: &Path, state: &FakeState) -> Result<(), BootError> {
    let path = state_path(root);
    let json = serde_json::to_vec_pretty(state).map_err(|e| BootError::file(&path, e))?;
    replace_file(&path, &json)
}

/// Refuses a change that would leave no good slot to fall back to.
fn require_good_fallback(state: &FakeState, slot: Slot, what: &str) -> Result<(), String> {
    match state.health(slot.other()) {
        SlotHealth::Good => Ok(()),
        other => Err(format!(
            "refusing to {what} slot {slot}: slot {} is {other:?}, so nothing good would be left to boot",
            slot.other()
        )),
    }
}

impl Bootloader for FakeBootloader {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn booted(&self) -> Result<Slot, BootError> {
        Ok(self.state()?.booted)
    }

    fn health(&self, slot: Slot) -> Result<SlotHealth, BootError> {
        Ok(self.state()?.health(slot))
    }

    fn version(&self, slot: Slot) -> Result<Option<String>, BootError> {
        Ok(self.state()?.versions.get(&slot).cloned())
    }

    fn boot_files_dir(&self, slot: Slot) -> Option<PathBuf> {
        Some(self.root.join(format!("slot-{}", slot.letter())))
    }

    fn mark_bad(&mut self, slot: Slot) -> Result<(), BootError> {
        self.update(|s| {
            require_good_fallback(s, slot, "mark bad").map_err(BootError::Inconsistent)?;
            s.bad.insert(slot);
            s.versions.remove(&slot);
            if s.trial.is_some_and(|t| t.slot == slot) {
                s.trial = None;
            }
            if s.default == slot {
                s.default = slot.other();
            }
            Ok(())
        })
    }

    fn set_try(&mut self, try_boot: &TryBoot) -> Result<(), BootError> {
        let slot = try_boot.slot;
        self.update(|s| {
            require_good_fallback(s, slot, "try").map_err(BootError::Arm)?;
            if s.default == slot {
                return Err(BootError::Arm(format!(
                    "slot {slot} is already the default"
                )));
            }
            s.bad.remove(&slot);
            s.versions.insert(slot, try_boot.version.clone());
            s.trial = Some(Trial {
                slot,
                tries_left: TRIAL_TRIES,
            });
            Ok(())
        })
    }

    fn commit(&mut self, slot: Slot) -> Result<(), BootError> {
        self.update(|s| {
            if s.booted != slot {
                return Err(BootError::Inconsistent(format!(
                    "refusing to commit slot {slot}: slot {} is booted",
                    s.booted
                )));
            }
            if s.bad.contains(&slot) {
                return Err(BootError::Inconsistent(format!(
                    "refusing to commit slot {slot}: it is marked bad"
                )));
            }
            s.default = slot;
            match s.trial {
                Some(t) if t.slot == slot => s.trial = None,
                // A trial that used up its tries failed: the firmware will never pick it again.
                Some(t) if t.tries_left == 0 => {
                    s.bad.insert(t.slot);
                    s.trial = None;
                }
                _ => {}
            }
            Ok(())
        })
    }

    /// The fake cannot reboot anything; tests call [`FakeBootloader::simulate_boot`] instead.
    fn reboot_command(&self) -> Vec<String> {
        vec!["true".to_string()]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn device() -> (tempfile::TempDir, FakeBootloader) {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeBootloader::create(dir.path(), Slot::A, "1.0.0").unwrap();
        (dir, fake)
    }

    fn try_b(fake: &mut FakeBootloader, version: &str) {
        fake.mark_bad(Slot::B).unwrap();
        fake.set_try(&TryBoot {
            slot: Slot::B,
            version: version.into(),
        })
        .unwrap();
    }

    #[test]
    fn a_fresh_device_boots_its_slot_and_the_other_is_bad() {
        let (dir, fake) = device();
        assert_eq!(fake.booted().unwrap(), Slot::A);
        assert_eq!(fake.health(Slot::A).unwrap(), SlotHealth::Good);
        assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Bad);
        assert_eq!(fake.version(Slot::A).unwrap().as_deref(), Some("1.0.0"));
        assert_eq!(fake.version(Slot::B).unwrap(), None);
        for _ in 0..3 {
            assert_eq!(FakeBootloader::simulate_boot(dir.path()).unwrap(), Slot::A);
        }
    }

    #[test]
    fn a_trial_boots_once_and_falls_back_without_commit() {
        let (dir, mut fake) = device();
        try_b(&mut fake, "2.0.0");
        assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Trying);
        assert_eq!(fake.version(Slot::B).unwrap().as_deref(), Some("2.0.0"));
        assert_eq!(FakeBootloader::simulate_boot(dir.path()).unwrap(), Slot::B);
        // Running on its only try, it can still be committed.
        assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Trying);
        // No commit: the next boot returns to A, and B is never chosen again.
        assert_eq!(FakeBootloader::simulate_boot(dir.path()).unwrap(), Slot::A);
        assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Bad);
        assert_eq!(FakeBootloader::simulate_boot(dir.path()).unwrap(), Slot::A);
    }

    #[test]
    fn commit_after_the_trial_makes_it_the_default() {
        let (dir, mut fake) = device();
        try_b(&mut fake, "2.0.0");
        assert_eq!(FakeBootloader::simulate_boot(dir.path()).unwrap(), Slot::B);
        fake.commit(Slot::B).unwrap();
        assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Good);
        assert_eq!(fake.health(Slot::A).unwrap(), SlotHealth::Good);
        for _ in 0..3 {
            assert_eq!(FakeBootloader::simulate_boot(dir.path()).unwrap(), Slot::B);
        }
        // The next update goes into A, the old slot.
        fake.mark_bad(Slot::A).unwrap();
        assert_eq!(FakeBootloader::simulate_boot(dir.path()).unwrap(), Slot::B);
    }

    #[test]
    fn committing_the_fallback_after_a_failed_trial_marks_the_trial_bad() {
        let (dir, mut fake) = device();
        try_b(&mut fake, "2.0.0");
        FakeBootloader::simulate_boot(dir.path()).unwrap();
        FakeBootloader::simulate_boot(dir.path()).unwrap();
        fake.commit(Slot::A).unwrap();
        let state = fake.state().unwrap();
        assert_eq!(state.trial, None);
        assert!(state.bad.contains(&Slot::B));
        assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Bad);
    }

    #[test]
    fn a_slot_marked_bad_is_never_chosen() {
        let (dir, mut fake) = device();
        try_b(&mut fake, "2.0.0");
        fake.mark_bad(Slot::B).unwrap();
        assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Bad);
        assert_eq!(fake.version(Slot::B).unwrap(), None);
        assert_eq!(FakeBootloader::simulate_boot(dir.path()).unwrap(), Slot::A);
    }

    #[test]
    fn changes_that_leave_no_good_slot_are_refused() {
        let (dir, mut fake) = device();
        let err = fake.mark_bad(Slot::A).unwrap_err().to_string();
        assert!(err.contains("slot b is Bad"), "{err}");
        try_b(&mut fake, "2.0.0");
        FakeBootloader::simulate_boot(dir.path()).unwrap();
        // Booted into the uncommitted trial: A is the only way back.
        let err = fake.mark_bad(Slot::A).unwrap_err().to_string();
        assert!(err.contains("refusing"), "{err}");
        let err = fake.commit(Slot::A).unwrap_err().to_string();
        assert!(err.contains("slot b is booted"), "{err}");
        assert_eq!(FakeBootloader::simulate_boot(dir.path()).unwrap(), Slot::A);
    }

    #[test]
    fn trying_the_default_slot_is_refused() {
        let (_dir, mut fake) = device();
        fake.mark_bad(Slot::B).unwrap();
        let err = fake
            .set_try(&TryBoot {
                slot: Slot::A,
                version: "2.0.0".into(),
            })
            .unwrap_err();
        assert!(matches!(err, BootError::Arm(_)), "{err}");
    }

    #[test]
    fn state_survives_reopening_and_leaves_no_temporary_file() {
        let (dir, mut fake) = device();
        try_b(&mut fake, "2.0.0");
        drop(fake);
        let fake = FakeBootloader::open(dir.path()).unwrap();
        assert_eq!(fake.health(Slot::B).unwrap(), SlotHealth::Trying);
        assert!(!dir.path().join("fake-bootloader.json.new").exists());
        let json = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(json.contains("\"b\""), "{json}");
    }

    #[test]
    fn a_missing_or_corrupt_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = FakeBootloader::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(STATE_FILE), "{err}");
        std::fs::write(dir.path().join(STATE_FILE), "{ not json").unwrap();
        let err = FakeBootloader::simulate_boot(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(STATE_FILE), "{err}");
    }

    #[test]
    fn boot_files_go_under_the_root_and_reboot_is_harmless() {
        let (dir, fake) = device();
        assert_eq!(
            fake.boot_files_dir(Slot::B),
            Some(dir.path().join("slot-b"))
        );
        assert_eq!(fake.reboot_command(), vec!["true".to_string()]);
        assert_eq!(fake.name(), "fake");
    }
}
