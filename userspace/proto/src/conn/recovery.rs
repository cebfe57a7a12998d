//! Loss recovery on the send side (RFC 9002): the record of packets sent, ack
//! processing, loss detection by packet and time threshold, retransmission queueing and
//! the loss-detection / probe timer.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::pmtud::{BASE_PLPMTU, Next};
use super::{
    Conn, Ctx, Deadline, DrainNotice, PACKET_THRESHOLD, RX_WINDOW, TIME_THRESHOLD, Violation,
};
use crate::congestion::Controller;
use crate::congestion::delivery::Stamp;
use crate::packet::{ACK_DELAY_UNIT_US, Ack, expand16};
use crate::pool::BufPool;

/// Largest PTO backoff exponent.
const MAX_PTO_BACKOFF: u32 = 6;

/// A packet on record: ack-eliciting, sent and not yet resolved (or lost and kept a
/// little while so that a late ack is recognised).
#[derive(Clone, Copy, Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent flags of one record, kept within its 40 bytes"
)]
pub(super) struct SentPacket {
    pub(super) pn: u64,
    pub(super) time: Instant,
    /// First entry of this packet in the frame log (absolute index).
    pub(super) log: u64,
    pub(super) frames: u16,
    pub(super) size: u16,
    pub(super) acked: bool,
    pub(super) lost: bool,
    /// It carried the drain notice.
    pub(super) drain: bool,
    /// A path MTU probe (§5.5): no data, not in flight, its loss no congestion signal.
    pub(super) pmtu_probe: bool,
}

impl SentPacket {
    /// An ack-eliciting packet neither acknowledged nor lost, that loss recovery waits
    /// for (a path MTU probe has its own timer).
    pub(super) fn outstanding(&self) -> bool {
        !self.acked && !self.lost && !self.pmtu_probe
    }
}

/// What loss detection concludes about one unacknowledged packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Lost now.
    Lost,
    /// Not lost yet; lost at this time unless acknowledged first.
    LostAt(Instant),
}

/// The losses one pass of loss detection found, for the congestion controller.
#[derive(Debug, Default)]
struct Losses {
    bytes: u64,
    newest: Option<Instant>,
    oldest: Option<Instant>,
}

impl Conn {
    /// Processes an ACK frame (RFC 9002 §6, §5.1).
    pub(super) fn on_ack(&mut self, now: Instant, ack: Ack, ctx: &mut Ctx<'_>) {
        let largest = expand16(self.next_pn - 1, ack.largest);
        let lowest = lowest_acked(largest, ack.bits);
        let first = (1 << 32) + u64::from(self.initial_seq);
        if largest >= self.next_pn || lowest < first {
            ctx.stats.violations += 1;
            self.violate(Violation::AckOfUnsent, ctx.pool);
            return;
        }
        if self.sent.is_empty() {
            self.largest_acked = self.largest_acked.max(largest);
            return;
        }
        let window = self.cc.window();
        let app_limited = u64::from(self.bytes_in_flight) + 2 * u64::from(self.mtu()) < window;
        let mut newly_acked_largest = None;
        let mut acked_any = false;
        // The largest data packet newly acknowledged, for black-hole detection (§5.5).
        let mut acked_size = None;
        // The packets on record that the frame covers, newest first: one search, then a
        // walk down the record (and down the delivery stamps beside it), not one search
        // per number the frame covers (up to 33, each a cache miss at thousands of
        // connections: docs/DATAPATH.md, profile).
        let mut walk = AckWalk::new(&self.sent, largest, ack.bits);
        let mut stamps = StampWalk::new(self.streams.as_deref().map(|s| &s.stamps), largest);
        while let Some(idx) = walk.next(&self.sent) {
            let pn = self.sent[idx].pn;
            let Some((time, size)) = self.on_packet_acked(now, idx, app_limited, &mut stamps, ctx)
            else {
                continue;
            };
            if let Some(s) = size {
                acked_size = acked_size.max(Some(s));
            }
            acked_any = true;
            if pn == largest {
                newly_acked_largest = Some(time);
            }
        }
        self.largest_acked = self.largest_acked.max(largest);
        if let Some(t) = newly_acked_largest {
            // RFC 9002 §5.1: sample only when the largest acked is newly acked.
            let delay = Duration::from_micros(u64::from(ack.delay) * ACK_DELAY_UNIT_US);
            self.rtt.update(now.saturating_duration_since(t), delay);
        }
        if acked_any {
            self.pto_count = 0;
        }
        self.detect_losses(now, ctx);
        if let Some(size) = acked_size
            && self.pmtud.black_hole(size, ctx.mtu)
        {
            self.on_black_hole(ctx);
        }
        if acked_any {
            let min_rtt = self.rtt.min();
            let sample = self
                .streams
                .as_deref_mut()
                .and_then(|s| s.delivery.sample(now, min_rtt));
            self.cc
                .on_delivery(now, sample.as_ref(), u64::from(self.bytes_in_flight));
        }
        self.trim();
        self.set_loss_timer();
    }

