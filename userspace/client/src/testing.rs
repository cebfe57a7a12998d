//! A small echo server for tests: a [`xrudp_proto::Server`] on a loopback UDP socket in its
//! own thread, sending every message back on the channel it came on. The engine's and the
//! load generator's tests use it as the reference peer.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use xrudp_proto::{Counters, DisconnectReason, Server, ServerConfig, ServerEvent};

use crate::sock::{RECV_BUFFER_LEN, SEND_BUFFER_LEN};

/// Longest the server thread sleeps between looks at its stop flag.
const MAX_SLEEP: Duration = Duration::from_millis(5);

/// What the echo server saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EchoStats {
    /// `Connected` events.
    pub connected: u64,
    /// Messages received (each was echoed unless counted in `echo_failures`).
    pub messages: u64,
    /// Messages that could not be queued back (`SendError`).
    pub echo_failures: u64,
    /// `Disconnected` events' reasons, in order.
    pub disconnects: Vec<DisconnectReason>,
    /// Datagrams `send_to` refused.
    pub send_errors: u64,
    /// The server's protocol counters.
    pub server: Counters,
}

/// An echo server on 127.0.0.1 running in its own thread until stopped or dropped.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<EchoStats>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl EchoServer {
    /// Binds 127.0.0.1 on an ephemeral port and starts serving with `config` (the server's
    /// Unix time is set, so connect tokens verify).
    pub fn start(config: ServerConfig) -> io::Result<Self> {
        Self::bind((std::net::Ipv4Addr::LOCALHOST, 0).into(), config)
    }

    /// Like [`EchoServer::start`], on `addr`.
    /// In token mode without a `public_addr`, the bound address is used.
    pub fn bind(addr: SocketAddr, mut config: ServerConfig) -> io::Result<Self> {
        let now = Instant::now();
        let socket = UdpSocket::bind(addr)?;
        let addr = socket.local_addr()?;
        if config.public_addr.is_none() {
            config.public_addr = Some(addr);
        }
        let server = Server::with_entropy(config, crate::sock::os_key()?, now)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(EchoStats::default()));
        let thread = std::thread::Builder::new()
            .name("echo-server".into())
            .spawn({
                let stop = Arc::clone(&stop);
                let shared = Arc::clone(&shared);
                move || serve(&socket, server, &stop, &shared)
            })?;
        Ok(Self {
            addr,
            stop,
            shared,
            thread: Some(thread),
        })
    }

    /// The server's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the server saw so far.
    #[must_use]
    pub fn stats(&self) -> EchoStats {
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether the server thread still runs (it stops on an I/O error; [`EchoServer::stop`]
    /// returns that error).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the thread; returns what the server saw, or the error that stopped it.
    pub fn stop(mut self) -> io::Result<EchoStats> {
        self.join()?;
        Ok(self.stats())
    }

    fn join(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(io::Error::other("the echo server thread panicked")),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

fn serve(
    socket: &UdpSocket,
    mut server: Server,
    stop: &AtomicBool,
    shared: &Mutex<EchoStats>,
) -> io::Result<()> {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    server.set_unix_time(Instant::now(), unix);
    let mut rx = vec![0; RECV_BUFFER_LEN];
    let mut tx = vec![0; SEND_BUFFER_LEN];
    let mut seen = EchoStats::default();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let wait = server
            .poll_timeout()
            .map_or(MAX_SLEEP, |t| t.saturating_duration_since(now))
            .clamp(Duration::from_micros(100), MAX_SLEEP);
        socket.set_read_timeout(Some(wait))?;
        let mut blocking = true;
        loop {
            match socket.recv_from(&mut rx) {
                Ok((n, from)) => server.handle_datagram(Instant::now(), from, &rx[..n]),
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => break,
                    io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset => {}
                    _ => return Err(e),
                },
            }
            if blocking {
                // Drain what else is queued without sleeping.
                socket.set_nonblocking(true)?;
                blocking = false;
            }
        }
        if !blocking {
            socket.set_nonblocking(false)?;
        }
        let now = Instant::now();
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        while let Some(event) = server.poll_event() {
            match event {
                ServerEvent::Connected { .. } => seen.connected += 1,
                ServerEvent::Message {
                    handle,
                    channel,
                    data,
                } => {
                    seen.messages += 1;
                    if server.send(handle, channel, &data).is_err() {
                        seen.echo_failures += 1;
                    }
                    server.recycle(data);
                }
                ServerEvent::Disconnected { reason, .. } => seen.disconnects.push(reason),
            }
        }
        while let Some(t) = server.poll_transmit(now, &mut tx) {
            if socket.send_to(&tx[..t.len], t.dst).is_err() {
                seen.send_errors += 1;
            }
        }
        let mut out = shared.lock().unwrap_or_else(PoisonError::into_inner);
        if out.messages != seen.messages
            || out.connected != seen.connected
            || out.disconnects.len() != seen.disconnects.len()
            || out.server != *server.stats()
        {
            seen.server.clone_from(server.stats());
            out.clone_from(&seen);
        }
    }
    Ok(())
}
