//! Backup archives of a device (`confab backup`, `confab restore`, the admin page's "Download
//! backup"): a plain tar file, readable with any `tar`, holding
//!
//! - `confab-backup.json`, the manifest (first): format version, confab version, schema version,
//!   creation time, device id, and every other file with its size and SHA-256;
//! - `state.json`, the whole state database (admin password hash, settings, room passcodes,
//!   invites, rooms) as one consistent dump: `{"format":1,"trees":[{"name":…,"entries":[[key,
//!   value],…]},…]}`, names, keys and values in standard base64 (they are bytes);
//! - `keys.toml`, the device's API key and secret (absent when the keys are configured);
//! - `tls/…`, the local CA and the server certificate made with it (absent with operator
//!   certificates, which live outside the state directory).
//!
//! Recordings are not included (confab does not record yet). The configuration file
//! (`/etc/confab/confab.toml`) is not either: it is the operator's, not state.
//!
//! Reading an archive checks everything before anything is written: the manifest's format, the
//! schema (newer than this confab understands: refused; older: migrated on restore), each file's
//! size and hash, no file the manifest does not list, and only names confab writes itself.
//! Restore builds the new state directory beside the old one and swaps it in with renames, keeping
//! the old one as `<name>.before-restore-<time>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::state::{self, Dump, StateError, Store};

/// The archive format this confab writes and reads. A newer one is refused.
pub const FORMAT: u32 = 1;
pub const MANIFEST: &str = "confab-backup.json";
pub const STATE_DUMP: &str = "state.json";
const DUMP_FORMAT: u32 = 1;
/// confab's state is kilobytes; anything this large is not a confab backup.
pub const MAX_ARCHIVE_BYTES: u64 = 256 << 20;
const TLS_DIR: &str = "tls";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("not a usable confab backup: {0}")]
    Invalid(String),
    #[error(
        "this backup has format {found}, but this confab reads only up to {supported}: it was \
         made by a newer confab. Restore it with that version"
    )]
    NewerFormat { found: u32, supported: u32 },
    #[error(
        "this backup has state schema {found}, but this confab understands only up to \
         {supported}: it was made by a newer confab. Restore it with that version"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error(
        "confab is running on the state directory {0} (its database is locked). Stop it first \
         (systemctl stop confab, or docker compose stop confab), then restore"
    )]
    Running(PathBuf),
    #[error("{0}")]
    State(#[from] StateError),
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn invalid(detail: impl Into<String>) -> BackupError {
    BackupError::Invalid(detail.into())
}

/// `confab-backup.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub confab_version: String,
    pub schema_version: u32,
    pub created_unix: u64,
    #[serde(default)]
    pub device_id: Option<String>,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// Lower-case hex.
    pub sha256: String,
}

impl Manifest {
    /// Parses and checks a manifest: its format and schema are ones this confab reads, and every
    /// file name is one confab writes, listed once.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, BackupError> {
        // The format first, so a newer one is named as such even if its fields changed.
        let v: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| invalid(format!("{MANIFEST} is not JSON: {e}")))?;
        let format = v["format"]
            .as_u64()
            .ok_or_else(|| invalid(format!("{MANIFEST} has no format number")))?;
        if format > u64::from(FORMAT) {
            return Err(BackupError::NewerFormat {
                found: u32::try_from(format).unwrap_or(u32::MAX),
                supported: FORMAT,
            });
        }
        let m: Manifest = serde_json::from_value(v)
            .map_err(|e| invalid(format!("{MANIFEST} is incomplete: {e}")))?;
        if m.format != FORMAT {
            return Err(invalid(format!("unknown format {}", m.format)));
        }
        let supported = supported_schema();
        if m.schema_version > supported {
            return Err(BackupError::NewerSchema {
                found: m.schema_version,
                supported,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &m.files {
            if !allowed_name(&f.path) {
                return Err(invalid(format!(
                    "{MANIFEST} lists {:?}, which is not a file confab backs up",
                    f.path
                )));
            }
            if !seen.insert(f.path.as_str()) {
                return Err(invalid(format!("{MANIFEST} lists {:?} twice", f.path)));
            }
            if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!("the hash of {:?} is malformed", f.path)));
            }
        }
        if !seen.contains(STATE_DUMP) {
            return Err(invalid(format!("{MANIFEST} does not list {STATE_DUMP}")));
        }
        Ok(m)
    }
}