    /// RFC 9002 §6.1: declare lost the in-flight packets below the largest acked that are
    /// [`PACKET_THRESHOLD`] packets or 9/8 RTT older than it.
    pub(super) fn detect_losses(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        self.loss_armed = false;
        let largest = self.largest_acked;
        if largest == 0 {
            return;
        }
        let delay = loss_delay(self.rtt.smoothed().max(self.rtt.latest()));
        let mut loss_time: Option<Instant> = None;
        let mut losses = Losses::default();
        for i in 0..self.sent.len() {
            let p = self.sent[i];
            if p.pn > largest {
                break;
            }
            if p.acked || p.lost {
                continue;
            }
            match verdict(p.pn, p.time, largest, now, delay) {
                Verdict::Lost if p.pmtu_probe => {
                    self.sent[i].lost = true;
                    self.on_probe_lost(now, p.size, ctx);
                }
                Verdict::Lost => {
                    self.pmtud.on_lost(p.size);
                    self.sent[i].lost = true;
                    self.bytes_in_flight -= u32::from(p.size);
                    losses.bytes += u64::from(p.size);
                    losses.newest = Some(p.time);
                    losses.oldest.get_or_insert(p.time);
                    ctx.stats.lost_packets += 1;
                    self.quality.lost = self.quality.lost.saturating_add(1);
                    self.queue_retransmit(&p);
                }
                Verdict::LostAt(t) => loss_time = Some(loss_time.map_or(t, |l| l.min(t))),
            }
        }
        if let Some(t) = loss_time {
            self.loss_armed = true;
            self.timers[Deadline::Loss as usize] = Some(t);
        }
        if let (Some(newest), Some(oldest)) = (losses.newest, losses.oldest) {
            // RFC 9002 §7.6: persistent congestion when the losses span more than three PTOs.
            let persistent = self.rtt.has_sample()
                && newest.saturating_duration_since(oldest) > self.rtt.pto_base() * 3;
            self.cc
                .on_congestion_event(now, newest, losses.bytes, persistent);
        }
    }

    /// Puts the unacked messages of the oldest in-flight packet up for retransmission, so
    /// that a probe carries data rather than a bare ping (RFC 9002 §6.2.4 allows either).
    pub(super) fn queue_probe_data(&mut self) {
        if let Some(p) = self.sent.iter().find(|p| p.outstanding()).copied() {
            self.queue_retransmit(&p);
        }
    }

    pub(super) fn set_loss_timer(&mut self) {
        if self.loss_armed {
            return;
        }
        let t = if self.sent.iter().any(SentPacket::outstanding) {
            let backoff = 1u32 << u32::from(self.pto_count).min(MAX_PTO_BACKOFF);
            self.last_eliciting_sent
                .map(|t| t + self.rtt.pto() * backoff)
        } else {
            None
        };
        self.timers[Deadline::Loss as usize] = t;
    }

