//! Per-channel delivery of received messages (docs/PROTOCOL.md §6): unreliable ones at
//! once, sequenced ones only if newer than the last, reliable ones within the receive
//! window — held until their turn on an ordered channel, at once on an unordered one
//! (with a marker so that a duplicate is recognised).

use super::streams::streams_of;
use super::{Conn, Ctx, MESSAGE_WINDOW, State};
use crate::config::ChannelKind;

/// A reliable message received ahead of its channel's next expected sequence number.
#[derive(Debug, Default)]
pub(super) struct Held {
    pub(super) data: Vec<u8>,
    pub(super) frag: Option<(u16, u16)>,
    /// An unordered channel's marker for a message already delivered.
    pub(super) delivered: bool,
}

impl Conn {
    /// A message (or fragment, with its index and count) arrived on `channel`.
    pub(super) fn on_message(
        &mut self,
        channel: u8,
        seq: u16,
        frag: Option<(u16, u16)>,
        data: &[u8],
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
    ) {
        match ctx.channels[usize::from(channel)] {
            ChannelKind::Unreliable => {
                let mut buf = ctx.pool.get(data.len());
                buf.extend_from_slice(data);
                self.deliver(channel, buf, ctx, deliver);
            }
            ChannelKind::UnreliableSequenced => self.on_sequenced(channel, seq, data, ctx, deliver),
            ChannelKind::ReliableOrdered | ChannelKind::ReliableUnordered => {
                self.on_reliable(channel, seq, frag, data, ctx, deliver);
            }
        }
    }

    /// Hands a whole message to the application, counting it against the receive buffer.
    pub(super) fn deliver(
        &mut self,
        channel: u8,
        buf: Vec<u8>,
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
    ) {
        self.recv_used += buf.len() as u32;
        ctx.stats.messages_in += 1;
        deliver(channel, buf);
    }

    /// Delivers a sequenced message only if newer than the last delivered (16-bit serial
    /// arithmetic); an older one is dropped as stale.
    fn on_sequenced(
        &mut self,
        channel: u8,
        seq: u16,
        data: &[u8],
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
    ) {
        let ch = usize::from(channel);
        if serial_diff(seq, self.recv_next[ch]) < 0 {
            ctx.stats.stale_dropped += 1;
            return;
        }
        self.recv_next[ch] = seq.wrapping_add(1);
        let mut buf = ctx.pool.get(data.len());
        buf.extend_from_slice(data);
        self.deliver(channel, buf, ctx, deliver);
    }

    /// A reliable message: dropped if already received or beyond the window, else held
    /// or delivered by the channel's ordering.
    fn on_reliable(
        &mut self,
        channel: u8,
        seq: u16,
        frag: Option<(u16, u16)>,
        data: &[u8],
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
    ) {
        let ch = usize::from(channel);
        let d = serial_diff(seq, self.recv_next[ch]);
        if d < 0 {
            ctx.stats.duplicate_messages += 1;
            return;
        }
        let d = d.unsigned_abs() as usize;
        if d >= MESSAGE_WINDOW {
            // Beyond the window the sender may use: it will be sent again.
            ctx.stats.duplicate_messages += 1;
            return;
        }
        if !self.hold(ch, d, frag, data, ctx) {
            return;
        }
        if ctx.channels[ch] == ChannelKind::ReliableUnordered {
            self.deliver_unordered(channel, seq, frag, data, ctx, deliver);
        } else if d == 0 {
            self.deliver_in_order(channel, seq, frag, data, ctx, deliver);
        }
    }

    /// Holds the message `d` places ahead of the channel's next expected one (a copy on
    /// an ordered channel, a delivered marker on an unordered one; the next expected one
    /// on an ordered channel is not held); false, counting it, if it is a duplicate.
    fn hold(
        &mut self,
        ch: usize,
        d: usize,
        frag: Option<(u16, u16)>,
        data: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> bool {
        let unordered = ctx.channels[ch] == ChannelKind::ReliableUnordered;
        let s = streams_of(&mut self.streams, ctx.channels.len());
        let held = &mut s.held[ch];
        if held.get(d).is_some_and(Option::is_some) {
            ctx.stats.duplicate_messages += 1;
            return false;
        }
        if d > 0 || unordered {
            if held.len() <= d {
                held.resize_with(d + 1, || None);
            }
            if unordered {
                held[d] = Some(Held {
                    data: Vec::new(),
                    frag: None,
                    delivered: true,
                });
            } else {
                let mut buf = ctx.pool.get(data.len());
                buf.extend_from_slice(data);
                self.recv_used += buf.len() as u32;
                held[d] = Some(Held {
                    data: buf,
                    frag,
                    delivered: false,
                });
            }
        }
        true
    }

    /// Unordered: delivers at once, then advances the channel past the contiguous run of
    /// delivered markers.
    fn deliver_unordered(
        &mut self,
        channel: u8,
        seq: u16,
        frag: Option<(u16, u16)>,
        data: &[u8],
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
    ) {
        let ch = usize::from(channel);
        let mut buf = ctx.pool.get(data.len());
        buf.extend_from_slice(data);
        self.ready(channel, seq, frag, buf, ctx, deliver);
        let s = streams_of(&mut self.streams, ctx.channels.len());
        while s.held[ch]
            .front()
            .is_some_and(|h| h.as_ref().is_some_and(|h| h.delivered))
        {
            s.held[ch].pop_front();
            self.recv_next[ch] = self.recv_next[ch].wrapping_add(1);
        }
    }

    /// Ordered, the next expected message: delivers it, then everything held that is now
    /// in order.
    fn deliver_in_order(
        &mut self,
        channel: u8,
        seq: u16,
        frag: Option<(u16, u16)>,
        data: &[u8],
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
    ) {
        let ch = usize::from(channel);
        let mut buf = ctx.pool.get(data.len());
        buf.extend_from_slice(data);
        self.recv_next[ch] = seq.wrapping_add(1);
        if let Some(s) = self.streams.as_deref_mut()
            && !s.held[ch].is_empty()
        {
            s.held[ch].pop_front();
        }
        self.ready(channel, seq, frag, buf, ctx, deliver);
        self.drain_held(channel, ctx, deliver);
    }

    /// Delivers the held messages at the front of an ordered channel, in order.
    fn drain_held(&mut self, channel: u8, ctx: &mut Ctx<'_>, deliver: &mut dyn FnMut(u8, Vec<u8>)) {
        let ch = usize::from(channel);
        #[expect(
            clippy::while_let_loop,
            reason = "three nested conditions read clearer as lets"
        )]
        loop {
            let Some(s) = self.streams.as_deref_mut() else {
                break;
            };
            let Some(Some(_)) = s.held[ch].front() else {
                break;
            };
            let Some(Some(h)) = s.held[ch].pop_front() else {
                break;
            };
            self.recv_used -= h.data.len() as u32;
            let seq = self.recv_next[ch];
            self.recv_next[ch] = seq.wrapping_add(1);
            self.ready(channel, seq, h.frag, h.data, ctx, deliver);
            if self.state != State::Open {
                return;
            }
        }
    }
}

