//! The AF_XDP port: one socket and its UMEM (shared-nothing, one per queue).
//!
//! Received frames are parsed in place (`xrudp_packet::Datagram`), their UDP checksum
//! verified, the sender's link-layer route learnt (when the handler originates), and the
//! UDP payload handed to the handler straight from the frame. A frame the handler echoes
//! is turned around in place (ends swapped, checksums filled) and goes out as it is;
//! every other frame goes back to the fill ring. Datagrams the handler originates are
//! written by `poll_transmit` directly into a free frame's payload area, headers are
//! built in front of them toward the learnt route (`xrudp_packet::datagram::build`),
//! and the frames go out in one TX burst. Nothing here allocates: the batch and TX
//! vectors are sized once, frames move between them and the pool.
//!
//! The payload offset depends on the route (VLAN tag, IPv4 or IPv6), which is known only
//! once `poll_transmit` names the destination, so the port writes at the header length
//! it used last and moves the payload only when a datagram's route differs — never for a
//! homogeneous population of peers.

use std::{sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration, time::Instant};

use xrudp_packet::{Datagram, Kernel, datagram};

use super::{BATCH, Handler, Port, Verdict, Wait};
use crate::{
    busy_poll::Knobs,
    neigh::{self, peer_key},
    sys::xsk::{Frame, Xsk},
    telemetry::{Counters, Tally, Worker},
};

/// Frames the fill ring never gets when the handler originates, so the worker can
/// always build datagrams: at most this many, and at most a quarter of the UMEM (a small
/// UMEM must still receive).
const TX_RESERVE: usize = 256;

/// Echoed frames waiting for TX-ring room at most (beyond it the newest are dropped
/// and counted as `tx_full`).
const TX_BACKLOG: usize = 4 * BATCH;

/// The AF_XDP port of one queue.
#[derive(Debug)]
pub(crate) struct XdpPort {
    xsk: Xsk,
    rx: Vec<Frame>,
    tx: Vec<Frame>,
    /// Senders' link-layer routes, learnt when the handler originates datagrams.
    routes: Option<neigh::Table>,
    header_guess: usize,
    reserve: usize,
    kernel: Kernel,
    udp_checksum_check: bool,
    /// Echo-only handlers: the port kicks TX every round while frames are outstanding
    /// and sleeps at most 1 ms then (see [`XdpPort::new`]).
    echo_only: bool,
    knobs: Arc<Knobs>,
}

impl XdpPort {
    /// The port around `xsk`. `routes` is the capacity of the route table for handlers
    /// that originate datagrams (`None` for those that only echo or discard).
    ///
    /// Echo-only handlers turn a whole RX batch around at once, and copy mode sends at
    /// most 32 frames per `sendto`: for them the port kicks TX again every round while
    /// frames are outstanding, and sleeps at most 1 ms then. A handler that originates
    /// builds at most a batch per transmit and kicks with each one; for it, a `sendto`
    /// every round would cost a syscall per round on every copy-mode queue (measured:
    /// a third more engine CPU per message at the CPU-per-message point of
    /// scripts/ab.sh), so it does without.
    pub(crate) fn new(
        xsk: Xsk,
        knobs: Arc<Knobs>,
        udp_checksum_check: bool,
        routes: Option<usize>,
    ) -> Self {
        let reserve = if routes.is_some() {
            TX_RESERVE.min(xsk.frames() as usize / 4)
        } else {
            0
        };
        Self {
            xsk,
            rx: Vec::with_capacity(BATCH),
            tx: Vec::with_capacity(TX_BACKLOG + BATCH),
            routes: routes.map(neigh::Table::new),
            header_guess: 42, // Ethernet + IPv4 + UDP
            reserve,
            kernel: Kernel::detect(),
            udp_checksum_check,
            echo_only: routes.is_none(),
            knobs,
        }
    }