    /// Marks the packet at `idx` on record acknowledged, if it was not already; returns
    /// the time it was sent and, for a data packet (not a path MTU probe), its size.
    /// `stamps` finds its delivery stamp: packets are acknowledged newest first.
    fn on_packet_acked(
        &mut self,
        now: Instant,
        idx: usize,
        app_limited: bool,
        stamps: &mut StampWalk,
        ctx: &mut Ctx<'_>,
    ) -> Option<(Instant, Option<u16>)> {
        let p = *self.sent.get(idx)?;
        if p.acked {
            return None;
        }
        if p.pmtu_probe {
            self.sent[idx].acked = true;
            // A late ack of a probe already declared lost confirms nothing: the search
            // has moved on.
            if !p.lost
                && let Some(next) = self.pmtud.on_probe_acked(p.size, ctx.mtu)
            {
                self.after_pmtu(now, next, ctx);
            }
            return Some((p.time, None));
        }
        self.pmtud.on_acked(p.size);
        if p.lost {
            ctx.stats.spurious_losses += 1;
            self.quality.lost = self.quality.lost.saturating_sub(1);
        }
        self.sent[idx].acked = true;
        if p.drain && self.drain == DrainNotice::InFlight {
            self.drain = DrainNotice::Acked;
        }
        if !p.lost {
            self.bytes_in_flight -= u32::from(p.size);
            self.cc
                .on_ack(now, p.time, u64::from(p.size), &self.rtt, app_limited);
            if let Some(s) = self.streams.as_deref_mut()
                && let Some(i) = stamps.find(&s.stamps, p.pn)
            {
                let stamp = s.stamps[i].1;
                s.delivery.on_acked(now, p.time, &stamp, u64::from(p.size));
            }
        }
        self.ack_messages(&p, ctx.pool);
        Some((p.time, Some(p.size)))
    }

    /// The path MTU probe of `size` bytes is lost (by the loss detection of §7.3 or by
    /// its own timer): a search step, never a congestion event nor a retransmission.
    fn on_probe_lost(&mut self, now: Instant, size: u16, ctx: &mut Ctx<'_>) {
        if let Some(next) = self.pmtud.on_probe_lost(size, ctx.mtu) {
            self.after_pmtu(now, next, ctx);
        }
    }

    /// Arms the path MTU timer for what the search does next: nothing while a probe waits
    /// to be sent (sending it arms the probe timer), the raise timer once it is complete
    /// below the ceiling.
    fn after_pmtu(&mut self, now: Instant, next: Next, ctx: &Ctx<'_>) {
        let at = match next {
            Next::Done(true) => Some(now + ctx.transport.pmtu_raise_interval),
            Next::Probe(_) | Next::Done(false) => None,
        };
        self.set_pmtu_timer(at, ctx.epoch);
    }

    /// The path MTU timer expired: the probe in flight is lost, or (none in flight) the
    /// raise timer starts a new search.
    pub(super) fn on_pmtu_timer(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if let Some(size) = self.pmtud.probing(ctx.mtu) {
            // Every probe still on record is lost by now: the one in flight, and any
            // left from before a black hole or a migration restarted the search.
            for p in self.sent.iter_mut().filter(|p| p.pmtu_probe && !p.acked) {
                p.lost = true;
            }
            self.on_probe_lost(now, size, ctx);
        } else {
            self.pmtud.on_raise_timer(ctx.mtu);
        }
    }

    /// A black hole (§5.5): the PLPMTU is back at the base. Every data packet larger
    /// than the base still in flight is declared lost and its messages resent in packets
    /// of the base size (every frame fits one); it is not reported as congestion. A new
    /// search has started; its probes follow the resent data.
    fn on_black_hole(&mut self, ctx: &mut Ctx<'_>) {
        ctx.stats.pmtu_black_holes += 1;
        for i in 0..self.sent.len() {
            let p = self.sent[i];
            if p.outstanding() && p.size > BASE_PLPMTU {
                self.sent[i].lost = true;
                self.bytes_in_flight -= u32::from(p.size);
                ctx.stats.lost_packets += 1;
                self.quality.lost = self.quality.lost.saturating_add(1);
                self.queue_retransmit(&p);
            }
        }
        self.set_pmtu_timer(None, ctx.epoch);
    }

    fn ack_messages(&mut self, p: &SentPacket, pool: &mut BufPool) {
        let Some(s) = self.streams.as_deref_mut() else {
            return;
        };
        for i in p.log..p.log + u64::from(p.frames) {
            let Some(id) = s.logged(i) else {
                continue;
            };
            if let Some(m) = s.msg_mut(id)
                && !m.acked
            {
                m.acked = true;
                self.send_used -= m.data.len() as u32;
                pool.put(std::mem::take(&mut m.data));
            }
        }
    }

