#![allow(clippy::unwrap_used)]

use super::*;

fn names(store: &SledStore, tree: &str) -> Vec<String> {
    store
        .entries(tree)
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect()
}

#[test]
fn new_database_gets_the_newest_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.schema_version(), MIGRATIONS.last().unwrap().version);
    assert!(store.get("meta", b"device_id").unwrap().is_some());
    assert_eq!(
        store.get("settings", b"guest_access").unwrap().as_deref(),
        Some(&b"true"[..])
    );
    assert!(store.healthy());
}

#[test]
fn old_database_upgrades_across_several_versions_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let device_id;
    {
        // A database written by a confab that knew only migration 1.
        let old = SledStore::open_with(dir.path(), &MIGRATIONS[..1]).unwrap();
        assert_eq!(old.schema_version(), 1);
        device_id = old.get("meta", b"device_id").unwrap().unwrap();
        old.put("notes", b"kept", b"yes").unwrap();
        assert!(old.get("settings", b"guest_access").unwrap().is_none());
        old.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(store.schema_version(), 3);
    assert_eq!(store.get("meta", b"device_id").unwrap().unwrap(), device_id);
    assert_eq!(
        store.get("notes", b"kept").unwrap().as_deref(),
        Some(&b"yes"[..])
    );
    assert_eq!(
        names(&store, "settings"),
        ["empty_room_timeout_seconds", "guest_access"]
    );
}

#[test]
fn migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    store.put("settings", b"guest_access", b"false").unwrap();
    let before_meta = store.entries("meta").unwrap();
    // Re-run every migration as if the version record had been lost in a crash.
    for m in MIGRATIONS {
        (m.apply)(store.db.read().unwrap().as_ref().unwrap()).unwrap();
    }
    assert_eq!(store.entries("meta").unwrap(), before_meta);
    assert_eq!(
        store.get("settings", b"guest_access").unwrap().as_deref(),
        Some(&b"false"[..]),
        "a migration must never overwrite a value the admin set"
    );
}

#[test]
fn migrations_are_numbered_consecutively() {
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version as usize, i + 1, "{}", m.name);
    }
}

#[test]
fn database_from_a_newer_confab_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.put("meta", SCHEMA_KEY, &99u32.to_be_bytes()).unwrap();
        store.flush().unwrap();
    }
    let err = SledStore::open(dir.path()).err().unwrap();
    assert!(
        matches!(
            err,
            StateError::NewerSchema {
                found: 99,
                supported: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("written by a newer confab"),
        "{err}"
    );
}

#[test]
fn damaged_database_is_refused_not_recreated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store.put("rooms", b"standup", b"{}").unwrap();
        store.flush().unwrap();
    }
    // The next successful start takes the backup that already holds the room.
    drop(SledStore::open(dir.path()).unwrap());
    let db_file = dir.path().join(DB_DIR).join("db");
    let len = std::fs::metadata(&db_file).unwrap().len() as usize;
    std::fs::write(&db_file, vec![0xA5; len.max(4096)]).unwrap();
    let err = SledStore::open(dir.path()).err().expect("must refuse");
    let text = err.to_string();
    assert!(matches!(err, StateError::Corrupt { .. }), "{text}");
    assert!(
        text.contains(&dir.path().join(DB_DIR).display().to_string()),
        "{text}"
    );
    assert!(text.contains("backup"), "{text}");
    assert!(
        text.contains(&dir.path().join(BACKUP_DIR).display().to_string()),
        "{text}"
    );
    // Following the message: put the copy from the last good start in place, and the data is back.
    let damaged = dir.path().join("state.damaged");
    std::fs::rename(dir.path().join(DB_DIR), &damaged).unwrap();
    copy_dir(&dir.path().join(BACKUP_DIR), &dir.path().join(DB_DIR));
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        store.get("rooms", b"standup").unwrap().as_deref(),
        Some(&b"{}"[..])
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn directory_without_sled_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(DB_DIR)).unwrap();
    std::fs::write(dir.path().join(DB_DIR).join("db"), b"something").unwrap();
    let err = SledStore::open(dir.path()).err().unwrap();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
}

#[test]
fn second_opener_is_told_the_database_is_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _first = SledStore::open(dir.path()).unwrap();
    let err = SledStore::open(dir.path()).err().unwrap();
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}

#[test]
fn a_dump_imports_into_a_new_database_and_an_older_one_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    // Written by "an older confab": only the first two migrations.
    let old = SledStore::open_with(dir.path(), &MIGRATIONS[..2]).unwrap();
    old.put("rooms", b"standup", b"{}").unwrap();
    let dump = old.dump().unwrap();
    drop(old);
    assert_eq!(dump.schema_version(), Some(2));
    assert!(dump.trees.iter().any(|(n, _)| n == b"rooms"));

    let fresh = tempfile::tempdir().unwrap();
    let store = import(fresh.path(), &dump).unwrap();
    assert_eq!(store.schema_version(), MIGRATIONS.len() as u32);
    assert_eq!(store.get("rooms", b"standup").unwrap().unwrap(), b"{}");
    // Migration 3 added the settings with their defaults.
    assert_eq!(
        store.get("settings", b"guest_access").unwrap().unwrap(),
        b"true"
    );
    // Importing again over a database is refused.
    drop(store);
    let err = import(fresh.path(), &dump).err().unwrap();
    assert!(err.to_string().contains("already there"), "{err}");
}

#[test]
fn a_dump_with_a_newer_schema_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let mut dump = store.dump().unwrap();
    drop(store);
    for (name, entries) in &mut dump.trees {
        if name == b"meta" {
            for (k, v) in entries.iter_mut() {
                if k == b"schema_version" {
                    *v = 99u32.to_be_bytes().to_vec();
                }
            }
        }
    }
    let fresh = tempfile::tempdir().unwrap();
    let err = import(fresh.path(), &dump).err().unwrap();
    assert!(
        matches!(err, StateError::NewerSchema { found: 99, .. }),
        "{err}"
    );
    assert!(!fresh.path().join(DB_DIR).exists());
}

#[test]
fn lock_reports_a_running_server_and_keeps_one_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    assert!(lock(dir.path()).unwrap().is_none());
    let store = SledStore::open(dir.path()).unwrap();
    store.put("rooms", b"r", b"1").unwrap();
    store.flush().unwrap();
    assert!(matches!(lock(dir.path()), Err(StateError::Locked { .. })));
    drop(store);
    let held = lock(dir.path()).unwrap().unwrap();
    let err = SledStore::open(dir.path()).err().unwrap();
    assert!(matches!(err, StateError::Locked { .. }), "{err}");
    // A copy opens while the original stays locked and untouched.
    let before: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = open_copy(dir.path(), &held, copy_dir.path()).unwrap();
    assert_eq!(copy.get("rooms", b"r").unwrap().unwrap(), b"1");
    let after: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
    drop(held);
    assert!(SledStore::open(dir.path()).is_ok());
}
