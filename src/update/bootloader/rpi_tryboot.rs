//! `RpiTryboot`: A/B on the Raspberry Pi firmware's `autoboot.txt` + tryboot. It owns two files
//! on the Pi's first FAT partition (`boot_dir`, mounted at `/boot/firmware` by default):
//!
//! ```text
//! autoboot.txt                 confab-slots.json (this backend's own record)
//!   [all]                        {"a": {"state": "good", "version": "1.2.0"},
//!   tryboot_a_b=1                 "b": {"state": "trying", "version": "1.3.0"}}
//!   boot_partition=2
//!   [tryboot]
//!   boot_partition=3
//! ```
//!
//! `[all] boot_partition` is the default slot's boot partition (A = 2, B = 3 unless configured).
//! `[tryboot]` applies only to a boot started with the one-shot tryboot flag, which
//! `reboot "0 tryboot"` sets and the firmware clears; it has no counter, so a trial is exactly one
//! boot. The firmware never writes the card: a trial that hangs is undone only by a reset, so the
//! hardware watchdog must be armed early. Each slot's boot partition (kernel, initrd, dtbs,
//! `config.txt`, `cmdline.txt` with `root=PARTLABEL=root-<x>`) is mounted at `/boot/slot-a` and
//! `/boot/slot-b` (siblings of `boot_dir`) unless configured.
//!
//! The firmware only knows partitions, so which slot is bad or on trial, and its version, is
//! recorded in `confab-slots.json`. Health: the `[all]` slot is Good; otherwise the record
//! decides, and a trial counts only while `[tryboot]` points at it.
//!
//! Writes go to `<file>.new`, are fsynced, renamed over the file and the directory is fsynced;
//! the old file stays valid until the rename. FAT rename is not atomic: a power cut during the
//! rename itself can lose the directory entry. The window is one directory-block write, and files
//! are only rewritten when their content changes.
//!
//! Caveat (design/facts.md): arming tryboot goes through the Raspberry Pi kernel's firmware
//! driver (mailbox tag 0x38064, sent by its reboot notifier for `reboot "0 tryboot"`). Debian's
//! mainline kernel most likely lacks it, so there the reboot would silently not try the new slot.
//! With Debian's kernel the U-Boot backend (`uboot.rs`, a boot counter in the U-Boot
//! environment) is the way instead.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{cmdline_slot, parent_dir, read_text, replace_file, BootError, Bootloader, TryBoot};
use crate::update::{Slot, SlotHealth};

pub const AUTOBOOT_FILE: &str = "autoboot.txt";
pub const SLOTS_FILE: &str = "confab-slots.json";
/// Boot partition numbers of slots A and B.
pub const DEFAULT_PARTITIONS: [u32; 2] = [2, 3];
const BOOT_PARTITION: &str = "boot_partition";

/// The Raspberry Pi tryboot backend over the first FAT partition's directory.
#[derive(Debug, Clone)]
pub struct RpiTryboot {
    boot_dir: PathBuf,
    partitions: [u32; 2],
    slot_boot_dirs: [PathBuf; 2],
    cmdline: PathBuf,
    bootloader_node: PathBuf,
}

fn index(slot: Slot) -> usize {
    match slot {
        Slot::A => 0,
        Slot::B => 1,
    }
}

impl RpiTryboot {
    pub fn new(boot_dir: PathBuf) -> RpiTryboot {
        let parent = parent_dir(&boot_dir).to_path_buf();
        RpiTryboot {
            slot_boot_dirs: [parent.join("slot-a"), parent.join("slot-b")],
            boot_dir,
            partitions: DEFAULT_PARTITIONS,
            cmdline: PathBuf::from("/proc/cmdline"),
            bootloader_node: PathBuf::from("/proc/device-tree/chosen/bootloader"),
        }
    }

    /// Boot partition numbers of slots A and B (default 2 and 3).
    pub fn with_partitions(mut self, a: u32, b: u32) -> RpiTryboot {
        self.partitions = [a, b];
        self
    }

