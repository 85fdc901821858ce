//! Persistent state in sled, behind the small [`Store`] trait, with a schema version and ordered,
//! additive, idempotent migrations applied at start.
//!
//! sled is single-process: only `confab serve` opens the database. Things other commands must read
//! while the daemon runs (API keys, TLS files) live as plain files in the state directory instead.

mod migrations;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

pub use migrations::{Migration, MIGRATIONS};

/// Name of the sled directory inside the state directory.
pub const DB_DIR: &str = "state";
/// Copy of the database taken at the last successful start, kept beside it for recovery (sled
/// rewrites damaged files while it tries to recover them, so the damaged copy is no backup).
pub const BACKUP_DIR: &str = "state.last-good";
/// Upper bound of sled's in-memory page cache. sled's default is 1 GiB, as much as the whole
/// service may use (`MemoryMax=1G`) and all of a 1 GB Raspberry Pi. confab's state (settings,
/// rooms, the admin hash) is kilobytes, so this never evicts in practice; it only stops the cache
/// from growing with the database. Not persisted: changing it is safe for existing databases
/// (unlike `segment_size`, which sled records in its `conf` file and must stay at its default).
const CACHE_CAPACITY_BYTES: u64 = 16 * 1024 * 1024;
const META: &str = "meta";
const SCHEMA_KEY: &[u8] = b"schema_version";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error(
        "the state database at {path} is damaged ({detail}). confab will not start and will not \
         create a new one in its place. To recover: stop confab, move {path} aside, and copy {backup} \
         (taken at the last successful start) or your own backup of that directory to {path}. To start \
         with empty state instead, move {path} away (rooms and settings are then lost)"
    )]
    Corrupt {
        path: PathBuf,
        backup: PathBuf,
        detail: String,
    },
    #[error(
        "the state database at {path} is in use by another process (is confab already running?): {detail}"
    )]
    Locked { path: PathBuf, detail: String },
    #[error(
        "the state database at {path} has schema version {found}, but this confab understands only up \
         to {supported}: it was written by a newer confab. Run that version, or restore a backup made \
         with this one"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("cannot use the state database at {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("migration {version} ({name}) failed: {detail}")]
    Migration {
        version: u32,
        name: &'static str,
        detail: String,
    },
}

/// A tree's entries as (key, value) pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Every tree of the database (sled's default tree included) with all its entries, as of one
/// moment: what a backup holds ([`Store::dump`]) and a restore writes ([`import`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// (tree name, entries), trees in name order.
    pub trees: Vec<(Vec<u8>, Entries)>,
}

impl Dump {
    /// The schema version recorded in the dump's `meta` tree, if any.
    pub fn schema_version(&self) -> Option<u32> {
        self.trees
            .iter()
            .find(|(name, _)| name.as_slice() == META.as_bytes())
            .and_then(|(_, entries)| entries.iter().find(|(k, _)| k.as_slice() == SCHEMA_KEY))
            .and_then(|(_, v)| decode_version(v))
    }
}

/// What the rest of the daemon may do with state: named trees of byte keys and values.
pub trait Store: Send + Sync {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StateError>;
    fn remove(&self, tree: &str, key: &[u8]) -> Result<(), StateError>;
    /// All entries of a tree in key order.
    fn entries(&self, tree: &str) -> Result<Entries, StateError>;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StateError>;
    /// False once a write or flush has failed (disk full, I/O error); feeds `/api/health/ready`.
    /// sled refuses every later operation after an I/O error, so the store reopens the database
    /// (every few seconds) until it works again; then this is true again.
    fn healthy(&self) -> bool;
    fn schema_version(&self) -> u32;
    /// A consistent copy of every tree: no write lands while it is taken.
    fn dump(&self) -> Result<Dump, StateError>;
}

/// The sled-backed [`Store`].
pub struct SledStore {
    /// `None` while a failed database is being (or could not be) reopened.
    db: RwLock<Option<sled::Db>>,
    path: PathBuf,
    schema_version: u32,
    failed: AtomicBool,
    /// When the last reopen was tried ([`REOPEN_INTERVAL`]).
    reopened: Mutex<Option<Instant>>,
    /// Writes share it; [`Store::dump`] takes it alone, so a dump sees no write half done (one
    /// put in one tree and not yet the next) and is one moment's state.
    writes: RwLock<()>,
}

