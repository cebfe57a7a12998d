//! The server's CPU per message in the tick workload (issue 15): N clients, each sending
//! one small reliable message per tick, every message its own datagram, the server
//! echoing each one. With N in the thousands, each datagram the server handles belongs to
//! a different connection than the one before, so its connection state is not in the
//! cache, as in the engine's worker under `scripts/bench.sh`'s tick ladder.
//!
//! `tick/echo/N`: a [`Server`] with N connections and N in-memory [`Client`]s, each sending
//! one 64-byte message on channel 0 (reliable ordered) every [`TICK`] (16 ms, 62.5 Hz),
//! the clients staggered over the tick's [`STEPS`] 1 ms steps so that N / 16 of them send
//! in each. One iteration is one step; only the server's part is timed:
//! its due timers, `handle_datagram` for every datagram the clients sent in the step (the
//! new messages, and the clients' acks of earlier echoes: a client delays its ack by its
//! 5 ms `max_ack_delay`, so most acks arrive in their own datagram), the echoes queued and
//! every datagram it then has to send. The clients' part (sending, taking the echoes,
//! acking) is untimed. Per element: one message, with its share of the acks and timers.
//! The server's part is timed by this thread's CPU time on Linux (see [`Clock`]): the
//! bench is meant to compare builds on a shared machine. Reading that clock is a system
//! call at each end of a step (part of it inside the interval), the same for any code
//! measured.
//!
//! Session encryption is off, as in `scripts/bench.sh`'s default (`XRUDP_BENCH_ENCRYPTION`);
//! `benches/aead.rs` measures the AEAD on its own.
//!
//! Time is simulated (no clock is read for the workload): 25 µs each way, so the RTT is
//! 50 µs, as on veth. After each size the bench prints the messages sent and echoed, the
//! server's datagrams in and out, and checks that every connection is still open.
//!
//! `bulk/64KiB` is the opposite shape, for contrast: see [`bulk`].
//!
//! `cargo bench -p xrudp-proto --bench tick -- --warm-up-time 1 --measurement-time 3`

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xrudp_proto::echo::{HOP, Pair};
use xrudp_proto::session::{Encryption, Security};
use xrudp_proto::{Client, ClientConfig, ClientEvent, Server, ServerConfig, ServerEvent};

/// Connection counts (multiples of [`STEPS`]): one that fits the cache, the 2,000-client profile point,
/// and 10,000 (600k packets/s at 60 Hz, the target).
const SIZES: [u32; 3] = [128, 2_000, 10_000];
/// Steps per tick, each 1 ms of simulated time.
const STEPS: u32 = 16;
const STEP: Duration = Duration::from_millis(1);
/// One message per client per tick.
const TICK: Duration = Duration::from_millis(STEPS as u64);
const MSG: [u8; 64] = [0x5a; 64];
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7777);
const FIRST_PORT: u16 = 10_000;
/// Clients that start their handshake in each step while the world is built.
const HANDSHAKES_PER_STEP: u32 = 500;

/// The address of client `i` (in-memory only: nothing is sent anywhere).
fn client_addr(i: u32) -> SocketAddr {
    // INVARIANT: i < 10,000 (SIZES), so the port fits.
    let port = FIRST_PORT + u16::try_from(i).expect("below 10,000");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)), port)
}

/// What a step's server part is timed with: on Linux this thread's CPU time
/// (`CLOCK_THREAD_CPUTIME_ID`), so that time the thread spends descheduled on a machine
/// shared with other work is not counted; elsewhere the wall clock.
#[derive(Clone, Copy)]
enum Clock {
    Thread,
    Wall(Instant),
}

impl Clock {
    fn new() -> Self {
        if Self::thread().is_some() {
            Self::Thread
        } else {
            Self::Wall(Instant::now())
        }
    }

    /// The time on this clock, from an arbitrary origin.
    fn now(self) -> Duration {
        match self {
            // INVARIANT: it was readable when chosen (Clock::new).
            Self::Thread => Self::thread().expect("the thread CPU clock reads"),
            Self::Wall(origin) => origin.elapsed(),
        }
    }

    #[cfg(target_os = "linux")]
    fn thread() -> Option<Duration> {
        use nix::time::{ClockId, clock_gettime};
        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
            .ok()
            .map(Duration::from)
    }

