//! Fixed snapshots for the renderers' golden tests: one with every figure present (two
//! queues, protocol and latency figures, XDP counters, rates), one with every optional
//! figure absent (one queue of the socket backend, no earlier sample). The renderers'
//! outputs on them are kept in `testdata/`, so a refactor proves itself byte-identical.
//!
//! `XRUDP_BLESS=1 cargo test -p xrudp --lib stats` rewrites the files after an intended
//! change to the output; review the diff before committing it.

use std::{collections::BTreeMap, path::Path};

use xrudp_common::maps::Counter;

use super::Report;
use crate::telemetry::{
    Agones, Figures, Merged, QueueSnapshot, SCHEMA_VERSION, Snapshot, XdpStatistics,
    latency::{Bucket, Summary},
};

/// A report with every figure present: two queues, rates against an earlier sample.
pub(super) fn full() -> Report {
    let before = full_snapshot(2_000_000, 1);
    let after = full_snapshot(4_500_000, 3);
    Report::new("net-4026531840", Some(&before), after)
}

/// A report with every optional figure absent: one socket-backend queue, no rates.
pub(super) fn sparse() -> Report {
    let queue = QueueSnapshot {
        queue: 0,
        core: None,
        zero_copy: false,
        rx_packets: 12,
        rx_bytes: 700,
        tx_packets: 11,
        tx_bytes: 650,
        umem_frames: 0,
        frames_in_use: 0,
        frames_high_water: 0,
        xdp_statistics: None,
        cpu_secs: None,
        drop_malformed: 0,
        drop_checksum: 0,
        drop_unanswerable: 1,
        drop_tx_full: 0,
        protocol: None,
        fill_ring_level: None,
        latency: None,
        napi_id: None,
    };
    let after = Snapshot {
        schema: SCHEMA_VERSION,
        pid: 99,
        iface: "lo".into(),
        backend: "socket".into(),
        xdp_mode: String::new(),
        zero_copy: false,
        wakeup: "need_wakeup".into(),
        app: "echo".into(),
        ports: vec![9000],
        uptime_secs: 42.0,
        started_unix: 1_700_000_000,
        taken_at_us: 42_000_000,
        xdp: BTreeMap::new(),
        queues: vec![queue],
        rss_bytes: None,
        simd_level: String::new(),
        ring_size: 0,
        merged: None,
        agones: None,
    };
    Report::new("net-1", None, after)
}

/// Compares `actual` with `testdata/<name>`, or rewrites the file under `XRUDP_BLESS=1`.
pub(super) fn check_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/stats/testdata")
        .join(name);
    if std::env::var_os("XRUDP_BLESS").is_some() {
        std::fs::write(&path, actual).expect("writing the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).expect("reading the golden file");
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .map_or_else(|| "the line counts".into(), |i| format!("line {}", i + 1));
        panic!(
            "{} differs from the rendered output at {line}\n--- rendered ---\n{actual}",
            path.display()
        );
    }
}

/// `scale` multiplies the counters, so two snapshots give non-zero rates.
fn full_snapshot(taken_at_us: u64, scale: u64) -> Snapshot {
    let xdp = Counter::ALL
        .iter()
        .zip(1..)
        .map(|(c, i)| (c.label().to_owned(), i * 1000 * scale))
        .collect();
    Snapshot {
        schema: SCHEMA_VERSION,
        pid: 4242,
        // A quote and a backslash, so label escaping shows in the exposition.
        iface: "veth\"x\\0".into(),
        backend: "xdp".into(),
        xdp_mode: "native".into(),
        zero_copy: true,
        wakeup: "busy-poll".into(),
        app: "relay".into(),
        ports: vec![7777, 7778],
        uptime_secs: 7384.5,
        started_unix: 1_700_000_000,
        taken_at_us,
        xdp,
        queues: (0..2).map(|q| full_queue(q, scale)).collect(),
        rss_bytes: Some(5 * 1024 * 1024 + 123_456),
        simd_level: "avx2".into(),
        ring_size: 2048,
        merged: Some(Merged {
            latency: Some(latency(3_000 * scale, 0)),
            rtt_us: Some((1_250, 9_800)),
            cwnd: Some((12_000, 48_000, 96_000)),
        }),
        agones: Some(Agones {
            state: "Allocated".into(),
            ready: true,
            health_pings: 42 * scale,
            stalled_workers: Vec::new(),
            connections_reported: Some(2 * scale),
            draining: String::new(),
        }),
    }
}

