//! The adaptive AIMD of the xrudp design: slow start, congestion avoidance, fast recovery
//! and network probing over a window of 2..=1000 datagrams, with a multiplicative decrease
//! of 0.5 only when the loss rate measured over at least 500 datagrams exceeds 1 %.
//!
//! Games see random loss on Wi-Fi and consumer links that says nothing about congestion;
//! TCP-style controllers halve on every such loss and starve the tick stream. Here a loss
//! counts as congestion only when the measured loss rate says so, while the structure
//! (and the recovery period, RFC 9002 §7.3.2) stays that of RFC 9002 §7 / RFC 5681:
//!
//! - slow start (RFC 9002 §7.3.1): the window grows by the acked bytes until ssthresh;
//! - congestion avoidance (RFC 9002 §7.3.3): one datagram per window acked;
//! - fast recovery (RFC 9002 §7.3.2): after a decrease, no growth and no further decrease
//!   until a datagram sent after the decrease is acked;
//! - network probing: once the window is back above the one at the last decrease (where
//!   the path last overflowed) and [`PROBE_AFTER_ROUNDS`] rounds passed without loss, the
//!   per-round increase doubles each round (1, 2, 4 .. datagrams), to find capacity freed
//!   by other flows or a better route quickly; any loss ends probing.
//!
//! The loss rate is measured in bytes over the last two buckets of at least
//! [`SAMPLE_PACKETS`] datagrams (or a window, if larger), with a denominator of at least
//! [`SAMPLE_PACKETS`] datagrams. That many samples separate a 0.5 % random loss from the
//! 1 % trigger (mean 2.5 against a threshold of 5 per 500), while a real overflow, which
//! loses datagrams every round, crosses it within a few round trips. Losses of datagrams
//! sent before the last decrease are not counted again: that decrease already answered
//! them.
//!
//! Persistent congestion (RFC 9002 §7.6) collapses the window to the minimum regardless
//! of the loss rate: a run of lost datagrams spanning several PTOs is not random loss.

use std::time::Instant;

use super::{Controller, clamp_mss, in_recovery, initial_window, sat32};
use crate::rtt::RttEstimator;

/// The smallest window, in datagrams.
pub const MIN_WINDOW_PACKETS: u64 = 2;
/// The largest window, in datagrams.
pub const MAX_WINDOW_PACKETS: u64 = 1_000;
/// A decrease happens only when lost bytes exceed this percentage of the bytes sent.
pub const LOSS_TRIGGER_PERCENT: u64 = 1;
/// The loss rate is measured over at least this many datagrams' worth of bytes (one
/// measurement bucket is max(this, one window); the rate covers the last two buckets).
pub const SAMPLE_PACKETS: u64 = 500;
/// Loss-free congestion avoidance rounds before probing starts.
pub const PROBE_AFTER_ROUNDS: u8 = 4;
/// Multiplicative decrease factor beta = 1/2, as a divisor.
const BETA_DIVISOR: u32 = 2;
/// The largest per-round increase while probing, in datagrams.
const MAX_PROBE_STEP: u16 = 256;

/// Where the controller is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Exponential growth up to ssthresh.
    SlowStart,
    /// Additive increase of one datagram per round trip.
    CongestionAvoidance,
    /// After a decrease, until a datagram sent after it is acked.
    Recovery,
    /// Accelerating increase after a run of loss-free rounds.
    Probing,
}

/// The adaptive AIMD controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Aimd {
    /// Start of the recovery period (RFC 9002 §7.3.2).
    recovery_start: Option<Instant>,
    /// cwnd, bytes, within 2..=1000 datagrams.
    window: u32,
    /// ssthresh, bytes; `u32::MAX` before the first decrease.
    ssthresh: u32,
    /// Maximum datagram size, bytes.
    mss: u32,
    /// Fractional growth not yet a whole datagram (congestion avoidance and probing).
    growth: u32,
    /// Bytes acked in the current round (one window's worth of acks).
    round_acked: u32,
    /// Bytes delivered and lost in the current measurement bucket.
    delivered: u32,
    /// Bytes lost in the current bucket.
    lost: u32,
    /// Bytes delivered in the previous bucket.
    prev_delivered: u32,
    /// Bytes lost in the previous bucket.
    prev_lost: u32,
    /// The current phase.
    phase: Phase,
    /// Congestion avoidance rounds since the last loss of any kind.
    clean_rounds: u8,
    /// Datagrams added per round while probing.
    probe_step: u16,
}

