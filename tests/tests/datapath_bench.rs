//! Measurements for docs/DATAPATH.md, not assertions (ignored by default):
//!
//! `cargo test --release -p xrudp-tests --test datapath_bench -- --ignored --nocapture`
//!
//! In one run, on one fresh veth topology (client TX checksum offload off): a kernel
//! recvmmsg/sendmmsg UDP echo and `xrudp attach --app udp-echo` (need_wakeup, then
//! `--busy-poll`), each pinned to core 1 with the client on core 0, measured for
//! - echo throughput: 64-byte datagrams in lockstep windows of 64, packets/s;
//! - server CPU per packet: the serving thread's CPU time, and both cores' busy time
//!   (/proc/stat: on veth the receive path runs on the sender's core);
//! - echo round-trip latency: one datagram in flight, p50/p99/p99.9;
//! - idle CPU of the serving thread over 3 s without traffic.

use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use xrudp_tests::{Engine, Topology};

const XDP_PORT: u16 = 7777;
const KERNEL_PORT: u16 = 7778;
const WINDOW: usize = 64;
const THROUGHPUT_PKTS: usize = 300_000;
const LATENCY_PKTS: usize = 20_000;

#[derive(Debug)]
struct Figures {
    name: String,
    pps: f64,
    lost: usize,
    thread_cpu_ns_per_pkt: f64,
    cores_busy_ns_per_pkt: f64,
    rtt_us: [f64; 3],
    idle_cpu_pct: f64,
}

fn pin(core: usize) {
    assert!(core_affinity_set(core), "pinning to core {core}");
}

fn core_affinity_set(core: usize) -> bool {
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes within it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `core` indexes into the set only if it is below CPU_SETSIZE (checked by
    // the macro's own bound), and `set` is a valid, exclusively borrowed cpu_set_t.
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t for the call; 0 means the calling thread.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) == 0 }
}

/// Busy jiffies (everything but idle and iowait) summed over all CPUs.
fn busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
    let cpu = stat.lines().next().expect("cpu line");
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    v.iter().sum::<u64>() - v[3] - v[4]
}

fn ticks_to_ns(t: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    t as f64 * 1e9 / hz
}

/// Lockstep windows of 64-byte datagrams; returns (echoed, elapsed).
fn throughput(sock: &UdpSocket, dst: SocketAddr, count: usize) -> (usize, Duration) {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let payload = [0x42u8; 64];
    let mut buf = [0u8; 2048];
    let mut ok = 0;
    let start = Instant::now();
    let mut i = 0;
    while i < count {
        let n = WINDOW.min(count - i);
        for _ in 0..n {
            let _ = sock.send_to(&payload, dst);
        }
        for _ in 0..n {
            if sock.recv_from(&mut buf).is_err() {
                break;
            }
            ok += 1;
        }
        i += n;
    }
    (ok, start.elapsed())
}

