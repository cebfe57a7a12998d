//! Round-trip time estimation: RFC 6298 smoothing, RFC 9002 §5 ack-delay handling,
//! a game-suited retransmission timeout and the RFC 9002 §6.2 probe timeout base.
//!
//! Times are kept as integer nanoseconds (and the two configured bounds as microseconds)
//! so that the estimator stays within 48 bytes of connection state.

use core::time::Duration;

/// Timer granularity `G` of RFC 6298 §2 and `kGranularity` of RFC 9002 §6.1.2: 1 ms.
pub const GRANULARITY: Duration = Duration::from_millis(1);

/// Upper bound on the RTO: RFC 6298 §2.5 allows a maximum "at least 60 seconds".
pub const MAX_RTO: Duration = Duration::from_mins(1);

/// `K` of RFC 6298 §2: the RTO allows four variances above the smoothed RTT.
const K: u64 = 4;

/// Smoothed RTT, RTT variance and minimum RTT of one path (RFC 6298, RFC 9002 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RttEstimator {
    /// SRTT in nanoseconds; the initial RTT until the first sample (RFC 9002 §5.3).
    smoothed: u64,
    /// RTTVAR in nanoseconds; half the initial RTT until the first sample.
    var: u64,
    /// The smallest raw sample seen (RFC 9002 §5.2); the initial RTT before any.
    min: u64,
    /// The most recent raw sample; the initial RTT before any.
    latest: u64,
    /// Floor of [`RttEstimator::rto`], in microseconds.
    min_rto_us: u32,
    /// The peer's maximum ack delay, in microseconds (RFC 9002 §5.3 and §6.2.1).
    max_ack_delay_us: u32,
    /// The previous sample less the ack delay the peer reported (capped at its maximum),
    /// in microseconds, saturating just below [`NO_SAMPLE`]; [`NO_SAMPLE`] before any.
    prev_us: u32,
    /// Jitter in nanoseconds (saturating): the mean deviation between consecutive samples
    /// less their reported ack delays, smoothed with gain 1/16 as RFC 3550 §6.4.1 smooths
    /// interarrival jitter.
    jitter: u32,
}

/// [`RttEstimator::prev_us`] before the first sample.
const NO_SAMPLE: u32 = u32::MAX;

const _: () = assert!(size_of::<RttEstimator>() <= 48);

impl RttEstimator {
    /// An estimator before any sample: SRTT = `initial_rtt`, RTTVAR = `initial_rtt` / 2
    /// (RFC 9002 §5.3, RFC 6298 §2.1). `min_rto` and `max_ack_delay` saturate at about
    /// 71 minutes.
    #[must_use]
    pub fn new(initial_rtt: Duration, min_rto: Duration, max_ack_delay: Duration) -> Self {
        let initial = nanos(initial_rtt);
        Self {
            smoothed: initial,
            var: initial / 2,
            min: initial,
            latest: initial,
            min_rto_us: micros_u32(min_rto),
            max_ack_delay_us: micros_u32(max_ack_delay),
            prev_us: NO_SAMPLE,
            jitter: 0,
        }
    }

