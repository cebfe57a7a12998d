//! The server endpoint: one per worker, a preallocated connection table, stateless
//! handshake replies, and the connections' timers and transmit queue.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use xrudp_common::rudp::{PacketType, VERSION};

use crate::config::{ConfigError, ServerConfig};
use crate::conn::{Conn, Ctx, DisconnectReason, SendError, State, close_kind};
use crate::handshake::{self, CookieJar, Handshake, RejectReason, TokenError, Welcome};
use crate::packet::{Datagram, DecodeError, MAX_CHANNELS};
use crate::pool::BufPool;
use crate::rtt::RttEstimator;
use crate::stats::Counters;
use crate::timer::Wheel;

/// Handshake replies queued at most; more are dropped (and counted) rather than queued, so a
/// hello flood costs bounded memory.
pub(crate) const MAX_PENDING_REPLIES: usize = 1024;

/// Passes `handle_timeout` makes at most over timers that expire again within `now`.
const MAX_TIMER_ROUNDS: usize = 4;

/// Largest handshake reply.
const REPLY_LEN: usize = 64;

/// Identifies a connection of a [`Server`]; stale once the connection is gone (its slot's
/// generation moves on), so a handle is never confused with a later connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnHandle {
    index: u32,
    generation: u32,
}

impl ConnHandle {
    /// The slot index (dense, below `max_connections`), handy for the caller's own tables.
    #[must_use]
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// What happened, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// A client proved its address (and token, if required) and was admitted.
    Connected {
        /// The new connection.
        handle: ConnHandle,
        /// The client's address.
        addr: SocketAddr,
        /// The token's client id, if the server requires tokens.
        client_id: Option<u64>,
        /// The token's user data (empty without tokens).
        user_data: Vec<u8>,
    },
    /// A message arrived. Hand `data` back with [`Server::recycle`] to avoid allocation.
    Message {
        /// The connection.
        handle: ConnHandle,
        /// The channel index.
        channel: u8,
        /// The message.
        data: Vec<u8>,
    },
    /// The connection ended; the handle is now stale.
    Disconnected {
        /// The connection.
        handle: ConnHandle,
        /// Why.
        reason: DisconnectReason,
    },
}

/// A datagram written by `poll_transmit`: send `out[..len]` to `dst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Destination.
    pub dst: SocketAddr,
    /// Bytes written at the start of the caller's buffer.
    pub len: usize,
}

/// Per-connection figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnStats {
    /// The peer's address.
    pub addr: SocketAddr,
    /// Smoothed RTT.
    pub rtt: Duration,
    /// RTT variance.
    pub rtt_var: Duration,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes in flight.
    pub bytes_in_flight: u64,
    /// Bytes queued or unacknowledged.
    pub send_buffered: usize,
    /// Bytes of protocol state held, inline and on the heap.
    pub memory: usize,
}

#[derive(Debug)]
struct Reply {
    dst: SocketAddr,
    len: u8,
    buf: [u8; REPLY_LEN],
}

#[derive(Debug, Default)]
struct Slot {
    conn: Option<Conn>,
    generation: u32,
    nonce: u64,
    welcome: bool,
    ready: bool,
    initial_seq: u16,
}

/// A server endpoint (sans-IO). Feed it datagrams and timeouts; poll it for datagrams to
/// send, the next timeout, and events. Call order per wakeup: `handle_datagram` for each
/// datagram received and `handle_timeout` if the timeout passed, then `poll_transmit` until
/// `None`, `poll_event` until `None`, and sleep until `poll_timeout`.
#[derive(Debug)]
pub struct Server {
    config: ServerConfig,
    channel_kinds: [u8; MAX_CHANNELS],
    start: Instant,
    rng: ChaCha8Rng,
    cookies: CookieJar,
    slots: Vec<Slot>,
    free: Vec<u32>,
    index_bits: u32,
    by_addr: HashMap<SocketAddr, u32>,
    replies: VecDeque<Reply>,
    ready: VecDeque<u32>,
    timers: Wheel,
    /// Scratch for the indices `handle_timeout` expires (capacity `max_connections`).
    due: Vec<u32>,
    events: VecDeque<ServerEvent>,
    pool: BufPool,
    stats: Counters,
    unix_anchor: Option<(Instant, u64)>,
}

