//! Per-queue worker threads: each owns one AF_XDP socket and its UMEM (shared-nothing),
//! runs batched RX → application → TX, and publishes its counters for the control thread.
//!
//! The loop per iteration: reap completions, top the fill ring up, take up to [`BATCH`]
//! frames from RX, run the application on each frame in place, put replies on the TX
//! ring in one burst. Nothing on this path allocates: the batch and TX vectors are sized
//! once, frames move between them and the pool.

use std::{
    os::fd::OwnedFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use crossbeam_utils::CachePadded;
use xrudp_packet::{Datagram, Kernel, datagram};

use crate::sys::xsk::{Frame, Xsk};

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

/// Counters one worker updates and the control thread reads; on their own cache lines
/// so publishing costs the worker no shared-line traffic.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams taken from the RX ring.
    pub rx_packets: AtomicU64,
    /// Bytes of those frames.
    pub rx_bytes: AtomicU64,
    /// Datagrams put on the TX ring.
    pub tx_packets: AtomicU64,
    /// Bytes of those frames.
    pub tx_bytes: AtomicU64,
    /// UMEM frames out of the pool, as of the last batch.
    pub frames_in_use: AtomicU64,
    /// Highest frames-in-use seen.
    pub frames_high_water: AtomicU64,
    /// Frames dropped because they did not parse as Ethernet/IP/UDP.
    pub drop_malformed: AtomicU64,
    /// Datagrams dropped for a bad UDP checksum.
    pub drop_checksum: AtomicU64,
    /// Datagrams that could not be answered (multicast/broadcast ends).
    pub drop_unanswerable: AtomicU64,
    /// Replies dropped because the TX ring stayed full.
    pub drop_tx_full: AtomicU64,
    /// Descriptors on the fill ring (frames the kernel can receive into), as of the
    /// last publication (AF_XDP only).
    pub fill_level: AtomicU64,
    /// Processing latency, RX to TX, merged in by the worker every publication.
    pub latency: crate::stats::latency::Shared,
}

/// What the engine knows of one queue's worker.
#[derive(Debug)]
pub struct Queue {
    /// Queue index on the interface.
    pub queue: u32,
    /// Core the worker is pinned to, if pinning succeeded.
    pub core: Option<usize>,
    /// Whether the socket is bound zero-copy.
    pub zero_copy: bool,
    /// UMEM frames.
    pub umem_frames: u32,
    /// Worker thread id (for CPU accounting), 0 until it starts.
    pub tid: AtomicI32,
    /// A duplicate of the socket's descriptor, to read `XDP_STATISTICS` from outside.
    pub socket: OwnedFd,
    /// Live counters.
    pub counters: CachePadded<Counters>,
    /// Protocol and application figures (protocol apps only).
    pub published: crate::service::Published,
    /// The NAPI id the socket's packets come through ([`NAPI_ID_UNKNOWN`] before the
    /// first packets; 0 when the driver's queue has none). AF_XDP only.
    ///
    /// [`NAPI_ID_UNKNOWN`]: crate::busy_poll::NAPI_ID_UNKNOWN
    pub napi_id: std::sync::atomic::AtomicU32,
    /// The interface's busy-poll knobs (see [`crate::busy_poll::Knobs`]).
    pub busy_knobs: Arc<crate::busy_poll::Knobs>,
}

impl Queue {
    /// A queue's shared state before its worker starts: no thread id yet, zeroed counters
    /// and figures, NAPI id unknown.
    #[must_use]
    pub fn new(
        queue: u32,
        core: Option<usize>,
        socket: OwnedFd,
        zero_copy: bool,
        umem_frames: u32,
        busy_knobs: Arc<crate::busy_poll::Knobs>,
    ) -> Self {
        Self {
            queue,
            core,
            zero_copy,
            umem_frames,
            tid: AtomicI32::new(0),
            socket,
            counters: CachePadded::default(),
            published: crate::service::Published::default(),
            napi_id: std::sync::atomic::AtomicU32::new(crate::busy_poll::NAPI_ID_UNKNOWN),
            busy_knobs,
        }
    }

    /// After the first packets: reads the socket's NAPI id once, publishes it, and lets
    /// the busy-poll knobs react to a queue without one.
    #[cold]
    pub fn learn_napi_id(&self, xsk: &Xsk) {
        let id = self.busy_knobs.queue_napi_id(self.queue, xsk.napi_id());
        self.napi_id.store(id, Relaxed);
    }
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

/// Per-batch tallies of a worker (raw or protocol), kept in registers/stack and published
/// once per batch with [`Tally::publish`].
#[derive(Default)]
pub(crate) struct Tally {
    /// Bytes of the frames received.
    pub(crate) rx_bytes: u64,
    /// Frames put on the TX ring.
    pub(crate) tx_packets: u64,
    /// Bytes of the frames sent.
    pub(crate) tx_bytes: u64,
    /// Frames that did not parse as Ethernet/IP/UDP.
    pub(crate) malformed: u64,
    /// Datagrams with a bad UDP checksum.
    pub(crate) checksum: u64,
    /// Datagrams with no route back (multicast/broadcast ends, no learnt link-layer route).
    pub(crate) unanswerable: u64,
    /// Replies the TX ring had no room for, or datagrams no UMEM frame was free for.
    pub(crate) tx_full: u64,
}

impl Tally {
    /// Adds this batch of `rx_packets` received frames to `c`, with the UMEM's frame
    /// levels after it.
    #[inline]
    pub(crate) fn publish(&self, c: &Counters, rx_packets: usize, xsk: &Xsk) {
        c.rx_packets.fetch_add(rx_packets as u64, Relaxed);
        c.rx_bytes.fetch_add(self.rx_bytes, Relaxed);
        if self.tx_packets + self.tx_bytes > 0 {
            c.tx_packets.fetch_add(self.tx_packets, Relaxed);
            c.tx_bytes.fetch_add(self.tx_bytes, Relaxed);
        }
        if self.malformed + self.checksum + self.unanswerable + self.tx_full > 0 {
            self.publish_drops(c);
        }
        c.frames_in_use
            .store(u64::from(xsk.frames_in_use()), Relaxed);
        c.frames_high_water
            .store(u64::from(xsk.high_water()), Relaxed);
    }

    fn publish_drops(&self, c: &Counters) {
        c.drop_malformed.fetch_add(self.malformed, Relaxed);
        c.drop_checksum.fetch_add(self.checksum, Relaxed);
        c.drop_unanswerable.fetch_add(self.unanswerable, Relaxed);
        c.drop_tx_full.fetch_add(self.tx_full, Relaxed);
    }
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
pub fn run(mut xsk: Xsk, shared: &Queue, settings: Settings, stop: &AtomicBool) {
    shared.tid.store(crate::sys::gettid(), Relaxed);
    let kernel = Kernel::detect();
    let mut napi_known = false;
    let mut batch: Vec<Frame> = Vec::with_capacity(BATCH);
    let mut tx: Vec<Frame> = Vec::with_capacity(TX_BACKLOG + BATCH);
    let c = &shared.counters;
    let mut latency = crate::stats::latency::Recorder::default();
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
            shared.learn_napi_id(&xsk);
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
        let mut t = Tally::default();
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
        t.publish(c, n, &xsk);
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

/// Convenience for counters: a relaxed load.
#[must_use]
pub fn load(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

/// Keeps workers' shared state alive for the control thread.
pub type Queues = Arc<Vec<Arc<Queue>>>;
