//! One established connection, the same on both ends: packet numbers and acks, message
//! channels, fragmentation, loss recovery, congestion control and pacing, timers
//! (docs/PROTOCOL.md §5–§8).
//!
//! Split by job, as quinn-proto splits its connection:
//! - this module: the connection's state, its lifecycle (open, closing, closed) and timers;
//! - [`transmit`]: queueing messages and writing the next packet (`poll_transmit`);
//! - [`receive`]: decoding a `Data` packet and dispatching its frames (`handle_data`);
//! - [`ack`]: the received packet numbers and the ACK frame that reports them;
//! - [`recovery`]: the sent-packet history, ack processing and loss detection (RFC 9002);
//! - [`channels`]: per-channel ordering and sequencing of received messages;
//! - [`reassembly`]: fragments back into messages, within bounds;
//! - [`streams`]: the message queues, allocated only while a connection is busy;
//! - [`pmtud`]: the path MTU search (RFC 8899).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{ChannelKind, Transport};
use crate::congestion::{Congestion, Controller};
use crate::crypto::SessionKeys;
use crate::pacing::Pacer;
use crate::packet::{MAX_CHANNELS, Reader};
use crate::pool::BufPool;
use crate::rtt::RttEstimator;
use crate::stats::Counters;

use recovery::SentPacket;
use streams::Streams;

mod ack;
mod channels;
mod reassembly;
mod receive;
pub(crate) use receive::MAX_DATAGRAM;
mod path;
pub(crate) mod pmtud;
mod recovery;
mod streams;
mod transmit;

/// RFC 9002 §6.1.1: a packet is lost once a packet this many numbers later is acked.
pub(crate) const PACKET_THRESHOLD: u64 = 3;

/// RFC 9002 §6.1.2: time threshold 9/8 of the RTT, as numerator/denominator.
pub(crate) const TIME_THRESHOLD: (u32, u32) = (9, 8);

/// Reliable messages (or fragments) queued or unacknowledged per connection, at most; also
/// the receive window of a channel in sequence numbers. Well under half the 16-bit space
/// so that sequence numbers expand unambiguously.
pub(crate) const MESSAGE_WINDOW: usize = 8192;

/// Packets more than this far below the largest received are dropped as too old.
pub(crate) const RX_WINDOW: u64 = 64;

/// Ack-eliciting packets received before an ack is sent at once (RFC 9000 §13.2.2).
pub(crate) const ACK_ELICITING_THRESHOLD: u8 = 2;

/// A sender asks for an immediate ack (a PING in a packet with data) in the first and
/// then every this many ack-eliciting packets, so that its RTT estimate holds undelayed
/// samples (docs/PROTOCOL.md §7.1): every half second for a 60 Hz game client.
pub(crate) const RTT_PROBE_PACKETS: u8 = 32;

/// How many copies of `Disconnect` are sent (it is never retransmitted).
pub(crate) const DISCONNECT_COPIES: u8 = 3;

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
    /// The longest this end delays an ack: its own `max_ack_delay`, and on a client at
    /// most the one the server announced in `Welcome` (docs/PROTOCOL.md §7.1), which is
    /// the cap the server's RTT estimator applies to the client's ack delays.
    pub(crate) ack_delay: Duration,
    pub(crate) pool: &'a mut BufPool,
    pub(crate) stats: &'a mut Counters,
    /// Where a draining server sends its clients (the DRAIN frame's address; §8.5).
    pub(crate) drain_to: Option<SocketAddr>,
    /// The endpoint's start: the path MTU timer and the receive time of the largest
    /// packet number are kept as offsets from it.
    pub(crate) epoch: Instant,
    /// The ceiling of the path MTU search: the server's MTU, or the client's MTU from
    /// `Welcome` (§4.4).
    pub(crate) mtu: u16,
}

/// A DRAIN frame received (client side): where the server sends its clients, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Drain(pub(crate) Option<SocketAddr>);

/// A server's drain notice on one connection (docs/PROTOCOL.md §8.5): the DRAIN frame
/// goes in every packet from the first one after [`Conn::start_drain`] until a packet
/// carrying it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DrainNotice {
    /// No drain.
    None,
    /// Draining; the notice has not been sent yet (the connection wants to transmit).
    Unsent,
    /// Sent, not yet acknowledged: every packet carries it.
    InFlight,
    /// A packet carrying it was acknowledged.
    Acked,
}

