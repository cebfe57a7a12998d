//! The engine's control socket: a Unix stream socket that answers each connection with
//! one JSON [`Snapshot`] of the engine's figures, read from the workers' counters by this
//! thread (the workers never block on it).

use std::{
    io::{self, Read as _, Write as _},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use xrudp_common::maps::Counter;

use crate::{engine::Running, sys, worker};

/// Version of the snapshot schema (docs/STATS.md).
pub const SCHEMA_VERSION: u32 = 2;

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
    /// "need_wakeup" or "busy-poll".
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
}

/// Percentiles over every queue at once: the queues' latency histograms merged, and the
/// RTTs and congestion windows of every connection of every worker.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Merged {
    /// Processing latency of every packet of every queue.
    pub latency: Option<crate::stats::latency::Summary>,
    /// Smoothed RTT over all connections, microseconds: (p50, p99).
    pub rtt_us: Option<(u64, u64)>,
    /// Congestion windows over all connections, bytes: (min, median, max).
    pub cwnd: Option<(u64, u64, u64)>,
}

/// Merges what the queues publish into [`Merged`] (on the control thread).
fn merged(r: &Running) -> Merged {
    let latency = crate::stats::latency::merged(r.queues.iter().map(|q| &q.counters.latency));
    let (mut rtts, mut cwnds) = (Vec::new(), Vec::new());
    if is_protocol(r) {
        for q in &r.queues {
            q.published.samples(&mut rtts, &mut cwnds);
        }
    }
    rtts.sort_unstable();
    cwnds.sort_unstable();
    let pct = crate::service::percentile;
    Merged {
        latency,
        rtt_us: pct(&rtts, 50).zip(pct(&rtts, 99)),
        cwnd: match (cwnds.first(), pct(&cwnds, 50), cwnds.last()) {
            (Some(&lo), Some(mid), Some(&hi)) => Some((lo, mid, hi)),
            _ => None,
        },
    }
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
    pub xdp_statistics: Option<sys::XdpStatistics>,
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
    pub protocol: Option<crate::service::Figures>,
    /// Descriptors on the fill ring as last published (AF_XDP workers only).
    #[serde(default)]
    pub fill_ring_level: Option<u64>,
    /// Processing latency RX to TX since start (none before traffic).
    #[serde(default)]
    pub latency: Option<crate::stats::latency::Summary>,
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

fn is_protocol(r: &Running) -> bool {
    !matches!(
        r.options.app,
        crate::worker::App::Discard | crate::worker::App::UdpEcho
    )
}

/// Builds a snapshot of a running engine.
pub fn snapshot(r: &Running) -> Snapshot {
    let (mode, xdp) = match &r.program {
        Some(program) => {
            let prog = program
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let mode = prog.mode().map_or_else(String::new, |m| m.to_string());
            let counters = prog.counters().unwrap_or_default();
            let xdp = Counter::ALL
                .iter()
                .zip(counters.iter().copied().chain(std::iter::repeat(0)))
                .map(|(c, v)| (c.label().to_owned(), v))
                .collect();
            (mode, xdp)
        }
        None => (String::new(), std::collections::BTreeMap::new()),
    };
    let queues = r
        .queues
        .iter()
        .map(|q| {
            let c = &q.counters;
            let tid = q.tid.load(Relaxed);
            QueueSnapshot {
                queue: q.queue,
                core: q.core,
                zero_copy: q.zero_copy,
                rx_packets: worker::load(&c.rx_packets),
                rx_bytes: worker::load(&c.rx_bytes),
                tx_packets: worker::load(&c.tx_packets),
                tx_bytes: worker::load(&c.tx_bytes),
                umem_frames: q.umem_frames,
                frames_in_use: worker::load(&c.frames_in_use),
                frames_high_water: worker::load(&c.frames_high_water),
                xdp_statistics: sys::xdp_statistics(std::os::fd::AsFd::as_fd(&q.socket)).ok(),
                cpu_secs: (tid != 0)
                    .then(|| sys::thread_cpu_ticks(tid))
                    .flatten()
                    .map(|(t, hz)| Duration::from_millis(t * 1000 / hz).as_secs_f64()),
                drop_malformed: worker::load(&c.drop_malformed),
                drop_checksum: worker::load(&c.drop_checksum),
                drop_unanswerable: worker::load(&c.drop_unanswerable),
                drop_tx_full: worker::load(&c.drop_tx_full),
                protocol: is_protocol(r).then(|| q.published.read()),
                fill_ring_level: (r.backend == crate::engine::Backend::Xdp)
                    .then(|| worker::load(&c.fill_level)),
                latency: c.latency.summary(),
                napi_id: Some(q.napi_id.load(Relaxed))
                    .filter(|&id| id != crate::busy_poll::NAPI_ID_UNKNOWN),
            }
        })
        .collect();
    let up = r.started.elapsed();
    Snapshot {
        schema: SCHEMA_VERSION,
        pid: std::process::id(),
        iface: r.iface.name.clone(),
        backend: serde_json::to_value(r.backend)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        xdp_mode: mode,
        zero_copy: r.queues.iter().all(|q| q.zero_copy),
        wakeup: if r.options.busy_poll {
            "busy-poll"
        } else {
            "need_wakeup"
        }
        .into(),
        app: serde_json::to_value(r.options.app)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        ports: r.options.ports.clone(),
        uptime_secs: up.as_secs_f64(),
        started_unix: r.started_unix,
        taken_at_us: u64::try_from(up.as_micros()).unwrap_or(u64::MAX),
        xdp,
        queues,
        rss_bytes: crate::stats::rss_bytes(),
        simd_level: xrudp_packet::Kernel::detect().level().name().to_owned(),
        ring_size: if r.backend == crate::engine::Backend::Xdp {
            r.options.ring_size
        } else {
            0
        },
        merged: Some(merged(r)),
    }
}

/// The control socket's serving thread.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    path: PathBuf,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `path` and serves snapshots of `running` until [`Server::stop`].
    pub fn start(path: &Path, running: Arc<Running>) -> io::Result<Self> {
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("xrudp-control".into())
            .spawn(move || {
                while !s2.load(Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                            let snap = snapshot(&running);
                            if let Ok(json) = serde_json::to_vec(&snap) {
                                let _ = conn.write_all(&json);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "control socket accept failed");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })?;
        Ok(Self {
            stop,
            path: path.to_owned(),
            handle: Some(handle),
        })
    }

    /// Stops serving and removes the socket file.
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Asks the engine behind control socket `path` for a snapshot.
pub fn query(path: &Path) -> io::Result<Snapshot> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    serde_json::from_slice(&buf).map_err(io::Error::other)
}
