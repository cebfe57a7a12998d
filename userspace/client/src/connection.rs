//! One connection over one connected `std::net::UdpSocket`.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::protection::Protection;
use xrudp_proto::{
    ChannelKind, Client, ClientConfig, ClientEvent, ClientState, ConnStats, Counters,
    DisconnectReason, SendError,
};

use crate::error::ConnectError;
use crate::sock::{self, IoStats, RECV_BUFFER_LEN, Recv, SEND_BUFFER_LEN};

/// Datagrams read per [`Connection::poll`] at most, so a flood cannot hold the caller; the
/// rest wait in the socket for the next call.
pub const MAX_RECV_PER_POLL: usize = 4096;

/// Free message buffers a [`Connection`] preallocates in each pool class up to 2 KiB
/// (`Client::prefill_pool`), so a game client's first messages allocate none: about 106 KiB.
pub const POOL_PREFILL: usize = 32;

/// One client connection over its own UDP socket.
///
/// Use it non-blocking (call [`Connection::poll`] from your loop, at least by
/// [`Connection::poll_timeout`]) or blocking ([`Connection::wait`]). Then take events with
/// [`Connection::next_event`].
#[derive(Debug)]
pub struct Connection {
    socket: UdpSocket,
    client: Client,
    server: SocketAddr,
    /// Path MTU discovery probes past 1,200: the socket sends unfragmented datagrams.
    probe_mtu: bool,
    peeked: Option<ClientEvent>,
    rx: Box<[u8]>,
    tx: Box<[u8]>,
    io: IoStats,
}

impl Connection {
    /// Starts connecting to `server` from an ephemeral port of the same address family, and
    /// sends the first handshake packet. Does not wait: poll, then watch for
    /// [`ClientEvent::Connected`].
    pub fn connect(
        server: SocketAddr,
        config: ClientConfig,
        protection: &Protection,
    ) -> io::Result<Self> {
        Self::connect_from(sock::any_local(server), server, config, protection)
    }

