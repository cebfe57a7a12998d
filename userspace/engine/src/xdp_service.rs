//! The protocol on an AF_XDP worker: RX burst → validate → protocol → application →
//! TX burst, all in the queue's UMEM.
//!
//! Received frames are parsed in place (`xrudp_packet::Datagram`), their UDP checksum
//! verified, the sender's link-layer route learnt, and the UDP payload handed to the
//! [`Service`] straight from the frame; the frame then goes back to the fill ring.
//! Datagrams the protocol sends are written by `poll_transmit` directly into a free
//! frame's payload area, headers are built in front of them toward the learnt route
//! (`xrudp_packet::datagram::build`), and the frames go out in one TX burst.
//!
//! The payload offset depends on the route (VLAN tag, IPv4 or IPv6), which is known only
//! once `poll_transmit` names the destination, so the worker writes at the header length
//! it used last and moves the payload only when a datagram's route differs — never for a
//! homogeneous population of peers.

use std::{
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::{Duration, Instant},
};

use xrudp_packet::{Datagram, Kernel, datagram};

use crate::{
    busy_poll::Knobs,
    neigh::{self, peer_key},
    service::{SHUTDOWN_PAUSE, SHUTDOWN_ROUNDS, Service},
    sys::xsk::{Frame, Xsk},
    telemetry::{Tally, Worker},
    worker::{self, BATCH, Settings},
};

/// Frames the fill ring never gets, so the worker can always originate datagrams: at
/// most this many, and at most a quarter of the UMEM (a small UMEM must still receive).
pub(crate) const TX_RESERVE: usize = 256;

/// Runs the protocol worker until `stop` is set; then sends the shutdown notices
/// (disconnects) and returns.
pub(crate) fn run(
    mut xsk: Xsk,
    shared: &Worker,
    knobs: &Knobs,
    settings: Settings,
    service: &mut Service,
    stop: &AtomicBool,
) {
    let published = &shared.published;
    let kernel = Kernel::detect();
    let mut routes = neigh::Table::new(2 * service.server().config().max_connections + 1024);
    let mut batch: Vec<Frame> = Vec::with_capacity(BATCH);
    let mut tx: Vec<Frame> = Vec::with_capacity(BATCH);
    let mut header_guess = 42; // Ethernet + IPv4 + UDP
    let reserve = TX_RESERVE.min(xsk.frames() as usize / 4);
    // The first publication allocates once (reject-reason names, room for every slot):
    // make it before serving, not under traffic.
    service.publish(published);
    let mut last_publish = Instant::now();
    let mut stopping_rounds = 0u32;
    let c = &shared.counters;
    let mut latency = crate::telemetry::latency::Recorder::default();
    let mut napi_known = false;
    loop {
        let stopping = stop.load(Relaxed);
        xsk.complete();
        xsk.refill(reserve);
        let n = xsk.recv(&mut batch, BATCH);
        if n > 0 && !napi_known {
            napi_known = true;
            worker::learn_napi_id(shared, knobs, &xsk);
        }
        let now = Instant::now();
        let mut t = Tally {
            rx_packets: n as u64,
            ..Tally::default()
        };
        for f in batch.drain(..) {
            t.rx_bytes += f.len() as u64;
            match Datagram::parse(xsk.data(&f)) {
                Err(_) => t.malformed += 1,
                Ok(d) if settings.udp_checksum_check && !d.verify_udp_checksum(kernel) => {
                    t.checksum += 1;
                }
                Ok(d) => {
                    let from = peer_key(d.src());
                    routes.learn(d.route());
                    service.handle_datagram(now, from, d.payload());
                }
            }
            xsk.release(f);
        }
        if stopping && stopping_rounds == 0 {
            service.shutdown();
        }
        service.handle_timeout(now);
        service.run();
        transmit(
            &mut xsk,
            service,
            &routes,
            &mut tx,
            &mut header_guess,
            kernel,
            now,
            &mut t,
        );
        if n > 0 {
            // RX to TX for this batch, counted once per packet (docs/STATS.md).
            latency.record(now.elapsed(), n as u64);
        }
        t.publish(c);
        worker::publish_frames(c, &xsk);
        if now.duration_since(last_publish) >= Duration::from_millis(100) {
            service.publish(published);
            latency.flush(&c.latency);
            c.fill_level.store(u64::from(xsk.fill_level()), Relaxed);
            last_publish = now;
        }
        if stopping {
            stopping_rounds += 1;
            if stopping_rounds >= SHUTDOWN_ROUNDS {
                service.publish(published);
                break;
            }
            std::thread::sleep(SHUTDOWN_PAUSE);
            continue;
        }
        if n == 0 && tx.is_empty() {
            if settings.busy_poll {
                let _ = xsk.wait(0);
            } else {
                let wait = service.poll_timeout().map_or(100, |d| {
                    d.saturating_duration_since(now).as_millis().clamp(0, 100) as i32
                });
                if wait > 0 {
                    let _ = xsk.wait(wait);
                }
            }
        }
    }
    worker::drain(&mut xsk, &mut tx);
}

/// Builds every datagram the protocol has to send into free frames and bursts them out.
#[expect(
    clippy::too_many_arguments,
    reason = "the worker's per-round state, passed down once per round"
)]
fn transmit(
    xsk: &mut Xsk,
    service: &mut Service,
    routes: &neigh::Table,
    tx: &mut Vec<Frame>,
    header_guess: &mut usize,
    kernel: Kernel,
    now: Instant,
    t: &mut Tally,
) {
    loop {
        if tx.len() >= BATCH {
            t.tx_packets += xsk.transmit(tx) as u64;
            if tx.len() >= BATCH {
                // The TX ring is full: leave the rest of the protocol's output queued in
                // the protocol (it is not lost) until the ring drains.
                break;
            }
        }
        let Some(mut f) = xsk.alloc() else {
            // No free UMEM frame: counted with the replies the TX ring had no room for.
            t.tx_full += 1;
            break;
        };
        let outcome = xsk.with_buffer(&mut f, |buf, _| {
            build_one(buf, service, routes, header_guess, kernel, now)
        });
        match outcome {
            Built::Nothing => {
                xsk.release(f);
                break;
            }
            Built::Frame => {
                t.tx_bytes += f.len() as u64;
                tx.push(f);
            }
            Built::NoRoute => {
                t.unanswerable += 1;
                xsk.release(f);
            }
        }
    }
    if !tx.is_empty() {
        t.tx_packets += xsk.transmit(tx) as u64;
    }
}

enum Built {
    Nothing,
    Frame,
    NoRoute,
}

fn build_one(
    buf: &mut [u8],
    service: &mut Service,
    routes: &neigh::Table,
    header_guess: &mut usize,
    kernel: Kernel,
    now: Instant,
) -> (usize, Built) {
    let at = (*header_guess).min(buf.len());
    let Some(tr) = service.poll_transmit(now, &mut buf[at..]) else {
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
