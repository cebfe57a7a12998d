//! A model-based controller after BBR (draft-cardwell-iccrg-bbr-congestion-control-02,
//! "BBRv1", with two BBRv3 elements noted where used): it estimates the path's bottleneck
//! bandwidth and round-trip propagation time from delivery-rate samples
//! ([`super::delivery`]) and paces at the product, instead of inferring congestion from
//! loss.
//!
//! - Bandwidth: the maximum delivery rate over the last 5 to 10 rounds outside PROBE_RTT,
//!   kept as two slots of [`BW_SLOT_ROUNDS`] rounds each (BBRv3 keeps two slots too,
//!   `bw_hi[2]`, and ages them once per probing cycle, so PROBE_RTT does not age them).
//! - Min RTT: the minimum round trip over [`MIN_RTT_WINDOW`]; when it expires, PROBE_RTT.
//! - States: STARTUP (pacing gain 2.77, until the bandwidth grows less than 25 % in three
//!   rounds, or a round loses more than 1 %), DRAIN (pacing gain 0.35, until in flight is
//!   down to one BDP), PROBE_BW (pacing gains 1.25, 0.75, then six times 1, one phase
//!   per min RTT), PROBE_RTT (cwnd cut to ¾ BDP, at least four datagrams, for 200 ms
//!   and a round).
//! - cwnd = 2 × BDP (at least four datagrams), grown towards by acked bytes and cut to
//!   it at once; pacing rate = pacing gain × bandwidth.
//! - Loss: ignored up to 1 % of a round (at least [`LOSS_FLOOR_DATAGRAMS`]); above,
//!   `inflight_hi` = max(1.25 × BDP, 0.7 × cwnd) bounds cwnd (BBRv3's `inflight_hi`,
//!   simplified) and grows by a quarter at each probe up; outside the probe up cwnd stays
//!   15 % under it, but never under one BDP (BBRv3's headroom, which leaves buffer room
//!   for other flows). Persistent congestion (RFC 9002 §7.6.2) drops cwnd to the minimum
//!   window.
//!
//! Instants are kept as 32-bit offsets from the controller's creation so that it fits in
//! 64 bytes, the size of every controller a connection holds inline.

use core::time::Duration;
use std::time::Instant;

use super::delivery::RateSample;
use super::{Controller, clamp_mss, initial_window, minimum_window, sat32};
use crate::rtt::RttEstimator;

/// The largest cwnd (128 MiB: 10 Gbit/s over a 100 ms RTT), as for CUBIC.
pub const MAX_WINDOW: u64 = 1 << 27;

/// STARTUP's pacing gain, 2 / ln 2 = 2.89 in BBRv1, 2.77 in BBRv3 (which found it enough
/// to double the delivery rate each round); in hundredths.
pub const STARTUP_PACING_GAIN: u64 = 277;
/// DRAIN's pacing gain, about 1 / 2.89: empties in a round the queue STARTUP built.
pub const DRAIN_PACING_GAIN: u64 = 35;
/// PROBE_BW's pacing gains, one phase each, in hundredths: probe up by a quarter, then
/// drain what that queued, then cruise.
pub const PROBE_BW_GAINS: [u64; 8] = [125, 75, 100, 100, 100, 100, 100, 100];
/// cwnd gain, in hundredths: two BDPs leave room for delayed and aggregated acks.
pub const CWND_GAIN: u64 = 200;
/// Rounds per slot of the bandwidth filter; the estimate is the maximum of two slots.
/// Rounds in PROBE_RTT do not count: its cut holds delivery down on purpose, and at a
/// 20 ms RTT its 200 ms are ten rounds, which would age the estimate out and leave the
/// flow pacing at the cut's rate for a probing cycle after it (a 1 % goodput loss on a
/// loss-free path in the matrix, docs/PROTOCOL.md §9.1).
pub const BW_SLOT_ROUNDS: u8 = 5;
/// STARTUP ends when the bandwidth has not grown by a quarter in this many rounds.
pub const FULL_BW_ROUNDS: u8 = 3;
/// How long a min RTT sample stands before PROBE_RTT measures it again.
pub const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);
/// How long PROBE_RTT holds cwnd down (at least one round more).
pub const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// A round whose loss exceeds 1 / `LOSS_DIVISOR` of its bytes bounds the window: 1 %, the
/// trigger of the xrudp AIMD. BBRv3's `loss_thresh` is 2 %, but the bound here never goes
/// under a BDP, so the earlier trigger costs no bandwidth; in the CUBIC coexistence test
/// (tests/congestion.rs) it leaves CUBIC 42 % of the link where 2 % left it 27 %.
pub const LOSS_DIVISOR: u64 = 100;
/// The loss rate is taken over at least this many datagrams, so that one loss in a
/// short round (a 5-datagram round at a 1 ms RTT) is not 20 %.
pub const LOSS_FLOOR_DATAGRAMS: u64 = 20;
/// Outside the probe up, cwnd stays at this percentage of the loss bound (BBRv3's 15 %
/// headroom).
pub const HEADROOM_PERCENT: u64 = 85;
/// The smallest cwnd outside persistent congestion, in datagrams (BBR's four packets:
/// enough to keep an ack clock with delayed acks).
pub const MIN_CWND_DATAGRAMS: u64 = 4;

