//! The client endpoint: one connection to one server (sans-IO).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use xrudp_common::rudp::PacketType;

use crate::config::{ChannelKind, ClientConfig, ConfigError};
use crate::conn::{Conn, Ctx, DisconnectReason, MAX_DATAGRAM, SendError, State, close_kind};
use crate::crypto::{KEY_LEN, Role};
use crate::handshake::{self, Handshake, RejectReason};
use crate::packet::{COOKIE_LEN, Datagram, DecodeError, Reader};
use crate::pool::BufPool;
use crate::server::{ConnStats, Transmit};
use crate::session::{self, Mode, PUBLIC_KEY_LEN, Security, Transcript};
use crate::stats::Counters;

/// Longest interval between handshake resends.
pub(crate) const MAX_HANDSHAKE_RESEND: Duration = Duration::from_secs(1);

/// Where the client is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Handshaking.
    Connecting,
    /// Established: messages flow.
    Connected,
    /// Sending its `Disconnect`.
    Disconnecting,
    /// Over (see the `Disconnected` event for why).
    Disconnected,
}

/// What happened, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// The server admitted the client.
    Connected,
    /// A message arrived. Hand `data` back with [`Client::recycle`] to avoid allocation.
    Message {
        /// Channel index.
        channel: u8,
        /// The message.
        data: Vec<u8>,
    },
    /// The server is draining (docs/PROTOCOL.md §8.5): it admits no new clients and will
    /// go away; reconnect, to `redirect` if the server named one. The connection stays
    /// open (messages still flow) until either side closes it. Reported once.
    Draining {
        /// Where the server asks its clients to reconnect.
        redirect: Option<SocketAddr>,
    },
    /// The connection ended or never started.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
}

#[derive(Debug)]
enum Phase {
    Hello,
    Response { cookie: [u8; COOKIE_LEN] },
    Open(Box<Conn>),
    Done,
}

/// What the server's welcome settled: the channels, and the idle and keepalive timers.
#[derive(Debug, Default)]
struct Session {
    channels: Vec<ChannelKind>,
    idle_timeout: Duration,
    keepalive: Duration,
    /// The client's own `max_ack_delay`, at most the server's from `Welcome` (§7.1).
    ack_delay: Duration,
    /// min(the client's MTU, the server's from `Welcome`), at least 1200 (§4.4): the
    /// ceiling of the path MTU search.
    mtu: u16,
}

/// The open connection's per-call context over the session's and the client's settings,
/// buffer pool and counters (a free function, so that it leaves `Client::phase` borrowable).
fn conn_ctx<'a>(
    session: &'a Session,
    config: &'a ClientConfig,
    pool: &'a mut BufPool,
    stats: &'a mut Counters,
    epoch: Instant,
) -> Ctx<'a> {
    Ctx {
        channels: &session.channels,
        transport: &config.transport,
        idle_timeout: session.idle_timeout,
        keepalive: session.keepalive,
        ack_delay: session.ack_delay,
        pool,
        stats,
        drain_to: None,
        epoch,
        mtu: session.mtu,
    }
}

/// A client endpoint. Same call order as [`crate::Server`].
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    server: SocketAddr,
    nonce: u64,
    initial_seq: u16,
    security: Security,
    /// Open modes: the ephemeral public key sent in `Response`.
    ephemeral_public: Option<[u8; PUBLIC_KEY_LEN]>,
    phase: Phase,
    /// Where protected packets are opened: [`MAX_DATAGRAM`] bytes once the session is
    /// protected, empty otherwise (an unprotected connection never touches it).
    scratch: Vec<u8>,
    session: Session,
    started: Instant,
    resend_at: Option<Instant>,
    resend_interval: Duration,
    send_now: bool,
    events: VecDeque<ClientEvent>,
    /// The server's drain notice was reported (it comes in every packet until acked).
    drain_reported: bool,
    pool: BufPool,
    stats: Counters,
}

