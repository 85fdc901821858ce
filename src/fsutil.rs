//! Durable file replacement, shared by everything that rewrites a small file in place (the API
//! key file, the update agent's state, bootloader files, the appliance's settings).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A temporary name beside `path` that no other writer uses: `<path>.new.<pid>.<n>`. Two
/// processes (or threads) replacing the same file each rename their own complete file; the last
/// rename wins and neither fails because the other moved its temporary away.
fn unique_new_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(
        ".new.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    PathBuf::from(name)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Makes renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Replaces `path` with `contents`: creates its directory if needed, writes a temporary beside it
/// (`<path>.new.<pid>.<n>`, created with `mode`, less the umask), fsyncs it, renames it over `path`
/// and fsyncs the directory. Concurrent writers do not disturb each other (the last rename wins;
/// callers that read, change and write use a lock, see `update::agent::state`). The
/// old file stays complete until the rename (atomic on ext4 and tmpfs; on FAT a power cut during
/// the rename itself can lose the entry). Errors name the step that failed.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let tmp = unique_new_path(path);
    let context = |what: String| {
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"))
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(context(format!("cannot create {}", tmp.display())))?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(context(format!("cannot write {}", tmp.display())))
        .and_then(|()| {
            std::fs::rename(&tmp, path)
                .map_err(context(format!("cannot rename {} over it", tmp.display())))
        });
    if let Err(e) = written {
        // A full disk or a failed rename leaves the old file as it was; don't leave the
        // temporary behind as well.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    remove_stale_temporaries(path);
    sync_dir(dir).map_err(context(format!("cannot fsync {}", dir.display())))
}

/// A writer holds its temporary for the time of a write and an fsync; one older than this was
/// abandoned.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the temporaries of `path` that writers which no longer run left behind (a power cut
/// or a kill between create and rename): `<path>.new.<pid>.<n>` older than [`STALE_TEMPORARY`]
/// whose process is gone. Both, because a sandboxed service (`ProtectProc=invisible`) cannot see
/// other users' processes. Best effort: a failure leaves a small stale file.
fn remove_stale_temporaries(path: &Path) {
    // Without /proc no process can be told alive; leave everything.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let (Some(name), Ok(entries)) = (path.file_name(), std::fs::read_dir(parent_dir(path))) else {
        return;
    };
    let mut prefix = name.to_os_string();
    prefix.push(".new.");
    let prefix = prefix.as_encoded_bytes();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.as_encoded_bytes().strip_prefix(prefix) else {
            continue;
        };
        // `<pid>.<n>`, both decimal.
        let Some((pid, n)) = std::str::from_utf8(rest)
            .ok()
            .and_then(|r| r.split_once('.'))
        else {
            continue;
        };
        let decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !decimal(pid) || !decimal(n) || Path::new("/proc").join(pid).exists() {
            continue;
        }
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_none_or(|a| a < STALE_TEMPORARY) {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => tracing::info!(file = %entry.path().display(), "removed a stale temporary"),
            Err(e) => tracing::debug!(file = %entry.path().display(), "stale temporary left: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_the_file_with_its_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/keys.toml");
        super::write_atomic(&path, b"one", 0o600).unwrap();
        super::write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("keys.toml")]);
    }

    #[test]
    fn concurrent_writers_never_fail_and_leave_one_complete_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..50 {
                        super::write_atomic(path, &[b'a' + t; 4096], 0o644).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&path).unwrap();
        assert_eq!(got.len(), 4096);
        assert!(got.iter().all(|b| *b == got[0]), "torn file");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporaries_of_writers_that_are_gone_are_removed_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        // A process that has exited: its pid is free.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for (name, age) in [
            (format!("keys.toml.new.{gone}.0"), old),
            // Just written: its writer may not be visible (a sandbox) but still running.
            (
                format!("keys.toml.new.{gone}.1"),
                std::time::SystemTime::now(),
            ),
            (format!("keys.toml.new.{me}.999"), old),
            ("keys.toml.new.notapid.1".into(), old),
            (format!("other.toml.new.{gone}.0"), old),
        ] {
            let f = dir.path().join(name);
            std::fs::write(&f, b"half").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&f)
                .unwrap()
                .set_modified(age)
                .unwrap();
        }
        super::write_atomic(&path, b"whole", 0o600).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut expected = vec![
            "keys.toml".to_string(),
            format!("keys.toml.new.{gone}.1"),
            format!("keys.toml.new.{me}.999"),
            "keys.toml.new.notapid.1".into(),
            format!("other.toml.new.{gone}.0"),
        ];
        expected.sort();
        assert_eq!(
            left, expected,
            "only the old temporary of a writer that is gone is removed"
        );
    }

    #[test]
    fn errors_name_the_step() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir_all(path.join("inside")).unwrap();
        let err = super::write_atomic(&path, b"x", 0o644).unwrap_err();
        assert!(err.to_string().contains("cannot rename"), "{err}");
        // The temporary is gone; only the directory that was in the way is left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
