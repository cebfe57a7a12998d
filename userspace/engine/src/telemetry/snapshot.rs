//! The snapshot schema (docs/STATS.md, docs/stats.schema.json) and how it is taken from
//! a [`Running`] engine's state.

use std::{
    collections::BTreeMap, os::fd::AsFd as _, sync::atomic::Ordering::Relaxed, time::Duration,
};

use serde::{Deserialize, Serialize};
use xrudp_common::maps::Counter;

use super::{Figures, NAPI_ID_UNKNOWN, Running, latency, load, percentile};
use crate::sys;

/// Version of the snapshot schema (docs/STATS.md).
pub const SCHEMA_VERSION: u32 = 3;

/// Everything `xrudp stats` shows, as measured at one instant.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// Schema version.
    pub schema: u32,
    /// Engine process id.
    pub pid: u32,
    /// Interface name.
    pub iface: String,
    /// Data path: "xdp" or "socket".
    pub backend: String,
    /// XDP attach mode ("native" or "skb"; empty on the socket backend).
    pub xdp_mode: String,
    /// Whether every socket is bound zero-copy.
    pub zero_copy: bool,
    /// How idle workers wait: "need_wakeup", "busy-poll" or "adaptive".
    pub wakeup: String,
    /// The application the workers run.
    pub app: String,
    /// Steered UDP ports.
    pub ports: Vec<u16>,
    /// Seconds since the engine started.
    pub uptime_secs: f64,
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Microseconds since the engine started when this snapshot was taken (for rates).
    pub taken_at_us: u64,
    /// XDP program counters, summed over CPUs, by name.
    pub xdp: std::collections::BTreeMap<String, u64>,
    /// Per-queue figures.
    pub queues: Vec<QueueSnapshot>,
    /// Resident set size of the engine process, bytes (`VmRSS` in /proc/self/status).
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    /// Checksum SIMD level the workers use ("avx2", "sse4.1" or "scalar").
    #[serde(default)]
    pub simd_level: String,
    /// Entries per AF_XDP ring (0 on the socket backend).
    #[serde(default)]
    pub ring_size: u32,
    /// Figures over all queues that cannot be summed from the per-queue ones.
    #[serde(default)]
    pub merged: Option<Merged>,
    /// Under `xrudp attach --agones`: the Agones game server's state as the engine sees
    /// it (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agones: Option<Agones>,
}

/// What the Agones SDK thread of an engine (`xrudp attach --agones`) last saw and did.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Agones {
    /// The GameServer's state as the sidecar last reported it ("Scheduled", "Ready",
    /// "Allocated", "Shutdown", ...; empty before the first report).
    pub state: String,
    /// Whether the engine has told the sidecar it is Ready.
    pub ready: bool,
    /// Health pings sent: one per check (every second) at which every worker had
    /// turned since the previous one.
    pub health_pings: u64,
    /// Workers (queue ids) that had not turned since the previous check, as of the
    /// last one: while any is listed, no ping is sent.
    pub stalled_workers: Vec<u32>,
    /// The open connections last written to the GameServer's `connections` counter
    /// (`None` while the counter is not in use).
    pub connections_reported: Option<u64>,
    /// Why the engine is draining under Agones ("GameServer Shutdown" or "SIGTERM"),
    /// empty while it is not.
    pub draining: String,
}

/// Percentiles over every queue at once: the queues' latency histograms merged, and the
/// RTTs and congestion windows of every connection of every worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Merged {
    /// Processing latency of every packet of every queue.
    pub latency: Option<latency::Summary>,
    /// Smoothed RTT over all connections, microseconds: (p50, p99).
    pub rtt_us: Option<(u64, u64)>,
    /// Congestion windows over all connections, bytes: (min, median, max).
    pub cwnd: Option<(u64, u64, u64)>,
}

/// One queue's figures.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QueueSnapshot {
    /// Queue index.
    pub queue: u32,
    /// Pinned core.
    pub core: Option<usize>,
    /// Zero-copy bound.
    pub zero_copy: bool,
    /// Datagrams received by the worker.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Datagrams transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// UMEM frames.
    pub umem_frames: u32,
    /// UMEM frames out of the pool.
    pub frames_in_use: u64,
    /// Highest frames out of the pool.
    pub frames_high_water: u64,
    /// The kernel's XDP_STATISTICS for the socket.
    pub xdp_statistics: Option<XdpStatistics>,
    /// Worker CPU time so far, seconds (user + system).
    pub cpu_secs: Option<f64>,
    /// Frames dropped as not Ethernet/IP/UDP (or a bad IPv4 header checksum).
    #[serde(default)]
    pub drop_malformed: u64,
    /// Datagrams dropped for a bad UDP checksum.
    #[serde(default)]
    pub drop_checksum: u64,
    /// Datagrams that could not be answered (multicast/broadcast ends).
    #[serde(default)]
    pub drop_unanswerable: u64,
    /// Replies dropped because the TX ring stayed full.
    #[serde(default)]
    pub drop_tx_full: u64,
    /// Protocol and application figures (protocol apps only), as last published by
    /// the worker (at most 100 ms old).
    pub protocol: Option<Figures>,
    /// Descriptors on the fill ring as last published (AF_XDP workers only).
    #[serde(default)]
    pub fill_ring_level: Option<u64>,
    /// Processing latency RX to TX since start (none before traffic).
    #[serde(default)]
    pub latency: Option<latency::Summary>,
    /// The NAPI id the AF_XDP socket's packets come through: what busy polling drives
    /// (0: the driver's queue has none; `null` before the first packets or on the socket
    /// backend).
    #[serde(default)]
    pub napi_id: Option<u32>,
}

