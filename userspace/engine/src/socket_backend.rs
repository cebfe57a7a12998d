//! The kernel-socket backend: the same protocol and applications over ordinary UDP
//! sockets, for hosts where AF_XDP is unavailable, and the baseline every benchmark
//! compares against.
//!
//! One dual-stack `SO_REUSEPORT` socket per worker (the kernel spreads flows over them
//! by hash, so a client stays on one worker), batched with `recvmmsg`/`sendmmsg`.

use std::{
    io,
    net::{Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::AsFd as _,
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    service::{SHUTDOWN_PAUSE, SHUTDOWN_ROUNDS, Service},
    sys::{
        self,
        mmsg::{self, Batch},
    },
    telemetry::{Counters, Published},
};

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

/// The worker loop: receive a batch, run the protocol and application, send what they
/// produced; sleep in `poll(2)` until traffic or the next protocol timer (or spin with
/// `busy_poll`). Returns when `stop` is set, after the shutdown rounds.
pub(crate) fn run(
    sock: &UdpSocket,
    service: &mut Service,
    counters: &Counters,
    published: &Published,
    busy_poll: bool,
    stop: &AtomicBool,
) {
    let mut rx = Batch::new();
    let mut tx = Batch::new();
    // The first publication allocates once (reject-reason names, room for every slot):
    // make it before serving, not under traffic.
    service.publish(published);
    let mut last_publish = Instant::now();
    let mut latency = crate::telemetry::latency::Recorder::default();
    let mut stopping_rounds = 0u32;
    loop {
        let stopping = stop.load(Relaxed);
        let n = match mmsg::recv_batch(sock.as_fd(), &mut rx) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "recvmmsg failed");
                0
            }
        };
        let now = Instant::now();
        if n > 0 {
            let mut bytes = 0;
            for i in 0..n {
                if let Some((data, from)) = rx.get(i) {
                    bytes += data.len() as u64;
                    service.handle_datagram(now, from, data);
                }
            }
            counters.rx_packets.fetch_add(n as u64, Relaxed);
            counters.rx_bytes.fetch_add(bytes, Relaxed);
        }
        if stopping && stopping_rounds == 0 {
            service.shutdown();
        }
        service.handle_timeout(now);
        service.run();
        flush(sock, service, &mut tx, counters, now);
        if n > 0 {
            // recvmmsg to sendmmsg for this batch, counted once per datagram.
            latency.record(now.elapsed(), n as u64);
        }
        if now.duration_since(last_publish) >= Duration::from_millis(100) {
            service.publish(published);
            latency.flush(&counters.latency);
            last_publish = now;
        }
        if stopping {
            stopping_rounds += 1;
            if stopping_rounds >= SHUTDOWN_ROUNDS {
                service.publish(published);
                return;
            }
            std::thread::sleep(SHUTDOWN_PAUSE);
            continue;
        }
        if n == 0 && tx.is_empty() && !busy_poll {
            let wait = service.poll_timeout().map_or(100, |t| {
                t.saturating_duration_since(now).as_millis().clamp(0, 100) as i32
            });
            if wait > 0 {
                let _ = sys::wait_readable(sock.as_fd(), wait);
            }
        }
    }
}

fn flush(
    sock: &UdpSocket,
    service: &mut Service,
    tx: &mut Batch,
    counters: &Counters,
    now: Instant,
) {
    loop {
        let mut produced = false;
        while let Some(buf) = tx.next_buf() {
            let Some(t) = service.poll_transmit(now, buf) else {
                break;
            };
            tx.commit(t.len, t.dst);
            produced = true;
        }
        if tx.is_empty() {
            return;
        }
        let before = tx.len();
        let bytes: u64 = (0..before)
            .filter_map(|i| tx.get(i))
            .map(|(d, _)| d.len() as u64)
            .sum();
        match mmsg::send_batch(sock.as_fd(), tx) {
            Ok(0) => {
                // The socket buffer is full: keep the batch for the next round.
                return;
            }
            Ok(sent) => {
                counters.tx_packets.fetch_add(sent as u64, Relaxed);
                let left: u64 = (0..tx.len())
                    .filter_map(|i| tx.get(i))
                    .map(|(d, _)| d.len() as u64)
                    .sum();
                counters.tx_bytes.fetch_add(bytes - left, Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e, "sendmmsg failed; dropping the batch");
                tx.clear();
            }
        }
        if !produced && tx.is_empty() {
            return;
        }
    }
}