/// Where the controller is in its cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Doubling the rate each round until the bandwidth plateaus.
    Startup {
        /// The bandwidth that the last 25 % growth reached, bytes per second.
        full_bw: u32,
        /// Rounds since it grew by 25 %.
        rounds: u8,
    },
    /// Emptying the queue STARTUP built.
    Drain,
    /// Cycling the pacing gain around the bandwidth estimate.
    ProbeBw {
        /// Index into [`PROBE_BW_GAINS`].
        phase: u8,
        /// When the phase began, microseconds on the controller's clock (wrapping).
        since_us: u32,
    },
    /// Holding cwnd down to measure the min RTT afresh.
    ProbeRtt {
        /// When it may end, milliseconds on the controller's clock.
        until_ms: u32,
        /// A round has ended since it began.
        round_done: bool,
    },
}

/// BBR congestion control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bbr {
    /// The origin of the 32-bit clocks below.
    epoch: Instant,
    /// When the current round began (microseconds, wrapping): a round ends when a
    /// datagram sent at or after it is acknowledged.
    round_start_us: u32,
    /// The bandwidth filter's two slots, bytes per second: the current and the last.
    bw: [u32; 2],
    /// Min RTT, microseconds; `u32::MAX` until the first sample.
    min_rtt_us: u32,
    /// When min RTT was last set, milliseconds.
    min_rtt_stamp_ms: u32,
    /// cwnd, bytes.
    window: u32,
    /// The loss bound on cwnd, bytes; `u32::MAX` while no round has lost over 2 %.
    inflight_hi: u32,
    /// Bytes declared lost in the current round.
    round_lost: u32,
    /// Bytes acknowledged in the current round.
    round_delivered: u32,
    mode: Mode,
    /// Maximum datagram size, bytes.
    mss: u16,
    /// Rounds into the current bandwidth slot.
    slot_rounds: u8,
    /// An ack since the last model update ended the round.
    round_ended: bool,
}

impl Bbr {
    /// A controller in STARTUP with the RFC 9002 §7.2 initial window, created at `now`.
    #[must_use]
    pub fn new(mss: u64, now: Instant) -> Self {
        let mss = clamp_mss(mss);
        Self {
            epoch: now,
            round_start_us: 0,
            bw: [0; 2],
            min_rtt_us: u32::MAX,
            min_rtt_stamp_ms: 0,
            window: sat32(initial_window(mss)),
            inflight_hi: u32::MAX,
            round_lost: 0,
            round_delivered: 0,
            mode: Mode::Startup {
                full_bw: 0,
                rounds: 0,
            },
            mss: u16::try_from(mss).unwrap_or(u16::MAX),
            slot_rounds: 0,
            round_ended: false,
        }
    }

    /// The state.
    #[must_use]
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The bottleneck bandwidth estimate, bytes per second (0 before the first sample).
    #[must_use]
    pub fn bandwidth(&self) -> u64 {
        u64::from(self.bw[0].max(self.bw[1]))
    }

    /// The min RTT estimate; `None` before the first sample.
    #[must_use]
    pub fn min_rtt(&self) -> Option<Duration> {
        (self.min_rtt_us != u32::MAX).then(|| Duration::from_micros(u64::from(self.min_rtt_us)))
    }

