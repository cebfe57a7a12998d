//! Steady state allocates nothing per packet: the engine runs in this process (inside
//! the server namespace) under a counting global allocator, serves 10,000 warm-up echoes,
//! then 100,000 more while every allocation made on the worker thread is counted. The
//! count must stay 0.
//!
//! The worker is identified by its kernel thread id (found by its name `xrudp-q0` under
//! /proc/self/task), so allocations by the control thread, the test's own client or the
//! main engine thread are not counted.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use xrudp_tests::Topology;

#[global_allocator]
static GLOBAL: xrudp_tests::alloc::ThreadCounting = xrudp_tests::alloc::ThreadCounting;

const PORT: u16 = 7777;

/// Echoes `count` datagrams (sizes 1..=1472) in windows of 32; returns how many came back.
fn echoes(sock: &UdpSocket, dst: SocketAddr, count: usize) -> usize {
    let mut buf = [0u8; 2048];
    let payload = [0xa5u8; 1472];
    let mut ok = 0;
    let mut i = 0;
    while i < count {
        let n = 32.min(count - i);
        for k in 0..n {
            sock.send_to(&payload[..=(i + k) * 37 % 1472], dst)
                .expect("send");
        }
        for _ in 0..n {
            if sock.recv_from(&mut buf).is_ok() {
                ok += 1;
            }
        }
        i += n;
    }
    ok
}

#[test]
fn worker_allocates_nothing_per_packet() {
    let t = Topology::new(1, true);
    let options = xrudp::engine::Options {
        iface: t.if_srv.clone(),
        ports: vec![PORT],
        queues: None,
        mode: xrudp::loader::ModeChoice::Native,
        zero_copy: xrudp::sys::xsk::ZeroCopy::Auto,
        app: xrudp::engine::AppKind::UdpEcho,
        umem_frames: 2048,
        umem_hugepages: false,
        frame_size: 2048,
        ring_size: 1024,
        cores: None,
        wait: xrudp::engine::WaitStrategy::Sleep,
        spin: std::time::Duration::from_micros(200),
        udp_checksum_check: true,
        backend: xrudp::engine::Backend::Xdp,
        workers: None,
        protocol: xrudp_proto::ServerConfig::default(),
        hello_rate: 0,
        admission: true,
        source_rate: 0,
        source_burst: 0,
        migration_rate: 0,
        drop_capabilities: false,
    };
    let engine = xrudp_tests::alloc::InProcessEngine::start(&t.ns_srv, options, "xrudp-q0");
    let tid = engine.worker_tid;

    let dst: SocketAddr = format!("{}:{PORT}", t.ip_srv).parse().expect("addr");
    let (warm, counted, allocs) = Topology::in_ns(&t.ns_cli, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        xrudp_tests::wait_udp_echo(&s, dst);
        let warm = echoes(&s, dst, 10_000);
        let (counted, allocs) = xrudp_tests::alloc::count_thread(tid, || echoes(&s, dst, 100_000));
        (warm, counted, allocs)
    });
    engine.stop();
    assert_eq!(warm, 10_000, "warm-up echoes");
    assert_eq!(counted, 100_000, "counted echoes");
    assert_eq!(
        allocs, 0,
        "the worker allocated {allocs} times during 100,000 echoes"
    );
}