impl Client {
    /// Starts connecting to `server`; `seed` drives the nonce and sequence numbers,
    /// `security` says how the session gets its keys (docs/PROTOCOL.md §13). With a
    /// connect token, its handshake timeout replaces the configured one.
    pub fn new(
        mut config: ClientConfig,
        server: SocketAddr,
        seed: u64,
        now: Instant,
        security: Security,
    ) -> Result<Self, ConfigError> {
        if let Security::Token(t) = &security {
            config.handshake_timeout = t.handshake_timeout;
        }
        config.validate()?;
        let ephemeral_public = match &security {
            Security::Open { ephemeral, .. } => Some(session::public_key(ephemeral)),
            _ => None,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nonce = rng.next_u64();
        let initial_seq = config
            .transport
            .initial_seq
            .unwrap_or_else(|| rng.next_u32() as u16);
        Ok(Self {
            resend_interval: config.handshake_resend,
            server,
            nonce,
            initial_seq,
            security,
            ephemeral_public,
            phase: Phase::Hello,
            scratch: Vec::new(),
            session: Session::default(),
            started: now,
            resend_at: None,
            send_now: true,
            events: VecDeque::new(),
            drain_reported: false,
            pool: BufPool::default(),
            stats: Counters::default(),
            config,
        })
    }

    /// The client's state.
    #[must_use]
    pub fn state(&self) -> ClientState {
        match &self.phase {
            Phase::Hello | Phase::Response { .. } => ClientState::Connecting,
            Phase::Open(c) => match c.state {
                State::Open => ClientState::Connected,
                State::Closing { .. } => ClientState::Disconnecting,
                State::Closed => ClientState::Disconnected,
            },
            Phase::Done => ClientState::Disconnected,
        }
    }

    /// Whether the client is connected with nothing queued, in flight or unacknowledged, or
    /// is disconnected.
    #[must_use]
    pub fn is_quiet(&self) -> bool {
        match &self.phase {
            Phase::Open(c) => c.is_quiet(),
            Phase::Done => true,
            _ => false,
        }
    }

    /// The connection id the server issued (once welcomed).
    #[must_use]
    pub fn connection_id(&self) -> Option<u32> {
        match &self.phase {
            Phase::Open(c) => Some(c.conn_id),
            _ => None,
        }
    }

    /// The server's address.
    #[must_use]
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> &Counters {
        &self.stats
    }

    /// Figures of the connection, once established.
    #[must_use]
    pub fn connection_stats(&self) -> Option<ConnStats> {
        match &self.phase {
            Phase::Open(c) => Some(crate::server::conn_stats(c)),
            _ => None,
        }
    }

    /// The channels the server announced (empty before `Connected`).
    #[must_use]
    pub fn channels(&self) -> &[ChannelKind] {
        &self.session.channels
    }

    /// Handles one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        self.stats.packets_in += 1;
        if from != self.server {
            self.stats.unknown_connection += 1;
            return;
        }
        let d = match Datagram::parse(data) {
            Ok(d) => d,
            Err(e) => {
                self.stats.decode_errors[e.index()] += 1;
                return;
            }
        };
        match d.kind {
            PacketType::Data | PacketType::Disconnect => {
                let Phase::Open(conn) = &mut self.phase else {
                    self.stats.unknown_connection += 1;
                    return;
                };
                if d.conn_id != conn.conn_id {
                    self.stats.unknown_connection += 1;
                    return;
                }
                let mut ctx = conn_ctx(
                    &self.session,
                    &self.config,
                    &mut self.pool,
                    &mut self.stats,
                    self.started,
                );
                let Some(body) = conn.unprotect(data, &mut self.scratch, &mut ctx) else {
                    return;
                };
                if d.kind == PacketType::Disconnect {
                    conn.handle_disconnect(body, true, ctx.pool);
                } else {
                    let events = &mut self.events;
                    let notice = conn.handle_data(now, body, &mut ctx, &mut |channel, data| {
                        events.push_back(ClientEvent::Message { channel, data });
                    });
                    if let Some(crate::conn::Drain(redirect)) = notice
                        && !self.drain_reported
                    {
                        self.drain_reported = true;
                        self.events.push_back(ClientEvent::Draining { redirect });
                    }
                }
                self.check_closed();
            }
            PacketType::Hello | PacketType::Response => {
                self.stats.decode_errors[DecodeError::Unexpected.index()] += 1;
            }
            PacketType::Welcome if self.security.mode() != Mode::Off => {
                self.handle_sealed_welcome(now, &d, data);
            }
            _ => self.handle_handshake(now, &d),
        }
    }

