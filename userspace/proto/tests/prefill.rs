//! A client whose pool was prefilled (`Client::prefill_pool`) takes no new message buffer
//! for its first messages: a server and a client connect in memory, then the client sends
//! [`FIRST`] messages of the pool's four small classes' sizes on a reliable and an
//! unreliable channel, the server echoes each, and the client takes (and recycles) the
//! echoes, all through `xrudp_proto::echo::Pair`. A counting global allocator
//! (`tests/common`) counts, on the test's thread, allocations shaped like a pool buffer:
//! alignment 1 and a capacity of one of the classes up to 2 KiB.
//!
//! The server is prefilled in both runs, so what is counted is the client. The control run
//! does not prefill the client and must count buffers, so the counter is known to work.
#![expect(unsafe_code, reason = "a counting global allocator is an unsafe impl")]

use std::alloc::Layout;
use std::time::{Duration, Instant};

use xrudp_proto::echo::Pair;
use xrudp_proto::pool::CLASSES;
use xrudp_proto::sim::{SERVER_ADDR, client_addr};
use xrudp_proto::{Client, ClientConfig, Server, ServerConfig};

mod common;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

/// Messages counted: 16 in each of the four classes up to 2 KiB.
const FIRST: usize = 64;
/// Buffers prefilled per class, on both ends.
const PREFILL: usize = 32;
/// Message lengths, one per class up to 2 KiB (the largest fits one datagram).
const SIZES: [usize; 4] = [40, 200, 900, 1_100];

/// A pool buffer's shape: alignment 1 and one of the classes up to 2 KiB.
fn is_buffer(layout: Layout) -> bool {
    layout.align() == 1 && CLASSES[..4].contains(&layout.size())
}

/// A server and a client (prefilled or not) connected through memory, the server
/// prefilled.
fn link(prefill_client: bool) -> Pair {
    let now = Instant::now();
    let mut server = Server::new(ServerConfig::default(), 1, now).expect("server config");
    server.prefill_pool(PREFILL);
    let mut client = Client::new(
        ClientConfig::default(),
        SERVER_ADDR,
        2,
        now,
        xrudp_proto::session::Security::insecure_from_seed(2),
    )
    .expect("client config");
    if prefill_client {
        client.prefill_pool(PREFILL);
    }
    Pair::connect_endpoints(server, client, client_addr(0), now).expect("connected in memory")
}

/// Connects, then counts pool-shaped allocations over the first [`FIRST`] messages, sent
/// in bursts of eight (reliable-ordered and unreliable in turn, every size), each burst
/// echoed before the next.
fn first_messages(prefill_client: bool) -> (u64, u64) {
    let mut link = link(prefill_client);
    let payload = [0x5a; 2048];
    let ((), buffers) = common::count(is_buffer, || {
        for burst in 0..FIRST / 8 {
            for k in 0..8 {
                let channel = if k % 2 == 0 { 0 } else { 2 };
                let len = SIZES[(burst + k / 2) % SIZES.len()];
                link.send(channel, &payload[..len]).expect("message queued");
            }
            link.settle((burst as u64 + 1) * 8, Duration::from_secs(1))
                .expect("the burst echoed");
        }
    });
    (buffers, link.echoed)
}

#[test]
fn a_prefilled_client_takes_no_new_buffer_for_its_first_messages() {
    let (buffers, echoed) = first_messages(true);
    assert_eq!(echoed, FIRST as u64, "every message echoed");
    assert_eq!(buffers, 0, "new message buffers after prefill");
}

#[test]
fn without_prefill_the_first_messages_allocate_buffers() {
    let (buffers, echoed) = first_messages(false);
    assert_eq!(echoed, FIRST as u64, "every message echoed");
    // At least one buffer per class the client sent from and received into.
    assert!(
        buffers >= 4,
        "only {buffers} buffers counted without prefill"
    );
}
