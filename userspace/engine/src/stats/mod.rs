//! `xrudp stats`: rates from two snapshots of a running engine, the table people read,
//! the JSON document scripts read (docs/stats.schema.json), and the Prometheus
//! exposition `attach --metrics-addr` serves (docs/STATS.md lists every figure).
//!
//! The engine's workers only bump their own cache-padded counters and, every 100 ms,
//! publish their protocol figures and latency histogram with a `try_lock`; everything
//! here runs on other threads or in another process.
#![expect(
    clippy::cast_precision_loss,
    reason = "counters far below 2^52 keep their precision as f64 rates and ratios"
)]

pub mod connections;
#[cfg(test)]
mod fixture;
pub mod prometheus;
pub mod table;

use std::{collections::BTreeMap, io::IsTerminal as _, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{
    control, runtime,
    telemetry::{Figures, QueueSnapshot, Snapshot, XdpStatistics},
};

/// Version of the `xrudp stats --json` document (docs/stats.schema.json).
pub const REPORT_SCHEMA_VERSION: u32 = 2;

/// One engine's figures: the latest snapshot, its totals over queues, and per-second
/// rates against the previous snapshot of the same engine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Report schema version ([`REPORT_SCHEMA_VERSION`]).
    pub report_schema: u32,
    /// The engine's network namespace directory under /run/xrudp (`net-<inode>`).
    pub netns: String,
    /// Seconds between the two snapshots the rates come from (`null` without rates).
    pub interval_secs: Option<f64>,
    /// Sums (and, where stated, maxima) over the queues of the latest snapshot.
    pub totals: Totals,
    /// Per-second rates over all queues (`null` when there is no earlier snapshot of
    /// the same engine process).
    pub rates: Option<Rates>,
    /// Per-queue rates, in the snapshot's queue order.
    pub queue_rates: Vec<QueueRates>,
    /// The latest snapshot as the engine served it.
    pub snapshot: Snapshot,
}

/// Figures summed over the queues.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Datagrams received by the workers.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Datagrams transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// UMEM frames.
    pub umem_frames: u64,
    /// UMEM frames out of the pools.
    pub frames_in_use: u64,
    /// Sum of the queues' high-water marks.
    pub frames_high_water: u64,
    /// Descriptors on the fill rings (`null` when no queue publishes it).
    pub fill_ring_level: Option<u64>,
    /// Frames dropped as not Ethernet/IP/UDP.
    pub drop_malformed: u64,
    /// Datagrams dropped for a bad UDP checksum.
    pub drop_checksum: u64,
    /// Datagrams that could not be answered.
    pub drop_unanswerable: u64,
    /// Replies dropped because the TX ring (or frame pool) stayed full.
    pub drop_tx_full: u64,
    /// The kernel's XDP_STATISTICS summed over sockets (`null` on the socket backend).
    pub xdp_statistics: Option<XdpStatistics>,
    /// Worker CPU time, seconds.
    pub cpu_secs: Option<f64>,
    /// Protocol figures (protocol apps only).
    pub protocol: Option<ProtocolTotals>,
    /// Processing latency over every queue's packets (merged histograms).
    pub latency: Option<LatencyTotals>,
}

