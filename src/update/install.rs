//! The install state machine, sans IO: given a verified release and the booted slot it yields the
//! steps of an A/B install as values. The IO side (`agent`) performs each step and reports back;
//! tests perform them against files and cut the power after every one.
//!
//! Order (each step is safe to be interrupted after, because of the one before it):
//! 1. `MarkBad(target)`: the bootloader can no longer pick the target, so half-written bytes in
//!    it are never booted.
//! 2. `WriteImage`: stream the image into the target, hashing as it goes.
//! 3. `VerifySlot`: read the slot back; size and SHA-256 must match the signed manifest.
//! 4. `WriteBootFiles`: the slot's kernel/initrd next to the bootloader, each verified.
//! 5. `ArmTrial`: the next boot tries the target once; failure falls back to the booted slot.
//! 6. `Reboot` (unless the user asked not to).

use super::bootloader::TryBoot;
use super::manifest::{Artifact, Manifest};
use super::verify::Verified;
use super::{Slot, SlotHealth};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    MarkBad(Slot),
    WriteImage { slot: Slot, image: Artifact },
    VerifySlot { slot: Slot, image: Artifact },
    WriteBootFiles { slot: Slot, files: Vec<Artifact> },
    ArmTrial(TryBoot),
    Reboot,
}

impl Step {
    /// A short description for progress output and the API.
    pub fn describe(&self) -> String {
        match self {
            Step::MarkBad(s) => format!("marking slot {s} unbootable"),
            Step::WriteImage { slot, image } => {
                format!(
                    "writing {} ({} bytes) to slot {slot}",
                    image.file, image.size
                )
            }
            Step::VerifySlot { slot, .. } => format!("verifying slot {slot}"),
            Step::WriteBootFiles { slot, files } => {
                format!("installing {} boot file(s) for slot {slot}", files.len())
            }
            Step::ArmTrial(t) => format!("arming a trial boot of slot {} (v{})", t.slot, t.version),
            Step::Reboot => "rebooting into the new slot".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanError {
    #[error(
        "slot {booted} is running on trial (not committed yet); wait for the health check to commit \
         it, or reboot, before installing another update"
    )]
    BootedSlotOnTrial { booted: Slot },
    #[error("the booted slot {booted} is marked bad; reboot into a good slot first")]
    BootedSlotBad { booted: Slot },
}

/// An install in progress: the steps and how far it got.
#[derive(Debug, Clone)]
pub struct InstallPlan {
    steps: Vec<Step>,
    done: usize,
    target: Slot,
    version: String,
}

impl InstallPlan {
    /// Plans the install of `release` into the slot that is not `booted`. Needs the proof that
    /// the release was verified; refuses while the booted slot itself is not committed.
    pub fn new(
        release: &Verified<Manifest>,
        booted: Slot,
        booted_health: SlotHealth,
        reboot: bool,
    ) -> Result<InstallPlan, PlanError> {
        match booted_health {
            SlotHealth::Good => {}
            SlotHealth::Trying => return Err(PlanError::BootedSlotOnTrial { booted }),
            SlotHealth::Bad => return Err(PlanError::BootedSlotBad { booted }),
        }
        let target = booted.other();
        let version = release.version.to_string();
        let mut steps = vec![
            Step::MarkBad(target),
            Step::WriteImage {
                slot: target,
                image: release.image.clone(),
            },
            Step::VerifySlot {
                slot: target,
                image: release.image.clone(),
            },
        ];
        if !release.boot_files.is_empty() {
            steps.push(Step::WriteBootFiles {
                slot: target,
                files: release.boot_files.clone(),
            });
        }
        steps.push(Step::ArmTrial(TryBoot {
            slot: target,
            version: version.clone(),
        }));
        if reboot {
            steps.push(Step::Reboot);
        }
        Ok(InstallPlan {
            steps,
            done: 0,
            target,
            version,
        })
    }

    /// The step to perform now, or `None` when the install is complete.
    pub fn next_step(&self) -> Option<&Step> {
        self.steps.get(self.done)
    }

    /// Records that the current step succeeded.
    pub fn step_done(&mut self) {
        self.done = (self.done + 1).min(self.steps.len());
    }

    pub fn target(&self) -> Slot {
        self.target
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// `(steps done, steps in total)`.
    pub fn progress(&self) -> (usize, usize) {
        (self.done, self.steps.len())
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }
}
