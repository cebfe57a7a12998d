//! What publishing its figures costs a worker, with and without a reader.
//!
//! A worker publishes in two steps (docs/STATS.md): once per RX batch it adds the batch's
//! tallies to its cache-padded [`Counters`] (relaxed atomic adds and stores, the exact
//! sequence of the drive loop, `drive::run`) and records the batch in its own latency histogram;
//! every 100 ms it merges that histogram into the queue's shared one with a `try_lock`.
//!
//! - `batch/no_reader`: the per-batch step alone.
//! - `batch/reader_spinning`: the same while another thread reads every counter in a
//!   tight loop — far harsher than `xrudp stats --watch 1` or a Prometheus scrape (a few
//!   reads a second), so the cache lines bounce on every batch. The difference between
//!   the two is the most a reader can cost a worker per batch.
//! - `flush/1000_batches`: the every-100-ms merge after 1,000 recorded batches.
//!
//! Compare with `cargo bench --bench proto` (the protocol's CPU per message, about 1 µs):
//! a batch carries up to 64 messages.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_utils::CachePadded;
use xrudp::telemetry::Counters;
use xrudp::telemetry::latency::{Recorder, Shared};

/// One batch's publication, as the worker loop does it.
#[inline]
fn publish_batch(c: &Counters, latency: &mut Recorder, n: u64) {
    latency.record(black_box(Duration::from_nanos(4_000)), n);
    c.rx_packets.fetch_add(n, Relaxed);
    c.rx_bytes.fetch_add(n * 100, Relaxed);
    c.tx_packets.fetch_add(n, Relaxed);
    c.tx_bytes.fetch_add(n * 100, Relaxed);
    c.frames_in_use.store(black_box(512), Relaxed);
    c.frames_high_water.store(black_box(600), Relaxed);
}

fn read_all(c: &Counters) -> u64 {
    c.rx_packets.load(Relaxed)
        ^ c.rx_bytes.load(Relaxed)
        ^ c.tx_packets.load(Relaxed)
        ^ c.tx_bytes.load(Relaxed)
        ^ c.frames_in_use.load(Relaxed)
        ^ c.frames_high_water.load(Relaxed)
}

fn batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(1));
    let counters = Arc::new(CachePadded::new(Counters::default()));
    let mut latency = Recorder::default();
    g.bench_function("no_reader", |b| {
        b.iter(|| publish_batch(&counters, &mut latency, black_box(32)));
    });
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (counters, stop) = (Arc::clone(&counters), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut x = 0u64;
            while !stop.load(Relaxed) {
                x ^= read_all(&counters);
            }
            black_box(x);
        })
    };
    g.bench_function("reader_spinning", |b| {
        b.iter(|| publish_batch(&counters, &mut latency, black_box(32)));
    });
    stop.store(true, Relaxed);
    let _ = reader.join();
    g.finish();
}

fn flush(c: &mut Criterion) {
    let mut g = c.benchmark_group("flush");
    g.throughput(Throughput::Elements(1));
    let shared = Shared::default();
    g.bench_function("1000_batches", |b| {
        b.iter_batched_ref(
            || {
                let mut latency = Recorder::default();
                for i in 0..1_000u64 {
                    latency.record(Duration::from_nanos(2_000 + i * 7), 32);
                }
                latency
            },
            |latency| latency.flush(&shared),
            criterion::BatchSize::SmallInput,
        );
    });
    g.finish();
}

criterion_group!(benches, batch, flush);
criterion_main!(benches);