/// The connection's deadlines, indexing its fixed table of `Option<Instant>` (the
/// keepalive is derived from the last ack-eliciting packet instead). Not to be confused
/// with [`crate::timer`], the server's wheel over all connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    /// Loss detection: the time-threshold deadline or the probe timeout (RFC 9002 §6.2).
    Loss = 0,
    /// The delayed ack (RFC 9000 §13.2.1).
    Ack = 1,
    /// The idle timeout.
    Idle = 2,
    /// The pacer's next send time.
    Pacing = 3,
}
const DEADLINES: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Open,
    /// Sending the remaining copies of `Disconnect`, of this kind (§5.3).
    Closing {
        copies: u8,
        kind: u8,
    },
    /// Done; the owner reports the reason and frees the connection.
    Closed,
}

// An idle connection must cost at most 512 bytes with its table slot and its one in-flight
// keepalive record (docs/PROTOCOL.md §10); the simulator test measures the total.
const _: [(); 0] = [(); size_of::<Conn>() - 432];

/// Packet counts of one connection since it opened, for its delivery quality (saturating;
/// u32 lasts over a year at 128 packets a second).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Quality {
    /// Ack-eliciting packets sent (those whose loss can be detected).
    pub(crate) sent: u32,
    /// Of those, packets declared lost and never acknowledged after all (a spurious loss
    /// is taken back when its late ack arrives).
    pub(crate) lost: u32,
    /// Packets sent that carried retransmitted messages.
    pub(crate) retransmitted: u32,
}

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
    /// Where the server's drain notice stands on this connection (§8.5).
    drain: DrainNotice,
    /// The `Disconnect` code to send while closing (the kind is in `State::Closing`).
    close_code: u16,
    /// The path MTU search; its PLPMTU is the largest datagram sent (§5.5).
    pmtud: pmtud::Search,
    timers: [Option<Instant>; DEADLINES],
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
    /// Ack-eliciting packets sent since the last PING (an undelayed RTT sample is asked
    /// for when it reaches [`RTT_PROBE_PACKETS`]).
    since_ping: u8,
    /// This end's initial sequence number: its first packet number is `2^32 + initial_seq`
    /// (an ACK below it acknowledges a packet never sent, §8.4).
    initial_seq: u16,
    /// The loss timer holds the time-threshold deadline (RFC 9002 `loss_time`), not a PTO.
    loss_armed: bool,
    /// This connection's delivery figures (`ConnStats`; docs/STATS.md, per connection).
    quality: Quality,
    send_seq: [u16; MAX_CHANNELS],
    // Receiving.
    rx_largest: u64,
    rx_bits: u64,
    /// When the largest packet number arrived, in nanoseconds since `Ctx::epoch` plus
    /// one; 0 before any packet (8 bytes rather than an `Option<Instant>`'s 16).
    rx_largest_ns: u64,
    ack_pending: u8,
    ack_now: bool,
    recv_next: [u16; MAX_CHANNELS],
    pub(crate) recv_used: u32,
    streams: Option<Box<Streams>>,
    /// Packet protection (docs/PROTOCOL.md §13); `None` in mode `Off`.
    keys: Option<Box<Protection>>,
}

/// A protected connection's keys, and (on the server) its sealed `Welcome`, resent as it
/// is in answer to every `Response` with the connection's nonce (docs/PROTOCOL.md §4.4).
#[derive(Debug)]
pub(crate) struct Protection {
    pub(crate) keys: SessionKeys,
    pub(crate) welcome: Vec<u8>,
    /// Path validation (migration, §5.4).
    path: path::Path,
}

impl Conn {
    /// The server starts draining (§8.5): the notice goes out in the next packet and in
    /// every one after it until one carrying it is acknowledged. Returns whether the
    /// connection has something to send now.
    pub(crate) fn start_drain(&mut self) -> bool {
        if self.state != State::Open || self.drain != DrainNotice::None {
            return false;
        }
        self.drain = DrainNotice::Unsent;
        true
    }

    /// Whether any packet has been received (the first sets `rx_largest_ns`).
    pub(super) fn rx_any(&self) -> bool {
        self.rx_largest_ns != 0
    }