    /// Takes one RTT sample: `latest` is the time from sending the newest newly acked packet
    /// to receiving its ack, `ack_delay` the delay the peer reported holding that ack.
    pub fn update(&mut self, latest: Duration, ack_delay: Duration) {
        let latest = nanos(latest);
        self.latest = latest;
        let first = self.prev_us == NO_SAMPLE;
        // RFC 9002 §5.2: min_rtt takes the raw sample, never adjusted for ack delay.
        if !first {
            self.min = self.min.min(latest);
        }
        // RFC 9002 §5.3 subtracts the peer's reported delay, capped at max_ack_delay, only
        // if that does not take the sample below min_rtt, else keeps the raw sample. This
        // subtracts all of it and clamps at min_rtt instead (docs/PROTOCOL.md §7.2):
        // - On a LAN the immediate acks behind min_rtt include the peer's wake-up and
        //   processing (tens of µs), so a delayed ack's sample less its delay often lands
        //   a few µs below min_rtt; keeping the raw sample put the whole 5 ms hold into
        //   SRTT for about half the samples (veth: SRTT 2-3 ms over a 30 µs path).
        // - When an ack is lost, the next one answers for the same packet with more delay
        //   than max_ack_delay, all of it real; capping it put the rest into SRTT (+97 %
        //   over a 1 ms path with 5 % loss in the simulator).
        // The cap exists so that a peer cannot talk SRTT down with made-up delays; the
        // clamp keeps that guarantee, as SRTT never goes below min_rtt, the smallest raw
        // sample, which no reported delay can lower.
        let ack_delay = nanos(ack_delay);
        let adjusted = if first {
            latest
        } else {
            latest.saturating_sub(ack_delay).max(self.min)
        };
        // Jitter steps between the samples SRTT takes, so the variable hold of a delayed
        // ack does not read as path jitter: J <- J + (|D| - J) / 16.
        let adjusted_us = u32::try_from(adjusted / 1_000)
            .unwrap_or(u32::MAX)
            .min(NO_SAMPLE - 1);
        if !first {
            let d = u64::from(adjusted_us.abs_diff(self.prev_us)) * 1_000;
            let j = u64::from(self.jitter);
            let j = if d >= j {
                j + (d - j) / 16
            } else {
                j - (j - d) / 16
            };
            self.jitter = u32::try_from(j).unwrap_or(u32::MAX);
        }
        self.prev_us = adjusted_us;
        if first {
            // RFC 6298 §2.2 / RFC 9002 §5.3: the first sample sets SRTT = R, RTTVAR = R/2;
            // min_rtt starts at the first sample (RFC 9002 §5.2).
            self.min = latest;
            self.smoothed = latest;
            self.var = latest / 2;
            return;
        }
        // RFC 6298 §2.3 (alpha = 1/8, beta = 1/4), RTTVAR first, from the old SRTT:
        // RTTVAR <- 3/4 RTTVAR + 1/4 |SRTT - R'|;  SRTT <- 7/8 SRTT + 1/8 R'.
        let deviation = self.smoothed.abs_diff(adjusted);
        self.var = (3 * u128::from(self.var) + u128::from(deviation)).div_ceil(4) as u64;
        self.smoothed = (7 * u128::from(self.smoothed) + u128::from(adjusted)).div_ceil(8) as u64;
    }

    /// The smoothed RTT (SRTT).
    #[must_use]
    pub fn smoothed(&self) -> Duration {
        Duration::from_nanos(self.smoothed)
    }

    /// The RTT variance (RTTVAR).
    #[must_use]
    pub fn var(&self) -> Duration {
        Duration::from_nanos(self.var)
    }

    /// The minimum RTT seen (RFC 9002 §5.2); the initial RTT before the first sample.
    #[must_use]
    pub fn min(&self) -> Duration {
        Duration::from_nanos(self.min)
    }

    /// The most recent raw sample; the initial RTT before the first sample.
    #[must_use]
    pub fn latest(&self) -> Duration {
        Duration::from_nanos(self.latest)
    }

    /// Whether at least one sample has been taken.
    #[must_use]
    pub fn has_sample(&self) -> bool {
        self.prev_us != NO_SAMPLE
    }

    /// Jitter: the smoothed difference between consecutive samples, each less the ack
    /// delay the peer reported for it (RFC 3550 §6.4.1's estimator, gain 1/16); zero
    /// before the second sample.
    #[must_use]
    pub fn jitter(&self) -> Duration {
        Duration::from_nanos(u64::from(self.jitter))
    }

    /// The configured floor of [`RttEstimator::rto`].
    #[must_use]
    pub fn min_rto(&self) -> Duration {
        Duration::from_micros(u64::from(self.min_rto_us))
    }

