//! The loss × RTT matrix of the whole protocol, per congestion controller, kept as a
//! snapshot so that any change in behaviour shows as a diff (docs/PROTOCOL.md §9).
//!
//! Workload: the server streams 1,000-byte reliable ordered messages to the client over a
//! 2 Mbit/s bottleneck (queue: one BDP, at least ten datagrams), keeping its send buffer at
//! the congestion window plus 4 KiB, so that message latency (queued → delivered) measures
//! the network, the recovery and the controller rather than an application backlog.
//! Measured over simulated seconds 2–20 of each run:
//! - `goodput_pct`: delivered message bytes as a share of the bottleneck rate;
//! - `p99_ms`: 99th percentile message latency;
//! - `retx_permille`: data packets carrying a retransmission, per thousand packets sent.
//!
//! Run with `XRUDP_SNAPSHOT=print` to print the new table. The snapshot is one seed per
//! cell; BBR's targets against AIMD are asserted on the median of nine seeds
//! ([`bbr_meets_its_targets_on_the_median_of_nine_seeds`], which prints its table with
//! `--nocapture`).
#![expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    reason = "figures in this test are far below 2^52"
)]

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use xrudp_proto::sim::Pair;
use xrudp_proto::sim::network::Model;
use xrudp_proto::{Algorithm, ClientConfig, ClientEvent, ServerConfig, ServerEvent};

const RATE: u64 = 250_000;
const MSG: usize = 1_000;
const WARMUP: Duration = Duration::from_secs(2);
const RUN: Duration = Duration::from_secs(20);

struct Cell {
    goodput_pct: f64,
    p99_ms: f64,
    retx_permille: f64,
}

fn run(algorithm: Algorithm, loss_permille: u32, rtt_ms: u64) -> Cell {
    run_seeded(algorithm, loss_permille, rtt_ms, 7)
}

/// One cell with the network's and the pair's random streams seeded by `seed`.
fn run_seeded(algorithm: Algorithm, loss_permille: u32, rtt_ms: u64, seed: u64) -> Cell {
    let bdp = (RATE * rtt_ms / 1_000) as usize;
    let model = Model {
        delay: Duration::from_micros(rtt_ms * 500),
        loss: f64::from(loss_permille) / 1_000.0,
        bandwidth: Some(RATE),
        queue_bytes: bdp.max(10 * 1_200),
        seed,
        ..Model::default()
    };
    let mut server = ServerConfig::default();
    server.transport.congestion = algorithm;
    let mut client = ClientConfig::default();
    client.transport.congestion = algorithm;
    let mut p = Pair::new(server, client, model, seed);
    p.keep_messages = true;
    assert!(p.run_while(
        Duration::from_secs(10),
        xrudp_proto::sim::Cluster::all_connected
    ));
    let handle = p
        .server_events
        .iter()
        .find_map(|e| match e {
            ServerEvent::Connected { handle, .. } => Some(*handle),
            _ => None,
        })
        .expect("connected");
    let start = p.now;
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut latencies: Vec<Duration> = Vec::new();
    let mut delivered_bytes = 0usize;
    let (mut out0, mut retx0) = (0, 0);
    let mut measuring = false;
    let mut payload = vec![0u8; MSG];
    while p.now < start + RUN {
        if !measuring && p.now >= start + WARMUP {
            measuring = true;
            out0 = p.server.stats().packets_out;
            retx0 = p.server.stats().retransmitted_packets;
        }
        // Keep the congestion window plus 4 KiB queued.
        loop {
            let s = p.server.connection_stats(handle).expect("open");
            if s.send_buffered as u64 >= s.cwnd + 4_096 {
                break;
            }
            let id = sent_at.len() as u32;
            payload[..4].copy_from_slice(&id.to_be_bytes());
            p.server
                .send(handle, 0, &payload)
                .expect("room in the send buffer");
            sent_at.push(p.now);
        }
        p.step();
        let now = p.now;
        for e in p.client_events.get_mut(0).expect("one client").drain(..) {
            if let ClientEvent::Message { data, .. } = e {
                let id = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
                if measuring {
                    latencies.push(now - sent_at[id]);
                    delivered_bytes += data.len();
                }
            }
        }
    }
    latencies.sort_unstable();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    let out = p.server.stats().packets_out - out0;
    let retx = p.server.stats().retransmitted_packets - retx0;
    let secs = RUN.as_secs_f64() - WARMUP.as_secs_f64();
    Cell {
        goodput_pct: delivered_bytes as f64 / secs / RATE as f64 * 100.0,
        p99_ms: p99.as_secs_f64() * 1_000.0,
        retx_permille: retx as f64 * 1_000.0 / out.max(1) as f64,
    }
}

