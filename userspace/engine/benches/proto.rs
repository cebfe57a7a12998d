//! Protocol packet handling per message, in memory (no sockets, no clock reads): the CPU
//! the sans-IO protocol costs an echo server and its client for one message's round trip.
//!
//! `echo/<channel>/<bytes>`: the client queues a message, both ends encode, decode, deliver
//! and acknowledge it, the server echoes it back and the client takes the echo — every
//! datagram either end produces is fed to the other, so acknowledgements and their
//! processing are counted. Throughput is in messages (one round trip) and payload bytes.
//! Time moves by 25 µs per hop (a 50 µs RTT, as on veth) and 10 µs between messages,
//! so RTT estimates, pacing, delayed acks and timers behave as in a real run. The pair
//! is `xrudp_proto::echo::Pair`, shared with the proto crate's benches and tests.
//!
//! The checksum, header parse and reply-build kernels have their own benches in
//! `userspace/packet/benches/checksum.rs`; this one does not repeat them.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xrudp_proto::echo::Pair;
use xrudp_proto::{ClientConfig, ServerConfig};

/// Simulated time between messages (each hop of datagrams adds `echo::HOP`, 25 µs).
const STEP: Duration = Duration::from_micros(10);

/// A connected echo pair with default configurations.
fn connected() -> Pair {
    Pair::connect(
        ServerConfig::default(),
        ClientConfig::default(),
        Instant::now(),
    )
    .expect("the in-memory handshake completes")
}

/// One message out and its echo back, then the gap to the next message.
fn round_trip(pair: &mut Pair, channel: u8, msg: &[u8]) {
    // INVARIANT: everything earlier was delivered and acknowledged in memory.
    pair.round_trip(channel, msg).expect("echoed in memory");
    pair.now += STEP;
}

fn echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo");
    for (channel, name) in [(0u8, "reliable-ordered"), (2, "unreliable")] {
        for size in [64usize, 256, 1024] {
            let msg = vec![0x5a; size];
            group.throughput(Throughput::Elements(1));
            // One pair across criterion's calls (warm-up, samples), so it reaches its
            // steady state once.
            let mut pair = connected();
            group.bench_with_input(BenchmarkId::new(name, size), &msg, |b, msg| {
                b.iter(|| round_trip(&mut pair, channel, msg));
            });
            assert!(pair.echoed > 0, "no echo came back");
        }
    }
    group.finish();

    let mut group = c.benchmark_group("echo-bytes");
    for size in [64usize, 1024] {
        let msg = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        let mut pair = connected();
        group.bench_with_input(
            BenchmarkId::new("reliable-ordered", size),
            &msg,
            |b, msg| {
                b.iter(|| round_trip(&mut pair, 0, msg));
            },
        );
        assert!(pair.echoed > 0, "no echo came back");
    }
    group.finish();
}

criterion_group!(benches, echo);
criterion_main!(benches);