impl Snapshot {
    /// The XDP counter named `name`.
    #[must_use]
    pub fn xdp_counter(&self, name: &str) -> Option<u64> {
        self.xdp.get(name).copied()
    }
}

/// The kernel's per-socket AF_XDP drop counters (`XDP_STATISTICS`), as the schema shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpStatistics {
    /// Dropped for reasons other than invalid descriptors.
    pub rx_dropped: u64,
    /// Dropped due to invalid descriptors (RX).
    pub rx_invalid_descs: u64,
    /// Dropped due to invalid descriptors (TX).
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked for work.
    pub tx_ring_empty_descs: u64,
}

impl From<sys::XdpStatistics> for XdpStatistics {
    fn from(s: sys::XdpStatistics) -> Self {
        Self {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        }
    }
}

/// Builds a snapshot of a running engine.
pub(super) fn take(r: &Running) -> Snapshot {
    let (mode, xdp) = match &r.program {
        Some(program) => {
            let counters = program.counters();
            let xdp = Counter::ALL
                .iter()
                .zip(counters.iter().copied().chain(std::iter::repeat(0)))
                .map(|(c, v)| (c.label().to_owned(), v))
                .collect();
            (program.mode(), xdp)
        }
        None => (String::new(), BTreeMap::new()),
    };
    let up = r.started.elapsed();
    Snapshot {
        schema: SCHEMA_VERSION,
        pid: std::process::id(),
        iface: r.iface.clone(),
        backend: r.backend.to_owned(),
        xdp_mode: mode,
        zero_copy: r
            .workers
            .iter()
            .all(|w| w.xsk.as_ref().is_some_and(|x| x.zero_copy)),
        wakeup: r.wakeup.into(),
        app: r.app.clone(),
        ports: r.ports.clone(),
        uptime_secs: up.as_secs_f64(),
        started_unix: r.started_unix,
        taken_at_us: u64::try_from(up.as_micros()).unwrap_or(u64::MAX),
        xdp,
        queues: r.workers.iter().map(|w| queue(w, r.protocol)).collect(),
        rss_bytes: sys::rss_bytes(),
        simd_level: xrudp_packet::Kernel::detect().level().name().to_owned(),
        ring_size: r.ring_size,
        merged: Some(merged(r)),
        agones: r
            .agones
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone(),
    }
}

fn queue(w: &super::Worker, protocol: bool) -> QueueSnapshot {
    let c = &w.counters;
    let tid = w.tid.load(Relaxed);
    QueueSnapshot {
        queue: w.id,
        core: w.core(),
        zero_copy: w.xsk.as_ref().is_some_and(|x| x.zero_copy),
        rx_packets: load(&c.rx_packets),
        rx_bytes: load(&c.rx_bytes),
        tx_packets: load(&c.tx_packets),
        tx_bytes: load(&c.tx_bytes),
        umem_frames: w.xsk.as_ref().map_or(0, |x| x.umem_frames),
        frames_in_use: load(&c.frames_in_use),
        frames_high_water: load(&c.frames_high_water),
        xdp_statistics: w
            .xsk
            .as_ref()
            .and_then(|x| sys::xdp_statistics(x.socket.as_fd()).ok())
            .map(XdpStatistics::from),
        cpu_secs: (tid != 0)
            .then(|| sys::thread_cpu_ticks(tid))
            .flatten()
            .map(|(t, hz)| Duration::from_millis(t * 1000 / hz).as_secs_f64()),
        drop_malformed: load(&c.drop_malformed),
        drop_checksum: load(&c.drop_checksum),
        drop_unanswerable: load(&c.drop_unanswerable),
        drop_tx_full: load(&c.drop_tx_full),
        protocol: protocol.then(|| w.published.read()),
        fill_ring_level: w.xsk.as_ref().map(|_| load(&c.fill_level)),
        latency: c.latency.summary(),
        napi_id: Some(w.napi_id.load(Relaxed)).filter(|&id| id != NAPI_ID_UNKNOWN),
    }
}

/// Merges what the workers publish into [`Merged`] (on the reader's thread).
fn merged(r: &Running) -> Merged {
    let latency = latency::merged(r.workers.iter().map(|w| &w.counters.latency));
    let (mut rtts, mut cwnds) = (Vec::new(), Vec::new());
    if r.protocol {
        for w in &r.workers {
            w.published.samples(&mut rtts, &mut cwnds);
        }
    }
    rtts.sort_unstable();
    cwnds.sort_unstable();
    Merged {
        latency,
        rtt_us: percentile(&rtts, 50).zip(percentile(&rtts, 99)),
        cwnd: match (cwnds.first(), percentile(&cwnds, 50), cwnds.last()) {
            (Some(&lo), Some(mid), Some(&hi)) => Some((lo, mid, hi)),
            _ => None,
        },
    }
}
