//! A bounded reorder buffer for one track's RTP packets, keyed by the extended (unwrapped, u64)
//! sequence number. Packets are released in order; a missing one is waited for until the buffer
//! is over a bound (packets, bytes, media time spanned) or the first packet after the gap has
//! waited [`Config::timeout_us`] (arrival time, given by the caller: no clock is read), and then
//! reported as [`Released::Lost`] and skipped. Duplicates and packets older than what was
//! released are refused.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
pub struct Config {
    pub max_packets: usize,
    pub max_bytes: usize,
    /// Media time the held packets may span, in RTP clock units.
    pub max_span: u32,
    /// How long a gap is waited for, in the caller's microseconds.
    pub timeout_us: u64,
}

impl Config {
    /// 512 packets, 4 MiB, one second of media, 200 ms of waiting.
    pub fn for_clock(clock_rate: u32) -> Self {
        Config {
            max_packets: 512,
            max_bytes: 4 << 20,
            max_span: clock_rate,
            timeout_us: 200_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub seq: u64,
    pub ts: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
    pub arrival_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    Packet(Packet),
    /// This many packets before the next one will not come.
    Lost(u64),
}

/// What [`Jitter::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Held,
    Duplicate,
    /// Older than what was already released (or skipped).
    TooOld,
}

pub struct Jitter {
    cfg: Config,
    held: BTreeMap<u64, Packet>,
    bytes: usize,
    /// The next sequence number to release; `None` before the first packet.
    next: Option<u64>,
    highest: u64,
    /// Since when (caller's time) the packet at `next` has been missing.
    gap_since: Option<u64>,
}

impl Jitter {
    pub fn new(cfg: Config) -> Self {
        Jitter {
            cfg,
            held: BTreeMap::new(),
            bytes: 0,
            next: None,
            highest: 0,
            gap_since: None,
        }
    }

