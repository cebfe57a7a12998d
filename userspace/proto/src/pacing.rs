//! Pacing (RFC 9002 §7.7): spread a congestion window over the RTT instead of sending it
//! in one burst, through a token bucket filled at `N * cwnd / smoothed_rtt` with N = 1.25.

use core::time::Duration;
use std::time::Instant;

/// Pacing gain `N` of RFC 9002 §7.7, as the fraction `NUMERATOR / DENOMINATOR` = 1.25:
/// pacing slightly faster than cwnd/RTT keeps the window, not the pacer, the limit.
const GAIN_NUMERATOR: u128 = 5;
/// Denominator of the pacing gain.
const GAIN_DENOMINATOR: u128 = 4;

/// The bucket holds what the pacing rate earns in this interval (quinn and Linux's fq use
/// a few ms too), so a sender woken late by a coarse timer can catch up a little.
const BURST_INTERVAL: Duration = Duration::from_millis(2);

/// The bucket always holds at least two datagrams, so that a paced sender never has to
/// wake for every single datagram at low rates.
const MIN_BURST_DATAGRAMS: u64 = 2;

/// RFC 9002 §7.7: "senders SHOULD limit bursts to the initial congestion window", which
/// is ten datagrams (§7.2).
const MAX_BURST_DATAGRAMS: u64 = 10;

/// Nanoseconds in a second.
const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// A pacing rate as a fraction: `bytes` per `nanos` nanoseconds (both non-zero).
#[derive(Clone, Copy, Debug)]
struct Rate {
    bytes: u128,
    nanos: u128,
}

/// A token-bucket pacer for one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacer {
    /// Bytes that may be sent now (at most ten datagrams of at most 65,535 bytes, so a
    /// u32 holds it: the pacer is part of every connection's 432 bytes).
    tokens: u32,
    /// The instant up to which the rate has been credited into `tokens`; `None` before
    /// first use, when the bucket starts full.
    last: Option<Instant>,
    /// The maximum datagram size, in bytes.
    mss: u16,
}

const _: () = assert!(size_of::<Pacer>() <= 24);

impl Pacer {
    /// A pacer for datagrams of at most `mss` bytes (saturating at 65,535, the largest
    /// UDP payload).
    #[must_use]
    pub fn new(mss: u64) -> Self {
        Self {
            tokens: 0,
            last: None,
            mss: u16::try_from(mss).unwrap_or(u16::MAX).max(1),
        }
    }

    /// When a datagram of `bytes` may leave under a congestion `window` and `smoothed_rtt`:
    /// `None` if it may leave now, else the instant at which it may. Credits the time
    /// elapsed since the last call; call [`Pacer::on_sent`] when the datagram is sent.
    pub fn delay(
        &mut self,
        now: Instant,
        bytes: u64,
        window: u64,
        smoothed_rtt: Duration,
    ) -> Option<Instant> {
        let rtt = smoothed_rtt.as_nanos();
        if rtt == 0 || window == 0 {
            // No RTT to spread over (or nothing to pace): the window alone limits.
            return None;
        }
        let window = u128::from(window);
        // RFC 9002 §7.7: rate = N * cwnd / smoothed_rtt (bytes per nanosecond here).
        let rate = Rate {
            bytes: GAIN_NUMERATOR * window,
            nanos: GAIN_DENOMINATOR * rtt,
        };
        self.delay_at(now, bytes, rate, self.capacity(window, rtt))
    }

    /// As [`Pacer::delay`], at `rate` bytes per second given by the congestion controller
    /// (a model-based one such as BBR sets the rate itself, not through cwnd and RTT).
    pub fn delay_at_rate(&mut self, now: Instant, bytes: u64, rate: u64) -> Option<Instant> {
        if rate == 0 {
            return None;
        }
        let per_second = Rate {
            bytes: u128::from(rate),
            nanos: NANOS_PER_SECOND,
        };
        // What the rate earns in the burst interval, as `capacity` does for a window.
        let earned = u128::from(rate) * BURST_INTERVAL.as_nanos() / NANOS_PER_SECOND;
        let mss = u64::from(self.mss);
        let capacity = u64::try_from(earned)
            .unwrap_or(u64::MAX)
            .clamp(MIN_BURST_DATAGRAMS * mss, MAX_BURST_DATAGRAMS * mss);
        self.delay_at(now, bytes, per_second, capacity)
    }