    /// Where the slots' boot partitions are mounted.
    pub fn with_slot_boot_dirs(mut self, a: PathBuf, b: PathBuf) -> RpiTryboot {
        self.slot_boot_dirs = [a, b];
        self
    }

    /// The running kernel's command line (`/proc/cmdline`).
    pub fn with_cmdline(mut self, path: PathBuf) -> RpiTryboot {
        self.cmdline = path;
        self
    }

    /// The firmware's device-tree node (`/proc/device-tree/chosen/bootloader`).
    pub fn with_bootloader_node(mut self, dir: PathBuf) -> RpiTryboot {
        self.bootloader_node = dir;
        self
    }

    fn autoboot_path(&self) -> PathBuf {
        self.boot_dir.join(AUTOBOOT_FILE)
    }

    fn slots_path(&self) -> PathBuf {
        self.boot_dir.join(SLOTS_FILE)
    }

    fn partition(&self, slot: Slot) -> u32 {
        self.partitions[index(slot)]
    }

    fn slot_of(&self, partition: u32) -> Option<Slot> {
        [Slot::A, Slot::B]
            .into_iter()
            .find(|&s| self.partition(s) == partition)
    }

    /// The slot whose boot partition `boot_partition` names, without or with the tryboot flag.
    fn slot_in(&self, autoboot: &Autoboot, tryboot: bool) -> Result<Slot, BootError> {
        let path = self.autoboot_path();
        let section = if tryboot {
            "[all] or [tryboot]"
        } else {
            "[all]"
        };
        let value = autoboot
            .effective(BOOT_PARTITION, tryboot)
            .ok_or_else(|| BootError::file(&path, format!("no {BOOT_PARTITION} in {section}")))?;
        value
            .parse::<u32>()
            .ok()
            .and_then(|p| self.slot_of(p))
            .ok_or_else(|| {
                BootError::file(
                    &path,
                    format!(
                    "{BOOT_PARTITION}={value} is neither slot a's partition ({}) nor slot b's ({})",
                    self.partitions[0], self.partitions[1]
                ),
                )
            })
    }

    fn load(&self) -> Result<Loaded, BootError> {
        let autoboot = Autoboot::parse(&read_text(&self.autoboot_path())?);
        Ok(Loaded {
            default: self.slot_in(&autoboot, false)?,
            tryboot: self.slot_in(&autoboot, true)?,
            autoboot,
            records: self.read_records()?,
        })
    }

    /// The side file; a device that never wrote one has no records.
    fn read_records(&self) -> Result<Records, BootError> {
        let path = self.slots_path();
        if !path.exists() {
            return Ok(Records::new());
        }
        serde_json::from_str(&read_text(&path)?).map_err(|e| BootError::file(&path, e))
    }

    fn write_records(&self, before: &Records, after: &Records) -> Result<(), BootError> {
        if before == after && self.slots_path().exists() {
            return Ok(());
        }
        let path = self.slots_path();
        let json = serde_json::to_vec_pretty(after).map_err(|e| BootError::file(&path, e))?;
        replace_file(&path, &json)
    }

    /// Points `[all]` at `default` and `[tryboot]` at `tryboot`; writes only if that changes.
    fn write_autoboot(
        &self,
        before: &Autoboot,
        default: Slot,
        tryboot: Slot,
    ) -> Result<(), BootError> {
        let mut after = before.clone();
        after.set("all", BOOT_PARTITION, &self.partition(default).to_string());
        after.set(
            "tryboot",
            BOOT_PARTITION,
            &self.partition(tryboot).to_string(),
        );
        if self.slot_in(&after, false)? != default || self.slot_in(&after, true)? != tryboot {
            return Err(BootError::file(
                &self.autoboot_path(),
                "its sections are ordered so that a rewrite cannot select the intended slots; \
                 expected [all] first, then [tryboot]",
            ));
        }
        if after == *before {
            return Ok(());
        }
        replace_file(&self.autoboot_path(), after.render().as_bytes())
    }

