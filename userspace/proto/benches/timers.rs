//! The server's connection timers at 1,000 to 100,000 connections: the timing wheel
//! (`xrudp_proto::timer::Wheel`, public) beside the structure it replaced, a binary heap
//! with lazy deletion, and the whole server's per-message cost while many connections idle.
//!
//! Timer groups (each at N = 1,000, 10,000 and 100,000 armed timers, `wheel/N` beside
//! `heap/N`; simulated time only, no clock is read for the workload):
//!
//! - `timers/reschedule`: one random connection's timer moves to `now + 1 s`, what a
//!   packet does. Time advances 1 ms (untimed) after every [`PACKETS_PER_TICK`] packets and
//!   the due timers fire and re-arm, so the heap carries the stale entries it would carry in
//!   a server. Per element: one reschedule.
//! - `timers/fire`: idle connections only, their keepalives spread evenly over 1 s: each
//!   iteration advances 1 ms, takes the due timers out and re-arms each 1 s later. Per
//!   element: one timer fired and re-armed (N/1000 of them each tick).
//! - `timers/tick`: the two mixed, all timed: [`PACKETS_PER_TICK`] reschedules, then the
//!   1 ms advance with its firings. Per element: one packet, its share of expiry included.
//! - `timers/next`: the exact earliest deadline (`poll_timeout`) in the idle state of
//!   `fire`. The wheel walks the first non-empty slot's list (N/1000 entries here); the heap
//!   drops stale tops, then peeks.
//!
//! The heap is the textbook lazy-deletion one, small on purpose: every schedule bumps the
//! connection's generation and pushes `(deadline, index, generation)`; an entry whose
//! generation is not the connection's current one is stale and skipped when it surfaces.
//!
//! `server/idle/N`: one in-memory echo round trip (`xrudp_proto::echo::Pair`, as in
//! `userspace/engine/benches/proto.rs`) on one connection of a `Server` holding N
//! connections, the other N − 1 admitted through the full handshake and then idle with
//! their keepalive and idle timers armed. Those are 240 s and 250 s, and a server is
//! replaced (untimed) by a fresh one before a sample could reach them, so what is measured
//! is the cost of their armed timers, not their keepalive traffic (N datagrams per
//! keepalive period, by design). After each size the bench prints the round trips, the
//! simulated span, and the datagrams sent to idle connections (0: none fired); it checks
//! that every connection is still open.
//!
//! `cargo bench -p xrudp-proto --bench timers -- --warm-up-time 1 --measurement-time 3`

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xrudp_proto::echo::{HOP, Pair};
use xrudp_proto::timer::Wheel;
use xrudp_proto::{Client, ClientConfig, ClientEvent, Server, ServerConfig};

/// Armed timers (connections) per case.
const SIZES: [u32; 3] = [1_000, 10_000, 100_000];
/// The period a timer re-arms with: the default keepalive.
const PERIOD: Duration = Duration::from_secs(1);
/// Simulated time per tick.
const TICK: Duration = Duration::from_millis(1);
/// Packets (reschedules) per 1 ms tick: 64,000 packets/s.
const PACKETS_PER_TICK: u32 = 64;

/// A connection timer table: the operations the server needs.
trait Timers {
    fn schedule(&mut self, index: u32, deadline: Instant);
    /// Appends the indices due at `now` to `due`.
    fn expire(&mut self, now: Instant, due: &mut Vec<u32>);
    fn next(&mut self) -> Option<Instant>;
}

impl Timers for Wheel {
    fn schedule(&mut self, index: u32, deadline: Instant) {
        Wheel::schedule(self, index, deadline);
    }

    fn expire(&mut self, now: Instant, due: &mut Vec<u32>) {
        Wheel::expire(self, now, due);
    }

    fn next(&mut self) -> Option<Instant> {
        self.next_deadline()
    }
}

/// The reference: a min-heap of `(deadline, index, generation)` with lazy deletion.
struct Heap {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    generation: Vec<u32>,
}

impl Heap {
    fn new(capacity: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(2 * capacity),
            generation: vec![0; capacity],
        }
    }

    fn live(&self, index: u32, generation: u32) -> bool {
        self.generation[index as usize] == generation
    }
}