#[test]
fn protocol_matrix_matches_the_snapshot() {
    const SNAPSHOT: &str = "\
algorithm rtt_ms loss_pct goodput_pct p99_ms retx_permille
aimd 1 0 96 179 71.0
aimd 1 0.1 96 213 73.4
aimd 1 1 95 171 81.7
aimd 1 5 91 187 89.4
aimd 1 10 85 162 107.7
aimd 20 0 96 274 49.3
aimd 20 0.1 96 274 49.7
aimd 20 1 95 236 49.5
aimd 20 5 90 203 58.0
aimd 20 10 78 161 98.7
aimd 100 0 95 420 12.5
aimd 100 0.1 95 420 12.4
aimd 100 1 90 362 14.2
aimd 100 5 43 303 51.8
aimd 100 10 28 416 92.7
newreno 1 0 96 112 15.3
newreno 1 0.1 96 112 15.7
newreno 1 1 95 116 22.7
newreno 1 5 85 123 55.2
newreno 1 10 65 213 115.0
newreno 20 0 96 140 15.1
newreno 20 0.1 96 140 15.1
newreno 20 1 91 140 15.1
newreno 20 5 56 172 53.6
newreno 20 10 36 232 108.8
newreno 100 0 94 359 2.4
newreno 100 0.1 94 359 2.3
newreno 100 1 41 287 11.2
newreno 100 5 18 572 48.5
newreno 100 10 10 703 103.3
cubic 1 0 96 112 12.6
cubic 1 0.1 96 112 12.6
cubic 1 1 95 112 20.9
cubic 1 5 90 112 51.0
cubic 1 10 74 128 106.2
cubic 20 0 96 149 6.7
cubic 20 0.1 96 149 6.7
cubic 20 1 94 140 14.6
cubic 20 5 67 142 54.0
cubic 20 10 42 187 102.5
cubic 100 0 96 343 1.2
cubic 100 0.1 96 343 1.2
cubic 100 1 47 279 12.2
cubic 100 5 22 462 48.6
cubic 100 10 12 767 105.3
bbr 1 0 96 37 0.0
bbr 1 0.1 96 37 0.0
bbr 1 1 95 50 10.0
bbr 1 5 86 85 53.7
bbr 1 10 78 96 104.3
bbr 20 0 95 61 0.0
bbr 20 0.1 95 61 0.0
bbr 20 1 91 89 10.7
bbr 20 5 58 121 52.8
bbr 20 10 45 186 98.7
bbr 100 0 95 138 0.0
bbr 100 0.1 95 138 0.0
bbr 100 1 92 234 10.5
bbr 100 5 74 288 48.9
bbr 100 10 43 416 97.9";
    let mut table = String::from("algorithm rtt_ms loss_pct goodput_pct p99_ms retx_permille\n");
    for algorithm in Algorithm::ALL {
        for rtt_ms in [1u64, 20, 100] {
            for loss_permille in [0u32, 1, 10, 50, 100] {
                let c = run(algorithm, loss_permille, rtt_ms);
                writeln!(
                    table,
                    "{algorithm} {rtt_ms} {} {:.0} {:.0} {:.1}",
                    f64::from(loss_permille) / 10.0,
                    c.goodput_pct,
                    c.p99_ms,
                    c.retx_permille
                )
                .expect("writing to a String");
            }
        }
    }
    if std::env::var("XRUDP_SNAPSHOT").is_ok_and(|v| v == "print") {
        println!("{table}");
    }
    assert_eq!(
        table.trim(),
        SNAPSHOT.trim(),
        "the matrix changed; if intended, update SNAPSHOT"
    );
}

/// The seeds of [`bbr_meets_its_targets_on_the_median_of_nine_seeds`]; 7 is the
/// snapshot's.
const SEEDS: [u64; 9] = [7, 8, 9, 10, 11, 12, 13, 14, 15];

/// The median, lowest and highest of `v`.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_unstable_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Issue 16's targets for BBR against AIMD, on the median of nine seeds per cell
/// (docs/PROTOCOL.md §9.1). One seed's p99 is one run's 99th percentile: across seeds it
/// moves by up to a fifth in the lossy cells (BBR ranges from 137 to 186 ms at 20 ms
/// and 10 % loss), more than the gaps the targets are about. Asserted per cell, on the
/// medians: BBR's p99 no worse than AIMD's; at 0 % loss, at most 5 ‰ retransmitted and
/// at least 95 % goodput; at 1 % loss and 100 ms, at least 90 % goodput.
#[test]
fn bbr_meets_its_targets_on_the_median_of_nine_seeds() {
    let mut table = String::from(
        "rtt_ms loss_pct aimd_goodput_pct aimd_p99_ms(min-max) bbr_goodput_pct bbr_p99_ms(min-max) bbr_retx_permille\n",
    );
    let mut misses = Vec::new();
    for rtt_ms in [1u64, 20, 100] {
        for loss_permille in [0u32, 1, 10, 50, 100] {
            let spreads = |algorithm| {
                let cells: Vec<Cell> = SEEDS
                    .iter()
                    .map(|&seed| run_seeded(algorithm, loss_permille, rtt_ms, seed))
                    .collect();
                (
                    spread(cells.iter().map(|c| c.goodput_pct).collect()).0,
                    spread(cells.iter().map(|c| c.p99_ms).collect()),
                    spread(cells.iter().map(|c| c.retx_permille).collect()).0,
                )
            };
            let (aimd_goodput, (aimd_p99, aimd_lo, aimd_hi), _) = spreads(Algorithm::Aimd);
            let (goodput, (p99, lo, hi), retx) = spreads(Algorithm::Bbr);
            let loss_pct = f64::from(loss_permille) / 10.0;
            writeln!(
                table,
                "{rtt_ms} {loss_pct} {aimd_goodput:.1} {aimd_p99:.0}({aimd_lo:.0}-{aimd_hi:.0}) \
                 {goodput:.1} {p99:.0}({lo:.0}-{hi:.0}) {retx:.1}"
            )
            .expect("writing to a String");
            let cell = format!("{rtt_ms} ms, {loss_pct} % loss");
            if p99 > aimd_p99 {
                misses.push(format!(
                    "{cell}: p99 {p99:.0} ms over AIMD's {aimd_p99:.0} ms"
                ));
            }
            if loss_permille == 0 && (retx > 5.0 || goodput < 95.0) {
                misses.push(format!(
                    "{cell}: {retx:.1} ‰ retransmitted, {goodput:.1} % goodput"
                ));
            }
            if loss_permille == 10 && rtt_ms == 100 && goodput < 90.0 {
                misses.push(format!("{cell}: {goodput:.1} % goodput"));
            }
        }
    }
    println!("{table}");
    assert!(misses.is_empty(), "{table}\n{}", misses.join("\n"));
}