    /// Queues for retransmission the messages of `p` that are neither acknowledged nor
    /// already queued.
    fn queue_retransmit(&mut self, p: &SentPacket) {
        let Some(s) = self.streams.as_deref_mut() else {
            return;
        };
        for i in p.log..p.log + u64::from(p.frames) {
            // A packet's log index below the live log's start (entries already trimmed)
            // names nothing to retransmit.
            let Some(id) = s.logged(i) else {
                continue;
            };
            if let Some(m) = s.msg_mut(id)
                && !m.acked
                && !m.queued
            {
                m.queued = true;
                s.retransmit.push_back(id);
            }
        }
    }

    /// Drops resolved packets and acknowledged messages from the fronts of the queues.
    pub(super) fn trim(&mut self) {
        // Keep lost packets a little while (RX_WINDOW numbers) so a late ack is recognised.
        let keep_from = self.largest_acked.saturating_sub(RX_WINDOW);
        while self
            .sent
            .front()
            .is_some_and(|p| p.acked || (p.lost && p.pn < keep_from))
        {
            self.sent.pop_front();
        }
        let Some(s) = self.streams.as_deref_mut() else {
            return;
        };
        let first_on_record = self.sent.front().map_or(u64::MAX, |p| p.pn);
        while s.stamps.front().is_some_and(|e| e.0 < first_on_record) {
            s.stamps.pop_front();
        }
        let log_keep = self
            .sent
            .front()
            .map_or(s.log_base + s.log.len() as u64, |p| p.log);
        while s.log_base < log_keep && s.log.pop_front().is_some() {
            s.log_base += 1;
        }
        while s.msgs.front().is_some_and(|m| m.acked) {
            s.msgs.pop_front();
            s.msg_base += 1;
        }
        s.next_unsent = s.next_unsent.max(s.msg_base);
    }
}

/// The lowest packet number an ACK frame reports: `largest`, or below it the packet of
/// the highest bit set (bit `k - 1` is `largest - k`; docs/PROTOCOL.md §5.2).
fn lowest_acked(largest: u64, bits: u32) -> u64 {
    largest.saturating_sub(u64::from(32 - bits.leading_zeros()))
}

/// Whether an ACK frame of `largest` and `bits` reports packet `pn`.
fn covers(largest: u64, bits: u32, pn: u64) -> bool {
    match largest.checked_sub(pn) {
        Some(0) => true,
        Some(k @ 1..=32) => bits & (1 << (k - 1)) != 0,
        _ => false,
    }
}

/// The packets on record that an ACK frame reports, newest first, as indices into the
/// record (ordered by packet number, with gaps where packets were not ack-eliciting):
/// one search for the newest packet at or below the frame's largest, then a walk down the
/// record to the frame's lowest, each packet tested against the frame's bits. The record
/// must not change length during the walk (acknowledging only sets flags).
#[derive(Debug)]
struct AckWalk {
    /// Packets on record below this index are still to be visited.
    next: usize,
    largest: u64,
    lowest: u64,
    bits: u32,
}

impl AckWalk {
    fn new(sent: &VecDeque<SentPacket>, largest: u64, bits: u32) -> Self {
        Self {
            next: sent.partition_point(|p| p.pn <= largest),
            largest,
            lowest: lowest_acked(largest, bits),
            bits,
        }
    }

    fn next(&mut self, sent: &VecDeque<SentPacket>) -> Option<usize> {
        while self.next > 0 {
            self.next -= 1;
            let pn = sent.get(self.next)?.pn;
            if pn < self.lowest {
                self.next = 0;
                return None;
            }
            if covers(self.largest, self.bits, pn) {
                return Some(self.next);
            }
        }
        None
    }
}

/// The delivery stamps (in packet-number order) of the packets an ACK frame reports,
/// asked for newest first: one search for the newest stamp at or below the frame's
/// largest, then a walk down.
#[derive(Debug)]
struct StampWalk {
    /// Stamps below this index are at or below the packet number asked for last.
    end: usize,
}

impl StampWalk {
    fn new(stamps: Option<&VecDeque<(u64, Stamp)>>, largest: u64) -> Self {
        Self {
            end: stamps.map_or(0, |s| s.partition_point(|e| e.0 <= largest)),
        }
    }

