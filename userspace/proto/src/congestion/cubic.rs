//! CUBIC (RFC 9438), with the recovery period and persistent congestion of RFC 9002 §7.
//!
//! Windows are kept as `u32` bytes (capped at [`MAX_WINDOW`]) and `cwnd_prior` is derived
//! from `ssthresh` (= `cwnd_prior * beta`, RFC 9438 §4.6) so the state fits in 64 bytes.

use core::time::Duration;
use std::time::Instant;

use super::{Controller, clamp_mss, in_recovery, initial_window, minimum_window, sat32};
use crate::rtt::RttEstimator;

/// RFC 9438 §5.1: C = 0.4 (segments per second cubed).
pub const C: f64 = 0.4;

/// RFC 9438 §4.6: `beta_cubic` = 0.7, as a fraction of ten.
const BETA_TENTHS: u64 = 7;

/// RFC 9438 §4.3: `alpha_cubic = 3 * (1 - beta) / (1 + beta)` = 0.9 / 1.7 = 9/17 ...
const ALPHA_NUMERATOR: u64 = 9;
/// ... and once `W_est` reaches `cwnd_prior`, alpha = 1 = 17/17.
const ALPHA_DENOMINATOR: u64 = 17;

/// The largest window CUBIC grows to (128 MiB: 10 Gbit/s over a 100 ms RTT), so that the
/// fixed-point remainders below fit in 32 bits.
pub const MAX_WINDOW: u64 = 1 << 27;

/// CUBIC congestion control (RFC 9438).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cubic {
    /// Start of the recovery period (RFC 9002 §7.3.2).
    recovery_start: Option<Instant>,
    /// Start of the current congestion avoidance stage, `t = 0` of RFC 9438 §4.2;
    /// `None` until the first ack in congestion avoidance.
    epoch_start: Option<Instant>,
    /// cwnd, bytes.
    window: u32,
    /// ssthresh, bytes; `u32::MAX` before the first congestion event.
    ssthresh: u32,
    /// `W_max` (RFC 9438 §4.2), bytes: the window before the last reduction, after fast
    /// convergence (§4.7). 0 after persistent congestion, meaning "the window at the start
    /// of the next stage, with K = 0" (§4.8).
    w_max: u32,
    /// `W_est` (RFC 9438 §4.3), bytes: the window Reno would have in this stage.
    w_est: u32,
    /// K (RFC 9438 §4.2, Figure 2), microseconds.
    k_us: u32,
    /// Remainder of `(target - cwnd) * acked`, not yet a whole byte of window (§4.4).
    window_remainder: u32,
    /// Remainder of `17 * alpha * mss * acked`, not yet a whole byte of `W_est` (§4.3).
    est_remainder: u32,
    /// Maximum datagram size, bytes.
    mss: u32,
}

impl Cubic {
    /// A controller in slow start with the RFC 9002 §7.2 initial window.
    #[must_use]
    pub fn new(mss: u64) -> Self {
        let mss = clamp_mss(mss);
        Self {
            recovery_start: None,
            epoch_start: None,
            window: sat32(initial_window(mss)),
            ssthresh: u32::MAX,
            w_max: 0,
            w_est: 0,
            k_us: 0,
            window_remainder: 0,
            est_remainder: 0,
            mss: sat32(mss),
        }
    }

    /// The slow start threshold (`u64::MAX` before the first congestion event).
    #[must_use]
    pub fn ssthresh(&self) -> u64 {
        super::widen_unbounded(self.ssthresh)
    }

    /// Whether a packet sent at `sent` belongs to the current recovery period.
    #[must_use]
    pub fn in_recovery(&self, sent: Instant) -> bool {
        in_recovery(self.recovery_start, sent)
    }

    /// `W_max` of RFC 9438 §4.2, bytes.
    #[must_use]
    pub fn w_max(&self) -> u64 {
        u64::from(self.w_max)
    }

    /// K of RFC 9438 §4.2 for the current congestion avoidance stage.
    #[must_use]
    pub fn k(&self) -> Duration {
        Duration::from_micros(u64::from(self.k_us))
    }