    /// The bandwidth-delay product, bytes; `None` until both are measured.
    #[must_use]
    pub fn bdp(&self) -> Option<u64> {
        let bw = self.bandwidth();
        if bw == 0 || self.min_rtt_us == u32::MAX {
            return None;
        }
        Some(bw * u64::from(self.min_rtt_us) / 1_000_000)
    }

    /// The loss bound on cwnd, bytes (`u64::MAX` while unbounded).
    #[must_use]
    pub fn inflight_hi(&self) -> u64 {
        super::widen_unbounded(self.inflight_hi)
    }

    /// The current pacing gain, in hundredths.
    #[must_use]
    pub fn pacing_gain(&self) -> u64 {
        match self.mode {
            Mode::Startup { .. } => STARTUP_PACING_GAIN,
            Mode::Drain => DRAIN_PACING_GAIN,
            Mode::ProbeBw { phase, .. } => PROBE_BW_GAINS[usize::from(phase)],
            Mode::ProbeRtt { .. } => 100,
        }
    }

    /// BBR keeps no slow start threshold.
    #[must_use]
    pub fn ssthresh(&self) -> u64 {
        u64::MAX
    }

    /// BBR has no recovery period: loss does not cut the window per event.
    #[must_use]
    pub fn in_recovery(&self, _sent: Instant) -> bool {
        false
    }

    fn mss(&self) -> u64 {
        u64::from(self.mss)
    }

    /// The cwnd the model asks for now, before the loss bound; `None` without a model.
    fn target(&self) -> Option<u64> {
        let floor = MIN_CWND_DATAGRAMS * self.mss();
        let bdp = self.bdp()?;
        let target = match self.mode {
            // Under one BDP, so the flow's own queue drains and the min RTT is
            // measured; ¾ rather than BBRv2/v3's ½, which cost a loss-free 100 ms path
            // 1 % of its goodput (200 ms at half rate every 10 s) where ¾ costs half that.
            Mode::ProbeRtt { .. } => bdp * 3 / 4,
            _ => bdp * CWND_GAIN / 100,
        };
        Some(target.max(floor))
    }

    /// The cwnd cap: the model's target within the loss bound, never below the floor.
    fn cap(&self) -> Option<u64> {
        let floor = MIN_CWND_DATAGRAMS * self.mss();
        let bdp = self.bdp()?;
        let bound = match self.mode {
            Mode::ProbeBw { phase: 0, .. } => self.inflight_hi(),
            // BBRv3's headroom: outside the probe up, stay 15 % under the loss bound (but
            // not under one BDP), leaving room in the buffer for other flows to grow into.
            _ => (self.inflight_hi().saturating_mul(HEADROOM_PERCENT) / 100).max(bdp),
        };
        self.target()
            .map(|t| t.min(bound).max(floor).min(MAX_WINDOW))
    }