    /// The index of packet `pn`'s stamp, if it has one; `pn` is below every number asked
    /// for before.
    fn find(&mut self, stamps: &VecDeque<(u64, Stamp)>, pn: u64) -> Option<usize> {
        self.end = self.end.min(stamps.len());
        while self.end > 0 && stamps[self.end - 1].0 > pn {
            self.end -= 1;
        }
        let i = self.end.checked_sub(1)?;
        (stamps[i].0 == pn).then_some(i)
    }
}

/// The packet numbers an ACK frame reports, newest first: `largest`, then `largest - k`
/// for each bit `k - 1` set in `bits` (k = 1..=32), stopping below zero (docs/PROTOCOL.md
/// §5.2). The tests' reference for [`AckWalk`].
#[cfg(test)]
pub(super) fn acked_pns(largest: u64, bits: u32) -> impl Iterator<Item = u64> {
    (0..=32u64)
        .filter(move |&k| k == 0 || bits & (1 << (k - 1)) != 0)
        .map_while(move |k| largest.checked_sub(k))
}

/// RFC 9002 §6.1.2: the time threshold, 9/8 of `rtt` (the larger of the smoothed and
/// latest RTT), at least the timer granularity.
fn loss_delay(rtt: Duration) -> Duration {
    (rtt * TIME_THRESHOLD.0 / TIME_THRESHOLD.1).max(crate::rtt::GRANULARITY)
}