/// Protocol figures summed over the workers.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ProtocolTotals {
    /// Established connections.
    pub connections: u64,
    /// Hellos answered with a stateless cookie.
    pub handshakes: u64,
    /// Connections admitted.
    pub accepted: u64,
    /// Admissions refused, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Admissions refused, all reasons.
    pub rejected_total: u64,
    /// Responses with a forged, stale or misaddressed cookie.
    pub bad_cookies: u64,
    /// Protected packets that failed authentication.
    pub auth_failed: u64,
    /// Protected packets dropped as replays.
    pub replayed: u64,
    /// Connect tokens refused as in use from another address.
    pub token_reused: u64,
    /// Connections moved to a new client address after path validation.
    pub migrated: u64,
    /// PATH_CHALLENGE packets sent to unvalidated client addresses.
    pub path_challenges: u64,
    /// Path MTU probes sent.
    pub pmtu_probes: u64,
    /// Path MTU black holes detected (connections that fell back to 1200 bytes).
    pub pmtu_black_holes: u64,
    /// Connections closed by the idle timeout.
    pub timed_out: u64,
    /// Connections closed for protocol violations.
    pub violations: u64,
    /// Protocol packets accepted.
    pub packets_in: u64,
    /// Protocol packets sent.
    pub packets_out: u64,
    /// Packets sent again.
    pub retransmitted_packets: u64,
    /// Packets declared lost (through acks or timeouts).
    pub lost_packets: u64,
    /// `retransmitted_packets / packets_out` (`null` before any packet is sent).
    pub retransmission_ratio: Option<f64>,
    /// `lost_packets / packets_out` (`null` before any packet is sent).
    pub loss_rate: Option<f64>,
    /// Messages delivered to the application.
    pub messages_in: u64,
    /// Messages queued by the application.
    pub messages_out: u64,
    /// Datagrams dropped for a bad CRC32C.
    pub crc_failures: u64,
    /// Undecodable datagrams (CRC failures included).
    pub decode_errors: u64,
    /// Datagrams for no known connection (dropped).
    #[serde(default)]
    pub unknown_connection: u64,
    /// Hellos of a version this server does not speak (answered with the versions it
    /// does, then dropped).
    #[serde(default)]
    pub version_mismatches: u64,
    /// First hellos shed by the per-worker hello budget (`--hello-rate`).
    #[serde(default)]
    pub hellos_shed: u64,
    /// Admission control: updates of the XDP session allow-list the kernel refused.
    #[serde(default)]
    pub session_updates_failed: u64,
    /// Median smoothed RTT over all connections, microseconds.
    pub rtt_p50_us: Option<u64>,
    /// 99th percentile smoothed RTT over all connections, microseconds.
    pub rtt_p99_us: Option<u64>,
    /// Smallest congestion window, bytes.
    pub cwnd_min: Option<u64>,
    /// Median congestion window over all connections, bytes.
    pub cwnd_median: Option<u64>,
    /// Largest congestion window, bytes.
    pub cwnd_max: Option<u64>,
    /// Bytes of connection state.
    pub memory: u64,
}

/// Processing latency over the queues.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct LatencyTotals {
    /// Packets recorded.
    pub count: u64,
    /// Median over all queues' packets, nanoseconds.
    pub p50_ns: u64,
    /// 99th percentile over all queues' packets, nanoseconds.
    pub p99_ns: u64,
    /// 99.9th percentile over all queues' packets, nanoseconds.
    pub p999_ns: u64,
}

/// Per-second rates between two snapshots.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Rates {
    /// Datagrams received per second.
    pub rx_packets: f64,
    /// Bytes received per second.
    pub rx_bytes: f64,
    /// Datagrams transmitted per second.
    pub tx_packets: f64,
    /// Bytes transmitted per second.
    pub tx_bytes: f64,
    /// Protocol packets accepted per second.
    pub packets_in: f64,
    /// Protocol packets sent per second.
    pub packets_out: f64,
    /// Messages delivered to the application per second.
    pub messages_in: f64,
    /// Messages queued by the application per second.
    pub messages_out: f64,
    /// Packets retransmitted per second.
    pub retransmitted_packets: f64,
    /// Worker CPU, percent of one core (summed over workers in totals).
    pub cpu_percent: Option<f64>,
}

/// One queue's rates.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct QueueRates {
    /// Queue index.
    pub queue: u32,
    /// Rates (`null` without an earlier snapshot).
    pub rates: Option<Rates>,
}

impl Report {
    /// A report on `after`, with rates against `before` when it is an earlier snapshot
    /// of the same engine process.
    #[must_use]
    pub fn new(netns: &str, before: Option<&Snapshot>, after: Snapshot) -> Self {
        let before = before.filter(|b| {
            b.pid == after.pid
                && b.started_unix == after.started_unix
                && b.taken_at_us < after.taken_at_us
        });
        let secs = before.map(|b| (after.taken_at_us - b.taken_at_us) as f64 / 1e6);
        let queue_rates = after
            .queues
            .iter()
            .map(|q| QueueRates {
                queue: q.queue,
                rates: before.zip(secs).and_then(|(b, secs)| {
                    b.queues
                        .iter()
                        .find(|p| p.queue == q.queue)
                        .map(|p| queue_rates(p, q, secs))
                }),
            })
            .collect::<Vec<_>>();
        let rates = before.map(|_| {
            let mut total = Rates::default();
            let mut cpu = None;
            for r in queue_rates.iter().filter_map(|q| q.rates.as_ref()) {
                total.rx_packets += r.rx_packets;
                total.rx_bytes += r.rx_bytes;
                total.tx_packets += r.tx_packets;
                total.tx_bytes += r.tx_bytes;
                total.packets_in += r.packets_in;
                total.packets_out += r.packets_out;
                total.messages_in += r.messages_in;
                total.messages_out += r.messages_out;
                total.retransmitted_packets += r.retransmitted_packets;
                if let Some(c) = r.cpu_percent {
                    cpu = Some(cpu.unwrap_or(0.0) + c);
                }
            }
            total.cpu_percent = cpu;
            total
        });
        Self {
            report_schema: REPORT_SCHEMA_VERSION,
            netns: netns.to_owned(),
            interval_secs: secs,
            totals: totals(&after),
            rates,
            queue_rates,
            snapshot: after,
        }
    }
}