    fn micros(&self, now: Instant) -> u32 {
        // The 32-bit clock wraps every 71 minutes: only differences over shorter spans
        // (rounds, phases) are taken from it.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a wrapping microsecond clock"
        )]
        let us = now.saturating_duration_since(self.epoch).as_micros() as u32;
        us
    }

    fn millis(&self, now: Instant) -> u32 {
        // Wraps every 49 days; the min RTT window is 10 s.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "a wrapping millisecond clock"
        )]
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u32;
        ms
    }

    /// A round ended: the bandwidth filter's slot, STARTUP's plateau and the loss check.
    fn on_round_end(&mut self, sample: Option<&RateSample>) {
        // PROBE_RTT's rounds do not age the bandwidth filter (see BW_SLOT_ROUNDS).
        if !matches!(self.mode, Mode::ProbeRtt { .. }) {
            self.slot_rounds += 1;
        }
        if self.slot_rounds >= BW_SLOT_ROUNDS {
            self.slot_rounds = 0;
            self.bw = [0, self.bw[0]];
        }
        let lost = u64::from(self.round_lost);
        let total = lost + u64::from(self.round_delivered);
        let floor = LOSS_FLOOR_DATAGRAMS * self.mss();
        let high_loss = lost * LOSS_DIVISOR > total.max(floor);
        self.round_lost = 0;
        self.round_delivered = 0;
        if high_loss {
            // BBRv3: bound what is in flight to what went through without heavy loss,
            // but never below 1.25 BDP, so that random loss does not cost bandwidth: at
            // one BDP, any RTT above min RTT would make the next rate samples lower, and
            // the estimate would spiral down.
            let bdp = self.bdp().unwrap_or(0);
            let bound = (u64::from(self.window) * 7 / 10).max(bdp * 5 / 4);
            self.inflight_hi = sat32(bound.max(MIN_CWND_DATAGRAMS * self.mss()));
            if matches!(self.mode, Mode::Startup { .. }) {
                self.mode = Mode::Drain;
                return;
            }
        }
        if let Mode::Startup { full_bw, rounds } = self.mode
            && sample.is_some_and(|s| !s.app_limited)
        {
            let bw = self.bandwidth();
            if bw * 4 >= u64::from(full_bw) * 5 {
                self.mode = Mode::Startup {
                    full_bw: sat32(bw),
                    rounds: 0,
                };
            } else if rounds + 1 >= FULL_BW_ROUNDS {
                self.mode = Mode::Drain;
            } else {
                self.mode = Mode::Startup {
                    full_bw,
                    rounds: rounds + 1,
                };
            }
        }
        if let Mode::ProbeRtt { until_ms, .. } = self.mode {
            self.mode = Mode::ProbeRtt {
                until_ms,
                round_done: true,
            };
        }
    }

    /// Enters a PROBE_BW phase at `now`.
    fn enter_phase(&mut self, now: Instant, phase: u8) {
        if phase == 0 && self.inflight_hi != u32::MAX {
            // Probing up: let the loss bound grow by a quarter, so that a path that
            // stopped losing is found again (BBRv3 raises `inflight_hi` while probing).
            self.inflight_hi = sat32(u64::from(self.inflight_hi) * 5 / 4);
        }
        self.mode = Mode::ProbeBw {
            phase,
            since_us: self.micros(now),
        };
    }

    /// The state machine's transitions at an ack, after the model update.
    fn advance(&mut self, now: Instant, bytes_in_flight: u64) {
        let bdp = self.bdp().unwrap_or(0);
        let min_rtt_us = if self.min_rtt_us == u32::MAX {
            0
        } else {
            self.min_rtt_us
        };
        match self.mode {
            Mode::Startup { .. } => {}
            Mode::Drain => {
                if bytes_in_flight <= bdp {
                    // Start with a cruise phase: the queue was just drained, and the
                    // probe up comes after six min RTTs.
                    self.enter_phase(now, 2);
                }
            }
            Mode::ProbeBw { phase, since_us } => {
                let elapsed = self.micros(now).wrapping_sub(since_us);
                let done =
                    elapsed >= min_rtt_us || (phase == 1 && bytes_in_flight <= bdp && elapsed > 0);
                if done {
                    let next = (phase + 1) % PROBE_BW_GAINS.len() as u8;
                    self.enter_phase(now, next);
                }
            }
            Mode::ProbeRtt {
                until_ms,
                round_done,
            } => {
                let now_ms = self.millis(now);
                if round_done && now_ms.wrapping_sub(until_ms) < u32::MAX / 2 {
                    self.min_rtt_stamp_ms = now_ms;
                    self.enter_phase(now, 2);
                }
            }
        }
    }
}

