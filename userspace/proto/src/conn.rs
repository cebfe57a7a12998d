//! One established connection, the same on both ends: packet numbers and acks, message
//! channels, fragmentation, loss recovery, congestion control and pacing, timers
//! (docs/PROTOCOL.md §5–§8).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xrudp_common::rudp::{HEADER_LEN, PacketType};

use crate::config::{ChannelKind, Transport};
use crate::congestion::{Congestion, Controller};
use crate::pacing::Pacer;
use crate::packet::{
    self, ACK_DELAY_UNIT_US, ACK_FRAME_LEN, Ack, DATA_PREFIX_LEN, DecodeError, FRAGMENT_OVERHEAD,
    Frame, Frames, MAX_CHANNELS, MESSAGE_OVERHEAD, Reader, Writer, expand16,
};
use crate::pool::{BufPool, Parts};
use crate::rtt::RttEstimator;
use crate::stats::Counters;

/// RFC 9002 §6.1.1: a packet is lost once a packet this many numbers later is acked.
pub const PACKET_THRESHOLD: u64 = 3;

/// RFC 9002 §6.1.2: time threshold 9/8 of the RTT, as numerator/denominator.
pub const TIME_THRESHOLD: (u32, u32) = (9, 8);

/// Reliable messages (or fragments) queued or unacknowledged per connection, at most; also
/// the receive window of a channel in sequence numbers. Well under half the 16-bit space
/// so that sequence numbers expand unambiguously.
pub const MESSAGE_WINDOW: usize = 8192;

/// Packets more than this far below the largest received are dropped as too old.
pub const RX_WINDOW: u64 = 64;

/// Ack-eliciting packets received before an ack is sent at once (RFC 9000 §13.2.2).
pub const ACK_ELICITING_THRESHOLD: u8 = 2;

/// How many copies of `Disconnect` are sent (it is never retransmitted).
pub const DISCONNECT_COPIES: u8 = 3;

/// Largest PTO backoff exponent.
const MAX_PTO_BACKOFF: u32 = 6;

/// The smallest fragment payload a sender produces (every fragment but the last), at the
/// smallest MTU.
const MIN_FRAGMENT: usize = 1200 - HEADER_LEN - DATA_PREFIX_LEN - ACK_FRAME_LEN - FRAGMENT_OVERHEAD;

/// Reassemblies in progress per connection, at most.
const MAX_REASSEMBLIES: usize = 32;

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// This end's application closed it (or kicked the client), with its code.
    Local {
        /// Application code.
        code: u16,
    },
    /// The peer closed it gracefully with a code (a server kick, seen by the client, or a
    /// client's disconnect, seen by the server).
    Peer {
        /// Application code.
        code: u16,
    },
    /// Nothing was received for the idle timeout.
    TimedOut,
    /// The peer sent something this end refuses; this end closed with the code.
    Violation(Violation),
    /// The peer reported that this end violated the protocol.
    PeerViolation(u16),
    /// The server is shutting down (seen by clients).
    ServerShutdown,
    /// Client only: no answer to the handshake before the handshake timeout.
    HandshakeTimedOut,
    /// Client only: the server refused to admit the client.
    Rejected(crate::RejectReason),
    /// Client only: the server speaks none of this client's versions.
    VersionMismatch,
    /// Server only: the client's address connected again with a fresh handshake.
    Replaced,
}

/// A protocol violation by the peer; the connection is closed with its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Violation {
    /// A data packet whose frames do not decode.
    MalformedFrame = 1,
    /// A fragmented message larger than the maximum message size, or too many at once.
    MessageTooLarge = 2,
    /// A fragment that contradicts earlier fragments of its message.
    BadFragment = 3,
    /// An ack for a packet never sent.
    AckOfUnsent = 4,
}

/// `Disconnect` kind byte (docs/PROTOCOL.md §5.3).
pub(crate) mod close_kind {
    pub(crate) const APPLICATION: u8 = 1;
    pub(crate) const VIOLATION: u8 = 2;
    pub(crate) const SHUTDOWN: u8 = 3;
}

/// Why a message could not be queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The send buffer is full: retry after the peer acknowledges (poll and drive the
    /// connection), or drop the message if it is stale.
    #[error("send buffer full; retry once the peer has acknowledged data")]
    QueueFull,
    /// Larger than `max_message_size`, or an unreliable message larger than one packet.
    #[error("message of {len} bytes exceeds the limit of {max} bytes for this channel")]
    TooLarge {
        /// Message length.
        len: usize,
        /// The limit that applies.
        max: usize,
    },
    /// No such channel.
    #[error("channel {0} is not configured")]
    BadChannel(u8),
    /// The connection is closing, closed or not yet established, or the handle is stale.
    #[error("not connected")]
    NotConnected,
}

/// Per-endpoint context a connection needs on each call (kept outside it to save memory).
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) channels: &'a [ChannelKind],
    pub(crate) transport: &'a Transport,
    pub(crate) idle_timeout: Duration,
    pub(crate) keepalive: Duration,
    pub(crate) pool: &'a mut BufPool,
    pub(crate) stats: &'a mut Counters,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Loss = 0,
    Ack = 1,
    Idle = 2,
    Pacing = 3,
}
const TIMERS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Open,
    /// Sending the remaining copies of `Disconnect`.
    Closing {
        copies: u8,
    },
    /// Done; the owner reports the reason and frees the connection.
    Closed,
}

