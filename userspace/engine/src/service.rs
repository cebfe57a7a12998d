//! The protocol and the application, as one worker drives them.
//!
//! A [`Service`] owns a worker's [`xrudp_proto::Server`] (its connection table) and the
//! application: the built-in `echo` and `relay`, or game code embedding the engine
//! through [`crate::api`] (events out and commands in over bounded lock-free queues).
//! Both backends — AF_XDP workers and kernel-socket workers — drive it the same way:
//! `handle_datagram` for each datagram of a batch, [`Service::run`] once per batch, then
//! `poll_transmit` until it returns `None`.
//!
//! Backpressure never loses reliable data: a message that cannot be queued because a
//! connection's send buffer is full waits in a bounded pending list and is retried every
//! round; while that list is full the service stops taking events from the protocol, so
//! undelivered messages stay counted against the senders' receive windows.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Instant};

use crossbeam_queue::ArrayQueue;
use xrudp_proto::{ConnHandle, DisconnectReason, SendError, Server, ServerEvent, Transmit};

/// Pending sends held while send buffers are full; beyond this the service stops
/// taking new events (backpressure) until the list drains.
const PENDING_LIMIT: usize = 4096;
/// After [`Service::shutdown`], the rounds (receive, timers, transmit) every data path
/// still drives before its worker leaves, [`SHUTDOWN_PAUSE`] apart: they let the
/// disconnect notices, and their redundant copies, out — the same on every backend.
pub(crate) const SHUTDOWN_ROUNDS: u32 = 4;
/// The pause between two [`SHUTDOWN_ROUNDS`].
pub(crate) const SHUTDOWN_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Commands taken from the application per round, so one burst cannot starve RX.
const COMMANDS_PER_ROUND: usize = 1024;

/// A message's first bytes that ask the relay to put the sender in a room:
/// `b"JOIN"` followed by the room id as a big-endian `u32`, on any channel.
pub const RELAY_JOIN: &[u8; 4] = b"JOIN";

/// A message forwarded by the relay to a member served by another worker.
#[derive(Debug)]
pub struct Forward {
    /// The member's connection within the receiving worker.
    pub handle: ConnHandle,
    /// The channel.
    pub channel: u8,
    /// The message, shared by every member it goes to.
    pub data: Arc<[u8]>,
}

/// The relay's state shared by all workers: the room directory (changed on join and
/// leave only, read through a per-worker copy refreshed when `version` moves, so a
/// message costs one atomic load and no lock) and one inbox per worker for messages to
/// members it serves.
#[derive(Debug)]
pub struct RelayShared {
    version: std::sync::atomic::AtomicU64,
    rooms: std::sync::RwLock<HashMap<u32, Vec<ConnId>>>,
    inboxes: Vec<ArrayQueue<Forward>>,
}

impl RelayShared {
    /// Shared relay state for `workers` workers with inboxes of `capacity` messages.
    #[must_use]
    pub fn new(workers: usize, capacity: usize) -> Self {
        Self {
            version: std::sync::atomic::AtomicU64::new(0),
            rooms: std::sync::RwLock::new(HashMap::new()),
            inboxes: (0..workers)
                .map(|_| ArrayQueue::new(capacity.max(1)))
                .collect(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<u32, Vec<ConnId>>)) {
        let mut rooms = self
            .rooms
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut rooms);
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

/// What the application is.
#[derive(Debug)]
pub enum App {
    /// Every message goes back to its sender on the same channel.
    Echo,
    /// Clients join rooms; every message is forwarded to the room's other members, on
    /// whichever worker they are.
    Relay(Arc<RelayShared>),
    /// Game code, through [`crate::api`].
    Embedded(Arc<Queues>),
}

/// A connection of one worker, as the application sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// The worker (queue or socket index) that owns the connection.
    pub worker: u16,
    /// The connection within that worker.
    pub handle: ConnHandle,
}

/// An event for embedding game code.
#[derive(Debug)]
pub enum Event {
    /// A client was admitted.
    Connected {
        /// The connection.
        conn: ConnId,
        /// The client's address.
        addr: SocketAddr,
        /// The connect token's client id, when tokens are required.
        client_id: Option<u64>,
    },
    /// A message arrived.
    Message {
        /// The connection.
        conn: ConnId,
        /// The channel.
        channel: u8,
        /// The message.
        data: Vec<u8>,
    },
    /// A connection ended.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: DisconnectReason,
    },
}

