//! The RUDP echo path allocates nothing per message in steady state, on both backends —
//! at most [`HIGH_WATER_GROWTHS`] queue growths to a new high-water mark (below): the engine
//! runs `--app echo` in this process (inside the server namespace) under a counting global
//! allocator; four `xrudp-client` connections (a `Fleet`, in the client namespace) connect,
//! warm up with 20,000 echoes, then send 24,000 more — reliable-ordered and unreliable,
//! 8 to 1,100 bytes, each client keeping at most 8 reliable and 4 unreliable in flight —
//! while every allocation made on the worker thread is counted. Every reliable echo must
//! come back, in order, and the worker may allocate at most [`HIGH_WATER_GROWTHS`] times.
//!
//! Why not exactly 0: the windows bound what the server holds, but a connection also keeps
//! the record of its packets in flight, and lost ones a while longer (RX_WINDOW numbers) for
//! a late ack. A stall of this VM longer than any in the warm-up can push that record to a
//! new high-water mark once, and its queue doubles (CI saw one 5,120-byte growth: 128
//! records of 40 bytes). Growth by doubling happens a logarithmic number of times; an
//! allocation per message would count in the thousands here.
//!
//! The worker is identified by its kernel thread id (found by its name, `xrudp-q0` on the
//! AF_XDP backend, `xrudp-s0` on the socket backend, under /proc/self/task), so the
//! control thread, the clients and the main engine thread are not counted.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use xrudp_client::{ClientConfig, ClientEvent, ClientState, Fleet, FleetId};
use xrudp_tests::Topology;

#[global_allocator]
static GLOBAL: xrudp_tests::alloc::ThreadCounting = xrudp_tests::alloc::ThreadCounting;

const PORT: u16 = 7777;
const CLIENTS: usize = 4;
const WARMUP: usize = 20_000;
const COUNTED: usize = 24_000;
/// Reliable messages each client keeps in flight (echo not yet back).
const WINDOW: usize = 8;
/// Unreliable messages each client keeps in flight; one whose echo is not back within
/// [`UNRELIABLE_GIVE_UP`] no longer counts (unreliable echoes may be lost).
const UNRELIABLE_WINDOW: usize = 4;
const UNRELIABLE_GIVE_UP: Duration = Duration::from_millis(50);
/// The default channels: 0 is reliable-ordered, 2 unreliable.
const RELIABLE: u8 = 0;
const UNRELIABLE: u8 = 2;
/// Queue growths to a new high-water mark the counted phase may see after a VM stall
/// (see the module doc); far below one per message.
const HIGH_WATER_GROWTHS: u64 = 4;

/// What one phase of echoes achieved.
#[derive(Debug)]
struct Phase {
    reliable_sent: usize,
    reliable_back: usize,
    unreliable_sent: usize,
    unreliable_back: usize,
    out_of_order: usize,
}

/// The message a client sends: its index, a sequence number and padding to `len`.
fn message(buf: &mut [u8; 1_100], client: usize, seq: u32, len: usize) -> &[u8] {
    buf[..4].copy_from_slice(&(client as u32).to_be_bytes());
    buf[4..8].copy_from_slice(&seq.to_be_bytes());
    &buf[..len.max(8)]
}