impl Aimd {
    /// A controller in slow start with the RFC 9002 §7.2 initial window.
    #[must_use]
    pub fn new(mss: u64) -> Self {
        let mss = clamp_mss(mss);
        let window = initial_window(mss).clamp(MIN_WINDOW_PACKETS * mss, MAX_WINDOW_PACKETS * mss);
        Self {
            recovery_start: None,
            window: sat32(window),
            ssthresh: u32::MAX,
            mss: sat32(mss),
            growth: 0,
            round_acked: 0,
            delivered: 0,
            lost: 0,
            prev_delivered: 0,
            prev_lost: 0,
            phase: Phase::SlowStart,
            clean_rounds: 0,
            probe_step: 0,
        }
    }

    /// The slow start threshold (`u64::MAX` before the first decrease).
    #[must_use]
    pub fn ssthresh(&self) -> u64 {
        super::widen_unbounded(self.ssthresh)
    }

    /// Whether a packet sent at `sent` belongs to the current recovery period.
    #[must_use]
    pub fn in_recovery(&self, sent: Instant) -> bool {
        in_recovery(self.recovery_start, sent)
    }

    /// The current phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the loss rate over the last two buckets exceeds the trigger. The
    /// denominator is at least [`SAMPLE_PACKETS`] datagrams, so that right after a reset
    /// a few losses are never "100 %".
    #[must_use]
    pub fn loss_rate_exceeded(&self) -> bool {
        let lost = u64::from(self.lost) + u64::from(self.prev_lost);
        let total = lost + u64::from(self.delivered) + u64::from(self.prev_delivered);
        let floor = SAMPLE_PACKETS * u64::from(self.mss);
        lost * 100 > LOSS_TRIGGER_PERCENT * total.max(floor)
    }

    fn min_window(&self) -> u32 {
        sat32(MIN_WINDOW_PACKETS * u64::from(self.mss))
    }

    fn max_window(&self) -> u32 {
        sat32(MAX_WINDOW_PACKETS * u64::from(self.mss))
    }

    /// Closes the measurement bucket once it holds `max(SAMPLE_PACKETS, window)` bytes.
    fn roll_bucket(&mut self) {
        let size = (SAMPLE_PACKETS * u64::from(self.mss)).max(u64::from(self.window));
        if u64::from(self.delivered) + u64::from(self.lost) >= size {
            self.prev_delivered = self.delivered;
            self.prev_lost = self.lost;
            self.delivered = 0;
            self.lost = 0;
        }
    }

    fn reset_measurement(&mut self) {
        self.delivered = 0;
        self.lost = 0;
        self.prev_delivered = 0;
        self.prev_lost = 0;
    }

    /// Adds `datagrams_per_round` datagrams per window of acked bytes, for `bytes` acked.
    fn grow(&mut self, bytes: u64, datagrams_per_round: u64) {
        let window = u64::from(self.window);
        let earned =
            u64::from(self.growth).saturating_add(bytes.saturating_mul(datagrams_per_round));
        let datagrams = earned / window;
        self.growth = (earned % window) as u32;
        let grown = window.saturating_add(datagrams.saturating_mul(u64::from(self.mss)));
        self.window = sat32(grown.min(u64::from(self.max_window())));
    }