    /// Whether the peer acknowledged a packet carrying the drain notice.
    pub(crate) fn drain_acked(&self) -> bool {
        self.drain == DrainNotice::Acked
    }

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
        let search = pmtud::Search::new(mtu as u16, t.pmtud);
        let mut c = Self {
            peer,
            conn_id,
            state: State::Open,
            reason: None,
            close_code: 0,
            pmtud: search,
            timers: [None; DEADLINES],
            rtt: RttEstimator::new(t.initial_rtt, t.min_rto, peer_max_ack_delay),
            cc: Congestion::new(t.congestion, u64::from(search.plpmtu()), now),
            pacer: Pacer::new(u64::from(search.plpmtu())),
            next_pn: (1 << 32) + u64::from(initial_seq),
            largest_acked: 0,
            sent: VecDeque::new(),
            bytes_in_flight: 0,
            send_used: 0,
            pto_count: 0,
            probes: 0,
            last_eliciting_sent: Some(now),
            since_ping: RTT_PROBE_PACKETS,
            initial_seq,
            loss_armed: false,
            drain: DrainNotice::None,
            quality: Quality::default(),
            send_seq: [initial_seq; MAX_CHANNELS],
            // The peer's first packet number until one arrives: the first packets expand
            // around it, so a lost first packet near the 16-bit wrap still expands right.
            rx_largest: (1 << 32) + u64::from(peer_initial_seq),
            rx_bits: 0,
            rx_largest_ns: 0,
            ack_pending: 0,
            ack_now: false,
            recv_next: [peer_initial_seq; MAX_CHANNELS],
            recv_used: 0,
            streams: None,
            keys: None,
        };
        c.timers[Deadline::Idle as usize] = Some(now + ctx.idle_timeout);
        c
    }

    /// Protects every later packet with `keys` (docs/PROTOCOL.md §13.4); the server
    /// passes its sealed `Welcome` along (the client an empty one).
    pub(crate) fn set_keys(&mut self, keys: SessionKeys, welcome: Vec<u8>) {
        self.keys = Some(Box::new(Protection {
            keys,
            welcome,
            path: path::Path::default(),
        }));
    }

    /// The sealed `Welcome` the server resends, if protected.
    pub(crate) fn sealed_welcome(&self) -> Option<&[u8]> {
        self.keys.as_deref().map(|p| p.welcome.as_slice())
    }

    /// Whether packets are protected.
    pub(crate) fn is_protected(&self) -> bool {
        self.keys.is_some()
    }

    /// Bytes of state this connection holds, inline and on the heap.
    pub(crate) fn memory(&self) -> usize {
        size_of::<Self>()
            + self
                .keys
                .as_ref()
                .map_or(0, |p| size_of::<Protection>() + p.welcome.capacity())
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

    /// The largest datagram this connection sends now: the PLPMTU (§5.5).
    pub(crate) fn mtu(&self) -> u16 {
        self.pmtud.plpmtu()
    }

    /// The largest packet any reliable or unreliable frame is sized for: the base PLPMTU
    /// with path MTU discovery on, so that everything queued can be resent after a fall
    /// back to it (§5.5); the MTU otherwise.
    pub(crate) fn frame_mtu(&self) -> u16 {
        if self.pmtud.enabled() {
            pmtud::BASE_PLPMTU
        } else {
            self.mtu()
        }
    }

    /// Bytes in flight.
    pub(crate) fn bytes_in_flight(&self) -> u64 {
        u64::from(self.bytes_in_flight)
    }

    /// Bytes queued or unacknowledged.
    pub(crate) fn send_buffered(&self) -> usize {
        self.send_used as usize
    }

    /// Delivery figures since the connection opened.
    pub(crate) fn quality(&self) -> Quality {
        self.quality
    }

    /// The earliest timer; `keepalive` is the endpoint's keepalive interval (a ping goes
    /// out this long after the last ack-eliciting packet).
    /// `epoch` is the endpoint's ([`Ctx::epoch`]).
    pub(crate) fn poll_timeout(&self, keepalive: Duration, epoch: Instant) -> Option<Instant> {
        if self.state != State::Open {
            return None;
        }
        self.timers
            .iter()
            .flatten()
            .chain(self.keepalive_at(keepalive).as_ref())
            .chain(self.pmtu_timer(epoch).as_ref())
            .min()
            .copied()
    }

    /// The path MTU timer: the probe in flight is lost at this time (one PTO after it
    /// left); with none in flight, the raise timer (RFC 8899 §5.1.1).
    fn pmtu_timer(&self, epoch: Instant) -> Option<Instant> {
        let ms = self.pmtud.timer_ms.checked_sub(1)?;
        Some(epoch + Duration::from_millis(u64::from(ms)))
    }

    /// Arms (or with `None` disarms) the path MTU timer, rounded up to the millisecond.
    fn set_pmtu_timer(&mut self, at: Option<Instant>, epoch: Instant) {
        self.pmtud.timer_ms = at.map_or(0, |t| {
            let us = t.saturating_duration_since(epoch).as_micros();
            u32::try_from(us.div_ceil(1000) + 1).unwrap_or(u32::MAX)
        });
    }

    fn keepalive_at(&self, keepalive: Duration) -> Option<Instant> {
        self.last_eliciting_sent.map(|t| t + keepalive)
    }

    /// Whether `poll_transmit` may produce something now (ignoring pacing and timers).
    pub(crate) fn wants_transmit(&self) -> bool {
        match self.state {
            State::Closing { .. } => true,
            State::Closed => false,
            State::Open => {
                self.ack_now
                    || self.probes > 0
                    || self.pmtud.probe_wanted()
                    || self.path_response().is_some()
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
            kind,
        };
        self.reason = Some(reason);
        self.close_code = code;
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

    /// Handles expired timers.
    pub(crate) fn handle_timeout(&mut self, now: Instant, ctx: &mut Ctx<'_>) {
        if self.state != State::Open {
            return;
        }
        if self.timers[Deadline::Idle as usize].is_some_and(|t| t <= now) {
            ctx.stats.timed_out += 1;
            self.terminate(DisconnectReason::TimedOut, ctx.pool);
            return;
        }
        if self.timers[Deadline::Ack as usize].is_some_and(|t| t <= now) {
            self.timers[Deadline::Ack as usize] = None;
            if self.ack_pending > 0 {
                self.ack_now = true;
            }
        }
        if self.timers[Deadline::Pacing as usize].is_some_and(|t| t <= now) {
            self.timers[Deadline::Pacing as usize] = None;
        }
        if self.pmtu_timer(ctx.epoch).is_some_and(|t| t <= now) {
            self.pmtud.timer_ms = 0;
            self.on_pmtu_timer(now, ctx);
        }
        if self.keepalive_at(ctx.keepalive).is_some_and(|t| t <= now) {
            // Restart the period now, whether or not a ping is needed.
            self.last_eliciting_sent = Some(now);
            self.compact();
            if self.probes == 0 && self.sent.iter().all(|p| p.acked || p.lost) {
                self.probes = 1;
                ctx.stats.keepalives += 1;
            }
        }
        if self.timers[Deadline::Loss as usize].is_some_and(|t| t <= now) {
            self.timers[Deadline::Loss as usize] = None;
            if self.loss_armed {
                self.detect_losses(now, ctx);
            } else if self.sent.iter().any(SentPacket::outstanding) {
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

    /// Closes with a protocol violation by the peer.
    fn violate(&mut self, v: Violation, pool: &mut BufPool) {
        self.close(
            DisconnectReason::Violation(v),
            close_kind::VIOLATION,
            v as u16,
            pool,
        );
    }

    /// The application consumed a delivered message of `len` bytes.
    pub(crate) fn consumed(&mut self, len: usize) {
        self.recv_used = self.recv_used.saturating_sub(len as u32);
    }

    /// Handles a `Disconnect` packet body (after the fixed header; protected, opened, its
    /// packet number first).
    pub(crate) fn handle_disconnect(&mut self, body: &[u8], is_client: bool, pool: &mut BufPool) {
        let body = if self.is_protected() {
            body.get(2..).unwrap_or_default()
        } else {
            body
        };
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
}

/// A connection and the endpoint context it is driven with, for the unit tests of the
/// pieces in this module's children.
#[cfg(test)]
mod fixture {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use super::{Conn, Ctx};
    use crate::config::{ChannelKind, Transport};
    use crate::pool::BufPool;
    use crate::stats::Counters;

    /// This end's first packet and sequence number.
    pub(super) const SEQ: u16 = 100;
    /// The peer's first packet and sequence number.
    pub(super) const PEER_SEQ: u16 = 500;

    /// The endpoint state a `Ctx` borrows.
    pub(super) struct Fixture {
        pub(super) channels: Vec<ChannelKind>,
        pub(super) transport: Transport,
        pub(super) pool: BufPool,
        pub(super) stats: Counters,
        pub(super) now: Instant,
    }

    impl Fixture {
        /// An endpoint with one channel of each kind, in `ChannelKind` order: 0 reliable
        /// ordered, 1 reliable unordered, 2 unreliable, 3 unreliable sequenced.
        pub(super) fn new() -> Self {
            Self {
                channels: vec![
                    ChannelKind::ReliableOrdered,
                    ChannelKind::ReliableUnordered,
                    ChannelKind::Unreliable,
                    ChannelKind::UnreliableSequenced,
                ],
                transport: Transport::default(),
                pool: BufPool::default(),
                stats: Counters::default(),
                now: Instant::now(),
            }
        }

        pub(super) fn ctx(&mut self) -> Ctx<'_> {
            Ctx {
                channels: &self.channels,
                transport: &self.transport,
                idle_timeout: Duration::from_secs(10),
                keepalive: Duration::from_secs(1),
                ack_delay: self.transport.max_ack_delay,
                pool: &mut self.pool,
                stats: &mut self.stats,
                drain_to: None,
                epoch: self.now,
                mtu: self.transport.mtu as u16,
            }
        }

        /// An open connection created at `self.now`.
        pub(super) fn conn(&mut self) -> Conn {
            let now = self.now;
            let mtu = self.transport.mtu;
            let peer = SocketAddr::from(([192, 0, 2, 1], 4000));
            let ctx = self.ctx();
            Conn::new(
                now,
                peer,
                7,
                &ctx,
                mtu,
                Duration::from_millis(5),
                SEQ,
                PEER_SEQ,
            )
        }
    }
}