/// After a failed write (a full disk, an I/O error) sled refuses every further operation until
/// it is opened again. The store then reopens it — at most this often — from what is on disk:
/// every write that was acknowledged (flushed) is there, and confab recovers by itself once
/// space returns, without a restart that would end the meetings in progress.
const REOPEN_INTERVAL: Duration = Duration::from_secs(5);

impl SledStore {
    /// Opens (or creates, if the directory does not exist yet) the database in `state_dir` and
    /// brings it to the newest schema.
    pub fn open(state_dir: &Path) -> Result<SledStore, StateError> {
        Self::open_with(state_dir, MIGRATIONS)
    }

    /// As [`SledStore::open`], with an explicit migration list (tests use a prefix of it to make
    /// databases "written by an older confab").
    pub fn open_with(state_dir: &Path, migrations: &[Migration]) -> Result<SledStore, StateError> {
        let path = state_dir.join(DB_DIR);
        let existed = dir_has_entries(&path)?;
        if existed && !path.join("conf").exists() {
            return Err(corrupt(&path, "its 'conf' file is missing"));
        }
        let db = open_sled(&path)?;
        let meta = tree(&db, &path, META)?;
        let stored = match meta.get(SCHEMA_KEY) {
            Ok(Some(v)) => Some(
                decode_version(&v)
                    .ok_or_else(|| corrupt(&path, "the schema version record is unreadable"))?,
            ),
            Ok(None) => None,
            Err(e) => return Err(classify(&path, e)),
        };
        if existed && stored.is_none() {
            return Err(corrupt(&path, "it has no schema version record"));
        }
        let current = stored.unwrap_or(0);
        let supported = migrations.last().map_or(0, |m| m.version);
        if current > supported {
            return Err(StateError::NewerSchema {
                path,
                found: current,
                supported,
            });
        }
        let schema_version = migrations::apply(&db, &meta, current, migrations)?;
        db.flush().map_err(|e| classify(&path, e))?;
        snapshot(&path, &backup_path(&path))?;
        Ok(SledStore {
            db: RwLock::new(Some(db)),
            path,
            schema_version,
            failed: AtomicBool::new(false),
            reopened: Mutex::new(None),
            writes: RwLock::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, StateError> {
        self.with_db(|db| db.open_tree(name))
    }

    /// Records a failed operation so readiness reports it (and the next operation reopens the
    /// database, so that it works again once the cause is gone).
    fn track<T>(&self, r: sled::Result<T>) -> Result<T, StateError> {
        r.map_err(|e| {
            self.fail();
            classify(&self.path, e)
        })
    }

    fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Reopens a failed database, at most every [`REOPEN_INTERVAL`]. Called before an
    /// operation takes its handles (a tree handle keeps the old instance, and its lock, alive).
    fn recover_if_failed(&self) {
        if !self.failed.load(Ordering::Relaxed) {
            return;
        }
        {
            let mut last = self.reopened.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < REOPEN_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        // sled locks its directory: the failed instance must be gone before it is opened again.
        drop(db.take());
        match open_sled(&self.path) {
            Ok(fresh) => {
                // Writable again? A write that fails here leaves it failed, to be retried.
                let probe = fresh
                    .open_tree(META)
                    .and_then(|m| m.insert(b"reopen_probe", &b"1"[..]).map(drop))
                    .and_then(|()| fresh.flush().map(drop));
                *db = Some(fresh);
                match probe {
                    Ok(()) => {
                        self.failed.store(false, Ordering::Relaxed);
                        tracing::info!(path = %self.path.display(), "state database reopened after a failed write; writes work again");
                    }
                    Err(e) => {
                        tracing::warn!(path = %self.path.display(), error = %e, "state database reopened, but writes still fail (disk full?); retrying in a few seconds")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "state database cannot be reopened yet; retrying in a few seconds");
            }
        }
    }

    fn with_db<T>(&self, f: impl FnOnce(&sled::Db) -> sled::Result<T>) -> Result<T, StateError> {
        self.recover_if_failed();
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        let result = match db.as_ref() {
            Some(db) => f(db).map_err(|e| classify(&self.path, e)),
            None => Err(StateError::Io {
                path: self.path.clone(),
                detail: "it failed earlier (disk full or I/O error?) and could not be reopened \
                         yet; confab retries every few seconds"
                    .into(),
            }),
        };
        drop(db);
        result.inspect_err(|_| self.fail())
    }
}

impl Store for SledStore {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let t = self.tree(tree)?;
        self.track(t.get(key)).map(|v| v.map(|iv| iv.to_vec()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        let t = self.tree(tree)?;
        let _shared = self.writes.read().unwrap_or_else(|e| e.into_inner());
        self.track(t.insert(key, value)).map(drop)
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<(), StateError> {
        let t = self.tree(tree)?;
        let _shared = self.writes.read().unwrap_or_else(|e| e.into_inner());
        self.track(t.remove(key)).map(drop)
    }

    fn entries(&self, tree: &str) -> Result<Entries, StateError> {
        let t = self.tree(tree)?;
        t.iter()
            .map(|r| self.track(r).map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect()
    }

    fn flush(&self) -> Result<(), StateError> {
        self.with_db(|db| db.flush()).map(drop)
    }

    fn healthy(&self) -> bool {
        // Readiness asks often: let it drive the reopen while nothing else writes.
        self.recover_if_failed();
        !self.failed.load(Ordering::Relaxed)
    }

    fn schema_version(&self) -> u32 {
        self.schema_version
    }

    fn dump(&self) -> Result<Dump, StateError> {
        let _alone = self.writes.write().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<Vec<u8>> =
            self.with_db(|db| Ok(db.tree_names().iter().map(|n| n.to_vec()).collect()))?;
        names.sort();
        let mut trees = Vec::with_capacity(names.len());
        for name in names {
            let t = self.with_db(|db| db.open_tree(&name))?;
            let entries = t
                .iter()
                .map(|r| self.track(r).map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<Entries, StateError>>()?;
            trees.push((name, entries));
        }
        Ok(Dump { trees })
    }
}

/// Writes `dump` into a new database in `state_dir` (which must not have one yet) and brings it
/// to the newest schema, as [`SledStore::open`] does with a database an older confab wrote. A
/// dump with a newer schema is refused before anything is written.
pub fn import(state_dir: &Path, dump: &Dump) -> Result<SledStore, StateError> {
    let path = state_dir.join(DB_DIR);
    let supported = MIGRATIONS.last().map_or(0, |m| m.version);
    match dump.schema_version() {
        None => return Err(corrupt(&path, "the dump has no schema version record")),
        Some(found) if found > supported => {
            return Err(StateError::NewerSchema {
                path,
                found,
                supported,
            })
        }
        Some(_) => {}
    }
    if dir_has_entries(&path)? {
        return Err(StateError::Io {
            path,
            detail: "a database is already there; import only into an empty directory".into(),
        });
    }
    {
        let db = open_sled(&path)?;
        for (name, entries) in &dump.trees {
            let t = tree_bytes(&db, &path, name)?;
            for (k, v) in entries {
                t.insert(k.as_slice(), v.as_slice())
                    .map_err(|e| classify(&path, e))?;
            }
        }
        db.flush().map_err(|e| classify(&path, e))?;
    }
    SledStore::open(state_dir)
}

/// The database's lock, taken as sled takes it (`flock` on its `db` file) without opening the
/// database: nothing in it is read, recovered or rewritten, so a command run as root leaves no
/// files confab's own user cannot replace. While it is held no `confab serve` can open the
/// database.
pub struct DbLock {
    _file: std::fs::File,
}

/// Takes [`DbLock`]: `Err(Locked)` while a server (or anything else) has the database open,
/// `Ok(None)` when there is no database.
pub fn lock(state_dir: &Path) -> Result<Option<DbLock>, StateError> {
    use std::os::fd::AsRawFd;
    let path = state_dir.join(DB_DIR);
    let file = match std::fs::File::open(path.join("db")) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateError::Io {
                path,
                detail: e.to_string(),
            })
        }
    };
    // SAFETY: flock on a descriptor this function owns; it only takes or refuses a lock.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            StateError::Locked {
                path,
                detail: "could not acquire lock".into(),
            }
        } else {
            StateError::Io {
                path,
                detail: e.to_string(),
            }
        });
    }
    Ok(Some(DbLock { _file: file }))
}

/// A copy of the (locked, so quiescent) database in `state_dir`, opened from `into` (an empty
/// directory): for a backup of a stopped server that must not write into its state directory.
pub fn open_copy(state_dir: &Path, _lock: &DbLock, into: &Path) -> Result<SledStore, StateError> {
    let from = state_dir.join(DB_DIR);
    let to = into.join(DB_DIR);
    let io = |e: std::io::Error| StateError::Io {
        path: from.clone(),
        detail: format!("cannot copy the database: {e}"),
    };
    std::fs::create_dir_all(&to).map_err(io)?;
    for entry in std::fs::read_dir(&from).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).map_err(io)?;
        }
    }
    SledStore::open(into)
}