/// A command from embedding game code.
#[derive(Debug)]
pub enum Command {
    /// Send `data` to one connection.
    Send {
        /// The connection's handle within this worker.
        handle: ConnHandle,
        /// The channel.
        channel: u8,
        /// The message.
        data: Vec<u8>,
    },
    /// Send the same bytes to several connections of this worker (a state update's fan-out).
    Broadcast {
        /// The connections.
        handles: Arc<[ConnHandle]>,
        /// The channel.
        channel: u8,
        /// The message, shared.
        data: Arc<[u8]>,
    },
    /// Close a connection with an application code.
    Disconnect {
        /// The connection.
        handle: ConnHandle,
        /// The code the client sees.
        code: u16,
    },
}

/// The queues between one worker and embedding game code.
#[derive(Debug)]
pub struct Queues {
    /// Worker → application.
    pub events: ArrayQueue<Event>,
    /// Application → worker.
    pub commands: ArrayQueue<Command>,
}

impl Queues {
    /// Queues of `capacity` entries each.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            events: ArrayQueue::new(capacity.max(1)),
            commands: ArrayQueue::new(capacity.max(1)),
        }
    }
}

/// Application-level figures of one worker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppCounters {
    /// Rounds in which the application could not keep up (pending list or event queue
    /// full), so the service left events inside the protocol.
    pub backpressure_rounds: u64,
    /// Sends deferred because a connection's send buffer was full.
    pub sends_deferred: u64,
    /// Messages dropped because their connection had gone (not a loss: nobody to deliver to).
    pub sends_to_closed: u64,
    /// Messages refused as too large or on a bad channel.
    pub sends_refused: u64,
    /// Relay: messages forwarded to room members.
    pub relayed: u64,
    /// First hellos dropped because the worker's hello budget was spent.
    pub hellos_shed: u64,
}

/// A token bucket over time passed in: `rate` tokens per second, bursts up to one
/// second's worth.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: u32,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Self {
            rate,
            tokens: f64::from(rate),
            last: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let cap = f64::from(self.rate);
        if let Some(last) = self.last {
            self.tokens =
                (self.tokens + now.saturating_duration_since(last).as_secs_f64() * cap).min(cap);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One worker's protocol endpoint and application.
#[derive(Debug)]
pub struct Service {
    server: Server,
    app: App,
    worker: u16,
    pending: std::collections::VecDeque<Pending>,
    /// Relay: this worker's copy of the room directory, and the version it reflects.
    rooms: HashMap<u32, Vec<ConnId>>,
    rooms_version: u64,
    /// Relay: forwards to other workers whose inbox was full, retried every round.
    remote_pending: std::collections::VecDeque<(u16, Forward)>,
    /// Relay: each connection slot's room.
    room_of: Vec<Option<u32>>,
    /// Live connections by slot (for figures).
    live: Vec<Option<ConnHandle>>,
    /// An event taken from the protocol that the application queue had no room for.
    held: Option<Event>,
    /// Budget of first hellos answered per second.
    hellos: Bucket,
    /// Connections whose deferred sends failed again this round (scratch, reused).
    blocked: Vec<ConnHandle>,
    counters: AppCounters,
}

#[derive(Debug)]
struct Pending {
    handle: ConnHandle,
    channel: u8,
    data: Payload,
}

#[derive(Debug)]
enum Payload {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Shared(a) => a,
        }
    }
}

impl Service {
    /// A service around `server` running `app`, as worker number `worker`.
    #[must_use]
    pub fn new(server: Server, app: App, worker: u16) -> Self {
        let slots = server.config().max_connections;
        Self {
            server,
            app,
            worker,
            pending: std::collections::VecDeque::with_capacity(256),
            rooms: HashMap::new(),
            rooms_version: u64::MAX,
            remote_pending: std::collections::VecDeque::new(),
            room_of: vec![None; slots],
            live: vec![None; slots],
            held: None,
            hellos: Bucket::new(0),
            blocked: Vec::with_capacity(64),
            counters: AppCounters::default(),
        }
    }

    /// The protocol endpoint (figures, connection count).
    #[must_use]
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Application figures.
    #[must_use]
    pub fn counters(&self) -> &AppCounters {
        &self.counters
    }