fn per_sec(before: u64, after: u64, secs: f64) -> f64 {
    after.saturating_sub(before) as f64 / secs
}

fn queue_rates(b: &QueueSnapshot, a: &QueueSnapshot, secs: f64) -> Rates {
    let proto = |f: fn(&Figures) -> u64| match (&b.protocol, &a.protocol) {
        (Some(pb), Some(pa)) => per_sec(f(pb), f(pa), secs),
        _ => 0.0,
    };
    Rates {
        rx_packets: per_sec(b.rx_packets, a.rx_packets, secs),
        rx_bytes: per_sec(b.rx_bytes, a.rx_bytes, secs),
        tx_packets: per_sec(b.tx_packets, a.tx_packets, secs),
        tx_bytes: per_sec(b.tx_bytes, a.tx_bytes, secs),
        packets_in: proto(|f| f.packets_in),
        packets_out: proto(|f| f.packets_out),
        messages_in: proto(|f| f.messages_in),
        messages_out: proto(|f| f.messages_out),
        retransmitted_packets: proto(|f| f.retransmitted_packets),
        cpu_percent: b
            .cpu_secs
            .zip(a.cpu_secs)
            .map(|(cb, ca)| (ca - cb).max(0.0) / secs * 100.0),
    }
}

/// Totals over the queues of one snapshot.
#[must_use]
pub fn totals(s: &Snapshot) -> Totals {
    let mut t = Totals::default();
    let mut protocol: Option<ProtocolTotals> = None;
    let mut cwnd_medians = Vec::new();
    for q in &s.queues {
        t.rx_packets += q.rx_packets;
        t.rx_bytes += q.rx_bytes;
        t.tx_packets += q.tx_packets;
        t.tx_bytes += q.tx_bytes;
        t.umem_frames += u64::from(q.umem_frames);
        t.frames_in_use += q.frames_in_use;
        t.frames_high_water += q.frames_high_water;
        if let Some(l) = q.fill_ring_level {
            t.fill_ring_level = Some(t.fill_ring_level.unwrap_or(0) + l);
        }
        t.drop_malformed += q.drop_malformed;
        t.drop_checksum += q.drop_checksum;
        t.drop_unanswerable += q.drop_unanswerable;
        t.drop_tx_full += q.drop_tx_full;
        if let Some(x) = &q.xdp_statistics {
            let sum = t.xdp_statistics.get_or_insert_with(XdpStatistics::default);
            sum.rx_dropped += x.rx_dropped;
            sum.rx_invalid_descs += x.rx_invalid_descs;
            sum.tx_invalid_descs += x.tx_invalid_descs;
            sum.rx_ring_full += x.rx_ring_full;
            sum.rx_fill_ring_empty_descs += x.rx_fill_ring_empty_descs;
            sum.tx_ring_empty_descs += x.tx_ring_empty_descs;
        }
        if let Some(c) = q.cpu_secs {
            t.cpu_secs = Some(t.cpu_secs.unwrap_or(0.0) + c);
        }
        if let Some(l) = &q.latency {
            let lt = t.latency.get_or_insert_with(LatencyTotals::default);
            lt.count += l.count;
            lt.p50_ns = lt.p50_ns.max(l.p50_ns);
            lt.p99_ns = lt.p99_ns.max(l.p99_ns);
            lt.p999_ns = lt.p999_ns.max(l.p999_ns);
        }
        if let Some(f) = &q.protocol {
            let p = protocol.get_or_insert_with(ProtocolTotals::default);
            add_figures(p, f);
            if let Some((_, mid, _)) = f.cwnd {
                cwnd_medians.push(mid);
            }
        }
    }
    if let Some(p) = &mut protocol {
        if p.packets_out > 0 {
            p.retransmission_ratio = Some(p.retransmitted_packets as f64 / p.packets_out as f64);
            p.loss_rate = Some(p.lost_packets as f64 / p.packets_out as f64);
        }
        cwnd_medians.sort_unstable();
        p.cwnd_median = cwnd_medians.get(cwnd_medians.len() / 2).copied();
        p.rejected_total = p.rejected.values().sum();
    }
    // Percentiles over every queue at once, as the engine publishes them; the per-queue
    // maxima above stand in only for a snapshot without them.
    if let Some(m) = &s.merged {
        if let (Some(l), Some(lt)) = (&m.latency, &mut t.latency) {
            lt.p50_ns = l.p50_ns;
            lt.p99_ns = l.p99_ns;
            lt.p999_ns = l.p999_ns;
        }
        if let Some(p) = &mut protocol {
            p.rtt_p50_us = m.rtt_us.map(|r| r.0);
            p.rtt_p99_us = m.rtt_us.map(|r| r.1);
            if let Some((lo, mid, hi)) = m.cwnd {
                (p.cwnd_min, p.cwnd_median, p.cwnd_max) = (Some(lo), Some(mid), Some(hi));
            }
        }
    }
    t.protocol = protocol;
    t
}

