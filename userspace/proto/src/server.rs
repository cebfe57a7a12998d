//! The server endpoint: one per worker, a preallocated connection table, stateless
//! handshake replies, and the connections' timers and transmit queue.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::{ChaCha8Rng, ChaCha20Rng};
use rand_core::{RngCore, SeedableRng};
use xrudp_common::rudp::{PacketType, VERSION};

use crate::config::{ConfigError, ServerConfig};
use crate::conn::MAX_DATAGRAM;
use crate::conn::{Conn, Ctx, DisconnectReason, SendError, State, close_kind};
use crate::crypto::{KEY_LEN, Role};
use crate::handshake::{self, CookieJar, Handshake, RejectReason, Welcome};
use crate::packet::{Datagram, DecodeError, MAX_CHANNELS, Writer};
use crate::pool::BufPool;
use crate::rtt::RttEstimator;
use crate::session::{self, Encryption, Mode, PUBLIC_KEY_LEN, Transcript};
use crate::stats::Counters;
use crate::timer::Wheel;
use crate::token::{self, ReuseTable, TokenError};

/// Handshake replies queued at most; more are dropped (and counted) rather than queued, so a
/// hello flood costs bounded memory.
pub(crate) const MAX_PENDING_REPLIES: usize = 1024;

/// Passes `handle_timeout` makes at most over timers that expire again within `now`.
const MAX_TIMER_ROUNDS: usize = 4;

/// Largest handshake reply.
const REPLY_LEN: usize = 64;

/// Largest `Welcome`: header, nonce, ephemeral key, fields with 8 channels, tag.
const WELCOME_LEN: usize = 12 + 8 + PUBLIC_KEY_LEN + 25 + MAX_CHANNELS + crate::crypto::TAG_LEN;