    /// The peer's maximum ack delay this estimator was built with.
    #[must_use]
    pub fn max_ack_delay(&self) -> Duration {
        Duration::from_micros(u64::from(self.max_ack_delay_us))
    }

    /// The retransmission timeout of RFC 6298 §2: `SRTT + max(G, 4 * RTTVAR)`, raised to the
    /// configured minimum (§2.4 says 1 s for TCP; games configure tens of ms) and capped at
    /// [`MAX_RTO`] (§2.5). Exponential backoff (§5.5) is the caller's.
    #[must_use]
    pub fn rto(&self) -> Duration {
        let spread = K.saturating_mul(self.var).max(nanos(GRANULARITY));
        let rto = Duration::from_nanos(self.smoothed.saturating_add(spread));
        rto.max(self.min_rto()).min(MAX_RTO)
    }

    /// The probe timeout to arm, before backoff: [`RttEstimator::pto_base`] raised to the
    /// configured minimum RTO, so that a LAN's sub-millisecond RTT does not fire probes
    /// faster than the game-suited floor. (Persistent congestion keeps the plain base.)
    #[must_use]
    pub fn pto(&self) -> Duration {
        self.pto_base().max(self.min_rto())
    }

    /// The probe timeout before backoff, RFC 9002 §6.2.1:
    /// `smoothed_rtt + max(4 * rttvar, kGranularity) + max_ack_delay`.
    /// Also the base of the persistent congestion duration (RFC 9002 §7.6.1).
    #[must_use]
    pub fn pto_base(&self) -> Duration {
        let spread = K.saturating_mul(self.var).max(nanos(GRANULARITY));
        Duration::from_nanos(
            self.smoothed
                .saturating_add(spread)
                .saturating_add(u64::from(self.max_ack_delay_us) * 1_000),
        )
    }
}