/// RFC 9002 §6.1: whether the unacknowledged packet `pn`, sent at `time`, at or below the
/// largest acknowledged, is lost by the packet threshold (§6.1.1) or the time threshold
/// (§6.1.2); if not, when the time threshold will declare it lost.
fn verdict(pn: u64, time: Instant, largest_acked: u64, now: Instant, delay: Duration) -> Verdict {
    if largest_acked - pn >= PACKET_THRESHOLD || time + delay <= now {
        Verdict::Lost
    } else {
        Verdict::LostAt(time + delay)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, VecDeque};
    use std::time::{Duration, Instant};

    use proptest::collection::{btree_set, vec};
    use proptest::prelude::*;

    use super::super::fixture::{Fixture, SEQ};
    use super::super::{Conn, Deadline, DisconnectReason, RX_WINDOW, State, Violation};
    use super::{
        AckWalk, SentPacket, StampWalk, Verdict, acked_pns, loss_delay, lowest_acked, verdict,
    };
    use crate::congestion::delivery::{Estimator, Stamp};
    use crate::packet::Ack;
    use crate::rtt::GRANULARITY;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ack_bits_name_packets_below_the_largest() {
        let pns: Vec<u64> = acked_pns(100, 0b101).collect();
        assert_eq!(pns, [100, 99, 97]);
        let all: Vec<u64> = acked_pns(1000, u32::MAX).collect();
        assert_eq!(all.len(), 33);
        assert_eq!(all.last(), Some(&(1000 - 32)));
    }

    #[test]
    fn ack_bits_stop_at_packet_zero() {
        let pns: Vec<u64> = acked_pns(1, u32::MAX).collect();
        assert_eq!(pns, [1, 0]);
    }

    #[test]
    fn time_threshold_is_nine_eighths_of_the_rtt_at_least_the_granularity() {
        assert_eq!(
            loss_delay(Duration::from_millis(80)),
            Duration::from_millis(90)
        );
        assert_eq!(loss_delay(Duration::from_micros(100)), GRANULARITY);
    }

    #[test]
    fn packet_threshold_declares_three_below_the_largest_lost() {
        let now = Instant::now();
        let delay = Duration::from_millis(90);
        assert_eq!(verdict(7, now, 10, now, delay), Verdict::Lost);
        assert_eq!(
            verdict(8, now, 10, now, delay),
            Verdict::LostAt(now + delay)
        );
    }

    #[test]
    fn time_threshold_declares_an_old_packet_lost() {
        let t0 = Instant::now();
        let delay = Duration::from_millis(90);
        // One below the largest: only time can declare it lost.
        assert_eq!(
            verdict(9, t0, 10, t0 + MS * 89, delay),
            Verdict::LostAt(t0 + delay)
        );
        assert_eq!(verdict(9, t0, 10, t0 + delay, delay), Verdict::Lost);
    }

    /// A connection with packets `first..first + n` on record, sent 10 ms apart from
    /// `f.now`, 100 bytes each, all in flight.
    fn with_history(f: &mut Fixture, n: u64) -> (Conn, u64) {
        let mut c = f.conn();
        let first = c.next_pn;
        for k in 0..n {
            c.sent.push_back(SentPacket {
                pn: first + k,
                time: f.now + MS * 10 * k as u32,
                log: 0,
                frames: 0,
                size: 100,
                acked: false,
                lost: false,
                drain: false,
                pmtu_probe: false,
            });
        }
        c.next_pn = first + n;
        c.bytes_in_flight = 100 * n as u32;
        (c, first)
    }

    #[test]
    fn detect_losses_on_a_hand_written_history() {
        let mut f = Fixture::new();
        let (mut c, first) = with_history(&mut f, 6);
        // Packet first + 4 acked; first + 5 is above the largest acked.
        c.sent[4].acked = true;
        c.bytes_in_flight -= 100;
        c.largest_acked = first + 4;
        // No RTT sample: the initial RTT, 100 ms, gives a 112.5 ms time threshold.
        let delay = Duration::from_micros(112_500);
        let now = f.now + MS * 50;
        c.detect_losses(now, &mut f.ctx());
        let lost: Vec<bool> = c.sent.iter().map(|p| p.lost).collect();
        // first and first + 1 are 4 and 3 below the largest (packet threshold).
        assert_eq!(lost, [true, true, false, false, false, false]);
        assert_eq!(f.stats.lost_packets, 2);
        assert_eq!(c.bytes_in_flight, 300);
        // The earliest survivor below the largest (first + 2, sent at 20 ms) arms the
        // time-threshold deadline.
        assert!(c.loss_armed);
        assert_eq!(
            c.timers[Deadline::Loss as usize],
            Some(f.now + MS * 20 + delay)
        );

        // At that deadline first + 2 is lost by time; first + 3 (sent at 30 ms) is not.
        c.detect_losses(f.now + MS * 20 + delay, &mut f.ctx());
        let lost: Vec<bool> = c.sent.iter().map(|p| p.lost).collect();
        assert_eq!(lost, [true, true, true, false, false, false]);
        assert_eq!(f.stats.lost_packets, 3);
        assert_eq!(
            c.timers[Deadline::Loss as usize],
            Some(f.now + MS * 30 + delay)
        );
    }

    #[test]
    fn ack_marks_packets_and_samples_the_rtt() {
        let mut f = Fixture::new();
        let (mut c, first) = with_history(&mut f, 4);
        let largest = first + 3;
        // Acks first + 3 and first + 1 (bit 1: two below the largest).
        let ack = Ack {
            largest: largest as u16,
            delay: 0,
            bits: 0b10,
        };
        let now = f.now + MS * 70;
        c.on_ack(now, ack, &mut f.ctx());
        let acked: Vec<bool> = c.sent.iter().map(|p| p.acked).collect();
        assert_eq!(acked, [false, true, false, true]);
        assert_eq!(c.largest_acked, largest);
        assert!(c.rtt.has_sample());
        // Sent at 30 ms, acked at 70 ms.
        assert_eq!(c.rtt.latest(), MS * 40);
        assert_eq!(c.state, State::Open);
    }

    #[test]
    fn ack_of_a_packet_never_sent_is_a_violation() {
        let mut f = Fixture::new();
        let (mut c, first) = with_history(&mut f, 2);
        let ack = Ack {
            largest: (first + 2) as u16,
            delay: 0,
            bits: 0,
        };
        c.on_ack(f.now, ack, &mut f.ctx());
        assert_eq!(
            c.reason,
            Some(DisconnectReason::Violation(Violation::AckOfUnsent))
        );
        assert_eq!(f.stats.violations, 1);
        assert_eq!(first, (1 << 32) + u64::from(SEQ));
    }

    /// §8.4: an ACK reaching below the first packet number (by its largest or by a set
    /// bit) acknowledges a packet never sent; down to the first one exactly, it is fine.
    #[test]
    fn ack_below_the_first_packet_is_a_violation() {
        let below = [
            (-1i64, 0u32), // largest = first - 1
            (0, u32::MAX), // largest = first, 32 earlier packets
            (3, 0b1111),   // largest = first + 3, bit 3 is first - 1
            (1, 0b10),     // bit 1 of first + 1 is first - 1
        ];
        for (offset, bits) in below {
            let mut f = Fixture::new();
            let (mut c, first) = with_history(&mut f, 4);
            let ack = Ack {
                largest: first.wrapping_add_signed(offset) as u16,
                delay: 0,
                bits,
            };
            c.on_ack(f.now, ack, &mut f.ctx());
            assert_eq!(
                c.reason,
                Some(DisconnectReason::Violation(Violation::AckOfUnsent)),
                "largest first{offset:+}, bits {bits:#b}"
            );
        }
        let mut f = Fixture::new();
        let (mut c, first) = with_history(&mut f, 4);
        let ack = Ack {
            largest: (first + 3) as u16,
            delay: 0,
            bits: 0b111,
        };
        c.on_ack(f.now + MS * 40, ack, &mut f.ctx());
        assert_eq!(c.state, State::Open);
        assert!(c.sent.iter().all(|p| p.acked) || c.sent.is_empty());
    }

    /// What `on_ack` did before [`AckWalk`]: for each number the frame reports, newest
    /// first, stopping below the oldest packet on record, a binary search of the record.
    /// The indices of the packets it found, in that order.
    fn searched(sent: &VecDeque<SentPacket>, largest: u64, bits: u32) -> Vec<usize> {
        let Some(front) = sent.front().map(|p| p.pn) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for pn in acked_pns(largest, bits) {
            if pn < front {
                break;
            }
            if let Ok(i) = sent.binary_search_by_key(&pn, |p| p.pn) {
                found.push(i);
            }
        }
        found
    }

    fn walked(sent: &VecDeque<SentPacket>, largest: u64, bits: u32) -> Vec<usize> {
        let mut walk = AckWalk::new(sent, largest, bits);
        std::iter::from_fn(|| walk.next(sent)).collect()
    }

    /// A record of packets `base + o` for each offset `o`, sent at `t0 + o` ms, 100 bytes
    /// each, the ones marked in `acked` already acknowledged.
    fn record(
        t0: Instant,
        base: u64,
        offsets: &BTreeSet<u64>,
        acked: &[bool],
    ) -> VecDeque<SentPacket> {
        offsets
            .iter()
            .zip(acked.iter().chain(std::iter::repeat(&false)))
            .map(|(&o, &acked)| SentPacket {
                pn: base + o,
                time: t0 + MS * o as u32,
                log: 0,
                frames: 0,
                size: 100,
                acked,
                lost: false,
                drain: false,
                pmtu_probe: false,
            })
            .collect()
    }

    /// An ACK frame's bits: any, and the shapes acks mostly have (all set, none, a run).
    fn bits() -> impl Strategy<Value = u32> {
        prop_oneof![
            any::<u32>(),
            Just(u32::MAX),
            Just(0),
            (0u32..=32).prop_map(|n| u32::MAX.checked_shr(32 - n).unwrap_or(0)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// The walk finds the packets on record the per-number search found, in the same
        /// order (newest first): records with gaps (numbers never sent or not
        /// ack-eliciting), frames reaching above, into and below the record, and
        /// records starting at 0 (numbers below zero) or at 2^32 (as on the wire).
        #[test]
        fn the_ack_walk_finds_what_the_per_number_search_found(
            base in prop_oneof![Just(0u64), Just(7), Just(1u64 << 32)],
            offsets in btree_set(0u64..96, 0..48),
            largest in 0u64..140,
            bits in bits(),
            stamped in vec(any::<bool>(), 48),
            asked in vec(any::<bool>(), 48),
        ) {
            let t0 = Instant::now();
            let sent = record(t0, base, &offsets, &[]);
            // From 20 below the record's first number to 44 above its last possible one.
            let largest = (base + largest).saturating_sub(20);
            let found = walked(&sent, largest, bits);
            prop_assert_eq!(&found, &searched(&sent, largest, bits));

            // The delivery stamps: some of the packets on record have one; they are looked
            // up for some of the packets acknowledged, newest first.
            let mut estimator = Estimator::new();
            let stamps: VecDeque<(u64, Stamp)> = sent
                .iter()
                .zip(&stamped)
                .filter(|&(_, &s)| s)
                .map(|(p, _)| (p.pn, estimator.on_sent(t0, 0)))
                .collect();
            let mut walk = StampWalk::new(Some(&stamps), largest);
            for (&i, &ask) in found.iter().zip(&asked) {
                if !ask {
                    continue;
                }
                let pn = sent[i].pn;
                prop_assert_eq!(
                    walk.find(&stamps, pn),
                    stamps.binary_search_by_key(&pn, |e| e.0).ok(),
                    "stamp of {}", pn
                );
            }
        }

        /// Through `on_ack`: the packets it marks acknowledged are the ones the per-number
        /// search found and that were not acknowledged already; the RTT is sampled exactly
        /// when the largest is newly acknowledged; a frame reaching outside what was sent
        /// is a violation that changes nothing.
        #[test]
        fn on_ack_marks_what_the_per_number_search_found(
            offsets in btree_set(0u64..80, 1..40),
            acked in vec(any::<bool>(), 40),
            largest in 0u64..100,
            bits in bits(),
        ) {
            let mut f = Fixture::new();
            let mut c = f.conn();
            let first = c.next_pn;
            c.sent = record(f.now, first, &offsets, &acked);
            c.next_pn = first + 80;
            c.bytes_in_flight = 100 * c.sent.iter().filter(|p| !p.acked).count() as u32;
            let before = c.sent.clone();
            // From 4 below the first number sent to 16 above the last.
            let largest = first + largest - 4;
            let newly: BTreeSet<u64> = searched(&before, largest, bits)
                .into_iter()
                .filter(|&i| !before[i].acked)
                .map(|i| before[i].pn)
                .collect();
            let ack = Ack { largest: largest as u16, delay: 0, bits };
            c.on_ack(f.now + MS * 100, ack, &mut f.ctx());

            if largest >= c.next_pn || lowest_acked(largest, bits) < first {
                prop_assert_eq!(
                    c.reason,
                    Some(DisconnectReason::Violation(Violation::AckOfUnsent))
                );
                return Ok(());
            }
            prop_assert_eq!(c.state, State::Open);
            prop_assert_eq!(c.rtt.has_sample(), newly.contains(&largest));
            // Loss detection may declare the rest lost, and trimming drop resolved
            // packets from the front: a packet gone is acknowledged, or lost and below
            // the window kept for late acks.
            let keep_from = c.largest_acked.saturating_sub(RX_WINDOW);
            for p in &before {
                let expected = p.acked || newly.contains(&p.pn);
                match c.sent.iter().find(|q| q.pn == p.pn) {
                    Some(q) => prop_assert_eq!(q.acked, expected, "packet {}", p.pn),
                    None => prop_assert!(expected || p.pn < keep_from, "packet {} gone", p.pn),
                }
            }
        }
    }

    #[test]
    fn a_second_ack_of_the_same_packets_changes_nothing() {
        let mut f = Fixture::new();
        let (mut c, first) = with_history(&mut f, 4);
        let ack = Ack {
            largest: (first + 3) as u16,
            delay: 0,
            bits: 0b10,
        };
        c.on_ack(f.now + MS * 70, ack, &mut f.ctx());
        let flags = |c: &Conn| c.sent.iter().map(|p| (p.acked, p.lost)).collect::<Vec<_>>();
        // The two not acknowledged are lost by time (sent at 0 and 20 ms, 45 ms threshold).
        assert_eq!(
            flags(&c),
            [(false, true), (true, false), (false, true), (true, false)]
        );
        let (in_flight, rtt, smoothed) = (c.bytes_in_flight, c.rtt.latest(), c.rtt.smoothed());
        c.on_ack(f.now + MS * 90, ack, &mut f.ctx());
        assert_eq!(
            flags(&c),
            [(false, true), (true, false), (false, true), (true, false)]
        );
        assert_eq!(c.bytes_in_flight, in_flight);
        assert_eq!(
            (c.rtt.latest(), c.rtt.smoothed()),
            (rtt, smoothed),
            "no second RTT sample"
        );
        assert_eq!(f.stats.spurious_losses, 0);
    }
}