    /// Parses one received frame and hands its payload to `handler`; returns what to do
    /// with the frame.
    fn inspect<H: Handler>(
        &mut self,
        f: &Frame,
        now: Instant,
        handler: &mut H,
        t: &mut Tally,
    ) -> Option<datagram::Layout> {
        let Ok(d) = Datagram::parse(self.xsk.data(f)) else {
            t.malformed += 1;
            return None;
        };
        if self.udp_checksum_check && !d.verify_udp_checksum(self.kernel) {
            t.checksum += 1;
            return None;
        }
        if let Some(routes) = &mut self.routes {
            routes.learn(d.route());
        }
        match handler.on_datagram(now, peer_key(d.src()), d.payload()) {
            Verdict::Consumed => None,
            Verdict::Echo => Some(d.layout()),
        }
    }

    /// Turns frame `f` around in place toward its sender; `false` if it cannot be.
    fn echo(&mut self, f: &mut Frame, layout: &datagram::Layout) -> bool {
        let kernel = self.kernel;
        self.xsk.with_buffer(f, |buf, len| {
            match datagram::reply_in_place(buf, layout, layout.payload_len(), kernel) {
                Ok(n) => (n, true),
                Err(_) => (len, false),
            }
        })
    }

    /// Drops the newest echoes beyond [`TX_BACKLOG`] (the TX ring has stayed full).
    fn shed(&mut self, t: &mut Tally) {
        while self.tx.len() > TX_BACKLOG {
            if let Some(f) = self.tx.pop() {
                t.tx_full += 1;
                t.tx_bytes -= (f.len() as u64).min(t.tx_bytes);
                self.xsk.release(f);
            }
        }
    }

    /// Builds what `handler` originates into free frames and bursts them out.
    fn originate<H: Handler>(
        &mut self,
        now: Instant,
        handler: &mut H,
        routes: &neigh::Table,
        t: &mut Tally,
    ) {
        loop {
            if self.tx.len() >= BATCH {
                t.tx_packets += self.xsk.transmit(&mut self.tx) as u64;
                if self.tx.len() >= BATCH {
                    // The TX ring is full: leave the rest of the handler's output queued
                    // in the handler (it is not lost) until the ring drains.
                    break;
                }
            }
            let Some(mut f) = self.xsk.alloc() else {
                // No free UMEM frame: counted with the replies the TX ring had no room for.
                t.tx_full += 1;
                break;
            };
            let (kernel, guess) = (self.kernel, &mut self.header_guess);
            let built = self.xsk.with_buffer(&mut f, |buf, _| {
                build_one(buf, now, handler, routes, guess, kernel)
            });
            match built {
                Built::Nothing => {
                    self.xsk.release(f);
                    break;
                }
                Built::Frame => {
                    t.tx_bytes += f.len() as u64;
                    self.tx.push(f);
                }
                Built::NoRoute => {
                    t.unanswerable += 1;
                    self.xsk.release(f);
                }
            }
        }
    }
}

impl Port for XdpPort {
    fn receive(&mut self, t: &mut Tally) -> usize {
        self.xsk.complete();
        if self.echo_only {
            // Frames still on the TX ring need another kick (copy mode sends 32 per call).
            self.xsk.kick_tx();
        }
        self.xsk.refill(self.reserve);
        if !self.tx.is_empty() {
            // Frames left over when the TX ring was full last round.
            t.tx_packets += self.xsk.transmit(&mut self.tx) as u64;
        }
        self.xsk.recv(&mut self.rx, BATCH)
    }

    fn deliver<H: Handler>(&mut self, now: Instant, handler: &mut H, t: &mut Tally) {
        let mut rx = std::mem::take(&mut self.rx);
        for mut f in rx.drain(..) {
            t.rx_bytes += f.len() as u64;
            let echo = if H::INSPECTS {
                self.inspect(&f, now, handler, t)
            } else {
                None
            };
            match echo {
                Some(layout) if self.echo(&mut f, &layout) => {
                    t.tx_bytes += f.len() as u64;
                    self.tx.push(f);
                }
                Some(_) => {
                    t.unanswerable += 1;
                    self.xsk.release(f);
                }
                None => self.xsk.release(f),
            }
        }
        self.rx = rx;
    }

