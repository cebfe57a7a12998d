//! Telemetry: what the workers count and publish, and what a reader makes of it.
//!
//! This is a leaf of the engine: it imports nothing of the data path, the control socket
//! or the command line. The workers write into it ([`Counters`], [`latency::Recorder`],
//! [`Published`]); the control socket, the Prometheus exporter and the embedding API read
//! it through [`Running::snapshot`]. Every figure is documented in docs/STATS.md.

pub mod figures;
pub mod latency;
pub mod snapshot;

use std::{
    net::SocketAddr,
    os::fd::OwnedFd,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicI32, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed},
    },
    time::Instant,
};

use crossbeam_utils::CachePadded;

pub use figures::{ConnRow, Figures, Published, percentile, reject_name};
pub use snapshot::{Agones, Merged, QueueSnapshot, SCHEMA_VERSION, Snapshot, XdpStatistics};

/// The NAPI id of a queue not yet learnt (no packet has arrived), or of a worker that has
/// none (a kernel socket).
pub const NAPI_ID_UNKNOWN: u32 = u32::MAX;

/// Counters one worker updates and readers load; on their own cache lines so publishing
/// costs the worker no shared-line traffic.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams received.
    pub rx_packets: AtomicU64,
    /// Bytes of those datagrams (whole frames on AF_XDP, payloads on kernel sockets).
    pub rx_bytes: AtomicU64,
    /// Datagrams sent.
    pub tx_packets: AtomicU64,
    /// Bytes of those datagrams.
    pub tx_bytes: AtomicU64,
    /// UMEM frames out of the pool, as of the last batch (AF_XDP).
    pub frames_in_use: AtomicU64,
    /// Highest frames-in-use seen (AF_XDP).
    pub frames_high_water: AtomicU64,
    /// Frames dropped because they did not parse as Ethernet/IP/UDP.
    pub drop_malformed: AtomicU64,
    /// Datagrams dropped for a bad UDP checksum.
    pub drop_checksum: AtomicU64,
    /// Datagrams that could not be answered (multicast/broadcast ends, no route).
    pub drop_unanswerable: AtomicU64,
    /// Replies dropped because the TX ring (or frame pool) stayed full.
    pub drop_tx_full: AtomicU64,
    /// Descriptors on the fill ring as of the last publication (AF_XDP).
    pub fill_level: AtomicU64,
    /// Processing latency, RX to TX, merged in by the worker every publication.
    pub latency: latency::Shared,
}

/// Per-batch tallies of a worker, kept on its stack and added to [`Counters`] once per
/// batch by [`Tally::publish`].
#[derive(Debug, Default)]
pub struct Tally {
    /// Datagrams received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames that did not parse as Ethernet/IP/UDP.
    pub malformed: u64,
    /// Datagrams with a bad UDP checksum.
    pub checksum: u64,
    /// Datagrams with no route back.
    pub unanswerable: u64,
    /// Replies the TX ring had no room for, or datagrams no UMEM frame was free for.
    pub tx_full: u64,
}

impl Tally {
    /// Adds this batch to `c`.
    #[inline]
    pub fn publish(&self, c: &Counters) {
        if self.rx_packets > 0 {
            c.rx_packets.fetch_add(self.rx_packets, Relaxed);
            c.rx_bytes.fetch_add(self.rx_bytes, Relaxed);
        }
        if self.tx_packets + self.tx_bytes > 0 {
            c.tx_packets.fetch_add(self.tx_packets, Relaxed);
            c.tx_bytes.fetch_add(self.tx_bytes, Relaxed);
        }
        if self.malformed + self.checksum + self.unanswerable + self.tx_full > 0 {
            self.publish_drops(c);
        }
    }

    fn publish_drops(&self, c: &Counters) {
        c.drop_malformed.fetch_add(self.malformed, Relaxed);
        c.drop_checksum.fetch_add(self.checksum, Relaxed);
        c.drop_unanswerable.fetch_add(self.unanswerable, Relaxed);
        c.drop_tx_full.fetch_add(self.tx_full, Relaxed);
    }
}

/// What an AF_XDP worker adds to its figures: its socket and UMEM.
#[derive(Debug)]
pub struct Xsk {
    /// A duplicate of the socket's descriptor, to read `XDP_STATISTICS` from outside.
    pub socket: OwnedFd,
    /// Whether the socket is bound zero-copy.
    pub zero_copy: bool,
    /// UMEM frames.
    pub umem_frames: u32,
}

/// What readers know of one worker (one NIC queue, or one kernel socket).
#[derive(Debug)]
pub struct Worker {
    /// Queue index on the interface (or socket index).
    pub id: u32,
    /// The AF_XDP socket, when the worker has one.
    pub xsk: Option<Xsk>,
    /// The single core the worker's affinity allows, as read back after pinning (-1:
    /// not pinned, or not yet started).
    core: AtomicI64,
    /// Worker thread id (for CPU accounting), 0 until it starts.
    pub tid: AtomicI32,
    /// Live counters.
    pub counters: CachePadded<Counters>,
    /// Protocol and application figures (protocol apps only).
    pub published: Published,
    /// The NAPI id the socket's packets come through ([`NAPI_ID_UNKNOWN`] before the
    /// first packets; 0 when the driver's queue has none). AF_XDP only.
    pub napi_id: AtomicU32,
    /// Set once by `xrudp drain`: the worker's server starts draining (docs/PROTOCOL.md
    /// §8.5), sending its clients to the address, if any. The worker looks at it when it
    /// publishes its figures (every 100 ms while it turns).
    pub drain: OnceLock<Option<SocketAddr>>,
    /// How many times the worker has published its figures: it stores the count every
    /// time (every 100 ms while its loop turns; an idle worker wakes at least that often),
    /// so a reader that sees it advance knows the loop is turning (`--agones` health).
    pub heartbeat: AtomicU64,
}