    /// `W_est` of RFC 9438 §4.3, bytes.
    #[must_use]
    pub fn w_est(&self) -> u64 {
        u64::from(self.w_est)
    }

    /// RFC 9438 §4.2, Figure 1: `W_cubic(t) = C * (t - K)^3 + W_max`, in bytes, with `t`
    /// the time since the start of the congestion avoidance stage.
    #[must_use]
    pub fn w_cubic(&self, t: Duration) -> f64 {
        let offset = t.as_secs_f64() - self.k().as_secs_f64();
        let mss = f64::from(self.mss);
        C * offset * offset * offset * mss + f64::from(self.w_max)
    }

    /// The cwnd before the last reduction: `ssthresh = cwnd_prior * beta` (RFC 9438 §4.6).
    fn cwnd_prior(&self) -> u64 {
        u64::from(self.ssthresh) * 10 / BETA_TENTHS
    }

    /// Starts a congestion avoidance stage at `now` (RFC 9438 §4.2).
    fn start_epoch(&mut self, now: Instant) {
        self.epoch_start = Some(now);
        // §4.8: after a timeout W_max is the window at the start of the stage and K = 0;
        // §4.2: K = cbrt((W_max - cwnd_epoch) / C), in segments and seconds.
        self.w_max = self.w_max.max(self.window);
        let deficit = f64::from(self.w_max - self.window) / f64::from(self.mss);
        let k = (deficit / C).cbrt();
        self.k_us =
            Duration::try_from_secs_f64(k).map_or(u32::MAX, |k| sat32(k.as_micros() as u64));
        // §4.3: W_est starts at cwnd_epoch.
        self.w_est = self.window;
        self.est_remainder = 0;
        self.window_remainder = 0;
    }

    /// One ack in congestion avoidance (RFC 9438 §4.3 to §4.5).
    fn avoid(&mut self, now: Instant, bytes: u64, rtt: Duration) {
        let epoch = self.epoch_start.unwrap_or_else(|| {
            self.start_epoch(now);
            now
        });
        let window = u64::from(self.window);
        let mss = u64::from(self.mss);
        // §4.3: W_est += alpha_cubic * segments_acked / cwnd (here in bytes), with
        // alpha = 9/17 until W_est reaches cwnd_prior, 1 after.
        let alpha = if u64::from(self.w_est) >= self.cwnd_prior() {
            ALPHA_DENOMINATOR
        } else {
            ALPHA_NUMERATOR
        };
        let est = u64::from(self.est_remainder).saturating_add((alpha * mss).saturating_mul(bytes));
        let denominator = ALPHA_DENOMINATOR * window;
        self.w_est = sat32((u64::from(self.w_est) + est / denominator).min(MAX_WINDOW));
        self.est_remainder = (est % denominator) as u32;

        let t = now.saturating_duration_since(epoch);
        if self.w_cubic(t) < f64::from(self.w_est) {
            // §4.3: the Reno-friendly region: cwnd = W_est.
            self.window = self.w_est.max(self.window);
            self.window_remainder = 0;
            return;
        }
        // §4.4 and §4.5: target = W_cubic(t + RTT), clamped to [cwnd, 1.5 cwnd], and
        // cwnd += (target - cwnd) / cwnd per acked segment (here per acked byte).
        let cwnd = f64::from(self.window);
        let target = whole_bytes(self.w_cubic(t + rtt).clamp(cwnd, 1.5 * cwnd));
        let grow = u64::from(self.window_remainder)
            .saturating_add((target - window).saturating_mul(bytes));
        self.window = sat32((window + grow / window).min(MAX_WINDOW));
        self.window_remainder = (grow % window) as u32;
    }
}