#[derive(Clone, Copy, Debug)]
struct SentPacket {
    pn: u64,
    time: Instant,
    /// First entry of this packet in the frame log (absolute index).
    log: u64,
    frames: u16,
    size: u16,
    acked: bool,
    lost: bool,
}

#[derive(Debug)]
struct OutMsg {
    data: Vec<u8>,
    channel: u8,
    seq: u16,
    /// (index, count) for a fragment.
    frag: Option<(u16, u16)>,
    acked: bool,
    queued: bool,
    sent_once: bool,
}

#[derive(Debug)]
struct Unrel {
    data: Vec<u8>,
    channel: u8,
    seq: u16,
}

#[derive(Debug, Default)]
struct Held {
    data: Vec<u8>,
    frag: Option<(u16, u16)>,
    /// An unordered channel's marker for a message already delivered.
    delivered: bool,
}

#[derive(Debug)]
struct Reassembly {
    channel: u8,
    base: u16,
    count: u16,
    /// Bytes of the parts so far.
    bytes: usize,
    parts: Parts,
}

/// State that exists only while messages are queued, in flight, or held: allocated on
/// first use and dropped when the connection goes quiet, so an idle connection is small.
#[derive(Debug, Default)]
struct Streams {
    msgs: VecDeque<OutMsg>,
    /// Internal id of `msgs[0]`.
    msg_base: u64,
    /// Id of the first message never sent.
    next_unsent: u64,
    retransmit: VecDeque<u64>,
    unreliable: VecDeque<Unrel>,
    /// Message ids per sent packet, in packet order; `log[0]` has absolute index `log_base`.
    log: VecDeque<u64>,
    log_base: u64,
    /// Per channel: messages received ahead of the channel's next expected sequence number.
    held: Vec<VecDeque<Option<Held>>>,
    reasm: Vec<Reassembly>,
}

impl Streams {
    /// The message id logged at absolute index `i`, if still in the log.
    fn logged(&self, i: u64) -> Option<u64> {
        let k = usize::try_from(i.checked_sub(self.log_base)?).ok()?;
        self.log.get(k).copied()
    }

    /// The message with id `id`, if still held (not yet trimmed off the front).
    fn msg_mut(&mut self, id: u64) -> Option<&mut OutMsg> {
        let k = id.checked_sub(self.msg_base)?;
        self.msgs.get_mut(k as usize)
    }

    fn is_quiet(&self) -> bool {
        self.msgs.is_empty()
            && self.unreliable.is_empty()
            && self.retransmit.is_empty()
            && self.log.is_empty()
            && self.reasm.is_empty()
            && self.held.iter().all(VecDeque::is_empty)
    }

    fn heap_bytes(&self) -> usize {
        self.msgs.capacity() * size_of::<OutMsg>()
            + self.msgs.iter().map(|m| m.data.capacity()).sum::<usize>()
            + self.retransmit.capacity() * 8
            + self.unreliable.capacity() * size_of::<Unrel>()
            + self.log.capacity() * 8
            + self.held.capacity() * size_of::<VecDeque<Option<Held>>>()
            + self
                .held
                .iter()
                .map(|h| h.capacity() * size_of::<Option<Held>>())
                .sum::<usize>()
            + self.reasm.capacity() * size_of::<Reassembly>()
    }
}

// An idle connection must cost at most 512 bytes with its table slot and its one in-flight
// keepalive record (docs/PROTOCOL.md §10); the simulator test measures the total.
const _: () = assert!(size_of::<Conn>() <= 432);

/// An established connection.
#[derive(Debug)]
#[expect(
    clippy::struct_field_names,
    reason = "conn_id is the protocol's name for the field"
)]
pub(crate) struct Conn {
    pub(crate) peer: SocketAddr,
    pub(crate) conn_id: u32,
    pub(crate) state: State,
    /// Why it closed (set with `Closing`/`Closed`).
    pub(crate) reason: Option<DisconnectReason>,
    close_wire: (u8, u16),
    mtu: u16,
    timers: [Option<Instant>; TIMERS],
    rtt: RttEstimator,
    cc: Congestion,
    pacer: Pacer,
    // Sending.
    next_pn: u64,
    /// Largest packet number acked; 0 before any (numbers start at 2^32).
    largest_acked: u64,
    sent: VecDeque<SentPacket>,
    bytes_in_flight: u32,
    send_used: u32,
    pto_count: u8,
    probes: u8,
    last_eliciting_sent: Option<Instant>,
    /// The loss timer holds the time-threshold deadline (RFC 9002 `loss_time`), not a PTO.
    loss_armed: bool,
    /// Keepalive interval, ms: a ping goes out this long after the last ack-eliciting packet.
    keepalive_ms: u32,
    send_seq: [u16; MAX_CHANNELS],
    // Receiving.
    rx_largest: u64,
    rx_bits: u64,
    rx_any: bool,
    rx_largest_time: Option<Instant>,
    ack_pending: u8,
    ack_now: bool,
    recv_next: [u16; MAX_CHANNELS],
    pub(crate) recv_used: u32,
    streams: Option<Box<Streams>>,
}