impl Timers for Heap {
    fn schedule(&mut self, index: u32, deadline: Instant) {
        let g = &mut self.generation[index as usize];
        *g = g.wrapping_add(1);
        self.heap.push(Reverse((deadline, index, *g)));
    }

    fn expire(&mut self, now: Instant, due: &mut Vec<u32>) {
        while let Some(&Reverse((t, index, generation))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            if self.live(index, generation) {
                // Fired: no entry of this generation is live any more.
                self.generation[index as usize] = generation.wrapping_add(1);
                due.push(index);
            }
        }
    }

    fn next(&mut self) -> Option<Instant> {
        while let Some(&Reverse((t, index, generation))) = self.heap.peek() {
            if self.live(index, generation) {
                return Some(t);
            }
            self.heap.pop();
        }
        None
    }
}

/// A timer table under a simulated clock, with each connection's current deadline kept
/// beside it (what the server's connections know) and a seeded xorshift for packet targets.
struct Sim<T> {
    timers: T,
    at: Vec<Instant>,
    now: Instant,
    due: Vec<u32>,
    rng: u64,
    fired: u64,
}

impl<T: Timers> Sim<T> {
    /// `n` timers armed, deadlines spread evenly over the next [`PERIOD`].
    fn new(n: u32, make: impl FnOnce(usize, Instant) -> T) -> Self {
        let now = Instant::now();
        let mut timers = make(n as usize, now);
        let mut at = Vec::with_capacity(n as usize);
        for i in 0..n {
            let d = now + PERIOD * (i + 1) / n;
            timers.schedule(i, d);
            at.push(d);
        }
        Self {
            timers,
            at,
            now,
            due: Vec::with_capacity(n as usize),
            rng: 0x9e37_79b9_7f4a_7c15,
            fired: 0,
        }
    }

    /// A packet on a random connection: its timer moves to `now + PERIOD`.
    fn packet(&mut self) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let n = self.at.len() as u64;
        // INVARIANT: the remainder is below `n`, itself a `u32`.
        let i = u32::try_from(self.rng % n).expect("below n");
        let d = self.now + PERIOD;
        self.at[i as usize] = d;
        self.timers.schedule(i, d);
    }

    /// Advances one tick: the due timers fire and re-arm one period after their deadline.
    fn advance(&mut self) {
        self.now += TICK;
        self.due.clear();
        self.timers.expire(self.now, &mut self.due);
        for &i in &self.due {
            let d = self.at[i as usize] + PERIOD;
            self.at[i as usize] = d;
            self.timers.schedule(i, d);
        }
        self.fired += self.due.len() as u64;
    }
}

fn wheel(n: usize, origin: Instant) -> Wheel {
    Wheel::new(n, origin)
}

fn heap(n: usize, _origin: Instant) -> Heap {
    Heap::new(n)
}