    /// The trial's `cmdline.txt` must mount the trial's root, or the trial boots the wrong slot.
    /// A release's `cmdline.txt` names its root as `root=PARTLABEL=root-@SLOT@` (a release does
    /// not know which slot it lands in); that placeholder becomes the slot's letter here.
    fn require_slot_cmdline(&self, slot: Slot) -> Result<(), BootError> {
        let path = self.slot_boot_dirs[index(slot)].join("cmdline.txt");
        if let Ok(text) = read_text(&path) {
            if text.contains("@SLOT@") {
                replace_file(&path, text.replace("@SLOT@", slot.letter()).as_bytes())?;
            }
        }
        match cmdline_slot(&path) {
            Ok(Some(root)) if root == slot => Ok(()),
            Ok(_) => Err(BootError::Arm(format!(
                "{} does not say root=PARTLABEL={}",
                path.display(),
                slot.partlabel()
            ))),
            Err(e) => Err(BootError::Arm(format!(
                "slot {slot}'s boot partition is not ready: {e}"
            ))),
        }
    }

    /// The boot partition the firmware booted, from the device tree (a big-endian u32).
    fn device_tree_slot(&self) -> Option<Slot> {
        let bytes = std::fs::read(self.bootloader_node.join("partition")).ok()?;
        let word: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
        self.slot_of(u32::from_be_bytes(word))
    }
}

/// Per-slot facts the firmware does not keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SlotRecord {
    state: SlotHealth,
    #[serde(default)]
    version: Option<String>,
}

type Records = BTreeMap<Slot, SlotRecord>;

/// Records `slot` as good, keeping its version.
fn mark_good(records: &mut Records, slot: Slot) {
    let version = records.get(&slot).and_then(|r| r.version.clone());
    records.insert(
        slot,
        SlotRecord {
            state: SlotHealth::Good,
            version,
        },
    );
}

/// Both files, read once.
struct Loaded {
    autoboot: Autoboot,
    /// The slot `[all]` boots.
    default: Slot,
    /// The slot a tryboot boot would boot.
    tryboot: Slot,
    records: Records,
}

impl Loaded {
    fn health(&self, slot: Slot) -> SlotHealth {
        if slot == self.default {
            return SlotHealth::Good;
        }
        match self.records.get(&slot).map(|r| r.state) {
            Some(SlotHealth::Good) => SlotHealth::Good,
            Some(SlotHealth::Trying) if self.tryboot == slot => SlotHealth::Trying,
            _ => SlotHealth::Bad,
        }
    }

    /// Refuses a change that would leave no good slot to fall back to.
    fn require_good_fallback(&self, slot: Slot, what: &str) -> Result<(), String> {
        match self.health(slot.other()) {
            SlotHealth::Good => Ok(()),
            other => Err(format!(
                "refusing to {what} slot {slot}: slot {} is {other:?}, so nothing good would be left to boot",
                slot.other()
            )),
        }
    }
}

/// `autoboot.txt` as lines, so that an edit keeps everything it does not own (comments, other
/// keys and filter sections). Lines before any `[section]` belong to `[all]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Autoboot {
    lines: Vec<String>,
}

fn section_header(line: &str) -> Option<&str> {
    let line = line.trim();
    line.strip_prefix('[')?.strip_suffix(']').map(str::trim)
}

fn key_value(line: &str) -> Option<(&str, &str)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    line.split_once('=').map(|(k, v)| (k.trim(), v.trim()))
}

impl Autoboot {
    fn parse(text: &str) -> Autoboot {
        Autoboot {
            lines: text.lines().map(str::to_string).collect(),
        }
    }

    fn render(&self) -> String {
        let mut text = self.lines.join("\n");
        text.push('\n');
        text
    }

