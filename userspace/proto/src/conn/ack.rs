//! The receive side's packet-number record and the ACK frame that reports it: the
//! largest number received and a bitfield of the 64 below it (RFC 9000 §13.2; the frame
//! carries 32 of them, docs/PROTOCOL.md §5.2), and when an ack is due.

use std::time::Instant;

use super::{ACK_ELICITING_THRESHOLD, Conn, Ctx, Deadline, RX_WINDOW};
use crate::packet::{ACK_DELAY_UNIT_US, Ack, expand16};

impl Conn {
    /// The full number of a received packet with wire number `wire`, or `None` if it was
    /// received before or is too old to tell.
    pub(super) fn received_pn(&self, wire: u16) -> Option<u64> {
        if !self.rx_any() {
            // Before any packet, `rx_largest` holds the peer's first number (Conn::new).
            return Some(expand16(self.rx_largest, wire));
        }
        let pn = expand16(self.rx_largest + 1, wire);
        (!is_duplicate(self.rx_largest, self.rx_bits, pn)).then_some(pn)
    }

    /// Records packet `pn` (not a duplicate) as received at `now`.
    /// `epoch` is the endpoint's (`Ctx::epoch`).
    pub(super) fn record_received(&mut self, now: Instant, pn: u64, epoch: Instant) {
        let ns = u64::try_from(now.saturating_duration_since(epoch).as_nanos())
            .unwrap_or(u64::MAX - 1)
            + 1;
        if !self.rx_any() {
            self.rx_largest = pn;
            self.rx_bits = 0;
            self.rx_largest_ns = ns;
            return;
        }
        let newer = pn > self.rx_largest;
        let (largest, bits, ack_now) = record(self.rx_largest, self.rx_bits, pn);
        self.rx_largest = largest;
        self.rx_bits = bits;
        if ack_now {
            self.ack_now = true;
        }
        if newer {
            self.rx_largest_ns = ns;
        }
    }

    /// After a packet is processed: counts it towards an ack if it was ack-eliciting, and
    /// sends the ack at once (RFC 9000 §13.2.2) or arms the delayed-ack deadline.
    pub(super) fn arm_ack(&mut self, now: Instant, eliciting: bool, ctx: &Ctx<'_>) {
        if eliciting {
            self.ack_pending = self.ack_pending.saturating_add(1);
            if self.ack_pending >= ACK_ELICITING_THRESHOLD {
                self.ack_now = true;
            } else if self.timers[Deadline::Ack as usize].is_none() {
                self.timers[Deadline::Ack as usize] = Some(now + ctx.ack_delay);
            }
        } else if self.ack_pending == 0 {
            self.ack_now = false;
        }
    }

    /// The ACK frame for what has been received, with the delay since the largest arrived.
    pub(super) fn ack_frame(&self, now: Instant, epoch: Instant) -> Ack {
        let delay = if self.rx_any() {
            let now_ns = u64::try_from(now.saturating_duration_since(epoch).as_nanos())
                .unwrap_or(u64::MAX - 1)
                + 1;
            now_ns.saturating_sub(self.rx_largest_ns) / 1000
        } else {
            0
        };
        Ack {
            largest: self.rx_largest as u16,
            delay: (delay / ACK_DELAY_UNIT_US).min(u64::from(u16::MAX)) as u16,
            bits: self.rx_bits as u32,
        }
    }
}

/// Whether `pn` is the largest received, is marked in `bits` (bit `d - 1` for
/// `largest - d`), or is more than [`RX_WINDOW`] below the largest.
fn is_duplicate(largest: u64, bits: u64, pn: u64) -> bool {
    if pn > largest {
        return false;
    }
    let d = largest - pn;
    d == 0 || d > RX_WINDOW || bits & (1 << (d - 1)) != 0
}

/// The record `(largest, bits)` after receiving `pn` (not a duplicate), and whether an
/// ack is due at once: a packet skipped, or one arriving out of order, is reported soon
/// so that the sender learns of the gap.
fn record(largest: u64, bits: u64, pn: u64) -> (u64, u64, bool) {
    if pn > largest {
        let shift = pn - largest;
        let bits = if shift >= 64 {
            0
        } else {
            (bits << shift) | (1 << (shift - 1))
        };
        (pn, bits, shift > 1)
    } else {
        let d = largest - pn;
        (largest, bits | 1 << (d - 1), true)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixture::{Fixture, PEER_SEQ};
    use super::super::recovery::acked_pns;
    use super::{is_duplicate, record};
    use crate::packet::ACK_DELAY_UNIT_US;

    #[test]
    fn duplicates_are_the_largest_the_marked_and_the_too_old() {
        // 100 received, and 98 (bit 1).
        let bits = 0b10;
        assert!(is_duplicate(100, bits, 100));
        assert!(is_duplicate(100, bits, 98));
        assert!(!is_duplicate(100, bits, 99));
        assert!(!is_duplicate(100, bits, 101));
        assert!(!is_duplicate(100, bits, 100 - 64));
        assert!(is_duplicate(100, bits, 100 - 65));
    }

    #[test]
    fn record_shifts_the_bitfield_and_asks_for_an_ack_on_a_gap() {
        // In order: no gap.
        assert_eq!(record(100, 0, 101), (101, 0b1, false));
        // Two skipped: 100 is now three below the largest (bit 2).
        assert_eq!(record(100, 0, 103), (103, 0b100, true));
        // One of the skipped arrives late: marked, and acked at once.
        assert_eq!(record(103, 0b100, 101), (103, 0b110, true));
        // A jump past the bitfield forgets it.
        assert_eq!(record(100, u64::MAX, 164), (164, 0, true));
    }

    #[test]
    fn ack_frame_round_trips_through_the_senders_parse() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        let first = (1u64 << 32) + u64::from(PEER_SEQ);
        let received = [0, 1, 3, 4, 7, 2].map(|k| first + k);
        for (i, &pn) in received.iter().enumerate() {
            let wire = pn as u16;
            assert_eq!(c.received_pn(wire), Some(pn), "packet {i}");
            c.record_received(f.now, pn, f.now);
        }
        assert_eq!(c.received_pn(first as u16 + 3), None, "a duplicate");
        let ack = c.ack_frame(f.now + Duration::from_micros(80 * ACK_DELAY_UNIT_US), f.now);
        assert_eq!(ack.delay, 80);
        assert_eq!(u64::from(ack.largest), (first + 7) & 0xffff);
        let mut parsed: Vec<u64> = acked_pns(first + 7, ack.bits).collect();
        parsed.sort_unstable();
        let mut expected = received.to_vec();
        expected.sort_unstable();
        assert_eq!(parsed, expected);
    }

    #[test]
    fn second_eliciting_packet_makes_the_ack_due() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        let now = f.now;
        let ctx = f.ctx();
        c.arm_ack(now, true, &ctx);
        assert!(!c.ack_now);
        assert_eq!(
            c.timers[super::Deadline::Ack as usize],
            Some(now + ctx.ack_delay)
        );
        c.arm_ack(now, true, &ctx);
        assert!(c.ack_now);
    }
}
