//! The A/B update agent. A release is a signed manifest (minisign, trusted comment = version and
//! board) naming a slot image by size and SHA-256. The flow: verify → check board and version →
//! mark the target slot bad → stream the image into it while hashing → verify → install the slot's
//! boot files → tell the bootloader to try the target once → reboot → the health gate commits.
//!
//! Sans-IO where it matters: [`install::InstallPlan`] emits [`install::Step`]s as values, so
//! tests can cut power after every step. Bootloaders sit behind [`bootloader::Bootloader`]. The
//! IO side (download, block device, sockets) lives in `agent`.

pub mod agent;
pub mod bootloader;
pub mod install;
pub mod manifest;
pub mod verify;

use serde::{Deserialize, Serialize};

/// One of the two root filesystem slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `a` or `b`, as in file and entry names.
    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The GPT partition label of the slot's root filesystem (`root-a`, `root-b`).
    pub fn partlabel(self) -> &'static str {
        match self {
            Slot::A => "root-a",
            Slot::B => "root-b",
        }
    }

    /// Parses `a`/`b`/`A`/`B`/`root-a`/`root-b`.
    pub fn parse(s: &str) -> Option<Slot> {
        match s
            .trim()
            .trim_start_matches("root-")
            .to_ascii_lowercase()
            .as_str()
        {
            "a" => Some(Slot::A),
            "b" => Some(Slot::B),
            _ => None,
        }
    }

    /// The slot the running kernel was told to mount as root (`root=PARTLABEL=root-b`).
    pub fn from_cmdline(cmdline: &str) -> Option<Slot> {
        cmdline
            .split_whitespace()
            .find_map(|arg| arg.strip_prefix("root=PARTLABEL="))
            .and_then(Slot::parse)
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.letter())
    }
}

/// What the bootloader knows about a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotHealth {
    /// Boots by default, or did and was committed.
    Good,
    /// Will be tried on the next boot(s); not committed yet.
    Trying,
    /// Must not be booted (being written, or failed its trial).
    Bad,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        assert_eq!(Slot::A.other(), Slot::B);
        assert_eq!(Slot::parse("root-b"), Some(Slot::B));
        assert_eq!(Slot::parse("A"), Some(Slot::A));
        assert_eq!(Slot::parse("c"), None);
        assert_eq!(
            Slot::from_cmdline("console=ttyAMA0 root=PARTLABEL=root-b rootfstype=erofs ro"),
            Some(Slot::B)
        );
        assert_eq!(Slot::from_cmdline("root=/dev/vda2"), None);
    }
}
