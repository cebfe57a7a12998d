//! A deterministic simulator: real [`Client`]s and a real [`Server`] exchanging datagrams
//! through a [`network::Network`] model, with simulated time that jumps to the next arrival
//! or timer (STYLE.md §5). Same seed, same run, bit for bit.

pub mod network;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::{Client, ClientEvent, ClientState};
use crate::config::{ClientConfig, ServerConfig};
use crate::server::{ConnHandle, Server, ServerEvent};
use crate::session::{Encryption, Security};
use network::{Model, Network};

/// The server's simulated address.
pub const SERVER_ADDR: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 254)),
    7777,
);

/// The simulated address of client `i` (distinct for up to 2^24 clients).
#[must_use]
pub fn client_addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8], 5000))
}

/// The client index of a simulated client address.
#[must_use]
pub fn client_index(addr: SocketAddr) -> Option<usize> {
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        return None;
    };
    let [a, b, c, d] = ip.octets();
    if a != 10 || b == 0 || addr.port() != 5000 {
        return None;
    }
    Some((usize::from(b - 1) << 16) | (usize::from(c) << 8) | usize::from(d))
}

/// One server and any number of clients on a simulated network.
#[derive(Debug)]
pub struct Cluster {
    /// The clients; client `i` sits at [`client_addr`]`(i)`.
    pub clients: Vec<Client>,
    /// The server, at [`SERVER_ADDR`].
    pub server: Server,
    /// Simulated time.
    pub now: Instant,
    /// The network between them.
    pub network: Network,
    /// Events the server produced, in order (the harness drains `poll_event`).
    pub server_events: Vec<ServerEvent>,
    /// Events each client produced.
    pub client_events: Vec<Vec<ClientEvent>>,
    /// Whether to keep message events (large runs switch it off and count instead).
    pub keep_messages: bool,
    /// Messages delivered to the server, counted even when not kept.
    pub server_messages: u64,
    /// Messages delivered to each client, counted even when not kept.
    pub client_messages: Vec<u64>,
    /// Clients moved to another address by [`Cluster::rebind`]: index to address, and back.
    moved: HashMap<usize, SocketAddr>,
    moved_to: HashMap<SocketAddr, usize>,
    buf: Vec<u8>,
}

impl Cluster {
    /// A server and `n` clients (each with the same config and a seed derived from `seed`),
    /// connecting at once, all through `model`.
    #[must_use]
    pub fn new(
        server: ServerConfig,
        client: &ClientConfig,
        n: usize,
        model: Model,
        seed: u64,
    ) -> Self {
        let securities = (0..n)
            .map(|i| default_security(&server, seed.wrapping_add(i as u64)))
            .collect();
        Self::with_securities(server, client, securities, model, seed)
    }