    /// Counts acked bytes into the current round; true when a round completed.
    fn round_done(&mut self, bytes: u64) -> bool {
        let acked = u64::from(self.round_acked).saturating_add(bytes);
        if acked >= u64::from(self.window) {
            self.round_acked = 0;
            true
        } else {
            self.round_acked = sat32(acked);
            false
        }
    }

    fn decrease(&mut self, now: Instant) {
        // RFC 9002 §7.3.2 with beta = 0.5, bounded below by the minimum window.
        self.ssthresh = (self.window / BETA_DIVISOR).max(self.min_window());
        self.window = self.ssthresh;
        self.recovery_start = Some(now);
        self.phase = Phase::Recovery;
        // The loss that triggered this is answered: measure the new window afresh.
        self.reset_measurement();
        self.growth = 0;
        self.round_acked = 0;
        self.clean_rounds = 0;
        self.probe_step = 0;
    }
}

impl Controller for Aimd {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, _bytes_in_flight: u64) {}

    fn on_ack(
        &mut self,
        _now: Instant,
        sent: Instant,
        bytes: u64,
        _rtt: &RttEstimator,
        app_limited: bool,
    ) {
        self.delivered = self.delivered.saturating_add(sat32(bytes));
        self.roll_bucket();
        if self.in_recovery(sent) {
            // RFC 9002 §7.3.2: no growth for datagrams sent before the decrease.
            return;
        }
        if self.phase == Phase::Recovery {
            // The first ack of a datagram sent after the decrease ends recovery.
            self.phase = Phase::CongestionAvoidance;
        }
        if app_limited {
            // RFC 9002 §7.8: the window was not the limit, so acks say nothing about it.
            return;
        }
        match self.phase {
            Phase::SlowStart => {
                // RFC 9002 §7.3.1.
                let grown = u64::from(self.window).saturating_add(bytes);
                self.window = sat32(grown.min(u64::from(self.max_window())));
                if self.window >= self.ssthresh {
                    self.phase = Phase::CongestionAvoidance;
                }
            }
            Phase::CongestionAvoidance => {
                // RFC 9002 §7.3.3: one datagram per round.
                self.grow(bytes, 1);
                if self.round_done(bytes) {
                    self.clean_rounds = self.clean_rounds.saturating_add(1);
                    // Probe only past the window of the last decrease (2 * ssthresh):
                    // below it the path is known to have room, and AIMD refills it.
                    let last_overflow = u64::from(self.ssthresh) * u64::from(BETA_DIVISOR);
                    if self.clean_rounds >= PROBE_AFTER_ROUNDS
                        && u64::from(self.window) >= last_overflow
                    {
                        self.phase = Phase::Probing;
                        self.probe_step = 1;
                    }
                }
            }
            Phase::Probing => {
                self.grow(bytes, u64::from(self.probe_step));
                if self.round_done(bytes) {
                    self.probe_step = (self.probe_step * 2).min(MAX_PROBE_STEP);
                }
            }
            Phase::Recovery => {}
        }
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        lost_bytes: u64,
        persistent: bool,
    ) {
        // Losses of datagrams sent before the last decrease were answered by it.
        if !self.in_recovery(sent) {
            self.lost = self.lost.saturating_add(sat32(lost_bytes));
        }
        let exceeded = self.loss_rate_exceeded();
        self.roll_bucket();
        if persistent {
            // RFC 9002 §7.6.2: minimum window, recovery ends, slow start to ssthresh.
            if !self.in_recovery(sent) {
                self.ssthresh = (self.window / BETA_DIVISOR).max(self.min_window());
            }
            self.window = self.min_window();
            self.recovery_start = None;
            self.phase = Phase::SlowStart;
            self.growth = 0;
            self.round_acked = 0;
            self.clean_rounds = 0;
            self.probe_step = 0;
            self.reset_measurement();
            return;
        }
        if self.in_recovery(sent) {
            // RFC 9002 §7.3.2: one decrease per recovery period.
            return;
        }
        if exceeded {
            self.decrease(now);
            return;
        }
        // Loss below the trigger: no decrease, but it is a sign of the edge of capacity,
        // so probing stops and the loss-free round count starts over.
        self.clean_rounds = 0;
        if self.phase == Phase::Probing {
            self.phase = Phase::CongestionAvoidance;
            self.probe_step = 0;
        }
    }

    fn window(&self) -> u64 {
        u64::from(self.window)
    }
}