impl Conn {
    /// A new connection; `initial_seq` is this end's first packet and channel sequence
    /// number, `peer_initial_seq` the peer's (exchanged in the handshake).
    #[expect(
        clippy::too_many_arguments,
        reason = "each is a distinct handshake outcome"
    )]
    pub(crate) fn new(
        now: Instant,
        peer: SocketAddr,
        conn_id: u32,
        ctx: &Ctx<'_>,
        mtu: usize,
        peer_max_ack_delay: Duration,
        initial_seq: u16,
        peer_initial_seq: u16,
    ) -> Self {
        let t = ctx.transport;
        let mut c = Self {
            peer,
            conn_id,
            state: State::Open,
            reason: None,
            close_wire: (0, 0),
            mtu: mtu as u16,
            timers: [None; TIMERS],
            rtt: RttEstimator::new(t.initial_rtt, t.min_rto, peer_max_ack_delay),
            cc: Congestion::new(t.congestion, mtu as u64, now),
            pacer: Pacer::new(mtu as u64),
            next_pn: (1 << 32) + u64::from(initial_seq),
            largest_acked: 0,
            sent: VecDeque::new(),
            bytes_in_flight: 0,
            send_used: 0,
            pto_count: 0,
            probes: 0,
            last_eliciting_sent: Some(now),
            loss_armed: false,
            keepalive_ms: ctx.keepalive.as_millis().min(u128::from(u32::MAX)) as u32,
            send_seq: [initial_seq; MAX_CHANNELS],
            rx_largest: 0,
            rx_bits: 0,
            rx_any: false,
            rx_largest_time: None,
            ack_pending: 0,
            ack_now: false,
            recv_next: [peer_initial_seq; MAX_CHANNELS],
            recv_used: 0,
            streams: None,
        };
        c.timers[Timer::Idle as usize] = Some(now + ctx.idle_timeout);
        c
    }

    /// Bytes of state this connection holds, inline and on the heap.
    pub(crate) fn memory(&self) -> usize {
        size_of::<Self>()
            + self.sent.capacity() * size_of::<SentPacket>()
            + self
                .streams
                .as_ref()
                .map_or(0, |s| size_of::<Streams>() + s.heap_bytes())
    }

    /// The RTT estimator.
    pub(crate) fn rtt(&self) -> &RttEstimator {
        &self.rtt
    }

    /// The congestion window in bytes.
    pub(crate) fn window(&self) -> u64 {
        self.cc.window()
    }

    /// Bytes in flight.
    pub(crate) fn bytes_in_flight(&self) -> u64 {
        u64::from(self.bytes_in_flight)
    }

    /// Bytes queued or unacknowledged.
    pub(crate) fn send_buffered(&self) -> usize {
        self.send_used as usize
    }

    /// The earliest timer.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.state != State::Open {
            return None;
        }
        self.timers
            .iter()
            .flatten()
            .chain(self.keepalive_at().as_ref())
            .min()
            .copied()
    }

    fn keepalive_at(&self) -> Option<Instant> {
        self.last_eliciting_sent
            .map(|t| t + Duration::from_millis(u64::from(self.keepalive_ms)))
    }

    /// Whether `poll_transmit` may produce something now (ignoring pacing and timers).
    pub(crate) fn wants_transmit(&self) -> bool {
        match self.state {
            State::Closing { .. } => true,
            State::Closed => false,
            State::Open => {
                self.ack_now
                    || self.probes > 0
                    || self.streams.as_ref().is_some_and(|s| {
                        !s.retransmit.is_empty()
                            || !s.unreliable.is_empty()
                            || s.next_unsent < s.msg_base + s.msgs.len() as u64
                    })
            }
        }
    }

    /// Whether nothing is queued, in flight, held or waiting to be acknowledged.
    pub(crate) fn is_quiet(&self) -> bool {
        match self.state {
            State::Open => {
                self.ack_pending == 0
                    && self.probes == 0
                    && self.sent.iter().all(|p| p.acked || p.lost)
                    && self.streams.as_ref().is_none_or(|s| {
                        s.msgs.is_empty() && s.unreliable.is_empty() && s.retransmit.is_empty()
                    })
            }
            State::Closing { .. } => false,
            State::Closed => true,
        }
    }

    /// Sends an ack-eliciting packet soon (the client's first packet after `Welcome`).
    pub(crate) fn force_ping(&mut self) {
        self.probes = self.probes.max(1);
    }

    /// Starts closing: `Disconnect` is sent [`DISCONNECT_COPIES`] times, then the connection
    /// is closed.
    pub(crate) fn close(
        &mut self,
        reason: DisconnectReason,
        kind: u8,
        code: u16,
        pool: &mut BufPool,
    ) {
        if self.state != State::Open {
            return;
        }
        self.state = State::Closing {
            copies: DISCONNECT_COPIES,
        };
        self.reason = Some(reason);
        self.close_wire = (kind, code);
        self.free_buffers(pool);
    }

    /// Closes at once without sending anything (timeout, or the peer closed).
    pub(crate) fn terminate(&mut self, reason: DisconnectReason, pool: &mut BufPool) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        if self.reason.is_none() {
            self.reason = Some(reason);
        }
        self.free_buffers(pool);
    }

    fn free_buffers(&mut self, pool: &mut BufPool) {
        if let Some(s) = self.streams.take() {
            let s = *s;
            for m in s.msgs {
                pool.put(m.data);
            }
            for u in s.unreliable {
                pool.put(u.data);
            }
            for h in s.held.into_iter().flatten().flatten() {
                pool.put(h.data);
            }
            for r in s.reasm {
                pool.put_parts(r.parts);
            }
        }
        self.sent = VecDeque::new();
        self.send_used = 0;
        self.bytes_in_flight = 0;
    }

    /// Largest payload of a single MESSAGE frame in a packet that also carries an ack.
    fn max_single(&self) -> usize {
        usize::from(self.mtu) - HEADER_LEN - DATA_PREFIX_LEN - ACK_FRAME_LEN - MESSAGE_OVERHEAD
    }

    fn max_fragment(&self) -> usize {
        usize::from(self.mtu) - HEADER_LEN - DATA_PREFIX_LEN - ACK_FRAME_LEN - FRAGMENT_OVERHEAD
    }

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
        let single = self.max_single();
        let frag_size = self.max_fragment();
        let nch = ctx.channels.len();
        let ch = usize::from(channel);
        if kind.is_reliable() {
            let count = if data.len() <= single {
                1
            } else {
                data.len().div_ceil(frag_size)
            };
            if self.streams.as_ref().map_or(0, |s| s.msgs.len()) + count > MESSAGE_WINDOW {
                return Err(SendError::QueueFull);
            }
            let seq0 = self.send_seq[ch];
            self.send_seq[ch] = seq0.wrapping_add(count as u16);
            let s = streams_of(&mut self.streams, nch);
            if count == 1 {
                let mut buf = ctx.pool.get(data.len());
                buf.extend_from_slice(data);
                s.msgs.push_back(OutMsg {
                    data: buf,
                    channel,
                    seq: seq0,
                    frag: None,
                    acked: false,
                    queued: false,
                    sent_once: false,
                });
            } else {
                for (i, chunk) in data.chunks(frag_size).enumerate() {
                    let mut buf = ctx.pool.get(chunk.len());
                    buf.extend_from_slice(chunk);
                    s.msgs.push_back(OutMsg {
                        data: buf,
                        channel,
                        seq: seq0.wrapping_add(i as u16),
                        frag: Some((i as u16, count as u16)),
                        acked: false,
                        queued: false,
                        sent_once: false,
                    });
                }
            }
        } else {
            let seq = self.send_seq[ch];
            self.send_seq[ch] = seq.wrapping_add(1);
            let mut buf = ctx.pool.get(data.len());
            buf.extend_from_slice(data);
            streams_of(&mut self.streams, nch)
                .unreliable
                .push_back(Unrel {
                    data: buf,
                    channel,
                    seq,
                });
        }
        self.send_used += data.len() as u32;
        Ok(())
    }

    /// Handles expired timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if self.state != State::Open {
            return;
        }
        if self.timers[Timer::Idle as usize].is_some_and(|t| t <= now) {
            ctx.stats.timed_out += 1;
            self.terminate(DisconnectReason::TimedOut, ctx.pool);
            return;
        }
        if self.timers[Timer::Ack as usize].is_some_and(|t| t <= now) {
            self.timers[Timer::Ack as usize] = None;
            if self.ack_pending > 0 {
                self.ack_now = true;
            }
        }
        if self.timers[Timer::Pacing as usize].is_some_and(|t| t <= now) {
            self.timers[Timer::Pacing as usize] = None;
        }
        if self.keepalive_at().is_some_and(|t| t <= now) {
            // Restart the period now, whether or not a ping is needed.
            self.last_eliciting_sent = Some(now);
            self.compact();
            if self.probes == 0 && self.sent.iter().all(|p| p.acked || p.lost) {
                self.probes = 1;
                ctx.stats.keepalives += 1;
            }
        }
        if self.timers[Timer::Loss as usize].is_some_and(|t| t <= now) {
            self.timers[Timer::Loss as usize] = None;
            if self.loss_armed {
                self.detect_losses(now, ctx);
            } else if self.sent.iter().any(|p| !p.acked && !p.lost) {
                // RFC 9002 §6.2.4: a probe timeout sends one or two probes and backs off.
                self.pto_count = self.pto_count.saturating_add(1);
                self.probes = 2;
                // The next period counts from now, so an expired timer never stays due.
                self.last_eliciting_sent = Some(now);
                ctx.stats.ptos += 1;
                self.queue_probe_data();
            }
            self.set_loss_timer();
        }
    }

    /// Returns memory that a quiet connection no longer needs.
    fn compact(&mut self) {
        if self.streams.as_ref().is_some_and(|s| s.is_quiet()) {
            self.streams = None;
            // The frame log's index space goes with the streams, and the next `Streams`
            // starts again at 0, as does every packet sent while there are none. The
            // packets still on record (pings, or lost packets kept for a late ack) carry
            // no frames, since the log is empty, but their `log` still points into the old
            // space: left there, `trim` would take the oldest for the start of the live
            // log and discard the new log's first entries, so the messages they name
            // could never be acknowledged nor retransmitted. Move them to the new origin.
            for p in &mut self.sent {
                debug_assert_eq!(p.frames, 0, "a quiet log names no frames");
                p.log = 0;
            }
        }
        if self.sent.is_empty() && self.sent.capacity() > 1 {
            // Room for the one keepalive ping an idle connection has in flight.
            self.sent = VecDeque::with_capacity(1);
        }
    }

    /// Puts the unacked messages of the oldest in-flight packet up for retransmission, so
    /// that a probe carries data rather than a bare ping (RFC 9002 §6.2.4 allows either).
    fn queue_probe_data(&mut self) {
        if let Some(p) = self.sent.iter().find(|p| !p.acked && !p.lost).copied() {
            self.queue_retransmit(&p);
        }
    }

    /// Writes the next packet into `out`; returns its length.
    #[expect(
        clippy::too_many_lines,
        reason = "one pass in protocol order; split, the order of steps is harder to check"
    )]
    pub(crate) fn poll_transmit(
        &mut self,
        now: Instant,
        out: &mut [u8],
        ctx: &mut Ctx<'_>,
    ) -> Option<usize> {
        match self.state {
            State::Closed => return None,
            State::Closing { copies } => {
                let mut w = Writer::new(out);
                w.header(PacketType::Disconnect, self.conn_id)?;
                w.u8(self.close_wire.0)?;
                w.u16(self.close_wire.1)?;
                let n = w.finish();
                self.state = if copies <= 1 {
                    State::Closed
                } else {
                    State::Closing { copies: copies - 1 }
                };
                ctx.stats.packets_out += 1;
                return Some(n);
            }
            State::Open => {}
        }
        let limit = out.len().min(usize::from(self.mtu));
        let out = &mut out[..limit];
        let probe = self.probes > 0;
        let window = self.cc.window();
        let has_data = self.wants_data();
        let mut may_send_data =
            probe || u64::from(self.bytes_in_flight) + u64::from(self.mtu) <= window;
        if may_send_data
            && !probe
            && has_data
            && let Some(t) = self
                .pacer
                .delay(now, u64::from(self.mtu), window, self.rtt.smoothed())
            && t > now
        {
            self.timers[Timer::Pacing as usize] = Some(t);
            may_send_data = false;
        }
        let ack_due = self.ack_pending > 0 && self.ack_now;
        if !(ack_due || probe || (has_data && may_send_data)) {
            return None;
        }
        let pn = self.next_pn;
        let mut w = Writer::new(out);
        w.header(PacketType::Data, self.conn_id)?;
        w.u16(pn as u16)?;
        if self.rx_any {
            let delay = self
                .rx_largest_time
                .map_or(0, |t| now.saturating_duration_since(t).as_micros() as u64);
            let ack = Ack {
                largest: self.rx_largest as u16,
                delay: (delay / ACK_DELAY_UNIT_US).min(u64::from(u16::MAX)) as u16,
                bits: self.rx_bits as u32,
            };
            packet::write_ack(&mut w, ack)?;
        }
        let mut eliciting = false;
        let mut retransmitted = false;
        let mut frames = 0u16;
        let log_start;
        if let Some(s) = self.streams.as_deref_mut() {
            log_start = s.log_base + s.log.len() as u64;
            if may_send_data {
                // Retransmissions first, then new reliable messages, then unreliable ones.
                while let Some(&id) = s.retransmit.front() {
                    let Some(m) = s.msg_mut(id) else {
                        s.retransmit.pop_front();
                        continue;
                    };
                    if m.acked {
                        m.queued = false;
                        s.retransmit.pop_front();
                        continue;
                    }
                    if !write_msg(&mut w, m) {
                        break;
                    }
                    m.queued = false;
                    s.retransmit.pop_front();
                    s.log.push_back(id);
                    frames += 1;
                    retransmitted = true;
                    eliciting = true;
                }
                let end = s.msg_base + s.msgs.len().min(MESSAGE_WINDOW) as u64;
                while s.next_unsent < end {
                    let id = s.next_unsent;
                    let m = &mut s.msgs[(id - s.msg_base) as usize];
                    if !write_msg(&mut w, m) {
                        break;
                    }
                    m.sent_once = true;
                    s.next_unsent += 1;
                    s.log.push_back(id);
                    frames += 1;
                    eliciting = true;
                }
                while let Some(u) = s.unreliable.front() {
                    let kind = ctx.channels[usize::from(u.channel)];
                    let seq = kind.has_seq().then_some(u.seq);
                    if packet::write_message(&mut w, u.channel, seq, &u.data).is_none() {
                        break;
                    }
                    self.send_used -= u.data.len() as u32;
                    if let Some(u) = s.unreliable.pop_front() {
                        ctx.pool.put(u.data);
                    }
                    eliciting = true;
                }
            }
        } else {
            log_start = 0;
        }
        if !eliciting && probe {
            w.u8(packet::frame::PING)?;
            eliciting = true;
        }
        if !eliciting && !ack_due {
            return None;
        }
        let len = w.finish();
        self.next_pn += 1;
        ctx.stats.packets_out += 1;
        if retransmitted {
            ctx.stats.retransmitted_packets += 1;
        }
        if self.rx_any {
            self.ack_pending = 0;
            self.ack_now = false;
            self.timers[Timer::Ack as usize] = None;
        }
        if eliciting {
            if probe {
                self.probes -= 1;
            }
            // `trim` relies on the log indices of the packets on record never decreasing.
            debug_assert!(
                self.sent.back().is_none_or(|p| p.log <= log_start),
                "frame log index went backwards"
            );
            self.sent.push_back(SentPacket {
                pn,
                time: now,
                log: log_start,
                frames,
                size: len as u16,
                acked: false,
                lost: false,
            });
            self.bytes_in_flight += len as u32;
            self.cc
                .on_sent(now, len as u64, u64::from(self.bytes_in_flight));
            self.pacer.on_sent(now, len as u64);
            self.last_eliciting_sent = Some(now);
            self.set_loss_timer();
        }
        Some(len)
    }

    fn wants_data(&self) -> bool {
        self.streams.as_ref().is_some_and(|s| {
            !s.retransmit.is_empty()
                || !s.unreliable.is_empty()
                || (s.next_unsent < s.msg_base + s.msgs.len().min(MESSAGE_WINDOW) as u64)
        })
    }

    /// Handles a `Data` packet body (after the fixed header). `deliver` receives messages.
    #[expect(
        clippy::too_many_lines,
        reason = "one pass in protocol order; split, the order of steps is harder to check"
    )]
    pub(crate) fn handle_data(
        &mut self,
        now: Instant,
        body: &[u8],
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
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
        let pn = if self.rx_any {
            expand16(self.rx_largest + 1, wire_pn)
        } else {
            (1 << 32) + u64::from(wire_pn)
        };
        if self.rx_any && pn <= self.rx_largest {
            let d = self.rx_largest - pn;
            if d == 0 || d > RX_WINDOW || self.rx_bits & (1 << (d - 1)) != 0 {
                ctx.stats.duplicate_packets += 1;
                return;
            }
        }
        // Pass 1: the whole packet must decode, and its messages must fit the receive
        // buffer (or make progress), before anything in it takes effect.
        let channels = ctx.channels;
        let has_seq = |c: u8| channels.get(usize::from(c)).map(|k| k.has_seq());
        let mut msg_bytes = 0usize;
        let mut progress = false;
        for f in Frames::new(frames_body, has_seq) {
            match f {
                Err(_) => {
                    ctx.stats.violations += 1;
                    self.violate(Violation::MalformedFrame, ctx.pool);
                    return;
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
        if self.recv_used as usize + msg_bytes > ctx.transport.recv_buffer && !progress {
            ctx.stats.recv_buffer_full += 1;
            return;
        }
        // Pass 2.
        self.timers[Timer::Idle as usize] = Some(now + ctx.idle_timeout);
        let mut eliciting = false;
        for f in Frames::new(frames_body, has_seq).flatten() {
            match f {
                Frame::Ack(ack) => self.on_ack(now, ack, ctx),
                Frame::Ping => eliciting = true,
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
                    if !ctx.channels[usize::from(channel)].is_reliable() {
                        ctx.stats.violations += 1;
                        self.violate(Violation::BadFragment, ctx.pool);
                        return;
                    }
                    // Every fragment but the last fills a packet (over 1100 bytes at the
                    // smallest MTU), so more fragments than this exceed the maximum size.
                    if usize::from(count) > ctx.transport.max_message_size / MIN_FRAGMENT + 1 {
                        ctx.stats.violations += 1;
                        self.violate(Violation::MessageTooLarge, ctx.pool);
                        return;
                    }
                    self.on_message(channel, seq, Some((index, count)), data, ctx, deliver);
                }
            }
            if self.state != State::Open {
                return;
            }
        }
        // Record the packet number (RFC 9000 §13.2: acks carry the largest and a bitfield).
        if !self.rx_any {
            self.rx_any = true;
            self.rx_largest = pn;
            self.rx_bits = 0;
            self.rx_largest_time = Some(now);
        } else if pn > self.rx_largest {
            let shift = pn - self.rx_largest;
            if shift > 1 {
                // Packets skipped: ack at once so the sender learns of the gap soon.
                self.ack_now = true;
            }
            self.rx_bits = if shift >= 64 {
                0
            } else {
                (self.rx_bits << shift) | (1 << (shift - 1))
            };
            self.rx_largest = pn;
            self.rx_largest_time = Some(now);
        } else {
            let d = self.rx_largest - pn;
            self.rx_bits |= 1 << (d - 1);
            self.ack_now = true;
        }
        if eliciting {
            self.ack_pending = self.ack_pending.saturating_add(1);
            if self.ack_pending >= ACK_ELICITING_THRESHOLD {
                self.ack_now = true;
            } else if self.timers[Timer::Ack as usize].is_none() {
                self.timers[Timer::Ack as usize] = Some(now + ctx.transport.max_ack_delay);
            }
        } else if self.ack_pending == 0 {
            self.ack_now = false;
        }
    }

    fn violate(&mut self, v: Violation, pool: &mut BufPool) {
        self.close(
            DisconnectReason::Violation(v),
            close_kind::VIOLATION,
            v as u16,
            pool,
        );
    }

    #[expect(
        clippy::too_many_lines,
        reason = "one pass in protocol order; split, the order of steps is harder to check"
    )]
    fn on_message(
        &mut self,
        channel: u8,
        seq: u16,
        frag: Option<(u16, u16)>,
        data: &[u8],
        ctx: &mut Ctx<'_>,
        deliver: &mut dyn FnMut(u8, Vec<u8>),
    ) {
        let ch = usize::from(channel);
        let kind = ctx.channels[ch];
        match kind {
            ChannelKind::Unreliable => {
                let mut buf = ctx.pool.get(data.len());
                buf.extend_from_slice(data);
                self.deliver(channel, buf, ctx, deliver);
            }
            ChannelKind::UnreliableSequenced => {
                // Deliver only if newer than the last delivered (16-bit serial arithmetic).
                let d = serial_diff(seq, self.recv_next[ch]);
                if d < 0 {
                    ctx.stats.stale_dropped += 1;
                    return;
                }
                self.recv_next[ch] = seq.wrapping_add(1);
                let mut buf = ctx.pool.get(data.len());
                buf.extend_from_slice(data);
                self.deliver(channel, buf, ctx, deliver);
            }
            ChannelKind::ReliableOrdered | ChannelKind::ReliableUnordered => {
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
                let nch = ctx.channels.len();
                let unordered = kind == ChannelKind::ReliableUnordered;
                {
                    let s = streams_of(&mut self.streams, nch);
                    let held = &mut s.held[ch];
                    if held.get(d).is_some_and(Option::is_some) {
                        ctx.stats.duplicate_messages += 1;
                        return;
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
                }
                if unordered {
                    let mut buf = ctx.pool.get(data.len());
                    buf.extend_from_slice(data);
                    self.ready(channel, seq, frag, buf, ctx, deliver);
                    // Advance past the contiguous run of delivered markers.
                    let s = streams_of(&mut self.streams, nch);
                    while s.held[ch]
                        .front()
                        .is_some_and(|h| h.as_ref().is_some_and(|h| h.delivered))
                    {
                        s.held[ch].pop_front();
                        self.recv_next[ch] = self.recv_next[ch].wrapping_add(1);
                    }
                } else if d == 0 {
                    let mut buf = ctx.pool.get(data.len());
                    buf.extend_from_slice(data);
                    self.recv_next[ch] = seq.wrapping_add(1);
                    if let Some(s) = self.streams.as_deref_mut()
                        && !s.held[ch].is_empty()
                    {
                        s.held[ch].pop_front();
                    }
                    self.ready(channel, seq, frag, buf, ctx, deliver);
                    // Then everything held that is now in order.
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
        }
    }

    /// A reliable message or fragment is ready in its channel's order: deliver it, or add
    /// it to its reassembly.
    fn ready(
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
        let nch = ctx.channels.len();
        let s = streams_of(&mut self.streams, nch);
        let pos = s
            .reasm
            .iter()
            .position(|r| r.channel == channel && r.base == base);
        let i = if let Some(i) = pos {
            if s.reasm[i].count != count {
                ctx.pool.put(buf);
                ctx.stats.violations += 1;
                self.violate(Violation::BadFragment, ctx.pool);
                return;
            }
            i
        } else {
            if s.reasm.len() >= MAX_REASSEMBLIES {
                ctx.pool.put(buf);
                ctx.stats.violations += 1;
                self.violate(Violation::MessageTooLarge, ctx.pool);
                return;
            }
            s.reasm.push(Reassembly {
                channel,
                base,
                count,
                bytes: 0,
                parts: ctx.pool.parts(usize::from(count)),
            });
            s.reasm.len() - 1
        };
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

    fn deliver(
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

    /// The application consumed a delivered message of `len` bytes.
    pub(crate) fn consumed(&mut self, len: usize) {
        self.recv_used = self.recv_used.saturating_sub(len as u32);
    }

    /// Handles a `Disconnect` packet body.
    pub(crate) fn handle_disconnect(&mut self, body: &[u8], is_client: bool, pool: &mut BufPool) {
        let mut r = Reader::new(body);
        let (Ok(kind), Ok(code)) = (r.u8(), r.u16()) else {
            return;
        };
        let reason = match kind {
            close_kind::VIOLATION => DisconnectReason::PeerViolation(code),
            close_kind::SHUTDOWN if is_client => DisconnectReason::ServerShutdown,
            _ => DisconnectReason::Peer { code },
        };
        if self.state == State::Open {
            self.terminate(reason, pool);
        }
    }

    fn on_ack(&mut self, now: Instant, ack: Ack, ctx: &mut Ctx<'_>) {
        let largest = expand16(self.next_pn - 1, ack.largest);
        if largest >= self.next_pn {
            ctx.stats.violations += 1;
            self.violate(Violation::AckOfUnsent, ctx.pool);
            return;
        }
        let Some(front) = self.sent.front().map(|p| p.pn) else {
            self.largest_acked = self.largest_acked.max(largest);
            return;
        };
        let window = self.cc.window();
        let app_limited = u64::from(self.bytes_in_flight) + 2 * u64::from(self.mtu) < window;
        let mut newly_acked_largest = None;
        let mut acked_any = false;
        for k in 0..=32u64 {
            let pn = if k == 0 {
                largest
            } else if ack.bits & (1 << (k - 1)) != 0 {
                match largest.checked_sub(k) {
                    Some(p) => p,
                    None => break,
                }
            } else {
                continue;
            };
            if pn < front {
                break;
            }
            let Ok(idx) = self.sent.binary_search_by_key(&pn, |p| p.pn) else {
                continue;
            };
            let p = self.sent[idx];
            if p.acked {
                continue;
            }
            if p.lost {
                ctx.stats.spurious_losses += 1;
            }
            self.sent[idx].acked = true;
            acked_any = true;
            if k == 0 {
                newly_acked_largest = Some(p.time);
            }
            if !p.lost {
                self.bytes_in_flight -= u32::from(p.size);
                self.cc
                    .on_ack(now, p.time, u64::from(p.size), &self.rtt, app_limited);
            }
            self.ack_messages(&p, ctx.pool);
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
        self.trim();
        self.set_loss_timer();
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

    /// RFC 9002 §6.1: declare lost the in-flight packets below the largest acked that are
    /// [`PACKET_THRESHOLD`] packets or 9/8 RTT older than it.
    fn detect_losses(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        self.loss_armed = false;
        let mut loss_time: Option<Instant> = None;
        let largest = self.largest_acked;
        if largest == 0 {
            return;
        }
        let rtt = self.rtt.smoothed().max(self.rtt.latest());
        let loss_delay = (rtt * TIME_THRESHOLD.0 / TIME_THRESHOLD.1).max(crate::rtt::GRANULARITY);
        let mut lost_bytes = 0u64;
        let mut newest_lost: Option<Instant> = None;
        let mut oldest_lost: Option<Instant> = None;
        for i in 0..self.sent.len() {
            let p = self.sent[i];
            if p.pn > largest {
                break;
            }
            if p.acked || p.lost {
                continue;
            }
            if largest - p.pn >= PACKET_THRESHOLD || p.time + loss_delay <= now {
                self.sent[i].lost = true;
                self.bytes_in_flight -= u32::from(p.size);
                lost_bytes += u64::from(p.size);
                newest_lost = Some(p.time);
                oldest_lost.get_or_insert(p.time);
                ctx.stats.lost_packets += 1;
                self.queue_retransmit(&p);
            } else {
                let t = p.time + loss_delay;
                loss_time = Some(loss_time.map_or(t, |l| l.min(t)));
            }
        }
        if let Some(t) = loss_time {
            self.loss_armed = true;
            self.timers[Timer::Loss as usize] = Some(t);
        }
        if let (Some(newest), Some(oldest)) = (newest_lost, oldest_lost) {
            // RFC 9002 §7.6: persistent congestion when the losses span more than three PTOs.
            let persistent = self.rtt.has_sample()
                && newest.saturating_duration_since(oldest) > self.rtt.pto_base() * 3;
            self.cc
                .on_congestion_event(now, newest, lost_bytes, persistent);
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
    fn trim(&mut self) {
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

    /// RFC 9002 §6.2.1 SetLossDetectionTimer.
    fn set_loss_timer(&mut self) {
        if self.loss_armed {
            return;
        }
        let t = if self.sent.iter().any(|p| !p.acked && !p.lost) {
            let backoff = 1u32 << u32::from(self.pto_count).min(MAX_PTO_BACKOFF);
            self.last_eliciting_sent
                .map(|t| t + self.rtt.pto() * backoff)
        } else {
            None
        };
        self.timers[Timer::Loss as usize] = t;
    }
}

/// The streams state, allocated on first use.
/// Queued or unacknowledged reliable messages a new `Streams` has room for.
const MSGS_ROOM: usize = 32;
/// Queued unreliable messages a new `Streams` has room for.
const UNRELIABLE_ROOM: usize = 16;
/// Frame-log entries (message ids of frames in flight) a new `Streams` has room for.
const LOG_ROOM: usize = 64;
/// Retransmission-queue entries a new `Streams` has room for.
const RETRANSMIT_ROOM: usize = 32;

fn streams_of(streams: &mut Option<Box<Streams>>, channels: usize) -> &mut Streams {
    streams.get_or_insert_with(|| {
        let mut s = Box::<Streams>::default();
        s.held = (0..channels).map(|_| VecDeque::new()).collect();
        // Room for a typical window up front, so the first retransmission or a new peak of
        // messages or frames in flight does not grow these queues on the packet path (the
        // engine's allocation test saw each after a VM stall or a burst): about 2.5 KiB per
        // active connection; an idle one drops them with the rest of `Streams`.
        s.msgs = VecDeque::with_capacity(MSGS_ROOM);
        s.unreliable = VecDeque::with_capacity(UNRELIABLE_ROOM);
        s.log = VecDeque::with_capacity(LOG_ROOM);
        s.retransmit = VecDeque::with_capacity(RETRANSMIT_ROOM);
        s
    })
}

/// `a - b` in 16-bit serial number arithmetic (RFC 1982): negative if `a` is older.
fn serial_diff(a: u16, b: u16) -> i16 {
    i16::from_ne_bytes(a.wrapping_sub(b).to_ne_bytes())
}

/// Writes one reliable message or fragment; false if it does not fit.
fn write_msg(w: &mut Writer<'_>, m: &OutMsg) -> bool {
    match m.frag {
        None => packet::write_message(w, m.channel, Some(m.seq), &m.data).is_some(),
        Some((i, n)) => packet::write_fragment(w, m.channel, m.seq, i, n, &m.data).is_some(),
    }
}
