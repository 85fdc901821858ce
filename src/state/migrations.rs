//! Ordered, additive, idempotent schema migrations. Each one only adds trees or keys that are
//! missing, so running it twice (after a crash between applying it and recording its version)
//! changes nothing. Append new migrations at the end; never edit or reorder shipped ones.

use tracing::info;

use super::{StateError, SCHEMA_KEY};

/// One schema step. `version` numbers are consecutive from 1.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub apply: fn(&sled::Db) -> sled::Result<()>,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "device identity",
        apply: device_identity,
    },
    Migration {
        version: 2,
        name: "rooms tree",
        apply: rooms_tree,
    },
    Migration {
        version: 3,
        name: "settings with defaults",
        apply: settings_defaults,
    },
];

/// Applies every migration above `current`, recording each version as it lands. Returns the new
/// schema version.
pub(super) fn apply(
    db: &sled::Db,
    meta: &sled::Tree,
    current: u32,
    migrations: &[Migration],
) -> Result<u32, StateError> {
    let mut version = current;
    for m in migrations.iter().filter(|m| m.version > current) {
        let fail = |e: sled::Error| StateError::Migration {
            version: m.version,
            name: m.name,
            detail: e.to_string(),
        };
        (m.apply)(db).map_err(fail)?;
        meta.insert(SCHEMA_KEY, &m.version.to_be_bytes())
            .map_err(fail)?;
        db.flush().map_err(fail)?;
        info!(
            version = m.version,
            name = m.name,
            "applied state migration"
        );
        version = m.version;
    }
    Ok(version)
}

fn insert_if_absent(tree: &sled::Tree, key: &[u8], value: &[u8]) -> sled::Result<()> {
    // compare_and_swap from "absent" only writes when the key is missing: idempotent.
    let _ = tree.compare_and_swap(key, None as Option<&[u8]>, Some(value))?;
    Ok(())
}

/// v1: a random device id and the creation time, so backups and logs can name the device.
fn device_identity(db: &sled::Db) -> sled::Result<()> {
    let meta = db.open_tree("meta")?;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| sled::Error::Io(std::io::Error::other(e.to_string())))?;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    insert_if_absent(&meta, b"device_id", hex.as_bytes())?;
    let now = crate::clock::unix_secs();
    insert_if_absent(&meta, b"created_at", &now.to_be_bytes())
}

/// v2: the tree that keeps rooms created through the API (name → JSON settings).
fn rooms_tree(db: &sled::Db) -> sled::Result<()> {
    db.open_tree("rooms").map(drop)
}

/// v3: appliance settings the admin can change, with their defaults.
fn settings_defaults(db: &sled::Db) -> sled::Result<()> {
    let settings = db.open_tree("settings")?;
    insert_if_absent(&settings, b"guest_access", b"true")?;
    insert_if_absent(&settings, b"empty_room_timeout_seconds", b"300")
}
