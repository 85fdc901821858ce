//! Recordings' `EgressInfo`s in the state database (tree `egress`, protobuf, by egress id):
//! written at each status change and every few seconds while a recording runs (its size and
//! duration so far), so that after a crash or power cut [`recover`] can mark what was running
//! ABORTED with the figures of its files as they are on disk.

use livekit_protocol as lk;
use prost::Message;
use tracing::{info, warn};

use crate::state::Store;

pub const TREE: &str = "egress";

pub fn save(store: &dyn Store, info: &lk::EgressInfo) {
    if let Err(e) = store.put(TREE, info.egress_id.as_bytes(), &info.encode_to_vec()) {
        warn!(egress = %info.egress_id, error = %e, "could not save the recording's state");
    }
}

pub fn load(store: &dyn Store, egress: &str) -> Option<lk::EgressInfo> {
    let raw = store.get(TREE, egress.as_bytes()).ok()??;
    lk::EgressInfo::decode(raw.as_slice()).ok()
}

pub fn remove(store: &dyn Store, egress: &str) -> bool {
    store.remove(TREE, egress.as_bytes()).is_ok()
}

/// Every recording known, newest first.
pub fn all(store: &dyn Store) -> Vec<lk::EgressInfo> {
    let mut v: Vec<lk::EgressInfo> = match store.entries(TREE) {
        Ok(entries) => entries
            .into_iter()
            .filter_map(|(_, raw)| lk::EgressInfo::decode(raw.as_slice()).ok())
            .collect(),
        Err(e) => {
            warn!(error = %e, "could not read the recordings' state");
            vec![]
        }
    };
    v.sort_by_key(|i| std::cmp::Reverse((i.started_at.max(i.updated_at), i.egress_id.clone())));
    v
}

pub fn is_active(info: &lk::EgressInfo) -> bool {
    use lk::EgressStatus as S;
    matches!(
        S::try_from(info.status),
        Ok(S::EgressStarting | S::EgressActive | S::EgressEnding)
    )
}

/// Marks the recordings that were running when confab stopped without finishing them (a crash,
/// `kill -9`, a power cut) ABORTED, their files kept, sizes as on disk. How many there were.
pub fn recover(store: &dyn Store, dir: &std::path::Path) -> usize {
    let mut n = 0;
    for mut info in all(store).into_iter().filter(is_active) {
        for f in &mut info.file_results {
            if let Ok(m) = std::fs::metadata(dir.join(&f.filename)) {
                f.size = m.len() as i64;
            }
            if f.ended_at == 0 {
                f.ended_at = info.updated_at;
            }
        }
        info.status = lk::EgressStatus::EgressAborted as i32;
        info.ended_at = info.updated_at;
        info.error = "confab stopped while recording (a crash or power loss): the files play up \
                      to the last seconds written before it"
            .into();
        info!(egress = %info.egress_id, room = %info.room_name, "recording aborted by a restart; its files are kept");
        save(store, &info);
        n += 1;
    }
    n
}
