//! confab's U-Boot boot script (`image/uboot/boot.cmd`) run by real U-Boot: Debian's
//! `u-boot-qemu` (`qemu_arm64`) under `qemu-system-aarch64` finds `boot.scr` on a FAT partition
//! holding the two environment copies that `confab::update::bootloader::uboot` writes, picks
//! the current copy, counts a trial slot's tries down (writing the copy back), and says which
//! slot it boots. The test reads the copies back from the disk image after each boot:
//! - a fresh device boots A and writes nothing;
//! - `set_try(B)` boots B three times (3 → 2 → 1 → 0 tries), then A by itself;
//! - a committed B boots without counting;
//! - a torn newest copy (a power cut while it was written) is passed over for the older one.
//!
//! The slots hold no kernel here (that is the image test's part): after "booting slot X" the
//! script's load fails and U-Boot moves on, which is where the test stops QEMU.
//! Needs u-boot-tools, dosfstools, mtools, fdisk, qemu-system-arm and u-boot-qemu
//! (scripts/install-deps.sh); their absence is a failure, not a skip.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use confab::update::bootloader::uboot::{Uboot, ENV_FILES};
use confab::update::bootloader::uboot_env::{self, Vars, DEFAULT_SIZE};
use confab::update::bootloader::{Bootloader, TryBoot};
use confab::update::Slot;

const UBOOT: &str = "/usr/lib/u-boot/qemu_arm64/u-boot.bin";
/// The FAT partition starts 1 MiB into the disk.
const PART_OFFSET: u64 = 1 << 20;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/install-deps.sh installs it)"));
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A boot partition on the host (what the backend writes to) and the disk image U-Boot boots.
struct Disk {
    dir: tempfile::TempDir,
    scr: PathBuf,
}

impl Disk {
    fn new() -> Disk {
        assert!(
            Path::new(UBOOT).exists(),
            "{UBOOT} is missing: install u-boot-qemu"
        );
        let dir = tempfile::tempdir().unwrap();
        let scr = dir.path().join("boot.scr");
        run(Command::new("mkimage")
            .args([
                "-A", "arm64", "-T", "script", "-C", "none", "-n", "confab", "-d",
            ])
            .arg(root().join("image/uboot/boot.cmd"))
            .arg(&scr));
        let boot = dir.path().join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        let mut initial = Uboot::initial();
        initial.insert(uboot_env::SEQ.into(), "1".into());
        std::fs::write(
            boot.join(ENV_FILES[0]),
            uboot_env::serialize(&initial, DEFAULT_SIZE).unwrap(),
        )
        .unwrap();
        Disk { dir, scr }
    }

    fn boot_dir(&self) -> PathBuf {
        self.dir.path().join("boot")
    }

    fn backend(&self, running: Slot) -> Uboot {
        let cmdline = self.dir.path().join("cmdline");
        std::fs::write(
            &cmdline,
            format!("root=PARTLABEL={}\n", running.partlabel()),
        )
        .unwrap();
        Uboot::new(self.boot_dir()).with_cmdline(cmdline)
    }

    /// Builds the disk from the host boot directory, boots U-Boot on it, copies the
    /// environment files back; returns the slot the script booted and its console lines.
    fn boot(&self) -> (Slot, Vec<String>) {
        let part = self.dir.path().join("part.img");
        let disk = self.dir.path().join("disk.img");
        let _ = std::fs::remove_file(&part);
        run(Command::new("mkfs.vfat")
            .args(["-C", "-n", "CONFABBOOT"])
            .arg(&part)
            .arg("32768"));
        let mut copy = Command::new("mcopy");
        copy.arg("-i").arg(&part).arg(&self.scr);
        for f in ENV_FILES {
            let p = self.boot_dir().join(f);
            if p.exists() {
                copy.arg(p);
            }
        }
        run(copy.arg("::/"));
        let mut image = vec![0u8; PART_OFFSET as usize];
        image.extend(std::fs::read(&part).unwrap());
        std::fs::write(&disk, &image).unwrap();
        let mut sfdisk = Command::new("sfdisk")
            .args(["-q"])
            .arg(&disk)
            .stdin(Stdio::piped())
            .spawn()
            .expect("sfdisk (fdisk)");
        use std::io::Write;
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: dos\nstart=2048, type=c\n")
            .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        let lines = self.run_qemu(&disk);
        let booted = lines
            .iter()
            .find_map(|l| l.trim().strip_prefix("confab: booting slot "))
            .and_then(|s| Slot::parse(&s.trim().to_lowercase()))
            .unwrap_or_else(|| {
                panic!(
                    "the script did not say which slot it boots:\n{}",
                    lines.join("\n")
                )
            });
        // What U-Boot wrote back.
        let disk_bytes = std::fs::read(&disk).unwrap();
        std::fs::write(&part, &disk_bytes[PART_OFFSET as usize..]).unwrap();
        for f in ENV_FILES {
            let out = self.boot_dir().join(f);
            let _ = std::fs::remove_file(&out);
            let status = Command::new("mcopy")
                .arg("-n")
                .arg("-i")
                .arg(&part)
                .arg(format!("::/{f}"))
                .arg(&out)
                .stderr(Stdio::null())
                .status()
                .unwrap();
            let _ = status;
        }
        (booted, lines)
    }

