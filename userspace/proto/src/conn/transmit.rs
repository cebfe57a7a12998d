//! The send side: queueing messages (`send`) and writing the next packet
//! (`poll_transmit`) — the disconnect copies when closing, else one `Data` packet with
//! an ack, retransmissions, new reliable messages and unreliable ones, in that order.

use std::time::Instant;

use xrudp_common::rudp::{HEADER_LEN, PacketType};

use super::recovery::SentPacket;
use super::streams::{OutMsg, STAMP_ROOM, Streams, Unrel, streams_of};
use super::{
    Conn, Ctx, Deadline, DrainNotice, MESSAGE_WINDOW, RTT_PROBE_PACKETS, SendError, State,
};
use crate::config::ChannelKind;
use crate::congestion::Controller;
use crate::crypto::TAG_LEN;
use crate::packet::{
    self, ACK_FRAME_LEN, DATA_PREFIX_LEN, FRAGMENT_OVERHEAD, MESSAGE_OVERHEAD, Writer,
};
use crate::pool::BufPool;

/// The packet number the AEAD nonce and key epoch use: the count from the initial
/// sequence number *S*, `S + k` for the k-th packet (docs/PROTOCOL.md §13.4). Internally
/// numbers start at 2^32 + S.
pub(super) fn nonce_counter(pn: u64) -> Option<u64> {
    pn.checked_sub(1 << 32)
}

/// What `write_data` put in a packet.
#[derive(Debug, Default)]
struct Written {
    /// The packet's first entry in the frame log (absolute index).
    log_start: u64,
    /// Reliable frames (each logged).
    frames: u16,
    /// Whether any of them is a retransmission.
    retransmitted: bool,
    /// Whether the packet elicits an ack.
    eliciting: bool,
    /// Whether it carries the drain notice.
    drain: bool,
}

