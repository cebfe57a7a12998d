//! Fragments back into messages (docs/PROTOCOL.md §6.3). A reliable channel delivers the
//! fragments of a message in its own order; each joins the reassembly of its message
//! (keyed by channel and first sequence number). Bounded: at most [`MAX_REASSEMBLIES`]
//! at once, none above the maximum message size, and every fragment of a message must
//! agree on the fragment count — otherwise the connection closes with a violation.

use xrudp_common::rudp::HEADER_LEN;

use super::streams::streams_of;
use super::{Conn, Ctx, Violation};
use crate::packet::{ACK_FRAME_LEN, DATA_PREFIX_LEN, FRAGMENT_OVERHEAD};
use crate::pool::Parts;

/// The smallest fragment payload a sender produces (every fragment but the last), at the
/// smallest MTU of a protected connection (whose packets carry a tag).
pub(super) const MIN_FRAGMENT: usize = 1200
    - HEADER_LEN
    - DATA_PREFIX_LEN
    - ACK_FRAME_LEN
    - FRAGMENT_OVERHEAD
    - crate::crypto::TAG_LEN;

/// Reassemblies in progress per connection, at most.
const MAX_REASSEMBLIES: usize = 32;

/// A fragmented message being put back together.
#[derive(Debug)]
pub(super) struct Reassembly {
    channel: u8,
    base: u16,
    count: u16,
    /// Bytes of the parts so far.
    bytes: usize,
    pub(super) parts: Parts,
}

impl Conn {
    /// A reliable message or fragment is ready in its channel's order: deliver it, or add
    /// it to its reassembly.
    pub(super) fn ready(
        &mut self,
        channel: u8,
        seq: u16,
        frag: Option<(u16, u16)>,
        buf: Vec<u8>,
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
    ) {
        let Some((index, count)) = frag else {
            self.deliver(channel, buf, ctx, deliver);
            return;
        };
        let base = seq.wrapping_sub(index);
        let len = buf.len() as u32;
        let i = match self.reassembly(channel, base, count, ctx) {
            Ok(i) => i,
            Err(v) => {
                ctx.pool.put(buf);
                ctx.stats.violations += 1;
                self.violate(v, ctx.pool);
                return;
            }
        };
        let s = streams_of(&mut self.streams, ctx.channels.len());
        s.reasm[i].parts.push((index, buf));
        s.reasm[i].bytes += len as usize;
        let total = s.reasm[i].bytes;
        self.recv_used += len;
        if total > ctx.transport.max_message_size {
            ctx.stats.violations += 1;
            self.violate(Violation::MessageTooLarge, ctx.pool);
            return;
        }
        let Some(s) = self.streams.as_deref_mut() else {
            return;
        };
        if s.reasm[i].parts.len() < usize::from(count) {
            return;
        }
        self.complete(i, channel, total, ctx, deliver);
    }

    /// The index of the reassembly of the message on `channel` starting at `base`, started
    /// if new; the violation if `count` contradicts it, or too many are in progress.
    fn reassembly(
        &mut self,
        channel: u8,
        base: u16,
        count: u16,
        ctx: &mut Ctx<'_>,
    ) -> Result<usize, Violation> {
        let s = streams_of(&mut self.streams, ctx.channels.len());
        let pos = s
            .reasm
            .iter()
            .position(|r| r.channel == channel && r.base == base);
        if let Some(i) = pos {
            if s.reasm[i].count != count {
                return Err(Violation::BadFragment);
            }
            return Ok(i);
        }
        if s.reasm.len() >= MAX_REASSEMBLIES {
            return Err(Violation::MessageTooLarge);
        }
        s.reasm.push(Reassembly {
            channel,
            base,
            count,
            bytes: 0,
            parts: ctx.pool.parts(usize::from(count)),
        });
        Ok(s.reasm.len() - 1)
    }

