//! Steady state allocates nothing per packet: the engine runs in this process (inside
//! the server namespace) under a counting global allocator, serves 10,000 warm-up echoes,
//! then 100,000 more while every allocation made on the worker thread is counted. The
//! count must stay 0.
//!
//! The worker is identified by its kernel thread id (found by its name `xrudp-q0` under
//! /proc/self/task), so allocations by the control thread, the test's own client or the
//! main engine thread are not counted.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    fs::File,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};
use xrudp_tests::Topology;

/// Counts allocations (alloc, zeroed alloc, realloc) made by the thread whose kernel tid
/// is in [`WATCHED`].
struct Counting;

static WATCHED: AtomicI32 = AtomicI32::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

fn note() {
    let watched = WATCHED.load(Relaxed);
    // SAFETY: gettid has no preconditions and does not allocate.
    if watched != 0 && unsafe { libc::gettid() } == watched {
        ALLOCS.fetch_add(1, Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator unchanged; counting touches only
// atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

fn worker_tid(name: &str) -> Option<i32> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == name)
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
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
        app: xrudp::worker::App::UdpEcho,
        umem_frames: 2048,
        frame_size: 2048,
        ring_size: 1024,
        cores: None,
        busy_poll: false,
        udp_checksum_check: true,
        backend: xrudp::engine::Backend::Xdp,
        workers: None,
        protocol: xrudp_proto::ServerConfig::default(),
        hello_rate: 0,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let ns = format!("/var/run/netns/{}", t.ns_srv);
    let stop2 = Arc::clone(&stop);
    let engine = std::thread::spawn(move || {
        let f = File::open(&ns).expect("server namespace");
        setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
        xrudp::engine::run(&options, &stop2)
    });

    let deadline = Instant::now() + Duration::from_secs(30);
    let tid = loop {
        if let Some(tid) = worker_tid("xrudp-q0") {
            break tid;
        }
        assert!(
            !engine.is_finished(),
            "the engine stopped: {:?}",
            engine.join()
        );
        assert!(Instant::now() < deadline, "no worker thread within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    };

    let dst: SocketAddr = format!("{}:{PORT}", t.ip_srv).parse().expect("addr");
    let (warm, counted, allocs) = Topology::in_ns(&t.ns_cli, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let warm = echoes(&s, dst, 10_000);
        ALLOCS.store(0, Relaxed);
        WATCHED.store(tid, Relaxed);
        let counted = echoes(&s, dst, 100_000);
        WATCHED.store(0, Relaxed);
        (warm, counted, ALLOCS.load(Relaxed))
    });
    stop.store(true, Relaxed);
    engine
        .join()
        .expect("engine thread")
        .expect("engine ran cleanly");
    assert_eq!(warm, 10_000, "warm-up echoes");
    assert_eq!(counted, 100_000, "counted echoes");
    assert_eq!(
        allocs, 0,
        "the worker allocated {allocs} times during 100,000 echoes"
    );
}