fn latency(sock: &UdpSocket, dst: SocketAddr, count: usize) -> [f64; 3] {
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let payload = [0x42u8; 64];
    let mut buf = [0u8; 2048];
    let mut rtts = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        sock.send_to(&payload, dst).expect("send");
        if sock.recv_from(&mut buf).is_ok() {
            rtts.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    rtts.sort_by(f64::total_cmp);
    let q = |p: f64| rtts[((rtts.len() as f64 * p) as usize).min(rtts.len() - 1)];
    [q(0.5), q(0.99), q(0.999)]
}

/// Round-trip latency from the client namespace, on core 0.
fn client_latency(t: &Topology, dst: SocketAddr) -> [f64; 3] {
    Topology::in_ns(&t.ns_cli, move || {
        pin(0);
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        latency(&s, dst, LATENCY_PKTS)
    })
}

fn measure(name: &str, t: &Topology, dst: SocketAddr, server_cpu: &dyn Fn() -> f64) -> Figures {
    // Idle first.
    let c0 = server_cpu();
    std::thread::sleep(Duration::from_secs(3));
    let idle_cpu_pct = (server_cpu() - c0) / 3.0 * 100.0;

    let sock = Topology::in_ns(&t.ns_cli, move || {
        pin(0);
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        throughput(&s, dst, 5_000); // warm-up: ARP, caches, first wakeups
        s
    });
    let cpu0 = server_cpu();
    let busy0 = busy_ticks();
    let (ok, elapsed) = Topology::in_ns(&t.ns_cli, move || {
        pin(0);
        throughput(&sock, dst, THROUGHPUT_PKTS)
    });
    let cpu = server_cpu() - cpu0;
    let busy = busy_ticks() - busy0;
    let rtt_us = client_latency(t, dst);
    Figures {
        name: name.into(),
        pps: ok as f64 / elapsed.as_secs_f64(),
        lost: THROUGHPUT_PKTS - ok,
        thread_cpu_ns_per_pkt: cpu * 1e9 / ok as f64,
        cores_busy_ns_per_pkt: ticks_to_ns(busy) / ok as f64,
        rtt_us,
        idle_cpu_pct,
    }
}

/// A kernel UDP echo: recvmmsg up to 64 datagrams, sendmmsg them back.
fn kernel_echo(sock: &UdpSocket, stop: &AtomicBool) {
    const N: usize = 64;
    let fd = sock.as_raw_fd();
    let mut bufs = vec![[0u8; 2048]; N];
    // SAFETY: all-zero sockaddr_storage / iovec / mmsghdr are valid values.
    let mut addrs: Vec<libc::sockaddr_storage> =
        (0..N).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: as above.
    let mut msgs: Vec<libc::mmsghdr> = (0..N).map(|_| unsafe { std::mem::zeroed() }).collect();
    while !stop.load(Relaxed) {
        for k in 0..N {
            iovs[k].iov_len = 2048;
            msgs[k].msg_hdr.msg_name = (&raw mut addrs[k]).cast();
            msgs[k].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            msgs[k].msg_hdr.msg_iov = &raw mut iovs[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `msgs` holds N headers pointing at live buffers and addresses.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                N as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        for k in 0..n as usize {
            iovs[k].iov_len = msgs[k].msg_len as usize;
        }
        // SAFETY: the first `n` headers now describe received datagrams and their senders.
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as u32, 0) };
    }
}

#[test]
#[ignore = "measurement, not a test: run with --ignored --nocapture"]
fn echo_benchmark() {
    let t = Topology::new(1, true);
    let mut all = Vec::new();

    // Kernel echo on a port the XDP program does not steer (no engine attached yet).
    {
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicI32::new(0));
        let sock = Topology::in_ns(&t.ns_srv, || {
            UdpSocket::bind(("0.0.0.0", KERNEL_PORT)).expect("bind")
        });
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let (s2, t2) = (Arc::clone(&stop), Arc::clone(&tid));
        let h = std::thread::spawn(move || {
            pin(1);
            t2.store(xrudp::sys::gettid(), Relaxed);
            kernel_echo(&sock, &s2);
        });
        while tid.load(Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let tid = tid.load(Relaxed);
        let cpu =
            move || xrudp::sys::thread_cpu_ticks(tid).map_or(0.0, |(t, hz)| t as f64 / hz as f64);
        let dst: SocketAddr = format!("{}:{KERNEL_PORT}", t.ip_srv).parse().expect("addr");
        all.push(measure("kernel recvmmsg/sendmmsg", &t, dst, &cpu));
        stop.store(true, Relaxed);
        h.join().expect("kernel echo");
    }

    for (name, extra) in [
        ("xrudp need_wakeup", &[][..]),
        ("xrudp --busy-poll", &["--busy-poll"][..]),
    ] {
        let mut args = vec!["--port", "7777", "--app", "udp-echo", "--cores", "1"];
        args.extend_from_slice(extra);
        let engine = Engine::start(&t, &args);
        let dst: SocketAddr = format!("{}:{XDP_PORT}", t.ip_srv).parse().expect("addr");
        let cpu = || engine.snapshot().queues[0].cpu_secs.unwrap_or(0.0);
        all.push(measure(name, &t, dst, &cpu));
        let s = engine.snapshot();
        eprintln!("{name}: queue figures {:?}", s.queues[0]);
        drop(engine);
    }

    println!(
        "| server | echo pkt/s (64 B, window {WINDOW}) | lost | server thread CPU ns/pkt | both cores busy ns/pkt | RTT p50 / p99 / p99.9 µs | idle CPU % |"
    );
    println!("|---|---|---|---|---|---|---|");
    for f in &all {
        println!(
            "| {} | {:.0} | {} | {:.0} | {:.0} | {:.1} / {:.1} / {:.1} | {:.2} |",
            f.name,
            f.pps,
            f.lost,
            f.thread_cpu_ns_per_pkt,
            f.cores_busy_ns_per_pkt,
            f.rtt_us[0],
            f.rtt_us[1],
            f.rtt_us[2],
            f.idle_cpu_pct
        );
    }
}