impl Conn {
    /// Queues a message.
    pub(crate) fn send(
        &mut self,
        channel: u8,
        data: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::NotConnected);
        }
        let Some(&kind) = ctx.channels.get(usize::from(channel)) else {
            return Err(SendError::BadChannel(channel));
        };
        let max = if kind.is_reliable() {
            ctx.transport.max_message_size
        } else {
            self.max_single()
        };
        if data.len() > max {
            return Err(SendError::TooLarge {
                len: data.len(),
                max,
            });
        }
        if self.send_used as usize + data.len() > ctx.transport.send_buffer {
            return Err(SendError::QueueFull);
        }
        if kind.is_reliable() {
            self.queue_reliable(channel, data, ctx)?;
        } else {
            self.queue_unreliable(channel, data, ctx);
        }
        self.send_used += data.len() as u32;
        Ok(())
    }

    /// Writes the next packet into `out`; returns its length.
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        out: &mut [u8],
        ctx: &mut Ctx<'_>,
    ) -> Option<usize> {
        match self.state {
            State::Closed => return None,
            State::Closing { copies, kind } => return self.poll_close(copies, kind, out, ctx),
            State::Open => {}
        }
        let probe = self.probes > 0;
        let has_data = self.wants_data();
        let may_send_data = self.may_send_data(now, probe, has_data);
        let ack_due = self.ack_pending > 0 && self.ack_now;
        let response = self.path_response();
        let drain_due = self.drain == DrainNotice::Unsent;
        if !(ack_due || probe || drain_due || response.is_some() || (has_data && may_send_data)) {
            // Nothing else to send: a path MTU probe may go (§5.5), never ahead of data.
            return self.poll_pmtu_probe(now, out, ctx);
        }
        // A PTO probe or keepalive is no larger than any frame, so it gets through when
        // larger datagrams fall into a black hole (§5.5).
        let mtu = if probe { self.frame_mtu() } else { self.mtu() };
        let limit = out.len().min(usize::from(mtu));
        let out = &mut out[..limit];
        let overhead = self.overhead();
        let pn = self.next_pn;
        let mut w = Writer::new(&mut out[..limit - overhead]);
        w.header(PacketType::Data, self.conn_id)?;
        w.u16(pn as u16)?;
        if self.rx_any() {
            packet::write_ack(&mut w, self.ack_frame(now, ctx.epoch))?;
        }
        if let Some(data) = response {
            packet::write_path(&mut w, true, data)?;
        }
        // Before any data, so that it always fits.
        let drain = matches!(self.drain, DrainNotice::Unsent | DrainNotice::InFlight)
            && packet::write_drain(&mut w, ctx.drain_to).is_some();
        let mut written = self.write_data(&mut w, may_send_data, ctx);
        if drain {
            written.eliciting = true;
            written.drain = true;
            self.drain = DrainNotice::InFlight;
        }
        let mut ping = false;
        if !written.eliciting && probe {
            w.u8(packet::frame::PING)?;
            written.eliciting = true;
            ping = true;
        } else if written.eliciting && self.since_ping >= RTT_PROBE_PACKETS {
            // Every RTT_PROBE_PACKETS a packet with data asks for an immediate ack (if the
            // byte fits), so min_rtt is the path's and not a delayed ack's.
            ping = w.u8(packet::frame::PING).is_some();
        }
        if ping {
            self.since_ping = 0;
        } else if written.eliciting {
            self.since_ping = self.since_ping.saturating_add(1);
        }
        if !written.eliciting && !ack_due && response.is_none() {
            return None;
        }
        let written_len = w.len();
        let len = self.protect(pn, out, HEADER_LEN + DATA_PREFIX_LEN, written_len)?;
        if response.is_some() {
            self.path_response_sent();
        }
        self.on_written(now, pn, len, probe, &written, ctx);
        Some(len)
    }

    /// Bytes a packet grows by when sealed.
    pub(super) fn overhead(&self) -> usize {
        if self.keys.is_some() { TAG_LEN } else { 0 }
    }

    /// Finishes a written packet `out[..len]`: seals `out[header_len..len]` with packet
    /// number `pn` if the connection is protected, then fills in the CRC. Returns the
    /// packet's final length.
    pub(super) fn protect(
        &mut self,
        pn: u64,
        out: &mut [u8],
        header_len: usize,
        len: usize,
    ) -> Option<usize> {
        let len = match self.keys.as_deref_mut() {
            Some(k) => k
                .keys
                .seal
                .seal_packet(nonce_counter(pn)?, out, header_len, len)?,
            None => len,
        };
        packet::seal(&mut out[..len]);
        Some(len)
    }

    /// Largest payload of a single MESSAGE frame in a packet that also carries an ack.
    pub(super) fn max_single(&self) -> usize {
        usize::from(self.frame_mtu())
            - self.overhead()
            - HEADER_LEN
            - DATA_PREFIX_LEN
            - ACK_FRAME_LEN
            - MESSAGE_OVERHEAD
    }

    /// Largest payload of a FRAGMENT frame in a packet that also carries an ack.
    fn max_fragment(&self) -> usize {
        usize::from(self.frame_mtu())
            - self.overhead()
            - HEADER_LEN
            - DATA_PREFIX_LEN
            - ACK_FRAME_LEN
            - FRAGMENT_OVERHEAD
    }

    /// Queues a reliable message whole, or as fragments if it does not fit one packet.
    fn queue_reliable(
        &mut self,
        channel: u8,
        data: &[u8],
        ctx: &mut Ctx<'_>,
    ) -> Result<(), SendError> {
        let single = self.max_single();
        let frag_size = self.max_fragment();
        let count = if data.len() <= single {
            1
        } else {
            data.len().div_ceil(frag_size)
        };
        if self.streams.as_ref().map_or(0, |s| s.msgs.len()) + count > MESSAGE_WINDOW {
            return Err(SendError::QueueFull);
        }
        let ch = usize::from(channel);
        let seq0 = self.send_seq[ch];
        self.send_seq[ch] = seq0.wrapping_add(count as u16);
        let s = streams_of(&mut self.streams, ctx.channels.len());
        if count == 1 {
            let mut buf = ctx.pool.get(data.len());
            buf.extend_from_slice(data);
            s.msgs.push_back(OutMsg::new(buf, channel, seq0, None));
        } else {
            for (i, chunk) in data.chunks(frag_size).enumerate() {
                let mut buf = ctx.pool.get(chunk.len());
                buf.extend_from_slice(chunk);
                let seq = seq0.wrapping_add(i as u16);
                let frag = Some((i as u16, count as u16));
                s.msgs.push_back(OutMsg::new(buf, channel, seq, frag));
            }
        }
        Ok(())
    }

    /// Queues an unreliable message (it fits one packet: `send` checked).
    fn queue_unreliable(&mut self, channel: u8, data: &[u8], ctx: &mut Ctx<'_>) {
        let ch = usize::from(channel);
        let seq = self.send_seq[ch];
        self.send_seq[ch] = seq.wrapping_add(1);
        let mut buf = ctx.pool.get(data.len());
        buf.extend_from_slice(data);
        streams_of(&mut self.streams, ctx.channels.len())
            .unreliable
            .push_back(Unrel {
                data: buf,
                channel,
                seq,
            });
    }

    /// Writes one copy of `Disconnect` (docs/PROTOCOL.md §5.3); closed after the last.
    /// Protected, it carries a packet number and its kind and code are sealed (§13.4).
    fn poll_close(
        &mut self,
        copies: u8,
        kind: u8,
        out: &mut [u8],
        ctx: &mut Ctx<'_>,
    ) -> Option<usize> {
        let overhead = self.overhead();
        let limit = out.len().checked_sub(overhead)?;
        let mut w = Writer::new(&mut out[..limit]);
        w.header(PacketType::Disconnect, self.conn_id)?;
        let pn = self.next_pn;
        let header_len = if overhead > 0 {
            w.u16(pn as u16)?;
            self.next_pn += 1;
            HEADER_LEN + DATA_PREFIX_LEN
        } else {
            HEADER_LEN
        };
        w.u8(kind)?;
        w.u16(self.close_code)?;
        let len = w.len();
        let n = self.protect(pn, out, header_len, len)?;
        self.state = if copies <= 1 {
            State::Closed
        } else {
            State::Closing {
                copies: copies - 1,
                kind,
            }
        };
        ctx.stats.packets_out += 1;
        Some(n)
    }

    /// Whether data may go out now: a probe always may; otherwise the congestion window
    /// must have room for a full packet and the pacer must allow it (if it does not, the
    /// pacing deadline is armed).
    fn may_send_data(&mut self, now: Instant, probe: bool, has_data: bool) -> bool {
        let window = self.cc.window();
        let mtu = u64::from(self.mtu());
        let may = probe || u64::from(self.bytes_in_flight) + mtu <= window;
        // A controller that models the path (BBR) sets the pacing rate itself.
        let delay = |pacer: &mut crate::pacing::Pacer| match self.cc.pacing_rate() {
            Some(rate) => pacer.delay_at_rate(now, mtu, rate),
            None => pacer.delay(now, mtu, window, self.rtt.smoothed()),
        };
        if may
            && !probe
            && has_data
            && let Some(t) = delay(&mut self.pacer)
            && t > now
        {
            self.timers[Deadline::Pacing as usize] = Some(t);
            return false;
        }
        may
    }

    /// Whether any message waits to be written (within the message window).
    fn wants_data(&self) -> bool {
        self.streams.as_ref().is_some_and(|s| {
            !s.retransmit.is_empty()
                || !s.unreliable.is_empty()
                || (s.next_unsent < s.msg_base + s.msgs.len().min(MESSAGE_WINDOW) as u64)
        })
    }

    /// Writes the messages that fit: retransmissions first, then new reliable messages,
    /// then unreliable ones (only if `may_send_data`).
    fn write_data(
        &mut self,
        w: &mut Writer<'_>,
        may_send_data: bool,
        ctx: &mut Ctx<'_>,
    ) -> Written {
        let Some(s) = self.streams.as_deref_mut() else {
            return Written::default();
        };
        let mut written = Written {
            log_start: s.log_base + s.log.len() as u64,
            ..Written::default()
        };
        if may_send_data {
            let retransmitted = s.write_retransmits(w);
            let fresh = s.write_fresh(w);
            let (unreliable_bytes, unreliable) = s.write_unreliable(w, ctx.channels, ctx.pool);
            self.send_used -= unreliable_bytes;
            written.frames = retransmitted + fresh;
            written.retransmitted = retransmitted > 0;
            written.eliciting = retransmitted > 0 || fresh > 0 || unreliable;
        }
        written
    }

    /// Accounts for a packet just written: numbers, counters, the ack it carried, and for
    /// an ack-eliciting one the sent record, congestion, pacing and the loss timer.
    fn on_written(
        &mut self,
        now: Instant,
        pn: u64,
        len: usize,
        probe: bool,
        written: &Written,
        ctx: &mut Ctx<'_>,
    ) {
        self.next_pn += 1;
        ctx.stats.packets_out += 1;
        if written.retransmitted {
            ctx.stats.retransmitted_packets += 1;
            self.quality.retransmitted = self.quality.retransmitted.saturating_add(1);
        }
        if self.rx_any() {
            self.ack_pending = 0;
            self.ack_now = false;
            self.timers[Deadline::Ack as usize] = None;
        }
        if !written.eliciting {
            return;
        }
        self.quality.sent = self.quality.sent.saturating_add(1);
        if probe {
            self.probes -= 1;
        }
        // `trim` relies on the log indices of the packets on record never decreasing.
        debug_assert!(
            self.sent.back().is_none_or(|p| p.log <= written.log_start),
            "frame log index went backwards"
        );
        self.sent.push_back(SentPacket {
            pn,
            time: now,
            log: written.log_start,
            frames: written.frames,
            size: len as u16,
            acked: false,
            lost: false,
            drain: written.drain,
            pmtu_probe: false,
        });
        if self.cc.uses_delivery_rate() {
            self.stamp(now, pn, len);
        }
        self.bytes_in_flight += len as u32;
        self.cc
            .on_sent(now, len as u64, u64::from(self.bytes_in_flight));
        self.pacer.on_sent(now, len as u64);
        self.last_eliciting_sent = Some(now);
        self.set_loss_timer();
    }
}