    /// As [`Cluster::new`], with one optional connect token per client.
    ///
    /// # Panics
    /// If a configuration does not validate (a bug in the test that builds it).
    #[must_use]
    pub fn with_securities(
        server: ServerConfig,
        client: &ClientConfig,
        securities: Vec<Security>,
        model: Model,
        seed: u64,
    ) -> Self {
        let now = Instant::now();
        // INVARIANT: callers pass configurations that validate; a test wants the panic.
        let server = Server::new(server, seed ^ 0x5e4e_4e4e, now).expect("valid server config");
        let clients: Vec<Client> = securities
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                Client::new(
                    client.clone(),
                    SERVER_ADDR,
                    seed.wrapping_mul(31).wrapping_add(i as u64 + 1),
                    now,
                    t,
                )
                .expect("valid client config")
            })
            .collect();
        let n = clients.len();
        Self {
            clients,
            server,
            now,
            network: Network::new(model, now),
            server_events: Vec::new(),
            client_events: vec![Vec::new(); n],
            keep_messages: true,
            server_messages: 0,
            client_messages: vec![0; n],
            moved: HashMap::new(),
            moved_to: HashMap::new(),
            buf: vec![0; 2048],
        }
    }

    /// Sends everything every endpoint has to send into the network, then drains events.
    pub fn flush(&mut self) {
        let now = self.now;
        while let Some(t) = self.server.poll_transmit(now, &mut self.buf) {
            self.network
                .send(now, SERVER_ADDR, t.dst, &self.buf[..t.len]);
        }
        for (i, c) in self.clients.iter_mut().enumerate() {
            let from = address_of(&self.moved, i);
            while let Some(t) = c.poll_transmit(now, &mut self.buf) {
                self.network.send(now, from, t.dst, &self.buf[..t.len]);
            }
        }
        while let Some(e) = self.server.poll_event() {
            match e {
                ServerEvent::Message { data, .. } if !self.keep_messages => {
                    self.server_messages += 1;
                    self.server.recycle(data);
                }
                e => {
                    if matches!(e, ServerEvent::Message { .. }) {
                        self.server_messages += 1;
                    }
                    self.server_events.push(e);
                }
            }
        }
        for (i, c) in self.clients.iter_mut().enumerate() {
            while let Some(e) = c.poll_event() {
                match e {
                    ClientEvent::Message { data, .. } if !self.keep_messages => {
                        self.client_messages[i] += 1;
                        c.recycle(data);
                    }
                    e => {
                        if matches!(e, ClientEvent::Message { .. }) {
                            self.client_messages[i] += 1;
                        }
                        self.client_events[i].push(e);
                    }
                }
            }
        }
    }

    /// The next instant at which anything happens.
    #[must_use]
    pub fn next_time(&self) -> Option<Instant> {
        let mut t = self.network.next_arrival();
        for x in self
            .clients
            .iter()
            .map(Client::poll_timeout)
            .chain([self.server.poll_timeout()])
            .flatten()
        {
            t = Some(t.map_or(x, |t| t.min(x)));
        }
        t
    }

    /// Advances to the next arrival or timer and handles it; false if nothing is left.
    pub fn step(&mut self) -> bool {
        self.flush();
        let Some(t) = self.next_time() else {
            return false;
        };
        if t > self.now {
            self.now = t;
        }
        let now = self.now;
        while let Some((from, to, data)) = self.network.deliver(now) {
            if to == SERVER_ADDR {
                self.server.handle_datagram(now, from, &data);
            } else if let Some(c) = self.index_of(to).and_then(|i| self.clients.get_mut(i)) {
                c.handle_datagram(now, from, &data);
            }
            self.network.recycle(data);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        for c in &mut self.clients {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        self.flush();
        true
    }

    /// Steps at most `n` times; returns how many steps ran.
    pub fn drive_bounded(&mut self, n: usize) -> usize {
        for i in 0..n {
            if !self.step() {
                return i;
            }
        }
        n
    }

    /// Steps until simulated time reaches `deadline` (or nothing is left to do).
    pub fn run_until(&mut self, deadline: Instant) {
        self.flush();
        while self.next_time().is_some_and(|t| t <= deadline) {
            self.step();
        }
        self.now = self.now.max(deadline);
        self.flush();
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let deadline = self.now + d;
        self.run_until(deadline);
    }

    /// Steps until `done` holds or `limit` of simulated time passes; returns whether it held.
    pub fn run_while(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = self.now + limit;
        self.flush();
        while !done(self) {
            match self.next_time() {
                Some(t) if t <= deadline => {
                    self.step();
                }
                _ => return done(self),
            }
        }
        true
    }

    /// Moves client `i` to `addr`, as a NAT rebinding does: from now on its datagrams
    /// leave from `addr`, and datagrams to its old address are lost. The client itself is
    /// not told (call its `path_changed` to model a client that knows).
    pub fn rebind(&mut self, i: usize, addr: SocketAddr) {
        if let Some(old) = self.moved.insert(i, addr) {
            self.moved_to.remove(&old);
        }
        self.moved_to.insert(addr, i);
    }

    /// The address client `i` sends from now.
    #[must_use]
    pub fn address(&self, i: usize) -> SocketAddr {
        address_of(&self.moved, i)
    }

    /// The client a datagram to `to` reaches, if any.
    fn index_of(&self, to: SocketAddr) -> Option<usize> {
        if let Some(&i) = self.moved_to.get(&to) {
            return Some(i);
        }
        client_index(to).filter(|i| !self.moved.contains_key(i))
    }

    /// Whether every client is connected.
    #[must_use]
    pub fn all_connected(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.state() == ClientState::Connected)
    }
}

