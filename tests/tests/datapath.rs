//! The AF_XDP data path end to end (issue #3): `xrudp attach --app udp-echo` on a veth
//! pair between two fresh namespaces, driven by kernel UDP sockets in the client
//! namespace.
//!
//! - 100,000 datagrams of mixed sizes (1..=1472 B) are echoed byte-exact with none lost,
//!   in copy mode with the XDP program attached natively and in skb mode, and the
//!   client's kernel accepts every reply checksum (`Udp: InCsumErrors` stays 0);
//! - frames with a bad UDP checksum (hand-built, sent through AF_PACKET) are dropped and
//!   counted, and nothing is echoed for them;
//! - with two queues, two workers each serve the flows the veth steers to them;
//! - the raw apps run on the socket backend too (the same drive loop): `udp-echo`
//!   echoes byte-exact, `discard` counts every datagram and answers none.
//!
//! Pacing is by window, not by clock: the client keeps at most `WINDOW` datagrams in
//! flight and waits for their echoes before sending more, so no ring can overflow
//! whatever the VM's scheduling does.

#![expect(
    clippy::cast_sign_loss,
    reason = "test arithmetic on small non-negative counts"
)]

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use nix::sys::signal::Signal;
use xrudp_tests::{Engine, Topology};

const PORT: u16 = 7777;
/// Datagrams in flight per client socket.
const WINDOW: usize = 32;
/// Largest UDP payload in a 1500-byte MTU over IPv4 (over IPv6 it is 20 bytes less:
/// larger datagrams are fragmented, and fragments are not steered).
const MAX_PAYLOAD: usize = 1472;

fn max_payload(dst: SocketAddr) -> usize {
    if dst.is_ipv4() {
        MAX_PAYLOAD
    } else {
        MAX_PAYLOAD - 20
    }
}

/// Payload `i` of a run: a size from 1 to 1472 spread over the range, bytes derived from
/// `i` so a reordered, truncated or corrupted echo is caught.
fn payload(i: usize, max: usize, buf: &mut Vec<u8>) {
    let len = 1 + (i * 7919 + i / 3) % max;
    buf.clear();
    buf.extend((0..len).map(|k| {
        (k as u32)
            .wrapping_mul(31)
            .wrapping_add(i as u32)
            .to_le_bytes()[k % 4]
            ^ (i as u8)
    }));
    let tag = (i as u32).to_le_bytes();
    for (d, s) in buf.iter_mut().zip(tag) {
        *d = s;
    }
}

/// Sends `count` datagrams from one client socket to `dst` in windows of [`WINDOW`],
/// checking each echo against what was sent. Returns the number echoed byte-exact.
fn echo_run(
    sock: &UdpSocket,
    dst: SocketAddr,
    first: usize,
    count: usize,
) -> Result<usize, String> {
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut sent = Vec::with_capacity(WINDOW);
    let mut got = vec![0u8; 2048];
    let mut ok = 0;
    let mut i = first;
    while i < first + count {
        let n = WINDOW.min(first + count - i);
        sent.clear();
        for k in 0..n {
            let mut p = Vec::new();
            payload(i + k, max_payload(dst), &mut p);
            sock.send_to(&p, dst).expect("send_to");
            sent.push(p);
        }
        // One socket's datagrams share a queue and stay in order; match by content
        // anyway, so the assertion is about loss and corruption, not ordering.
        let mut used = [false; WINDOW];
        for _ in 0..n {
            let (len, from) = match sock.recv_from(&mut got) {
                Ok(r) => r,
                Err(e) => {
                    return Err(format!(
                        "echo missing in the window from datagram {i} ({ok} good echoes so far): {e}"
                    ));
                }
            };
            assert_eq!(from, dst, "echo came from the served address");
            let idx = (0..n)
                .find(|&k| !used[k] && sent[k][..] == got[..len])
                .unwrap_or_else(|| {
                    panic!("a {len}-byte echo matches no datagram in flight (corrupt or duplicate)")
                });
            used[idx] = true;
            ok += 1;
        }
        i += n;
    }
    Ok(ok)
}

