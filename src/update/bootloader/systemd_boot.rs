//! `SystemdBoot`: A/B on UEFI with systemd-boot's boot counting. It owns this project's Boot
//! Loader Specification entries on the ESP, `loader/entries/<name>-<a|b>[+LEFT[-DONE]].conf`
//! (`<name>` is `confab` unless configured), and names the slots' boot file directories
//! (`/slot-a/`, `/slot-b/` on the ESP). Other entries on the ESP are never touched.
//!
//! How systemd-boot (252, `src/boot/efi/boot.c`) chooses, which everything here relies on:
//! - The counter lives in the file name. Before starting a counted entry systemd-boot renames it
//!   `+N-M` → `+(N-1)-(M+1)`; `systemd-bless-boot` renames it to `<name>-<x>.conf` once
//!   `boot-complete.target` is reached. An entry with no tries left (`+0-M`) sorts last.
//! - Then entries that carry `sort-key` come first; among equal sort keys the higher `version`
//!   (strverscmp, [`strverscmp`]) comes first. Without `sort-key` entries are ordered by file
//!   name only, so every entry written here carries `sort-key <name>`.
//! - With no `default` in loader.conf (and no `LoaderEntryDefault`/one-shot EFI variable) the
//!   first entry boots: "the newest version with tries left, else the newest good one".
//!
//! So: `mark_bad` deletes the slot's entries; `set_try` writes `<name>-<x>+3.conf` with the new
//! release's version (a downgrade or the same version would never be chosen, so it is refused);
//! `commit` does what systemd-bless-boot does (harmless if it already did). Health: an entry
//! without counter is Good, one with tries left Trying, `+0-M` or none Bad (except the booted
//! slot on its last try, which is Trying: it can still be committed).

use std::cmp::Ordering;
use std::path::PathBuf;

use super::{
    cmdline_slot, read_text, remove_file, rename_file, replace_file, sync_dir, BootError,
    Bootloader, TryBoot,
};
use crate::update::{Slot, SlotHealth};

pub const DEFAULT_ENTRY_NAME: &str = "confab";
/// Boots a trial gets before systemd-boot falls back to the good entry.
pub const DEFAULT_TRIES: u32 = 3;
/// Options for a trial entry when neither a base command line nor a good entry gives any.
const DEFAULT_OPTIONS: &str = "rootfstype=erofs ro";
/// The entry systemd-boot started, set by systemd-boot (vendor GUID of the Boot Loader Interface).
const LOADER_ENTRY_SELECTED: &str = "LoaderEntrySelected-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// The systemd-boot backend over an ESP directory (`/efi` on the device, a temp dir in tests).
#[derive(Debug, Clone)]
pub struct SystemdBoot {
    esp: PathBuf,
    entry_name: String,
    tries: u32,
    cmdline: PathBuf,
    efivars: PathBuf,
    base_options: Option<String>,
}

impl SystemdBoot {
    pub fn new(esp: PathBuf) -> SystemdBoot {
        SystemdBoot {
            esp,
            entry_name: DEFAULT_ENTRY_NAME.to_string(),
            tries: DEFAULT_TRIES,
            cmdline: PathBuf::from("/proc/cmdline"),
            efivars: PathBuf::from("/sys/firmware/efi/efivars"),
            base_options: None,
        }
    }

    /// The `<name>` in `loader/entries/<name>-<x>.conf`.
    pub fn with_entry_name(mut self, name: &str) -> SystemdBoot {
        self.entry_name = name.to_string();
        self
    }

    /// Boots a trial gets (at least 1).
    pub fn with_tries(mut self, tries: u32) -> SystemdBoot {
        self.tries = tries.max(1);
        self
    }

    /// The running kernel's command line (`/proc/cmdline`).
    pub fn with_cmdline(mut self, path: PathBuf) -> SystemdBoot {
        self.cmdline = path;
        self
    }

    /// The efivarfs directory (`/sys/firmware/efi/efivars`).
    pub fn with_efivars(mut self, dir: PathBuf) -> SystemdBoot {
        self.efivars = dir;
        self
    }

    /// The kernel command line for trial entries instead of the good entry's; `@SLOT@` becomes
    /// the slot letter, and `root=PARTLABEL=root-<x>` is always set to the slot.
    pub fn with_base_options(mut self, options: &str) -> SystemdBoot {
        self.base_options = Some(options.to_string());
        self
    }

    fn entries_dir(&self) -> PathBuf {
        self.esp.join("loader").join("entries")
    }

    fn entry_path(&self, slot: Slot, counter: Option<u32>) -> PathBuf {
        let counter = counter.map(|n| format!("+{n}")).unwrap_or_default();
        self.entries_dir().join(format!(
            "{}-{}{counter}.conf",
            self.entry_name,
            slot.letter()
        ))
    }