#[cfg(test)]
#[expect(
    clippy::unchecked_time_subtraction,
    reason = "test instants start a second after Instant::now()"
)]
mod tests {
    use super::*;
    use core::time::Duration;

    const MSS: u64 = 1_000;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn rtt() -> RttEstimator {
        RttEstimator::new(ms(100), ms(20), Duration::ZERO)
    }

    /// A synthetic flow: each round sends a full window at `now - 100 ms` and acks it at
    /// `now`, except that every `loss_every`-th datagram overall is lost (reported as a
    /// congestion event of its own).
    struct Flow {
        c: Aimd,
        now: Instant,
        count: u64,
        loss_every: u64,
    }

    impl Flow {
        fn new(loss_every: u64) -> Self {
            Self {
                c: Aimd::new(MSS),
                now: Instant::now() + ms(1_000),
                count: 0,
                loss_every,
            }
        }

        fn round(&mut self) {
            self.now += ms(100);
            let sent = self.now - ms(100);
            for _ in 0..self.c.window() / MSS {
                self.count += 1;
                if self.loss_every != 0 && self.count.is_multiple_of(self.loss_every) {
                    self.c.on_congestion_event(self.now, sent, MSS, false);
                } else {
                    self.c.on_ack(self.now, sent, MSS, &rtt(), false);
                }
            }
        }
    }

    #[test]
    fn slow_start_doubles_per_rtt_up_to_the_maximum_window() {
        let mut f = Flow::new(0);
        for i in 1..=6u32 {
            f.round();
            assert_eq!(f.c.window(), (10 << i) * MSS);
            assert_eq!(f.c.phase(), Phase::SlowStart);
        }
        f.round();
        f.round();
        assert_eq!(f.c.window(), MAX_WINDOW_PACKETS * MSS);
    }

    #[test]
    fn random_loss_below_one_percent_never_decreases() {
        // 0.5 % loss, evenly spread: the window still reaches the 1000-datagram cap.
        let mut f = Flow::new(200);
        for _ in 0..20 {
            f.round();
        }
        assert_eq!(f.c.window(), MAX_WINDOW_PACKETS * MSS);
        assert_eq!(f.c.ssthresh(), u64::MAX);
        assert!(f.count > 10_000);
    }

    #[test]
    fn loss_above_one_percent_halves() {
        // 2 % loss, one datagram in 50, in slow start: the measurement floor is 500
        // datagrams, so losses 1 to 5 (5 of 500 = 1 %) are not over the trigger and the
        // sixth (6 of 500) is: the window, 10 + 294 acks = 304, halves once, to 152.
        let t0 = Instant::now() + ms(1_000);
        let now = t0 + ms(100);
        let mut c = Aimd::new(MSS);
        for n in 1..=300u64 {
            if n % 50 == 0 {
                let before = c.window();
                c.on_congestion_event(now, t0, MSS, false);
                let expected = if n < 300 { before } else { before / 2 };
                assert_eq!(c.window(), expected, "loss {}", n / 50);
            } else {
                c.on_ack(now, t0, MSS, &rtt(), false);
            }
        }
        assert_eq!(c.window(), 152 * MSS);
        assert_eq!((c.phase(), c.ssthresh()), (Phase::Recovery, 152 * MSS));

        // Under sustained 2 % loss the window keeps being cut and stays far below the
        // 1000-datagram cap it reaches with 0.5 % loss.
        let mut f = Flow::new(50);
        let mut largest = 0;
        for round in 0..100 {
            f.round();
            if round >= 20 {
                largest = largest.max(f.c.window());
            }
        }
        assert!(largest <= 200 * MSS, "window reached {largest}");
        assert!(f.c.ssthresh() < 100 * MSS);
    }

