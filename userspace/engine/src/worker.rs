//! Per-queue worker threads: each owns one AF_XDP socket and its UMEM (shared-nothing),
//! runs batched RX → application → TX, and publishes its counters for the control thread.

use std::{
    os::fd::OwnedFd,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use crossbeam_utils::CachePadded;

use crate::sys::xsk::{Frame, Xsk};

/// Frames taken from the RX ring per batch.
pub const BATCH: usize = 64;

/// What the workers do with the datagrams they receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum App {
    /// Count and discard every datagram (returns frames straight to the fill ring).
    Discard,
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
}

/// Worker settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// The application.
    pub app: App,
    /// Spin instead of sleeping in `poll` when idle.
    pub busy_poll: bool,
}

/// The worker loop; returns when `stop` is set.
pub fn run(mut xsk: Xsk, shared: &Queue, settings: Settings, stop: &AtomicBool) {
    shared.tid.store(crate::sys::gettid(), Relaxed);
    let mut batch: Vec<Frame> = Vec::with_capacity(BATCH);
    let c = &shared.counters;
    while !stop.load(Relaxed) {
        xsk.complete();
        xsk.refill(0);
        let n = xsk.recv(&mut batch, BATCH);
        if n == 0 {
            if !settings.busy_poll {
                // Sleep until traffic arrives; wake now and then to notice `stop`.
                let _ = xsk.wait(100);
            }
            continue;
        }
        let mut bytes = 0u64;
        match settings.app {
            App::Discard => {
                for f in batch.drain(..) {
                    bytes += f.len() as u64;
                    xsk.release(f);
                }
            }
        }
        c.rx_packets.fetch_add(n as u64, Relaxed);
        c.rx_bytes.fetch_add(bytes, Relaxed);
        c.frames_in_use
            .store(u64::from(xsk.frames_in_use()), Relaxed);
        c.frames_high_water
            .store(u64::from(xsk.high_water()), Relaxed);
    }
    // Let frames in flight drain so the kernel is done with the UMEM before it is freed.
    for _ in 0..100 {
        if xsk.tx_outstanding() == 0 {
            break;
        }
        xsk.complete();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Convenience for counters: a relaxed load.
#[must_use]
pub fn load(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

/// Keeps workers' shared state alive for the control thread.
pub type Queues = Arc<Vec<Arc<Queue>>>;