/// A duration in whole nanoseconds, saturating at `u64::MAX` (584 years).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A duration in whole microseconds, saturating at `u32::MAX` (about 71 minutes).
fn micros_u32(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn estimator() -> RttEstimator {
        RttEstimator::new(ms(333), ms(20), ms(25))
    }

    #[test]
    fn before_any_sample_uses_initial_rtt() {
        let r = estimator();
        assert!(!r.has_sample());
        assert_eq!(r.smoothed(), ms(333));
        assert_eq!(r.var(), Duration::from_micros(166_500));
        // RFC 9002 §6.2.2: initial PTO = 333 + 4 * 166.5 + 25 = 1024 ms.
        assert_eq!(r.pto_base(), ms(1_024));
        assert_eq!(r.rto(), ms(999));
    }

    #[test]
    fn jitter_is_the_smoothed_step_between_samples_less_their_ack_delays() {
        let mut r = estimator();
        r.update(ms(10), Duration::ZERO);
        assert_eq!(r.jitter(), Duration::ZERO, "one sample has no jitter");
        // One step of 16 ms: J = 16/16 = 1 ms.
        r.update(ms(26), Duration::ZERO);
        assert_eq!(r.jitter(), ms(1));
        // The path alternates 10 and 12 ms, its acks held 5 ms and 0 ms in turn: each
        // step is 2 ms, so J converges on 2 ms from above.
        for i in 0..400 {
            if i % 2 == 0 {
                r.update(ms(15), ms(5));
            } else {
                r.update(ms(12), Duration::ZERO);
            }
        }
        let j = r.jitter().as_micros();
        assert!((1_990..2_010).contains(&j), "jitter {j} µs");
        // A steady path whose ack delays vary (capped at max_ack_delay, 25 ms) has none.
        let mut r = estimator();
        for i in 0..400u64 {
            r.update(ms(20 + i % 7), ms(i % 7));
        }
        r.update(ms(45), ms(40));
        assert_eq!(r.jitter().as_micros(), 0, "only ack delay varied");
    }

    #[test]
    fn rfc6298_sequence_by_hand() {
        let mut r = RttEstimator::new(ms(333), ms(20), ms(25));
        // First sample 100 ms: SRTT = 100, RTTVAR = 50, RTO = 100 + 4*50 = 300.
        r.update(ms(100), Duration::ZERO);
        assert!(r.has_sample());
        assert_eq!((r.smoothed(), r.var(), r.rto()), (ms(100), ms(50), ms(300)));
        // R' = 180: RTTVAR = 3/4*50 + 1/4*80 = 57.5; SRTT = 7/8*100 + 180/8 = 110.
        r.update(ms(180), Duration::ZERO);
        assert_eq!(r.var(), Duration::from_micros(57_500));
        assert_eq!(r.smoothed(), ms(110));
        assert_eq!(r.rto(), ms(340));
        // R' = 30: RTTVAR = 3/4*57.5 + 1/4*80 = 63.125; SRTT = 7/8*110 + 30/8 = 100.
        r.update(ms(30), Duration::ZERO);
        assert_eq!(r.var(), Duration::from_micros(63_125));
        assert_eq!(r.smoothed(), ms(100));
        assert_eq!(r.rto(), Duration::from_micros(352_500));
        assert_eq!((r.min(), r.latest()), (ms(30), ms(30)));
        // PTO base = 100 + 4*63.125 + 25 = 377.5 ms.
        assert_eq!(r.pto_base(), Duration::from_micros(377_500));
    }

    #[test]
    fn steady_samples_shrink_variance_to_granularity_then_min_rto() {
        let mut r = RttEstimator::new(ms(333), ms(20), Duration::ZERO);
        for _ in 0..200 {
            r.update(ms(8), Duration::ZERO);
        }
        assert_eq!(r.smoothed(), ms(8));
        // RTTVAR decays toward 0 (rounded up to the nanosecond), so 4*RTTVAR < G = 1 ms:
        // SRTT + G = 9 ms, raised to the 20 ms floor.
        assert!(r.var() < Duration::from_micros(250));
        assert_eq!(r.rto(), ms(20));
        assert_eq!(r.pto_base(), ms(9));
        assert_eq!(r.pto(), ms(20));
    }

    #[test]
    fn ack_delay_is_subtracted_but_never_below_min_rtt() {
        let mut r = RttEstimator::new(ms(333), ms(20), ms(25));
        r.update(ms(50), Duration::ZERO);
        // 90 ms with 30 ms of reported delay (more than max_ack_delay, 25: the peer's
        // first ack was lost and this one answers for the same packet): 60 ms.
        r.update(ms(90), ms(30));
        // RTTVAR = 3/4*25 + 1/4*10 = 21.25; SRTT = 7/8*50 + 60/8 = 51.25.
        assert_eq!(r.var(), Duration::from_micros(21_250));
        assert_eq!(r.smoothed(), Duration::from_micros(51_250));
        // A delay claimed beyond the sample itself counts as min_rtt, never less.
        let before = r;
        r.update(ms(90), ms(100));
        let mut at_min = before;
        at_min.update(ms(50), Duration::ZERO);
        assert_eq!((r.smoothed(), r.var()), (at_min.smoothed(), at_min.var()));
        // 60 ms with 20 ms delay: 60 - 20 = 40 < min 50, so the sample counts as min_rtt,
        // 50 ms: never below it, and not the raw 60 ms (which would count the delay).
        let mut r = before;
        r.update(ms(60), ms(20));
        assert_eq!((r.smoothed(), r.var()), (at_min.smoothed(), at_min.var()));
        assert_eq!(r.min(), ms(50));
        assert_eq!(r.latest(), ms(60));
    }

    #[test]
    fn rto_is_capped() {
        let mut r = RttEstimator::new(ms(333), ms(20), ms(25));
        r.update(Duration::from_secs(100), Duration::ZERO);
        assert_eq!(r.rto(), MAX_RTO);
    }
}
