//! The release manifest: what a release contains (the slot image and the slot's boot files), for
//! which board, from which version it may be installed, and the size and SHA-256 of every file.
//! It is the signed part of a release; the files themselves are checked against it by hash.
//! Parse, don't validate: a [`Manifest`] that exists is well-formed.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The only manifest format this agent understands.
pub const FORMAT: u32 = 1;
/// No slot on any supported board is larger than this; a bigger number is a broken manifest.
pub const MAX_ARTIFACT_SIZE: u64 = 64 << 30;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("the release manifest is not valid: {0}")]
    Invalid(String),
    #[error("{file} is {actual} bytes, the signed manifest says {expected}")]
    Size {
        file: String,
        actual: u64,
        expected: u64,
    },
    #[error("{file} has SHA-256 {actual}, the signed manifest says {expected}")]
    Digest {
        file: String,
        actual: Sha256,
        expected: Sha256,
    },
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    pub fn from_hex(s: &str) -> Option<Sha256> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Sha256(out))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sha256::from_hex(&s.to_ascii_lowercase())
            .ok_or_else(|| serde::de::Error::custom(format!("not a SHA-256 in hex: {s:?}")))
    }
}

/// One file of a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// File name next to the manifest (no directories).
    pub file: String,
    pub size: u64,
    pub sha256: Sha256,
}

impl Artifact {
    /// Compares what arrived with what was signed.
    pub fn check(&self, size: u64, digest: &Sha256) -> Result<(), ManifestError> {
        if size != self.size {
            return Err(ManifestError::Size {
                file: self.file.clone(),
                actual: size,
                expected: self.size,
            });
        }
        if *digest != self.sha256 {
            return Err(ManifestError::Digest {
                file: self.file.clone(),
                actual: *digest,
                expected: self.sha256,
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub version: semver::Version,
    /// The board this release is built for (`generic-efi-arm64`, `rpi`).
    pub compatible: String,
    /// Devices must run at least this version to install this release.
    #[serde(default)]
    pub min_version: Option<semver::Version>,
    #[serde(default)]
    pub notes_url: Option<String>,
    pub image: Artifact,
    #[serde(default)]
    pub boot_files: Vec<Artifact>,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if m.format != FORMAT {
            return Err(ManifestError::Invalid(format!(
                "format {} is not supported (this confab reads format {FORMAT}); update in steps",
                m.format
            )));
        }
        if m.compatible.is_empty() {
            return Err(ManifestError::Invalid("compatible is empty".into()));
        }
        let mut names = BTreeSet::new();
        for a in std::iter::once(&m.image).chain(&m.boot_files) {
            check_name(&a.file)?;
            if a.size == 0 || a.size > MAX_ARTIFACT_SIZE {
                return Err(ManifestError::Invalid(format!(
                    "{} has an impossible size ({} bytes)",
                    a.file, a.size
                )));
            }
            if !names.insert(a.file.as_str()) {
                return Err(ManifestError::Invalid(format!(
                    "{} is listed twice",
                    a.file
                )));
            }
        }
        Ok(m)
    }
}

/// A plain file name: no directories, no `..`, nothing hidden, printable ASCII.
fn check_name(name: &str) -> Result<(), ManifestError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Invalid(format!(
            "file name {name:?} must be a plain name (letters, digits, '.', '-', '_')"
        )))
    }
}

/// SHA-256 and byte count of a stream, fed chunk by chunk.
pub struct ArtifactHasher {
    context: aws_lc_rs::digest::Context,
    size: u64,
}

impl Default for ArtifactHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl ArtifactHasher {
    pub fn new() -> Self {
        ArtifactHasher {
            context: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            size: 0,
        }
    }

    pub fn update(&mut self, chunk: &[u8]) {
        self.context.update(chunk);
        self.size += chunk.len() as u64;
    }

    pub fn finish(self) -> (u64, Sha256) {
        let digest = self.context.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        (self.size, Sha256(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn json(image_file: &str, extra: &str) -> String {
        format!(
            r#"{{"format":1,"version":"0.2.0","compatible":"rpi","min_version":"0.1.0",
               "image":{{"file":"{image_file}","size":3,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}}
               {extra}}}"#
        )
    }

    #[test]
    fn parses_a_good_manifest() {
        let m = Manifest::parse(json("root.img", "").as_bytes()).unwrap();
        assert_eq!(m.version, semver::Version::new(0, 2, 0));
        assert_eq!(m.image.size, 3);
        let mut h = ArtifactHasher::new();
        h.update(b"a");
        h.update(b"bc");
        let (size, digest) = h.finish();
        assert_eq!(m.image.check(size, &digest), Ok(()));
    }

    #[test]
    fn rejects_bad_manifests_with_reasons() {
        for (text, needle) in [
            (json("../etc/passwd", ""), "plain name"),
            (json("root.img", r#","surprise":1"#), "unknown field"),
            (
                json("root.img", "").replace("\"size\":3", "\"size\":0"),
                "impossible size",
            ),
            (
                json("root.img", "").replace("ba78", "zz78"),
                "not a SHA-256",
            ),
            (
                json("root.img", "").replace("\"format\":1", "\"format\":2"),
                "format 2",
            ),
            (
                json(
                    "root.img",
                    r#","boot_files":[{"file":"root.img","size":1,"sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}]"#,
                ),
                "listed twice",
            ),
            ("not json".to_string(), "not valid"),
        ] {
            let err = Manifest::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
    }

    #[test]
    fn hash_and_size_mismatches_name_both_values() {
        let m = Manifest::parse(json("root.img", "").as_bytes()).unwrap();
        let mut h = ArtifactHasher::new();
        h.update(b"abd");
        let (size, digest) = h.finish();
        let err = m.image.check(size, &digest).unwrap_err().to_string();
        assert!(err.contains("SHA-256") && err.contains("ba7816bf"), "{err}");
        let mut h = ArtifactHasher::new();
        h.update(b"ab");
        let (size, digest) = h.finish();
        let err = m.image.check(size, &digest).unwrap_err().to_string();
        assert_eq!(err, "root.img is 2 bytes, the signed manifest says 3");
    }
}