fn supported_schema() -> u32 {
    state::MIGRATIONS.last().map_or(0, |m| m.version)
}

/// The names an archive may hold besides the manifest: the dump, the keys file and plain file
/// names in `tls/`. Nothing else is ever written on restore.
fn allowed_name(path: &str) -> bool {
    let plain = |n: &str| {
        !n.is_empty()
            && !n.starts_with('.')
            && n.len() <= 100
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    match path.split_once('/') {
        None => path == STATE_DUMP || path == crate::auth::KEYS_FILE,
        Some((TLS_DIR, name)) => plain(name),
        Some(_) => false,
    }
}

fn sha256_hex(data: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- the state dump ----

#[derive(Serialize, Deserialize)]
struct DumpFile {
    format: u32,
    trees: Vec<DumpTree>,
}

#[derive(Serialize, Deserialize)]
struct DumpTree {
    name: String,
    entries: Vec<[String; 2]>,
}

fn encode_dump(dump: &Dump) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let file = DumpFile {
        format: DUMP_FORMAT,
        trees: dump
            .trees
            .iter()
            .map(|(name, entries)| DumpTree {
                name: b64.encode(name),
                entries: entries
                    .iter()
                    .map(|(k, v)| [b64.encode(k), b64.encode(v)])
                    .collect(),
            })
            .collect(),
    };
    // Serialising plain strings and numbers cannot fail.
    serde_json::to_vec(&file).unwrap_or_default()
}

fn decode_dump(bytes: &[u8]) -> Result<Dump, BackupError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let file: DumpFile = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("{STATE_DUMP} does not parse: {e}")))?;
    if file.format != DUMP_FORMAT {
        return Err(invalid(format!(
            "{STATE_DUMP} has the unknown format {}",
            file.format
        )));
    }
    let bytes = |s: &str| {
        b64.decode(s)
            .map_err(|e| invalid(format!("{STATE_DUMP}: bad base64: {e}")))
    };
    let mut trees = Vec::with_capacity(file.trees.len());
    for t in &file.trees {
        let mut entries = Vec::with_capacity(t.entries.len());
        for [k, v] in &t.entries {
            entries.push((bytes(k)?, bytes(v)?));
        }
        trees.push((bytes(&t.name)?, entries));
    }
    Ok(Dump { trees })
}

// ---- making an archive ----

