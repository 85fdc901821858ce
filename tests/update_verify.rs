//! Release signatures made with the real `minisign` CLI (through scripts/sign-release.sh) and
//! checked by the agent: a good release, and every way a release can be wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::release::{ok, script};
use confab::update::verify::{verify_release, TrustedKeys, VerifyError};
use semver::Version;

fn keypair(dir: &Path) -> (PathBuf, PathBuf) {
    ok(Command::new(script()).arg("--generate-key").arg(dir));
    (dir.join("confab.pub"), dir.join("confab.key"))
}

fn sign(out: &Path, key: &Path, version: &str, board: &str, extra: &[&str]) {
    let img = out.with_extension("img");
    std::fs::write(&img, b"a tiny root filesystem").unwrap();
    ok(Command::new(script())
        .args([
            "--key",
            key.to_str().unwrap(),
            "--board",
            board,
            "--version",
            version,
        ])
        .args([
            "--image",
            img.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(extra));
}

struct Release {
    manifest: Vec<u8>,
    signature: String,
}

fn read(dir: &Path) -> Release {
    Release {
        manifest: std::fs::read(dir.join("manifest.json")).unwrap(),
        signature: std::fs::read_to_string(dir.join("manifest.json.minisig")).unwrap(),
    }
}

fn check(
    keys: &TrustedKeys,
    r: &Release,
    board: &str,
    running: &str,
    downgrade: bool,
) -> Result<String, VerifyError> {
    verify_release(
        keys,
        &r.manifest,
        &r.signature,
        board,
        &Version::parse(running).unwrap(),
        downgrade,
    )
    .map(|v| v.version.to_string())
}

#[test]
fn signature_fault_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (pub1, key1) = keypair(&d.join("k1"));
    let (pub2, key2) = keypair(&d.join("k2"));
    let trusted = TrustedKeys::from_pub_files(std::slice::from_ref(&pub1)).unwrap();

    sign(
        &d.join("good"),
        &key1,
        "0.2.0",
        "rpi",
        &["--min-version", "0.1.0"],
    );
    let good = read(&d.join("good"));
    let proof = verify_release(
        &trusted,
        &good.manifest,
        &good.signature,
        "rpi",
        &Version::new(0, 1, 5),
        false,
    )
    .unwrap();
    assert_eq!(proof.version, Version::new(0, 2, 0));
    assert!(
        proof.key_id().contains("minisign public key"),
        "{}",
        proof.key_id()
    );

    // Signed by a key the device does not trust.
    sign(&d.join("foreign"), &key2, "0.2.0", "rpi", &[]);
    let foreign = read(&d.join("foreign"));
    assert!(matches!(
        check(&trusted, &foreign, "rpi", "0.1.0", false),
        Err(VerifyError::UntrustedKey { .. })
    ));

    // Key rotation: with both keys trusted, the second key's release verifies.
    let both = TrustedKeys::from_pub_files(&[pub1.clone(), pub2]).unwrap();
    assert_eq!(
        check(&both, &foreign, "rpi", "0.1.0", false).unwrap(),
        "0.2.0"
    );

    // One byte of the manifest changed after signing.
    let mut edited = read(&d.join("good"));
    let pos = edited.manifest.iter().position(|&b| b == b'2').unwrap();
    edited.manifest[pos] = b'3';
    assert_eq!(
        check(&trusted, &edited, "rpi", "0.1.0", false),
        Err(VerifyError::BadSignature)
    );

    // A valid signature whose trusted comment names another release.
    let replay = d.join("replay");
    sign(&replay, &key1, "0.2.0", "rpi", &[]);
    ok(Command::new("minisign")
        .args([
            "-S",
            "-s",
            key1.to_str().unwrap(),
            "-m",
            replay.join("manifest.json").to_str().unwrap(),
        ])
        .args(["-t", "version:0.1.9 board:rpi"]));
    let replayed = read(&replay);
    assert!(matches!(
        check(&trusted, &replayed, "rpi", "0.1.0", false),
        Err(VerifyError::TrustedComment { .. })
    ));

    // Policy: board, downgrade, same version, minimum version.
    let err = check(&trusted, &good, "generic-efi-arm64", "0.1.0", false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "this release is for board rpi, this device is generic-efi-arm64"
    );
    assert!(matches!(
        check(&trusted, &good, "rpi", "0.3.0", false),
        Err(VerifyError::Downgrade { .. })
    ));
    assert_eq!(
        check(&trusted, &good, "rpi", "0.3.0", true).unwrap(),
        "0.2.0"
    );
    assert!(matches!(
        check(&trusted, &good, "rpi", "0.2.0", false),
        Err(VerifyError::AlreadyRunning { .. })
    ));
    let err = check(&trusted, &good, "rpi", "0.0.9", false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "this release needs at least v0.1.0 installed first; this device runs v0.0.9"
    );

    // Legacy (not prehashed) signatures are refused.
    let legacy = d.join("legacy");
    sign(&legacy, &key1, "0.2.0", "rpi", &[]);
    let legacy_ok = Command::new("minisign")
        .args([
            "-S",
            "-l",
            "-s",
            key1.to_str().unwrap(),
            "-m",
            legacy.join("manifest.json").to_str().unwrap(),
        ])
        .args(["-t", "version:0.2.0 board:rpi"])
        .output()
        .unwrap()
        .status
        .success();
    if legacy_ok {
        assert_eq!(
            check(&trusted, &read(&legacy), "rpi", "0.1.0", false),
            Err(VerifyError::LegacySignature)
        );
    }

    // Garbage instead of a signature.
    let garbage = Release {
        manifest: good.manifest.clone(),
        signature: "untrusted comment: hello\nnot base64 at all\n".into(),
    };
    assert_eq!(
        check(&trusted, &garbage, "rpi", "0.1.0", false),
        Err(VerifyError::SignatureFormat)
    );

    // A key file that is not a key names the file.
    std::fs::write(d.join("bad.pub"), "untrusted comment: x\n!!!\n").unwrap();
    let err = TrustedKeys::from_pub_files(&[d.join("bad.pub")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad.pub"), "{err}");
}

#[test]
fn update_commands_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (pubkey, key) = keypair(&d.join("keys"));
    sign(
        &d.join("rel"),
        &key,
        "99.1.0",
        "test-board",
        &["--notes-url", "https://example.org/notes"],
    );
    let ports = common::free_ports();
    let env = [
        ("CONFAB_BOARD", "test-board"),
        ("CONFAB_UPDATE_KEYS", pubkey.to_str().unwrap()),
    ];
    let rel = d.join("rel");
    let out = common::run(
        d,
        ports,
        &["update", "check", "--from", rel.to_str().unwrap()],
        &env,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Update available: v99.1.0") && text.contains("https://example.org/notes"),
        "{text}"
    );

    // The manifest file itself, or a relative path, names the same release.
    let out = common::run(
        d,
        ports,
        &["update", "check", "--from", "./rel/manifest.json"],
        &env,
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Update available: v99.1.0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // This development install has no A/B slots: apply says so and changes nothing.
    let out = common::run(
        d,
        ports,
        &["update", "apply", "--from", rel.to_str().unwrap()],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no A/B slots"));

    let out = common::run(d, ports, &["update", "status", "--json"], &env);
    assert!(out.status.success());
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"]["last_check"]["available"], "99.1.0");
    assert_eq!(status["bootloader"], "none");

    // Another board's release is refused by check too, with the reason.
    let out = common::run(
        d,
        ports,
        &["update", "check", "--from", rel.to_str().unwrap()],
        &[("CONFAB_BOARD", "rpi"), env[1]],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("for board test-board, this device is rpi")
    );
}