/// Encodes a `Welcome` into `out` with its fields sealed (docs/PROTOCOL.md §13.5).
/// Returns its length.
fn seal_welcome(
    out: &mut [u8],
    conn_id: u32,
    w: &Welcome,
    mode: Mode,
    server_ephemeral: Option<&[u8; PUBLIC_KEY_LEN]>,
    keys: &crate::crypto::RawKeys,
) -> Option<usize> {
    let limit = out.len().checked_sub(crate::crypto::TAG_LEN)?;
    let mut wr = Writer::new(&mut out[..limit]);
    wr.header(xrudp_common::rudp::PacketType::Welcome, conn_id)?;
    wr.u64(w.nonce)?;
    if let Some(k) = server_ephemeral {
        wr.bytes(k)?;
    }
    handshake::write_welcome_fields(&mut wr, w)?;
    let len = wr.len();
    let len = session::seal_welcome(keys, out, session::welcome_clear_len(mode), len)?;
    crate::packet::seal(&mut out[..len]);
    Some(len)
}

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

    /// The slot's generation: which of the connections that used the slot this is.
    #[must_use]
    pub fn generation(self) -> u32 {
        self.generation
    }

    /// A handle rebuilt from [`ConnHandle::index`] and [`ConnHandle::generation`] (as
    /// telemetry reports them). A handle that names no live connection is refused by
    /// every call that takes one, like a stale handle.
    #[must_use]
    pub fn from_parts(index: u32, generation: u32) -> Self {
        Self { index, generation }
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

/// The bits of a connection id that hold its slot index on a server of
/// `max_connections` slots: the `b` of docs/PROTOCOL.md §4.4, the fewest that count to
/// `max_connections − 1`. An admission filter in front of the server finds a packet's
/// slot with the same bits.
#[must_use]
pub fn slot_bits(max_connections: usize) -> u32 {
    usize::BITS - max_connections.saturating_sub(1).leading_zeros()
}

/// A change to the set of live sessions, for an admission filter in front of the server
/// (the engine's XDP session allow-list). Reported only after
/// [`Server::track_sessions`], through [`Server::poll_session`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionChange {
    /// A connection was admitted, or moved to a validated new address.
    Live {
        /// The connection id its packets carry.
        conn_id: u32,
        /// The peer's address.
        addr: SocketAddr,
        /// The session is authenticated, so a packet from a new address is a migration
        /// attempt rather than someone else's (docs/PROTOCOL.md §5.4).
        may_migrate: bool,
    },
    /// A connection ended; its id is no longer live.
    Gone {
        /// The connection id.
        conn_id: u32,
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
    /// The connection id on the wire (docs/PROTOCOL.md §3), as packet captures show it.
    pub conn_id: u32,
    /// The peer's address.
    pub addr: SocketAddr,
    /// Smoothed RTT.
    pub rtt: Duration,
    /// RTT variance.
    pub rtt_var: Duration,
    /// The smallest RTT sample (RFC 9002 §5.2): the path's round trip without ack delay.
    pub min_rtt: Duration,
    /// RTT jitter: the smoothed step between consecutive samples, less their ack delays
    /// (RFC 3550 §6.4.1's estimator); zero before the second sample.
    pub jitter: Duration,
    /// Ack-eliciting packets sent since the connection opened.
    pub packets_sent: u64,
    /// Of those, packets lost: declared lost and never acknowledged after all.
    pub packets_lost: u64,
    /// Packets sent that carried retransmitted messages.
    pub packets_retransmitted: u64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes in flight.
    pub bytes_in_flight: u64,
    /// Bytes queued or unacknowledged.
    pub send_buffered: usize,
    /// Bytes of protocol state held, inline and on the heap.
    pub memory: usize,
    /// The largest datagram this end sends on the connection now: the path MTU that
    /// discovery confirmed (docs/PROTOCOL.md §5.5), or the configured MTU with it off.
    pub mtu: u16,
}

impl ConnStats {
    /// Packets lost per packet sent since the connection opened (0 before any was sent).
    #[must_use]
    pub fn loss(&self) -> f64 {
        crate::stats::share(self.packets_lost, self.packets_sent)
    }

    /// Packets that carried retransmissions per packet sent (0 before any was sent).
    #[must_use]
    pub fn retransmission(&self) -> f64 {
        crate::stats::share(self.packets_retransmitted, self.packets_sent)
    }
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

/// What admission hands a new connection: the client's identity and the session keys.
struct Admission {
    client_id: Option<u64>,
    user_data: Vec<u8>,
    mode: Mode,
    /// The key-schedule secret and the transcript fields that only the handshake knows.
    secret: [u8; 2 * KEY_LEN],
    secret_len: usize,
    client_key: Option<[u8; PUBLIC_KEY_LEN]>,
    server_ephemeral: Option<[u8; PUBLIC_KEY_LEN]>,
    server_static: Option<[u8; PUBLIC_KEY_LEN]>,
    token_tag: Option<[u8; crate::crypto::TAG_LEN]>,
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
    /// Draws the open modes' ephemeral keys (seeded from the caller's entropy).
    key_rng: ChaCha20Rng,
    /// Open mode: the static private key and its public key.
    static_key: Option<([u8; KEY_LEN], [u8; PUBLIC_KEY_LEN])>,
    /// Token mode: the tokens in use, by tag.
    tokens: Option<ReuseTable>,
    /// Where protected packets are opened (one buffer, reused: no per-packet zeroing).
    scratch: Box<[u8]>,
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
    /// [`Server::drain`] was called: no new connection is admitted.
    draining: bool,
    /// Where draining clients are sent (the DRAIN frame's address).
    drain_to: Option<SocketAddr>,
    /// Session changes not yet taken, once [`Server::track_sessions`] turned it on.
    sessions: Option<VecDeque<SessionChange>>,
}

impl Server {
    /// A deterministic server for tests and simulations: `seed` drives every random
    /// choice (cookie secret, sequence numbers, and the keys of the open modes — 64 bits
    /// of entropy: a production server uses [`Server::with_entropy`]).
    pub fn new(config: ServerConfig, seed: u64, now: Instant) -> Result<Self, ConfigError> {
        let mut entropy = [0; 32];
        ChaCha8Rng::seed_from_u64(seed).fill_bytes(&mut entropy);
        Self::with_entropy(config, entropy, now)
    }

    /// A server whose random choices (cookie secret, sequence numbers, the static key if
    /// the configuration has none, every ephemeral key) derive from `entropy`: 32 bytes
    /// from the operating system's random source. The sans-IO core reads none itself.
    pub fn with_entropy(
        config: ServerConfig,
        entropy: [u8; 32],
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut key_rng = ChaCha20Rng::from_seed(entropy);
        let mut rng = ChaCha8Rng::seed_from_u64(key_rng.next_u64());
        let static_key = match &config.encryption {
            Encryption::Open { static_key, .. } => {
                let private = static_key.unwrap_or_else(|| {
                    let mut k = [0; KEY_LEN];
                    key_rng.fill_bytes(&mut k);
                    k
                });
                Some((private, session::public_key(&private)))
            }
            _ => None,
        };
        let tokens = matches!(config.encryption, Encryption::Token(_))
            .then(|| ReuseTable::new(2 * config.max_connections));
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
            index_bits: slot_bits(n),
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
            key_rng,
            static_key,
            tokens,
            scratch: vec![0; MAX_DATAGRAM].into_boxed_slice(),
            draining: false,
            drain_to: None,
            sessions: None,
            config,
        })
    }

    /// The `Welcome` fields for a connection.
    fn welcome_for(&self, nonce: u64, initial_seq: u16) -> Welcome {
        let mut channels = [0; MAX_CHANNELS];
        channels.copy_from_slice(&self.channel_kinds);
        Welcome {
            nonce,
            initial_seq,
            mtu: self.config.transport.mtu as u16,
            max_ack_delay_us: self.config.transport.max_ack_delay.as_micros() as u32,
            idle_timeout_ms: self.config.idle_timeout.as_millis() as u32,
            keepalive_ms: self.config.keepalive.as_millis() as u32,
            channels,
            channel_count: self.config.channels.len() as u8,
        }
    }

    /// From now on, report every change to the set of live sessions through
    /// [`Server::poll_session`] (each session that is live now is reported first). Whoever
    /// turns this on must take the changes at least once per wakeup: they queue until then.
    pub fn track_sessions(&mut self) {
        let mut log = VecDeque::with_capacity(2 * self.config.max_connections);
        for s in &self.slots {
            if let Some(c) = s.conn.as_ref() {
                log.push_back(SessionChange::Live {
                    conn_id: c.conn_id,
                    addr: c.peer,
                    may_migrate: c.is_protected(),
                });
            }
        }
        self.sessions = Some(log);
    }

    /// The next change to the set of live sessions, oldest first (after
    /// [`Server::track_sessions`]; always `None` before).
    pub fn poll_session(&mut self) -> Option<SessionChange> {
        self.sessions.as_mut()?.pop_front()
    }

    fn log_session(&mut self, change: SessionChange) {
        if let Some(log) = self.sessions.as_mut() {
            log.push_back(change);
        }
    }

    /// The static X25519 public key clients pin (open mode), or `None`.
    #[must_use]
    pub fn public_key(&self) -> Option<[u8; PUBLIC_KEY_LEN]> {
        self.static_key.map(|(_, public)| public)
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

    /// Every open connection's handle, those still sending their `Disconnect` included,
    /// whether or not the application has taken its `Connected` event yet (O(slots): for
    /// telemetry, not per packet).
    pub fn handles(&self) -> impl Iterator<Item = ConnHandle> + '_ {
        self.slots
            .iter()
            .zip(0u32..)
            .filter(|(s, _)| s.conn.is_some())
            .map(|(s, index)| ConnHandle {
                index,
                generation: s.generation,
            })
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
            PacketType::Data | PacketType::Disconnect => {
                self.handle_conn_packet(now, from, &d, data);
            }
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
                if (self.draining || self.free.is_empty()) && !self.by_addr.contains_key(&from) {
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
                mode,
                client_key,
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
                let Some(mode) = Mode::from_u8(mode) else {
                    self.stats.decode_errors[DecodeError::BadField.index()] += 1;
                    return;
                };
                if !self.config.encryption.accepts(mode) {
                    self.refuse(from, nonce, RejectReason::SecurityMismatch);
                    return;
                }
                if self.draining || self.free.is_empty() {
                    self.refuse(from, nonce, RejectReason::ServerFull);
                    return;
                }
                let admission = match mode {
                    Mode::Token => match self.open_token(now, from, token) {
                        Ok(a) => a,
                        Err(reason) => {
                            self.refuse(from, nonce, reason);
                            return;
                        }
                    },
                    Mode::Anonymous | Mode::Pinned => {
                        // INVARIANT: the decoder requires the key in the open modes.
                        let client_key = client_key.expect("open modes carry a client key");
                        let Some(a) = self.exchange(mode, &client_key) else {
                            // A low-order key: no shared secret. Dropped, not answered.
                            self.stats.decode_errors[DecodeError::BadField.index()] += 1;
                            return;
                        };
                        a
                    }
                    Mode::Off => Admission {
                        client_id: None,
                        user_data: Vec::new(),
                        mode,
                        secret: [0; 2 * KEY_LEN],
                        secret_len: 0,
                        client_key: None,
                        server_ephemeral: None,
                        server_static: None,
                        token_tag: None,
                    },
                };
                let Some(index) = self.free.pop() else {
                    self.refuse(from, nonce, RejectReason::ServerFull);
                    return;
                };
                self.admit(now, from, index, nonce, initial_seq, admission);
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
        a: Admission,
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
        let ctx = conn_ctx(
            &self.config,
            &mut self.pool,
            &mut self.stats,
            self.drain_to,
            self.start,
        );
        // The client's max ack delay is the same default unless configured otherwise: the
        // client announces none, so the server assumes its own.
        let mut conn = Conn::new(
            now,
            from,
            conn_id,
            &ctx,
            self.config.transport.mtu,
            self.config.transport.max_ack_delay,
            initial_seq,
            peer_seq,
        );
        let keys = (a.mode != Mode::Off).then(|| {
            Transcript {
                mode: a.mode,
                nonce,
                conn_id,
                client_seq: peer_seq,
                client_key: a.client_key.as_ref(),
                server_ephemeral: a.server_ephemeral.as_ref(),
                server_static: a.server_static.as_ref(),
                token_tag: a.token_tag.as_ref(),
            }
            .derive(&a.secret[..a.secret_len])
        });
        if let Some(k) = &keys {
            let mut welcome = vec![0; WELCOME_LEN];
            let w = self.welcome_for(nonce, initial_seq);
            // INVARIANT: WELCOME_LEN holds the largest Welcome (8 channels, sealed, open mode).
            let len = seal_welcome(
                &mut welcome,
                conn_id,
                &w,
                a.mode,
                a.server_ephemeral.as_ref(),
                k,
            )
            .expect("a Welcome fits WELCOME_LEN");
            welcome.truncate(len);
            conn.set_keys(k.for_role(Role::Server), welcome);
        }
        let slot = &mut self.slots[index as usize];
        slot.conn = Some(conn);
        slot.nonce = nonce;
        slot.welcome = true;
        slot.initial_seq = initial_seq;
        self.by_addr.insert(from, index);
        self.stats.accepted += 1;
        let may_migrate = keys.is_some();
        self.log_session(SessionChange::Live {
            conn_id,
            addr: from,
            may_migrate,
        });
        self.events.push_back(ServerEvent::Connected {
            handle,
            addr: from,
            client_id: a.client_id,
            user_data: a.user_data,
        });
        self.mark_ready(index);
        self.reschedule(index);
    }

    /// Token mode: opens the private token (after the cookie verified), checks it was not
    /// used from another address, and returns the session's secret.
    fn open_token(
        &mut self,
        now: Instant,
        from: SocketAddr,
        private: &[u8],
    ) -> Result<Admission, RejectReason> {
        let Encryption::Token(key) = &self.config.encryption else {
            return Err(RejectReason::SecurityMismatch);
        };
        if private.is_empty() {
            return Err(RejectReason::TokenRequired);
        }
        let Some(unix) = self
            .unix_anchor
            .map(|(t, s)| s + now.saturating_duration_since(t).as_secs())
        else {
            return Err(RejectReason::TokenExpired);
        };
        // INVARIANT: validate() requires public_addr in token mode.
        let server = self
            .config
            .public_addr
            .expect("token mode has a public address");
        let mut scratch = [0u8; token::MAX_PRIVATE_LEN];
        let t = match token::open(key, private, unix, server, &mut scratch) {
            Ok(t) => t,
            Err(TokenError::Expired) => return Err(RejectReason::TokenExpired),
            Err(_) => return Err(RejectReason::TokenInvalid),
        };
        // INVARIANT: built with the server in token mode.
        let table = self.tokens.as_mut().expect("token mode has a reuse table");
        if table.check(t.tag, from, t.expires, unix).is_err() {
            self.stats.token_reused += 1;
            return Err(RejectReason::TokenReused);
        }
        let mut secret = [0; 2 * KEY_LEN];
        secret[..KEY_LEN].copy_from_slice(&t.c2s_key);
        secret[KEY_LEN..].copy_from_slice(&t.s2c_key);
        Ok(Admission {
            client_id: Some(t.client_id),
            user_data: t.user_data.to_vec(),
            mode: Mode::Token,
            secret,
            secret_len: 2 * KEY_LEN,
            client_key: None,
            server_ephemeral: None,
            server_static: None,
            token_tag: Some(t.tag),
        })
    }

    /// Open modes: the server's half of the X25519 exchange (after the cookie verified).
    /// `None` if the client's key is of low order.
    fn exchange(&mut self, mode: Mode, client_key: &[u8; PUBLIC_KEY_LEN]) -> Option<Admission> {
        let (static_private, static_public) = self.static_key?;
        let mut ephemeral = [0; KEY_LEN];
        self.key_rng.fill_bytes(&mut ephemeral);
        let mut secret = [0; 2 * KEY_LEN];
        secret[..KEY_LEN].copy_from_slice(&session::agree(&ephemeral, client_key)?);
        let mut secret_len = KEY_LEN;
        let pinned = mode == Mode::Pinned;
        if pinned {
            secret[KEY_LEN..].copy_from_slice(&session::agree(&static_private, client_key)?);
            secret_len = 2 * KEY_LEN;
        }
        Some(Admission {
            client_id: None,
            user_data: Vec::new(),
            mode,
            secret,
            secret_len,
            client_key: Some(*client_key),
            server_ephemeral: Some(session::public_key(&ephemeral)),
            server_static: pinned.then_some(static_public),
            token_tag: None,
        })
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

    /// The connection a packet is for: its id must match, and its address too unless the
    /// connection is protected (then authentication decides, and a new address is a
    /// migration attempt, §5.4).
    fn lookup(&self, conn_id: u32, from: SocketAddr) -> Option<u32> {
        let mask = (1u32 << self.index_bits) - 1;
        let index = conn_id & mask;
        let slot = self.slots.get(index as usize)?;
        let c = slot.conn.as_ref()?;
        (c.conn_id == conn_id && (c.peer == from || c.is_protected())).then_some(index)
    }

    fn handle_conn_packet(
        &mut self,
        now: Instant,
        from: SocketAddr,
        d: &Datagram<'_>,
        data: &[u8],
    ) {
        let Some(index) = self.lookup(d.conn_id, from) else {
            self.stats.unknown_connection += 1;
            return;
        };
        let slot = &mut self.slots[index as usize];
        let generation = slot.generation;
        // INVARIANT: lookup returned a slot holding a connection.
        let conn = slot.conn.as_mut().expect("looked up");
        let mut ctx = conn_ctx(
            &self.config,
            &mut self.pool,
            &mut self.stats,
            self.drain_to,
            self.start,
        );
        let Some(body) = conn.unprotect(data, &mut self.scratch, &mut ctx) else {
            return;
        };
        // Any authenticated packet from the client means it has our welcome.
        slot.welcome = false;
        let before = conn.largest_received();
        if d.kind == PacketType::Disconnect {
            conn.handle_disconnect(body, false, ctx.pool);
        } else {
            let events = &mut self.events;
            let handle = ConnHandle { index, generation };
            conn.handle_data(now, body, &mut ctx, &mut |channel, data| {
                events.push_back(ServerEvent::Message {
                    handle,
                    channel,
                    data,
                });
            });
        }
        let newest = conn.largest_received() > before;
        // A PATH_RESPONSE in this packet moves the connection before the packet's own
        // address is weighed (it is then the peer's).
        self.migrate_if_validated(now, index);
        let Some(conn) = self.slots[index as usize].conn.as_mut() else {
            return;
        };
        if conn.peer == from {
            conn.on_peer_packet(newest);
        } else {
            let rng = &mut self.key_rng;
            let challenge = || {
                let mut c = [0; 8];
                rng.fill_bytes(&mut c);
                c
            };
            if conn.on_new_path_packet(from, data.len(), newest, challenge) {
                self.mark_ready(index);
            }
        }
        self.after(index);
    }

    /// Moves a connection whose new address was validated (a PATH_RESPONSE echoed the
    /// challenge) to that address.
    fn migrate_if_validated(&mut self, now: Instant, index: u32) {
        let Some(conn) = self.slots[index as usize].conn.as_mut() else {
            return;
        };
        let Some(addr) = conn.take_validated_path() else {
            return;
        };
        let old = conn.peer;
        let ctx = conn_ctx(
            &self.config,
            &mut self.pool,
            &mut self.stats,
            self.drain_to,
            self.start,
        );
        conn.migrate(now, addr, &ctx);
        if self.by_addr.get(&old) == Some(&index) {
            self.by_addr.remove(&old);
        }
        self.by_addr.insert(addr, index);
        self.stats.migrated += 1;
        let (conn_id, may_migrate) = (conn.conn_id, conn.is_protected());
        self.log_session(SessionChange::Live {
            conn_id,
            addr,
            may_migrate,
        });
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
        self.log_session(SessionChange::Gone { conn_id: c.conn_id });
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
        let (keepalive, start) = (self.config.keepalive, self.start);
        match slot
            .conn
            .as_ref()
            .and_then(|c| c.poll_timeout(keepalive, start))
        {
            Some(t) => self.timers.schedule(index, t),
            None => {
                self.timers.cancel(index);
            }
        }
    }

    /// Handles timers that expired at or before `now`, in deadline order (ties in
    /// connection-index order). With nothing due it only moves the timer wheel's cursor
    /// to `now`, at the cost of a few bitmap words: a driver should call it every loop
    /// round, not only once [`Server::poll_timeout`] has passed (see there).
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
                let mut ctx = conn_ctx(
                    &self.config,
                    &mut self.pool,
                    &mut self.stats,
                    self.drain_to,
                    self.start,
                );
                conn.handle_timeout(now, &mut ctx);
                self.after(index);
            }
        }
        due.clear();
        self.due = due;
    }

    /// The next time `handle_timeout` should be called: the earliest connection deadline,
    /// exactly.
    ///
    /// O(1) while the wheel's cursor keeps up with the clock. Only `handle_timeout` moves
    /// it: under steady traffic no timer expires for seconds (acks arrive before every
    /// PTO, traffic pushes keepalives back), and a driver that calls `handle_timeout`
    /// only when this deadline has passed lets the cursor fall a revolution (4.096 s)
    /// behind. Every deadline then lands in one coarse slot of the wheel, and this walks
    /// all of them on each call. Calling `handle_timeout` every round, as the engine
    /// does, avoids it (docs/DATAPATH.md, "The timer wheel's cursor").
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
                let dst = conn.peer;
                let len = if let Some(sealed) = conn.sealed_welcome() {
                    let Some(buf) = out.get_mut(..sealed.len()) else {
                        continue;
                    };
                    buf.copy_from_slice(sealed);
                    sealed.len()
                } else {
                    let (nonce, seq, id) = (slot.nonce, slot.initial_seq, conn.conn_id);
                    let w = Handshake::Welcome(self.welcome_for(nonce, seq));
                    let Some(len) = handshake::encode(out, id, &w) else {
                        continue;
                    };
                    len
                };
                self.stats.packets_out += 1;
                self.mark_ready(index);
                return Some(Transmit { dst, len });
            }
            let mut ctx = conn_ctx(
                &self.config,
                &mut self.pool,
                &mut self.stats,
                self.drain_to,
                self.start,
            );
            if let Some((dst, len)) = conn.poll_path_challenge(now, out, &mut ctx) {
                self.mark_ready(index);
                return Some(Transmit { dst, len });
            }
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
        let mut ctx = conn_ctx(
            &self.config,
            &mut self.pool,
            &mut self.stats,
            self.drain_to,
            self.start,
        );
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

    /// Starts draining (docs/PROTOCOL.md §8.5): from now on every new client is refused
    /// (`Reject` with `ServerFull`), and every open connection gets a DRAIN frame, with
    /// `redirect` if given, in each packet until the client acknowledges one; the client
    /// reports `ClientEvent::Draining`. Connections stay open and keep delivering until
    /// the clients leave or the application closes them. A second call changes nothing.
    pub fn drain(&mut self, redirect: Option<SocketAddr>) {
        if self.draining {
            return;
        }
        self.draining = true;
        self.drain_to = redirect;
        for index in 0..self.slots.len() as u32 {
            if self.slots[index as usize]
                .conn
                .as_mut()
                .is_some_and(Conn::start_drain)
            {
                self.mark_ready(index);
            }
        }
    }

    /// Whether [`Server::drain`] was called.
    #[must_use]
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// Open connections whose client acknowledged the drain notice.
    #[must_use]
    pub fn drain_notices_acked(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.conn.as_ref().is_some_and(Conn::drain_acked))
            .count()
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
    drain_to: Option<SocketAddr>,
    epoch: Instant,
) -> Ctx<'a> {
    Ctx {
        channels: &config.channels,
        transport: &config.transport,
        idle_timeout: config.idle_timeout,
        keepalive: config.keepalive,
        ack_delay: config.transport.max_ack_delay,
        pool,
        stats,
        drain_to,
        epoch,
        mtu: config.transport.mtu as u16,
    }
}

pub(crate) fn conn_stats(c: &Conn) -> ConnStats {
    let rtt: &RttEstimator = c.rtt();
    let q = c.quality();
    ConnStats {
        conn_id: c.conn_id,
        addr: c.peer,
        rtt: rtt.smoothed(),
        rtt_var: rtt.var(),
        min_rtt: rtt.min(),
        jitter: rtt.jitter(),
        packets_sent: u64::from(q.sent),
        packets_lost: u64::from(q.lost),
        packets_retransmitted: u64::from(q.retransmitted),
        cwnd: c.window(),
        bytes_in_flight: c.bytes_in_flight(),
        send_buffered: c.send_buffered(),
        memory: c.memory(),
        mtu: c.mtu(),
    }
}