impl Controller for Bbr {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, _bytes_in_flight: u64) {}

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        _rtt: &RttEstimator,
        app_limited: bool,
    ) {
        self.round_delivered = self.round_delivered.saturating_add(sat32(bytes));
        let sent_us = self.micros(sent);
        if sent_us.wrapping_sub(self.round_start_us) < u32::MAX / 2 {
            // A datagram sent after the round began: the round is over, and the next
            // one is made of what is sent from now on.
            self.round_start_us = self.micros(now);
            self.round_ended = true;
        }
        if app_limited {
            // RFC 9002 §7.8: the window was not the limit, so its acks say nothing about
            // it; and the model's target, built from samples the application held down,
            // is no reason to cut it (a game's burst after a quiet spell would wait).
            return;
        }
        // Grow towards the model's target by what was acked (BBR's cwnd update); with
        // no model yet, as slow start does.
        let grown = u64::from(self.window).saturating_add(bytes);
        self.window = sat32(grown.min(self.cap().unwrap_or(MAX_WINDOW)));
    }

    fn on_delivery(&mut self, now: Instant, sample: Option<&RateSample>, bytes_in_flight: u64) {
        let now_ms = self.millis(now);
        let expired = self.min_rtt_us != u32::MAX
            && now_ms.wrapping_sub(self.min_rtt_stamp_ms)
                >= u32::try_from(MIN_RTT_WINDOW.as_millis()).unwrap_or(u32::MAX);
        if let Some(s) = sample {
            // The bandwidth filter: an app-limited sample counts only if it raises the
            // estimate (it shows at least that much capacity).
            let rate = sat32(s.rate());
            if !s.app_limited || u64::from(rate) > self.bandwidth() {
                self.bw[0] = self.bw[0].max(rate);
            }
            let rtt = u32::try_from(s.rtt.as_micros()).unwrap_or(u32::MAX - 1);
            if rtt <= self.min_rtt_us || expired {
                self.min_rtt_us = rtt;
                self.min_rtt_stamp_ms = now_ms;
            }
        }
        if core::mem::take(&mut self.round_ended) {
            self.on_round_end(sample);
        }
        if expired && !matches!(self.mode, Mode::ProbeRtt { .. }) {
            let until =
                now_ms.wrapping_add(u32::try_from(PROBE_RTT_TIME.as_millis()).unwrap_or(u32::MAX));
            self.mode = Mode::ProbeRtt {
                until_ms: until,
                round_done: false,
            };
            // The round under way counts from here: PROBE_RTT lasts a whole one.
            self.round_start_us = self.micros(now);
        }
        self.advance(now, bytes_in_flight);
        // An app-limited sample's model is a lower bound of the path's, so it cuts
        // nothing; not even in PROBE_RTT, whose cut is there to drain the flow's own
        // queue, which an application-limited flow does not build (cutting to half an
        // app-limited BDP held a game-like flow's bursts back for 200 ms at a time).
        let limited = sample.is_some_and(|s| s.app_limited);
        if let Some(cap) = self.cap()
            && !limited
        {
            self.window = sat32(u64::from(self.window).min(cap));
        }
    }

    fn on_congestion_event(
        &mut self,
        _now: Instant,
        _sent: Instant,
        lost_bytes: u64,
        persistent: bool,
    ) {
        self.round_lost = self.round_lost.saturating_add(sat32(lost_bytes));
        if persistent {
            // RFC 9002 §7.6.2: the minimum window; the model stands, and acks grow the
            // window back to its target within a few rounds.
            self.window = sat32(minimum_window(self.mss()));
        }
    }

    fn window(&self) -> u64 {
        u64::from(self.window)
    }

    fn pacing_rate(&self) -> Option<u64> {
        let bw = self.bandwidth();
        (bw > 0).then(|| bw * self.pacing_gain() / 100)
    }
}

#[cfg(test)]
#[expect(
    clippy::unchecked_time_subtraction,
    reason = "test instants stay after the controller's creation"
)]
mod tests {
    use super::*;

    const MSS: u64 = 1_000;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Drives a controller through synthetic rounds: each one acks a datagram sent when
    /// the previous round ended, with a rate sample of the given rate and round trip.
    struct Driver {
        c: Bbr,
        now: Instant,
        rtt: RttEstimator,
    }

    impl Driver {
        fn new() -> Self {
            let now = Instant::now();
            Self {
                c: Bbr::new(MSS, now),
                now,
                rtt: RttEstimator::new(ms(100), ms(20), Duration::ZERO),
            }
        }

        fn round(&mut self, rate: u64, in_flight: u64) {
            self.round_with(rate, ms(100), in_flight, false);
        }

        fn round_with(&mut self, rate: u64, rtt: Duration, in_flight: u64, app_limited: bool) {
            let sent = self.now;
            self.now += rtt;
            self.c.on_ack(self.now, sent, MSS, &self.rtt, false);
            let sample = RateSample {
                delivered: rate * u64::try_from(rtt.as_micros()).expect("short") / 1_000_000,
                interval: rtt,
                prior_delivered: 0,
                rtt,
                app_limited,
            };
            self.c.on_delivery(self.now, Some(&sample), in_flight);
        }

        /// Acks `n` datagrams sent a round trip ago, with no new sample or round.
        fn acks(&mut self, n: u64) {
            for _ in 0..n {
                self.c
                    .on_ack(self.now, self.now - ms(100), MSS, &self.rtt, false);
            }
            self.c.on_delivery(self.now, None, 0);
        }

        /// STARTUP through 100, 200, 400 and 800 kB/s, then flat until it leaves.
        fn to_probe_bw() -> Self {
            let mut d = Self::new();
            for rate in [
                100_000, 200_000, 400_000, 800_000, 800_000, 800_000, 800_000,
            ] {
                d.round(rate, 200_000);
            }
            d.round(800_000, 80_000);
            d
        }
    }