fn backup_path(db_path: &Path) -> PathBuf {
    db_path.with_file_name(BACKUP_DIR)
}

fn corrupt(db_path: &Path, detail: impl Into<String>) -> StateError {
    StateError::Corrupt {
        path: db_path.to_path_buf(),
        backup: backup_path(db_path),
        detail: detail.into(),
    }
}

/// Copies the (flushed, not yet shared) database files to `backup`: into a temporary directory
/// first, then renamed over the old copy, so a crash leaves either the old or the new backup.
fn snapshot(db_path: &Path, backup: &Path) -> Result<(), StateError> {
    let io = |e: std::io::Error| StateError::Io {
        path: backup.to_path_buf(),
        detail: format!("cannot write the start-up backup: {e}"),
    };
    let tmp = backup.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io)?;
    }
    std::fs::create_dir_all(&tmp).map_err(io)?;
    for entry in std::fs::read_dir(db_path).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_file() {
            std::fs::copy(entry.path(), tmp.join(entry.file_name())).map_err(io)?;
            std::fs::File::open(tmp.join(entry.file_name()))
                .and_then(|f| f.sync_all())
                .map_err(io)?;
        }
    }
    if backup.exists() {
        std::fs::remove_dir_all(backup).map_err(io)?;
    }
    std::fs::rename(&tmp, backup).map_err(io)
}

