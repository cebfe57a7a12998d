//! An in-memory echo pair: a [`Server`] that echoes every message and a [`Client`] that
//! counts the echoes, every datagram either end produces handed straight to the other.
//!
//! Unlike [`crate::sim`] there is no network model: no delay queue, loss or reordering,
//! and no per-datagram buffer. It is what a benchmark of the protocol's own per-message
//! cost, or a test that counts its allocations, needs: moving a datagram costs one
//! `poll_transmit` into a buffer allocated once and one `handle_datagram` from it, and
//! the server and client recycle every message buffer, so a [`Pair`] allocates nothing
//! per message beyond what the protocol itself does.
//!
//! Time is simulated: [`Pair::exchange`] moves [`Pair::now`] by [`HOP`] after each round of
//! datagrams, so both ends see a 50 µs RTT (as on veth) and their RTT estimators, pacers,
//! delayed acks and timers behave as in a real run; the caller moves it further between
//! messages, or lets [`Pair::settle`] move it from deadline to deadline.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use xrudp_proto::echo::Pair;
//! use xrudp_proto::{ClientConfig, ServerConfig};
//!
//! let mut pair = Pair::connect(ServerConfig::default(), ClientConfig::default(), Instant::now())?;
//! pair.send(0, b"ping")?;
//! pair.send(2, b"unreliable ping")?;
//! pair.settle(2, Duration::from_secs(1))?;
//! assert_eq!(pair.echoed, 2);
//! # Ok::<(), xrudp_proto::echo::Error>(())
//! ```

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::{Client, ClientEvent};
use crate::config::{ClientConfig, ConfigError, ServerConfig};
use crate::conn::{DisconnectReason, SendError};
use crate::server::{Server, ServerEvent};
use crate::sim::{SERVER_ADDR, client_addr};

/// Simulated one-way delay: each round of datagrams moves the clock by this much, so the
/// ends measure a 50 µs RTT, as on veth, instead of 0.
pub const HOP: Duration = Duration::from_micros(25);

/// Handshake attempts in [`Pair::connect_endpoints`]: one [`Pair::exchange`] each, 1 ms apart.
const CONNECT_TRIES: usize = 100;