fn full_queue(q: u32, scale: u64) -> QueueSnapshot {
    let k = u64::from(q) + 1;
    QueueSnapshot {
        queue: q,
        core: Some(q as usize),
        zero_copy: true,
        rx_packets: 1_500_000 * k * scale,
        rx_bytes: 96_000_000 * k * scale,
        tx_packets: 1_499_000 * k * scale,
        tx_bytes: 95_900_000 * k * scale,
        umem_frames: 4096,
        frames_in_use: 1500 + k,
        frames_high_water: 3000 + k,
        xdp_statistics: Some(XdpStatistics {
            rx_dropped: k,
            rx_invalid_descs: 2 * k,
            tx_invalid_descs: 3 * k,
            rx_ring_full: 4 * k,
            rx_fill_ring_empty_descs: 5 * k,
            tx_ring_empty_descs: 6 * k,
        }),
        cpu_secs: Some(12.25 * k as f64 * scale as f64),
        drop_malformed: 7 * k,
        drop_checksum: 8 * k,
        drop_unanswerable: 9 * k,
        drop_tx_full: 10 * k,
        protocol: Some(figures(k, scale)),
        fill_ring_level: Some(1024 + k),
        latency: Some(latency(1_500 * k * scale, k)),
        napi_id: Some(8192 + q),
    }
}

fn figures(k: u64, scale: u64) -> Figures {
    let mut rejected = BTreeMap::new();
    rejected.insert("full".to_owned(), 3 * k);
    rejected.insert("rate \"limited\"".to_owned(), k);
    Figures {
        connections: 50 * k,
        accepted: 60 * k * scale,
        handshakes: 70 * k * scale,
        bad_cookies: 2 * k,
        auth_failed: 5 * k,
        replayed: 6 * k,
        token_reused: 7 * k,
        migrated: 8 * k,
        path_challenges: 9 * k,
        pmtu_probes: 10 * k,
        pmtu_black_holes: 2 * k,
        rejected,
        version_mismatches: k,
        timed_out: 4 * k,
        violations: k,
        packets_in: 1_400_000 * k * scale,
        packets_out: 1_450_000 * k * scale,
        retransmitted_packets: 2_900 * k * scale,
        lost_packets: 1_450 * k * scale,
        messages_in: 2_000_000 * k * scale,
        messages_out: 2_100_000 * k * scale,
        crc_failures: 5 * k,
        decode_errors: 9 * k,
        unknown_connection: 3 * k,
        backpressure_rounds: 0,
        sends_deferred: 0,
        relayed: 1_000 * k,
        relay_members: 40 * k,
        hellos_shed: 11 * k,
        session_updates_failed: 13 * k,
        rtt_us: Some((1_000 + k, 9_000 + k)),
        cwnd: Some((12_000 * k, 48_000 * k, 96_000 * k)),
        memory: 1_048_576 * k,
    }
}

fn latency(count: u64, k: u64) -> Summary {
    Summary {
        count,
        sum_ns: count * 2_500,
        p50_ns: 2_100 + k,
        p99_ns: 48_000 + k,
        p999_ns: 250_000 + k,
        max_ns: 1_200_000,
        buckets: [(0.000_001, 0), (0.000_01, count / 2), (0.000_1, count - 3)]
            .into_iter()
            .map(|(le_seconds, count)| Bucket { le_seconds, count })
            .collect(),
    }
}
