//! The kernel-socket port: the same protocol and applications over an ordinary UDP
//! socket, for hosts where AF_XDP is unavailable, and the baseline every benchmark
//! compares against.
//!
//! One dual-stack `SO_REUSEPORT` socket per worker (the kernel spreads flows over them
//! by hash, so a client stays on one worker), batched with `recvmmsg`/`sendmmsg`. An
//! echo is copied from the receive batch into the send batch: `sendmmsg` copies every
//! datagram into the kernel anyway, so sending from the receive buffers would save one
//! 64-byte-class copy and complicate both batches.

use std::{
    io,
    net::{Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::{AsFd as _, AsRawFd as _},
    time::Instant,
};

use socket2::{Domain, Protocol, Socket, Type};

use super::{Handler, Port, Verdict, Wait};
use crate::{
    sys::{
        self,
        mmsg::{self, Batch},
    },
    telemetry::Tally,
};

/// The UDP port of one socket-backend worker.
#[derive(Debug)]
pub(crate) struct UdpPort {
    sock: UdpSocket,
    rx: Batch,
    tx: Batch,
    received: usize,
}

impl UdpPort {
    /// Opens one worker's socket: `[::]:port`, dual-stack, `SO_REUSEPORT`, non-blocking,
    /// with large kernel buffers so bursts queue instead of dropping.
    pub(crate) fn open(port: u16) -> io::Result<UdpSocket> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(false)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = s.set_recv_buffer_size(4 << 20);
        let _ = s.set_send_buffer_size(4 << 20);
        s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)).into())?;
        Ok(s.into())
    }

    /// The port over `sock` (made on the worker's thread: the batches' buffers are
    /// first touched there).
    pub(crate) fn new(sock: UdpSocket) -> Self {
        Self {
            sock,
            rx: Batch::new(),
            tx: Batch::new(),
            received: 0,
        }
    }

    /// Bytes of the datagrams queued in `tx`.
    fn queued_bytes(&self) -> u64 {
        (0..self.tx.len())
            .filter_map(|i| self.tx.get(i))
            .map(|(d, _)| d.len() as u64)
            .sum()
    }

    /// Sends what is queued; `false` when the socket buffer is full.
    fn send(&mut self, t: &mut Tally) -> bool {
        let before = self.queued_bytes();
        match mmsg::send_batch(self.sock.as_fd(), &mut self.tx) {
            // The socket buffer is full: keep the batch for the next round.
            Ok(0) => false,
            Ok(sent) => {
                t.tx_packets += sent as u64;
                t.tx_bytes += before - self.queued_bytes();
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "sendmmsg failed; dropping the batch");
                self.tx.clear();
                true
            }
        }
    }
}

impl Port for UdpPort {
    fn receive(&mut self, _t: &mut Tally) -> usize {
        self.received = match mmsg::recv_batch(self.sock.as_fd(), &mut self.rx) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "recvmmsg failed");
                0
            }
        };
        self.received
    }

    fn deliver<H: Handler>(&mut self, now: Instant, handler: &mut H, t: &mut Tally) {
        for i in 0..self.received {
            let Some((data, from)) = self.rx.get(i) else {
                continue;
            };
            t.rx_bytes += data.len() as u64;
            if !H::INSPECTS {
                continue;
            }
            if handler.on_datagram(now, from, data) == Verdict::Echo {
                match self.tx.next_buf() {
                    Some(buf) if data.len() <= buf.len() => {
                        buf[..data.len()].copy_from_slice(data);
                        self.tx.commit(data.len(), from);
                    }
                    // The send batch is still full from the last round.
                    _ => t.tx_full += 1,
                }
            }
        }
        self.received = 0;
    }

    fn transmit<H: Handler>(&mut self, now: Instant, handler: &mut H, t: &mut Tally) {
        loop {
            let mut produced = false;
            if H::ORIGINATES {
                while let Some(buf) = self.tx.next_buf() {
                    let Some(tr) = handler.poll_transmit(now, buf) else {
                        break;
                    };
                    self.tx.commit(tr.len, tr.dst);
                    produced = true;
                }
            }
            if self.tx.is_empty() || !self.send(t) {
                return;
            }
            if !produced && self.tx.is_empty() {
                return;
            }
        }
    }

    fn backlogged(&self) -> bool {
        !self.tx.is_empty()
    }

    fn wait(&mut self, how: Wait, bell: Option<std::os::fd::RawFd>) {
        // Busy polling on a kernel socket is the next recvmmsg: no syscall to wait in.
        if let Wait::Sleep(ms) = how {
            let _ = match bell {
                Some(fd) => sys::poll_readable([self.sock.as_raw_fd(), fd], ms),
                None => sys::wait_readable(self.sock.as_fd(), ms),
            };
        }
    }
}