fn dir_has_entries(path: &Path) -> Result<bool, StateError> {
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StateError::Io {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }),
    }
}

/// How long an open waits for sled's directory lock. sled releases it only when its background
/// threads have let go of the files, a moment after the last handle is dropped, so an open
/// right after a close in the same process (a restore, a reopen after a failed write, tests)
/// can find it still held. Another process holding it (a running confab) is still reported,
/// after this.
const LOCK_WAIT: Duration = Duration::from_secs(3);

fn open_sled(path: &Path) -> Result<sled::Db, StateError> {
    let start = Instant::now();
    loop {
        match open_sled_once(path) {
            Err(StateError::Locked { .. }) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn open_sled_once(path: &Path) -> Result<sled::Db, StateError> {
    // sled 0.34 may panic instead of returning an error on some damaged files. A damaged file is
    // input we do not control, so contain that here and report it as corruption.
    let p = path.to_path_buf();
    let result = std::panic::catch_unwind(move || {
        sled::Config::new()
            .path(p)
            .cache_capacity(CACHE_CAPACITY_BYTES)
            .open()
    });
    match result {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(e)) => Err(classify(path, e)),
        Err(panic) => Err(corrupt(path, panic_text(&panic))),
    }
}

fn tree(db: &sled::Db, path: &Path, name: &str) -> Result<sled::Tree, StateError> {
    tree_bytes(db, path, name.as_bytes())
}

fn tree_bytes(db: &sled::Db, path: &Path, name: &[u8]) -> Result<sled::Tree, StateError> {
    db.open_tree(name).map_err(|e| classify(path, e))
}

fn classify(path: &Path, e: sled::Error) -> StateError {
    let path = path.to_path_buf();
    match e {
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => {
            corrupt(&path, e.to_string())
        }
        sled::Error::Io(ref io) if io.to_string().contains("could not acquire lock") => {
            StateError::Locked {
                path,
                detail: e.to_string(),
            }
        }
        other => StateError::Io {
            path,
            detail: other.to_string(),
        },
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the database engine failed while reading it".to_string())
}

fn decode_version(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

#[cfg(test)]
mod tests;