    /// This project's entries, by file name (contents are read only where needed).
    fn scan(&self) -> Result<Vec<EntryFile>, BootError> {
        let dir = self.entries_dir();
        let mut entries = Vec::new();
        for item in std::fs::read_dir(&dir).map_err(|e| BootError::file(&dir, e))? {
            let item = item.map_err(|e| BootError::file(&dir, e))?;
            let path = item.path();
            let Some(file_name) = item.file_name().to_str().map(str::to_string) else {
                continue; // not UTF-8, so not one of ours
            };
            match parse_entry_name(&self.entry_name, &file_name) {
                Ok(Some((slot, counter))) => entries.push(EntryFile {
                    path,
                    slot,
                    counter,
                }),
                Ok(None) => {}
                Err(detail) => return Err(BootError::file(&path, detail)),
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    /// The slot named by the entry systemd-boot reports it started.
    fn selected_entry_slot(&self) -> Option<Slot> {
        let bytes = std::fs::read(self.efivars.join(LOADER_ENTRY_SELECTED)).ok()?;
        let id = decode_efi_string(&bytes)?;
        [id.clone(), id.to_lowercase()]
            .iter()
            .find_map(|id| parse_entry_name(&self.entry_name, id).ok().flatten())
            .map(|(slot, _)| slot)
    }

    /// The trial's boot files must be in place before an entry points at them.
    fn require_boot_files(&self, slot: Slot) -> Result<(), BootError> {
        for file in ["linux", "initrd"] {
            let path = self.esp.join(format!("slot-{}", slot.letter())).join(file);
            if !path.is_file() {
                return Err(BootError::Arm(format!(
                    "{} is missing: install slot {slot}'s boot files first",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// systemd-boot must order the trial before every usable entry of the other slot.
    fn require_sorts_first(
        &self,
        files: &[EntryFile],
        slot: Slot,
        version: &str,
    ) -> Result<(), BootError> {
        for file in files
            .iter()
            .filter(|f| f.slot != slot && f.rank() != Rank::Exhausted)
        {
            let theirs = read_entry(file)?;
            if !sorts_before(&self.entry_name, version, &theirs) {
                return Err(BootError::Arm(format!(
                    "systemd-boot would keep booting {} (version {}) before a trial of version {version}; \
                     boot counting can only try a newer version",
                    file.path.display(),
                    theirs.version.as_deref().unwrap_or("none"),
                )));
            }
        }
        Ok(())
    }

    fn trial_options(&self, slot: Slot, fallback: &EntryFields) -> String {
        let template = match (&self.base_options, fallback.options.is_empty()) {
            (Some(base), _) => base.clone(),
            (None, false) => fallback.options.join(" "),
            (None, true) => DEFAULT_OPTIONS.to_string(),
        };
        options_for(slot, &template)
    }

    fn render_entry(&self, try_boot: &TryBoot, options: &str) -> String {
        let x = try_boot.slot.letter();
        format!(
            "title {name} {release} (slot {x})\nversion {version}\nsort-key {name}\n\
             linux /slot-{x}/linux\ninitrd /slot-{x}/initrd\noptions {options}\n",
            name = self.entry_name,
            release = try_boot.version,
            version = entry_version(&try_boot.version),
        )
    }
}

/// Refuses a change that would leave no committed entry to fall back to.
fn require_good_fallback(files: &[EntryFile], slot: Slot, what: &str) -> Result<(), String> {
    let other = slot.other();
    if files
        .iter()
        .any(|f| f.slot == other && f.rank() == Rank::Good)
    {
        return Ok(());
    }
    Err(format!(
        "refusing to {what} slot {slot}: slot {other} has no committed boot entry, so nothing good \
         would be left to boot"
    ))
}

/// How systemd-boot regards one entry file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// `+0-M`: sorted last, never chosen while anything else exists.
    Exhausted,
    /// `+N-M` with N > 0.
    Trying,
    /// No counter: blessed.
    Good,
}

/// The boot counter in an entry's file name: `+LEFT[-DONE]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counter {
    left: u32,
    done: u32,
}

/// One of this project's entry files, known by its name.
#[derive(Debug, Clone)]
struct EntryFile {
    path: PathBuf,
    slot: Slot,
    counter: Option<Counter>,
}

impl EntryFile {
    fn rank(&self) -> Rank {
        match self.counter {
            None => Rank::Good,
            Some(c) if c.left > 0 => Rank::Trying,
            Some(_) => Rank::Exhausted,
        }
    }
}

/// The entry systemd-boot would prefer among `slot`'s.
fn best(files: &[EntryFile], slot: Slot) -> Option<&EntryFile> {
    files
        .iter()
        .filter(|f| f.slot == slot)
        .max_by_key(|f| (f.rank(), f.counter.map_or(u32::MAX, |c| c.left)))
}

/// `<prefix>-<a|b>[+LEFT[-DONE]].conf` → slot and counter; `Ok(None)` for anyone else's file;
/// an error for one of ours whose counter cannot be read.
fn parse_entry_name(
    prefix: &str,
    file_name: &str,
) -> Result<Option<(Slot, Option<Counter>)>, String> {
    let Some(rest) = file_name
        .strip_suffix(".conf")
        .and_then(|s| s.strip_prefix(prefix))
        .and_then(|s| s.strip_prefix('-'))
    else {
        return Ok(None);
    };
    let (slot, counter) = match rest.split_once('+') {
        Some((slot, counter)) => (slot, Some(counter)),
        None => (rest, None),
    };
    let slot = match slot {
        "a" => Slot::A,
        "b" => Slot::B,
        _ => return Ok(None),
    };
    Ok(Some((slot, counter.map(parse_counter).transpose()?)))
}

fn parse_counter(text: &str) -> Result<Counter, String> {
    let number = |s: &str| {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u32>().ok()
        } else {
            None
        }
    };
    let (left, done) = text.split_once('-').unwrap_or((text, "0"));
    match (number(left), number(done)) {
        (Some(left), Some(done)) => Ok(Counter { left, done }),
        _ => Err(format!(
            "cannot read the boot counter \"+{text}\" in the file name (expected +TRIES or +TRIES-DONE)"
        )),
    }
}

/// The keys of an entry this backend uses; all others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct EntryFields {
    title: Option<String>,
    version: Option<String>,
    sort_key: Option<String>,
    options: Vec<String>,
}

fn read_entry(file: &EntryFile) -> Result<EntryFields, BootError> {
    let fields =
        parse_entry(&read_text(&file.path)?).map_err(|d| BootError::file(&file.path, d))?;
    match Slot::from_cmdline(&fields.options.join(" ")) {
        Some(root) if root != file.slot => Err(BootError::file(
            &file.path,
            format!(
                "named for slot {} but its options boot {}",
                file.slot,
                root.partlabel()
            ),
        )),
        _ => Ok(fields),
    }
}

fn parse_entry(text: &str) -> Result<EntryFields, String> {
    if text.contains('\0') {
        return Err("not a boot entry: binary data".into());
    }
    let mut fields = EntryFields::default();
    let mut has_loader = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let value = value.trim().to_string();
        match key {
            "title" => fields.title = Some(value),
            "version" => fields.version = Some(value),
            "sort-key" => fields.sort_key = Some(value),
            "options" => fields.options.push(value),
            "linux" | "efi" | "uki" => has_loader = true,
            _ => {}
        }
    }
    if !has_loader {
        return Err("not a boot entry: no linux or efi line".into());
    }
    Ok(fields)
}

/// Whether systemd-boot orders a new entry (`sort-key <key>`, `version`) before `theirs`, both
/// having tries left. Entries without `sort-key` sort after those with one; machine-id is not
/// written here, which only ever moves ours earlier.
fn sorts_before(key: &str, version: &str, theirs: &EntryFields) -> bool {
    match theirs.sort_key.as_deref() {
        None => true,
        Some(their_key) => match key.cmp(their_key) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => {
                strverscmp(version, theirs.version.as_deref().unwrap_or("")) == Ordering::Greater
            }
        },
    }
}

/// `template` for `slot`: `@SLOT@` replaced, every `root=` dropped and `root=PARTLABEL=root-<x>`
/// put first.
fn options_for(slot: Slot, template: &str) -> String {
    let root = format!("root=PARTLABEL={}", slot.partlabel());
    let template = template.replace("@SLOT@", slot.letter());
    let rest = template
        .split_whitespace()
        .filter(|arg| !arg.starts_with("root="));
    std::iter::once(root.as_str())
        .chain(rest)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `version` line for a release version. A semver pre-release `-` becomes `~`, which
/// strverscmp sorts below the release (`1.0.0~rc.1` < `1.0.0`, as in semver); written as is,
/// `1.0.0-rc.1` would sort above `1.0.0`.
pub fn entry_version(release: &str) -> String {
    map_before_build(release, '-', '~')
}

/// The release version an entry's `version` line stands for (inverse of [`entry_version`]).
pub fn release_version(entry: &str) -> String {
    map_before_build(entry, '~', '-')
}

/// Replaces the first `from` before any `+build` part.
fn map_before_build(version: &str, from: char, to: char) -> String {
    match version.split_once('+') {
        Some((core, build)) => format!("{}+{build}", core.replacen(from, &to.to_string(), 1)),
        None => version.replacen(from, &to.to_string(), 1),
    }
}

/// systemd's `strverscmp_improved`, which orders entry versions: the strings split into numeric
/// and alphabetic segments, each possibly prefixed by `~` (pre-release, oldest), `-` (release
/// separator), `^` (patch) or `.`; numbers compare by value, so `0.10.0` > `0.9.0`; other
/// characters only separate segments; with equal segments the longer string is newer.
pub fn strverscmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    if a.is_empty() || b.is_empty() {
        return a.cmp(b);
    }
    loop {
        a = skip_invalid(a);
        b = skip_invalid(b);
        let before = (a.len(), b.len());
        if let Some(r) = compare_prefix(&mut a, &mut b, b'~') {
            return r;
        }
        if a.is_empty() || b.is_empty() {
            return first(a).cmp(&first(b));
        }
        for prefix in [b'-', b'^', b'.'] {
            if let Some(r) = compare_prefix(&mut a, &mut b, prefix) {
                return r;
            }
        }
        let r = if first(a).is_ascii_digit() || first(b).is_ascii_digit() {
            compare_numbers(&mut a, &mut b)
        } else {
            compare_words(&mut a, &mut b)
        };
        if r != Ordering::Equal {
            return r;
        }
        // Every round consumes a prefix or a segment; this only guards against a logic slip.
        if (a.len(), b.len()) == before {
            return Ordering::Equal;
        }
    }
}

fn first(s: &[u8]) -> u8 {
    s.first().copied().unwrap_or(0)
}

fn skip_invalid(s: &[u8]) -> &[u8] {
    let valid = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'~' | b'-' | b'^' | b'.');
    let start = s.iter().position(valid).unwrap_or(s.len());
    &s[start..]
}

/// If only one starts with `prefix`, it is the older one (for `~` that holds even against the end
/// of the other string). Both with it: consume it and go on (`None`).
fn compare_prefix(a: &mut &[u8], b: &mut &[u8], prefix: u8) -> Option<Ordering> {
    let (has_a, has_b) = (first(a) == prefix, first(b) == prefix);
    if !has_a && !has_b {
        return None;
    }
    if has_a != has_b {
        // The one lacking the prefix is newer (`!has` compares greater).
        return Some((!has_a).cmp(&!has_b));
    }
    *a = &a[1..];
    *b = &b[1..];
    None
}

fn split_while(s: &[u8], pred: impl Fn(&u8) -> bool) -> (&[u8], &[u8]) {
    let end = s.iter().position(|c| !pred(c)).unwrap_or(s.len());
    s.split_at(end)
}

fn compare_numbers(a: &mut &[u8], b: &mut &[u8]) -> Ordering {
    let (na, ra) = split_while(skip_zeros(a), u8::is_ascii_digit);
    let (nb, rb) = split_while(skip_zeros(b), u8::is_ascii_digit);
    *a = ra;
    *b = rb;
    na.len().cmp(&nb.len()).then_with(|| na.cmp(nb))
}

fn skip_zeros(s: &[u8]) -> &[u8] {
    split_while(s, |c| *c == b'0').1
}

fn compare_words(a: &mut &[u8], b: &mut &[u8]) -> Ordering {
    let (wa, ra) = split_while(a, u8::is_ascii_alphabetic);
    let (wb, rb) = split_while(b, u8::is_ascii_alphabetic);
    *a = ra;
    *b = rb;
    let common = wa.len().min(wb.len());
    wa[..common]
        .cmp(&wb[..common])
        .then_with(|| wa.len().cmp(&wb.len()))
}

/// An efivarfs file: 4 bytes of attributes, then a NUL-terminated UTF-16LE string.
fn decode_efi_string(bytes: &[u8]) -> Option<String> {
    let units: Vec<u16> = bytes
        .get(4..)?
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .take_while(|&unit| unit != 0)
        .collect();
    String::from_utf16(&units).ok()
}

impl Bootloader for SystemdBoot {
    fn name(&self) -> &'static str {
        "systemd-boot"
    }

    /// From `root=PARTLABEL=root-<x>` in the kernel command line, else from the entry
    /// systemd-boot reports it started (`LoaderEntrySelected`).
    fn booted(&self) -> Result<Slot, BootError> {
        let from_cmdline = cmdline_slot(&self.cmdline);
        if let Ok(Some(slot)) = from_cmdline {
            return Ok(slot);
        }
        if let Some(slot) = self.selected_entry_slot() {
            return Ok(slot);
        }
        let why = match from_cmdline {
            Err(e) => e.to_string(),
            Ok(_) => format!("{} has no root=PARTLABEL=root-a|b", self.cmdline.display()),
        };
        Err(BootError::UnknownBootedSlot(format!(
            "{why}, and systemd-boot's LoaderEntrySelected names no {} entry",
            self.entry_name
        )))
    }

    fn health(&self, slot: Slot) -> Result<SlotHealth, BootError> {
        let files = self.scan()?;
        Ok(match best(&files, slot).map(EntryFile::rank) {
            Some(Rank::Good) => SlotHealth::Good,
            Some(Rank::Trying) => SlotHealth::Trying,
            Some(Rank::Exhausted) if self.booted().ok() == Some(slot) => SlotHealth::Trying,
            _ => SlotHealth::Bad,
        })
    }

    fn version(&self, slot: Slot) -> Result<Option<String>, BootError> {
        let files = self.scan()?;
        let Some(file) = best(&files, slot) else {
            return Ok(None);
        };
        Ok(read_entry(file)?.version.map(|v| release_version(&v)))
    }

    fn boot_files_dir(&self, slot: Slot) -> Option<PathBuf> {
        Some(self.esp.join(format!("slot-{}", slot.letter())))
    }

    /// Deletes every entry of `slot` (all counter variants), then fsyncs the directory.
    fn mark_bad(&mut self, slot: Slot) -> Result<(), BootError> {
        let files = self.scan()?;
        require_good_fallback(&files, slot, "mark bad").map_err(BootError::Inconsistent)?;
        for file in files.iter().filter(|f| f.slot == slot) {
            remove_file(&file.path)?;
        }
        sync_dir(&self.entries_dir())
    }

    /// Writes `<name>-<x>+<tries>.conf` (options from the other slot's good entry — the running
    /// one — or the base command line), then removes the slot's other entries.
    fn set_try(&mut self, try_boot: &TryBoot) -> Result<(), BootError> {
        let slot = try_boot.slot;
        let files = self.scan()?;
        require_good_fallback(&files, slot, "try").map_err(BootError::Arm)?;
        self.require_boot_files(slot)?;
        self.require_sorts_first(&files, slot, &entry_version(&try_boot.version))?;
        let fallback = match best(&files, slot.other()) {
            Some(file) => read_entry(file)?,
            None => EntryFields::default(),
        };
        let path = self.entry_path(slot, Some(self.tries));
        let entry = self.render_entry(try_boot, &self.trial_options(slot, &fallback));
        replace_file(&path, entry.as_bytes())?;
        for file in files.iter().filter(|f| f.slot == slot && f.path != path) {
            remove_file(&file.path)?;
        }
        sync_dir(&self.entries_dir())
    }

    /// Renames the booted slot's counted entry to `<name>-<x>.conf`, as systemd-bless-boot does.
    fn commit(&mut self, slot: Slot) -> Result<(), BootError> {
        let booted = self.booted()?;
        if booted != slot {
            return Err(BootError::Inconsistent(format!(
                "refusing to commit slot {slot}: slot {booted} is booted"
            )));
        }
        let files = self.scan()?;
        let counted: Vec<&EntryFile> = files
            .iter()
            .filter(|f| f.slot == slot && f.counter.is_some())
            .collect();
        let blessed = files.iter().any(|f| f.slot == slot && f.counter.is_none());
        if counted.is_empty() && blessed {
            return Ok(()); // already done, by systemd-bless-boot or by us
        }
        if counted.is_empty() {
            return Err(BootError::Inconsistent(format!(
                "slot {slot} has no boot entry in {} to commit",
                self.entries_dir().display()
            )));
        }
        if !blessed {
            if let Some(file) = best(&files, slot) {
                rename_file(&file.path, &self.entry_path(slot, None))?;
            }
        }
        for file in counted {
            remove_file(&file.path)?;
        }
        sync_dir(&self.entries_dir())
    }

    fn reboot_command(&self) -> Vec<String> {
        vec!["systemctl".to_string(), "reboot".to_string()]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;

    const A_OPTIONS: &str = "console=ttyAMA0 root=PARTLABEL=root-a rootfstype=erofs ro quiet";

    /// A device: an ESP with a good entry for A at `version`, boot files for both slots, and a
    /// kernel command line saying A is booted.
    struct Device {
        dir: tempfile::TempDir,
        boot: SystemdBoot,
    }

    impl Device {
        fn new(version: &str) -> Device {
            let dir = tempfile::tempdir().unwrap();
            let esp = dir.path().join("esp");
            std::fs::create_dir_all(esp.join("loader/entries")).unwrap();
            for x in ["a", "b"] {
                std::fs::create_dir_all(esp.join(format!("slot-{x}"))).unwrap();
                std::fs::write(esp.join(format!("slot-{x}/linux")), b"kernel").unwrap();
                std::fs::write(esp.join(format!("slot-{x}/initrd")), b"initrd").unwrap();
            }
            let good = format!(
                "title confab {version} (slot a)\nversion {version}\nsort-key confab\n\
                 linux /slot-a/linux\ninitrd /slot-a/initrd\noptions {A_OPTIONS}\narchitecture aa64\n"
            );
            std::fs::write(esp.join("loader/entries/confab-a.conf"), good).unwrap();
            let boot = SystemdBoot::new(esp)
                .with_cmdline(dir.path().join("cmdline"))
                .with_efivars(dir.path().join("efivars"));
            let device = Device { dir, boot };
            device.running(Slot::A);
            device
        }

        fn entries(&self) -> PathBuf {
            self.dir.path().join("esp/loader/entries")
        }

        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.entries())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }

        fn running(&self, slot: Slot) {
            let cmdline = format!(
                "console=ttyAMA0 root=PARTLABEL={} rootfstype=erofs ro\n",
                slot.partlabel()
            );
            std::fs::write(self.dir.path().join("cmdline"), cmdline).unwrap();
        }

        fn try_b(&mut self, version: &str) -> Result<(), BootError> {
            self.boot.mark_bad(Slot::B)?;
            self.boot.set_try(&TryBoot {
                slot: Slot::B,
                version: version.into(),
            })
        }

        /// The firmware: picks like systemd-boot, decrements a counted entry, and the kernel
        /// then runs with that entry's command line.
        fn reboot(&self) -> Slot {
            let (_chosen, slot) = firmware_boot(&self.entries());
            self.running(slot);
            slot
        }
    }