    /// Forgets everything: the next packet starts a new sequence.
    pub fn reset(&mut self) {
        *self = Jitter::new(self.cfg);
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn push(
        &mut self,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        arrival_us: u64,
    ) -> Admit {
        let ext = match self.next {
            None => {
                // Room below the first packet, for ones that were reordered before it.
                let first = (1u64 << 16) + u64::from(seq);
                self.highest = first;
                self.next = Some(first);
                first
            }
            Some(_) => {
                let d = i64::from(seq.wrapping_sub(self.highest as u16) as i16);
                match self.highest.checked_add_signed(d) {
                    Some(e) => e,
                    None => return Admit::TooOld,
                }
            }
        };
        if self.next.is_some_and(|n| ext < n) {
            return Admit::TooOld;
        }
        if self.held.contains_key(&ext) {
            return Admit::Duplicate;
        }
        self.highest = self.highest.max(ext);
        self.bytes += payload.len();
        self.held.insert(
            ext,
            Packet {
                seq: ext,
                ts,
                marker,
                payload: payload.to_vec(),
                arrival_us,
            },
        );
        Admit::Held
    }

    /// The next packet in order, or a gap given up on at `now_us`; `None` while waiting.
    pub fn pop(&mut self, now_us: u64) -> Option<Released> {
        self.release(now_us, false)
    }

    /// Like [`Jitter::pop`], but gaps are not waited for (the end of the recording).
    pub fn drain(&mut self) -> Option<Released> {
        self.release(0, true)
    }

    fn release(&mut self, now_us: u64, force: bool) -> Option<Released> {
        let next = self.next?;
        let (&first, oldest) = self.held.first_key_value()?;
        if first == next {
            let p = self.held.remove(&first)?;
            self.bytes -= p.payload.len();
            self.next = Some(next + 1);
            self.gap_since = None;
            return Some(Released::Packet(p));
        }
        let since = *self.gap_since.get_or_insert(now_us);
        let newest_ts = self.held.last_key_value().map_or(oldest.ts, |(_, p)| p.ts);
        let span = newest_ts.wrapping_sub(oldest.ts) as i32;
        let over = force
            || self.held.len() >= self.cfg.max_packets
            || self.bytes > self.cfg.max_bytes
            || span > self.cfg.max_span as i32
            || self.highest - next >= self.cfg.max_packets as u64
            || now_us.saturating_sub(since) >= self.cfg.timeout_us;
        if !over {
            return None;
        }
        self.next = Some(first);
        self.gap_since = None;
        Some(Released::Lost(first - next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jb() -> Jitter {
        Jitter::new(Config::for_clock(90_000))
    }

    fn seqs(j: &mut Jitter, now: u64) -> Vec<i64> {
        let mut v = Vec::new();
        while let Some(r) = j.pop(now) {
            match r {
                Released::Packet(p) => v.push((p.seq & 0xffff) as i64),
                Released::Lost(n) => v.push(-(n as i64)),
            }
        }
        v
    }

    #[test]
    fn reorders_within_the_window() {
        let mut j = jb();
        j.push(10, 0, false, b"a", 0);
        assert_eq!(seqs(&mut j, 0), vec![10]);
        j.push(12, 0, false, b"c", 1);
        assert!(seqs(&mut j, 1).is_empty());
        j.push(11, 0, false, b"b", 2);
        assert_eq!(seqs(&mut j, 2), vec![11, 12]);
    }

    #[test]
    fn duplicates_and_old_packets_are_refused() {
        let mut j = jb();
        j.push(5, 0, false, b"a", 0);
        j.push(7, 0, false, b"a", 0);
        assert_eq!(j.push(7, 0, false, b"a", 0), Admit::Duplicate);
        seqs(&mut j, 0);
        assert_eq!(j.push(5, 0, false, b"a", 0), Admit::TooOld);
        assert_eq!(j.push(4, 0, false, b"a", 0), Admit::TooOld);
    }

    #[test]
    fn a_gap_is_skipped_after_the_timeout() {
        let mut j = jb();
        j.push(1, 0, false, b"a", 0);
        j.push(3, 0, false, b"c", 1000);
        assert_eq!(seqs(&mut j, 1000), vec![1]);
        assert!(seqs(&mut j, 100_000).is_empty());
        assert_eq!(seqs(&mut j, 201_000), vec![-1, 3]);
        // The lost one arriving late is too old.
        assert_eq!(j.push(2, 0, false, b"b", 300_000), Admit::TooOld);
    }

    #[test]
    fn a_gap_is_skipped_when_over_the_bounds() {
        let mut j = jb();
        j.push(0, 0, false, b"a", 0);
        for s in 2..514u16 {
            j.push(s, 0, false, b"x", 0);
        }
        let out = seqs(&mut j, 0);
        assert_eq!(out.get(..3), Some(&[0, -1, 2][..]));
        // Media time: over one second of timestamps held.
        let mut j = jb();
        j.push(0, 0, false, b"a", 0);
        j.push(2, 0, false, b"c", 0);
        assert_eq!(seqs(&mut j, 0), vec![0]);
        j.push(3, 90_001, false, b"d", 0);
        assert_eq!(seqs(&mut j, 0), vec![-1, 2, 3]);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut j = jb();
        let mut got = Vec::new();
        for s in [65534u16, 65535, 1, 0, 2] {
            j.push(s, 0, false, b"x", 0);
            got.extend(seqs(&mut j, 0));
        }
        assert_eq!(got, vec![65534, 65535, 0, 1, 2]);
    }

    #[test]
    fn drain_gives_up_on_gaps() {
        let mut j = jb();
        j.push(1, 0, false, b"a", 0);
        j.push(4, 0, false, b"a", 0);
        let mut v = Vec::new();
        while let Some(r) = j.drain() {
            v.push(r);
        }
        assert_eq!(v.len(), 3);
        assert_eq!(v[1], Released::Lost(2));
        assert!(j.is_empty());
    }
}