impl Worker {
    /// A worker's state before it starts: no thread, zeroed counters.
    #[must_use]
    pub fn new(id: u32, xsk: Option<Xsk>) -> Self {
        Self {
            id,
            xsk,
            core: AtomicI64::new(-1),
            tid: AtomicI32::new(0),
            counters: CachePadded::default(),
            published: Published::default(),
            napi_id: AtomicU32::new(NAPI_ID_UNKNOWN),
            drain: OnceLock::new(),
            heartbeat: AtomicU64::new(0),
        }
    }

    /// The core the worker runs on, if its affinity is exactly one core.
    #[must_use]
    pub fn core(&self) -> Option<usize> {
        usize::try_from(self.core.load(Relaxed)).ok()
    }

    /// Records, from the worker thread, its thread id and the core its affinity allows.
    pub fn started(&self, tid: i32, core: Option<usize>) {
        self.tid.store(tid, Relaxed);
        let core = core.and_then(|c| i64::try_from(c).ok()).unwrap_or(-1);
        self.core.store(core, Relaxed);
    }
}

/// The XDP program, as telemetry reads it.
pub trait Program: Send + Sync + std::fmt::Debug {
    /// The attach mode ("native", "skb"), empty if unknown.
    fn mode(&self) -> String;
    /// The program's counters summed over CPUs, in `xrudp_common::maps::Counter::ALL` order.
    fn counters(&self) -> Vec<u64>;
}

/// What a running engine is, for figures: its description and every worker's state.
#[derive(Debug)]
pub struct Running {
    /// Interface name.
    pub iface: String,
    /// The data path: "xdp" or "socket".
    pub backend: &'static str,
    /// The application's name ("echo", "udp-echo", ...).
    pub app: String,
    /// Whether the workers run the protocol (and so publish [`Figures`]).
    pub protocol: bool,
    /// Served UDP ports.
    pub ports: Vec<u16>,
    /// How idle workers wait: "need_wakeup", "busy-poll" or "adaptive".
    pub wakeup: &'static str,
    /// Entries per AF_XDP ring (0 without AF_XDP).
    pub ring_size: u32,
    /// The XDP program, when one is attached.
    pub program: Option<Arc<dyn Program>>,
    /// Every worker.
    pub workers: Vec<Arc<Worker>>,
    /// Start time.
    pub started: Instant,
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// When a drain must end at the latest (`xrudp drain --deadline`); `None` until one
    /// is asked for.
    pub drain_deadline: Mutex<Option<Instant>>,
    /// Under `--agones`: what the Agones SDK thread last saw and did (`None` without it).
    pub agones: Mutex<Option<Agones>>,
}

impl Running {
    /// Starts draining every worker (a second call keeps the first one's address and
    /// deadline): no new client is admitted, connected ones are told to leave (to
    /// `redirect` if given). The engine stops when the last connection has ended or at
    /// `deadline`. Returns the connections open as last published.
    pub fn drain(&self, redirect: Option<SocketAddr>, deadline: Instant) -> u64 {
        for w in &self.workers {
            let _ = w.drain.set(redirect);
        }
        let mut d = self
            .drain_deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        d.get_or_insert(deadline);
        self.open_connections()
    }

    /// When the drain asked for ends at the latest, if one was asked for.
    #[must_use]
    pub fn drain_deadline(&self) -> Option<Instant> {
        *self
            .drain_deadline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Connections open over every worker, as last published (at most 100 ms old).
    /// Reads only the published counts (a drain polls this every 200 ms), not a whole
    /// snapshot with its kernel statistics and percentiles.
    #[must_use]
    pub fn open_connections(&self) -> u64 {
        if !self.protocol {
            return 0;
        }
        self.workers.iter().map(|w| w.published.connections()).sum()
    }

    /// Updates the Agones status with `f` (creating it on first use).
    pub fn update_agones(&self, f: impl FnOnce(&mut Agones)) {
        let mut a = self
            .agones
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(a.get_or_insert_with(Agones::default));
    }

    /// Every worker's [`Worker::heartbeat`], in worker order.
    #[must_use]
    pub fn heartbeats(&self) -> Vec<u64> {
        self.workers
            .iter()
            .map(|w| w.heartbeat.load(Relaxed))
            .collect()
    }

    /// The engine's figures as of now.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        snapshot::take(self)
    }

    /// Every connection's quality, as the workers last published it (at most 100 ms
    /// old); empty when the application runs no protocol.
    #[must_use]
    pub fn connections(&self) -> Connections {
        let mut rows = Vec::new();
        if self.protocol {
            for w in &self.workers {
                w.published.rows(&mut rows);
            }
        }
        Connections {
            schema: SCHEMA_VERSION,
            pid: std::process::id(),
            iface: self.iface.clone(),
            taken_at_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            connections: rows,
        }
    }
}

/// `xrudp stats --connections`: one row per connection of one engine (docs/STATS.md).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Connections {
    /// Schema version (the snapshot's).
    pub schema: u32,
    /// Engine process id.
    pub pid: u32,
    /// Interface name.
    pub iface: String,
    /// Microseconds since the engine started when the rows were read.
    pub taken_at_us: u64,
    /// One row per connection.
    pub connections: Vec<ConnRow>,
}

/// A relaxed load.
#[must_use]
pub fn load(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}
