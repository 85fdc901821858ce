//! Connection quality per participant, sent to every room member as LiveKit's
//! `ConnectionQualityUpdate` every [`QUALITY_INTERVAL`] (livekit-client shows it as
//! `participant.connectionQuality`).
//!
//! Each PeerConnection reports str0m's `PeerStats` once a second ([`STATS_INTERVAL`]): the loss
//! the remote reports about what we send (`egress_loss_fraction`, from RTCP receiver reports),
//! the loss we see on what it sends (`ingress_loss_fraction`), and the round-trip time (RTCP,
//! else the ICE consent checks of the selected pair). Per participant the worse of the two loss
//! figures is smoothed (half the old value, half the new one) over all of its PeerConnections,
//! and the latest round-trip time kept. The rating:
//!
//! | quality | smoothed loss | and round-trip time |
//! |---|---|---|
//! | excellent | < 2 % | < 300 ms |
//! | good | < 8 % | < 600 ms |
//! | poor | < 30 % | any |
//! | lost | ≥ 30 %, or its signal connection is gone (waiting for a resume) | |
//!
//! A participant whose media is not connected yet and who has no figures is not reported (the
//! client keeps "unknown"); a connected one without loss figures yet counts as excellent.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use livekit_protocol as lk;
use lk::signal_response::Message as Resp;
use str0m::stats::PeerStats;

use super::peers::Peers;
use super::registry::Registry;
use super::Pid;

/// How often str0m reports `PeerStats` for each PeerConnection.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How often every participant is told the quality of the room's participants.
pub const QUALITY_INTERVAL: Duration = Duration::from_secs(2);
const LOST_LOSS: f32 = 0.30;

/// What is known about one participant's connection.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Smoothed loss fraction (0..1), if any report came.
    pub loss: Option<f32>,
    pub rtt: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct QualityState {
    next: Option<Instant>,
    samples: HashMap<Pid, Sample>,
}

impl QualityState {
    /// When the next update is due (for `Sfu::poll_timeout`).
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Folds one `PeerStats` of a PeerConnection of `pid` into its sample.
    pub fn record(&mut self, pid: Pid, stats: &PeerStats) {
        let s = self.samples.entry(pid).or_default();
        let loss = match (stats.egress_loss_fraction, stats.ingress_loss_fraction) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .filter(|l| l.is_finite())
        .map(|l| l.clamp(0.0, 1.0));
        if let Some(l) = loss {
            s.loss = Some(match s.loss {
                Some(old) => 0.5 * old + 0.5 * l,
                None => l,
            });
        }
        let rtt = stats.rtt.or_else(|| {
            stats
                .selected_candidate_pair
                .as_ref()
                .and_then(|p| p.current_round_trip_time)
        });
        if rtt.is_some() {
            s.rtt = rtt;
        }
    }

    pub fn sample(&self, pid: Pid) -> Option<Sample> {
        self.samples.get(&pid).copied()
    }
}

/// The rating of a sample, and a score from 1 (bad) to 5 (perfect) for `ConnectionQualityInfo`.
pub fn rate(sample: Sample) -> (lk::ConnectionQuality, f32) {
    let loss = sample.loss.unwrap_or(0.0);
    let rtt_ms = sample.rtt.map_or(0.0, |r| r.as_secs_f32() * 1000.0);
    let score = (5.0 - loss * 12.0 - rtt_ms / 300.0).clamp(1.0, 5.0);
    let quality = if loss >= LOST_LOSS {
        lk::ConnectionQuality::Lost
    } else if loss < 0.02 && rtt_ms < 300.0 {
        lk::ConnectionQuality::Excellent
    } else if loss < 0.08 && rtt_ms < 600.0 {
        lk::ConnectionQuality::Good
    } else {
        lk::ConnectionQuality::Poor
    };
    (quality, score)
}

