//! The wall clock, read in one place: Unix time now, as seconds, milliseconds or nanoseconds, or as a UTC
//! date. A clock set before 1970 reads as Unix time 0 (the callers store or compare times; none
//! may fail on a bad clock).

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

/// Unix time now, in nanoseconds (for the arrival stamps of datagrams; saturates in 2554).
pub fn unix_nanos() -> u64 {
    u64::try_from(since_epoch().as_nanos()).unwrap_or(u64::MAX)
}

/// Now, as a UTC date and time (for certificate validity and timestamps people read).
pub fn now_utc() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
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