impl Conn {
    /// Writes a path MTU probe (docs/PROTOCOL.md §5.5) if the search wants one, the
    /// buffer holds it and the congestion window has room for it: a `Data` packet of
    /// exactly the probed size holding the ack, a `PING` and `PADDING`. It carries no
    /// message, is not counted in flight, and its loss is not congestion.
    fn poll_pmtu_probe(
        &mut self,
        now: Instant,
        out: &mut [u8],
        ctx: &mut Ctx<'_>,
    ) -> Option<usize> {
        let size = self.pmtud.wanted(ctx.mtu)?;
        let len = usize::from(size);
        if out.len() < len || u64::from(self.bytes_in_flight) + u64::from(size) > self.cc.window() {
            return None;
        }
        let out = &mut out[..len];
        let pn = self.next_pn;
        let mut w = Writer::new(&mut out[..len - self.overhead()]);
        w.header(PacketType::Data, self.conn_id)?;
        w.u16(pn as u16)?;
        if self.rx_any() {
            packet::write_ack(&mut w, self.ack_frame(now, ctx.epoch))?;
        }
        w.u8(packet::frame::PING)?;
        w.u8(packet::frame::PADDING)?;
        w.zeros(w.remaining())?;
        let written = w.len();
        let sealed = self.protect(pn, out, HEADER_LEN + DATA_PREFIX_LEN, written)?;
        debug_assert_eq!(sealed, len, "a probe is exactly its size");
        self.next_pn += 1;
        ctx.stats.packets_out += 1;
        ctx.stats.pmtu_probes += 1;
        if self.rx_any() {
            self.ack_pending = 0;
            self.ack_now = false;
            self.timers[Deadline::Ack as usize] = None;
        }
        self.since_ping = 0;
        let log = self
            .streams
            .as_ref()
            .map_or(0, |s| s.log_base + s.log.len() as u64);
        self.sent.push_back(SentPacket {
            pn,
            time: now,
            log,
            frames: 0,
            size,
            acked: false,
            lost: false,
            drain: false,
            pmtu_probe: true,
        });
        self.pmtud.on_probe_sent();
        // RFC 8899 §5.1.1 PROBE_TIMER: lost unless acknowledged within a PTO (a PING is
        // acknowledged at once, §7.1).
        self.set_pmtu_timer(Some(now + self.rtt.pto()), ctx.epoch);
        Some(sealed)
    }