/// Runs `f` for each structure at each size, as `wheel/N` and `heap/N`.
fn each(
    c: &mut Criterion,
    group: &str,
    elements: impl Fn(u32) -> u64,
    wheel_case: impl Fn(&mut criterion::Bencher<'_>, u32),
    heap_case: impl Fn(&mut criterion::Bencher<'_>, u32),
) {
    let mut g = c.benchmark_group(group);
    for n in SIZES {
        g.throughput(Throughput::Elements(elements(n)));
        g.bench_function(BenchmarkId::new("wheel", n), |b| wheel_case(b, n));
        g.bench_function(BenchmarkId::new("heap", n), |b| heap_case(b, n));
    }
    g.finish();
}

/// Times only the reschedules: batches of [`PACKETS_PER_TICK`], each followed by an
/// untimed tick.
fn reschedule<T: Timers>(b: &mut criterion::Bencher<'_>, sim: &mut Sim<T>) {
    b.iter_custom(|iters| {
        let mut spent = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let k = left.min(u64::from(PACKETS_PER_TICK));
            let t = Instant::now();
            for _ in 0..k {
                sim.packet();
            }
            spent += t.elapsed();
            left -= k;
            sim.advance();
        }
        spent
    });
}

fn timers(c: &mut Criterion) {
    each(
        c,
        "timers/reschedule",
        |_| 1,
        |b, n| reschedule(b, &mut warm(Sim::new(n, wheel))),
        |b, n| reschedule(b, &mut warm(Sim::new(n, heap))),
    );
    each(
        c,
        "timers/fire",
        |n| u64::from(n / 1_000),
        |b, n| {
            let mut sim = Sim::new(n, wheel);
            b.iter(|| sim.advance());
            check_fire(&sim, n);
        },
        |b, n| {
            let mut sim = Sim::new(n, heap);
            b.iter(|| sim.advance());
            check_fire(&sim, n);
        },
    );
    each(
        c,
        "timers/tick",
        |_| u64::from(PACKETS_PER_TICK),
        |b, n| {
            let mut sim = warm(Sim::new(n, wheel));
            b.iter(|| tick(&mut sim));
        },
        |b, n| {
            let mut sim = warm(Sim::new(n, heap));
            b.iter(|| tick(&mut sim));
        },
    );
    each(
        c,
        "timers/next",
        |_| 1,
        |b, n| {
            let mut sim = Sim::new(n, wheel);
            sim.advance();
            b.iter(|| black_box(sim.timers.next()));
        },
        |b, n| {
            let mut sim = Sim::new(n, heap);
            sim.advance();
            b.iter(|| black_box(sim.timers.next()));
        },
    );
}

/// Runs the mixed workload for two periods, so the heap holds its steady-state share of
/// stale entries before anything is timed.
fn warm<T: Timers>(mut sim: Sim<T>) -> Sim<T> {
    for _ in 0..2 * PERIOD.as_millis() {
        tick(&mut sim);
    }
    sim
}

fn tick<T: Timers>(sim: &mut Sim<T>) {
    for _ in 0..PACKETS_PER_TICK {
        sim.packet();
    }
    sim.advance();
}

/// Idle timers spread evenly fire N/1000 per 1 ms tick: the throughput is exact.
fn check_fire<T: Timers>(sim: &Sim<T>, n: u32) {
    assert!(sim.fired > 0, "nothing fired at N = {n}");
    assert!(
        sim.fired.is_multiple_of(u64::from(n) / 1_000),
        "N = {n}: {} fired, not N/1000 per tick",
        sim.fired
    );
}

// --- the server, N connections, one of them busy ---

/// Keepalive and idle timeout of the server group's connections, within the wheel's
/// 262 s horizon; no sample runs into them (see [`SIM_BOUND`]).
const IDLE_KEEPALIVE: Duration = Duration::from_secs(240);
const IDLE_TIMEOUT: Duration = Duration::from_secs(250);
/// Simulated gap between messages, as in the engine's `proto` bench (each hop of
/// datagrams adds `echo::HOP`).
const STEP: Duration = Duration::from_micros(10);
/// More simulated time than one round trip takes (about 35 µs: one hop and one step).
const SIM_BOUND: Duration = Duration::from_micros(100);
/// A server is replaced before a sample could take its simulated time past this.
const REBUILD_AT: Duration = Duration::from_secs(230);
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7777);

/// The address of client `i` (in-memory only: nothing is sent anywhere).
fn client_addr(i: u32) -> SocketAddr {
    // INVARIANT: the remainder is below 50,000.
    let port = 10_000 + u16::try_from(i % 50_000).expect("below 50,000");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + i / 50_000)), port)
}

/// A server with `n` admitted connections, the last one's client paired with it (the busy
/// one), the other N − 1 clients gone.
struct Busy {
    pair: Pair,
    start: Instant,
}