    #[test]
    fn startup_leaves_after_three_rounds_without_a_quarter_more_bandwidth() {
        let mut d = Driver::new();
        assert_eq!(d.c.pacing_rate(), None, "no model before the first sample");
        for rate in [100_000, 200_000, 400_000, 800_000] {
            d.round(rate, 200_000);
            assert!(matches!(d.c.mode(), Mode::Startup { rounds: 0, .. }));
        }
        // 2.77 × the estimate: enough to double the delivery rate in a round.
        assert_eq!(d.c.pacing_rate(), Some(2_216_000));
        // 900 kB/s is not 25 % over 800: two such rounds stay, the third leaves.
        d.round(900_000, 200_000);
        d.round(900_000, 200_000);
        assert!(matches!(d.c.mode(), Mode::Startup { rounds: 2, .. }));
        d.round(900_000, 200_000);
        assert_eq!(d.c.mode(), Mode::Drain);
        assert_eq!(d.c.bandwidth(), 900_000);
        assert_eq!(d.c.min_rtt(), Some(ms(100)));
        assert_eq!(d.c.bdp(), Some(90_000));
    }

    #[test]
    fn drain_paces_below_the_estimate_until_in_flight_is_one_bdp() {
        let mut d = Driver::new();
        for rate in [
            100_000, 200_000, 400_000, 800_000, 800_000, 800_000, 800_000,
        ] {
            d.round(rate, 200_000);
        }
        assert_eq!(d.c.mode(), Mode::Drain);
        assert_eq!(d.c.pacing_rate(), Some(280_000), "0.35 × 800 kB/s");
        d.round(800_000, 80_001);
        assert_eq!(d.c.mode(), Mode::Drain);
        d.round(800_000, 80_000);
        assert!(matches!(d.c.mode(), Mode::ProbeBw { phase: 2, .. }));
        assert_eq!(d.c.pacing_rate(), Some(800_000));
    }

    #[test]
    fn probe_bw_cycles_its_gains_one_min_rtt_each() {
        let mut d = Driver::to_probe_bw();
        let mut gains = Vec::new();
        for _ in 0..8 {
            d.round(800_000, 80_000);
            gains.push(d.c.pacing_gain());
        }
        assert_eq!(gains, [100, 100, 100, 100, 100, 125, 75, 100]);
        // The 1.25 phase paces at 1.25 × the estimate.
        for _ in 0..6 {
            d.round(800_000, 80_000);
        }
        assert_eq!(d.c.pacing_rate(), Some(1_000_000));
    }

    #[test]
    fn cwnd_grows_by_acked_bytes_to_two_bdp_and_no_further() {
        let mut d = Driver::to_probe_bw();
        let before = d.c.window();
        d.acks(10);
        assert_eq!(d.c.window(), before + 10 * MSS);
        d.acks(500);
        assert_eq!(d.c.window(), 2 * 80_000);
        // A lower estimate cuts cwnd at once: 2 × BDP at 400 kB/s, once 800 has aged
        // out of both filter slots.
        for _ in 0..10 {
            d.round(400_000, 40_000);
        }
        assert_eq!(d.c.bandwidth(), 400_000);
        assert_eq!(d.c.window(), 2 * 40_000);
    }

    #[test]
    fn the_bandwidth_filter_keeps_the_max_of_five_to_ten_rounds() {
        let mut d = Driver::to_probe_bw();
        // App-limited samples below the estimate are ignored; above, they count.
        d.round_with(100_000, ms(100), 80_000, true);
        assert_eq!(d.c.bandwidth(), 800_000);
        for i in 0..10 {
            assert!(
                d.c.bandwidth() == 800_000 || i >= 5,
                "round {i}: {}",
                d.c.bandwidth()
            );
            d.round(500_000, 50_000);
        }
        assert_eq!(d.c.bandwidth(), 500_000);
        d.round_with(900_000, ms(100), 50_000, true);
        assert_eq!(d.c.bandwidth(), 900_000);
    }