fn add_figures(p: &mut ProtocolTotals, f: &Figures) {
    p.connections += f.connections;
    p.handshakes += f.handshakes;
    p.accepted += f.accepted;
    for (k, v) in &f.rejected {
        *p.rejected.entry(k.clone()).or_default() += v;
    }
    p.bad_cookies += f.bad_cookies;
    p.auth_failed += f.auth_failed;
    p.replayed += f.replayed;
    p.token_reused += f.token_reused;
    p.migrated += f.migrated;
    p.path_challenges += f.path_challenges;
    p.pmtu_probes += f.pmtu_probes;
    p.pmtu_black_holes += f.pmtu_black_holes;
    p.timed_out += f.timed_out;
    p.violations += f.violations;
    p.packets_in += f.packets_in;
    p.packets_out += f.packets_out;
    p.retransmitted_packets += f.retransmitted_packets;
    p.lost_packets += f.lost_packets;
    p.messages_in += f.messages_in;
    p.messages_out += f.messages_out;
    p.crc_failures += f.crc_failures;
    p.decode_errors += f.decode_errors;
    p.unknown_connection += f.unknown_connection;
    p.version_mismatches += f.version_mismatches;
    p.hellos_shed += f.hellos_shed;
    p.session_updates_failed += f.session_updates_failed;
    p.memory += f.memory;
    if let Some((p50, p99)) = f.rtt_us {
        p.rtt_p50_us = Some(p.rtt_p50_us.map_or(p50, |v| v.max(p50)));
        p.rtt_p99_us = Some(p.rtt_p99_us.map_or(p99, |v| v.max(p99)));
    }
    if let Some((lo, _, hi)) = f.cwnd {
        p.cwnd_min = Some(p.cwnd_min.map_or(lo, |v| v.min(lo)));
        p.cwnd_max = Some(p.cwnd_max.map_or(hi, |v| v.max(hi)));
    }
}

/// Control sockets of the running engines (all, or the one on `iface`):
/// `(netns dir, iface, path)`. Fails with a message saying so when there is none.
pub fn engines(iface: Option<&str>) -> anyhow::Result<Vec<(String, String, PathBuf)>> {
    let engines: Vec<_> = runtime::all_engines()
        .into_iter()
        .filter(|(_, i, _)| iface.is_none_or(|want| want == i))
        .collect();
    if engines.is_empty() {
        match iface {
            Some(i) => bail!(
                "no running xrudp engine on {i} (start one with `xrudp attach --iface {i} --port PORT`)"
            ),
            None => bail!(
                "no running xrudp engine found under {}",
                runtime::base_dir().display()
            ),
        }
    }
    Ok(engines)
}

/// One snapshot of every running engine (all, or the one on `iface`), keyed by
/// `(netns dir, iface)`. Fails when none answers.
pub fn sample(iface: Option<&str>) -> anyhow::Result<BTreeMap<(String, String), Snapshot>> {
    let mut out = BTreeMap::new();
    for (ns, i, path) in engines(iface)? {
        match control::query(&path) {
            Ok(snap) => {
                out.insert((ns, i), snap);
            }
            Err(e) => tracing::warn!(iface = %i, netns = %ns, error = %e, "engine did not answer"),
        }
    }
    if out.is_empty() {
        bail!(
            "no running xrudp engine answered (stale runtime files under {}?)",
            runtime::base_dir().display()
        );
    }
    Ok(out)
}

