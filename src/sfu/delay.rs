//! The delay confab adds to forwarded media, measured inside confab: from the moment a
//! publisher's datagram reached the kernel (`SO_TIMESTAMPNS`, so time spent queued in the
//! socket counts) to the return of the `sendmmsg` that carried the forwarded copy out.
//!
//! Every [`SAMPLE_EVERY`]-th forwarded RTP packet is a probe: for each subscriber it is written
//! to, the outgoing SSRC and sequence number (which SRTP leaves in clear) are remembered with
//! the arrival time; the media loop looks up each outgoing RTP datagram's header while probes
//! are pending and records the delay of those it finds in a [`DelayHistogram`]. Time spent in
//! str0m's pacer counts, as it should; a retransmission (other SSRC) is not a probe.
//!
//! Audio is also counted on its own: str0m does not pace audio, so its delay is confab's
//! processing alone, while video's includes the pacer spreading keyframes out per subscriber.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::FastMap;

/// One forwarded packet in this many is probed (≈ 1.5 % of the packets: a hash lookup per sent
/// datagram while probes are in flight, nothing otherwise).
pub const SAMPLE_EVERY: u32 = 64;
/// Probes older than this were dropped on the way (a full pacer queue, a peer that left).
const STALE: Duration = Duration::from_secs(2);
/// At most this many probes are kept (stale ones are purged when it fills).
const MAX_PENDING: usize = 4096;

/// Probes in flight: (outgoing SSRC, sequence number) → the probe.
#[derive(Default)]
pub struct DelayProbe {
    count: u32,
    pending: FastMap<(u32, u16), Probe>,
}

/// A measured packet: when it reached the kernel, and whether it is audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub arrived: Instant,
    pub audio: bool,
}

impl DelayProbe {
    /// Whether the packet being forwarded now is a probe.
    pub fn sample(&mut self) -> bool {
        self.count = self.count.wrapping_add(1);
        self.count % SAMPLE_EVERY == 0
    }

    /// A probe's copy was written to a subscriber's stream `ssrc` as sequence number `seq`.
    pub fn expect(&mut self, now: Instant, ssrc: u32, seq: u16, probe: Probe) {
        if self.pending.len() >= MAX_PENDING {
            self.pending
                .retain(|_, p| now.saturating_duration_since(p.arrived) < STALE);
            if self.pending.len() >= MAX_PENDING {
                return;
            }
        }
        self.pending.insert((ssrc, seq), probe);
    }

    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// A datagram is about to be sent: if it is a probe's copy, the probe.
    pub fn sent(&mut self, datagram: &[u8]) -> Option<Probe> {
        let (ssrc, seq) = rtp_ids(datagram)?;
        self.pending.remove(&(ssrc, seq))
    }
}

/// SSRC and sequence number of an RTP (not RTCP, STUN or DTLS) datagram, from its clear header.
pub fn rtp_ids(d: &[u8]) -> Option<(u32, u16)> {
    let h = d.get(..12)?;
    // Version 2; RTCP packet types 192–223 share the second byte's range (RFC 5761).
    if h[0] >> 6 != 2 || (192..=223).contains(&h[1]) {
        return None;
    }
    let seq = u16::from_be_bytes([h[2], h[3]]);
    let ssrc = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    Some((ssrc, seq))
}

/// A delay longer than this (an hour) adds only this much to the sum.
const MAX_RECORDED_US: u64 = 3_600_000_000;

/// Buckets: 10 µs wide below 1 ms, 100 µs below 10 ms, 1 ms below 100 ms, 10 ms below 1 s, and
/// one for everything longer.
const BUCKETS: usize = 100 + 90 + 90 + 90 + 1;

fn bucket(us: u64) -> usize {
    match us {
        0..1_000 => (us / 10) as usize,
        1_000..10_000 => 100 + ((us - 1_000) / 100) as usize,
        10_000..100_000 => 190 + ((us - 10_000) / 1_000) as usize,
        100_000..1_000_000 => 280 + ((us - 100_000) / 10_000) as usize,
        _ => BUCKETS - 1,
    }
}

/// The upper bound of bucket `i`, in µs (`u64::MAX` for the last).
pub fn bucket_upper_us(i: usize) -> u64 {
    let i = i as u64;
    match i {
        0..100 => (i + 1) * 10,
        100..190 => 1_000 + (i - 99) * 100,
        190..280 => 10_000 + (i - 189) * 1_000,
        280..370 => 100_000 + (i - 279) * 10_000,
        _ => u64::MAX,
    }
}

/// Counts of delays, written by one media thread, read by anyone (lock-free).
pub struct DelayHistogram {
    counts: Vec<AtomicU64>,
    /// The sum of the recorded delays in µs (a Prometheus histogram's `_sum`).
    sum_us: AtomicU64,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        DelayHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl DelayHistogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(c) = self.counts.get(bucket(us)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        // A probe, not every packet (1 in SAMPLE_EVERY); clamped so a clock oddity cannot
        // wrap the sum.
        self.sum_us
            .fetch_add(us.min(MAX_RECORDED_US), Ordering::Relaxed);
    }