    #[cfg(not(target_os = "linux"))]
    fn thread() -> Option<Duration> {
        None
    }

    fn name(self) -> &'static str {
        match self {
            Self::Thread => "thread CPU time",
            Self::Wall(_) => "wall clock",
        }
    }
}

/// Datagrams gathered for one side: their bytes back to back, and (client, start, end).
#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    entries: Vec<(u32, usize, usize)>,
}

impl Queue {
    fn with_capacity(datagrams: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(datagrams * 256),
            entries: Vec::with_capacity(datagrams),
        }
    }

    fn push(&mut self, client: u32, datagram: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(datagram);
        self.entries.push((client, start, self.bytes.len()));
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }
}

/// A server and its N clients, all connected, in the tick workload.
struct World {
    server: Server,
    clients: Vec<Client>,
    now: Instant,
    step: u32,
    /// Datagrams the clients sent in this step, for the server.
    inbox: Queue,
    /// Datagrams the server sent in this step, for the clients.
    outbox: Queue,
    buf: Vec<u8>,
    clock: Clock,
    sent: u64,
    echoed: u64,
    server_in: u64,
    server_out: u64,
}

impl World {
    fn new(n: u32) -> Self {
        let start = Instant::now();
        let config = ServerConfig {
            max_connections: n as usize,
            encryption: Encryption::Off,
            ..ServerConfig::default()
        };
        let mut server = Server::new(config, 1, start).expect("server config");
        server.prefill_pool(256);
        let clients = (0..n)
            .map(|i| {
                let seed = u64::from(i) + 2;
                Client::new(ClientConfig::default(), SERVER, seed, start, Security::Off)
                    .expect("client config")
            })
            .collect();
        let mut world = Self {
            server,
            clients,
            now: start,
            step: 0,
            inbox: Queue::with_capacity(4 * n as usize),
            outbox: Queue::with_capacity(4 * n as usize),
            buf: vec![0; 2048],
            clock: Clock::new(),
            sent: 0,
            echoed: 0,
            server_in: 0,
            server_out: 0,
        };
        // Handshakes: every client's datagrams both ways until all are connected, a batch
        // of clients joining each step (the server keeps at most 1,024 handshake replies
        // pending: a hello flood costs bounded memory).
        let mut connected = 0;
        for k in 0..n / HANDSHAKES_PER_STEP + 100 {
            world.gather(None, (k + 1) * HANDSHAKES_PER_STEP);
            world.serve();
            connected += world.deliver();
            world.now += STEP;
            if connected == n as usize {
                break;
            }
        }
        assert_eq!(connected, n as usize, "every client connects in memory");
        assert_eq!(world.server.connection_count(), n as usize);
        // Two ticks of messages, so each connection reaches its steady state.
        for _ in 0..2 * STEPS {
            world.step();
        }
        world
    }

    /// One 1 ms step; returns the time the server took.
    fn step(&mut self) -> Duration {
        self.gather(Some(self.step % STEPS), u32::MAX);
        let start = self.clock.now();
        self.serve();
        let spent = self.clock.now().saturating_sub(start);
        self.deliver();
        self.now += STEP;
        self.step += 1;
        spent
    }

    /// Untimed: the first `upto` clients fire their due timers, the ones whose turn it
    /// is (`i % STEPS == phase`) queue a message, and every datagram they have goes to
    /// the inbox.
    fn gather(&mut self, phase: Option<u32>, upto: u32) {
        self.inbox.clear();
        for (i, c) in (0u32..upto).zip(self.clients.iter_mut()) {
            if c.poll_timeout().is_some_and(|t| t <= self.now) {
                c.handle_timeout(self.now);
            }
            if phase == Some(i % STEPS) {
                c.send(0, &MSG).expect("room for one message per tick");
                self.sent += 1;
            }
            while let Some(t) = c.poll_transmit(self.now, &mut self.buf) {
                self.inbox.push(i, &self.buf[..t.len]);
            }
        }
    }