    /// Records the delivery state at the send of packet `pn` of `len` bytes (before it
    /// counts in flight), for the rate sample its ack will give.
    fn stamp(&mut self, now: Instant, pn: u64, len: usize) {
        let in_flight = u64::from(self.bytes_in_flight);
        // draft-cheng-iccrg-delivery-rate-estimation §3.4: nothing more to send and room
        // in the window: the application, not the path, limits what this packet shows.
        let limited = !self.wants_data()
            && in_flight + len as u64 + u64::from(self.mtu()) <= self.cc.window();
        let Some(s) = self.streams.as_deref_mut() else {
            return;
        };
        if limited {
            s.delivery.on_app_limited(in_flight + len as u64);
        }
        let stamp = s.delivery.on_sent(now, in_flight);
        if s.stamps.capacity() == 0 {
            s.stamps.reserve(STAMP_ROOM);
        }
        s.stamps.push_back((pn, stamp));
    }
}

impl OutMsg {
    /// A message (or fragment) not yet sent.
    fn new(data: Vec<u8>, channel: u8, seq: u16, frag: Option<(u16, u16)>) -> Self {
        Self {
            data,
            channel,
            seq,
            frag,
            acked: false,
            queued: false,
            sent_once: false,
        }
    }
}

impl Streams {
    /// Writes the messages queued for retransmission that fit; returns how many.
    fn write_retransmits(&mut self, w: &mut Writer<'_>) -> u16 {
        let mut frames = 0;
        while let Some(&id) = self.retransmit.front() {
            let Some(m) = self.msg_mut(id) else {
                self.retransmit.pop_front();
                continue;
            };
            if m.acked {
                m.queued = false;
                self.retransmit.pop_front();
                continue;
            }
            if !write_msg(w, m) {
                break;
            }
            m.queued = false;
            self.retransmit.pop_front();
            self.log.push_back(id);
            frames += 1;
        }
        frames
    }

