//! The U-Boot backend against a model of its boot script (the rules in the module header), and
//! its environment images against U-Boot's own tools (`mkenvimage` from u-boot-tools,
//! `fw_printenv` from libubootenv-tool): an update, a commit, a trial that never commits, the
//! refusals, and a power cut after every write.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use super::super::uboot_env::{self, Vars, DEFAULT_SIZE};
use super::*;

struct Device {
    dir: tempfile::TempDir,
    uboot: Uboot,
}

impl Device {
    /// A boot partition holding a fresh image's environment (copy 0), slot A running.
    fn new() -> Device {
        let dir = tempfile::tempdir().unwrap();
        let boot = dir.path().join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        let mut initial = Uboot::initial();
        initial.insert(SEQ.into(), "1".into());
        std::fs::write(
            boot.join(ENV_FILES[0]),
            uboot_env::serialize(&initial, DEFAULT_SIZE).unwrap(),
        )
        .unwrap();
        let uboot = Uboot::new(boot).with_cmdline(dir.path().join("cmdline"));
        let dev = Device { dir, uboot };
        dev.running(Slot::A);
        dev
    }

    fn boot_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("boot")
    }

    fn running(&self, slot: Slot) {
        let cmdline = format!("console=ttyAMA0 root=PARTLABEL={} ro\n", slot.partlabel());
        std::fs::write(self.dir.path().join("cmdline"), cmdline).unwrap();
    }

    /// The current copy: (index, variables), as the boot script picks it.
    fn current(&self) -> (usize, Vars) {
        (0..2)
            .filter_map(|c| {
                let bytes = std::fs::read(self.boot_dir().join(ENV_FILES[c])).ok()?;
                uboot_env::parse(&bytes).ok().map(|v| (c, v))
            })
            .max_by_key(|(_, v)| uboot_env::seq(v))
            .expect("a readable environment copy")
    }

    /// The boot script: the first slot of BOOT_ORDER without a counter boots; one with tries
    /// left is decremented (saved into the other copy first) and boots; one at 0 is skipped.
    fn boot(&self) -> Slot {
        let (copy, mut vars) = self.current();
        let order: Vec<Slot> = vars[ORDER]
            .split_whitespace()
            .filter_map(Slot::parse)
            .collect();
        let mut chosen = None;
        for slot in &order {
            match vars
                .get(&left_key(*slot))
                .map(|v| v.parse::<u32>().unwrap())
            {
                None => {
                    chosen = Some(*slot);
                    break;
                }
                Some(n) if n > 0 => {
                    vars.insert(left_key(*slot), (n - 1).to_string());
                    let seq = uboot_env::seq(&vars) + 1;
                    vars.insert(SEQ.into(), seq.to_string());
                    let image = uboot_env::serialize(&vars, DEFAULT_SIZE).unwrap();
                    std::fs::write(self.boot_dir().join(ENV_FILES[1 - copy]), image).unwrap();
                    chosen = Some(*slot);
                    break;
                }
                Some(_) => {}
            }
        }
        let slot = chosen.unwrap_or(*order.last().unwrap());
        self.running(slot);
        slot
    }

    fn try_b(&mut self, version: &str) {
        self.uboot.mark_bad(Slot::B).unwrap();
        self.uboot
            .set_try(&TryBoot {
                slot: Slot::B,
                version: version.into(),
            })
            .unwrap();
    }

    fn health(&self) -> (SlotHealth, SlotHealth) {
        (
            self.uboot.health(Slot::A).unwrap(),
            self.uboot.health(Slot::B).unwrap(),
        )
    }
}

use SlotHealth::{Bad, Good, Trying};

#[test]
fn a_fresh_device_boots_a_and_a_good_slot_is_never_counted_down() {
    let dev = Device::new();
    assert_eq!(dev.uboot.booted().unwrap(), Slot::A);
    assert_eq!(dev.health(), (Good, Bad));
    for _ in 0..5 {
        assert_eq!(dev.boot(), Slot::A);
    }
    assert_eq!(dev.current().1.get("BOOT_A_LEFT"), None);
}

#[test]
fn an_update_is_tried_then_committed_and_the_old_slot_stays_the_fallback() {
    let mut dev = Device::new();
    dev.uboot.mark_bad(Slot::B).unwrap();
    assert_eq!(dev.boot(), Slot::A, "B is never booted while it is written");
    dev.try_b("1.3.0");
    assert_eq!(dev.health(), (Good, Trying));
    assert_eq!(
        dev.uboot.version(Slot::B).unwrap().as_deref(),
        Some("1.3.0")
    );
    assert_eq!(dev.boot(), Slot::B);
    assert_eq!(dev.current().1["BOOT_B_LEFT"], "2");
    dev.uboot.commit(Slot::B).unwrap();
    assert_eq!(dev.health(), (Good, Good));
    assert_eq!(dev.current().1[ORDER], "B A");
    for _ in 0..5 {
        assert_eq!(
            dev.boot(),
            Slot::B,
            "a committed slot boots without counting"
        );
    }
}

#[test]
fn a_trial_that_never_commits_falls_back_by_itself() {
    let mut dev = Device::new();
    dev.try_b("1.3.0");
    for left in ["2", "1", "0"] {
        assert_eq!(dev.boot(), Slot::B);
        assert_eq!(dev.current().1["BOOT_B_LEFT"], left);
    }
    assert_eq!(dev.boot(), Slot::A, "no tries left: the good slot");
    assert_eq!(dev.health(), (Good, Bad));
    dev.uboot.commit(Slot::A).unwrap();
    assert_eq!(dev.current().1[ORDER], "A");
    assert_eq!(dev.current().1["CONFAB_B_STATE"], "bad");
    assert_eq!(dev.boot(), Slot::A);
}

