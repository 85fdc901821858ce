//! Trust: which minisign keys may sign releases, and the proof that a release was checked.
//!
//! [`verify_release`] is the only way to get a [`Verified<Manifest>`]; the install plan takes one,
//! so code that writes a slot cannot be reached with an unchecked release. The signature covers
//! the manifest bytes (prehashed `ED` only) and its trusted comment, which must name the release's
//! version and board: a signature cannot be replayed for another version or another board.

use std::ops::Deref;
use std::path::PathBuf;

use minisign_verify::{PublicKey, Signature};

use super::manifest::{Manifest, ManifestError};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("cannot read trusted key {path}: {detail}")]
    KeyFile { path: PathBuf, detail: String },
    #[error("no trusted release keys are configured (update.trusted_keys)")]
    NoKeys,
    #[error("the release signature is unreadable (not a minisign signature)")]
    SignatureFormat,
    #[error("the release is signed with a key this device does not trust (trusted: {trusted})")]
    UntrustedKey { trusted: String },
    #[error("the release signature does not match: the manifest was changed after signing, or the signature is forged")]
    BadSignature,
    #[error("the release uses a legacy (not prehashed) minisign signature; sign it with a current minisign")]
    LegacySignature,
    #[error("the signed comment {found:?} does not name this release ({expected:?}); the signature belongs to another release")]
    TrustedComment { expected: String, found: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("this release is for board {release}, this device is {device}")]
    WrongBoard { release: String, device: String },
    #[error("v{version} is already running")]
    AlreadyRunning { version: String },
    #[error("v{release} is older than the running v{running}; refusing to downgrade (use --allow-downgrade to force)")]
    Downgrade { release: String, running: String },
    #[error("this release needs at least v{min} installed first; this device runs v{running}")]
    NeedsNewer { min: String, running: String },
}

/// The minisign public keys releases may be signed with (the current one and, for rotation, the
/// next). Each is labelled by its comment line (minisign writes the key id there).
#[derive(Debug, Clone)]
pub struct TrustedKeys {
    keys: Vec<(String, PublicKey)>,
}

impl TrustedKeys {
    /// Reads `minisign.pub` files; each may hold one or more keys.
    pub fn from_pub_files(paths: &[PathBuf]) -> Result<TrustedKeys, VerifyError> {
        let mut keys = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|e| VerifyError::KeyFile {
                path: path.clone(),
                detail: e.to_string(),
            })?;
            let parsed = TrustedKeys::parse(&text).map_err(|detail| VerifyError::KeyFile {
                path: path.clone(),
                detail,
            })?;
            keys.extend(parsed.keys);
        }
        if keys.is_empty() {
            return Err(VerifyError::NoKeys);
        }
        Ok(TrustedKeys { keys })
    }

    /// Parses the two-line `minisign.pub` format, several keys concatenated allowed.
    pub fn parse(text: &str) -> Result<TrustedKeys, String> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut keys = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let (comment, key_line) = match lines[i].strip_prefix("untrusted comment:") {
                Some(c) => (c.trim().to_string(), lines.get(i + 1).copied()),
                None => (format!("key {}", keys.len() + 1), Some(lines[i])),
            };
            let key_line = key_line.ok_or("a comment line without a key after it")?;
            let key = PublicKey::from_base64(key_line)
                .map_err(|e| format!("not a minisign public key ({e})"))?;
            keys.push((comment, key));
            i += if lines[i].starts_with("untrusted comment:") {
                2
            } else {
                1
            };
        }
        if keys.is_empty() {
            return Err("no public key in it".into());
        }
        Ok(TrustedKeys { keys })
    }

    pub fn labels(&self) -> Vec<&str> {
        self.keys.iter().map(|(l, _)| l.as_str()).collect()
    }
}

/// Proof that a value came out of [`verify_release`]. Only this module can make one.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    inner: T,
    key: String,
}

impl<T> Verified<T> {
    /// Which trusted key signed it (its label).
    pub fn key_id(&self) -> &str {
        &self.key
    }

    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

/// Checks the signature, the trusted comment, the board and the version rules, in that order.
pub fn verify_release(
    keys: &TrustedKeys,
    manifest_bytes: &[u8],
    signature_text: &str,
    board: &str,
    running: &semver::Version,
    allow_downgrade: bool,
) -> Result<Verified<Manifest>, VerifyError> {
    let signature = Signature::decode(signature_text).map_err(|_| VerifyError::SignatureFormat)?;
    let key = check_signature(keys, manifest_bytes, &signature)?;
    let manifest = Manifest::parse(manifest_bytes)?;
    check_trusted_comment(signature.trusted_comment(), &manifest)?;
    check_policy(&manifest, board, running, allow_downgrade)?;
    Ok(Verified {
        inner: manifest,
        key,
    })
}

fn check_signature(
    keys: &TrustedKeys,
    bytes: &[u8],
    signature: &Signature,
) -> Result<String, VerifyError> {
    use minisign_verify::Error;
    for (label, key) in &keys.keys {
        match key.verify(bytes, signature, false) {
            Ok(()) => return Ok(label.clone()),
            Err(Error::UnexpectedKeyId) => continue,
            Err(Error::UnexpectedAlgorithm) => return Err(VerifyError::LegacySignature),
            Err(_) => return Err(VerifyError::BadSignature),
        }
    }
    Err(VerifyError::UntrustedKey {
        trusted: keys.labels().join("; "),
    })
}

/// The trusted comment must carry `version:<v>` and `board:<b>` equal to the manifest's.
pub fn check_trusted_comment(comment: &str, manifest: &Manifest) -> Result<(), VerifyError> {
    let field = |name: &str| {
        comment
            .split_whitespace()
            .find_map(|t| t.strip_prefix(name).map(str::to_string))
    };
    let version_ok = field("version:").is_some_and(|v| v == manifest.version.to_string());
    let board_ok = field("board:").is_some_and(|b| b == manifest.compatible);
    if version_ok && board_ok {
        Ok(())
    } else {
        Err(VerifyError::TrustedComment {
            expected: format!("version:{} board:{}", manifest.version, manifest.compatible),
            found: comment.to_string(),
        })
    }
}

/// Board, downgrade, same-version and minimum-version rules.
pub fn check_policy(
    manifest: &Manifest,
    board: &str,
    running: &semver::Version,
    allow_downgrade: bool,
) -> Result<(), VerifyError> {
    if manifest.compatible != board {
        return Err(VerifyError::WrongBoard {
            release: manifest.compatible.clone(),
            device: board.to_string(),
        });
    }
    if manifest.version == *running {
        return Err(VerifyError::AlreadyRunning {
            version: running.to_string(),
        });
    }
    if manifest.version < *running && !allow_downgrade {
        return Err(VerifyError::Downgrade {
            release: manifest.version.to_string(),
            running: running.to_string(),
        });
    }
    if let Some(min) = &manifest.min_version {
        if running < min {
            return Err(VerifyError::NeedsNewer {
                min: min.to_string(),
                running: running.to_string(),
            });
        }
    }
    Ok(())
}