    /// Writes the reliable messages never sent that fit, within the message window;
    /// returns how many.
    fn write_fresh(&mut self, w: &mut Writer<'_>) -> u16 {
        let mut frames = 0;
        let end = self.msg_base + self.msgs.len().min(MESSAGE_WINDOW) as u64;
        while self.next_unsent < end {
            let id = self.next_unsent;
            let m = &mut self.msgs[(id - self.msg_base) as usize];
            if !write_msg(w, m) {
                break;
            }
            m.sent_once = true;
            self.next_unsent += 1;
            self.log.push_back(id);
            frames += 1;
        }
        frames
    }

    /// Writes the queued unreliable messages that fit, returning their buffers to the
    /// pool; returns their bytes and whether there were any.
    fn write_unreliable(
        &mut self,
        w: &mut Writer<'_>,
        channels: &[ChannelKind],
        pool: &mut BufPool,
    ) -> (u32, bool) {
        let mut bytes = 0u32;
        let mut any = false;
        while let Some(u) = self.unreliable.front() {
            let kind = channels[usize::from(u.channel)];
            let seq = kind.has_seq().then_some(u.seq);
            if packet::write_message(w, u.channel, seq, &u.data).is_none() {
                break;
            }
            bytes += u.data.len() as u32;
            if let Some(u) = self.unreliable.pop_front() {
                pool.put(u.data);
            }
            any = true;
        }
        (bytes, any)
    }
}

/// Writes one reliable message or fragment; false if it does not fit.
fn write_msg(w: &mut Writer<'_>, m: &OutMsg) -> bool {
    match m.frag {
        None => packet::write_message(w, m.channel, Some(m.seq), &m.data).is_some(),
        Some((i, n)) => packet::write_fragment(w, m.channel, m.seq, i, n, &m.data).is_some(),
    }
}
