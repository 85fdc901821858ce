//! Writing a slot: the image streams from the source into the inactive slot's block device (a
//! plain file in tests), hashed on the way; an interrupted download resumes where it stopped; the
//! slot is then read back and checked against the signed size and SHA-256. Boot files go next to
//! the bootloader as `name.new` → verified → fsync → rename.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::fetch::{FetchError, Sink, Source};
use crate::update::manifest::{Artifact, ArtifactHasher};

/// Attempts per artifact before a download error is final.
pub const DOWNLOAD_ATTEMPTS: u32 = 5;
/// Wait before the first retry; doubles each time.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlotError {
    #[error("cannot open slot device {path}: {detail}")]
    Open { path: PathBuf, detail: String },
    #[error(
        "the image is {image} bytes but slot {path} holds only {capacity} bytes; this release does \
         not fit this device's partitions"
    )]
    TooSmall {
        path: PathBuf,
        image: u64,
        capacity: u64,
    },
    #[error("writing slot {path} failed: {detail}")]
    Write { path: PathBuf, detail: String },
    #[error("download failed after {attempts} attempts: {source}")]
    Download { attempts: u32, source: FetchError },
    #[error("{what} does not match the signed manifest: {detail}")]
    Mismatch { what: String, detail: String },
}

/// Progress of the current artifact: bytes done and total.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Sync);

struct SlotSink<'a> {
    file: &'a File,
    path: &'a Path,
    hasher: ArtifactHasher,
    written: u64,
    limit: u64,
    progress: Progress<'a>,
}

impl Sink for SlotSink<'_> {
    fn accept(&mut self, chunk: &[u8]) -> Result<(), String> {
        let end = self.written + chunk.len() as u64;
        if end > self.limit {
            return Err(format!(
                "the server sent more than the {} bytes the manifest names",
                self.limit
            ));
        }
        self.file.write_all_at(chunk, self.written).map_err(|e| {
            format!(
                "writing {} at byte {}: {e}",
                self.path.display(),
                self.written
            )
        })?;
        self.hasher.update(chunk);
        self.written = end;
        (self.progress)(self.written, self.limit);
        Ok(())
    }
}

/// Streams `artifact` from `source` into `path` (an existing slot device, or a file to create),
/// resuming after network errors, then checks size and hash of what arrived.
pub async fn download_into(
    source: &Source,
    artifact: &Artifact,
    path: &Path,
    create: bool,
    progress: Progress<'_>,
) -> Result<(), SlotError> {
    let file = open_target(path, create)?;
    if !create {
        let capacity = capacity(&file, path)?;
        if artifact.size > capacity {
            return Err(SlotError::TooSmall {
                path: path.to_path_buf(),
                image: artifact.size,
                capacity,
            });
        }
    }
    let mut sink = SlotSink {
        file: &file,
        path,
        hasher: ArtifactHasher::new(),
        written: 0,
        limit: artifact.size,
        progress,
    };
    let mut attempt = 1;
    loop {
        let result = source.stream(&artifact.file, sink.written, &mut sink).await;
        let error = match result {
            Ok(()) if sink.written == artifact.size => break,
            Ok(()) => FetchError::Interrupted {
                url: source.describe(&artifact.file),
                detail: format!("ended after {} of {} bytes", sink.written, artifact.size),
            },
            Err(FetchError::RangeIgnored { .. }) => {
                // Start over, hashing from the first byte again.
                sink.hasher = ArtifactHasher::new();
                sink.written = 0;
                FetchError::RangeIgnored {
                    url: source.describe(&artifact.file),
                }
            }
            Err(e) => e,
        };
        if !error.is_transient() || attempt >= DOWNLOAD_ATTEMPTS {
            return Err(SlotError::Download {
                attempts: attempt,
                source: error,
            });
        }
        let wait = RETRY_BACKOFF * 2u32.pow(attempt - 1);
        warn!(%error, attempt, resume_at = sink.written, wait_ms = wait.as_millis() as u64, "download interrupted; resuming");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
    file.sync_all().map_err(|e| SlotError::Write {
        path: path.to_path_buf(),
        detail: format!("fsync: {e}"),
    })?;
    let (size, digest) = sink.hasher.finish();
    artifact
        .check(size, &digest)
        .map_err(|e| SlotError::Mismatch {
            what: format!("downloaded {}", artifact.file),
            detail: e.to_string(),
        })?;
    info!(file = %artifact.file, bytes = size, target = %path.display(), "written and hash checked");
    Ok(())
}

/// Reads the first `artifact.size` bytes of `path` back and checks them against the manifest.
pub fn verify_slot(path: &Path, artifact: &Artifact) -> Result<(), SlotError> {
    let mut file = File::open(path).map_err(|e| SlotError::Open {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut hasher = ArtifactHasher::new();
    let mut left = artifact.size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).map_err(|e| SlotError::Write {
            path: path.to_path_buf(),
            detail: format!("reading back: {e}"),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let (size, digest) = hasher.finish();
    artifact
        .check(size, &digest)
        .map_err(|e| SlotError::Mismatch {
            what: format!("slot {}", path.display()),
            detail: e.to_string(),
        })
}

/// Downloads each boot file to `dir/<file>.new`, checks it, fsyncs, renames it into place.
pub async fn install_boot_files(
    source: &Source,
    files: &[Artifact],
    dir: &Path,
    progress: Progress<'_>,
) -> Result<(), SlotError> {
    std::fs::create_dir_all(dir).map_err(|e| SlotError::Write {
        path: dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    for artifact in files {
        let final_path = dir.join(&artifact.file);
        let tmp = dir.join(format!("{}.new", artifact.file));
        download_into(source, artifact, &tmp, true, progress).await?;
        std::fs::rename(&tmp, &final_path).map_err(|e| SlotError::Write {
            path: final_path.clone(),
            detail: e.to_string(),
        })?;
    }
    crate::fsutil::sync_dir(dir).map_err(|e| SlotError::Write {
        path: dir.to_path_buf(),
        detail: e.to_string(),
    })
}

fn open_target(path: &Path, create: bool) -> Result<File, SlotError> {
    let mut options = OpenOptions::new();
    options.write(true).read(true);
    if create {
        options.create(true).truncate(true);
    }
    options.open(path).map_err(|e| SlotError::Open {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

/// Size of a block device or file: seek to its end.
fn capacity(file: &File, path: &Path) -> Result<u64, SlotError> {
    let mut f = file;
    let end = f.seek(SeekFrom::End(0)).map_err(|e| SlotError::Open {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    f.seek(SeekFrom::Start(0)).map_err(|e| SlotError::Open {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let _ = f.flush();
    Ok(end)
}
