//! Protocol packet handling per message, in memory (no sockets, no clock reads): the CPU
//! the sans-IO protocol costs an echo server and its client for one message's round trip.
//!
//! `echo/<channel>/<bytes>`: the client queues a message, both ends encode, decode, deliver
//! and acknowledge it, the server echoes it back and the client takes the echo — every
//! datagram either end produces is fed to the other, so acknowledgements and their
//! processing are counted. Throughput is in messages (one round trip) and payload bytes.
//! Time moves by 25 µs per hop (a 50 µs RTT, as on veth) and 10 µs between messages,
//! so RTT estimates, pacing, delayed acks and timers behave as in a real run.
//!
//! The checksum, header parse and reply-build kernels have their own benches in
//! `userspace/packet/benches/checksum.rs`; this one does not repeat them.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xrudp_proto::{Client, ClientConfig, ClientEvent, Server, ServerConfig, ServerEvent};

const CLIENT: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), 40000);
const SERVER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7777);
const STEP: Duration = Duration::from_micros(10);
/// Simulated one-way delay: each hop of datagrams moves the clock by this much, so the
/// ends measure a 50 µs RTT (as on veth) and pace accordingly, instead of seeing 0.
const HOP: Duration = Duration::from_micros(25);

/// A connected client/server pair exchanging datagrams through memory.
struct Pair {
    client: Client,
    server: Server,
    now: Instant,
    buf: Vec<u8>,
    echoed: u64,
    connected: bool,
}

impl Pair {
    fn connected() -> Self {
        let now = Instant::now();
        let server = Server::new(ServerConfig::default(), 1, now).expect("default server config");
        let client = Client::new(ClientConfig::default(), SERVER, 2, now, None)
            .expect("default client config");
        let mut pair = Self {
            client,
            server,
            now,
            buf: vec![0; 2048],
            echoed: 0,
            connected: false,
        };
        for _ in 0..100 {
            pair.exchange();
            if pair.connected {
                return pair;
            }
            pair.now += Duration::from_millis(1);
        }
        panic!("the in-memory handshake did not complete");
    }

    /// Moves every pending datagram both ways until neither end has more, echoing
    /// every message the server receives and counting the echoes the client takes.
    fn exchange(&mut self) {
        loop {
            let mut moved = false;
            if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
                self.client.handle_timeout(self.now);
            }
            if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
                self.server.handle_timeout(self.now);
            }
            while let Some(t) = self.client.poll_transmit(self.now, &mut self.buf) {
                self.server
                    .handle_datagram(self.now, CLIENT, &self.buf[..t.len]);
                moved = true;
            }
            while let Some(e) = self.server.poll_event() {
                if let ServerEvent::Message {
                    handle,
                    channel,
                    data,
                } = e
                {
                    // INVARIANT: the echo fits: the client's window is far from full.
                    self.server
                        .send(handle, channel, &data)
                        .expect("echo queued");
                    self.server.recycle(data);
                }
            }
            while let Some(t) = self.server.poll_transmit(self.now, &mut self.buf) {
                self.client
                    .handle_datagram(self.now, SERVER, &self.buf[..t.len]);
                moved = true;
            }
            while let Some(e) = self.client.poll_event() {
                match e {
                    ClientEvent::Message { data, .. } => {
                        self.echoed += 1;
                        self.client.recycle(black_box(data));
                    }
                    ClientEvent::Connected => self.connected = true,
                    ClientEvent::Disconnected { reason } => {
                        panic!("the in-memory connection closed: {reason:?}")
                    }
                }
            }
            if !moved {
                return;
            }
            // Each exchange of datagrams takes a simulated hop, so RTT samples are 2×HOP.
            self.now += HOP;
        }
    }

    fn round_trip(&mut self, channel: u8, msg: &[u8]) {
        // INVARIANT: everything earlier was delivered and acknowledged in memory.
        self.client.send(channel, msg).expect("message queued");
        self.exchange();
        self.now += STEP;
    }
}

fn echo(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo");
    for (channel, name) in [(0u8, "reliable-ordered"), (2, "unreliable")] {
        for size in [64usize, 256, 1024] {
            let msg = vec![0x5a; size];
            group.throughput(Throughput::Elements(1));
            // One pair across criterion's calls (warm-up, samples), so it reaches its
            // steady state once.
            let mut pair = Pair::connected();
            group.bench_with_input(BenchmarkId::new(name, size), &msg, |b, msg| {
                b.iter(|| pair.round_trip(channel, msg));
            });
            assert!(pair.echoed > 0, "no echo came back");
        }
    }
    group.finish();

    let mut group = c.benchmark_group("echo-bytes");
    for size in [64usize, 1024] {
        let msg = vec![0x5a; size];
        group.throughput(Throughput::Bytes(size as u64));
        let mut pair = Pair::connected();
        group.bench_with_input(
            BenchmarkId::new("reliable-ordered", size),
            &msg,
            |b, msg| {
                b.iter(|| pair.round_trip(0, msg));
            },
        );
        assert!(pair.echoed > 0, "no echo came back");
    }
    group.finish();
}

criterion_group!(benches, echo);
criterion_main!(benches);
