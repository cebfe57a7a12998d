//! Per-queue worker threads: each owns one AF_XDP socket and its UMEM (shared-nothing),
//! runs batched RX → application → TX, and publishes its counters for the control thread.
//!
//! The loop per iteration: reap completions, top the fill ring up, take up to [`BATCH`]
//! frames from RX, run the application on each frame in place, put replies on the TX
//! ring in one burst. Nothing on this path allocates: the batch and TX vectors are sized
//! once, frames move between them and the pool.

use std::{
    sync::atomic::{AtomicBool, Ordering::Relaxed},
    time::Duration,
};

use xrudp_packet::{Datagram, Kernel, datagram};

use crate::{
    busy_poll::Knobs,
    sys::xsk::{Frame, Xsk},
    telemetry::{Counters, Tally, Worker},
};

/// Frames taken from the RX ring per batch.
pub const BATCH: usize = 64;

/// Replies waiting for TX-ring room at most (beyond it they are dropped and counted).
const TX_BACKLOG: usize = 4 * BATCH;

/// What the workers do with the datagrams they receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum App {
    /// Count and discard every datagram (returns frames straight to the fill ring).
    Discard,
    /// Echo every valid UDP datagram back to its sender, built in the received frame.
    UdpEcho,
    /// The RUDP protocol; every message goes back to its sender on the same channel.
    Echo,
    /// The RUDP protocol; clients join rooms (a message `JOIN` + room id, u32 big-endian)
    /// and every other message is forwarded to the room's other members.
    Relay,
}

/// Worker settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The application.
    pub app: App,
    /// Spin instead of sleeping in `poll` when idle.
    pub busy_poll: bool,
    /// Verify incoming UDP checksums (drop and count failures).
    pub udp_checksum_check: bool,
}

/// Adds the UMEM's frame levels after a batch to `c`.
#[inline]
pub(crate) fn publish_frames(c: &Counters, xsk: &Xsk) {
    c.frames_in_use
        .store(u64::from(xsk.frames_in_use()), Relaxed);
    c.frames_high_water
        .store(u64::from(xsk.high_water()), Relaxed);
}

/// After the first packets: reads the socket's NAPI id once, publishes it, and lets
/// the busy-poll knobs react to a queue without one.
#[cold]
pub(crate) fn learn_napi_id(worker: &Worker, knobs: &Knobs, xsk: &Xsk) {
    let id = knobs.queue_napi_id(worker.id, xsk.napi_id());
    worker.napi_id.store(id, Relaxed);
}