/// `xrudp stats`: with `watch = None`, two samples one second apart and one table (or
/// JSON document); with `watch = Some(secs)`, a new table every `secs` seconds (redrawn
/// in place on a terminal; one JSON document per line with `json`) until interrupted
/// or until the engines are gone.
pub fn run(iface: Option<&str>, json: bool, watch: Option<f64>) -> anyhow::Result<()> {
    let interval = match watch {
        None => Duration::from_secs(1),
        Some(s) if s.is_finite() && (0.1..=3600.0).contains(&s) => Duration::from_secs_f64(s),
        Some(s) => bail!("--watch {s} is out of range: give seconds in [0.1, 3600]"),
    };
    let terminal = std::io::stdout().is_terminal();
    let mut prev = sample(iface)?;
    loop {
        std::thread::sleep(interval);
        let now = sample(iface)?;
        let reports: Vec<Report> = now
            .iter()
            .map(|(key, snap)| Report::new(&key.0, prev.get(key), snap.clone()))
            .collect();
        let mut out = std::io::stdout().lock();
        let written = write_reports(&mut out, &reports, json, watch.is_some(), terminal);
        match written {
            // A closed pipe (`xrudp stats | head`) is the reader's choice, not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            r => r.context("writing to stdout")?,
        }
        if watch.is_none() {
            return Ok(());
        }
        prev = now;
    }
}

fn write_reports(
    out: &mut impl std::io::Write,
    reports: &[Report],
    json: bool,
    watching: bool,
    terminal: bool,
) -> std::io::Result<()> {
    write_documents(out, reports, json, watching, terminal, table::render)
}