impl Server {
    /// A server; `seed` drives every random choice (cookie secret, sequence numbers).
    pub fn new(config: ServerConfig, seed: u64, now: Instant) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let cookie_seed = config.cookie_seed.unwrap_or_else(|| {
            let mut s = [0; 32];
            rng.fill_bytes(&mut s);
            s
        });
        let n = config.max_connections;
        let mut channel_kinds = [0; MAX_CHANNELS];
        for (k, c) in channel_kinds.iter_mut().zip(&config.channels) {
            *k = *c as u8;
        }
        let mut slots = Vec::with_capacity(n);
        slots.resize_with(n, Slot::default);
        Ok(Self {
            channel_kinds,
            start: now,
            cookies: CookieJar::new(cookie_seed),
            slots,
            free: (0..n as u32).rev().collect(),
            index_bits: usize::BITS - (n - 1).leading_zeros(),
            by_addr: HashMap::with_capacity(n),
            replies: VecDeque::with_capacity(MAX_PENDING_REPLIES),
            ready: VecDeque::with_capacity(n),
            timers: Wheel::new(n, now),
            due: Vec::with_capacity(n),
            events: VecDeque::new(),
            pool: BufPool::default(),
            stats: Counters::default(),
            unix_anchor: None,
            rng,
            config,
        })
    }

    /// Tells the server the wall-clock time, for connect token expiry: `unix_secs` is the
    /// Unix time at `now`. Until it is called, every token is refused as expired.
    pub fn set_unix_time(&mut self, now: Instant, unix_secs: u64) {
        self.unix_anchor = Some((now, unix_secs));
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &Counters {
        &self.stats
    }

    /// Connections open (including those still sending their `Disconnect`).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether any handshake reply is queued or any connection has data queued, in flight
    /// or unacknowledged (O(connections); for tests and shutdown).
    #[must_use]
    pub fn has_pending(&self) -> bool {
        !self.replies.is_empty()
            || self
                .slots
                .iter()
                .any(|s| s.welcome || s.conn.as_ref().is_some_and(|c| !c.is_quiet()))
    }

    /// Figures of one connection.
    #[must_use]
    pub fn connection_stats(&self, handle: ConnHandle) -> Option<ConnStats> {
        let c = self.conn(handle)?;
        Some(conn_stats(c))
    }

    /// Bytes of memory the server holds for its table, maps and queues plus every
    /// connection's state (an estimate from capacities; the simulator's memory test uses it).
    #[must_use]
    pub fn memory(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>()
            + self
                .slots
                .iter()
                .filter_map(|s| s.conn.as_ref())
                .map(|c| c.memory() - size_of::<Conn>())
                .sum::<usize>()
            + self.free.capacity() * 4
            + self.by_addr.capacity() * (size_of::<SocketAddr>() + 4 + 1)
            + self.replies.capacity() * size_of::<Reply>()
            + self.ready.capacity() * 4
            + self.timers.memory()
            + self.due.capacity() * 4
    }

    /// Bytes one idle connection costs: its table slot and timer node plus heap state.
    #[must_use]
    pub fn connection_memory(&self, handle: ConnHandle) -> Option<usize> {
        let c = self.conn(handle)?;
        Some(size_of::<Slot>() + Wheel::node_bytes() + c.memory() - size_of::<Conn>())
    }

    fn conn(&self, handle: ConnHandle) -> Option<&Conn> {
        let s = self.slots.get(handle.index as usize)?;
        if s.generation != handle.generation {
            return None;
        }
        s.conn.as_ref()
    }

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.stats.packets_in += 1;
        let d = match Datagram::parse(data) {
            Ok(d) => d,
            Err(e) => {
                self.stats.decode_errors[e.index()] += 1;
                return;
            }
        };
        match d.kind {
            PacketType::Hello | PacketType::Response => self.handle_handshake(now, from, &d),
            PacketType::Data | PacketType::Disconnect => self.handle_conn_packet(now, from, &d),
            _ => self.stats.decode_errors[DecodeError::Unexpected.index()] += 1,
        }
    }

    fn handle_handshake(&mut self, now: Instant, from: SocketAddr, d: &Datagram<'_>) {
        if d.kind == PacketType::Hello && d.version != VERSION {
            self.negotiate_version(from, d);
            return;
        }
        let h = match handshake::decode(d.kind, d.body, d.len) {
            Ok(h) => h,
            Err(e) => {
                self.stats.decode_errors[e.index()] += 1;
                return;
            }
        };
        let secs = self.secs(now);
        match h {
            Handshake::Hello { nonce } => {
                if self.free.is_empty() && !self.by_addr.contains_key(&from) {
                    self.stats.rejected[RejectReason::ServerFull.index()] += 1;
                    self.reply(
                        from,
                        &Handshake::Reject {
                            nonce,
                            reason: RejectReason::ServerFull as u8,
                        },
                    );
                    return;
                }
                let cookie = self.cookies.issue(from, nonce, secs);
                self.stats.handshakes += 1;
                self.reply(from, &Handshake::Challenge { nonce, cookie });
            }
            Handshake::Response {
                nonce,
                cookie,
                initial_seq,
                token,
            } => {
                if !self.cookies.verify(&cookie, from, nonce, secs) {
                    self.stats.bad_cookies += 1;
                    return;
                }
                if let Some(&index) = self.by_addr.get(&from) {
                    let slot = &mut self.slots[index as usize];
                    if slot.nonce == nonce {
                        // A resent (or replayed) response: welcome again, allocate nothing.
                        slot.welcome = true;
                        self.mark_ready(index);
                        return;
                    }
                    // The same address starts over: the old connection is gone.
                    if let Some(c) = slot.conn.as_mut() {
                        c.terminate(DisconnectReason::Replaced, &mut self.pool);
                    }
                    self.finish(index);
                }
                let mut client = (None, Vec::new());
                if let Some(key) = &self.config.token_key {
                    if token.is_empty() {
                        self.refuse(from, nonce, RejectReason::TokenRequired);
                        return;
                    }
                    let unix = self
                        .unix_anchor
                        .map_or(0, |(t, s)| s + now.saturating_duration_since(t).as_secs());
                    match handshake::verify_token(key, token, unix) {
                        Ok((id, user)) if self.unix_anchor.is_some() => {
                            client = (Some(id), user.to_vec());
                        }
                        Ok(_) | Err(TokenError::Expired) => {
                            self.refuse(from, nonce, RejectReason::TokenExpired);
                            return;
                        }
                        Err(_) => {
                            self.refuse(from, nonce, RejectReason::TokenInvalid);
                            return;
                        }
                    }
                }
                let Some(index) = self.free.pop() else {
                    self.refuse(from, nonce, RejectReason::ServerFull);
                    return;
                };
                self.admit(now, from, index, nonce, initial_seq, client);
            }
            _ => self.stats.decode_errors[DecodeError::Unexpected.index()] += 1,
        }
    }

    /// Version negotiation: tells the client which versions this server speaks, but only
    /// in answer to a padded hello (anti-amplification).
    fn negotiate_version(&mut self, from: SocketAddr, d: &Datagram<'_>) {
        if d.len < crate::packet::MIN_HANDSHAKE_LEN || d.body.len() < 8 {
            self.stats.decode_errors[DecodeError::Unpadded.index()] += 1;
            return;
        }
        let mut nb = [0; 8];
        nb.copy_from_slice(&d.body[..8]);
        self.stats.version_mismatches += 1;
        self.reply(
            from,
            &Handshake::VersionMismatch {
                nonce: u64::from_be_bytes(nb),
                versions: 1 << VERSION,
            },
        );
    }

    fn admit(
        &mut self,
        now: Instant,
        from: SocketAddr,
        index: u32,
        nonce: u64,
        peer_seq: u16,
        client: (Option<u64>, Vec<u8>),
    ) {
        let initial_seq = self
            .config
            .transport
            .initial_seq
            .unwrap_or_else(|| self.rng.next_u32() as u16);
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let mut conn_id = (slot.generation << self.index_bits) | index;
        if conn_id == 0 {
            slot.generation = slot.generation.wrapping_add(1);
            conn_id = (slot.generation << self.index_bits) | index;
        }
        let handle = ConnHandle {
            index,
            generation: slot.generation,
        };
        let ctx = conn_ctx(&self.config, &mut self.pool, &mut self.stats);
        // The client's max ack delay is the same default unless configured otherwise: the
        // client announces none, so the server assumes its own.
        let conn = Conn::new(
            now,
            from,
            conn_id,
            &ctx,
            self.config.transport.mtu,
            self.config.transport.max_ack_delay,
            initial_seq,
            peer_seq,
        );
        slot.conn = Some(conn);
        slot.nonce = nonce;
        slot.welcome = true;
        slot.initial_seq = initial_seq;
        self.by_addr.insert(from, index);
        self.stats.accepted += 1;
        self.events.push_back(ServerEvent::Connected {
            handle,
            addr: from,
            client_id: client.0,
            user_data: client.1,
        });
        self.mark_ready(index);
        self.reschedule(index);
    }

    fn refuse(&mut self, to: SocketAddr, nonce: u64, reason: RejectReason) {
        self.stats.rejected[reason.index()] += 1;
        self.reply(
            to,
            &Handshake::Reject {
                nonce,
                reason: reason as u8,
            },
        );
    }

    fn reply(&mut self, dst: SocketAddr, h: &Handshake<'_>) {
        if self.replies.len() >= MAX_PENDING_REPLIES {
            self.stats.replies_dropped += 1;
            return;
        }
        let mut buf = [0; REPLY_LEN];
        if let Some(len) = handshake::encode(&mut buf, 0, h) {
            self.replies.push_back(Reply {
                dst,
                len: len as u8,
                buf,
            });
        }
    }

    fn secs(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_secs() as u32
    }

    fn lookup(&self, conn_id: u32, from: SocketAddr) -> Option<u32> {
        let mask = (1u32 << self.index_bits) - 1;
        let index = conn_id & mask;
        let slot = self.slots.get(index as usize)?;
        let c = slot.conn.as_ref()?;
        (c.conn_id == conn_id && c.peer == from).then_some(index)
    }

    fn handle_conn_packet(&mut self, now: Instant, from: SocketAddr, d: &Datagram<'_>) {
        let Some(index) = self.lookup(d.conn_id, from) else {
            self.stats.unknown_connection += 1;
            return;
        };
        let slot = &mut self.slots[index as usize];
        let generation = slot.generation;
        // INVARIANT: lookup returned a slot holding a connection.
        let conn = slot.conn.as_mut().expect("looked up");
        // Any data from the client means it has our welcome.
        slot.welcome = false;
        if d.kind == PacketType::Disconnect {
            conn.handle_disconnect(d.body, false, &mut self.pool);
        } else {
            let mut ctx = conn_ctx(&self.config, &mut self.pool, &mut self.stats);
            let events = &mut self.events;
            let handle = ConnHandle { index, generation };
            conn.handle_data(now, d.body, &mut ctx, &mut |channel, data| {
                events.push_back(ServerEvent::Message {
                    handle,
                    channel,
                    data,
                });
            });
        }
        self.after(index);
    }

    /// After any change to a connection: finish it if closed, else queue it for transmit
    /// and reschedule its timer.
    fn after(&mut self, index: u32) {
        let slot = &self.slots[index as usize];
        let Some(c) = slot.conn.as_ref() else { return };
        if c.state == State::Closed {
            self.finish(index);
            return;
        }
        if c.wants_transmit() || slot.welcome {
            self.mark_ready(index);
        }
        self.reschedule(index);
    }

    fn finish(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        let Some(c) = slot.conn.take() else { return };
        let handle = ConnHandle {
            index,
            generation: slot.generation,
        };
        slot.welcome = false;
        self.timers.cancel(index);
        if self.by_addr.get(&c.peer) == Some(&index) {
            self.by_addr.remove(&c.peer);
        }
        self.free.push(index);
        let reason = c.reason.unwrap_or(DisconnectReason::TimedOut);
        self.events
            .push_back(ServerEvent::Disconnected { handle, reason });
    }

    fn mark_ready(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if !slot.ready {
            slot.ready = true;
            self.ready.push_back(index);
        }
    }

    /// Sets the connection's one timer to its earliest deadline (O(1)).
    fn reschedule(&mut self, index: u32) {
        let slot = &self.slots[index as usize];
        match slot.conn.as_ref().and_then(Conn::poll_timeout) {
            Some(t) => self.timers.schedule(index, t),
            None => {
                self.timers.cancel(index);
            }
        }
    }

    /// Handles timers that expired at or before `now`, in deadline order (ties in
    /// connection-index order).
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        // Each connection re-arms its timer past `now` when handled; the bound is a guard so
        // that a connection that did not could never spin this loop (the next call resumes).
        for _ in 0..MAX_TIMER_ROUNDS {
            due.clear();
            self.timers.expire(now, &mut due);
            if due.is_empty() {
                break;
            }
            for &index in &due {
                let Some(conn) = self.slots[index as usize].conn.as_mut() else {
                    continue;
                };
                let mut ctx = conn_ctx(&self.config, &mut self.pool, &mut self.stats);
                conn.handle_timeout(now, &mut ctx);
                self.after(index);
            }
        }
        due.clear();
        self.due = due;
    }

    /// The next time `handle_timeout` should be called: the earliest connection deadline,
    /// exactly.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Writes the next datagram to send into `out` (at least `mtu` bytes; a UMEM frame's
    /// payload area). Allocates nothing.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if let Some(r) = self.replies.front() {
            let len = usize::from(r.len);
            if out.len() >= len {
                out[..len].copy_from_slice(&r.buf[..len]);
                let dst = r.dst;
                self.replies.pop_front();
                self.stats.packets_out += 1;
                return Some(Transmit { dst, len });
            }
        }
        while let Some(index) = self.ready.pop_front() {
            let slot = &mut self.slots[index as usize];
            slot.ready = false;
            let Some(conn) = slot.conn.as_mut() else {
                continue;
            };
            if slot.welcome && conn.state == State::Open {
                slot.welcome = false;
                let mut channels = [0; MAX_CHANNELS];
                channels.copy_from_slice(&self.channel_kinds);
                let w = Welcome {
                    nonce: slot.nonce,
                    initial_seq: slot.initial_seq,
                    mtu: self.config.transport.mtu as u16,
                    max_ack_delay_us: self.config.transport.max_ack_delay.as_micros() as u32,
                    idle_timeout_ms: self.config.idle_timeout.as_millis() as u32,
                    keepalive_ms: self.config.keepalive.as_millis() as u32,
                    channels,
                    channel_count: self.config.channels.len() as u8,
                };
                let dst = conn.peer;
                let Some(len) = handshake::encode(out, conn.conn_id, &Handshake::Welcome(w)) else {
                    continue;
                };
                self.stats.packets_out += 1;
                self.mark_ready(index);
                return Some(Transmit { dst, len });
            }
            let mut ctx = conn_ctx(&self.config, &mut self.pool, &mut self.stats);
            let dst = conn.peer;
            let sent = conn.poll_transmit(now, out, &mut ctx);
            let closed = conn.state == State::Closed;
            if closed {
                self.finish(index);
            } else {
                if sent.is_some() {
                    self.mark_ready(index);
                }
                self.reschedule(index);
            }
            if let Some(len) = sent {
                return Some(Transmit { dst, len });
            }
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        let e = self.events.pop_front()?;
        if let ServerEvent::Message { handle, data, .. } = &e
            && let Some(slot) = self.slots.get_mut(handle.index as usize)
            && slot.generation == handle.generation
            && let Some(c) = slot.conn.as_mut()
        {
            c.consumed(data.len());
        }
        Some(e)
    }

    /// Gives a delivered message's buffer back for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.put(buf);
    }

    /// Preallocates `per_class` free message buffers in each pool size class up to 2 KiB
    /// (one MTU), so that bursts after startup — a large batch after a stall, a slow
    /// client's unacknowledged messages — take buffers instead of allocating. Call once,
    /// before serving; 256 costs about 850 KiB.
    pub fn prefill_pool(&mut self, per_class: usize) {
        self.pool.prefill(per_class, 2048);
    }

    /// The message buffer pool (figures: buffers free per class).
    #[must_use]
    pub fn pool(&self) -> &BufPool {
        &self.pool
    }

    /// Queues a message to a connection.
    pub fn send(&mut self, handle: ConnHandle, channel: u8, data: &[u8]) -> Result<(), SendError> {
        let slot = self
            .slots
            .get_mut(handle.index as usize)
            .ok_or(SendError::NotConnected)?;
        if slot.generation != handle.generation {
            return Err(SendError::NotConnected);
        }
        let conn = slot.conn.as_mut().ok_or(SendError::NotConnected)?;
        let mut ctx = conn_ctx(&self.config, &mut self.pool, &mut self.stats);
        conn.send(channel, data, &mut ctx)?;
        self.stats.messages_out += 1;
        self.mark_ready(handle.index);
        Ok(())
    }

    /// Closes a connection (a kick): `Disconnect` with `code` is sent redundantly, then a
    /// `Disconnected` event with [`DisconnectReason::Local`] follows.
    pub fn disconnect(&mut self, handle: ConnHandle, code: u16) {
        self.close(handle, close_kind::APPLICATION, code);
    }

    /// Closes every connection with a shutdown notice.
    pub fn shutdown(&mut self) {
        for index in 0..self.slots.len() as u32 {
            let generation = self.slots[index as usize].generation;
            if self.slots[index as usize].conn.is_some() {
                self.close(ConnHandle { index, generation }, close_kind::SHUTDOWN, 0);
            }
        }
    }

    fn close(&mut self, handle: ConnHandle, kind: u8, code: u16) {
        let Some(slot) = self.slots.get_mut(handle.index as usize) else {
            return;
        };
        if slot.generation != handle.generation {
            return;
        }
        let Some(c) = slot.conn.as_mut() else { return };
        c.close(DisconnectReason::Local { code }, kind, code, &mut self.pool);
        self.mark_ready(handle.index);
    }
}

/// A connection's per-call context over the server's settings, buffer pool and counters
/// (a free function, so that it borrows only those fields, not the connection's slot).
fn conn_ctx<'a>(
    config: &'a ServerConfig,
    pool: &'a mut BufPool,
    stats: &'a mut Counters,
) -> Ctx<'a> {
    Ctx {
        channels: &config.channels,
        transport: &config.transport,
        idle_timeout: config.idle_timeout,
        keepalive: config.keepalive,
        pool,
        stats,
    }
}

pub(crate) fn conn_stats(c: &Conn) -> ConnStats {
    let rtt: &RttEstimator = c.rtt();
    ConnStats {
        addr: c.peer,
        rtt: rtt.smoothed(),
        rtt_var: rtt.var(),
        cwnd: c.window(),
        bytes_in_flight: c.bytes_in_flight(),
        send_buffered: c.send_buffered(),
        memory: c.memory(),
    }
}