    #[test]
    fn one_decrease_per_recovery_period() {
        let t0 = Instant::now() + ms(1_000);
        let mut c = Aimd::new(MSS);
        for i in 0..5 {
            c.on_congestion_event(t0 + ms(10), t0 - ms(i), 3 * MSS, false);
        }
        // 3 of 500 is below the trigger, 6 of 500 over it: one decrease, 10 -> 5; the
        // other losses were sent before it, in its recovery period.
        assert_eq!(c.window(), 5 * MSS);
        c.on_ack(t0 + ms(100), t0, MSS, &rtt(), false);
        assert_eq!((c.window(), c.phase()), (5 * MSS, Phase::Recovery));
        // A datagram sent after the decrease ends recovery; the measurement restarted at
        // the decrease, so five new losses are not over 1 % and the sixth is.
        c.on_ack(t0 + ms(110), t0 + ms(11), MSS, &rtt(), false);
        assert_eq!(c.phase(), Phase::CongestionAvoidance);
        for i in 0..5 {
            c.on_congestion_event(t0 + ms(120 + i), t0 + ms(12 + i), MSS, false);
            assert_eq!(c.window(), 5 * MSS, "{} losses of 500", i + 1);
        }
        c.on_congestion_event(t0 + ms(130), t0 + ms(20), MSS, false);
        assert_eq!(c.window(), 2_500, "halved to 2.5 datagrams' worth of bytes");
        // Never below two datagrams.
        for i in 0..10 {
            c.on_congestion_event(
                t0 + ms(200 + 10 * i),
                t0 + ms(199 + 10 * i),
                10 * MSS,
                false,
            );
        }
        assert_eq!(c.window(), MIN_WINDOW_PACKETS * MSS);
    }

    #[test]
    fn persistent_congestion_collapses_regardless_of_rate() {
        let mut f = Flow::new(0);
        for _ in 0..4 {
            f.round();
        }
        assert_eq!(f.c.window(), 160 * MSS);
        let now = f.now + ms(2_000);
        f.c.on_congestion_event(now, now - ms(100), MSS, true);
        assert_eq!(f.c.window(), 2 * MSS);
        assert_eq!(f.c.ssthresh(), 80 * MSS);
        assert_eq!(f.c.phase(), Phase::SlowStart);
        f.now = now;
        while f.c.phase() == Phase::SlowStart {
            f.round();
        }
        assert_eq!(f.c.window(), 80 * MSS);
    }

    #[test]
    fn probing_accelerates_past_the_last_overflow_and_stops_on_loss() {
        let t0 = Instant::now() + ms(1_000);
        let mut c = Aimd::new(MSS);
        c.on_congestion_event(t0, t0, 6 * MSS, false); // 6 of 500: 10 -> 5, recovery
        assert_eq!(c.window(), 5 * MSS);
        let mut f = Flow {
            c,
            now: t0,
            count: 0,
            loss_every: 0,
        };
        let mut windows = Vec::new();
        for _ in 0..11 {
            f.round();
            windows.push(f.c.window() / MSS);
        }
        // Round 1 was sent at the decrease, so it is still recovery. Then one datagram per
        // round, until the window is back at the 10 where the path overflowed, with four
        // loss-free rounds behind it; from there probing adds 1, 2, 4, 8 per round (the
        // round boundary moves with the window, so a step can straddle two rounds).
        assert_eq!(windows, [5, 6, 7, 8, 9, 10, 11, 12, 14, 18, 25]);
        assert_eq!(f.c.phase(), Phase::Probing);
        // One loss below the trigger ends probing without a decrease.
        let sent = f.now;
        f.c.on_congestion_event(f.now + ms(50), sent, MSS, false);
        assert_eq!(f.c.phase(), Phase::CongestionAvoidance);
        assert_eq!(f.c.window(), 25 * MSS);
    }
}