    /// The token bucket at `rate`, holding at most `capacity` bytes.
    fn delay_at(&mut self, now: Instant, bytes: u64, rate: Rate, capacity: u64) -> Option<Instant> {
        // A datagram larger than the burst allowance still goes, alone, when the bucket
        // is full.
        let capacity = capacity.max(bytes);
        let mut tokens = u64::from(self.tokens);
        match self.last {
            None => {
                tokens = capacity;
                self.last = Some(now);
            }
            Some(last) => {
                let elapsed = now.saturating_duration_since(last).as_nanos();
                let earned = elapsed.saturating_mul(rate.bytes) / rate.nanos;
                let room = u128::from(capacity.saturating_sub(tokens));
                if earned >= room {
                    tokens = capacity;
                    self.last = Some(now);
                } else {
                    // Advance only by the time the whole bytes credited took, so that the
                    // fractions of a byte are not lost between frequent calls.
                    let used = earned.saturating_mul(rate.nanos).div_ceil(rate.bytes);
                    tokens += earned as u64;
                    self.last = Some(later(last, used));
                }
            }
        }
        // At most ten datagrams of at most 65,535 bytes (or one datagram): within u32.
        self.tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
        if tokens >= bytes {
            return None;
        }
        let missing = u128::from(bytes - tokens);
        let wait = missing.saturating_mul(rate.nanos).div_ceil(rate.bytes);
        // INVARIANT: `last` was set above.
        let from = self.last.unwrap_or(now);
        Some(later(from, wait).max(now))
    }

    /// Takes `bytes` out of the bucket for a datagram sent at `now`.
    ///
    /// Before first use the bucket is full but its size is not known yet (it depends on
    /// the window and RTT [`Pacer::delay`] is given), so a datagram sent without asking —
    /// a probe or the ping that confirms a handshake — leaves it untouched: charging it to
    /// an empty bucket made the connection's first message wait a whole datagram's worth
    /// of the initial rate (8 ms at 12,000 B per 100 ms).
    pub fn on_sent(&mut self, _now: Instant, bytes: u64) {
        if self.last.is_some() {
            self.tokens = self
                .tokens
                .saturating_sub(u32::try_from(bytes).unwrap_or(u32::MAX));
        }
    }

    /// The burst allowance for this window and RTT, in bytes.
    fn capacity(&self, window: u128, rtt_nanos: u128) -> u64 {
        let mss = u64::from(self.mss);
        let earned = window * BURST_INTERVAL.as_nanos() / rtt_nanos;
        u64::try_from(earned)
            .unwrap_or(u64::MAX)
            .clamp(MIN_BURST_DATAGRAMS * mss, MAX_BURST_DATAGRAMS * mss)
    }
}