/// The client namespace's `Udp: InCsumErrors` (and `InErrors`) from /proc/net/snmp.
fn udp_errors(ns: &str) -> (u64, u64) {
    let out = Topology::exec(ns, &["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = udp
        .next()
        .expect("Udp header line")
        .split_whitespace()
        .collect();
    let values: Vec<&str> = udp
        .next()
        .expect("Udp values line")
        .split_whitespace()
        .collect();
    let field = |name: &str| -> u64 {
        let i = names
            .iter()
            .position(|n| *n == name)
            .unwrap_or_else(|| panic!("no {name} in /proc/net/snmp"));
        values[i].parse().expect("number")
    };
    (field("InCsumErrors"), field("InErrors"))
}

fn echo_100k(mode: &str) {
    // TX checksum offload off on the client end: its datagrams carry complete checksums,
    // which the engine verifies (the default).
    let t = Topology::new(1, true);
    let engine = Engine::start(
        &t,
        &[
            "--port",
            &PORT.to_string(),
            "--app",
            "udp-echo",
            "--mode",
            mode,
        ],
    );
    let snap = engine.snapshot();
    assert_eq!(snap.xdp_mode, mode);
    assert!(!snap.zero_copy, "veth binds AF_XDP in copy mode");
    assert_eq!(snap.app, "udp-echo");

    let n4 = 100_000;
    let n6 = 2_000;
    let dst4: SocketAddr = format!("{}:{PORT}", t.ip_srv).parse().expect("addr");
    let dst6: SocketAddr = format!("[{}]:{PORT}", t.ip6_srv).parse().expect("addr");
    let (ok4, ok6) = Topology::in_ns(&t.ns_cli, move || {
        let s4 = UdpSocket::bind("0.0.0.0:0").expect("bind v4");
        let s6 = UdpSocket::bind("[::]:0").expect("bind v6");
        (echo_run(&s4, dst4, 0, n4), echo_run(&s6, dst6, 0, n6))
    });
    assert!(
        ok4.is_ok() && ok6.is_ok(),
        "{ok4:?} {ok6:?}\nengine: {:#?}\nclient: {:?}",
        engine.snapshot(),
        udp_errors(&t.ns_cli)
    );
    assert_eq!(
        (ok4, ok6),
        (Ok(n4), Ok(n6)),
        "every datagram echoed byte-exact"
    );

    let want = (n4 + n6) as u64;
    let snap = engine.wait_for(Duration::from_secs(10), |s| {
        s.queues.iter().map(|q| q.tx_packets).sum::<u64>() >= want
    });
    let q = &snap.queues[0];
    assert_eq!((q.rx_packets, q.tx_packets), (want, want), "{q:?}");
    assert_eq!(
        q.drop_checksum + q.drop_malformed + q.drop_unanswerable + q.drop_tx_full,
        0,
        "{q:?}"
    );
    let (csum_errors, in_errors) = udp_errors(&t.ns_cli);
    assert_eq!(
        csum_errors, 0,
        "the client's kernel rejected reply checksums"
    );
    assert_eq!(in_errors, 0, "the client's kernel counted UDP input errors");
}

#[test]
fn echo_100k_mixed_sizes_copy_mode_native() {
    echo_100k("native");
}

#[test]
fn echo_100k_mixed_sizes_copy_mode_skb() {
    echo_100k("skb");
}

#[test]
fn bad_udp_checksums_are_dropped_and_counted() {
    let t = Topology::new(1, true);
    let engine = Engine::start(&t, &["--port", &PORT.to_string(), "--app", "udp-echo"]);
    let srv_mac = mac(&t.ns_srv, &t.if_srv);
    let cli_mac = mac(&t.ns_cli, &t.if_cli);
    let bad = 300;
    let good = 200;
    let iface = t.if_cli.clone();
    Topology::in_ns(&t.ns_cli, move || {
        let raw = raw::Socket::open(&iface);
        for i in 0..bad + good {
            let payload: Vec<u8> = (0..=(i * 13 % 600)).map(|k| (k ^ i) as u8).collect();
            let frame = udp_frame(srv_mac, cli_mac, &payload, i < bad);
            raw.send(&frame);
        }
    });
    let snap = engine.wait_for(Duration::from_secs(10), |s| {
        s.queues[0].rx_packets >= (bad + good) as u64
    });
    let q = &snap.queues[0];
    assert_eq!(q.rx_packets, (bad + good) as u64, "{q:?}");
    assert_eq!(
        q.drop_checksum, bad as u64,
        "bad checksums dropped and counted: {q:?}"
    );
    assert_eq!(q.tx_packets, good as u64, "good ones echoed: {q:?}");
    assert_eq!(q.drop_malformed, 0, "{q:?}");

    // The same bad frames pass with the check off (as for veth peers with TX offload on).
    drop(engine);
    let engine = Engine::start(
        &t,
        &[
            "--port",
            &PORT.to_string(),
            "--app",
            "udp-echo",
            "--no-udp-checksum-check",
        ],
    );
    let iface = t.if_cli.clone();
    Topology::in_ns(&t.ns_cli, move || {
        let raw = raw::Socket::open(&iface);
        for i in 0..bad {
            raw.send(&udp_frame(srv_mac, cli_mac, &[i as u8; 40], true));
        }
    });
    let snap = engine.wait_for(Duration::from_secs(10), |s| {
        s.queues[0].tx_packets >= bad as u64
    });
    assert_eq!(
        (snap.queues[0].tx_packets, snap.queues[0].drop_checksum),
        (bad as u64, 0)
    );
}

#[test]
fn two_queues_two_workers_serve_their_own_flows() {
    let t = Topology::new(2, true);
    let engine = Engine::start(&t, &["--port", &PORT.to_string(), "--app", "udp-echo"]);
    assert_eq!(engine.snapshot().queues.len(), 2);
    let flows = 16;
    let per_flow = 2_000;
    let dst: SocketAddr = format!("{}:{PORT}", t.ip_srv).parse().expect("addr");
    // Resolve the server's MAC first: while ARP is pending, the kernel queues only
    // ~200 KB per neighbour, and 16 flows' first windows would overflow it.
    let warm = Topology::in_ns(&t.ns_cli, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        echo_run(&s, dst, 0, 1)
    });
    assert_eq!(warm, Ok(1), "warm-up echo");
    // One thread per flow, so the senders' transmit queues (XPS/hash) differ: veth
    // delivers to the receive queue numbered like the sender's transmit queue.
    let handles: Vec<_> = (0..flows)
        .map(|f| {
            let ns = t.ns_cli.clone();
            std::thread::spawn(move || {
                Topology::in_ns(&ns, move || {
                    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    echo_run(&s, dst, f * per_flow, per_flow).expect("flow echoed")
                })
            })
        })
        .collect();
    let ok: usize = handles
        .into_iter()
        .map(|h| h.join().expect("flow thread"))
        .sum();
    assert_eq!(ok, flows * per_flow, "every flow fully echoed");
    let want = (flows * per_flow + 1) as u64;
    let snap = engine.wait_for(Duration::from_secs(10), |s| {
        s.queues.iter().map(|q| q.tx_packets).sum::<u64>() >= want
    });
    for q in &snap.queues {
        assert!(
            q.rx_packets > 0,
            "queue {} served no flow: {:?}",
            q.queue,
            snap.queues
        );
        assert_eq!(
            q.rx_packets, q.tx_packets,
            "queue {} answered what it received",
            q.queue
        );
    }
    assert_eq!(snap.queues.iter().map(|q| q.rx_packets).sum::<u64>(), want);
    assert_eq!(udp_errors(&t.ns_cli).0, 0);
}

fn mac(ns: &str, iface: &str) -> [u8; 6] {
    let out = Topology::exec(ns, &["cat", &format!("/sys/class/net/{iface}/address")]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut m = [0u8; 6];
    for (d, s) in m.iter_mut().zip(text.trim().split(':')) {
        *d = u8::from_str_radix(s, 16).expect("hex MAC");
    }
    m
}

/// RFC 1071 one's-complement sum, folded.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Ethernet/IPv4/UDP from 198.18.0.2:40000 to the server; the UDP checksum is correct,
/// or wrong (but non-zero, so it is not "no checksum") when `corrupt`.
fn udp_frame(dst: [u8; 6], src: [u8; 6], payload: &[u8], corrupt: bool) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut f = Vec::with_capacity(14 + 20 + udp_len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1]);
    let ip_sum = !(sum16(&f[ip_start..], 0) as u16);
    f[ip_start + 10..ip_start + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let udp_start = f.len();
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&PORT.to_be_bytes());
    f.extend_from_slice(&(udp_len as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    let pseudo = sum16(&[198, 18, 0, 2, 198, 18, 0, 1, 0, 17], 0) + udp_len as u32;
    let mut sum = !(sum16(&f[udp_start..], pseudo) as u16);
    if sum == 0 {
        sum = 0xffff;
    }
    if corrupt {
        sum = if sum == 0x1234 { 0x4321 } else { 0x1234 };
    }
    f[udp_start + 6..udp_start + 8].copy_from_slice(&sum.to_be_bytes());
    f
}

/// A raw IPv4 socket (IP_HDRINCL) that sends the IP packet of a hand-built frame as
/// it is — including a wrong UDP checksum — through the client's routing and veth.
mod raw {
    use std::net::{SocketAddr, SocketAddrV4};

    use socket2::{Domain, Protocol, SockAddr, Type};

    pub(super) struct Socket(socket2::Socket);

    impl Socket {
        pub(super) fn open(_iface: &str) -> Self {
            let s = socket2::Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
                .expect("raw IPv4 socket (root)");
            s.set_header_included_v4(true).expect("IP_HDRINCL");
            Self(s)
        }

        /// Sends `frame` minus its 14-byte Ethernet header to the frame's IPv4 destination.
        pub(super) fn send(&self, frame: &[u8]) {
            let ip = &frame[14..];
            let dst = SocketAddrV4::new(std::net::Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]), 0);
            let sent = self
                .0
                .send_to(ip, &SockAddr::from(SocketAddr::V4(dst)))
                .expect("raw send");
            assert_eq!(sent, ip.len());
        }
    }
}

