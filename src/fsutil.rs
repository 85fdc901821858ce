//! Durable file replacement, shared by everything that rewrites a small file in place (the API
//! key file, the update agent's state, bootloader files, the appliance's settings).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// `path` with `.new` appended to its file name (`autoboot.txt` → `autoboot.txt.new`).
pub fn new_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
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

/// Replaces `path` with `contents`: creates its directory if needed, writes `<path>.new` (created
/// with `mode`, less the umask), fsyncs it, renames it over `path` and fsyncs the directory. The
/// old file stays complete until the rename (atomic on ext4 and tmpfs; on FAT a power cut during
/// the rename itself can lose the entry). Errors name the step that failed.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let tmp = new_path(path);
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
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(context(format!("cannot write {}", tmp.display())))?;
    std::fs::rename(&tmp, path)
        .map_err(context(format!("cannot rename {} over it", tmp.display())))?;
    sync_dir(dir).map_err(context(format!("cannot fsync {}", dir.display())))
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
        assert!(!super::new_path(&path).exists());
    }

    #[test]
    fn errors_name_the_step() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: the rename fails.
        let path = dir.path().join("taken");
        std::fs::create_dir_all(path.join("inside")).unwrap();
        let err = super::write_atomic(&path, b"x", 0o644).unwrap_err();
        assert!(err.to_string().contains("cannot rename"), "{err}");
    }
}