impl Busy {
    fn new(n: u32) -> Self {
        let start = Instant::now();
        let config = ServerConfig {
            max_connections: n as usize,
            idle_timeout: IDLE_TIMEOUT,
            keepalive: IDLE_KEEPALIVE,
            ..ServerConfig::default()
        };
        let mut server = Server::new(config, 1, start).expect("server config");
        server.prefill_pool(256);
        let mut now = start;
        let mut buf = vec![0; 2048];
        // INVARIANT: n >= 1.
        let busy = n.checked_sub(1).expect("one client");
        for i in 0..busy {
            connect(
                &mut server,
                client_addr(i),
                u64::from(i) + 2,
                &mut now,
                &mut buf,
            );
        }
        let client = Client::new(
            ClientConfig::default(),
            SERVER,
            u64::from(busy) + 2,
            now,
            xrudp_proto::session::Security::insecure_from_seed(u64::from(busy) + 2),
        )
        .expect("client config");
        let mut pair = Pair::connect_endpoints(server, client, client_addr(busy), now)
            .expect("the busy client connects in memory");
        // The idle connections' handshake acks go out (to nobody; the busy one's are
        // delivered), then only their keepalive and idle timers stay armed.
        pair.now += Duration::from_millis(50);
        pair.exchange().expect("exchanged in memory");
        assert_eq!(
            pair.server.connection_count(),
            n as usize,
            "every client admitted"
        );
        // Only what the server sends idle connections while measured is counted.
        pair.to_others = 0;
        Self {
            start: pair.now,
            pair,
        }
    }

    /// One echo round trip on the busy connection, every datagram to it delivered.
    fn round_trip(&mut self, msg: &[u8]) {
        // INVARIANT: everything earlier was delivered and acknowledged in memory.
        self.pair.round_trip(0, msg).expect("echoed in memory");
        self.pair.now += STEP;
    }
}

/// Connects one client through the full handshake, in memory.
fn connect(server: &mut Server, addr: SocketAddr, seed: u64, now: &mut Instant, buf: &mut [u8]) {
    let mut client = Client::new(
        ClientConfig::default(),
        SERVER,
        seed,
        *now,
        xrudp_proto::session::Security::insecure_from_seed(seed),
    )
    .expect("client config");
    for _ in 0..8 {
        while let Some(t) = client.poll_transmit(*now, buf) {
            server.handle_datagram(*now, addr, &buf[..t.len]);
        }
        while let Some(t) = server.poll_transmit(*now, buf) {
            assert_eq!(t.dst, addr, "a reply to the connecting client");
            client.handle_datagram(*now, SERVER, &buf[..t.len]);
        }
        while let Some(e) = client.poll_event() {
            if e == ClientEvent::Connected {
                // Its first ack-eliciting ping reaches the server.
                while let Some(t) = client.poll_transmit(*now, buf) {
                    server.handle_datagram(*now, addr, &buf[..t.len]);
                }
                return;
            }
        }
        *now += HOP;
    }
    panic!("client {addr} did not connect in memory");
}

fn server(c: &mut Criterion) {
    let msg = [0x5a; 64];
    let mut g = c.benchmark_group("server");
    g.throughput(Throughput::Elements(1));
    for n in [1, 1_000, 10_000, 100_000] {
        let mut busy = Busy::new(n);
        let (mut echoed, mut to_idle, mut span, mut rebuilt) = (0, 0, Duration::ZERO, 0);
        g.bench_function(BenchmarkId::new("idle", n), |b| {
            b.iter_custom(|iters| {
                // Untimed: a server whose idle timers would come due within this sample is
                // replaced by a fresh one (a round trip moves time by less than 100 µs).
                let projected = busy.pair.now - busy.start
                    + SIM_BOUND * u32::try_from(iters).unwrap_or(u32::MAX);
                if projected > REBUILD_AT {
                    (echoed, to_idle, span) = (
                        echoed + busy.pair.echoed,
                        to_idle + busy.pair.to_others,
                        span + (busy.pair.now - busy.start),
                    );
                    assert_eq!(
                        busy.pair.server.connection_count(),
                        n as usize,
                        "no idle connection closed"
                    );
                    busy = Busy::new(n);
                    rebuilt += 1;
                }
                let t = Instant::now();
                for _ in 0..iters {
                    busy.round_trip(&msg);
                }
                t.elapsed()
            });
        });
        assert!(busy.pair.echoed > 0, "no echo came back");
        assert_eq!(
            busy.pair.server.connection_count(),
            n as usize,
            "no idle connection closed"
        );
        eprintln!(
            "server/idle/{n}: {} round trips over {:.1} s simulated ({rebuilt} fresh servers); \
             {} datagrams to idle connections",
            echoed + busy.pair.echoed,
            (span + (busy.pair.now - busy.start)).as_secs_f64(),
            to_idle + busy.pair.to_others,
        );
    }
    g.finish();
}

criterion_group!(benches, timers, server);
criterion_main!(benches);