    /// A `Welcome` in a protected mode (docs/PROTOCOL.md §13.5): derives the session keys
    /// and opens its fields. One that does not authenticate is dropped (`auth_failed`) and
    /// the handshake goes on: it may be forged.
    fn handle_sealed_welcome(&mut self, now: Instant, d: &Datagram<'_>, data: &[u8]) {
        let connecting = matches!(self.phase, Phase::Hello | Phase::Response { .. });
        let mut r = Reader::new(d.body);
        let Ok(nonce) = r.u64() else {
            self.stats.decode_errors[DecodeError::Truncated.index()] += 1;
            return;
        };
        if nonce != self.nonce || !connecting || d.conn_id == 0 {
            self.stats.decode_errors[DecodeError::Unexpected.index()] += 1;
            return;
        }
        let mode = self.security.mode();
        let mut server_ephemeral = [0; PUBLIC_KEY_LEN];
        if mode.is_open() {
            let Ok(k) = r.bytes(PUBLIC_KEY_LEN) else {
                self.stats.decode_errors[DecodeError::Truncated.index()] += 1;
                return;
            };
            server_ephemeral.copy_from_slice(k);
        }
        let mut secret = [0u8; 2 * KEY_LEN];
        let (secret_len, token_tag, server_static) = match &self.security {
            Security::Off => return,
            Security::Token(t) => {
                secret[..KEY_LEN].copy_from_slice(&t.c2s_key);
                secret[KEY_LEN..].copy_from_slice(&t.s2c_key);
                let p = t.private_bytes();
                let mut tag = [0; crate::crypto::TAG_LEN];
                tag.copy_from_slice(&p[p.len().saturating_sub(crate::crypto::TAG_LEN)..]);
                (2 * KEY_LEN, Some(tag), None)
            }
            Security::Open {
                ephemeral,
                server_key,
            } => {
                let Some(ee) = session::agree(ephemeral, &server_ephemeral) else {
                    self.stats.auth_failed += 1;
                    return;
                };
                secret[..KEY_LEN].copy_from_slice(&ee);
                match server_key {
                    Some(s) => {
                        let Some(es) = session::agree(ephemeral, s) else {
                            self.stats.auth_failed += 1;
                            return;
                        };
                        secret[KEY_LEN..].copy_from_slice(&es);
                        (2 * KEY_LEN, None, Some(*s))
                    }
                    None => (KEY_LEN, None, None),
                }
            }
        };
        let keys = Transcript {
            mode,
            nonce,
            conn_id: d.conn_id,
            client_seq: self.initial_seq,
            client_key: self.ephemeral_public.as_ref(),
            server_ephemeral: mode.is_open().then_some(&server_ephemeral),
            server_static: server_static.as_ref(),
            token_tag: token_tag.as_ref(),
        }
        .derive(&secret[..secret_len]);
        let mut scratch = [0u8; MAX_DATAGRAM];
        let Some(packet) = scratch.get_mut(..data.len()) else {
            self.stats.decode_errors[DecodeError::BadField.index()] += 1;
            return;
        };
        packet.copy_from_slice(data);
        let clear = session::welcome_clear_len(mode);
        let Ok(end) = session::open_welcome(&keys, packet, clear) else {
            self.stats.auth_failed += 1;
            return;
        };
        let w = match handshake::welcome_fields(nonce, &mut Reader::new(&packet[clear..end])) {
            Ok(w) => w,
            Err(e) => {
                self.stats.decode_errors[e.index()] += 1;
                return;
            }
        };
        self.welcome(now, d.conn_id, &w, Some(keys));
    }