    /// The sum of the recorded delays, in µs.
    pub fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
    }

    /// The counts so far, added to `into` (which is resized to fit).
    pub fn add_to(&self, into: &mut Vec<u64>) {
        into.resize(BUCKETS, 0);
        for (sum, c) in into.iter_mut().zip(&self.counts) {
            *sum += c.load(Ordering::Relaxed);
        }
    }
}

/// The `p` quantile (0–1) of bucket counts (indexed by bucket), as the upper bound of its
/// bucket in µs (an upper bound, at most one bucket width above the true value).
pub fn quantile_us(counts: &[u64], p: f64) -> Option<u64> {
    quantile_of(
        counts
            .iter()
            .enumerate()
            .map(|(i, c)| (bucket_upper_us(i), *c)),
        p,
    )
}

/// The `p` quantile (0–1) of buckets given as (upper bound µs, count), in ascending order:
/// the upper bound of the bucket it falls in.
pub fn quantile_of(buckets: impl Iterator<Item = (u64, u64)> + Clone, p: f64) -> Option<u64> {
    let total: u64 = buckets.clone().map(|(_, c)| c).sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * p).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (upper, c) in buckets {
        seen += c;
        if seen >= rank {
            return Some(upper);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        for us in [
            0, 9, 10, 999, 1_000, 1_099, 9_999, 10_000, 99_999, 100_000, 999_999,
        ] {
            let b = bucket(us);
            assert!(us < bucket_upper_us(b), "{us} µs in bucket {b}");
            if b > 0 {
                assert!(us >= bucket_upper_us(b - 1), "{us} µs below bucket {b}");
            }
        }
        assert_eq!(bucket(5_000_000), BUCKETS - 1);
        assert_eq!(bucket_upper_us(BUCKETS - 2), 1_000_000);
    }

    #[test]
    fn quantiles_come_from_the_counts() {
        let h = DelayHistogram::default();
        for _ in 0..98 {
            h.record(Duration::from_micros(55));
        }
        h.record(Duration::from_micros(2_345));
        h.record(Duration::from_millis(40));
        let mut c = vec![];
        h.add_to(&mut c);
        assert_eq!(quantile_us(&c, 0.5), Some(60));
        assert_eq!(quantile_us(&c, 0.99), Some(2_400));
        assert_eq!(quantile_us(&c, 1.0), Some(41_000));
        assert_eq!(quantile_us(&[], 0.5), None);
        assert_eq!(h.sum_us(), 98 * 55 + 2_345 + 40_000);
    }

    fn rtp(ssrc: u32, seq: u16, pt: u8) -> Vec<u8> {
        let mut d = vec![0x80, pt];
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(&[0; 4]);
        d.extend_from_slice(&ssrc.to_be_bytes());
        d.extend_from_slice(&[0xab; 100]);
        d
    }

    #[test]
    fn a_probe_is_found_once_in_its_outgoing_datagram() {
        let mut p = DelayProbe::default();
        let sampled = (0..SAMPLE_EVERY * 3).filter(|_| p.sample()).count();
        assert_eq!(sampled, 3);
        let t = Probe {
            arrived: Instant::now(),
            audio: true,
        };
        p.expect(Instant::now(), 0x1234_5678, 42, t);
        assert!(!p.is_idle());
        assert_eq!(p.sent(&rtp(0x1234_5678, 41, 96)), None);
        assert_eq!(p.sent(&rtp(0x1234_5679, 42, 96)), None);
        // RTCP (PT 200) with the same bytes where RTP keeps SSRC and sequence is not RTP.
        assert_eq!(p.sent(&rtp(0x1234_5678, 42, 200)), None);
        assert_eq!(p.sent(&rtp(0x1234_5678, 42, 96 | 0x80)), Some(t));
        assert_eq!(p.sent(&rtp(0x1234_5678, 42, 96)), None);
        assert!(p.is_idle());
        // STUN, DTLS, short garbage.
        assert_eq!(rtp_ids(&[0, 1, 0, 0]), None);
        assert_eq!(rtp_ids(&[22; 40]), None);
        assert_eq!(rtp_ids(&[]), None);
    }

    #[test]
    fn probes_never_seen_do_not_pile_up() {
        let mut p = DelayProbe::default();
        let long_ago = Instant::now() - Duration::from_secs(10);
        let probe = |arrived| Probe {
            arrived,
            audio: false,
        };
        for i in 0..MAX_PENDING as u32 {
            p.expect(Instant::now(), i, 0, probe(long_ago));
        }
        p.expect(Instant::now(), u32::MAX, 7, probe(Instant::now()));
        assert_eq!(p.pending.len(), 1, "stale probes purged when full");
    }
}