impl Controller for Cubic {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, _bytes_in_flight: u64) {}

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        rtt: &RttEstimator,
        app_limited: bool,
    ) {
        // RFC 9002 §7.3.2: no increase for packets sent during recovery.
        if self.in_recovery(sent) {
            return;
        }
        if app_limited {
            // RFC 9438 §5.8: no growth while the application, not cwnd, limits the flow;
            // the next stage starts afresh so `t` does not count the idle time.
            self.epoch_start = None;
            return;
        }
        if self.window < self.ssthresh {
            // RFC 9438 §4.10 / RFC 9002 §7.3.1: slow start.
            self.window = sat32(u64::from(self.window).saturating_add(bytes).min(MAX_WINDOW));
            return;
        }
        self.avoid(now, bytes, rtt.smoothed());
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        _lost_bytes: u64,
        persistent: bool,
    ) {
        if !self.in_recovery(sent) {
            // RFC 9002 §7.3.2: one reduction per recovery period.
            self.recovery_start = Some(now);
            let window = u64::from(self.window);
            // RFC 9438 §4.7: fast convergence releases bandwidth to newer flows when the
            // window did not get back to the previous W_max.
            self.w_max = if self.window < self.w_max {
                sat32(window * (10 + BETA_TENTHS) / 20)
            } else {
                self.window
            };
            // RFC 9438 §4.6: ssthresh = cwnd * beta_cubic, cwnd = max(ssthresh, 2 segments).
            let min = minimum_window(u64::from(self.mss));
            self.ssthresh = sat32((window * BETA_TENTHS / 10).max(min));
            self.window = self.ssthresh;
            self.epoch_start = None;
        }
        if persistent {
            // RFC 9002 §7.6.2 and RFC 9438 §4.8: minimum window; the next stage takes
            // W_max = cwnd at its start and K = 0.
            self.window = sat32(minimum_window(u64::from(self.mss)));
            self.recovery_start = None;
            self.epoch_start = None;
            self.w_max = 0;
        }
    }

    fn window(&self) -> u64 {
        u64::from(self.window)
    }
}

/// A non-negative byte count computed in floating point, truncated to whole bytes.
#[expect(
    clippy::cast_sign_loss,
    reason = "callers clamp to at least the (positive) window"
)]
fn whole_bytes(x: f64) -> u64 {
    x as u64
}

#[cfg(test)]
#[expect(
    clippy::unchecked_time_subtraction,
    reason = "test instants stay after Instant::now()"
)]
#[expect(
    clippy::cast_precision_loss,
    reason = "test windows are far below 2^52"
)]
mod tests {
    use super::*;

    const MSS: u64 = 1_000;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn rtt(v: Duration) -> RttEstimator {
        let mut r = RttEstimator::new(v, ms(20), Duration::ZERO);
        r.update(v, Duration::ZERO);
        r
    }

    /// One RTT round: every segment of the window sent at `now - rtt` and acked at `now`.
    fn round(c: &mut Cubic, now: Instant, rtt: &RttEstimator) {
        let packets = c.window() / MSS;
        for _ in 0..packets {
            c.on_ack(now, now - rtt.smoothed(), MSS, rtt, false);
        }
    }

    /// A controller that grew to `segments` in slow start and then lost once at `t0`.
    fn after_loss_at(segments: u64, t0: Instant) -> Cubic {
        let mut c = Cubic::new(MSS);
        c.window = sat32(segments * MSS);
        c.on_congestion_event(t0, t0 - ms(1), MSS, false);
        c
    }

    #[test]
    fn slow_start_doubles_per_rtt() {
        let r = rtt(ms(100));
        let t0 = Instant::now();
        let mut c = Cubic::new(MSS);
        for i in 1..=3u32 {
            round(&mut c, t0 + ms(100) * i, &r);
            assert_eq!(c.window(), (10 << i) * MSS);
        }
    }

    #[test]
    fn loss_reduces_by_beta_once_per_recovery_period() {
        let t0 = Instant::now() + ms(10);
        let mut c = after_loss_at(100, t0);
        assert_eq!(
            (c.window(), c.ssthresh(), c.w_max()),
            (70 * MSS, 70 * MSS, 100 * MSS)
        );
        c.on_congestion_event(t0 + ms(5), t0, 10 * MSS, false);
        assert_eq!(c.window(), 70 * MSS);
        // A later period: 0.7 again, and fast convergence since 70 < W_max = 100:
        // W_max = 70 * (1 + 0.7) / 2 = 59.5 segments.
        c.on_congestion_event(t0 + ms(200), t0 + ms(100), MSS, false);
        assert_eq!(c.window(), 49 * MSS);
        assert_eq!(c.w_max(), 59_500);
    }

