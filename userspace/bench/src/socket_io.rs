//! The socket load backend: one connected UDP socket per connection (the server admits
//! one connection per client address), all watched by one level-triggered epoll set.
//!
//! Batched where one socket has several datagrams: a readable socket is drained with
//! `recvmmsg` (up to [`mmsg::BATCH`] echoes per call), and a connection's output of a
//! round goes out in one `sendmmsg` on its socket, instead of one syscall per datagram.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use xrudp_proto::Client;
use xrudp_xdp::epoll::Epoll;
use xrudp_xdp::mmsg::{self, BATCH, Batch};

use super::conns::{IoCounters, Transport};

/// `recvmmsg` calls per readable socket per round at most; a socket with more waiting is
/// read again next round (epoll is level-triggered, so it is reported again).
const RECV_CALLS_PER_SOCKET: usize = 4;

/// Ready sockets taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// Kernel UDP sockets, one per connection.
#[derive(Debug)]
pub struct Sockets {
    epoll: Epoll,
    socks: Vec<Option<UdpSocket>>,
    ready: Vec<usize>,
    rx: Box<Batch>,
    tx: Box<Batch>,
    counters: IoCounters,
}

impl Sockets {
    /// An empty set.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epoll: Epoll::new(EVENTS)?,
            socks: Vec::new(),
            ready: Vec::with_capacity(EVENTS),
            rx: Box::new(Batch::new()),
            tx: Box::new(Batch::new()),
            counters: IoCounters::default(),
        })
    }

    /// Sends the datagrams queued in `tx` on `sock`; what the kernel refuses is counted
    /// and dropped (the protocol's loss recovery resends what matters).
    fn send_queued(sock: &UdpSocket, tx: &mut Batch, counters: &mut IoCounters) {
        while !tx.is_empty() {
            let queued = tx.len() as u64;
            counters.send_calls += 1;
            match mmsg::send_batch_connected(sock.as_fd(), tx) {
                Ok(0) => {
                    // WouldBlock: the socket buffer is full.
                    counters.send_dropped += queued;
                    tx.clear();
                }
                Ok(n) => counters.sent += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // ICMP errors reported on the socket (refused, unreachable) fail the
                    // call for the datagram at its head; drop that one and go on.
                    if !is_icmp_error(e.kind()) {
                        counters.errors += 1;
                    }
                    counters.send_dropped += queued;
                    tx.clear();
                }
            }
        }
    }
}

impl Transport for Sockets {
    fn open(&mut self, index: usize, local: IpAddr, server: SocketAddr) -> io::Result<()> {
        let local = SocketAddr::new(local, 0);
        let sock = UdpSocket::bind(local).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "binding a UDP socket on {local} for connection {}: {e}; each connection \
                     holds a socket (raise `ulimit -n`) and an ephemeral port (use more \
                     --local addresses past ~28k per address)",
                    index + 1
                ),
            )
        })?;
        sock.connect(server)?;
        sock.set_nonblocking(true)?;
        self.epoll.add(sock.as_fd(), index as u64)?;
        if self.socks.len() <= index {
            self.socks.resize_with(index + 1, || None);
        }
        self.socks[index] = Some(sock);
        Ok(())
    }

    fn close(&mut self, index: usize) {
        if let Some(s) = self.socks.get_mut(index).and_then(Option::take) {
            // Closing the socket removes it from the set anyway.
            let _ = self.epoll.remove(s.as_fd());
        }
    }

    fn wait(&mut self, wait: Duration) {
        // To the microsecond: a send is due every few of them at tick rates, and a wait
        // rounded up to epoll's millisecond would make it late by up to one.
        let ready = &mut self.ready;
        if self
            .epoll
            .wait_for(wait, |token| {
                ready.push(usize::try_from(token).unwrap_or(usize::MAX));
            })
            .is_err()
        {
            self.counters.errors += 1;
        }
    }

    fn receive(&mut self, deliver: &mut dyn FnMut(usize, SocketAddr, &[u8])) -> bool {
        let mut more = false;
        for &index in &self.ready {
            let Some(sock) = self.socks.get(index).and_then(Option::as_ref) else {
                continue;
            };
            for call in 0..RECV_CALLS_PER_SOCKET {
                self.counters.recv_calls += 1;
                match mmsg::recv_batch(sock.as_fd(), &mut self.rx) {
                    Ok(n) => {
                        for i in 0..n {
                            if let Some((data, from)) = self.rx.get(i) {
                                self.counters.received += 1;
                                deliver(index, from, data);
                            }
                        }
                        if n < BATCH {
                            break;
                        }
                        if call + 1 == RECV_CALLS_PER_SOCKET {
                            more = true;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // An ICMP error (port unreachable while the server restarts) is
                        // reported once per socket; anything else is counted too.
                        if !is_icmp_error(e.kind()) {
                            self.counters.errors += 1;
                        }
                        break;
                    }
                }
            }
        }
        self.ready.clear();
        more
    }

    fn flush(&mut self, index: usize, client: &mut Client, now: Instant) -> bool {
        let Some(sock) = self.socks.get(index).and_then(Option::as_ref) else {
            // A removed connection is never settled; nothing to send on.
            return true;
        };
        loop {
            if self.tx.is_full() {
                Self::send_queued(sock, &mut self.tx, &mut self.counters);
            }
            let Some(buf) = self.tx.next_buf() else {
                break;
            };
            let Some(t) = client.poll_transmit(now, buf) else {
                break;
            };
            self.tx.commit(t.len, t.dst);
        }
        Self::send_queued(sock, &mut self.tx, &mut self.counters);
        true
    }

    fn end_round(&mut self) {}

    fn counters(&self) -> IoCounters {
        self.counters
    }
}

/// Whether `kind` is an ICMP error the kernel reported on a connected socket (refused or
/// unreachable): expected while a server restarts, so not counted as an I/O error.
fn is_icmp_error(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}