/// A finished archive.
pub struct Archive {
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

/// The state directory's files that go into a backup besides the dump: the keys file and the
/// regular files of `tls/`, as (archive name, contents), in name order.
fn state_files(state_dir: &Path) -> Result<Vec<(String, Vec<u8>)>, BackupError> {
    let mut files = Vec::new();
    let keys = state_dir.join(crate::auth::KEYS_FILE);
    match std::fs::read(&keys) {
        Ok(b) => files.push((crate::auth::KEYS_FILE.to_string(), b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(&keys)(e)),
    }
    let tls = state_dir.join(TLS_DIR);
    let entries = match std::fs::read_dir(&tls) {
        Ok(entries) => entries.collect::<Result<Vec<_>, _>>().map_err(io(&tls))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(io(&tls)(e)),
    };
    let mut tls_files = Vec::new();
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let archive_name = format!("{TLS_DIR}/{name}");
        // Temporaries of a writer (`*.new.<pid>.<n>`) and anything odd are not state.
        if !entry.file_type().map_err(io(&entry.path()))?.is_file()
            || !allowed_name(&archive_name)
            || name.contains(".new.")
        {
            continue;
        }
        let bytes = std::fs::read(entry.path()).map_err(io(&entry.path()))?;
        tls_files.push((archive_name, bytes));
    }
    tls_files.sort();
    files.extend(tls_files);
    Ok(files)
}

/// A backup of the state in `store` and the files in `state_dir`. Safe while the server runs:
/// the dump is one moment's state ([`Store::dump`]) and the files are replaced only by renames,
/// so each is read whole.
pub fn create(store: &dyn Store, state_dir: &Path) -> Result<Archive, BackupError> {
    let dump = store.dump()?;
    let device_id = dump
        .trees
        .iter()
        .find(|(n, _)| n == b"meta")
        .and_then(|(_, e)| e.iter().find(|(k, _)| k == b"device_id"))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    let schema_version = dump.schema_version().unwrap_or(store.schema_version());
    let mut files = vec![(STATE_DUMP.to_string(), encode_dump(&dump))];
    files.extend(state_files(state_dir)?);
    let manifest = Manifest {
        format: FORMAT,
        confab_version: crate::version::VERSION.to_string(),
        schema_version,
        created_unix: crate::clock::unix_secs(),
        device_id,
        files: files
            .iter()
            .map(|(path, b)| FileEntry {
                path: path.clone(),
                size: b.len() as u64,
                sha256: sha256_hex(b),
            })
            .collect(),
    };
    let manifest_json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    let mut tar = tar::Builder::new(Vec::new());
    let mtime = manifest.created_unix;
    let mut append = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(mtime);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, data)
    };
    let err = |e: std::io::Error| invalid(format!("cannot build the archive: {e}"));
    append(MANIFEST, &manifest_json).map_err(err)?;
    for (name, data) in &files {
        append(name, data).map_err(err)?;
    }
    let bytes = tar.into_inner().map_err(err)?;
    Ok(Archive { bytes, manifest })
}

/// The name to offer for a download: `confab-backup-<device>-<UTC date and time>.tar`.
pub fn file_name(manifest: &Manifest) -> String {
    let device: String = manifest
        .device_id
        .as_deref()
        .unwrap_or("device")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(8)
        .collect();
    format!(
        "confab-backup-{device}-{}.tar",
        timestamp(manifest.created_unix)
    )
}

/// `20261203T161841Z`.
fn timestamp(unix: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(unix).unwrap_or(0))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

// ---- reading an archive ----

/// A checked archive: every file listed, present, of the right size and hash.
#[derive(Debug)]
pub struct Contents {
    pub manifest: Manifest,
    pub dump: Dump,
    /// The other files (keys, TLS), by archive name.
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Reads and checks an archive (see the module docs). Nothing is written.
pub fn read(bytes: &[u8]) -> Result<Contents, BackupError> {
    let mut found: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes);
    let broken = |e: std::io::Error| invalid(format!("the archive is damaged or truncated: {e}"));
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let name = entry.path().map_err(broken)?.to_string_lossy().into_owned();
        if !entry.header().entry_type().is_file() {
            return Err(invalid(format!("{name:?} in the archive is not a file")));
        }
        if name != MANIFEST && !allowed_name(&name) {
            return Err(invalid(format!(
                "{name:?} in the archive is not a file confab backs up"
            )));
        }
        let size = entry.size();
        if size > MAX_ARCHIVE_BYTES {
            return Err(invalid(format!("{name:?} is too large")));
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        std::io::Read::read_to_end(&mut entry, &mut data).map_err(broken)?;
        if data.len() as u64 != size {
            return Err(invalid(format!("{name:?} is truncated")));
        }
        if found.insert(name.clone(), data).is_some() {
            return Err(invalid(format!("{name:?} is in the archive twice")));
        }
    }
    let manifest_bytes = found.remove(MANIFEST).ok_or_else(|| {
        invalid(format!(
            "no {MANIFEST} in it (is this a confab backup? is it complete?)"
        ))
    })?;
    let manifest = Manifest::parse(&manifest_bytes)?;
    for f in &manifest.files {
        let data = found.get(&f.path).ok_or_else(|| {
            invalid(format!(
                "{:?} is listed but missing (the archive is truncated?)",
                f.path
            ))
        })?;
        if data.len() as u64 != f.size || sha256_hex(data) != f.sha256.to_ascii_lowercase() {
            return Err(invalid(format!(
                "{:?} does not match its hash in {MANIFEST}: the archive is damaged",
                f.path
            )));
        }
    }
    if let Some(extra) = found
        .keys()
        .find(|n| !manifest.files.iter().any(|f| &f.path == *n))
    {
        return Err(invalid(format!(
            "{extra:?} is in the archive but not listed"
        )));
    }
    let dump_bytes = found.remove(STATE_DUMP).unwrap_or_default();
    let dump = decode_dump(&dump_bytes)?;
    if dump.schema_version() != Some(manifest.schema_version) {
        return Err(invalid(format!(
            "{STATE_DUMP} has schema {:?}, the manifest says {}",
            dump.schema_version(),
            manifest.schema_version
        )));
    }
    Ok(Contents {
        manifest,
        dump,
        files: found,
    })
}

