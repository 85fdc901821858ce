//! The wall clock, read in one place: Unix time now, as seconds or milliseconds. A clock set
//! before 1970 reads as 0 (the callers store or compare times; none may fail on a bad clock).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch (zero if the clock is set before it).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Unix time now, in whole seconds.
pub fn unix_secs() -> u64 {
    since_epoch().as_secs()
}

/// Unix time now, in milliseconds.
pub fn unix_millis() -> u64 {
    since_epoch().as_millis() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_and_millis_agree() {
        let ms = super::unix_millis();
        let s = super::unix_secs();
        assert!(s >= ms / 1000 && s <= ms / 1000 + 1);
        assert!(s > 1_600_000_000);
    }
}