    /// Timed: the server's due timers, the inbox, the echoes, and what it sends.
    fn serve(&mut self) {
        let now = self.now + HOP;
        // Every step, due or not, as the engine's `Service::on_round` does: it keeps the
        // timer wheel's cursor current (`Server::poll_timeout`).
        self.server.handle_timeout(now);
        for &(i, start, end) in &self.inbox.entries {
            self.server
                .handle_datagram(now, client_addr(i), &self.inbox.bytes[start..end]);
        }
        self.server_in += self.inbox.entries.len() as u64;
        while let Some(e) = self.server.poll_event() {
            if let ServerEvent::Message {
                handle,
                channel,
                data,
            } = e
            {
                self.server
                    .send(handle, channel, &data)
                    .expect("room for the echo");
                self.server.recycle(data);
            }
        }
        self.outbox.clear();
        while let Some(t) = self.server.poll_transmit(now, &mut self.buf) {
            let i = u32::from(t.dst.port() - FIRST_PORT);
            self.outbox.push(i, &self.buf[..t.len]);
        }
        self.server_out += self.outbox.entries.len() as u64;
    }

    /// Untimed: the server's datagrams reach their clients, which take the echoes.
    /// Returns how many clients reported `Connected`.
    fn deliver(&mut self) -> usize {
        let now = self.now + 2 * HOP;
        let mut connected = 0;
        for &(i, start, end) in &self.outbox.entries {
            let c = &mut self.clients[i as usize];
            c.handle_datagram(now, SERVER, &self.outbox.bytes[start..end]);
            while let Some(e) = c.poll_event() {
                match e {
                    ClientEvent::Message { data, .. } => {
                        self.echoed += 1;
                        c.recycle(data);
                    }
                    ClientEvent::Connected => connected += 1,
                    ClientEvent::Draining { .. } => {}
                    ClientEvent::Disconnected { reason } => {
                        panic!("client {i} disconnected: {reason:?}")
                    }
                }
            }
        }
        connected
    }
}

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("tick");
    for n in SIZES {
        let mut world = World::new(n);
        let before = (world.sent, world.echoed, world.server_in, world.server_out);
        // Elements per step: the messages sent in it, N / 16.
        g.throughput(Throughput::Elements(u64::from(n / STEPS)));
        g.bench_function(BenchmarkId::new("echo", n), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| world.step()).sum());
        });
        let sent = world.sent - before.0;
        if sent == 0 {
            // Filtered out on the command line.
            continue;
        }
        let echoed = world.echoed - before.1;
        // Every message sent before the last step has come back (the last step's too:
        // the echo leaves at once).
        assert_eq!(sent, echoed, "N = {n}: every message echoed");
        assert_eq!(
            world.server.connection_count(),
            n as usize,
            "no connection closed"
        );
        eprintln!(
            "tick/echo/{n}: {sent} messages echoed over {} steps ({:.1} s simulated); \
             server datagrams in {} out {}; timed by {}",
            world.step,
            (TICK * (world.step / STEPS)).as_secs_f64(),
            world.server_in - before.2,
            world.server_out - before.3,
            world.clock.name(),
        );
    }
    g.finish();
}

/// Bytes of each `bulk` message: about 47 fragments of a 1,400-byte datagram.
const BULK: usize = 64 * 1024;

/// `bulk/64KiB`, the opposite shape, for contrast: one connection, a 64 KiB reliable
/// message echoed back (`echo::Pair`, both ends timed), so each ack frame reports up to
/// 33 packets of a record of dozens in flight. Per element: one message's round trip.
fn bulk(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulk");
    g.throughput(Throughput::Bytes(BULK as u64));
    let now = Instant::now();
    let server = ServerConfig {
        encryption: Encryption::Off,
        ..ServerConfig::default()
    };
    let server = Server::new(server, 1, now).expect("server config");
    let client =
        Client::new(ClientConfig::default(), SERVER, 2, now, Security::Off).expect("client config");
    let mut pair = Pair::connect_endpoints(server, client, client_addr(0), now)
        .expect("the in-memory handshake completes");
    let clock = Clock::new();
    let msg = vec![0x5a; BULK];
    g.bench_function("64KiB", |b| {
        b.iter_custom(|iters| {
            let start = clock.now();
            for _ in 0..iters {
                pair.send(0, &msg).expect("room in the send buffer");
                let expected = pair.echoed + 1;
                pair.settle(expected, Duration::from_secs(10))
                    .expect("echoed in memory");
            }
            clock.now().saturating_sub(start)
        });
    });
    g.finish();
    assert!(pair.echoed > 0, "no echo came back");
}

criterion_group!(benches, tick, bulk);
criterion_main!(benches);
