//! RTP counters of one SFU, for `/metrics`: packets, bytes, NACKs, PLIs and FIRs of the media
//! received from publishers (ingress) and sent to subscribers (egress), and the packets the
//! subscribers reported lost.
//!
//! Nothing is counted on the packet path: str0m already counts per stream, and reports each
//! stream's running totals once per [`super::quality::STATS_INTERVAL`]
//! (`Event::MediaIngressStats`, `Event::MediaEgressStats`). Each peer keeps the totals it last
//! saw per stream ([`Seen`]) and adds what grew since to the SFU's [`RtpCounters`] (relaxed
//! atomics, read by the scrape on another thread). What a stream counted after its last report
//! before its peer closed is not counted (at most one interval's worth).

use std::sync::atomic::{AtomicU64, Ordering};

use str0m::media::{Mid, Rid};
use str0m::stats::{MediaEgressStats, MediaIngressStats};

use super::FastMap;

/// The counters of one direction.
#[derive(Debug, Default)]
pub struct StreamCounters {
    /// RTP packets (retransmissions included, as str0m counts them).
    pub packets: AtomicU64,
    /// RTP payload bytes (retransmissions included).
    pub bytes: AtomicU64,
    /// Ingress: NACKs confab sent to publishers. Egress: NACKs subscribers sent to confab.
    pub nacks: AtomicU64,
    /// The same for PLIs.
    pub plis: AtomicU64,
    /// The same for FIRs.
    pub firs: AtomicU64,
}

/// The counters of one SFU (one media thread).
#[derive(Debug, Default)]
pub struct RtpCounters {
    pub ingress: StreamCounters,
    pub egress: StreamCounters,
    /// Packets subscribers reported lost (RTCP receiver reports, cumulative per stream) on what
    /// confab sent them.
    pub egress_lost: AtomicU64,
}

/// The running totals of one stream at its last report: packets, bytes, NACKs, PLIs, FIRs,
/// lost.
type Totals = [u64; 6];

/// What a peer's streams reported last, by (egress?, mid, rid).
#[derive(Debug, Default)]
pub struct Seen(FastMap<(bool, Mid, Option<Rid>), Totals>);

impl Seen {
    /// What grew since the stream's last report (a total that went down, as after an SSRC
    /// change, counts from its new value on).
    fn delta(&mut self, key: (bool, Mid, Option<Rid>), now: Totals) -> Totals {
        let last = self.0.insert(key, now).unwrap_or_default();
        let mut d = [0; 6];
        for ((d, n), l) in d.iter_mut().zip(now).zip(last) {
            *d = n.saturating_sub(l);
        }
        d
    }
}

/// RFC 3550's cumulative loss is a signed 24-bit field; str0m reads it unsigned. A negative
/// value (duplicates outnumber losses) is taken as none lost.
fn lost(packets_lost: u64) -> u64 {
    if packets_lost >= 0x80_0000 {
        0
    } else {
        packets_lost
    }
}

impl StreamCounters {
    fn add(&self, d: &Totals) {
        let add = |c: &AtomicU64, v: u64| {
            if v > 0 {
                c.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(&self.packets, d[0]);
        add(&self.bytes, d[1]);
        add(&self.nacks, d[2]);
        add(&self.plis, d[3]);
        add(&self.firs, d[4]);
    }
}

impl RtpCounters {
    /// A publisher's stream reported (what confab received on it).
    pub fn ingress(&self, seen: &mut Seen, s: &MediaIngressStats) {
        let now = [s.packets, s.bytes, s.nacks, s.plis, s.firs, 0];
        self.ingress.add(&seen.delta((false, s.mid, s.rid), now));
    }

    /// A subscriber's stream reported (what confab sent on it, and what the subscriber said).
    pub fn egress(&self, seen: &mut Seen, s: &MediaEgressStats) {
        let lost = s.remote.as_ref().map_or(0, |r| lost(r.packets_lost));
        let now = [s.packets, s.bytes, s.nacks, s.plis, s.firs, lost];
        let d = seen.delta((true, s.mid, s.rid), now);
        self.egress.add(&d);
        if d[5] > 0 {
            self.egress_lost.fetch_add(d[5], Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_grew_is_added_and_a_reset_counts_from_its_new_value() {
        let mut seen = Seen::default();
        let key = (false, Mid::from("0"), None);
        assert_eq!(
            seen.delta(key, [10, 1000, 1, 0, 0, 0]),
            [10, 1000, 1, 0, 0, 0]
        );
        assert_eq!(
            seen.delta(key, [15, 1500, 1, 2, 0, 0]),
            [5, 500, 0, 2, 0, 0]
        );
        assert_eq!(
            seen.delta(key, [3, 300, 0, 0, 0, 0]),
            [0; 6],
            "went down: nothing"
        );
        assert_eq!(seen.delta(key, [4, 400, 0, 0, 0, 0]), [1, 100, 0, 0, 0, 0]);
        // Another stream of the same peer has its own totals.
        let other = (true, Mid::from("0"), None);
        assert_eq!(seen.delta(other, [2, 20, 0, 0, 0, 7]), [2, 20, 0, 0, 0, 7]);
    }

    #[test]
    fn negative_cumulative_loss_is_none_lost() {
        assert_eq!(lost(5), 5);
        assert_eq!(lost(0x7f_ffff), 0x7f_ffff);
        assert_eq!(lost(0xff_ffff), 0, "-1 in 24 bits");
    }
}