/// `a - b` in 16-bit serial number arithmetic (RFC 1982): negative if `a` is older.
fn serial_diff(a: u16, b: u16) -> i16 {
    i16::from_ne_bytes(a.wrapping_sub(b).to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{Fixture, PEER_SEQ};
    use super::super::{Conn, MESSAGE_WINDOW};
    use super::serial_diff;

    const ORDERED: u8 = 0;
    const UNORDERED: u8 = 1;
    const SEQUENCED: u8 = 3;

    /// Feeds whole messages `(seq offset from PEER_SEQ, byte)` on `channel`; returns the
    /// bytes delivered, in order.
    fn feed(f: &mut Fixture, c: &mut Conn, channel: u8, msgs: &[(u16, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(k, b) in msgs {
            let seq = PEER_SEQ.wrapping_add(k);
            c.on_message(channel, seq, None, &[b], &mut f.ctx(), &mut |ch, d| {
                assert_eq!(ch, channel);
                out.push(d[0]);
            });
        }
        out
    }

    #[test]
    fn serial_diff_wraps() {
        assert_eq!(serial_diff(1, 0), 1);
        assert_eq!(serial_diff(0, 1), -1);
        assert_eq!(serial_diff(0, u16::MAX), 1);
        assert_eq!(serial_diff(0x8000, 0), i16::MIN);
    }

    #[test]
    fn ordered_channel_holds_until_the_gap_fills() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        assert_eq!(feed(&mut f, &mut c, ORDERED, &[(2, b'c'), (1, b'b')]), b"");
        assert!(c.recv_used > 0, "held messages count against the buffer");
        assert_eq!(feed(&mut f, &mut c, ORDERED, &[(0, b'a')]), b"abc");
        assert_eq!(c.recv_next[0], PEER_SEQ.wrapping_add(3));
        // Already delivered: a duplicate.
        assert_eq!(feed(&mut f, &mut c, ORDERED, &[(1, b'x')]), b"");
        assert_eq!(f.stats.duplicate_messages, 1);
    }

    #[test]
    fn ordered_channel_drops_a_duplicate_while_held() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        assert_eq!(feed(&mut f, &mut c, ORDERED, &[(1, b'b'), (1, b'x')]), b"");
        assert_eq!(f.stats.duplicate_messages, 1);
        assert_eq!(feed(&mut f, &mut c, ORDERED, &[(0, b'a')]), b"ab");
    }

    #[test]
    fn unordered_channel_delivers_at_once_and_once() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        assert_eq!(
            feed(&mut f, &mut c, UNORDERED, &[(2, b'c'), (2, b'x')]),
            b"c"
        );
        assert_eq!(f.stats.duplicate_messages, 1);
        assert_eq!(c.recv_next[1], PEER_SEQ, "a gap below");
        assert_eq!(
            feed(&mut f, &mut c, UNORDERED, &[(0, b'a'), (1, b'b')]),
            b"ab"
        );
        assert_eq!(c.recv_next[1], PEER_SEQ.wrapping_add(3), "past the run");
    }

    #[test]
    fn sequenced_channel_drops_older_than_the_last_delivered() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        let got = feed(
            &mut f,
            &mut c,
            SEQUENCED,
            &[(5, b'f'), (3, b'd'), (6, b'g')],
        );
        assert_eq!(got, b"fg");
        assert_eq!(f.stats.stale_dropped, 1);
    }

    #[test]
    fn reliable_message_beyond_the_window_is_dropped() {
        let mut f = Fixture::new();
        let mut c = f.conn();
        let far = MESSAGE_WINDOW as u16;
        assert_eq!(feed(&mut f, &mut c, UNORDERED, &[(far, b'z')]), b"");
        assert_eq!(f.stats.duplicate_messages, 1);
        assert_eq!(feed(&mut f, &mut c, UNORDERED, &[(far - 1, b'y')]), b"y");
    }
}