    #[test]
    fn k_and_w_cubic_follow_rfc9438_formula() {
        let t0 = Instant::now() + ms(10);
        let rtt100 = rtt(ms(100));
        let mut c = after_loss_at(1_000, t0);
        // First ack after recovery starts the stage: cwnd_epoch = 700, W_max = 1000
        // segments, K = cbrt((1000 - 700) / 0.4) = cbrt(750) s.
        c.on_ack(t0 + ms(100), t0 + ms(1), MSS, &rtt100, false);
        let k = 750f64.cbrt();
        assert!((c.k().as_secs_f64() - k).abs() < 1e-5, "K = {:?}", c.k());
        assert!((c.w_cubic(Duration::ZERO) - 700_000.0).abs() < 1.0);
        assert!((c.w_cubic(c.k()) - 1_000_000.0).abs() < 1e-3);
        let t = Duration::from_secs(6);
        let expected = 0.4 * (6.0 - k).powi(3) * 1_000.0 + 1_000_000.0;
        assert!((c.w_cubic(t) - expected).abs() < 1.0);

        // Driven by one window of acks per 100 ms, cwnd follows W_cubic (one RTT ahead)
        // through the concave region, the plateau at W_max and the convex region; W_est
        // (0.53 segment per RTT) stays below it all along.
        let epoch = t0 + ms(100);
        let mut now = epoch;
        for checkpoint in [2_000u64, 5_000, 9_090, 12_000, 14_000] {
            while now < epoch + ms(checkpoint) {
                now += ms(100);
                round(&mut c, now, &rtt100);
            }
            let w = c.w_cubic(now - epoch);
            let got = c.window() as f64;
            assert!(
                (got - w).abs() <= 0.01 * w,
                "at {checkpoint} ms: cwnd {got} vs W_cubic {w}"
            );
            assert!(c.w_est() < c.window());
        }
        assert!(
            c.window() > 1_040 * MSS,
            "the convex region probes past W_max"
        );
    }

    #[test]
    fn reno_friendly_region_on_short_rtt() {
        // At a 1 ms RTT Reno gains a segment per ms and outruns W_cubic, so cwnd = W_est.
        let t0 = Instant::now() + ms(10);
        let r = rtt(ms(1));
        let mut c = after_loss_at(100, t0);
        let mut now = t0;
        for _ in 0..100 {
            now += ms(1);
            round(&mut c, now, &r);
        }
        let cubic = c.w_cubic(ms(100));
        assert!(cubic < 75_000.0);
        assert_eq!(c.window(), c.w_est());
        // 57 rounds at alpha 9/17 from 70 to 100 segments, then alpha 1: ~140 segments.
        assert!(
            (130 * MSS..=150 * MSS).contains(&c.window()),
            "cwnd {}",
            c.window()
        );
    }

    #[test]
    fn persistent_congestion_then_k_is_zero() {
        let t0 = Instant::now() + ms(10);
        let r = rtt(ms(100));
        let mut c = after_loss_at(100, t0);
        c.on_congestion_event(t0 + ms(3_000), t0 + ms(2_000), 50 * MSS, true);
        assert_eq!(c.window(), 2 * MSS);
        // Slow start back to ssthresh (49 after the second reduction's 0.7 of 70).
        let mut now = t0 + ms(3_000);
        while c.window() < c.ssthresh() {
            now += ms(100);
            round(&mut c, now, &r);
        }
        now += ms(100);
        round(&mut c, now, &r);
        assert_eq!(c.k(), Duration::ZERO);
        assert!(c.w_max() >= c.ssthresh());
    }

    #[test]
    fn app_limited_acks_do_not_grow() {
        let t0 = Instant::now() + ms(10);
        let r = rtt(ms(100));
        let mut c = after_loss_at(100, t0);
        for i in 0..100 {
            c.on_ack(t0 + ms(100 + i), t0 + ms(1 + i), MSS, &r, true);
        }
        assert_eq!(c.window(), 70 * MSS);
    }
}