    fn handle_handshake(&mut self, now: Instant, d: &Datagram<'_>) {
        let h = match handshake::decode(d.kind, d.body, d.len) {
            Ok(h) => h,
            Err(e) => {
                self.stats.decode_errors[e.index()] += 1;
                return;
            }
        };
        let connecting = matches!(self.phase, Phase::Hello | Phase::Response { .. });
        match h {
            Handshake::Challenge { nonce, cookie } if nonce == self.nonce && connecting => {
                self.phase = Phase::Response { cookie };
                self.send_now = true;
                self.resend_interval = self.config.handshake_resend;
            }
            Handshake::Welcome(w) if w.nonce == self.nonce && connecting => {
                if d.conn_id == 0 {
                    self.stats.decode_errors[DecodeError::BadField.index()] += 1;
                    return;
                }
                self.welcome(now, d.conn_id, &w, None);
            }
            Handshake::Reject { nonce, reason } if nonce == self.nonce && connecting => {
                let reason = RejectReason::from_u8(reason).unwrap_or(RejectReason::ServerFull);
                self.end(DisconnectReason::Rejected(reason));
            }
            Handshake::VersionMismatch { nonce, .. } if nonce == self.nonce && connecting => {
                self.end(DisconnectReason::VersionMismatch);
            }
            _ => self.stats.decode_errors[DecodeError::Unexpected.index()] += 1,
        }
    }

    /// Adopts an authenticated (or, in mode `Off`, clear) `Welcome` and opens the
    /// connection.
    fn welcome(
        &mut self,
        now: Instant,
        conn_id: u32,
        w: &handshake::Welcome,
        keys: Option<crate::crypto::RawKeys>,
    ) {
        let mut channels = Vec::with_capacity(usize::from(w.channel_count));
        for &k in &w.channels[..usize::from(w.channel_count)] {
            let Some(k) = ChannelKind::from_u8(k) else {
                self.stats.decode_errors[DecodeError::BadField.index()] += 1;
                return;
            };
            channels.push(k);
        }
        let mtu = usize::from(w.mtu).clamp(1200, self.config.transport.mtu);
        self.session = Session {
            mtu: mtu as u16,
            channels,
            idle_timeout: Duration::from_millis(u64::from(w.idle_timeout_ms.max(1000))),
            keepalive: Duration::from_millis(u64::from(w.keepalive_ms.max(100))),
            ack_delay: self
                .config
                .transport
                .max_ack_delay
                .min(Duration::from_micros(u64::from(w.max_ack_delay_us))),
        };
        let ctx = conn_ctx(
            &self.session,
            &self.config,
            &mut self.pool,
            &mut self.stats,
            self.started,
        );
        let mut conn = Conn::new(
            now,
            self.server,
            conn_id,
            &ctx,
            mtu,
            Duration::from_micros(u64::from(w.max_ack_delay_us)),
            self.initial_seq,
            w.initial_seq,
        );
        if let Some(k) = keys {
            conn.set_keys(k.for_role(Role::Client), Vec::new());
            self.scratch = vec![0; MAX_DATAGRAM];
        }
        // Tell the server at once that the welcome arrived.
        conn.force_ping();
        self.phase = Phase::Open(Box::new(conn));
        self.resend_at = None;
        self.events.push_back(ClientEvent::Connected);
    }

    fn end(&mut self, reason: DisconnectReason) {
        self.phase = Phase::Done;
        self.resend_at = None;
        self.events.push_back(ClientEvent::Disconnected { reason });
    }

    fn check_closed(&mut self) {
        if let Phase::Open(c) = &self.phase
            && c.state == State::Closed
        {
            let reason = c.reason.unwrap_or(DisconnectReason::TimedOut);
            self.end(reason);
        }
    }