/// `at` plus `nanos`, saturating at `u64::MAX` nanoseconds (584 years) and, should the
/// platform's `Instant` not reach that far, at `at` plus a year.
fn later(at: Instant, nanos: u128) -> Instant {
    let d = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    at.checked_add(d)
        .or_else(|| at.checked_add(Duration::from_hours(24 * 365)))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSS: u64 = 1_200;

    /// Sends `mss` datagrams as fast as the pacer allows from `start` until `end`,
    /// returning the send instants.
    fn drain(
        pacer: &mut Pacer,
        start: Instant,
        end: Instant,
        window: u64,
        rtt: Duration,
    ) -> Vec<Instant> {
        let mut now = start;
        let mut sent = Vec::new();
        while now < end {
            match pacer.delay(now, MSS, window, rtt) {
                None => {
                    pacer.on_sent(now, MSS);
                    sent.push(now);
                }
                Some(at) => {
                    assert!(at > now, "a delay must lie in the future");
                    now = at;
                }
            }
        }
        sent
    }

    #[test]
    fn spacing_is_rtt_over_gain_times_window() {
        // cwnd 10 datagrams, srtt 100 ms: rate = 1.25 * 12000 B / 0.1 s = 150 kB/s, so one
        // 1200-byte datagram every 8 ms after an initial burst of max(2 ms worth, 2) = 2.
        let mut pacer = Pacer::new(MSS);
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let sent = drain(&mut pacer, t0, t0 + Duration::from_secs(1), 10 * MSS, rtt);
        assert_eq!(sent[0], t0);
        assert_eq!(sent[1], t0);
        for pair in sent[2..].windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(8));
        }
        assert_eq!(sent[2] - t0, Duration::from_millis(8));
        // 2 at t0, then one each 8 ms up to 992 ms: 2 + 124.
        assert_eq!(sent.len(), 126);
    }

    #[test]
    fn a_datagram_sent_before_first_use_leaves_the_bucket_full() {
        // A connection's first eliciting packet may go out unasked (a probe, the ping that
        // confirms the handshake); its first message must not then wait 8 ms for credit.
        let mut pacer = Pacer::new(MSS);
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        pacer.on_sent(t0, MSS);
        assert_eq!(pacer.delay(t0, MSS, 10 * MSS, rtt), None);
        pacer.on_sent(t0, MSS);
        assert_eq!(
            pacer.delay(t0, MSS, 10 * MSS, rtt),
            None,
            "two datagrams a burst"
        );
        pacer.on_sent(t0, MSS);
        assert_eq!(
            pacer.delay(t0, MSS, 10 * MSS, rtt),
            Some(t0 + Duration::from_millis(8))
        );
    }

    #[test]
    fn burst_is_bounded_by_initial_window() {
        // A huge window over a short RTT earns more than ten datagrams per 2 ms, but the
        // bucket holds at most ten (RFC 9002 §7.7).
        let mut pacer = Pacer::new(MSS);
        let t0 = Instant::now();
        let rtt = Duration::from_millis(1);
        let mut burst = 0;
        while pacer.delay(t0, MSS, 1_000 * MSS, rtt).is_none() {
            pacer.on_sent(t0, MSS);
            burst += 1;
        }
        assert_eq!(burst, 10);
        // After a long idle period the bucket is full again, not larger.
        let later = t0 + Duration::from_secs(5);
        let mut burst = 0;
        while pacer.delay(later, MSS, 1_000 * MSS, rtt).is_none() {
            pacer.on_sent(later, MSS);
            burst += 1;
        }
        assert_eq!(burst, 10);
    }

    #[test]
    fn frequent_polls_lose_no_credit() {
        // Polling every 1 µs, where each poll earns a fraction of a byte, must still reach
        // the same rate as sleeping until the returned instant.
        let mut pacer = Pacer::new(MSS);
        let t0 = Instant::now();
        let rtt = Duration::from_millis(100);
        let window = 10 * MSS;
        let mut now = t0;
        let mut sent = 0;
        let end = t0 + Duration::from_millis(100);
        while now < end {
            if pacer.delay(now, MSS, window, rtt).is_none() {
                pacer.on_sent(now, MSS);
                sent += 1;
            }
            now += Duration::from_micros(1);
        }
        // 2 at t0 and one each 8 ms up to 96 ms.
        assert_eq!(sent, 14);
    }

    #[test]
    fn a_controller_rate_spaces_datagrams_by_size_over_rate() {
        // 150 kB/s, as in `spacing_is_rtt_over_gain_times_window`, but given directly:
        // the same 8 ms spacing after the two-datagram burst.
        let mut pacer = Pacer::new(MSS);
        let t0 = Instant::now();
        let mut now = t0;
        let mut sent = Vec::new();
        while now < t0 + Duration::from_secs(1) {
            match pacer.delay_at_rate(now, MSS, 150_000) {
                None => {
                    pacer.on_sent(now, MSS);
                    sent.push(now);
                }
                Some(at) => now = at,
            }
        }
        assert_eq!(sent.len(), 126);
        for pair in sent[2..].windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(8));
        }
    }

    #[test]
    fn no_rtt_means_no_pacing() {
        let mut pacer = Pacer::new(MSS);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(pacer.delay(t0, MSS, 10 * MSS, Duration::ZERO), None);
            pacer.on_sent(t0, MSS);
        }
    }

    #[test]
    fn oversized_datagram_is_not_starved() {
        let mut pacer = Pacer::new(MSS);
        let t0 = Instant::now();
        let big = 20 * MSS;
        assert_eq!(
            pacer.delay(t0, big, 2 * MSS, Duration::from_millis(10)),
            None
        );
        pacer.on_sent(t0, big);
        let at = pacer
            .delay(t0, big, 2 * MSS, Duration::from_millis(10))
            .expect("bucket empty");
        assert!(
            pacer
                .delay(at, big, 2 * MSS, Duration::from_millis(10))
                .is_none()
        );
    }
}
