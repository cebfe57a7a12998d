//! `NewReno` as specified for QUIC by RFC 9002 §7 and its Appendix B pseudocode.

use std::time::Instant;

use super::{Controller, clamp_mss, in_recovery, initial_window, minimum_window};
use crate::rtt::RttEstimator;

/// RFC 9002 §7.3.2: kLossReductionFactor = 0.5.
const LOSS_REDUCTION_DIVISOR: u64 = 2;

/// `NewReno` congestion control (RFC 9002 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewReno {
    /// `congestion_window`, bytes.
    window: u64,
    /// ssthresh, bytes; `u64::MAX` until the first congestion event (RFC 9002 §7.3.1).
    ssthresh: u64,
    /// Bytes acked in congestion avoidance since the window last grew by one `mss`.
    avoidance_acked: u64,
    /// `congestion_recovery_start_time` (RFC 9002 §7.3.2).
    recovery_start: Option<Instant>,
    /// Maximum datagram size, bytes.
    mss: u64,
}

impl NewReno {
    /// A controller in slow start with the RFC 9002 §7.2 initial window.
    #[must_use]
    pub fn new(mss: u64) -> Self {
        let mss = clamp_mss(mss);
        Self {
            window: initial_window(mss),
            ssthresh: u64::MAX,
            avoidance_acked: 0,
            recovery_start: None,
            mss,
        }
    }

    /// The slow start threshold (`u64::MAX` before the first congestion event).
    #[must_use]
    pub fn ssthresh(&self) -> u64 {
        self.ssthresh
    }

    /// Whether a packet sent at `sent` belongs to the current recovery period.
    #[must_use]
    pub fn in_recovery(&self, sent: Instant) -> bool {
        in_recovery(self.recovery_start, sent)
    }
}

impl Controller for NewReno {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, _bytes_in_flight: u64) {}

    fn on_ack(
        &mut self,
        _now: Instant,
        sent: Instant,
        bytes: u64,
        _rtt: &RttEstimator,
        app_limited: bool,
    ) {
        // RFC 9002 §7.3.2: no increase for packets sent during recovery; the period ends
        // with the first ack of a packet sent after it started.
        if self.in_recovery(sent) {
            return;
        }
        // RFC 9002 §7.8: do not grow the window when it was not the limit.
        if app_limited {
            return;
        }
        if self.window < self.ssthresh {
            // RFC 9002 §7.3.1: slow start grows by the acked bytes (doubles per RTT).
            self.window = self.window.saturating_add(bytes);
        } else {
            // RFC 9002 §7.3.3: congestion avoidance grows by one mss per window acked.
            self.avoidance_acked = self.avoidance_acked.saturating_add(bytes);
            if self.avoidance_acked >= self.window {
                self.avoidance_acked -= self.window;
                self.window = self.window.saturating_add(self.mss);
            }
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        _lost_bytes: u64,
        persistent: bool,
    ) {
        // RFC 9002 §7.3.2 / Appendix B.6: one reduction per recovery period.
        if !self.in_recovery(sent) {
            self.recovery_start = Some(now);
            self.ssthresh = (self.window / LOSS_REDUCTION_DIVISOR).max(minimum_window(self.mss));
            self.window = self.ssthresh;
            self.avoidance_acked = 0;
        }
        // RFC 9002 §7.6.2: persistent congestion collapses the window to the minimum and
        // ends recovery, so the next ack starts slow start again up to ssthresh.
        if persistent {
            self.window = minimum_window(self.mss);
            self.recovery_start = None;
            self.avoidance_acked = 0;
        }
    }

    fn window(&self) -> u64 {
        self.window
    }
}

#[cfg(test)]
#[expect(
    clippy::unchecked_time_subtraction,
    reason = "test instants stay after Instant::now()"
)]
mod tests {
    use super::*;
    use core::time::Duration;

    const MSS: u64 = 1_000;

    fn rtt() -> RttEstimator {
        RttEstimator::new(
            Duration::from_millis(100),
            Duration::from_millis(20),
            Duration::ZERO,
        )
    }

    /// One RTT round: every datagram of the current window sent at `sent` and acked at `now`.
    fn round(c: &mut NewReno, sent: Instant, now: Instant) {
        let packets = c.window() / MSS;
        for _ in 0..packets {
            c.on_ack(now, sent, MSS, &rtt(), false);
        }
    }

    #[test]
    fn slow_start_doubles_per_rtt() {
        let t0 = Instant::now();
        let mut c = NewReno::new(MSS);
        assert_eq!(c.window(), 10 * MSS);
        for i in 1..=4u32 {
            let at = t0 + Duration::from_millis(100) * i;
            round(&mut c, at - Duration::from_millis(100), at);
            assert_eq!(c.window(), (10 << i) * MSS);
        }
    }

    #[test]
    fn loss_halves_once_per_recovery_period() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = NewReno::new(MSS);
        round(&mut c, t0, t0 + ms(100)); // 20 datagrams
        c.on_congestion_event(t0 + ms(150), t0 + ms(100), MSS, false);
        assert_eq!((c.window(), c.ssthresh()), (10 * MSS, 10 * MSS));
        // More losses of packets sent before recovery began: no further reduction.
        c.on_congestion_event(t0 + ms(160), t0 + ms(140), 3 * MSS, false);
        c.on_congestion_event(t0 + ms(170), t0 + ms(150), MSS, false);
        assert_eq!(c.window(), 10 * MSS);
        // Acks of packets sent during recovery do not grow the window.
        c.on_ack(t0 + ms(200), t0 + ms(120), MSS, &rtt(), false);
        assert_eq!(c.window(), 10 * MSS);
        // A loss of a packet sent after recovery began starts a new period.
        c.on_congestion_event(t0 + ms(300), t0 + ms(151), MSS, false);
        assert_eq!(c.window(), 5 * MSS);
        // Never below the minimum window.
        for i in 0..10 {
            c.on_congestion_event(t0 + ms(400 + 100 * i), t0 + ms(399 + 100 * i), MSS, false);
        }
        assert_eq!(c.window(), 2 * MSS);
    }

    #[test]
    fn congestion_avoidance_adds_one_mss_per_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = NewReno::new(MSS);
        c.on_congestion_event(t0, t0, MSS, false); // window = ssthresh = 5
        assert_eq!(c.window(), 5 * MSS);
        for i in 1..=5u32 {
            let at = t0 + ms(100) * i;
            round(&mut c, at - ms(50), at);
            assert_eq!(c.window(), (5 + u64::from(i)) * MSS);
        }
    }

    #[test]
    fn app_limited_acks_do_not_grow() {
        let t0 = Instant::now();
        let mut c = NewReno::new(MSS);
        c.on_ack(t0 + Duration::from_millis(100), t0, MSS, &rtt(), true);
        assert_eq!(c.window(), 10 * MSS);
    }

    #[test]
    fn persistent_congestion_collapses_then_slow_starts_to_ssthresh() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = NewReno::new(MSS);
        round(&mut c, t0, t0 + ms(100)); // 20
        round(&mut c, t0 + ms(100), t0 + ms(200)); // 40
        c.on_congestion_event(t0 + ms(2_000), t0 + ms(1_900), 40 * MSS, true);
        assert_eq!((c.window(), c.ssthresh()), (2 * MSS, 20 * MSS));
        // The recovery period ended: acks of new packets slow start again.
        c.on_ack(t0 + ms(2_100), t0 + ms(2_000), MSS, &rtt(), false);
        assert_eq!(c.window(), 3 * MSS);
    }
}