    /// Each line with the section it is in.
    fn sectioned(&self) -> Vec<(String, &str)> {
        let mut section = "all".to_string();
        let mut out = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            if let Some(name) = section_header(line) {
                section = name.to_ascii_lowercase();
            }
            out.push((section.clone(), line.as_str()));
        }
        out
    }

    /// The value of `key` the firmware uses: `[all]` lines, and in a tryboot boot also
    /// `[tryboot]` lines, in file order; the last one wins.
    fn effective(&self, key: &str, tryboot: bool) -> Option<&str> {
        self.sectioned()
            .into_iter()
            .filter(|(section, _)| section == "all" || (tryboot && section == "tryboot"))
            .filter_map(|(_, line)| key_value(line))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .next_back()
    }

    /// Sets `key` wherever `section` has it, else adds it under the section's first header (or
    /// at the top for `all`), else appends the section.
    fn set(&mut self, section: &str, key: &str, value: &str) {
        let line = format!("{key}={value}");
        let matches: Vec<usize> = self
            .sectioned()
            .iter()
            .enumerate()
            .filter(|(_, (s, l))| s == section && key_value(l).is_some_and(|(k, _)| k == key))
            .map(|(i, _)| i)
            .collect();
        for &i in &matches {
            if let Some(slot) = self.lines.get_mut(i) {
                slot.clone_from(&line);
            }
        }
        if !matches.is_empty() {
            return;
        }
        let header = self
            .lines
            .iter()
            .position(|l| section_header(l).is_some_and(|h| h.eq_ignore_ascii_case(section)));
        match header {
            Some(i) => self.lines.insert(i + 1, line),
            None if section == "all" => self.lines.insert(0, line),
            None => self.lines.extend([format!("[{section}]"), line]),
        }
    }
}

