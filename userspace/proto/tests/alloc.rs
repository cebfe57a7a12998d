//! Steady-state message traffic allocates nothing: a simulated pair connects, warms up,
//! then exchanges 50,000 messages (reliable-ordered, reliable-unordered, unreliable and
//! unreliable-sequenced; 8 B to 3 KB, the largest fragmented) that the server echoes,
//! while a counting global allocator counts every allocation made on the test's thread.
//! The application recycles every delivered buffer; the count must be 0. The control test
//! drops the buffers instead of recycling them and must see allocations, so the counter is
//! known to work.
//!
//! Under loss the number of buffers outstanding (held for order, awaiting an ack or a
//! retransmission) is a random quantity whose running maximum keeps creeping up, and each
//! new maximum grows a pool once; `lossy_traffic_allocates_only_at_new_peaks` bounds that:
//! after a long warm-up it is tens for 50,000 messages, where a buffer lost on a per-loss
//! path would cost one per lost datagram (about 1,000 here).
//!
//! The simulator itself reuses its datagram buffers (`Network::recycle`), so what is
//! counted is the protocol: server, client, their pools, timers and queues.
#![expect(unsafe_code, reason = "a counting global allocator is an unsafe impl")]

use std::time::Duration;

use xrudp_proto::sim::network::Model;
use xrudp_proto::sim::{Cluster, Pair};
use xrudp_proto::{Algorithm, ClientConfig, ClientEvent, ConnHandle, ServerConfig, ServerEvent};

mod common;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// (channel, length) of the messages the client sends, in turn: every channel kind of
/// the default configuration, sizes from 8 B to 3 KB; 3,000 B is three fragments.
const MIX: [(u8, usize); 10] = [
    (0, 8),
    (2, 100),
    (0, 700),
    (1, 40),
    (3, 60),
    (0, 3_000),
    (2, 1_000),
    (1, 2_500),
    (3, 16),
    (0, 200),
];
/// Messages the client sends per simulated millisecond.
const PER_MS: usize = 3;
const WARMUP: usize = 10_000;
const COUNTED: usize = 50_000;

struct Outcome {
    /// Messages the client sent in the counted phase.
    sent: usize,
    /// Echoes the client took in the counted phase.
    echoed: usize,
    allocs: u64,
    /// Packets either end declared lost (and did not take back), warm-up included.
    lost: u64,
}

/// Runs `count` messages through the echo.
fn phase(p: &mut Pair, h: ConnHandle, count: usize, recycle: bool) -> (usize, usize) {
    let payload = [0x5au8; 3_000];
    let (mut sent, mut echoed, mut i) = (0, 0, 0);
    while sent < count {
        for _ in 0..PER_MS.min(count - sent) {
            let (channel, len) = MIX[i % MIX.len()];
            if p.client_mut().send(channel, &payload[..len]).is_ok() {
                sent += 1;
                i += 1;
            }
        }
        p.run_for(Duration::from_millis(1));
        let c: &mut Cluster = p;
        for e in c.server_events.drain(..) {
            if let ServerEvent::Message {
                handle,
                channel,
                data,
            } = e
            {
                assert_eq!(handle, h);
                // The echo may find the send queue full under loss; the client sees it
                // as a missing echo, which this test does not count on.
                let _ = c.server.send(h, channel, &data);
                if recycle {
                    c.server.recycle(data);
                }
            }
        }
        for e in c.client_events[0].drain(..) {
            if let ClientEvent::Message { data, .. } = e {
                echoed += 1;
                if recycle {
                    c.clients[0].recycle(data);
                }
            }
        }
    }
    (sent, echoed)
}

fn run(recycle: bool, loss: f64, warmup: usize) -> Outcome {
    run_seeded(recycle, loss, warmup, 11)
}

fn run_seeded(recycle: bool, loss: f64, warmup: usize, seed: u64) -> Outcome {
    run_with(Algorithm::default(), recycle, loss, warmup, seed)
}