// ---- restoring ----

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    /// Where the state that was there before is kept (None: there was none).
    pub kept: Option<PathBuf>,
    /// The schema the restored database has now (after migrations).
    pub schema_version: u32,
}

/// Names in the state directory a restore does not carry over from the old one: what the backup
/// replaces, what confab derives at start, and earlier restores' leftovers.
fn replaced_by_restore(name: &str) -> bool {
    name == state::DB_DIR
        || name.starts_with(state::BACKUP_DIR)
        || name == crate::auth::KEYS_FILE
        || name == TLS_DIR
        || name == crate::auth::admin::SETUP_CODE_FILE
        || name.contains("before-restore-")
        || name.starts_with(".restore-")
}

fn file_mode(name: &str) -> u32 {
    if name == crate::auth::KEYS_FILE || name.ends_with(".key") {
        0o600
    } else {
        0o644
    }
}

/// Replaces the state in `state_dir` with `contents`. Refuses while confab runs on it. The new
/// state is written in full beside the old one first (database imported and migrated, files with
/// their modes, owned by whoever owns the state directory), then swapped in by renames; the old
/// directory is kept as `<name>.before-restore-<time>`. When the state directory is a mount
/// point (a container's volume) it cannot be renamed: then the swap happens inside it, the old
/// entries moved to `before-restore-<time>/` in it.
pub fn restore(state_dir: &Path, contents: &Contents) -> Result<Restored, BackupError> {
    // Hold the old database's lock until the swap is done, so no server starts on it meanwhile.
    // The lock only: a damaged database (what a restore is for) is neither read nor "recovered".
    let _held = match state::lock(state_dir) {
        Ok(l) => l,
        Err(StateError::Locked { .. }) => {
            return Err(BackupError::Running(state_dir.to_path_buf()))
        }
        Err(e) => return Err(e.into()),
    };
    let stamp = timestamp(crate::clock::unix_secs());
    let name = state_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| invalid(format!("{} is not a directory name", state_dir.display())))?;
    let parent = crate::fsutil::parent_dir(state_dir).to_path_buf();
    let exists = state_dir.exists();
    let owner = owner_of(if exists { state_dir } else { &parent });
    let inside = exists && (is_mount_point(state_dir, &parent) || !writable(&parent));
    let staging = if inside {
        state_dir.join(format!(".restore-{stamp}"))
    } else {
        parent.join(format!("{name}.restore-{stamp}"))
    };
    let result = stage(&staging, state_dir, exists, contents)
        .and_then(|schema| {
            if let Some((uid, gid)) = owner {
                chown_tree(&staging, uid, gid)?;
            }
            Ok(schema)
        })
        .and_then(|schema| {
            let kept = if !exists {
                std::fs::rename(&staging, state_dir).map_err(io(state_dir))?;
                None
            } else if inside {
                Some(swap_inside(state_dir, &staging, &stamp)?)
            } else {
                let kept = parent.join(format!("{name}.before-restore-{stamp}"));
                std::fs::rename(state_dir, &kept).map_err(io(state_dir))?;
                if let Err(e) = std::fs::rename(&staging, state_dir) {
                    let _ = std::fs::rename(&kept, state_dir);
                    return Err(io(state_dir)(e));
                }
                Some(kept)
            };
            crate::fsutil::sync_dir(&parent).map_err(io(&parent))?;
            Ok(Restored {
                kept,
                schema_version: schema,
            })
        });
    if result.is_err() && staging.exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