    #[test]
    fn probe_rtt_after_ten_seconds_without_a_lower_rtt_and_back() {
        let mut d = Driver::to_probe_bw();
        d.acks(500);
        assert_eq!(d.c.window(), 160_000);
        // A standing queue: every round trip is 120 ms, above the 100 ms min RTT, so the
        // min RTT is not renewed; PROBE_RTT comes ten seconds after it was last set.
        let set = d.now;
        while !matches!(d.c.mode(), Mode::ProbeRtt { .. }) {
            d.round_with(800_000, ms(120), 96_000, false);
        }
        let waited = d.now - set;
        assert!(
            waited >= MIN_RTT_WINDOW && waited < MIN_RTT_WINDOW + ms(120),
            "{waited:?}"
        );
        // The expired min RTT took the 120 ms sample; cwnd is three quarters of the BDP
        // (96 kB).
        assert_eq!(d.c.min_rtt(), Some(ms(120)));
        assert_eq!(d.c.window(), 72_000);
        // With the queue drained, the RTT is 100 ms again; after 200 ms and a round,
        // PROBE_BW resumes with the new min RTT.
        d.round_with(800_000, ms(100), 40_000, false);
        assert!(matches!(d.c.mode(), Mode::ProbeRtt { .. }));
        assert_eq!(d.c.min_rtt(), Some(ms(100)));
        d.round_with(800_000, ms(100), 40_000, false);
        assert!(matches!(d.c.mode(), Mode::ProbeBw { phase: 2, .. }));
        d.acks(500);
        assert_eq!(d.c.window(), 160_000);
    }

    #[test]
    fn probe_rtt_rounds_do_not_age_the_bandwidth_estimate() {
        let mut d = Driver::to_probe_bw();
        while !matches!(d.c.mode(), Mode::ProbeRtt { .. }) {
            d.round_with(800_000, ms(120), 96_000, false);
        }
        // 200 ms of 10 ms rounds at the cut's lower rate: twenty rounds, four times the
        // filter's slot, none of which ages the 800 kB/s measured before.
        let mut rounds = 0;
        while matches!(d.c.mode(), Mode::ProbeRtt { .. }) {
            d.round_with(400_000, ms(10), 4_000, false);
            rounds += 1;
        }
        assert!(rounds >= 20, "{rounds}");
        assert!(matches!(d.c.mode(), Mode::ProbeBw { phase: 2, .. }));
        assert_eq!(d.c.bandwidth(), 800_000);
        // Out of PROBE_RTT, rounds age it again: ten rounds at 400 kB/s replace it.
        for _ in 0..10 {
            d.round_with(400_000, ms(10), 4_000, false);
        }
        assert_eq!(d.c.bandwidth(), 400_000);
    }

    #[test]
    fn loss_over_one_percent_of_a_round_bounds_cwnd_and_less_does_not() {
        let mut d = Driver::to_probe_bw();
        d.acks(500);
        assert_eq!(d.c.window(), 160_000);
        // 1 lost in 200 datagrams: 0.5 %, ignored.
        d.acks(199);
        d.c.on_congestion_event(d.now, d.now - ms(50), MSS, false);
        d.round(800_000, 80_000);
        assert_eq!(d.c.inflight_hi(), u64::MAX);
        assert_eq!(d.c.window(), 160_000);
        // 5 lost in 200: 2.5 %: inflight_hi = max(0.7 × 160 kB, 1.25 × 80 kB) = 112 kB,
        // and outside the probe up cwnd keeps 15 % under it.
        d.acks(195);
        d.c.on_congestion_event(d.now, d.now - ms(50), 5 * MSS, false);
        d.round(800_000, 80_000);
        assert_eq!(d.c.inflight_hi(), 112_000);
        assert_eq!(d.c.window(), 95_200);
        // Persistent congestion: the minimum window, then acks grow it back to the cap.
        d.c.on_congestion_event(d.now, d.now - ms(50), 50 * MSS, true);
        assert_eq!(d.c.window(), 2 * MSS);
        d.acks(300);
        assert_eq!(d.c.window(), 95_200);
    }

    #[test]
    fn heavy_loss_in_startup_ends_it() {
        let mut d = Driver::new();
        d.round(100_000, 200_000);
        d.round(200_000, 200_000);
        d.c.on_congestion_event(d.now, d.now - ms(50), 5 * MSS, false);
        d.round(400_000, 200_000);
        assert_eq!(d.c.mode(), Mode::Drain);
        assert_eq!(d.c.inflight_hi(), 50_000, "1.25 × BDP at 400 kB/s");
    }
}