    /// An entry as systemd-boot 252 sees it, read independently of the code under test.
    #[derive(Debug)]
    struct Seen {
        id: String,
        tries_left: Option<u32>,
        tries_done: u32,
        sort_key: Option<String>,
        version: Option<String>,
        options: String,
    }

    fn firmware_entries(dir: &Path) -> Vec<Seen> {
        let mut seen = Vec::new();
        for item in std::fs::read_dir(dir).unwrap() {
            let id = item.unwrap().file_name().to_string_lossy().into_owned();
            let Some(stem) = id.strip_suffix(".conf") else {
                continue;
            };
            let text = std::fs::read_to_string(dir.join(&id)).unwrap();
            let value = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')))
                    .map(|v| v.trim().to_string())
            };
            let counter = stem.rsplit_once('+').map(|(_, c)| c.to_string());
            let (left, done) = match counter
                .as_deref()
                .map(|c| c.split_once('-').unwrap_or((c, "0")))
            {
                Some((l, d)) => (l.parse().ok(), d.parse().unwrap_or(0)),
                None => (None, 0),
            };
            seen.push(Seen {
                sort_key: value("sort-key"),
                version: value("version"),
                options: value("options").unwrap_or_default(),
                id,
                tries_left: left,
                tries_done: done,
            });
        }
        seen
    }

    /// systemd-boot's documented order: no tries left last; entries with sort-key first, by
    /// sort-key, then version descending; then id descending.
    fn firmware_order(a: &Seen, b: &Seen) -> Ordering {
        let exhausted = |s: &Seen| s.tries_left == Some(0);
        exhausted(a)
            .cmp(&exhausted(b))
            .then_with(|| a.sort_key.is_none().cmp(&b.sort_key.is_none()))
            .then_with(|| match (&a.sort_key, &b.sort_key) {
                (Some(ka), Some(kb)) => ka.cmp(kb).then_with(|| {
                    strverscmp(
                        b.version.as_deref().unwrap_or(""),
                        a.version.as_deref().unwrap_or(""),
                    )
                }),
                _ => Ordering::Equal,
            })
            .then_with(|| strverscmp(&b.id, &a.id))
    }

    fn firmware_pick(dir: &Path) -> Seen {
        let mut seen = firmware_entries(dir);
        seen.sort_by(firmware_order);
        seen.into_iter().next().unwrap()
    }

    /// One boot: returns the entry id as chosen (before the rename) and the slot it boots.
    fn firmware_boot(dir: &Path) -> (String, Slot) {
        let chosen = firmware_pick(dir);
        if let Some(left) = chosen.tries_left.filter(|&l| l > 0) {
            let stem = chosen.id.rsplit_once('+').unwrap().0;
            let renamed = format!("{stem}+{}-{}.conf", left - 1, chosen.tries_done + 1);
            std::fs::rename(dir.join(&chosen.id), dir.join(renamed)).unwrap();
        }
        (chosen.id, Slot::from_cmdline(&chosen.options).unwrap())
    }

    #[test]
    fn strverscmp_orders_like_systemd() {
        // The order documented with systemd's strverscmp_improved, oldest first.
        let ordered = [
            "122.1",
            "123~rc1-1",
            "123",
            "123-a",
            "123-a.1",
            "123-1",
            "123-1.1",
            "123^post1",
            "123.a-1",
            "123.1-1",
            "123a-1",
            "124-1",
        ];
        for pair in ordered.windows(2) {
            assert_eq!(
                strverscmp(pair[0], pair[1]),
                Ordering::Less,
                "{} < {}",
                pair[0],
                pair[1]
            );
            assert_eq!(
                strverscmp(pair[1], pair[0]),
                Ordering::Greater,
                "{} > {}",
                pair[1],
                pair[0]
            );
        }
        assert_eq!(strverscmp("0.10.0", "0.9.0"), Ordering::Greater);
        assert_eq!(strverscmp("1.2.3", "1.2.3"), Ordering::Equal);
        assert_eq!(strverscmp("007", "7"), Ordering::Equal);
        assert_eq!(strverscmp("1.0", ""), Ordering::Greater);
        // Pre-releases are written so that they sort below their release, as in semver.
        assert_eq!(entry_version("1.0.0-rc.1"), "1.0.0~rc.1");
        assert_eq!(
            strverscmp(&entry_version("1.0.0-rc.1"), &entry_version("1.0.0")),
            Ordering::Less
        );
        assert_eq!(
            strverscmp(&entry_version("1.0.0-rc.2"), &entry_version("1.0.0-rc.1")),
            Ordering::Greater
        );
        assert_eq!(
            release_version(&entry_version("1.0.0-rc.1+build-7")),
            "1.0.0-rc.1+build-7"
        );
        assert_eq!(entry_version("1.0.0+build-7"), "1.0.0+build-7");
    }

    #[test]
    fn entry_names_are_read_with_and_without_counters() {
        let parse = |name: &str| parse_entry_name("confab", name);
        assert_eq!(parse("confab-a.conf").unwrap(), Some((Slot::A, None)));
        assert_eq!(
            parse("confab-b+3.conf").unwrap(),
            Some((Slot::B, Some(Counter { left: 3, done: 0 })))
        );
        assert_eq!(
            parse("confab-b+0-3.conf").unwrap(),
            Some((Slot::B, Some(Counter { left: 0, done: 3 })))
        );
        for other in [
            "debian-6.1.conf",
            "confab-a.conf.new",
            "confab-rescue.conf",
            "confab.conf",
            "loader.conf",
        ] {
            assert_eq!(parse(other).unwrap(), None, "{other}");
        }
        for bad in [
            "confab-a+.conf",
            "confab-a+x.conf",
            "confab-b+2-.conf",
            "confab-b+-1.conf",
        ] {
            assert!(parse(bad).unwrap_err().contains("boot counter"), "{bad}");
        }
    }

    #[test]
    fn a_fresh_esp_boots_the_good_slot() {
        let dev = Device::new("0.9.0");
        assert_eq!(dev.boot.booted().unwrap(), Slot::A);
        assert_eq!(dev.boot.health(Slot::A).unwrap(), SlotHealth::Good);
        assert_eq!(dev.boot.health(Slot::B).unwrap(), SlotHealth::Bad);
        assert_eq!(dev.boot.version(Slot::A).unwrap().as_deref(), Some("0.9.0"));
        assert_eq!(dev.boot.version(Slot::B).unwrap(), None);
        assert_eq!(dev.reboot(), Slot::A);
        assert_eq!(dev.reboot(), Slot::A);
    }

    #[test]
    fn set_try_writes_a_counted_entry_that_systemd_boot_picks_first() {
        let mut dev = Device::new("0.9.0");
        dev.try_b("0.10.0").unwrap();
        assert_eq!(dev.names(), ["confab-a.conf", "confab-b+3.conf"]);
        let text = std::fs::read_to_string(dev.entries().join("confab-b+3.conf")).unwrap();
        for line in [
            "version 0.10.0",
            "sort-key confab",
            "linux /slot-b/linux",
            "initrd /slot-b/initrd",
            "options root=PARTLABEL=root-b console=ttyAMA0 rootfstype=erofs ro quiet",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert_eq!(dev.boot.health(Slot::B).unwrap(), SlotHealth::Trying);
        assert_eq!(
            dev.boot.version(Slot::B).unwrap().as_deref(),
            Some("0.10.0")
        );
        assert_eq!(firmware_pick(&dev.entries()).id, "confab-b+3.conf");
        assert!(!dev.entries().join("confab-b+3.conf.new").exists());
    }

    #[test]
    fn failed_trial_boots_use_up_the_tries_and_the_old_slot_wins() {
        let mut dev = Device::new("0.9.0");
        dev.try_b("0.10.0").unwrap();
        // Three boots into B, none of them blessed (the health gate fails each time).
        for expected in [
            "confab-b+2-1.conf",
            "confab-b+1-2.conf",
            "confab-b+0-3.conf",
        ] {
            assert_eq!(dev.reboot(), Slot::B);
            assert!(
                dev.names().contains(&expected.to_string()),
                "{:?}",
                dev.names()
            );
            // Running B on a counted boot: still a trial, it could commit.
            assert_eq!(dev.boot.health(Slot::B).unwrap(), SlotHealth::Trying);
        }
        assert_eq!(dev.reboot(), Slot::A);
        assert_eq!(dev.boot.health(Slot::B).unwrap(), SlotHealth::Bad);
        assert_eq!(dev.boot.health(Slot::A).unwrap(), SlotHealth::Good);
        assert_eq!(dev.reboot(), Slot::A);
        // The old slot's entry was never touched.
        assert!(dev.names().contains(&"confab-a.conf".to_string()));
    }

    #[test]
    fn commit_renames_the_counted_entry_like_bless_boot() {
        let mut dev = Device::new("0.9.0");
        dev.try_b("0.10.0").unwrap();
        assert_eq!(dev.reboot(), Slot::B);
        dev.boot.commit(Slot::B).unwrap();
        assert_eq!(dev.names(), ["confab-a.conf", "confab-b.conf"]);
        assert_eq!(dev.boot.health(Slot::B).unwrap(), SlotHealth::Good);
        assert_eq!(dev.boot.health(Slot::A).unwrap(), SlotHealth::Good);
        assert_eq!(
            dev.boot.version(Slot::B).unwrap().as_deref(),
            Some("0.10.0")
        );
        assert_eq!(dev.reboot(), Slot::B);
        assert_eq!(dev.reboot(), Slot::B);
        // Committing again changes nothing.
        dev.boot.commit(Slot::B).unwrap();
        assert_eq!(dev.names(), ["confab-a.conf", "confab-b.conf"]);
        // The next update goes into A; B stays the way back.
        dev.boot.mark_bad(Slot::A).unwrap();
        assert_eq!(dev.names(), ["confab-b.conf"]);
        dev.boot
            .set_try(&TryBoot {
                slot: Slot::A,
                version: "0.11.0".into(),
            })
            .unwrap();
        let text = std::fs::read_to_string(dev.entries().join("confab-a+3.conf")).unwrap();
        assert!(
            text.contains("options root=PARTLABEL=root-a console=ttyAMA0"),
            "{text}"
        );
        assert_eq!(dev.reboot(), Slot::A);
    }

    #[test]
    fn commit_after_bless_boot_is_harmless() {
        let mut dev = Device::new("0.9.0");
        dev.try_b("0.10.0").unwrap();
        assert_eq!(dev.reboot(), Slot::B);
        let entries = dev.entries();
        std::fs::rename(
            entries.join("confab-b+2-1.conf"),
            entries.join("confab-b.conf"),
        )
        .unwrap();
        let before = std::fs::read(entries.join("confab-b.conf")).unwrap();
        dev.boot.commit(Slot::B).unwrap();
        assert_eq!(dev.names(), ["confab-a.conf", "confab-b.conf"]);
        assert_eq!(
            std::fs::read(entries.join("confab-b.conf")).unwrap(),
            before
        );
    }

    #[test]
    fn commit_refuses_a_slot_that_is_not_booted() {
        let mut dev = Device::new("0.9.0");
        dev.try_b("0.10.0").unwrap();
        let err = dev.boot.commit(Slot::B).unwrap_err().to_string();
        assert!(err.contains("slot a is booted"), "{err}");
        assert_eq!(dev.names(), ["confab-a.conf", "confab-b+3.conf"]);
    }

    #[test]
    fn mark_bad_removes_every_variant_of_the_slot() {
        let mut dev = Device::new("0.9.0");
        let entry =
            "version 0.8.0\nsort-key confab\nlinux /slot-b/linux\noptions root=PARTLABEL=root-b\n";
        for name in [
            "confab-b.conf",
            "confab-b+1-2.conf",
            "confab-b+0-3.conf",
            "debian-6.1.conf",
        ] {
            std::fs::write(dev.entries().join(name), entry).unwrap();
        }
        dev.boot.mark_bad(Slot::B).unwrap();
        assert_eq!(dev.names(), ["confab-a.conf", "debian-6.1.conf"]);
        assert_eq!(dev.boot.health(Slot::B).unwrap(), SlotHealth::Bad);
        assert_eq!(dev.boot.version(Slot::B).unwrap(), None);
        assert_eq!(firmware_pick(&dev.entries()).id, "confab-a.conf");
    }

    #[test]
    fn mark_bad_refuses_to_remove_the_last_good_slot() {
        let mut dev = Device::new("0.9.0");
        let err = dev.boot.mark_bad(Slot::A).unwrap_err().to_string();
        assert!(err.contains("refusing"), "{err}");
        dev.try_b("0.10.0").unwrap();
        assert_eq!(dev.reboot(), Slot::B);
        // Running the uncommitted trial: A is the only way back.
        assert!(dev.boot.mark_bad(Slot::A).is_err());
        assert_eq!(dev.names(), ["confab-a.conf", "confab-b+2-1.conf"]);
    }

    #[test]
    fn version_0_10_sorts_above_0_9_and_a_downgrade_is_refused() {
        let mut dev = Device::new("0.10.0");
        let err = dev.try_b("0.9.0").unwrap_err();
        assert!(matches!(err, BootError::Arm(_)), "{err}");
        assert!(err.to_string().contains("confab-a.conf"), "{err}");
        assert!(
            dev.try_b("0.10.0").is_err(),
            "the same version would never be chosen either"
        );
        assert_eq!(dev.names(), ["confab-a.conf"]);
        dev.try_b("0.11.0").unwrap();
        assert_eq!(dev.reboot(), Slot::B);
    }

    #[test]
    fn an_old_style_good_entry_without_sort_key_still_lets_the_trial_boot() {
        let mut dev = Device::new("0.9.0");
        let text = format!("title old\nversion 5.0\nlinux /slot-a/linux\noptions {A_OPTIONS}\n");
        std::fs::write(dev.entries().join("confab-a.conf"), text).unwrap();
        dev.try_b("0.10.0").unwrap();
        assert_eq!(dev.reboot(), Slot::B);
    }

    #[test]
    fn set_try_refuses_without_boot_files() {
        let mut dev = Device::new("0.9.0");
        std::fs::remove_file(dev.dir.path().join("esp/slot-b/initrd")).unwrap();
        let err = dev.try_b("0.10.0").unwrap_err().to_string();
        assert!(err.contains("slot-b/initrd"), "{err}");
        assert_eq!(dev.names(), ["confab-a.conf"]);
    }

    #[test]
    fn base_options_replace_the_good_entrys_command_line() {
        let mut dev = Device::new("0.9.0");
        dev.boot = dev
            .boot
            .clone()
            .with_tries(2)
            .with_base_options("console=ttyS0 root=PARTLABEL=root-x verity=@SLOT@ quiet");
        dev.try_b("0.10.0").unwrap();
        let text = std::fs::read_to_string(dev.entries().join("confab-b+2.conf")).unwrap();
        assert!(
            text.contains("\noptions root=PARTLABEL=root-b console=ttyS0 verity=b quiet\n"),
            "{text}"
        );
    }

    #[test]
    fn corrupt_entry_files_are_errors_naming_them() {
        let dev = Device::new("0.9.0");
        let b = dev.entries().join("confab-b.conf");
        std::fs::write(&b, [0xff, 0xfe, 0x00, 0x41]).unwrap();
        let err = dev.boot.version(Slot::B).unwrap_err().to_string();
        assert!(err.contains("confab-b.conf"), "{err}");
        std::fs::write(&b, "title no kernel here\nversion 1\n").unwrap();
        let err = dev.boot.version(Slot::B).unwrap_err().to_string();
        assert!(
            err.contains("confab-b.conf") && err.contains("no linux"),
            "{err}"
        );
        std::fs::write(&b, "linux /slot-a/linux\noptions root=PARTLABEL=root-a\n").unwrap();
        let err = dev.boot.version(Slot::B).unwrap_err().to_string();
        assert!(
            err.contains("confab-b.conf") && err.contains("root-a"),
            "{err}"
        );
        std::fs::remove_file(&b).unwrap();
        std::fs::write(dev.entries().join("confab-b+x.conf"), "linux /x\n").unwrap();
        let err = dev.boot.health(Slot::A).unwrap_err().to_string();
        assert!(err.contains("confab-b+x.conf"), "{err}");
        let missing = SystemdBoot::new(dev.dir.path().join("nowhere"));
        let err = missing.health(Slot::A).unwrap_err().to_string();
        assert!(err.contains("nowhere/loader/entries"), "{err}");
    }

    #[test]
    fn a_corrupt_entry_of_the_target_slot_can_still_be_removed() {
        let mut dev = Device::new("0.9.0");
        std::fs::write(dev.entries().join("confab-b.conf"), [0xff, 0x00]).unwrap();
        dev.try_b("0.10.0").unwrap();
        assert_eq!(dev.names(), ["confab-a.conf", "confab-b+3.conf"]);
    }

    #[test]
    fn booted_comes_from_the_command_line_or_the_selected_entry() {
        let dev = Device::new("0.9.0");
        dev.running(Slot::B);
        assert_eq!(dev.boot.booted().unwrap(), Slot::B);
        std::fs::write(dev.dir.path().join("cmdline"), "console=ttyAMA0 ro\n").unwrap();
        let err = dev.boot.booted().unwrap_err();
        assert!(matches!(err, BootError::UnknownBootedSlot(_)), "{err}");
        let efivars = dev.dir.path().join("efivars");
        std::fs::create_dir_all(&efivars).unwrap();
        let mut var = vec![6, 0, 0, 0];
        for unit in "confab-b+2-1.conf\0".encode_utf16() {
            var.extend_from_slice(&unit.to_le_bytes());
        }
        std::fs::write(efivars.join(LOADER_ENTRY_SELECTED), var).unwrap();
        assert_eq!(dev.boot.booted().unwrap(), Slot::B);
    }

    #[test]
    fn reboot_command_and_boot_files_dir() {
        let dev = Device::new("0.9.0");
        assert_eq!(dev.boot.reboot_command(), ["systemctl", "reboot"]);
        assert_eq!(
            dev.boot.boot_files_dir(Slot::B),
            Some(dev.dir.path().join("esp/slot-b"))
        );
        assert_eq!(dev.boot.name(), "systemd-boot");
    }
}
