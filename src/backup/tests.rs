#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::state::SledStore;

fn manifest_json(format: u32, schema: u32, files: serde_json::Value) -> Vec<u8> {
    serde_json::json!({
        "format": format,
        "confab_version": "0.1.0",
        "schema_version": schema,
        "created_unix": 1_700_000_000u64,
        "device_id": "abc",
        "files": files,
    })
    .to_string()
    .into_bytes()
}

fn dump_entry() -> serde_json::Value {
    serde_json::json!([{"path": "state.json", "size": 2, "sha256": "a".repeat(64)}])
}

#[test]
fn a_good_manifest_parses() {
    let m = Manifest::parse(&manifest_json(FORMAT, supported_schema(), dump_entry())).unwrap();
    assert_eq!(m.schema_version, supported_schema());
    assert_eq!(m.files[0].path, "state.json");
    assert_eq!(m.device_id.as_deref(), Some("abc"));
}

#[test]
fn a_newer_format_or_schema_is_refused_by_name() {
    // A newer format is named even if its other fields changed completely.
    let err = Manifest::parse(br#"{"format": 2, "whatever": true}"#).unwrap_err();
    assert!(
        matches!(err, BackupError::NewerFormat { found: 2, .. }),
        "{err}"
    );
    let err =
        Manifest::parse(&manifest_json(FORMAT, supported_schema() + 1, dump_entry())).unwrap_err();
    assert!(matches!(err, BackupError::NewerSchema { .. }), "{err}");
    assert!(err.to_string().contains("newer confab"), "{err}");
}

#[test]
fn manifests_with_odd_names_duplicates_or_no_dump_are_refused() {
    let h = "b".repeat(64);
    for (files, what) in [
        (
            serde_json::json!([{"path": "state.json", "size": 1, "sha256": h},
                               {"path": "../etc/passwd", "size": 1, "sha256": h}]),
            "not a file confab backs up",
        ),
        (
            serde_json::json!([{"path": "state.json", "size": 1, "sha256": h},
                               {"path": "tls/../keys.toml", "size": 1, "sha256": h}]),
            "not a file confab backs up",
        ),
        (
            serde_json::json!([{"path": "state.json", "size": 1, "sha256": h},
                               {"path": "state.json", "size": 1, "sha256": h}]),
            "twice",
        ),
        (
            serde_json::json!([{"path": "keys.toml", "size": 1, "sha256": h}]),
            "does not list state.json",
        ),
        (
            serde_json::json!([{"path": "state.json", "size": 1, "sha256": "xyz"}]),
            "malformed",
        ),
    ] {
        let err = Manifest::parse(&manifest_json(FORMAT, 1, files)).unwrap_err();
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    let err = Manifest::parse(b"not json").unwrap_err();
    assert!(err.to_string().contains("not JSON"), "{err}");
    let err = Manifest::parse(br#"{"format": 1}"#).unwrap_err();
    assert!(err.to_string().contains("incomplete"), "{err}");
}

/// A state directory with a database, a keys file and TLS files.
fn device() -> (tempfile::TempDir, SledStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    store
        .put("admin", b"password_hash", b"$argon2id$x")
        .unwrap();
    store.put("settings", b"guest_access", b"false").unwrap();
    std::fs::write(dir.path().join("keys.toml"), "[keys]\nAPIx = \"secret\"\n").unwrap();
    std::fs::create_dir_all(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/ca.crt"), "CA CERT").unwrap();
    std::fs::write(dir.path().join("tls/ca.key"), "CA KEY").unwrap();
    std::fs::write(dir.path().join("tls/ca.key.new.1.0"), "half written").unwrap();
    std::fs::write(dir.path().join("setup-code"), "AAAA-BBBB").unwrap();
    (dir, store)
}

#[test]
fn an_archive_round_trips_and_holds_only_state() {
    let (dir, store) = device();
    let archive = create(&store, dir.path()).unwrap();
    let c = read(&archive.bytes).unwrap();
    assert_eq!(c.manifest, archive.manifest);
    let names: Vec<&str> = c.files.keys().map(String::as_str).collect();
    assert_eq!(names, ["keys.toml", "tls/ca.crt", "tls/ca.key"]);
    assert_eq!(c.dump, store.dump().unwrap());
    assert!(file_name(&c.manifest).starts_with("confab-backup-"));
    // Any tar lists it; the manifest comes first.
    let mut a = tar::Archive::new(&archive.bytes[..]);
    let first = a.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(first.path().unwrap().to_str(), Some(MANIFEST));
}

#[test]
fn a_damaged_or_truncated_archive_is_refused() {
    let (dir, store) = device();
    let archive = create(&store, dir.path()).unwrap();
    // Flip a byte inside the dump's data: its hash no longer matches.
    let at = archive
        .bytes
        .windows(6)
        .position(|w| w == b"\"trees")
        .unwrap();
    let mut bad = archive.bytes.clone();
    bad[at + 2] ^= 0x01;
    let err = read(&bad).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
    for len in [archive.bytes.len() / 2, 700, 10] {
        let err = read(&archive.bytes[..len]).unwrap_err();
        assert!(matches!(err, BackupError::Invalid(_)), "{len}: {err}");
    }
    let err = read(b"").unwrap_err();
    assert!(err.to_string().contains("no confab-backup.json"), "{err}");
}

#[test]
fn restore_swaps_in_the_backup_and_keeps_the_old_state_aside() {
    let (dir, store) = device();
    let archive = create(&store, dir.path()).unwrap();
    let contents = read(&archive.bytes).unwrap();
    drop(store);
    // Refused while a server holds the database.
    let state_dir = dir.path().to_path_buf();
    {
        let running = SledStore::open(&state_dir).unwrap();
        let err = restore(&state_dir, &contents).unwrap_err();
        assert!(matches!(err, BackupError::Running(_)), "{err}");
        assert!(err.to_string().contains("Stop it first"), "{err}");
        drop(running);
    }
    // Changed after the backup.
    {
        let s = SledStore::open(&state_dir).unwrap();
        s.put("settings", b"guest_access", b"true").unwrap();
        s.flush().unwrap();
    }
    std::fs::write(state_dir.join("keys.toml"), "[keys]\nAPIy = \"other\"\n").unwrap();
    std::fs::write(state_dir.join("update-state.json"), "{}").unwrap();
    std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o750)).unwrap();

    let restored = restore(&state_dir, &contents).unwrap();
    let kept = restored.kept.unwrap();
    assert!(kept
        .file_name()
        .unwrap()
        .to_string_lossy()
        .contains(".before-restore-"));
    assert_eq!(
        std::fs::read_to_string(kept.join("keys.toml")).unwrap(),
        "[keys]\nAPIy = \"other\"\n"
    );
    assert_eq!(
        std::fs::read_to_string(state_dir.join("keys.toml")).unwrap(),
        "[keys]\nAPIx = \"secret\"\n"
    );
    let mode = |p: &str| {
        std::fs::metadata(state_dir.join(p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        (
            mode("keys.toml"),
            mode("tls/ca.key"),
            mode("tls/ca.crt"),
            mode("tls")
        ),
        (0o600, 0o600, 0o644, 0o755)
    );
    // The state directory keeps its mode.
    assert_eq!(mode(""), 0o750);
    // Device files the backup does not hold are carried over; the spent setup code is not.
    assert!(state_dir.join("update-state.json").exists());
    assert!(!state_dir.join("setup-code").exists());
    let s = SledStore::open(&state_dir).unwrap();
    assert_eq!(
        s.get("settings", b"guest_access").unwrap().unwrap(),
        b"false"
    );
    assert_eq!(
        s.get("admin", b"password_hash").unwrap().unwrap(),
        b"$argon2id$x"
    );
    assert_eq!(restored.schema_version, s.schema_version());
    // No staging directory is left.
    let parent = state_dir.parent().unwrap();
    let base = state_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(!std::fs::read_dir(parent).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(&format!("{base}.restore-"))));
    drop(s);
    let _ = std::fs::remove_dir_all(kept);
}

#[test]
fn restore_into_a_mount_point_swaps_inside_it() {
    let (dir, store) = device();
    let contents = read(&create(&store, dir.path()).unwrap().bytes).unwrap();
    drop(store);
    let staging = dir.path().join(".restore-x");
    let stamp = "20260101T000000Z";
    stage(&staging, dir.path(), true, &contents).unwrap();
    let kept = swap_inside(dir.path(), &staging, stamp).unwrap();
    assert!(kept.join("state").is_dir() && kept.join("setup-code").exists());
    assert!(dir.path().join("state").is_dir() && dir.path().join("tls/ca.crt").exists());
    assert!(!staging.exists());
    let s = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        s.get("settings", b"guest_access").unwrap().unwrap(),
        b"false"
    );
}

#[test]
fn restore_onto_a_new_device_creates_the_state_directory() {
    let (dir, store) = device();
    let contents = read(&create(&store, dir.path()).unwrap().bytes).unwrap();
    drop(store);
    let new = tempfile::tempdir().unwrap();
    let state_dir = new.path().join("data");
    let restored = restore(&state_dir, &contents).unwrap();
    assert!(restored.kept.is_none());
    assert_eq!(
        std::fs::read(state_dir.join("tls/ca.key")).unwrap(),
        b"CA KEY"
    );
    let s = SledStore::open(&state_dir).unwrap();
    assert_eq!(
        s.get("admin", b"password_hash").unwrap().unwrap(),
        b"$argon2id$x"
    );
    assert_eq!(
        std::fs::read_dir(new.path()).unwrap().count(),
        1,
        "no staging left"
    );
}