/// Writes one refresh of `items`: a JSON array (pretty, or on one line when watching),
/// or a table per item drawn by `render` (redrawn in place when watching a terminal).
pub(crate) fn write_documents<W: std::io::Write, T: Serialize>(
    out: &mut W,
    items: &[T],
    json: bool,
    watching: bool,
    terminal: bool,
    render: impl Fn(&mut W, &T) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if json {
        if watching {
            serde_json::to_writer(&mut *out, items).map_err(std::io::Error::other)?;
        } else {
            serde_json::to_writer_pretty(&mut *out, items).map_err(std::io::Error::other)?;
        }
        writeln!(out)?;
    } else {
        if watching && terminal {
            // Cursor home and clear: redraw in place.
            write!(out, "\x1b[H\x1b[2J")?;
        }
        for item in items {
            render(out, item)?;
        }
        if watching && !terminal {
            writeln!(out)?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(q: u32, rx: u64, msgs: u64, cpu: f64) -> QueueSnapshot {
        QueueSnapshot {
            queue: q,
            core: Some(1),
            zero_copy: false,
            rx_packets: rx,
            rx_bytes: rx * 100,
            tx_packets: rx,
            tx_bytes: rx * 100,
            umem_frames: 2048,
            frames_in_use: 1024,
            frames_high_water: 1100,
            xdp_statistics: Some(XdpStatistics {
                rx_ring_full: 1,
                ..XdpStatistics::default()
            }),
            cpu_secs: Some(cpu),
            drop_malformed: 0,
            drop_checksum: 2,
            drop_unanswerable: 0,
            drop_tx_full: 0,
            protocol: Some(Figures {
                connections: 3,
                accepted: 4,
                messages_in: msgs,
                messages_out: msgs,
                packets_out: 200,
                retransmitted_packets: 5,
                lost_packets: 4,
                rtt_us: Some((100 + u64::from(q), 300)),
                cwnd: Some((1000, 2000 + u64::from(q), 9000)),
                ..Figures::default()
            }),
            fill_ring_level: Some(1000),
            latency: None,
            napi_id: None,
        }
    }

    fn snap(at_us: u64, queues: Vec<QueueSnapshot>) -> Snapshot {
        Snapshot {
            schema: crate::telemetry::SCHEMA_VERSION,
            pid: 7,
            iface: "eth0".into(),
            backend: "xdp".into(),
            xdp_mode: "native".into(),
            zero_copy: false,
            wakeup: "need_wakeup".into(),
            app: "echo".into(),
            ports: vec![7777],
            uptime_secs: at_us as f64 / 1e6,
            started_unix: 1,
            taken_at_us: at_us,
            xdp: BTreeMap::new(),
            queues,
            rss_bytes: Some(1 << 20),
            simd_level: "scalar".into(),
            ring_size: 1024,
            merged: None,
            agones: None,
        }
    }

    #[test]
    fn merged_percentiles_replace_the_worst_queue_figures() {
        let mut a = snap(1_000_000, vec![queue(0, 100, 10, 1.0), queue(1, 0, 0, 2.0)]);
        for q in &mut a.queues {
            q.latency = Some(crate::telemetry::latency::Summary {
                count: 10,
                sum_ns: 1_000,
                p50_ns: 100 * u64::from(q.queue + 1),
                p99_ns: 900,
                p999_ns: 990,
                max_ns: 999,
                buckets: Vec::new(),
            });
        }
        let worst = totals(&a);
        assert_eq!(
            worst.latency.as_ref().map(|l| (l.count, l.p50_ns)),
            Some((20, 200))
        );
        a.merged = Some(crate::telemetry::Merged {
            latency: a.queues[0].latency.clone(),
            rtt_us: Some((55, 66)),
            cwnd: Some((1, 2, 3)),
        });
        let t = totals(&a);
        let l = t.latency.expect("latency");
        assert_eq!(
            (l.count, l.p50_ns, l.p99_ns, l.p999_ns),
            (20, 100, 900, 990)
        );
        let p = t.protocol.expect("protocol");
        assert_eq!((p.rtt_p50_us, p.rtt_p99_us), (Some(55), Some(66)));
        assert_eq!(
            (p.cwnd_min, p.cwnd_median, p.cwnd_max),
            (Some(1), Some(2), Some(3))
        );
    }

    #[test]
    #[expect(
        clippy::many_single_char_names,
        reason = "snapshots a, b, c in time order"
    )]
    fn rates_and_totals_from_two_snapshots() {
        let a = snap(1_000_000, vec![queue(0, 100, 10, 1.0), queue(1, 0, 0, 2.0)]);
        let b = snap(
            3_000_000,
            vec![queue(0, 500, 210, 1.5), queue(1, 40, 40, 2.0)],
        );
        let r = Report::new("net-1", Some(&a), b.clone());
        assert_eq!(r.interval_secs, Some(2.0));
        let q0 = r.queue_rates[0].rates.as_ref().expect("rates");
        assert!((q0.rx_packets - 200.0).abs() < 1e-9);
        assert!((q0.messages_in - 100.0).abs() < 1e-9);
        assert!((q0.cpu_percent.expect("cpu") - 25.0).abs() < 1e-9);
        let t = r.rates.as_ref().expect("rates");
        assert!((t.rx_packets - 220.0).abs() < 1e-9);
        assert!((t.rx_bytes - 22_000.0).abs() < 1e-9);
        assert!((t.messages_out - 120.0).abs() < 1e-9);
        assert_eq!(r.totals.rx_packets, 540);
        assert_eq!(r.totals.drop_checksum, 4);
        assert_eq!(r.totals.fill_ring_level, Some(2000));
        assert_eq!(r.totals.xdp_statistics.map(|x| x.rx_ring_full), Some(2));
        let p = r.totals.protocol.as_ref().expect("protocol");
        assert_eq!((p.connections, p.accepted, p.messages_in), (6, 8, 250));
        assert_eq!(p.retransmission_ratio, Some(10.0 / 400.0));
        assert_eq!(p.loss_rate, Some(8.0 / 400.0));
        assert_eq!((p.rtt_p50_us, p.rtt_p99_us), (Some(101), Some(300)));
        assert_eq!((p.cwnd_min, p.cwnd_max), (Some(1000), Some(9000)));
        // The same figures again: every rate is zero.
        let c = snap(4_000_000, b.queues.clone());
        let idle = Report::new("net-1", Some(&b), c);
        assert_eq!(
            idle.rates.map(|x| (x.rx_packets, x.messages_in)),
            Some((0.0, 0.0))
        );
    }

    #[test]
    fn no_rates_across_engine_restarts_or_without_history() {
        let a = snap(5_000_000, vec![queue(0, 100, 10, 1.0)]);
        let mut b = snap(1_000_000, vec![queue(0, 5, 1, 0.1)]);
        b.pid = 8;
        assert!(Report::new("n", Some(&a), b.clone()).rates.is_none());
        assert!(Report::new("n", None, b).rates.is_none());
    }
}