/// Releases the frames still queued in `tx` and waits (up to 100 ms) for those on the TX
/// ring to complete, so that the kernel is done with the UMEM before it is freed.
pub(crate) fn drain(xsk: &mut Xsk, tx: &mut Vec<Frame>) {
    for f in tx.drain(..) {
        xsk.release(f);
    }
    for _ in 0..100 {
        if xsk.tx_outstanding() == 0 {
            break;
        }
        xsk.complete();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Why the echo did not answer a frame.
#[derive(Clone, Copy)]
enum Drop {
    Malformed,
    Checksum,
    Unanswerable,
}

/// The worker loop; returns when `stop` is set.
pub fn run(mut xsk: Xsk, shared: &Worker, knobs: &Knobs, settings: Settings, stop: &AtomicBool) {
    let kernel = Kernel::detect();
    let mut napi_known = false;
    let mut batch: Vec<Frame> = Vec::with_capacity(BATCH);
    let mut tx: Vec<Frame> = Vec::with_capacity(TX_BACKLOG + BATCH);
    let c = &shared.counters;
    let mut latency = crate::telemetry::latency::Recorder::default();
    let mut last_publish = std::time::Instant::now();
    while !stop.load(Relaxed) {
        xsk.complete();
        // Frames still on the TX ring need another kick (copy mode sends 32 per call).
        xsk.kick_tx();
        xsk.refill(0);
        if !tx.is_empty() {
            // Replies left over when the TX ring was full last time.
            let sent = xsk.transmit(&mut tx);
            c.tx_packets.fetch_add(sent as u64, Relaxed);
        }
        let n = xsk.recv(&mut batch, BATCH);
        if n > 0 && !napi_known {
            napi_known = true;
            learn_napi_id(shared, knobs, &xsk);
        }
        let rx_at = std::time::Instant::now();
        if rx_at.duration_since(last_publish) >= Duration::from_millis(100) {
            latency.flush(&c.latency);
            c.fill_level.store(u64::from(xsk.fill_level()), Relaxed);
            last_publish = rx_at;
        }
        if n == 0 {
            if settings.busy_poll {
                // poll() with a zero timeout runs the socket's busy-poll loop (it drives
                // the NAPI context the socket is bound to) and returns at once.
                let _ = xsk.wait(0);
            } else {
                // Sleep until traffic arrives; wake now and then to notice `stop`, and
                // soon while transmitted frames await completion.
                let _ = xsk.wait(if xsk.tx_outstanding() > 0 { 1 } else { 100 });
            }
            continue;
        }
        let mut t = Tally {
            rx_packets: n as u64,
            ..Tally::default()
        };
        match settings.app {
            // The protocol apps run in `xdp_service`; this loop serves the raw ones only.
            App::Discard | App::Echo | App::Relay => {
                for f in batch.drain(..) {
                    t.rx_bytes += f.len() as u64;
                    xsk.release(f);
                }
            }
            App::UdpEcho => {
                for mut f in batch.drain(..) {
                    t.rx_bytes += f.len() as u64;
                    let check = settings.udp_checksum_check;
                    match xsk.with_buffer(&mut f, |buf, len| echo(buf, len, kernel, check)) {
                        Ok(()) => {
                            t.tx_bytes += f.len() as u64;
                            tx.push(f);
                        }
                        Err(why) => {
                            match why {
                                Drop::Malformed => t.malformed += 1,
                                Drop::Checksum => t.checksum += 1,
                                Drop::Unanswerable => t.unanswerable += 1,
                            }
                            xsk.release(f);
                        }
                    }
                }
                t.tx_packets = xsk.transmit(&mut tx) as u64;
                if tx.len() > TX_BACKLOG {
                    let (n, bytes) = shed(&mut xsk, &mut tx, TX_BACKLOG);
                    t.tx_full += n;
                    t.tx_bytes -= bytes;
                }
            }
        }
        // RX to TX for this batch, counted once per packet (docs/STATS.md).
        latency.record(rx_at.elapsed(), n as u64);
        t.publish(c);
        publish_frames(c, &xsk);
    }
    drain(&mut xsk, &mut tx);
}

/// Answers one received frame in place: parse, verify the UDP checksum (unless told
/// not to), swap the ends and fill complete checksums. Returns the new frame length.
#[inline]
fn echo(buf: &mut [u8], len: usize, kernel: Kernel, check: bool) -> (usize, Result<(), Drop>) {
    let Some(rx) = buf.get(..len) else {
        return (len, Err(Drop::Malformed));
    };
    let Ok(d) = Datagram::parse(rx) else {
        return (len, Err(Drop::Malformed));
    };
    if check && !d.verify_udp_checksum(kernel) {
        return (len, Err(Drop::Checksum));
    }
    let layout = d.layout();
    match datagram::reply_in_place(buf, &layout, layout.payload_len(), kernel) {
        Ok(n) => (n, Ok(())),
        Err(_) => (len, Err(Drop::Unanswerable)),
    }
}

/// Drops the newest replies beyond `keep` (the TX ring has stayed full); returns how
/// many, and their bytes.
fn shed(xsk: &mut Xsk, tx: &mut Vec<Frame>, keep: usize) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    while tx.len() > keep {
        if let Some(f) = tx.pop() {
            bytes += f.len() as u64;
            xsk.release(f);
            n += 1;
        }
    }
    (n, bytes)
}
