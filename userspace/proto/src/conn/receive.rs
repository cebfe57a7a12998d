//! The receive side's entry point: a `Data` packet is checked whole (every frame decodes,
//! its messages fit the receive buffer or make progress) before any frame takes effect,
//! then its frames are dispatched to ack processing, the channels and reassembly.

use std::time::Instant;

use super::reassembly::MIN_FRAGMENT;
use xrudp_common::rudp::HEADER_LEN;

use super::transmit::nonce_counter;
use super::{Conn, Ctx, Deadline, Drain, State, Violation};
use crate::config::ChannelKind;
use crate::packet::{DATA_PREFIX_LEN, DecodeError, Frame, Frames, Reader};

/// Largest datagram a protected connection opens (the largest MTU, §1); longer ones are
/// dropped.
pub(crate) const MAX_DATAGRAM: usize = 1472;

impl Conn {
    /// Opens a protected `Data` or `Disconnect` packet (docs/PROTOCOL.md §13.4) into
    /// `scratch` (at least [`MAX_DATAGRAM`] bytes, the endpoint's one buffer; untouched
    /// for an unprotected connection) and returns its body after the fixed header (packet
    /// number first), or
    /// `None` (counted in `auth_failed`) if it does not authenticate. An unprotected
    /// connection returns the body as it is.
    pub(crate) fn unprotect<'a>(
        &mut self,
        datagram: &'a [u8],
        scratch: &'a mut [u8],
        ctx: &mut Ctx<'_>,
    ) -> Option<&'a [u8]> {
        let rx_any = self.rx_any();
        let Some(keys) = self.keys.as_deref_mut() else {
            return Some(&datagram[HEADER_LEN..]);
        };
        let header_len = HEADER_LEN + DATA_PREFIX_LEN;
        let opened = (|| {
            let packet = scratch.get_mut(..datagram.len())?;
            let wire = u16::from_be_bytes(datagram.get(HEADER_LEN..header_len)?.try_into().ok()?);
            let expected = self.rx_largest + u64::from(rx_any);
            let pn = crate::packet::expand16(expected, wire);
            packet.copy_from_slice(datagram);
            let end = keys
                .keys
                .open
                .open_packet(nonce_counter(pn)?, packet, header_len)
                .ok()?;
            Some(end)
        })();
        let Some(end) = opened else {
            ctx.stats.auth_failed += 1;
            return None;
        };
        Some(&scratch[HEADER_LEN..end])
    }

    /// Handles a `Data` packet body (after the fixed header). `deliver` receives messages.
    /// Returns the drain notice the packet carried, if it carried one.
    pub(crate) fn handle_data(
        &mut self,
        now: Instant,
        body: &[u8],
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
    ) -> Option<Drain> {
        let mut notice = None;
        self.handle_data_frames(now, body, ctx, deliver, &mut notice);
        notice
    }

    fn handle_data_frames(
        &mut self,
        now: Instant,
        body: &[u8],
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
        notice: &mut Option<Drain>,
    ) {
        if self.state != State::Open {
            return;
        }
        let mut r = Reader::new(body);
        let Ok(wire_pn) = r.u16() else {
            ctx.stats.decode_errors[DecodeError::Truncated.index()] += 1;
            return;
        };
        let frames_body = &body[DATA_PREFIX_LEN..];
        let Some(pn) = self.received_pn(wire_pn) else {
            if self.is_protected() {
                // It authenticated, so it is a copy of a packet already received: a
                // replay (or a duplicate the network made).
                ctx.stats.replayed += 1;
            } else {
                ctx.stats.duplicate_packets += 1;
            }
            return;
        };
        // Pass 1: the whole packet must decode, and its messages must fit the receive
        // buffer (or make progress), before anything in it takes effect.
        let Some((msg_bytes, progress)) = self.check_frames(frames_body, ctx) else {
            return;
        };
        if self.recv_used as usize + msg_bytes > ctx.transport.recv_buffer && !progress {
            ctx.stats.recv_buffer_full += 1;
            return;
        }
        // Pass 2.
        self.timers[Deadline::Idle as usize] = Some(now + ctx.idle_timeout);
        let Some((eliciting, ping)) = self.dispatch_frames(now, frames_body, ctx, deliver, notice)
        else {
            return;
        };
        // Record the packet number (RFC 9000 §13.2: acks carry the largest and a bitfield).
        self.record_received(now, pn, ctx.epoch);
        self.arm_ack(now, eliciting, ctx);
        if ping {
            // A PING asks for an undelayed ack: the sender's RTT sample (§7.1).
            self.ack_now = true;
        }
    }

    /// Pass 1: whether every frame decodes (if not, closes with a violation and returns
    /// `None`); the message bytes the packet carries, and whether one of them is the next
    /// expected on a reliable ordered channel (progress, accepted even when the receive
    /// buffer is full).
    fn check_frames(&mut self, frames_body: &[u8], ctx: &mut Ctx<'_>) -> Option<(usize, bool)> {
        let channels = ctx.channels;
        let has_seq = |c: u8| channels.get(usize::from(c)).map(|k| k.has_seq());
        let mut msg_bytes = 0usize;
        let mut progress = false;
        for f in Frames::new(frames_body, has_seq) {
            match f {
                Err(_) => {
                    ctx.stats.violations += 1;
                    self.violate(Violation::MalformedFrame, ctx.pool);
                    return None;
                }
                Ok(
                    Frame::Message { channel, seq, data }
                    | Frame::Fragment {
                        channel, seq, data, ..
                    },
                ) => {
                    msg_bytes += data.len();
                    if channels[usize::from(channel)] == ChannelKind::ReliableOrdered
                        && seq == self.recv_next[usize::from(channel)]
                    {
                        progress = true;
                    }
                }
                Ok(_) => {}
            }
        }
        Some((msg_bytes, progress))
    }

    /// Pass 2: acts on each frame in order; returns whether the packet was ack-eliciting
    /// and whether it held a PING, or `None` if a frame closed the connection.
    fn dispatch_frames(
        &mut self,
        now: Instant,
        frames_body: &[u8],
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
        notice: &mut Option<Drain>,
    ) -> Option<(bool, bool)> {
        let channels = ctx.channels;
        let has_seq = |c: u8| channels.get(usize::from(c)).map(|k| k.has_seq());
        let (mut eliciting, mut ping) = (false, false);
        for f in Frames::new(frames_body, has_seq).flatten() {
            match f {
                Frame::Ack(ack) => self.on_ack(now, ack, ctx),
                Frame::Ping => (eliciting, ping) = (true, true),
                Frame::PathChallenge(data) => self.on_path_challenge(data),
                Frame::PathResponse(data) => self.on_path_response(data),
                Frame::Drain(redirect) => {
                    // Ack-eliciting, so that the server learns the notice arrived; a
                    // server ignores it (only servers drain).
                    eliciting = true;
                    *notice = Some(Drain(redirect));
                }
                Frame::Message { channel, seq, data } => {
                    eliciting = true;
                    self.on_message(channel, seq, None, data, ctx, deliver);
                }
                Frame::Fragment {
                    channel,
                    seq,
                    index,
                    count,
                    data,
                } => {
                    eliciting = true;
                    if let Err(v) = check_fragment(ctx, channel, count) {
                        ctx.stats.violations += 1;
                        self.violate(v, ctx.pool);
                        return None;
                    }
                    self.on_message(channel, seq, Some((index, count)), data, ctx, deliver);
                }
            }
            if self.state != State::Open {
                return None;
            }
        }
        Some((eliciting, ping))
    }
}

/// A fragment must travel on a reliable channel, and its message must not have more
/// fragments than the maximum message size allows.
pub(super) fn check_fragment(ctx: &Ctx<'_>, channel: u8, count: u16) -> Result<(), Violation> {
    if !ctx.channels[usize::from(channel)].is_reliable() {
        return Err(Violation::BadFragment);
    }
    // Every fragment but the last fills a packet (over 1100 bytes at the smallest MTU), so
    // more fragments than this exceed the maximum size.
    if usize::from(count) > ctx.transport.max_message_size / MIN_FRAGMENT + 1 {
        return Err(Violation::MessageTooLarge);
    }
    Ok(())
}