/// Why a [`Pair`] could not connect or exchange.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`Pair::connect`] was given a configuration the endpoint refuses.
    #[error("the echo pair's configuration was refused")]
    Config(#[from] ConfigError),
    /// The handshake did not complete within 100 simulated ms: check that the server
    /// admits the client (capacity, connect token).
    #[error("the in-memory handshake did not complete within 100 simulated ms")]
    Handshake,
    /// The client's connection ended.
    #[error("the in-memory connection closed: {reason:?}")]
    Closed {
        /// Why.
        reason: DisconnectReason,
    },
    /// The client could not queue a message.
    #[error("the client could not queue a message")]
    Send(#[source] SendError),
    /// The server could not queue an echo (its send buffer is full: exchange more often).
    #[error("the server could not queue an echo")]
    Echo(#[source] SendError),
    /// [`Pair::settle`] ran out of simulated time before the echoes came back.
    #[error("only {echoed} of {expected} echoes came back in the simulated time allowed")]
    Unanswered {
        /// Echoes taken so far.
        echoed: u64,
        /// Echoes waited for.
        expected: u64,
    },
}

/// A connected server and client exchanging datagrams through memory, the server echoing
/// every message on the channel it came on.
///
/// The server may hold other connections (their clients absent): datagrams it sends to
/// any address but this pair's client are dropped and counted in [`Pair::to_others`].
#[derive(Debug)]
pub struct Pair {
    /// The echoing server.
    pub server: Server,
    /// The client; send through [`Pair::send`] or directly.
    pub client: Client,
    /// Simulated time: [`Pair::exchange`] moves it by [`HOP`] per round of datagrams;
    /// move it between calls to let time pass.
    pub now: Instant,
    /// Echoes the client has taken (and recycled).
    pub echoed: u64,
    /// Datagrams the server addressed to another client, dropped.
    pub to_others: u64,
    /// The client's address, as the server sees it.
    addr: SocketAddr,
    /// The one datagram buffer, as large as any datagram.
    buf: Vec<u8>,
    connected: bool,
}

impl Pair {
    /// A server and a client made from these configurations (seeds 1 and 2), the server at
    /// [`SERVER_ADDR`] and the client at [`client_addr`]`(0)`, connected at `now`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if either configuration is refused; otherwise as
    /// [`Pair::connect_endpoints`].
    pub fn connect(
        server: ServerConfig,
        client: ClientConfig,
        now: Instant,
    ) -> Result<Self, Error> {
        let server = Server::new(server, 1, now)?;
        let client = Client::new(
            client,
            SERVER_ADDR,
            2,
            now,
            crate::session::Security::insecure_from_seed(2),
        )?;
        Self::connect_endpoints(server, client, client_addr(0), now)
    }

    /// Connects `client`, seen by `server` at `addr`, through the full handshake from
    /// `now`: for endpoints prepared first (a prefilled pool, a server that already holds
    /// other connections). Server datagrams to other addresses are counted in
    /// [`Pair::to_others`], the handshake's included.
    ///
    /// # Errors
    ///
    /// [`Error::Handshake`] if the client is not connected after 100 simulated ms;
    /// otherwise as [`Pair::exchange`].
    pub fn connect_endpoints(
        server: Server,
        client: Client,
        addr: SocketAddr,
        now: Instant,
    ) -> Result<Self, Error> {
        let mut pair = Self {
            server,
            client,
            now,
            echoed: 0,
            to_others: 0,
            addr,
            buf: vec![0; 2048],
            connected: false,
        };
        for _ in 0..CONNECT_TRIES {
            pair.exchange()?;
            if pair.connected {
                return Ok(pair);
            }
            pair.now += Duration::from_millis(1);
        }
        Err(Error::Handshake)
    }

    /// Queues `msg` on the client's `channel`; [`Pair::exchange`] carries it.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] as [`Client::send`] refuses it.
    pub fn send(&mut self, channel: u8, msg: &[u8]) -> Result<(), Error> {
        self.client.send(channel, msg).map_err(Error::Send)
    }

    /// Sends `msg` on `channel` and exchanges until neither end has more to send now. In
    /// the steady state the echo has come back when it returns; a message held by a
    /// timer (pacing, the congestion window) comes back once [`Pair::now`] passes it.
    ///
    /// # Errors
    ///
    /// As [`Pair::send`] and [`Pair::exchange`].
    pub fn round_trip(&mut self, channel: u8, msg: &[u8]) -> Result<(), Error> {
        self.send(channel, msg)?;
        self.exchange()
    }

    /// Moves every pending datagram both ways until neither end has more, firing the
    /// timers due at [`Pair::now`] first in each round; the server echoes every message
    /// and recycles it, the client counts every echo in [`Pair::echoed`] and recycles it.
    /// Time moves by [`HOP`] after each round that moved a datagram.
    ///
    /// # Errors
    ///
    /// [`Error::Echo`] if the server cannot queue an echo, [`Error::Closed`] if the
    /// client's connection ends.
    pub fn exchange(&mut self) -> Result<(), Error> {
        loop {
            let mut moved = false;
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.client.handle_timeout(self.now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
                self.server.handle_timeout(self.now);
            }
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf) {
                self.server
                    .handle_datagram(self.now, self.addr, &self.buf[..t.len]);
                moved = true;
            }
            while let Some(e) = self.server.poll_event() {
                if let ServerEvent::Message {
                    handle,
                    channel,
                    data,
                } = e
                {
                    let queued = self.server.send(handle, channel, &data);
                    self.server.recycle(data);
                    queued.map_err(Error::Echo)?;
                }
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
                if t.dst == self.addr {
                    self.client
                        .handle_datagram(self.now, self.client.server(), &self.buf[..t.len]);
                    moved = true;
                } else {
                    self.to_others += 1;
                }
            }
            while let Some(e) = self.client.poll_event() {
                match e {
                    ClientEvent::Message { data, .. } => {
                        self.echoed += 1;
                        // Opaque to the optimiser, so a benchmark keeps the delivery.
                        self.client.recycle(black_box(data));
                    }
                    ClientEvent::Connected => self.connected = true,
                    // The benchmark's server never drains.
                    ClientEvent::Draining { .. } => {}
                    ClientEvent::Disconnected { reason } => return Err(Error::Closed { reason }),
                }
            }
            if !moved {
                return Ok(());
            }
            self.now += HOP;
        }
    }

    /// Exchanges until [`Pair::echoed`] reaches `expected`, moving [`Pair::now`] between
    /// exchanges to the next deadline of either end (at least one [`HOP`] on).
    ///
    /// # Errors
    ///
    /// [`Error::Unanswered`] if `limit` of simulated time passes first; otherwise as
    /// [`Pair::exchange`].
    pub fn settle(&mut self, expected: u64, limit: Duration) -> Result<(), Error> {
        let give_up = self.now + limit;
        while self.echoed < expected {
            if self.now >= give_up {
                return Err(Error::Unanswered {
                    echoed: self.echoed,
                    expected,
                });
            }
            self.exchange()?;
            let next = self.poll_timeout().unwrap_or(self.now);
            self.now = next.max(self.now + HOP);
        }
        Ok(())
    }

    /// The earlier of the two ends' next timer deadlines.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.client.poll_timeout(), self.server.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_comes_back_on_both_channel_kinds() {
        let mut pair = Pair::connect(
            ServerConfig::default(),
            ClientConfig::default(),
            Instant::now(),
        )
        .expect("connects");
        for (i, channel) in [0u8, 2, 0, 2, 0].into_iter().enumerate() {
            pair.send(channel, &[0x5a; 300]).expect("queued");
            let expected = i as u64 + 1;
            pair.settle(expected, Duration::from_secs(1))
                .expect("echoed");
            assert_eq!(pair.echoed, expected, "echo {i} on channel {channel}");
        }
        assert_eq!(pair.to_others, 0, "one client only");
    }

    #[test]
    fn the_first_reliable_message_leaves_at_once() {
        // It used to wait 8 simulated ms: the pacer charged the handshake's confirming
        // ping to an empty bucket (pacing.rs).
        let mut pair = Pair::connect(
            ServerConfig::default(),
            ClientConfig::default(),
            Instant::now(),
        )
        .expect("connects");
        let start = pair.now;
        pair.round_trip(0, b"first input").expect("sent");
        assert_eq!(pair.echoed, 1, "echoed within one exchange");
        assert!(pair.now - start <= 4 * HOP, "{:?}", pair.now - start);
    }

    #[test]
    fn settle_reports_echoes_that_never_come() {
        let mut pair = Pair::connect(
            ServerConfig::default(),
            ClientConfig::default(),
            Instant::now(),
        )
        .expect("connects");
        pair.send(0, b"one").expect("queued");
        assert_eq!(
            pair.settle(2, Duration::from_millis(100)),
            Err(Error::Unanswered {
                echoed: 1,
                expected: 2
            })
        );
    }

    #[test]
    fn datagrams_to_another_client_are_counted_not_delivered() {
        let start = Instant::now();
        let first = Pair::connect(ServerConfig::default(), ClientConfig::default(), start)
            .expect("first connects");
        let (server, now) = (first.server, first.now);
        let client = Client::new(
            ClientConfig::default(),
            SERVER_ADDR,
            3,
            now,
            crate::session::Security::insecure_from_seed(3),
        )
        .expect("config");
        let mut pair =
            Pair::connect_endpoints(server, client, client_addr(1), now).expect("second connects");
        assert_eq!(pair.server.connection_count(), 2, "both admitted");
        // Past the first client's keepalive: the server pings it, and nobody answers.
        let keepalive = ServerConfig::default().keepalive;
        pair.now += keepalive * 2;
        pair.exchange().expect("exchanged");
        assert!(
            pair.to_others > 0,
            "the first client's keepalive was counted"
        );
        pair.send(0, b"still echoed").expect("queued");
        pair.settle(1, Duration::from_secs(1)).expect("echoed");
        assert_eq!(pair.echoed, 1, "only this client's echo");
    }

    #[test]
    fn a_full_server_refuses_the_handshake() {
        let now = Instant::now();
        let config = ServerConfig {
            max_connections: 1,
            ..ServerConfig::default()
        };
        let first = Pair::connect(config, ClientConfig::default(), now).expect("first connects");
        let client = Client::new(
            ClientConfig::default(),
            SERVER_ADDR,
            3,
            first.now,
            crate::session::Security::insecure_from_seed(3),
        )
        .expect("config");
        let refused = Pair::connect_endpoints(first.server, client, client_addr(1), first.now)
            .expect_err("no room for a second client");
        assert!(
            matches!(refused, Error::Closed { .. } | Error::Handshake),
            "{refused:?}"
        );
    }
}