    /// Runs QEMU until the script has said whether the slot booted (at most 120 s).
    fn run_qemu(&self, disk: &Path) -> Vec<String> {
        let mut child = Command::new("qemu-system-aarch64")
            .args([
                "-M",
                "virt",
                "-cpu",
                "cortex-a57",
                "-m",
                "256",
                "-nographic",
            ])
            .args([
                "-monitor", "none", "-serial", "stdio", "-net", "none", "-bios", UBOOT,
            ])
            .arg("-drive")
            .arg(format!("if=none,file={},format=raw,id=hd", disk.display()))
            .args(["-device", "virtio-blk-device,drive=hd"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("qemu-system-aarch64 (qemu-system-arm)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut lines = Vec::new();
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let done = line.contains("did not boot (its kernel");
            lines.push(line);
            if done {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            lines.iter().any(|l| l.contains("did not boot (its kernel")),
            "U-Boot did not run the script to its end within 120 s:\n{}",
            lines.join("\n")
        );
        lines
    }

    /// The copies as the disk holds them now: (sequence, BOOT_B_LEFT) of each readable one.
    fn copies(&self) -> Vec<Option<Vars>> {
        ENV_FILES
            .iter()
            .map(|f| {
                std::fs::read(self.boot_dir().join(f))
                    .ok()
                    .and_then(|b| uboot_env::parse(&b).ok())
            })
            .collect()
    }

    /// Boots, and U-Boot must take one of B's trial tries (`why` says what it means if not).
    fn boots_b_on_trial(&self, why: &str) {
        let (slot, lines) = self.boot();
        let console = lines.join("\n");
        assert_eq!(slot, Slot::B, "{why}: {console}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("tries left after this one")),
            "{why}: {console}"
        );
    }

    /// The file holding the newest readable copy.
    fn newest_path(&self) -> PathBuf {
        let newest = uboot_env::seq(&self.newest());
        ENV_FILES
            .iter()
            .map(|f| self.boot_dir().join(f))
            .find(|p| {
                std::fs::read(p)
                    .ok()
                    .and_then(|b| uboot_env::parse(&b).ok())
                    .is_some_and(|v| uboot_env::seq(&v) == newest)
            })
            .unwrap()
    }

    fn newest(&self) -> Vars {
        self.copies()
            .into_iter()
            .flatten()
            .max_by_key(uboot_env::seq)
            .unwrap()
    }
}

fn try_b(disk: &Disk) {
    let mut b = disk.backend(Slot::A);
    b.mark_bad(Slot::B).unwrap();
    b.set_try(&TryBoot {
        slot: Slot::B,
        version: "1.3.0".into(),
    })
    .unwrap();
}

#[test]
fn u_boot_runs_the_script_counts_a_trial_down_and_falls_back() {
    let disk = Disk::new();
    // A fresh device: A, and nothing written.
    let before = disk.copies();
    let (slot, _) = disk.boot();
    assert_eq!(slot, Slot::A);
    assert_eq!(disk.copies(), before, "a good slot boots without a write");

    // A trial: three tries of B, then A by itself; the backend then sees B failed.
    try_b(&disk);
    for left in ["2", "1", "0"] {
        let (slot, lines) = disk.boot();
        assert_eq!(slot, Slot::B, "{}", lines.join("\n"));
        assert_eq!(disk.newest()["BOOT_B_LEFT"], left, "{}", lines.join("\n"));
    }
    let (slot, lines) = disk.boot();
    assert_eq!(slot, Slot::A, "no tries left: {}", lines.join("\n"));
    assert!(lines.iter().any(|l| l.contains("slot B has no tries left")));
    let backend = disk.backend(Slot::A);
    assert_eq!(
        backend.health(Slot::B).unwrap(),
        confab::update::SlotHealth::Bad
    );
}

#[test]
fn a_committed_trial_boots_without_counting_and_a_torn_copy_is_passed_over() {
    let disk = Disk::new();
    try_b(&disk);
    let (slot, _) = disk.boot();
    assert_eq!(slot, Slot::B);
    disk.backend(Slot::B).commit(Slot::B).unwrap();
    for _ in 0..2 {
        let before = disk.copies();
        let (slot, _) = disk.boot();
        assert_eq!(slot, Slot::B);
        assert_eq!(
            disk.copies(),
            before,
            "a committed slot boots without a write"
        );
    }
    // The commit's copy torn (a power cut while it was written): the copy before it (B on
    // trial, one try taken) is current again, and U-Boot counts on from there.
    let torn = disk.newest_path();
    // Its first blocks rewritten, the rest not yet (the size stays: U-Boot's fatwrite and a
    // torn sector look like this), and, in a second round below, cut short.
    let mut bytes = std::fs::read(&torn).unwrap();
    bytes[4..64].copy_from_slice(&[0x5a; 60]);
    std::fs::write(&torn, &bytes).unwrap();
    disk.boots_b_on_trial("the older copy had B on trial");
    // A copy cut short is passed over too (its CRC could still match what memory held).
    disk.backend(Slot::B).commit(Slot::B).unwrap();
    let short = disk.newest_path();
    let bytes = std::fs::read(&short).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() / 3]).unwrap();
    disk.boots_b_on_trial("a short copy was taken");
}