#[test]
fn nothing_leaves_the_device_without_a_good_slot() {
    let mut dev = Device::new();
    let e = dev.uboot.mark_bad(Slot::A).unwrap_err().to_string();
    assert!(e.contains("slot b is not good"), "{e}");
    let e = dev
        .uboot
        .set_try(&TryBoot {
            slot: Slot::A,
            version: "x".into(),
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("not good"), "{e}");
    dev.try_b("1.3.0");
    let e = dev.uboot.commit(Slot::B).unwrap_err().to_string();
    assert!(e.contains("slot a is the one running"), "{e}");
    assert_eq!(dev.health(), (Good, Trying), "refusals changed nothing");
}

/// Cuts the newest copy short, as a power cut in the middle of writing it would.
fn tear_newest(dev: &Device) {
    let (copy, _) = dev.current();
    let path = dev.boot_dir().join(ENV_FILES[copy]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
}

#[test]
fn a_power_cut_during_any_write_leaves_the_state_before_it() {
    type Step = fn(&mut Uboot) -> Result<(), BootError>;
    let steps: [(&str, Step, (SlotHealth, SlotHealth)); 3] = [
        ("mark_bad(b)", |u| u.mark_bad(Slot::B), (Good, Bad)),
        (
            "set_try(b)",
            |u| {
                u.set_try(&TryBoot {
                    slot: Slot::B,
                    version: "1.3.0".into(),
                })
            },
            (Good, Trying),
        ),
        ("commit(b)", |u| u.commit(Slot::B), (Good, Good)),
    ];
    for cut in 0..steps.len() {
        let mut dev = Device::new();
        let mut before = dev.health();
        let mut wrote = false;
        for (name, step, after) in &steps[..=cut] {
            if *name == "commit(b)" {
                assert_eq!(dev.boot(), Slot::B);
            }
            let seq = uboot_env::seq(&dev.current().1);
            step(&mut dev.uboot).unwrap();
            assert_eq!(dev.health(), *after, "{name}");
            if *name != steps[cut].0 {
                before = *after;
            } else {
                // A step that changes nothing writes nothing (mark_bad of an already bad B).
                wrote = uboot_env::seq(&dev.current().1) > seq;
            }
        }
        let name = steps[cut].0;
        if !wrote {
            assert_eq!(
                dev.health(),
                before,
                "{name} wrote nothing and changed nothing"
            );
            continue;
        }
        tear_newest(&dev);
        assert_eq!(dev.health(), before, "torn {name}: the state before it");
        let slot = dev.boot();
        let health = dev.uboot.health(slot).unwrap();
        assert!(
            health != Bad,
            "torn {name}: booted {slot}, which is {health:?}"
        );
    }
}

#[test]
fn unreadable_copies_are_an_error_naming_them_and_one_copy_mode_works() {
    let dev = Device::new();
    tear_newest(&dev);
    let e = dev.uboot.health(Slot::A).unwrap_err().to_string();
    assert!(e.contains(ENV_FILES[0]) && e.contains(ENV_FILES[1]), "{e}");
    assert!(e.contains("CRC") || e.contains("bytes"), "{e}");

    let dev = Device::new();
    let mut single = dev.uboot.clone().with_single_copy();
    single.mark_bad(Slot::B).unwrap();
    assert!(!dev.boot_dir().join(ENV_FILES[1]).exists());
    assert_eq!(single.health(Slot::B).unwrap(), Bad);
}

/// The environment tools of Debian (`scripts/install-deps.sh` installs them).
fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{name} is missing: run scripts/install-deps.sh");
    Command::new(name)
}

#[test]
fn images_read_and_written_by_u_boot_s_own_tools() {
    let dir = tempfile::tempdir().unwrap();
    // mkenvimage (u-boot-tools) writes what we read.
    let text = dir.path().join("env.txt");
    std::fs::write(&text, "BOOT_ORDER=B A\nBOOT_B_LEFT=3\nbootdelay=0\n").unwrap();
    let image = dir.path().join("made.env");
    let out = tool("mkenvimage")
        .args(["-s", &DEFAULT_SIZE.to_string(), "-o"])
        .arg(&image)
        .arg(&text)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let vars = uboot_env::parse(&std::fs::read(&image).unwrap()).unwrap();
    assert_eq!(vars["BOOT_ORDER"], "B A");
    assert_eq!(vars["BOOT_B_LEFT"], "3");
    assert_eq!(vars.len(), 3);

    // fw_printenv (libubootenv) reads what we write.
    let mut ours = Uboot::initial();
    ours.insert("BOOT_B_LEFT".into(), "2".into());
    let file = dir.path().join("ours.env");
    std::fs::write(&file, uboot_env::serialize(&ours, DEFAULT_SIZE).unwrap()).unwrap();
    let config = dir.path().join("fw_env.config");
    std::fs::write(
        &config,
        format!("{} 0x0 {:#x}\n", file.display(), DEFAULT_SIZE),
    )
    .unwrap();
    let out = tool("fw_printenv").arg("-c").arg(&config).output().unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for line in ["BOOT_ORDER=A", "BOOT_B_LEFT=2", "CONFAB_A_STATE=good"] {
        assert!(
            printed.lines().any(|l| l == line),
            "{line} not in {printed}"
        );
    }
    check_no_new_files(dir.path());
}

/// No `.new` file is left behind by a write.
fn check_no_new_files(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name();
        assert!(!name.to_string_lossy().ends_with(".new"), "{name:?}");
    }
}