/// Sends `total` messages over the clients (every third unreliable), keeping at most
/// `WINDOW` reliable and `UNRELIABLE_WINDOW` unreliable ones in flight per client, until
/// every reliable echo is back or 60 s pass.
///
/// The windows bound what the server holds per connection (queued and unacknowledged
/// messages, their buffers), whatever the timing: a stall of this VM can delay echoes but
/// not make the server hold more, so steady state is reached in the warm-up.
fn echoes(fleet: &mut Fleet, ids: &[FleetId], total: usize) -> Phase {
    let mut p = Phase {
        reliable_sent: 0,
        reliable_back: 0,
        unreliable_sent: 0,
        unreliable_back: 0,
        out_of_order: 0,
    };
    let mut next_seq = [0u32; CLIENTS];
    let mut expect_seq = [0u32; CLIENTS];
    let mut in_flight = [0usize; CLIENTS];
    let mut unreliable_out: [std::collections::VecDeque<Instant>; CLIENTS] =
        std::array::from_fn(|_| std::collections::VecDeque::new());
    let mut buf = [0x5au8; 1_100];
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while (sent < total || p.reliable_back < p.reliable_sent) && Instant::now() < deadline {
        let now = Instant::now();
        for (c, &id) in ids.iter().enumerate() {
            while unreliable_out[c]
                .front()
                .is_some_and(|&t| now.duration_since(t) > UNRELIABLE_GIVE_UP)
            {
                unreliable_out[c].pop_front();
            }
            while sent < total && in_flight[c] < WINDOW {
                let len = 8 + (sent * 97) % 1_092;
                if sent % 3 == 2 {
                    if unreliable_out[c].len() >= UNRELIABLE_WINDOW {
                        break;
                    }
                    let m = message(&mut buf, c, u32::MAX, len);
                    if fleet.send(id, UNRELIABLE, m).is_err() {
                        break;
                    }
                    unreliable_out[c].push_back(now);
                    p.unreliable_sent += 1;
                } else {
                    let m = message(&mut buf, c, next_seq[c], len);
                    if fleet.send(id, RELIABLE, m).is_err() {
                        break;
                    }
                    next_seq[c] += 1;
                    in_flight[c] += 1;
                    p.reliable_sent += 1;
                }
                sent += 1;
            }
        }
        fleet.drive(Duration::from_millis(2)).expect("drive");
        while let Some((id, ev)) = fleet.poll_event() {
            match ev {
                ClientEvent::Message { channel, data } => {
                    let c = ids.iter().position(|&i| i == id).expect("our client");
                    if channel == RELIABLE {
                        let seq = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
                        if seq != expect_seq[c] {
                            p.out_of_order += 1;
                        }
                        expect_seq[c] = seq.wrapping_add(1);
                        in_flight[c] -= 1;
                        p.reliable_back += 1;
                    } else {
                        unreliable_out[c].pop_front();
                        p.unreliable_back += 1;
                    }
                    fleet.recycle(id, data);
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    p
}

fn echo_allocates_only_high_water_growths(backend: xrudp::engine::Backend, worker: &'static str) {
    let t = Topology::new(1, true);
    let options = xrudp::engine::Options {
        iface: t.if_srv.clone(),
        ports: vec![PORT],
        queues: None,
        mode: xrudp::loader::ModeChoice::Native,
        zero_copy: xrudp::sys::xsk::ZeroCopy::Auto,
        app: xrudp::engine::AppKind::Echo,
        umem_frames: 4096,
        umem_hugepages: false,
        frame_size: 2048,
        ring_size: 1024,
        cores: None,
        wait: xrudp::engine::WaitStrategy::Sleep,
        spin: std::time::Duration::from_micros(200),
        udp_checksum_check: true,
        backend,
        workers: Some(1),
        protocol: xrudp_proto::ServerConfig::default(),
        hello_rate: 0,
        admission: true,
        source_rate: 0,
        source_burst: 0,
        migration_rate: 0,
        drop_capabilities: false,
    };
    let engine = xrudp_tests::alloc::InProcessEngine::start(&t.ns_srv, options, worker);
    let tid = engine.worker_tid;

    let dst: SocketAddr = t.srv_addr(PORT);
    let (warm, counted, allocs) = Topology::in_ns(&t.ns_cli, move || {
        let mut fleet = Fleet::new().expect("fleet");
        let ids: Vec<FleetId> = (0..CLIENTS)
            .map(|_| {
                fleet
                    .add(
                        dst,
                        ClientConfig::default(),
                        &xrudp_client::Protection::default(),
                    )
                    .expect("add client")
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while fleet.count(ClientState::Connected) < CLIENTS && Instant::now() < deadline {
            fleet.drive(Duration::from_millis(5)).expect("drive");
            while let Some((_, ev)) = fleet.poll_event() {
                assert!(
                    matches!(ev, ClientEvent::Connected),
                    "while connecting: {ev:?}"
                );
            }
        }
        assert_eq!(
            fleet.count(ClientState::Connected),
            CLIENTS,
            "clients connected"
        );
        let warm = echoes(&mut fleet, &ids, WARMUP);
        let (counted, allocs) =
            xrudp_tests::alloc::count_thread(tid, || echoes(&mut fleet, &ids, COUNTED));
        (warm, counted, allocs)
    });
    let sizes = xrudp_tests::alloc::first_sizes();
    engine.stop();
    eprintln!("{worker}: warm-up {warm:?}");
    eprintln!("{worker}: counted {counted:?}; worker allocations: {allocs}");
    for p in [&warm, &counted] {
        assert_eq!(p.reliable_back, p.reliable_sent, "every reliable echo back");
        assert_eq!(p.out_of_order, 0, "reliable echoes in order");
    }
    assert_eq!(
        counted.reliable_sent + counted.unreliable_sent,
        COUNTED,
        "counted messages sent"
    );
    assert!(
        allocs <= HIGH_WATER_GROWTHS,
        "the {worker} worker allocated {allocs} times during {COUNTED} echoes \
         (sizes of the first: {sizes:?}); at most {HIGH_WATER_GROWTHS} high-water growths \
         are expected"
    );
}

#[test]
fn xdp_echo_allocates_nothing_per_message_only_bounded_growths() {
    echo_allocates_only_high_water_growths(xrudp::engine::Backend::Xdp, "xrudp-q0");
}

#[test]
fn socket_echo_allocates_nothing_per_message_only_bounded_growths() {
    echo_allocates_only_high_water_growths(xrudp::engine::Backend::Socket, "xrudp-s0");
}