    /// Every fragment of reassembly `i` is in: joins them in index order and delivers
    /// the message.
    fn complete(
        &mut self,
        i: usize,
        channel: u8,
        total: usize,
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
    ) {
        let Some(s) = self.streams.as_deref_mut() else {
            return;
        };
        let mut r = s.reasm.swap_remove(i);
        r.parts.sort_unstable_by_key(|p| p.0);
        let mut whole = ctx.pool.get(total);
        for (_, p) in &r.parts {
            whole.extend_from_slice(p);
        }
        ctx.pool.put_parts(r.parts);
        self.recv_used -= total as u32;
        ctx.stats.reassembled += 1;
        self.deliver(channel, whole, ctx, deliver);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{Fixture, PEER_SEQ};
    use super::super::{Conn, Ctx, DisconnectReason, State, Violation};
    use super::{MAX_REASSEMBLIES, MIN_FRAGMENT};
    use crate::conn::receive::check_fragment;

    const ORDERED: u8 = 0;
    const UNORDERED: u8 = 1;
    const UNRELIABLE: u8 = 2;

    /// Feeds fragment `index` of `count` of the message starting at `PEER_SEQ + base`,
    /// `len` bytes of `index`; returns the messages delivered.
    fn fragment(
        f: &mut Fixture,
        c: &mut Conn,
        channel: u8,
        base: u16,
        (index, count): (u16, u16),
        len: usize,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let seq = PEER_SEQ.wrapping_add(base).wrapping_add(index);
        let data = vec![index as u8; len];
        let frag = Some((index, count));
        c.on_message(channel, seq, frag, &data, &mut f.ctx(), &mut |_, d| {
            out.push(d);
        });
        out
    }

    fn violation(c: &Conn) -> Option<DisconnectReason> {
        matches!(c.state, State::Closing { .. }).then_some(c.reason)?
    }

    #[test]
    fn fragments_in_any_order_join_in_index_order() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        assert!(fragment(&mut f, &mut c, UNORDERED, 0, (2, 3), 1).is_empty());
        assert!(fragment(&mut f, &mut c, UNORDERED, 0, (0, 3), 2).is_empty());
        let got = fragment(&mut f, &mut c, UNORDERED, 0, (1, 3), 2);
        assert_eq!(got, [vec![0, 0, 1, 1, 2]]);
        assert_eq!(f.stats.reassembled, 1);
        // Only the delivered message counts against the receive buffer now.
        assert_eq!(c.recv_used, 5);
        assert!(c.streams.as_ref().is_some_and(|s| s.reasm.is_empty()));
    }

    #[test]
    fn ordered_fragments_wait_for_their_turn() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        assert!(fragment(&mut f, &mut c, ORDERED, 0, (1, 2), 3).is_empty());
        let got = fragment(&mut f, &mut c, ORDERED, 0, (0, 2), 3);
        assert_eq!(got, [vec![0, 0, 0, 1, 1, 1]]);
    }

    #[test]
    fn duplicate_fragment_is_dropped_not_joined_twice() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        assert!(fragment(&mut f, &mut c, UNORDERED, 0, (0, 2), 4).is_empty());
        assert!(fragment(&mut f, &mut c, UNORDERED, 0, (0, 2), 4).is_empty());
        assert_eq!(f.stats.duplicate_messages, 1);
        let got = fragment(&mut f, &mut c, UNORDERED, 0, (1, 2), 1);
        assert_eq!(got, [vec![0, 0, 0, 0, 1]]);
    }

    #[test]
    fn contradicting_fragment_count_is_a_violation() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        fragment(&mut f, &mut c, UNORDERED, 0, (0, 3), 4);
        assert_eq!(violation(&c), None);
        // Same message (base 0), a different count.
        fragment(&mut f, &mut c, UNORDERED, 0, (1, 4), 4);
        assert_eq!(
            violation(&c),
            Some(DisconnectReason::Violation(Violation::BadFragment))
        );
        assert_eq!(f.stats.violations, 1);
    }

    #[test]
    fn reassembly_larger_than_the_maximum_message_is_a_violation() {
        let mut f = Fixture::new();
        f.transport.max_message_size = 2000;
        let mut c = f.conn();
        fragment(&mut f, &mut c, UNORDERED, 0, (0, 3), 1000);
        fragment(&mut f, &mut c, UNORDERED, 0, (1, 3), 1000);
        assert_eq!(violation(&c), None, "2000 bytes is the limit, not over it");
        fragment(&mut f, &mut c, UNORDERED, 0, (2, 3), 1);
        assert_eq!(
            violation(&c),
            Some(DisconnectReason::Violation(Violation::MessageTooLarge))
        );
    }

    #[test]
    fn reassemblies_in_progress_are_bounded() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        for k in 0..MAX_REASSEMBLIES as u16 {
            fragment(&mut f, &mut c, UNORDERED, 2 * k, (0, 2), 10);
        }
        assert_eq!(violation(&c), None);
        let k = MAX_REASSEMBLIES as u16;
        fragment(&mut f, &mut c, UNORDERED, 2 * k, (0, 2), 10);
        assert_eq!(
            violation(&c),
            Some(DisconnectReason::Violation(Violation::MessageTooLarge))
        );
    }

    #[test]
    fn fragment_checks_bound_the_count_and_the_channel() {
        let mut f = Fixture::new();
        let ctx: Ctx<'_> = f.ctx();
        let max = ctx.transport.max_message_size / MIN_FRAGMENT + 1;
        assert_eq!(check_fragment(&ctx, ORDERED, max as u16), Ok(()));
        assert_eq!(
            check_fragment(&ctx, ORDERED, max as u16 + 1),
            Err(Violation::MessageTooLarge)
        );
        assert_eq!(
            check_fragment(&ctx, UNRELIABLE, 2),
            Err(Violation::BadFragment)
        );
    }
}