/// The raw apps on the kernel-socket backend: the same drive loop as AF_XDP, so
/// `udp-echo` echoes every datagram byte-exact and `discard` counts and answers none.
#[test]
fn raw_apps_run_on_the_socket_backend() {
    let t = Topology::new(1, false);
    let port = PORT.to_string();
    let engine = Engine::start(
        &t,
        &["--port", &port, "--app", "udp-echo", "--backend", "socket"],
    );
    let snap = engine.snapshot();
    assert_eq!(
        (snap.backend.as_str(), snap.app.as_str()),
        ("socket", "udp-echo")
    );
    let (n4, n6) = (10_000, 1_000);
    let dst4: SocketAddr = format!("{}:{PORT}", t.ip_srv).parse().expect("addr");
    let dst6: SocketAddr = format!("[{}]:{PORT}", t.ip6_srv).parse().expect("addr");
    let (ok4, ok6) = Topology::in_ns(&t.ns_cli, move || {
        let s4 = UdpSocket::bind("0.0.0.0:0").expect("bind v4");
        let s6 = UdpSocket::bind("[::]:0").expect("bind v6");
        (echo_run(&s4, dst4, 0, n4), echo_run(&s6, dst6, 0, n6))
    });
    assert_eq!(
        (ok4, ok6),
        (Ok(n4), Ok(n6)),
        "every datagram echoed byte-exact"
    );
    let want = (n4 + n6) as u64;
    let snap = engine.wait_for(Duration::from_secs(10), |s| {
        s.queues.iter().map(|q| q.tx_packets).sum::<u64>() >= want
    });
    let rx: u64 = snap.queues.iter().map(|q| q.rx_packets).sum();
    let tx: u64 = snap.queues.iter().map(|q| q.tx_packets).sum();
    assert_eq!((rx, tx), (want, want), "{:?}", snap.queues);
    let mut engine = engine;
    let status = engine.signal_and_wait(Signal::SIGTERM);
    assert!(status.success(), "udp-echo engine exit: {status}");

    let engine = Engine::start(
        &t,
        &["--port", &port, "--app", "discard", "--backend", "socket"],
    );
    let n = 5_000;
    // Paced (50 per ms at most) so the socket buffer never overflows.
    let sent =
        xrudp_tests::send_udp(&t.ns_cli, dst4, n, 64, 50, Duration::from_millis(1)).expect("send");
    assert_eq!(sent, n);
    let snap = engine.wait_for(Duration::from_secs(30), |s| {
        s.queues.iter().map(|q| q.rx_packets).sum::<u64>() >= n as u64
    });
    let rx: u64 = snap.queues.iter().map(|q| q.rx_packets).sum();
    let tx: u64 = snap.queues.iter().map(|q| q.tx_packets).sum();
    assert_eq!((rx, tx), (n as u64, 0), "{:?}", snap.queues);
}