/// One client and one server on a simulated network: a one-client [`Cluster`] (it derefs
/// to it, so `pair.server`, `pair.now`, `pair.network` and the run methods are there).
#[derive(Debug)]
pub struct Pair {
    inner: Cluster,
}

impl core::ops::Deref for Pair {
    type Target = Cluster;
    fn deref(&self) -> &Cluster {
        &self.inner
    }
}

impl core::ops::DerefMut for Pair {
    fn deref_mut(&mut self) -> &mut Cluster {
        &mut self.inner
    }
}

impl Pair {
    /// A connecting pair.
    #[must_use]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "tests read better passing configs by value"
    )]
    pub fn new(server: ServerConfig, client: ClientConfig, model: Model, seed: u64) -> Self {
        Self {
            inner: Cluster::new(server, &client, 1, model, seed),
        }
    }

    /// A connecting pair whose client holds `token`.
    #[must_use]
    #[expect(
        clippy::needless_pass_by_value,
        reason = "tests read better passing configs by value"
    )]
    pub fn with_security(
        server: ServerConfig,
        client: ClientConfig,
        model: Model,
        seed: u64,
        security: Security,
    ) -> Self {
        Self {
            inner: Cluster::with_securities(server, &client, vec![security], model, seed),
        }
    }

    /// The client.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.inner.clients[0]
    }

    /// The client, mutably.
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.inner.clients[0]
    }

    /// Client events so far.
    #[must_use]
    pub fn client_events(&self) -> &[ClientEvent] {
        &self.inner.client_events[0]
    }

    /// Runs until the handshake completes (at most 10 simulated seconds) and returns the
    /// server's handle of the client's connection, the first `Connected` event's.
    ///
    /// # Panics
    /// If the handshake does not complete in time: the test's network or configuration
    /// does not let it.
    pub fn connect(&mut self) -> ConnHandle {
        assert!(
            self.inner
                .run_while(Duration::from_secs(10), Cluster::all_connected),
            "handshake did not complete in 10 simulated seconds"
        );
        self.inner
            .server_events
            .iter()
            .find_map(|e| match e {
                ServerEvent::Connected { handle, .. } => Some(*handle),
                _ => None,
            })
            .expect("a connected client has a Connected event at the server")
    }

    /// Steps until nothing is in flight on the network and neither end has anything queued,
    /// in flight or unacknowledged — or 1,000,000 steps.
    pub fn drive(&mut self) {
        for _ in 0..1_000_000 {
            self.inner.flush();
            if self.inner.network.in_flight() == 0
                && !self.inner.server.has_pending()
                && self.inner.clients[0].is_quiet()
            {
                return;
            }
            if !self.inner.step() {
                return;
            }
        }
    }
}

/// Client `i`'s address, after any [`Cluster::rebind`].
fn address_of(moved: &HashMap<usize, SocketAddr>, i: usize) -> SocketAddr {
    if moved.is_empty() {
        return client_addr(i);
    }
    moved.get(&i).copied().unwrap_or_else(|| client_addr(i))
}

/// What a test client uses against `server` unless told otherwise: no protection if the
/// server has encryption off, else an anonymous exchange with a key derived from `seed`.
#[must_use]
pub fn default_security(server: &ServerConfig, seed: u64) -> Security {
    match server.encryption {
        Encryption::Off => Security::Off,
        _ => Security::insecure_from_seed(seed),
    }
}
