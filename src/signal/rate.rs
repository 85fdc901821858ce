//! How many signal requests one session may send: a token bucket per kind (pings apart from the
//! rest), so that one connection cannot make confab answer tens of thousands of requests a
//! second. A session over its rate is closed with a WebSocket close frame (1008, policy
//! violation) whose reason names the limit.

use std::time::Instant;

/// Requests other than pings: sustained per second, and at once. A browser joining sends a few
/// dozen in its first second (tracks, offer, candidates, subscriptions, track settings).
pub const REQUESTS_PER_SECOND: f64 = 50.0;
pub const REQUEST_BURST: f64 = 200.0;
/// Pings (`ping`, `ping_req`): LiveKit clients send one every few seconds.
pub const PINGS_PER_SECOND: f64 = 10.0;
pub const PING_BURST: f64 = 30.0;

/// A token bucket: `burst` at once, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(per_second: f64, burst: f64, now: Instant) -> Bucket {
        Bucket {
            per_second,
            burst,
            tokens: burst,
            at: now,
        }
    }

    pub fn requests(now: Instant) -> Bucket {
        Bucket::new(REQUESTS_PER_SECOND, REQUEST_BURST, now)
    }

    pub fn pings(now: Instant) -> Bucket {
        Bucket::new(PINGS_PER_SECOND, PING_BURST, now)
    }

    /// Takes one token: false when the bucket is empty (the sender is over its rate).
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The close reason for a session over this bucket's rate.
    pub fn reason(&self, what: &str) -> String {
        format!(
            "too many {what}: at most {} per second ({} at once)",
            self.per_second, self.burst
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 30.0, t0);
        assert!((0..30).all(|_| b.take(t0)), "the burst is allowed at once");
        assert!(!b.take(t0), "beyond the burst at once is refused");
        // A tenth of a second later one more token has come back, not more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(b.take(t1));
        assert!(!b.take(t1));
        // At the sustained rate a sender is never refused.
        let mut t = t1;
        for _ in 0..1000 {
            t += Duration::from_millis(100);
            assert!(b.take(t));
        }
        // After a long pause the bucket is full again, and no fuller.
        let later = t + Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(later)).count(), 30);
        assert_eq!(
            b.reason("pings"),
            "too many pings: at most 10 per second (30 at once)"
        );
    }
}