impl QualityState {
    /// Every [`QUALITY_INTERVAL`]: each room member gets the quality of the room's (visible)
    /// participants.
    /// The updates to send (to whom, what) now; none before the interval is up.
    pub fn updates(&mut self, now: Instant, reg: &Registry, peers: &Peers) -> Vec<(Pid, Resp)> {
        let mut messages = vec![];
        if self.next.is_some_and(|t| t > now) {
            return messages;
        }
        self.next = Some(now + QUALITY_INTERVAL);
        let parts = &reg.parts;
        self.samples.retain(|pid, _| parts.contains_key(pid));
        for room in reg.rooms.values() {
            let infos: Vec<lk::ConnectionQualityInfo> = room
                .participants
                .iter()
                .filter_map(|pid| reg.parts.get(pid))
                .filter(|p| !p.perms.hidden)
                .filter_map(|p| {
                    let connected = [p.publisher, p.subscriber]
                        .iter()
                        .any(|id| peers.get(id).is_some_and(|peer| peer.connected));
                    let sample = self.sample(p.id);
                    let (quality, score) = if p.gone_since.is_some() {
                        (lk::ConnectionQuality::Lost, 1.0)
                    } else if connected || sample.is_some() {
                        rate(sample.unwrap_or_default())
                    } else {
                        return None;
                    };
                    Some(lk::ConnectionQualityInfo {
                        participant_sid: p.sid.clone(),
                        quality: quality as i32,
                        score,
                    })
                })
                .collect();
            if infos.is_empty() {
                continue;
            }
            let msg = Resp::ConnectionQuality(lk::ConnectionQualityUpdate { updates: infos });
            for pid in &room.participants {
                if reg.parts.get(pid).is_some_and(|p| p.gone_since.is_none()) {
                    messages.push((*pid, msg.clone()));
                }
            }
        }
        messages
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn ms(v: u64) -> Option<Duration> {
        Some(Duration::from_millis(v))
    }

    #[test]
    fn loss_and_round_trip_time_rate_the_connection() {
        let q = |loss: f32, rtt| {
            rate(Sample {
                loss: Some(loss),
                rtt,
            })
            .0
        };
        assert_eq!(rate(Sample::default()).0, lk::ConnectionQuality::Excellent);
        assert_eq!(q(0.0, ms(20)), lk::ConnectionQuality::Excellent);
        assert_eq!(q(0.05, ms(20)), lk::ConnectionQuality::Good);
        assert_eq!(q(0.0, ms(400)), lk::ConnectionQuality::Good);
        assert_eq!(q(0.12, ms(50)), lk::ConnectionQuality::Poor);
        assert_eq!(q(0.0, ms(900)), lk::ConnectionQuality::Poor);
        assert_eq!(q(0.5, ms(50)), lk::ConnectionQuality::Lost);
        let (_, best) = rate(Sample::default());
        let (_, worse) = rate(Sample {
            loss: Some(0.1),
            rtt: ms(200),
        });
        assert!(best == 5.0 && worse < best && worse >= 1.0);
    }

    fn stats(egress: Option<f32>, ingress: Option<f32>, rtt: Option<Duration>) -> PeerStats {
        PeerStats {
            peer_bytes_rx: 0,
            peer_bytes_tx: 0,
            bytes_rx: 0,
            bytes_tx: 0,
            timestamp: Instant::now(),
            bwe_tx: None,
            egress_loss_fraction: egress,
            ingress_loss_fraction: ingress,
            rtt,
            selected_candidate_pair: None,
        }
    }

    #[test]
    fn the_worse_direction_counts_and_is_smoothed() {
        let mut q = QualityState::default();
        q.record(7, &stats(None, None, None));
        assert_eq!(q.sample(7), Some(Sample::default()), "no figures yet");
        q.record(7, &stats(Some(0.02), Some(0.2), ms(40)));
        assert_eq!(q.sample(7).and_then(|s| s.loss), Some(0.2));
        q.record(7, &stats(Some(0.0), Some(0.0), None));
        let s = q.sample(7).expect("sample");
        assert_eq!(s.loss, Some(0.1), "half old, half new");
        assert_eq!(s.rtt, ms(40), "the last known round-trip time stays");
        q.record(7, &stats(Some(f32::NAN), None, None));
        assert_eq!(
            q.sample(7).and_then(|s| s.loss),
            Some(0.1),
            "NaN is ignored"
        );
    }
}