    fn transmit<H: Handler>(&mut self, now: Instant, handler: &mut H, t: &mut Tally) {
        if !self.tx.is_empty() {
            t.tx_packets += self.xsk.transmit(&mut self.tx) as u64;
            self.shed(t);
        }
        if H::ORIGINATES
            && let Some(routes) = self.routes.take()
        {
            self.originate(now, handler, &routes, t);
            self.routes = Some(routes);
            if !self.tx.is_empty() {
                t.tx_packets += self.xsk.transmit(&mut self.tx) as u64;
            }
        }
    }

    fn backlogged(&self) -> bool {
        !self.tx.is_empty()
    }

    fn max_sleep_ms(&self) -> i32 {
        // Soon while echoed frames await completion (and maybe another kick).
        if self.echo_only && self.xsk.tx_outstanding() > 0 {
            1
        } else {
            super::IDLE_MS
        }
    }

    fn wait(&mut self, how: Wait, bell: Option<std::os::fd::RawFd>) {
        // poll() with a zero timeout runs the socket's busy-poll loop (it drives the
        // NAPI context the socket is bound to) and returns at once.
        let ms = match how {
            Wait::Spin => 0,
            Wait::Peek => {
                // The rings are shared memory: the next round reads them again.
                std::hint::spin_loop();
                return;
            }
            Wait::Sleep(ms) => ms,
        };
        let _ = match bell {
            Some(fd) => crate::sys::poll_readable([self.xsk.fd(), fd], ms),
            None => self.xsk.wait(ms),
        };
    }

    #[cold]
    fn on_first_traffic(&mut self, worker: &Worker) {
        // The socket's NAPI id is known once packets came through it: publish it, and
        // let the busy-poll knobs react to a queue without one.
        let id = self.knobs.queue_napi_id(worker.id, self.xsk.napi_id());
        worker.napi_id.store(id, Relaxed);
    }

    fn publish_levels(&mut self, c: &Counters, periodic: bool) {
        c.frames_in_use
            .store(u64::from(self.xsk.frames_in_use()), Relaxed);
        c.frames_high_water
            .store(u64::from(self.xsk.high_water()), Relaxed);
        if periodic {
            c.fill_level
                .store(u64::from(self.xsk.fill_level()), Relaxed);
        }
    }

    /// Releases the frames still queued and waits (up to 100 ms) for those on the TX
    /// ring to complete, so that the kernel is done with the UMEM before it is freed.
    fn close(&mut self) {
        for f in self.tx.drain(..) {
            self.xsk.release(f);
        }
        for _ in 0..100 {
            if self.xsk.tx_outstanding() == 0 {
                break;
            }
            self.xsk.complete();
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

enum Built {
    Nothing,
    Frame,
    NoRoute,
}

/// Writes the handler's next datagram into `buf` behind headers toward its route.
fn build_one<H: Handler>(
    buf: &mut [u8],
    now: Instant,
    handler: &mut H,
    routes: &neigh::Table,
    header_guess: &mut usize,
    kernel: Kernel,
) -> (usize, Built) {
    let at = (*header_guess).min(buf.len());
    let Some(tr) = handler.poll_transmit(now, &mut buf[at..]) else {
        return (0, Built::Nothing);
    };
    // The learnt route keeps the flow label the peer used; the key is without it.
    let Some(route) = routes.lookup(tr.dst) else {
        return (0, Built::NoRoute);
    };
    let need = route.header_len();
    if need != at {
        if need + tr.len > buf.len() {
            return (0, Built::NoRoute);
        }
        buf.copy_within(at..at + tr.len, need);
        *header_guess = need;
    }
    match datagram::build(buf, &route, tr.len, kernel) {
        Ok(len) => (len, Built::Frame),
        Err(_) => (0, Built::NoRoute),
    }
}