    /// Feeds one received datagram's UDP payload.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) {
        // A first hello costs a CRC over 1,200 bytes and a keyed MAC, and anyone can
        // send one from any address: past the budget they are shed before the
        // protocol sees them, so a spoofed-hello flood cannot starve established players.
        if payload.get(3) == Some(&(xrudp_common::rudp::PacketType::Hello as u8))
            && !self.hellos.take(now)
        {
            self.counters.hellos_shed += 1;
            return;
        }
        self.server.handle_datagram(now, from, payload);
    }

    /// Limits the first hellos this worker answers to `per_second` (0: unlimited).
    pub fn set_hello_budget(&mut self, per_second: u32) {
        self.hellos = Bucket::new(per_second);
    }

    /// Fires protocol timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
    }

    /// The next protocol deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    /// Writes the next datagram to send into `out`.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        self.server.poll_transmit(now, out)
    }

    /// Closes every connection with a shutdown notice (sent on following transmits).
    pub fn shutdown(&mut self) {
        self.server.shutdown();
    }

    /// Runs the application once: retries deferred sends, applies commands from embedding
    /// code, and takes events from the protocol while the application can accept them.
    pub fn run(&mut self) {
        self.retry_pending();
        if let App::Relay(shared) = &self.app {
            let shared = Arc::clone(shared);
            self.relay_inbox(&shared);
        }
        if let App::Embedded(q) = &self.app {
            let q = Arc::clone(q);
            for _ in 0..COMMANDS_PER_ROUND {
                let Some(cmd) = q.commands.pop() else { break };
                self.apply(cmd);
            }
        }
        loop {
            if self.pending.len() >= PENDING_LIMIT || !self.deliver_held() {
                self.counters.backpressure_rounds += 1;
                return;
            }
            let Some(ev) = self.server.poll_event() else {
                return;
            };
            self.on_event(ev);
        }
    }

    fn on_event(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::Message {
                handle,
                channel,
                data,
            } => match &self.app {
                App::Echo => self.send_owned(handle, channel, data),
                App::Relay(shared) => {
                    let shared = Arc::clone(shared);
                    self.relay(&shared, handle, channel, data);
                }
                App::Embedded(_) => {
                    let conn = ConnId {
                        worker: self.worker,
                        handle,
                    };
                    self.held = Some(Event::Message {
                        conn,
                        channel,
                        data,
                    });
                }
            },
            ServerEvent::Connected {
                handle,
                addr,
                client_id,
                ..
            } => {
                if let Some(slot) = self.live.get_mut(handle.index()) {
                    *slot = Some(handle);
                }
                if let App::Embedded(_) = self.app {
                    self.held = Some(Event::Connected {
                        conn: ConnId {
                            worker: self.worker,
                            handle,
                        },
                        addr,
                        client_id,
                    });
                }
            }
            ServerEvent::Disconnected { handle, reason } => {
                self.leave_room(handle);
                if let Some(slot) = self.live.get_mut(handle.index()) {
                    *slot = None;
                }
                if let App::Embedded(_) = self.app {
                    let conn = ConnId {
                        worker: self.worker,
                        handle,
                    };
                    self.held = Some(Event::Disconnected { conn, reason });
                }
            }
        }
    }

    /// Pushes the held event to the application; `false` if its queue is still full.
    fn deliver_held(&mut self) -> bool {
        let Some(ev) = self.held.take() else {
            return true;
        };
        let App::Embedded(q) = &self.app else {
            return true;
        };
        match q.events.push(ev) {
            Ok(()) => true,
            Err(ev) => {
                self.held = Some(ev);
                false
            }
        }
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Send {
                handle,
                channel,
                data,
            } => self.send_owned(handle, channel, data),
            Command::Broadcast {
                handles,
                channel,
                data,
            } => {
                for &h in handles.iter() {
                    self.send_shared(h, channel, &data);
                }
            }
            Command::Disconnect { handle, code } => self.server.disconnect(handle, code),
        }
    }

    fn relay(&mut self, shared: &RelayShared, from: ConnHandle, channel: u8, data: Vec<u8>) {
        if let Some(room) = data
            .strip_prefix(RELAY_JOIN)
            .and_then(|r| <[u8; 4]>::try_from(r).ok())
        {
            self.join_room(shared, from, u32::from_be_bytes(room));
            self.server.recycle(data);
            return;
        }
        let Some(room) = self.room_of.get(from.index()).copied().flatten() else {
            self.server.recycle(data);
            return;
        };
        self.refresh_rooms(shared);
        let me = ConnId {
            worker: self.worker,
            handle: from,
        };
        let members = self.rooms.get(&room).map_or(0, Vec::len);
        let mut bytes: Option<Arc<[u8]>> = None;
        for i in 0..members {
            let Some(&to) = self.rooms.get(&room).and_then(|m| m.get(i)) else {
                break;
            };
            if to == me {
                continue;
            }
            self.counters.relayed += 1;
            let data = bytes.get_or_insert_with(|| Arc::from(data.as_slice()));
            let data = Arc::clone(data);
            if to.worker == self.worker {
                self.send_shared(to.handle, channel, &data);
            } else {
                self.forward(shared, to, channel, data);
            }
        }
        self.server.recycle(data);
    }

    fn forward(&mut self, shared: &RelayShared, to: ConnId, channel: u8, data: Arc<[u8]>) {
        let fwd = Forward {
            handle: to.handle,
            channel,
            data,
        };
        // Keep order behind earlier forwards to the same worker that are still waiting.
        if self.remote_pending.iter().any(|(w, _)| *w == to.worker) {
            self.remote_pending.push_back((to.worker, fwd));
            return;
        }
        match shared
            .inboxes
            .get(usize::from(to.worker))
            .map(|q| q.push(fwd))
        {
            Some(Ok(())) | None => {}
            Some(Err(fwd)) => {
                self.counters.sends_deferred += 1;
                self.remote_pending.push_back((to.worker, fwd));
            }
        }
    }

    /// Takes messages other workers forwarded to members here, and retries forwards
    /// that found another worker's inbox full.
    fn relay_inbox(&mut self, shared: &RelayShared) {
        if let Some(inbox) = shared.inboxes.get(usize::from(self.worker)) {
            let mut n = inbox.len();
            while n > 0 && self.pending.len() < PENDING_LIMIT {
                n -= 1;
                let Some(f) = inbox.pop() else { break };
                self.send_shared(f.handle, f.channel, &f.data);
            }
        }
        let mut tries = self.remote_pending.len();
        let mut blocked: u64 = 0; // bit per worker index (< 64) that stayed full
        while tries > 0 {
            tries -= 1;
            let Some((w, f)) = self.remote_pending.pop_front() else {
                break;
            };
            let bit = 1u64 << (w % 64);
            if blocked & bit != 0 {
                self.remote_pending.push_back((w, f));
                continue;
            }
            match shared.inboxes.get(usize::from(w)).map(|q| q.push(f)) {
                Some(Ok(())) | None => {}
                Some(Err(f)) => {
                    blocked |= bit;
                    self.remote_pending.push_back((w, f));
                }
            }
        }
    }

    fn refresh_rooms(&mut self, shared: &RelayShared) {
        let v = shared.version.load(std::sync::atomic::Ordering::Acquire);
        if v != self.rooms_version {
            let rooms = shared
                .rooms
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.rooms.clone_from(&rooms);
            self.rooms_version = v;
        }
    }

    fn join_room(&mut self, shared: &RelayShared, handle: ConnHandle, room: u32) {
        self.leave_room(handle);
        let me = ConnId {
            worker: self.worker,
            handle,
        };
        if let Some(slot) = self.room_of.get_mut(handle.index()) {
            *slot = Some(room);
            shared.update(|rooms| rooms.entry(room).or_default().push(me));
        }
    }

    fn leave_room(&mut self, handle: ConnHandle) {
        let Some(room) = self.room_of.get_mut(handle.index()).and_then(Option::take) else {
            return;
        };
        let App::Relay(shared) = &self.app else {
            return;
        };
        let me = ConnId {
            worker: self.worker,
            handle,
        };
        shared.update(|rooms| {
            if let Some(members) = rooms.get_mut(&room) {
                members.retain(|&h| h != me);
                if members.is_empty() {
                    rooms.remove(&room);
                }
            }
        });
    }

    /// Whether `handle` has deferred sends: new ones must queue behind them to keep order.
    fn is_deferred(&self, handle: ConnHandle) -> bool {
        !self.pending.is_empty() && self.pending.iter().any(|p| p.handle == handle)
    }

    fn send_owned(&mut self, handle: ConnHandle, channel: u8, data: Vec<u8>) {
        if self.is_deferred(handle) {
            self.pending.push_back(Pending {
                handle,
                channel,
                data: Payload::Owned(data),
            });
            return;
        }
        match self.server.send(handle, channel, &data) {
            Ok(()) => self.server.recycle(data),
            Err(SendError::QueueFull) => {
                self.counters.sends_deferred += 1;
                self.pending.push_back(Pending {
                    handle,
                    channel,
                    data: Payload::Owned(data),
                });
            }
            Err(e) => {
                self.count_refused(&e);
                self.server.recycle(data);
            }
        }
    }

    fn send_shared(&mut self, handle: ConnHandle, channel: u8, data: &Arc<[u8]>) {
        if self.is_deferred(handle) {
            self.pending.push_back(Pending {
                handle,
                channel,
                data: Payload::Shared(Arc::clone(data)),
            });
            return;
        }
        match self.server.send(handle, channel, data) {
            Ok(()) => {}
            Err(SendError::QueueFull) => {
                self.counters.sends_deferred += 1;
                self.pending.push_back(Pending {
                    handle,
                    channel,
                    data: Payload::Shared(Arc::clone(data)),
                });
            }
            Err(e) => self.count_refused(&e),
        }
    }

    /// Retries deferred sends in order; once one of a connection's sends fails again, its
    /// later ones wait too, so per-connection order holds.
    fn retry_pending(&mut self) {
        self.blocked.clear();
        let mut tries = self.pending.len();
        while tries > 0 {
            tries -= 1;
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if self.blocked.contains(&p.handle) {
                self.pending.push_back(p);
                continue;
            }
            match self.server.send(p.handle, p.channel, p.data.bytes()) {
                Ok(()) => {
                    if let Payload::Owned(v) = p.data {
                        self.server.recycle(v);
                    }
                }
                Err(SendError::QueueFull) => {
                    self.blocked.push(p.handle);
                    self.pending.push_back(p);
                }
                Err(e) => self.count_refused(&e),
            }
        }
    }

    /// Publishes this worker's protocol and application figures to `to` (skipped, never
    /// waited for, while a reader holds it).
    pub fn publish(&self, to: &crate::telemetry::Published) {
        to.publish(self.live.len(), |f, rtts, cwnds| {
            let st = self.server.stats();
            f.connections = self.server.connection_count() as u64;
            f.accepted = st.accepted;
            f.handshakes = st.handshakes;
            f.bad_cookies = st.bad_cookies;
            for r in xrudp_proto::RejectReason::ALL {
                let (name, n) = (crate::telemetry::reject_name(r), st.rejected_for(r));
                if let Some(v) = f.rejected.get_mut(name) {
                    *v = n;
                } else {
                    f.rejected.insert(name.to_owned(), n);
                }
            }
            f.version_mismatches = st.version_mismatches;
            f.timed_out = st.timed_out;
            f.violations = st.violations;
            f.packets_in = st.packets_in;
            f.packets_out = st.packets_out;
            f.retransmitted_packets = st.retransmitted_packets;
            f.lost_packets = st.lost_packets;
            f.messages_in = st.messages_in;
            f.messages_out = st.messages_out;
            f.crc_failures = st.crc_failures();
            f.decode_errors = st.decode_errors.iter().sum();
            f.unknown_connection = st.unknown_connection;
            f.backpressure_rounds = self.counters.backpressure_rounds;
            f.sends_deferred = self.counters.sends_deferred;
            f.relayed = self.counters.relayed;
            f.hellos_shed = self.counters.hellos_shed;
            f.relay_members = self.room_of.iter().flatten().count() as u64;
            f.memory = self.server.memory() as u64;
            for h in self.live.iter().flatten() {
                if let Some(cs) = self.server.connection_stats(*h) {
                    rtts.push(u64::try_from(cs.rtt.as_micros()).unwrap_or(u64::MAX));
                    cwnds.push(cs.cwnd);
                }
            }
        });
    }

    fn count_refused(&mut self, e: &SendError) {
        match e {
            SendError::NotConnected => self.counters.sends_to_closed += 1,
            _ => self.counters.sends_refused += 1,
        }
    }
}