fn run_with(algorithm: Algorithm, recycle: bool, loss: f64, warmup: usize, seed: u64) -> Outcome {
    let model = Model {
        delay: Duration::from_millis(5),
        jitter: Duration::from_millis(1),
        loss,
        reorder: loss,
        seed,
        ..Model::default()
    };
    let mut server = ServerConfig::default();
    server.transport.congestion = algorithm;
    let mut client = ClientConfig::default();
    client.transport.congestion = algorithm;
    let mut p = Pair::new(server, client, model, seed);
    let h = p.connect();
    // The counted phases look at echoes only.
    p.server_events.clear();
    phase(&mut p, h, warmup, true);
    let ((sent, echoed), allocs) = common::count(|_| true, || phase(&mut p, h, COUNTED, recycle));
    assert_eq!(p.server.connection_count(), 1, "still connected");
    let lost_by_end = [
        p.server.connection_stats(h).map(|s| s.packets_lost),
        p.client().connection_stats().map(|s| s.packets_lost),
    ];
    Outcome {
        sent,
        echoed,
        allocs,
        lost: lost_by_end.into_iter().flatten().sum(),
    }
}

#[test]
fn steady_message_traffic_allocates_nothing() {
    let o = run(true, 0.0, WARMUP);
    eprintln!(
        "sent {} echoed {} allocations {}",
        o.sent, o.echoed, o.allocs
    );
    assert_eq!(o.sent, COUNTED);
    assert!(o.echoed > COUNTED * 9 / 10, "only {} echoes", o.echoed);
    assert_eq!(o.allocs, 0, "{} allocations in the steady phase", o.allocs);
}

/// BBR stamps every packet for its rate samples: the stamps' queue too is sized once and
/// reused, and its model must not hold this application-limited traffic back into a
/// growing backlog (PROBE_RTT cutting cwnd to half an app-limited BDP did: 3,281
/// allocations, the buffer pool growing at each new peak).
#[test]
fn steady_bbr_traffic_allocates_nothing() {
    let o = run_with(Algorithm::Bbr, true, 0.0, WARMUP, 11);
    eprintln!(
        "bbr: sent {} echoed {} allocations {}",
        o.sent, o.echoed, o.allocs
    );
    assert_eq!(o.sent, COUNTED);
    assert!(o.echoed > COUNTED * 9 / 10, "only {} echoes", o.echoed);
    assert_eq!(o.allocs, 0, "{} allocations in the steady phase", o.allocs);
}

/// The control: an application that drops delivered buffers makes the protocol allocate
/// new ones, and the counter sees it.
#[test]
fn dropping_delivered_buffers_is_counted() {
    let o = run(false, 0.0, WARMUP);
    eprintln!(
        "sent {} echoed {} allocations {}",
        o.sent, o.echoed, o.allocs
    );
    assert!(
        o.allocs >= o.echoed as u64,
        "{} allocations for {} unrecycled echoes",
        o.allocs,
        o.echoed
    );
}

/// With 1 % loss and 1 % reordering each way, after a long warm-up: only new peaks of
/// outstanding buffers allocate, fewer than one per lost datagram in every run and far
/// fewer in the typical one. Five seeds: when a new peak comes is chaotic (one seed
/// measured 43 allocations, another 800 on the same code), so one seed's count says
/// little and a bound on it is luck. AIMD does not carry this load at 1 % loss: the
/// client's send queue stays near its 1 MiB cap, so the pool is grown in the warm-up.
/// BBR is not here: its backlogs come later and grow the pool past this bound
/// (docs/PROTOCOL.md §9.2).
#[test]
fn lossy_traffic_allocates_only_at_new_peaks() {
    let mut allocs = Vec::new();
    for seed in 11..16 {
        let o = run_seeded(true, 0.01, 60_000, seed);
        eprintln!(
            "seed {seed}: sent {} echoed {} allocations {} lost packets {}",
            o.sent, o.echoed, o.allocs, o.lost
        );
        assert_eq!(o.sent, COUNTED);
        assert!(
            o.allocs < o.lost,
            "seed {seed}: {} allocations for {} lost packets",
            o.allocs,
            o.lost
        );
        allocs.push(o.allocs);
    }
    allocs.sort_unstable();
    assert!(
        allocs[2] < 200,
        "median {} allocations: {allocs:?}",
        allocs[2]
    );
}