/// Writes the restored state into `staging`: the database, the files, and the old directory's
/// files the backup does not hold (the update agent's state, …). Returns the schema version.
fn stage(
    staging: &Path,
    state_dir: &Path,
    exists: bool,
    contents: &Contents,
) -> Result<u32, BackupError> {
    if staging.exists() {
        std::fs::remove_dir_all(staging).map_err(io(staging))?;
    }
    create_private_dir(staging)?;
    let store = state::import(staging, &contents.dump)?;
    let schema = store.schema_version();
    drop(store);
    for (name, data) in &contents.files {
        let path = staging.join(name);
        if let Some(dir) = path.parent() {
            if !dir.exists() {
                // As confab makes `tls/` itself: others (Caddy in front, reading the CA
                // certificate from the volume) may enter it; the keys in it are 0600.
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                    .map_err(io(dir))?;
            }
        }
        crate::fsutil::write_atomic(&path, data, file_mode(name)).map_err(io(&path))?;
    }
    if exists {
        // The state directory keeps its mode (0750 under systemd's StateDirectoryMode).
        let mode = std::fs::metadata(state_dir)
            .map_err(io(state_dir))?
            .permissions();
        std::fs::set_permissions(staging, mode).map_err(io(staging))?;
        for entry in std::fs::read_dir(state_dir).map_err(io(state_dir))? {
            let entry = entry.map_err(io(state_dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if replaced_by_restore(&name) || !entry.file_type().map_err(io(state_dir))?.is_file() {
                continue;
            }
            std::fs::copy(entry.path(), staging.join(&name)).map_err(io(&entry.path()))?;
        }
    }
    Ok(schema)
}

/// The swap when the state directory cannot be renamed: its entries go to
/// `before-restore-<stamp>/` inside it, then the staged ones move up.
fn swap_inside(state_dir: &Path, staging: &Path, stamp: &str) -> Result<PathBuf, BackupError> {
    let kept = state_dir.join(format!("before-restore-{stamp}"));
    create_private_dir(&kept)?;
    let staging_name = staging.file_name().map(|n| n.to_os_string());
    for entry in std::fs::read_dir(state_dir).map_err(io(state_dir))? {
        let entry = entry.map_err(io(state_dir))?;
        let n = entry.file_name();
        let s = n.to_string_lossy();
        if Some(&n) == staging_name.as_ref() || s.contains("before-restore-") {
            continue;
        }
        std::fs::rename(entry.path(), kept.join(&n)).map_err(io(&entry.path()))?;
    }
    for entry in std::fs::read_dir(staging).map_err(io(staging))? {
        let entry = entry.map_err(io(staging))?;
        std::fs::rename(entry.path(), state_dir.join(entry.file_name()))
            .map_err(io(&entry.path()))?;
    }
    std::fs::remove_dir(staging).map_err(io(staging))?;
    crate::fsutil::sync_dir(state_dir).map_err(io(state_dir))?;
    Ok(kept)
}

fn create_private_dir(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))
}

fn is_mount_point(dir: &Path, parent: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(dir), std::fs::metadata(parent)) {
        (Ok(d), Ok(p)) => d.dev() != p.dev() || d.ino() == p.ino(),
        _ => false,
    }
}

fn writable(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; access() only reads it.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// The owner to give restored files when running as root (the appliance's confab runs as its own
/// user, `confab restore` as root): that of the state directory.
fn owner_of(path: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let m = std::fs::metadata(path).ok()?;
    Some((m.uid(), m.gid()))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), BackupError> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io(path))?;
    if std::fs::symlink_metadata(path).map_err(io(path))?.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io(path))? {
            chown_tree(&entry.map_err(io(path))?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