    /// Like [`Connection::connect`], from a chosen local address (load generators spread
    /// connections over several local addresses when one runs out of ephemeral ports).
    pub fn connect_from(
        local: SocketAddr,
        server: SocketAddr,
        config: ClientConfig,
        protection: &Protection,
    ) -> io::Result<Self> {
        let seed = sock::os_seed()?;
        let now = Instant::now();
        let config = sock::for_this_platform(config);
        let probe_mtu = sock::probes_path_mtu(&config);
        let mut client = Client::new(config, server, seed, now, protection.security()?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        client.prefill_pool(POOL_PREFILL);
        let socket = UdpSocket::bind(local)?;
        sock::prepare(&socket, server, probe_mtu)?;
        socket.connect(server)?;
        socket.set_nonblocking(true)?;
        let mut conn = Self {
            socket,
            client,
            server,
            probe_mtu,
            peeked: None,
            rx: vec![0; RECV_BUFFER_LEN].into_boxed_slice(),
            tx: vec![0; SEND_BUFFER_LEN].into_boxed_slice(),
            io: IoStats::default(),
        };
        conn.flush(now)?;
        Ok(conn)
    }

    /// Connects and waits until the server admits the client, refuses it, or `timeout`
    /// (or the configured `handshake_timeout`, whichever is first) passes.
    pub fn connect_blocking(
        server: SocketAddr,
        config: ClientConfig,
        protection: &Protection,
        timeout: Duration,
    ) -> Result<Self, ConnectError> {
        let io_err = |source| ConnectError::Io { server, source };
        let start = Instant::now();
        let deadline = start + timeout;
        let mut conn = Self::connect(server, config, protection).map_err(io_err)?;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(ConnectError::TimedOut {
                    server,
                    waited: now - start,
                    refused: conn.io.refused,
                });
            }
            conn.wait(deadline - now).map_err(io_err)?;
            // Take handshake events only; messages that came with the welcome stay queued.
            let event = conn.peeked.take().or_else(|| conn.client.poll_event());
            match event {
                None => {}
                Some(ClientEvent::Connected) => return Ok(conn),
                Some(ClientEvent::Disconnected { reason }) => {
                    return Err(match reason {
                        DisconnectReason::Rejected(reason) => {
                            ConnectError::Rejected { server, reason }
                        }
                        DisconnectReason::VersionMismatch => {
                            ConnectError::VersionMismatch { server }
                        }
                        DisconnectReason::HandshakeTimedOut => ConnectError::TimedOut {
                            server,
                            waited: start.elapsed(),
                            refused: conn.io.refused,
                        },
                        reason => ConnectError::Closed { server, reason },
                    });
                }
                Some(e @ (ClientEvent::Message { .. } | ClientEvent::Draining { .. })) => {
                    // Not possible before `Connected`; keep it rather than lose it.
                    conn.peeked = Some(e);
                    return Ok(conn);
                }
            }
        }
    }

    /// Queues a message on `channel`. [`SendError::QueueFull`] is backpressure: poll (so
    /// acknowledgements arrive) and retry, or drop the message if it is stale. The message
    /// goes out at the next [`Connection::poll`] (or [`Connection::wait`]).
    pub fn send(&mut self, channel: u8, data: &[u8]) -> Result<(), SendError> {
        self.client.send(channel, data)
    }

    /// Does all pending work without blocking: reads the socket (up to
    /// [`MAX_RECV_PER_POLL`] datagrams), fires due timers and sends what is ready.
    pub fn poll(&mut self) -> io::Result<()> {
        let now = Instant::now();
        for _ in 0..MAX_RECV_PER_POLL {
            match sock::recv(&self.socket, &mut self.rx, &mut self.io)? {
                Recv::Datagram(n) => self.client.handle_datagram(now, self.server, &self.rx[..n]),
                Recv::Skipped => {}
                Recv::Empty => break,
            }
        }
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        self.flush(now)
    }

    /// Sends what is queued, blocks until a datagram arrives, the next protocol timer is
    /// due or `timeout` passes, then [`Connection::poll`]s. Returns at once if an event is
    /// already waiting.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if self.peeked.is_none() {
            self.peeked = self.client.poll_event();
        }
        if self.peeked.is_some() {
            return self.poll();
        }
        let now = Instant::now();
        // Messages queued since the last poll leave now, not after the wait: a game that
        // sends and then waits for the answer must not hold its own message back.
        self.flush(now)?;
        let mut deadline = now + timeout;
        if let Some(t) = self.client.poll_timeout() {
            deadline = deadline.min(t);
        }
        let wait = deadline.saturating_duration_since(now);
        if !wait.is_zero() {
            self.socket.set_nonblocking(false)?;
            let got = self
                .socket
                .set_read_timeout(Some(wait))
                .and_then(|()| sock::recv(&self.socket, &mut self.rx, &mut self.io));
            self.socket.set_nonblocking(true)?;
            if let Recv::Datagram(n) = got? {
                self.client
                    .handle_datagram(Instant::now(), self.server, &self.rx[..n]);
            }
        }
        self.poll()
    }

    /// The next event, if any.
    pub fn next_event(&mut self) -> Option<ClientEvent> {
        self.peeked.take().or_else(|| self.client.poll_event())
    }

    /// Hands a delivered message's buffer back for reuse (saves an allocation per message).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.client.recycle(buf);
    }

    /// Closes gracefully with an application `code`: the `Disconnect` copies are sent now,
    /// and a [`ClientEvent::Disconnected`] with [`DisconnectReason::Local`] follows. While
    /// still connecting, gives up at once.
    pub fn disconnect(&mut self, code: u16) -> io::Result<()> {
        self.client.disconnect(code);
        self.flush(Instant::now())
    }

    /// Moves the connection to a new socket on an ephemeral port of the same local
    /// address, as a NAT rebinding or a network change would, and returns the new local
    /// address. See [`Connection::rebind_to`].
    pub fn rebind(&mut self) -> io::Result<SocketAddr> {
        let mut local = self.socket.local_addr()?;
        local.set_port(0);
        self.rebind_to(local)
    }

    /// Moves the connection to a new socket bound to `local` (say, after the device
    /// joined another network) and keeps the session: the next packet leaves at once from
    /// the new address, the server validates it and moves the session there
    /// (docs/PROTOCOL.md §5.4). Datagrams on their way to the old socket are lost and
    /// recovered like any loss. Only protected sessions migrate: with encryption off the
    /// server drops packets from the new address and the session times out. Returns the
    /// new local address.
    pub fn rebind_to(&mut self, local: SocketAddr) -> io::Result<SocketAddr> {
        let socket = UdpSocket::bind(local)?;
        sock::prepare(&socket, self.server, self.probe_mtu)?;
        socket.connect(self.server)?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        self.socket = socket;
        self.client.path_changed();
        self.flush(Instant::now())?;
        Ok(addr)
    }

    /// Where the connection is in its life.
    #[must_use]
    pub fn state(&self) -> ClientState {
        self.client.state()
    }

    /// The protocol's counters.
    #[must_use]
    pub fn stats(&self) -> &Counters {
        self.client.stats()
    }

    /// The socket's datagram counters.
    #[must_use]
    pub fn io_stats(&self) -> IoStats {
        self.io
    }

    /// RTT, congestion window and buffer figures, once connected.
    #[must_use]
    pub fn connection_stats(&self) -> Option<ConnStats> {
        self.client.connection_stats()
    }

    /// Smoothed round-trip time, once connected.
    #[must_use]
    pub fn rtt(&self) -> Option<Duration> {
        self.client.connection_stats().map(|s| s.rtt)
    }

    /// The channels the server announced (empty before connected).
    #[must_use]
    pub fn channels(&self) -> &[ChannelKind] {
        self.client.channels()
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The server's address.
    #[must_use]
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// The next time the protocol needs [`Connection::poll`] even if nothing arrives.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.client.poll_timeout()
    }

    /// Whether everything sent was acknowledged and nothing is queued (or the connection
    /// is over): the moment to disconnect without losing reliable messages.
    #[must_use]
    pub fn is_quiet(&self) -> bool {
        self.client.is_quiet()
    }

    /// The protocol endpoint underneath.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn flush(&mut self, now: Instant) -> io::Result<()> {
        sock::flush(
            &mut self.client,
            &self.socket,
            &mut self.tx,
            now,
            &mut self.io,
        )
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn mode(config: ClientConfig, server: SocketAddr) -> libc::c_int {
        let conn = Connection::connect(server, config, &Protection::default()).expect("socket");
        crate::sys::mtu_discover_mode(&conn.socket, server.is_ipv6()).expect("getsockopt")
    }

    /// With a ceiling above 1,200 and discovery on, datagrams go unfragmented (the probes
    /// must be able to fail); otherwise the kernel's default mode is left alone.
    #[test]
    fn sockets_send_unfragmented_only_when_probing_past_1200() {
        let v4: SocketAddr = "127.0.0.1:9".parse().expect("address");
        let v6: SocketAddr = "[::1]:9".parse().expect("address");
        let mut probing = ClientConfig::default();
        probing.transport.mtu = 1472;
        assert_eq!(mode(probing.clone(), v4), libc::IP_PMTUDISC_PROBE);
        let default = mode(ClientConfig::default(), v4);
        assert_ne!(
            default,
            libc::IP_PMTUDISC_PROBE,
            "mtu 1200: nothing to probe"
        );
        let mut off = probing.clone();
        off.transport.pmtud = false;
        assert_eq!(mode(off, v4), default, "discovery off");
        assert_eq!(mode(probing, v6), libc::IPV6_PMTUDISC_PROBE);
    }
}