impl Bootloader for RpiTryboot {
    fn name(&self) -> &'static str {
        "rpi-tryboot"
    }

    /// From `root=PARTLABEL=root-<x>` in the kernel command line, else from the boot partition
    /// the firmware reports in the device tree.
    fn booted(&self) -> Result<Slot, BootError> {
        let from_cmdline = cmdline_slot(&self.cmdline);
        if let Ok(Some(slot)) = from_cmdline {
            return Ok(slot);
        }
        if let Some(slot) = self.device_tree_slot() {
            return Ok(slot);
        }
        let why = match from_cmdline {
            Err(e) => e.to_string(),
            Ok(_) => format!("{} has no root=PARTLABEL=root-a|b", self.cmdline.display()),
        };
        Err(BootError::UnknownBootedSlot(format!(
            "{why}, and {} names neither boot partition",
            self.bootloader_node.join("partition").display()
        )))
    }

    fn health(&self, slot: Slot) -> Result<SlotHealth, BootError> {
        Ok(self.load()?.health(slot))
    }

    fn version(&self, slot: Slot) -> Result<Option<String>, BootError> {
        Ok(self
            .read_records()?
            .get(&slot)
            .and_then(|r| r.version.clone()))
    }

    fn boot_files_dir(&self, slot: Slot) -> Option<PathBuf> {
        Some(self.slot_boot_dirs[index(slot)].clone())
    }

    /// Points `[tryboot]` (and `[all]`, if it named `slot`) at the good slot, so that even an
    /// accidental tryboot reboot cannot start `slot` while it is being written; then records it bad.
    fn mark_bad(&mut self, slot: Slot) -> Result<(), BootError> {
        let loaded = self.load()?;
        loaded
            .require_good_fallback(slot, "mark bad")
            .map_err(BootError::Inconsistent)?;
        let good = slot.other();
        let default = if loaded.default == slot {
            good
        } else {
            loaded.default
        };
        self.write_autoboot(&loaded.autoboot, default, default)?;
        let mut records = loaded.records.clone();
        records.insert(
            slot,
            SlotRecord {
                state: SlotHealth::Bad,
                version: None,
            },
        );
        self.write_records(&loaded.records, &records)
    }

    /// Records the trial, then points `[tryboot]` at it; `[all]` is unchanged. The trial happens
    /// only on a reboot with the tryboot flag ([`Bootloader::reboot_command`]).
    fn set_try(&mut self, try_boot: &TryBoot) -> Result<(), BootError> {
        let slot = try_boot.slot;
        let loaded = self.load()?;
        loaded
            .require_good_fallback(slot, "try")
            .map_err(BootError::Arm)?;
        if loaded.default == slot {
            return Err(BootError::Arm(format!(
                "slot {slot} is already the default"
            )));
        }
        if loaded.autoboot.effective("tryboot_a_b", false) != Some("1") {
            return Err(BootError::Arm(format!(
                "{} lacks tryboot_a_b=1 in [all]; without it a tryboot boot looks for tryboot.txt \
                 instead of switching partitions",
                self.autoboot_path().display()
            )));
        }
        self.require_slot_cmdline(slot)?;
        let mut records = loaded.records.clone();
        records.insert(
            slot,
            SlotRecord {
                state: SlotHealth::Trying,
                version: Some(try_boot.version.clone()),
            },
        );
        self.write_records(&loaded.records, &records)?;
        self.write_autoboot(&loaded.autoboot, loaded.default, slot)
    }

    /// Points `[all]` and `[tryboot]` at the booted `slot`. Committing a trial keeps the previous
    /// default recorded good; committing the default ends a still-recorded trial of the other
    /// slot (it failed, or was never started), which becomes bad.
    fn commit(&mut self, slot: Slot) -> Result<(), BootError> {
        let booted = self.booted()?;
        if booted != slot {
            return Err(BootError::Inconsistent(format!(
                "refusing to commit slot {slot}: slot {booted} is booted"
            )));
        }
        let loaded = self.load()?;
        if loaded.default != slot
            && loaded.records.get(&slot).map(|r| r.state) == Some(SlotHealth::Bad)
        {
            return Err(BootError::Inconsistent(format!(
                "refusing to commit slot {slot}: it is marked bad"
            )));
        }
        self.write_autoboot(&loaded.autoboot, slot, slot)?;
        let mut records = loaded.records.clone();
        mark_good(&mut records, slot);
        if loaded.default != slot {
            // The previous default stays intact: the way back if this slot is ever marked bad.
            mark_good(&mut records, loaded.default);
        } else if let Some(other) = records.get_mut(&slot.other()) {
            if other.state == SlotHealth::Trying {
                other.state = SlotHealth::Bad;
            }
        }
        self.write_records(&loaded.records, &records)
    }

    /// Needs the Raspberry Pi kernel's firmware driver (see the module header).
    fn reboot_command(&self) -> Vec<String> {
        vec!["reboot".to_string(), "0 tryboot".to_string()]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const AUTOBOOT: &str = "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=3\n";

    struct Device {
        dir: tempfile::TempDir,
        pi: RpiTryboot,
    }

    impl Device {
        /// The first FAT partition with `autoboot` at `<dir>/boot/firmware`, the slots' boot
        /// partitions at `<dir>/boot/slot-{a,b}`, A booted.
        fn new(autoboot: &str) -> Device {
            let dir = tempfile::tempdir().unwrap();
            let firmware = dir.path().join("boot/firmware");
            std::fs::create_dir_all(&firmware).unwrap();
            std::fs::write(firmware.join(AUTOBOOT_FILE), autoboot).unwrap();
            for slot in [Slot::A, Slot::B] {
                let boot = dir.path().join(format!("boot/slot-{slot}"));
                std::fs::create_dir_all(&boot).unwrap();
                let cmdline = format!(
                    "console=serial0,115200 root=PARTLABEL={} rootfstype=erofs ro\n",
                    slot.partlabel()
                );
                std::fs::write(boot.join("cmdline.txt"), cmdline).unwrap();
            }
            let pi = RpiTryboot::new(firmware)
                .with_cmdline(dir.path().join("cmdline"))
                .with_bootloader_node(dir.path().join("dt"));
            let device = Device { dir, pi };
            device.running(Slot::A);
            device
        }

        fn autoboot(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("boot/firmware").join(AUTOBOOT_FILE))
                .unwrap()
        }

        fn running(&self, slot: Slot) {
            let cmdline = format!("console=serial0 root=PARTLABEL={} ro\n", slot.partlabel());
            std::fs::write(self.dir.path().join("cmdline"), cmdline).unwrap();
        }

        fn try_b(&mut self, version: &str) -> Result<(), BootError> {
            self.pi.mark_bad(Slot::B)?;
            self.pi.set_try(&TryBoot {
                slot: Slot::B,
                version: version.into(),
            })
        }

        /// The firmware: reads autoboot.txt (`[all]`, plus `[tryboot]` when the one-shot flag is
        /// set), boots that partition, and the kernel runs with its cmdline.txt.
        fn reboot(&self, tryboot_flag: bool) -> Slot {
            let mut section = "all";
            let mut partition = None;
            let text = self.autoboot();
            for line in text.lines() {
                match line.trim() {
                    "[all]" => section = "all",
                    "[tryboot]" => section = "tryboot",
                    l if l.starts_with('[') => section = "other",
                    l => {
                        let active = section == "all" || (tryboot_flag && section == "tryboot");
                        if let (true, Some(v)) = (active, l.strip_prefix("boot_partition=")) {
                            partition = Some(v.parse::<u32>().unwrap());
                        }
                    }
                }
            }
            let slot = match partition.unwrap() {
                2 => Slot::A,
                3 => Slot::B,
                p => panic!("firmware would boot partition {p}"),
            };
            let cmdline = self
                .dir
                .path()
                .join(format!("boot/slot-{slot}/cmdline.txt"));
            let root = Slot::from_cmdline(&std::fs::read_to_string(cmdline).unwrap()).unwrap();
            self.running(root);
            root
        }
    }

    #[test]
    fn a_fresh_device_boots_the_default_partition() {
        let dev = Device::new(AUTOBOOT);
        assert_eq!(dev.pi.booted().unwrap(), Slot::A);
        assert_eq!(dev.pi.health(Slot::A).unwrap(), SlotHealth::Good);
        assert_eq!(dev.pi.health(Slot::B).unwrap(), SlotHealth::Bad);
        assert_eq!(dev.pi.version(Slot::A).unwrap(), None);
        assert_eq!(dev.reboot(false), Slot::A);
    }

    #[test]
    fn mark_bad_points_tryboot_at_the_good_slot() {
        let mut dev = Device::new(AUTOBOOT);
        dev.pi.mark_bad(Slot::B).unwrap();
        assert_eq!(
            dev.autoboot(),
            "[all]\ntryboot_a_b=1\nboot_partition=2\n[tryboot]\nboot_partition=2\n"
        );
        // Even an accidental tryboot reboot boots A while B is being written.
        assert_eq!(dev.reboot(true), Slot::A);
        assert_eq!(dev.pi.health(Slot::B).unwrap(), SlotHealth::Bad);
        let root = dev.dir.path().join("boot/firmware");
        assert!(!root.join("autoboot.txt.new").exists());
        assert!(!root.join("confab-slots.json.new").exists());
    }

    #[test]
    fn a_release_cmdline_placeholder_names_the_trial_slot() {
        let mut dev = Device::new(AUTOBOOT);
        let cmdline = dev.dir.path().join("boot/slot-b/cmdline.txt");
        std::fs::write(
            &cmdline,
            "console=tty1 root=PARTLABEL=root-@SLOT@ rootfstype=erofs ro\n",
        )
        .unwrap();
        dev.try_b("1.3.0").unwrap();
        assert_eq!(
            std::fs::read_to_string(&cmdline).unwrap(),
            "console=tty1 root=PARTLABEL=root-b rootfstype=erofs ro\n"
        );
        assert_eq!(dev.pi.health(Slot::B).unwrap(), SlotHealth::Trying);
    }

    #[test]
    fn set_try_arms_only_the_tryboot_section() {
        let mut dev = Device::new(AUTOBOOT);
        dev.try_b("1.3.0").unwrap();
        assert_eq!(dev.autoboot(), AUTOBOOT);
        assert_eq!(dev.pi.health(Slot::B).unwrap(), SlotHealth::Trying);
        assert_eq!(dev.pi.version(Slot::B).unwrap().as_deref(), Some("1.3.0"));
        // A plain reboot (or a reset after a hang) boots A; the tryboot reboot boots B once.
        assert_eq!(dev.reboot(false), Slot::A);
        assert_eq!(dev.reboot(true), Slot::B);
        assert_eq!(dev.reboot(false), Slot::A);
    }

    #[test]
    fn commit_after_the_trial_makes_it_the_default() {
        let mut dev = Device::new(AUTOBOOT);
        dev.try_b("1.3.0").unwrap();
        assert_eq!(dev.reboot(true), Slot::B);
        dev.pi.commit(Slot::B).unwrap();
        assert_eq!(
            dev.autoboot(),
            "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=3\n"
        );
        assert_eq!(dev.pi.health(Slot::B).unwrap(), SlotHealth::Good);
        assert_eq!(dev.pi.health(Slot::A).unwrap(), SlotHealth::Good);
        assert_eq!(dev.pi.version(Slot::B).unwrap().as_deref(), Some("1.3.0"));
        assert_eq!(dev.reboot(false), Slot::B);
        assert_eq!(dev.reboot(true), Slot::B);
        // The next update goes into A.
        dev.pi.mark_bad(Slot::A).unwrap();
        dev.pi
            .set_try(&TryBoot {
                slot: Slot::A,
                version: "1.4.0".into(),
            })
            .unwrap();
        assert_eq!(dev.reboot(true), Slot::A);
        assert_eq!(dev.reboot(false), Slot::B);
    }

    #[test]
    fn committing_the_fallback_after_a_failed_trial_marks_the_trial_bad() {
        let mut dev = Device::new(AUTOBOOT);
        dev.try_b("1.3.0").unwrap();
        assert_eq!(dev.reboot(true), Slot::B);
        // No commit: the watchdog resets, the flag is gone.
        assert_eq!(dev.reboot(false), Slot::A);
        dev.pi.commit(Slot::A).unwrap();
        assert_eq!(dev.pi.health(Slot::B).unwrap(), SlotHealth::Bad);
        assert_eq!(dev.reboot(true), Slot::A);
        // Committing again writes nothing.
        let before = std::fs::metadata(dev.dir.path().join("boot/firmware/confab-slots.json"))
            .unwrap()
            .modified()
            .unwrap();
        dev.pi.commit(Slot::A).unwrap();
        let after = std::fs::metadata(dev.dir.path().join("boot/firmware/confab-slots.json"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
    }

    #[test]
    fn refusals_keep_a_good_slot_to_fall_back_to() {
        let mut dev = Device::new(AUTOBOOT);
        assert!(dev
            .pi
            .mark_bad(Slot::A)
            .unwrap_err()
            .to_string()
            .contains("refusing"));
        dev.try_b("1.3.0").unwrap();
        dev.reboot(true);
        assert!(dev.pi.mark_bad(Slot::A).is_err());
        let err = dev.pi.commit(Slot::A).unwrap_err().to_string();
        assert!(err.contains("slot b is booted"), "{err}");
        let err = dev
            .pi
            .set_try(&TryBoot {
                slot: Slot::A,
                version: "1.4.0".into(),
            })
            .unwrap_err();
        assert!(matches!(err, BootError::Arm(_)), "{err}");
    }

    #[test]
    fn set_try_checks_the_a_b_mode_and_the_slots_cmdline() {
        let mut dev = Device::new("[all]\nboot_partition=2\n[tryboot]\nboot_partition=3\n");
        let err = dev.try_b("1.3.0").unwrap_err().to_string();
        assert!(err.contains("tryboot_a_b=1"), "{err}");

        let mut dev = Device::new(AUTOBOOT);
        let cmdline = dev.dir.path().join("boot/slot-b/cmdline.txt");
        std::fs::write(&cmdline, "root=PARTLABEL=root-a ro\n").unwrap();
        let err = dev.try_b("1.3.0").unwrap_err().to_string();
        assert!(err.contains("slot-b/cmdline.txt"), "{err}");
        std::fs::remove_file(&cmdline).unwrap();
        let err = dev.try_b("1.3.0").unwrap_err().to_string();
        assert!(err.contains("slot-b/cmdline.txt"), "{err}");
        assert_eq!(dev.reboot(true), Slot::A);
    }

    #[test]
    fn edits_keep_comments_and_unknown_lines() {
        let text = "# A/B for confab\ntryboot_a_b=1\nboot_partition=2\n[pi4]\nfoo=bar\n";
        let mut dev = Device::new(text);
        dev.try_b("1.3.0").unwrap();
        assert_eq!(
            dev.autoboot(),
            "# A/B for confab\ntryboot_a_b=1\nboot_partition=2\n[pi4]\nfoo=bar\n[tryboot]\nboot_partition=3\n"
        );
        assert_eq!(dev.reboot(true), Slot::B);
    }

    #[test]
    fn custom_partition_numbers_map_to_slots() {
        let text = "[all]\ntryboot_a_b=1\nboot_partition=5\n[tryboot]\nboot_partition=5\n";
        let mut dev = Device::new(text);
        dev.pi = dev.pi.clone().with_partitions(5, 6);
        assert_eq!(dev.pi.health(Slot::A).unwrap(), SlotHealth::Good);
        dev.try_b("1.3.0").unwrap();
        assert!(
            dev.autoboot().ends_with("[tryboot]\nboot_partition=6\n"),
            "{}",
            dev.autoboot()
        );
    }

    #[test]
    fn bad_autoboot_files_are_errors_naming_them() {
        let dev = Device::new("[all]\ntryboot_a_b=1\n");
        let err = dev.pi.health(Slot::A).unwrap_err().to_string();
        assert!(
            err.contains("autoboot.txt") && err.contains("no boot_partition"),
            "{err}"
        );
        let dev = Device::new("[all]\nboot_partition=7\n");
        let err = dev.pi.health(Slot::A).unwrap_err().to_string();
        assert!(
            err.contains("autoboot.txt") && err.contains("boot_partition=7"),
            "{err}"
        );
        let dev = Device::new(AUTOBOOT);
        std::fs::write(
            dev.dir.path().join("boot/firmware/confab-slots.json"),
            "[1, 2",
        )
        .unwrap();
        let err = dev.pi.version(Slot::A).unwrap_err().to_string();
        assert!(err.contains("confab-slots.json"), "{err}");
        let missing = RpiTryboot::new(dev.dir.path().join("nowhere"));
        let err = missing.health(Slot::A).unwrap_err().to_string();
        assert!(err.contains("nowhere/autoboot.txt"), "{err}");
    }

    #[test]
    fn a_leftover_new_file_from_a_power_cut_changes_nothing() {
        let mut dev = Device::new(AUTOBOOT);
        let new = dev.dir.path().join("boot/firmware/autoboot.txt.new");
        std::fs::write(&new, "[all]\nboot_par").unwrap();
        assert_eq!(dev.pi.health(Slot::A).unwrap(), SlotHealth::Good);
        dev.try_b("1.3.0").unwrap();
        assert_eq!(dev.reboot(true), Slot::B);
    }

    #[test]
    fn booted_comes_from_the_command_line_or_the_device_tree() {
        let dev = Device::new(AUTOBOOT);
        dev.running(Slot::B);
        assert_eq!(dev.pi.booted().unwrap(), Slot::B);
        std::fs::write(dev.dir.path().join("cmdline"), "console=serial0 ro\n").unwrap();
        assert!(matches!(
            dev.pi.booted().unwrap_err(),
            BootError::UnknownBootedSlot(_)
        ));
        std::fs::create_dir_all(dev.dir.path().join("dt")).unwrap();
        std::fs::write(dev.dir.path().join("dt/partition"), 3u32.to_be_bytes()).unwrap();
        assert_eq!(dev.pi.booted().unwrap(), Slot::B);
    }

    #[test]
    fn reboot_command_and_boot_files_dir() {
        let dev = Device::new(AUTOBOOT);
        assert_eq!(dev.pi.reboot_command(), ["reboot", "0 tryboot"]);
        assert_eq!(
            dev.pi.boot_files_dir(Slot::B),
            Some(dev.dir.path().join("boot/slot-b"))
        );
        assert_eq!(dev.pi.name(), "rpi-tryboot");
    }
}
