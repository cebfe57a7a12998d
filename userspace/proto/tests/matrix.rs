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
//! Run with `XRUDP_SNAPSHOT=print` to print the new table.
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
    let bdp = (RATE * rtt_ms / 1_000) as usize;
    let model = Model {
        delay: Duration::from_micros(rtt_ms * 500),
        loss: f64::from(loss_permille) / 1_000.0,
        bandwidth: Some(RATE),
        queue_bytes: bdp.max(10 * 1_200),
        seed: 7,
        ..Model::default()
    };
    let mut server = ServerConfig::default();
    server.transport.congestion = algorithm;
    let mut client = ClientConfig::default();
    client.transport.congestion = algorithm;
    let mut p = Pair::new(server, client, model, 7);
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
aimd 1 0 96 179 71.8
aimd 1 0.1 96 179 72.4
aimd 1 1 94 171 83.0
aimd 1 5 91 162 90.3
aimd 1 10 86 154 109.0
aimd 20 0 96 245 51.3
aimd 20 0.1 96 245 51.0
aimd 20 1 95 232 49.9
aimd 20 5 90 199 60.0
aimd 20 10 79 161 99.3
aimd 100 0 95 380 12.7
aimd 100 0.1 95 380 12.7
aimd 100 1 90 343 13.0
aimd 100 5 43 341 50.3
aimd 100 10 28 419 90.4
newreno 1 0 96 112 13.9
newreno 1 0.1 96 112 13.9
newreno 1 1 95 112 21.8
newreno 1 5 85 112 54.9
newreno 1 10 64 190 118.1
newreno 20 0 96 140 15.1
newreno 20 0.1 96 140 15.1
newreno 20 1 91 140 16.5
newreno 20 5 55 158 54.3
newreno 20 10 35 262 109.3
newreno 100 0 94 359 2.1
newreno 100 0.1 94 359 2.1
newreno 100 1 42 287 10.4
newreno 100 5 18 524 50.9
newreno 100 10 11 739 94.4
cubic 1 0 96 108 12.6
cubic 1 0.1 96 108 12.6
cubic 1 1 95 112 20.7
cubic 1 5 90 108 51.9
cubic 1 10 74 131 106.0
cubic 20 0 96 149 6.7
cubic 20 0.1 96 149 6.7
cubic 20 1 94 140 14.8
cubic 20 5 66 135 52.8
cubic 20 10 42 185 102.3
cubic 100 0 96 343 1.2
cubic 100 0.1 96 343 1.2
cubic 100 1 47 276 12.2
cubic 100 5 21 432 52.3
cubic 100 10 12 605 101.0
";
    let mut table = String::from("algorithm rtt_ms loss_pct goodput_pct p99_ms retx_permille\n");
    for algorithm in [Algorithm::Aimd, Algorithm::NewReno, Algorithm::Cubic] {
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