    /// Handles timers that expired at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Hello | Phase::Response { .. } => {
                if now.saturating_duration_since(self.started) >= self.config.handshake_timeout {
                    self.end(DisconnectReason::HandshakeTimedOut);
                } else if self.resend_at.is_some_and(|t| t <= now) {
                    self.send_now = true;
                    self.resend_interval = (self.resend_interval * 2).min(MAX_HANDSHAKE_RESEND);
                }
            }
            Phase::Open(conn) => {
                let mut ctx = conn_ctx(
                    &self.session,
                    &self.config,
                    &mut self.pool,
                    &mut self.stats,
                    self.started,
                );
                conn.handle_timeout(now, &mut ctx);
                self.check_closed();
            }
            Phase::Done => {}
        }
    }

    /// The next time `handle_timeout` should be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Hello | Phase::Response { .. } => {
                let deadline = self.started + self.config.handshake_timeout;
                Some(self.resend_at.map_or(deadline, |t| t.min(deadline)))
            }
            Phase::Open(c) => c.poll_timeout(self.session.keepalive, self.started),
            Phase::Done => None,
        }
    }

    /// Writes the next datagram to send into `out` (at least 1200 bytes).
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        let dst = self.server;
        let len = match &mut self.phase {
            Phase::Hello | Phase::Response { .. } if self.send_now => {
                let h = match &self.phase {
                    Phase::Response { cookie } => Handshake::Response {
                        nonce: self.nonce,
                        cookie: *cookie,
                        initial_seq: self.initial_seq,
                        token: match &self.security {
                            Security::Token(t) => t.private_bytes(),
                            _ => &[],
                        },
                        mode: self.security.mode() as u8,
                        client_key: self.ephemeral_public,
                    },
                    _ => Handshake::Hello { nonce: self.nonce },
                };
                let len = handshake::encode(out, 0, &h)?;
                self.send_now = false;
                self.resend_at = Some(now + self.resend_interval);
                len
            }
            Phase::Open(conn) => {
                let mut ctx = conn_ctx(
                    &self.session,
                    &self.config,
                    &mut self.pool,
                    &mut self.stats,
                    self.started,
                );
                let r = conn.poll_transmit(now, out, &mut ctx);
                self.check_closed();
                return r.map(|len| Transmit { dst, len });
            }
            _ => return None,
        };
        self.stats.packets_out += 1;
        Some(Transmit { dst, len })
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let e = self.events.pop_front()?;
        if let (ClientEvent::Message { data, .. }, Phase::Open(c)) = (&e, &mut self.phase) {
            c.consumed(data.len());
        }
        Some(e)
    }

    /// Gives a delivered message's buffer back for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.pool.put(buf);
    }

    /// Preallocates `per_class` free message buffers in each pool size class up to 2 KiB
    /// (one MTU), so that the first messages sent and received take buffers instead of
    /// allocating. Call once, before sending; 32 costs about 106 KiB.
    pub fn prefill_pool(&mut self, per_class: usize) {
        self.pool.prefill(per_class, 2048);
    }

    /// Queues a message.
    pub fn send(&mut self, channel: u8, data: &[u8]) -> Result<(), SendError> {
        let Phase::Open(conn) = &mut self.phase else {
            return Err(SendError::NotConnected);
        };
        let mut ctx = conn_ctx(
            &self.session,
            &self.config,
            &mut self.pool,
            &mut self.stats,
            self.started,
        );
        conn.send(channel, data, &mut ctx)?;
        self.stats.messages_out += 1;
        Ok(())
    }

    /// Tells the connection that this end's address changed (its socket was rebound, or
    /// the device changed networks): the next packet goes out at once, so the server sees
    /// the new address, validates it and moves the session there (docs/PROTOCOL.md
    /// §5.4). Without it the move waits for the next message or keepalive. Only protected
    /// sessions migrate.
    pub fn path_changed(&mut self) {
        if let Phase::Open(c) = &mut self.phase {
            c.force_ping();
        }
    }

    /// Closes the connection gracefully with an application `code` (sent redundantly). While
    /// connecting, gives up at once.
    pub fn disconnect(&mut self, code: u16) {
        match &mut self.phase {
            Phase::Open(c) => c.close(
                DisconnectReason::Local { code },
                close_kind::APPLICATION,
                code,
                &mut self.pool,
            ),
            Phase::Hello | Phase::Response { .. } => self.end(DisconnectReason::Local { code }),
            Phase::Done => {}
        }
    }
}
