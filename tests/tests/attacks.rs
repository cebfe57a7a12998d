//! Attacks while honest players play: 100 RUDP clients exchange reliable and unreliable
//! messages with the echo app at a steady rate, phase after phase, while each attack runs
//! for a few seconds. Required throughout: no crash, no state for unproven addresses, no
//! amplification, no lost reliable message, every drop counted by reason.
//!
//! Latency under attack is measured and printed for each phase (p50/p99 beside the
//! no-attack baseline); the assertion is on p50, since this VM's p99 is set by vCPU
//! stalls (docs/BENCHMARKS.md) and a p99 assertion would make the test flaky.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use xrudp::telemetry::Snapshot;
use xrudp_client::Fleet;
use xrudp_packet::{Kernel, Route, datagram, ethernet::Address};
use xrudp_proto::{Client, ClientConfig, ClientEvent};
use xrudp_tests::{
    Clients, Engine, Topology, connect_fleet, percentile, protocol_sum, tagged, untag,
};

const PORT: u16 = 7777;
const HONEST: usize = 100;
const PHASE: Duration = Duration::from_secs(3);

/// Per-phase results of the honest clients.
#[derive(Debug, Default, Clone)]
struct PhaseStats {
    sent: u64,
    rtt_us: Vec<u64>,
}

/// The honest players: each sends one reliable and one unreliable message every 50 ms
/// and expects its reliable echoes exactly once, in order. Runs until `stop`.
fn honest_players(
    server: SocketAddr,
    phase: &AtomicUsize,
    stop: &AtomicBool,
) -> (Vec<PhaseStats>, Vec<String>) {
    let c = connect_fleet(server, HONEST, Duration::from_secs(30));
    assert_eq!(c.connected(), HONEST, "honest players connect");
    let index = c.index();
    let Clients { mut fleet, ids, .. } = c;
    let mut errors = Vec::new();
    let mut stats: Vec<PhaseStats> = vec![PhaseStats::default(); 16];
    let mut next_send = vec![0u32; HONEST];
    let mut next_recv = vec![0u32; HONEST];
    let mut sent_at: HashMap<(usize, u32), (Instant, usize)> = HashMap::new();
    let mut tick = Instant::now();
    let mut draining_since: Option<Instant> = None;
    loop {
        let stopping = stop.load(Relaxed);
        if stopping && draining_since.is_none() {
            draining_since = Some(Instant::now());
        }
        if !stopping && Instant::now() >= tick {
            tick += Duration::from_millis(50);
            let p = phase.load(Relaxed);
            for (c, id) in ids.iter().enumerate() {
                let seq = next_send[c];
                let m = tagged(c as u32, seq);
                if fleet.send(*id, 0, &m).is_ok() {
                    next_send[c] += 1;
                    sent_at.insert((c, seq), (Instant::now(), p));
                    stats[p].sent += 1;
                } else {
                    errors.push(format!("player {c}: reliable send refused"));
                }
                let _ = fleet.send(*id, 2, &m);
            }
        }
        fleet.drive(Duration::from_millis(2)).expect("drive");
        while let Some((id, ev)) = fleet.poll_event() {
            let c = index[&id];
            match ev {
                ClientEvent::Message { channel: 0, data } => {
                    let Some((_, seq)) = untag(&data) else {
                        errors.push(format!("player {c}: malformed echo {data:?}"));
                        continue;
                    };
                    if seq != next_recv[c] {
                        errors.push(format!("player {c}: echo {seq}, expected {}", next_recv[c]));
                    }
                    next_recv[c] = seq + 1;
                    if let Some((t, p)) = sent_at.remove(&(c, seq)) {
                        stats[p].rtt_us.push(t.elapsed().as_micros() as u64);
                    }
                }
                ClientEvent::Disconnected { reason } => {
                    errors.push(format!("player {c} lost its connection: {reason:?}"));
                }
                _ => {}
            }
        }
        if let Some(since) = draining_since
            && (sent_at.is_empty() || since.elapsed() > Duration::from_secs(30))
        {
            break;
        }
    }
    if !sent_at.is_empty() {
        errors.push(format!(
            "{} reliable messages never came back",
            sent_at.len()
        ));
    }
    (stats, errors)
}

/// A raw IPv4 socket that sends hand-built UDP datagrams from any source address.
struct Raw(Socket);

impl Raw {
    fn new() -> Self {
        let s =
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("raw socket (root)");
        s.set_header_included_v4(true).expect("IP_HDRINCL");
        Self(s)
    }

    /// IPv4 + UDP around `payload` from `src` to `dst`, complete checksums.
    fn packet(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        let route = Route {
            local_mac: Address([2, 0, 0, 0, 0, 2]),
            peer_mac: Address([2, 0, 0, 0, 0, 1]),
            vlan: None,
            local: SocketAddr::V4(src),
            peer: SocketAddr::V4(dst),
            dscp: 0,
        };
        let mut buf = vec![0u8; 14 + 20 + 8 + payload.len()];
        route.payload_mut(&mut buf)[..payload.len()].copy_from_slice(payload);
        let len =
            datagram::build(&mut buf, &route, payload.len(), Kernel::detect()).expect("build");
        buf[14..len].to_vec()
    }

    fn send(&self, pkt: &[u8], dst: SocketAddrV4) -> bool {
        self.0
            .send_to(pkt, &SockAddr::from(SocketAddr::V4(dst)))
            .is_ok()
    }
}

/// A spoofed source in the client's subnet (not its own address).
fn spoofed(i: u64) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::new(198, 18, 0, 10 + (i % 200) as u8),
        1024 + (i % 60_000) as u16,
    )
}

/// A real padded hello, as a client sends it.
fn hello_bytes(server: SocketAddr) -> Vec<u8> {
    let mut c = Client::new(
        ClientConfig::default(),
        server,
        7,
        Instant::now(),
        xrudp_proto::session::Security::insecure_from_seed(7),
    )
    .expect("client");
    let mut buf = vec![0u8; 1500];
    let t = c.poll_transmit(Instant::now(), &mut buf).expect("hello");
    buf.truncate(t.len);
    buf
}

/// One attack: runs until the given instant, returns how many datagrams it sent.
type Attack = Box<dyn FnOnce(Instant) -> u64 + Send>;

/// Runs `attack` for one phase in the client namespace; returns how many datagrams it sent.
fn run_attack(ns: &str, attack: impl FnOnce(Instant) -> u64 + Send + 'static) -> u64 {
    let until = Instant::now() + PHASE;
    Topology::in_ns(ns, move || attack(until))
}

#[test]
fn honest_players_keep_playing_through_every_attack() {
    let t = Topology::new(1, true);
    let engine = Engine::start(
        &t,
        &["--port", &PORT.to_string(), "--max-connections", "200"],
    );
    let server = t.srv_addr(PORT);
    let SocketAddr::V4(server4) = server else {
        unreachable!()
    };
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let players = {
        let (ns, phase, stop) = (t.ns_cli.clone(), Arc::clone(&phase), Arc::clone(&stop));
        std::thread::spawn(move || {
            Topology::in_ns(&ns, move || honest_players(server, &phase, &stop))
        })
    };
    let _ = engine.wait_for(Duration::from_secs(30), |s| {
        protocol_sum(s, |f| f.connections) == HONEST as u64
    });
    let mut report: Vec<(&str, u64, Snapshot, Snapshot)> = Vec::new();
    // Phase 0: baseline.
    std::thread::sleep(PHASE);
    let mut before = engine.snapshot();
    let attacks: Vec<(&str, Attack)> = vec![
        (
            "junk",
            Box::new(move |until| {
                let socks: Vec<UdpSocket> = (0..4)
                    .map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind"))
                    .collect();
                let mut n = 0u64;
                let mut x = 0x9e37_79b9_7f4a_7c15u64;
                let mut buf = [0u8; 1400];
                while Instant::now() < until {
                    for s in &socks {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let len = 1 + (x % 1399) as usize;
                        buf[..8].copy_from_slice(&x.to_le_bytes());
                        if s.send_to(&buf[..len], server).is_ok() {
                            n += 1;
                        }
                    }
                }
                n
            }),
        ),
        (
            "malformed: length lies, bad checksums, bad CRC, bad magic",
            Box::new(move |until| {
                let raw = Raw::new();
                let mut good =
                    xrudp_tests::frames::rudp_payload(xrudp_common::rudp::PacketType::Data, 40);
                xrudp_packet::crc::rudp_seal(&mut good).expect("seal");
                let mut n = 0u64;
                let mut i = 0u64;
                while Instant::now() < until {
                    i += 1;
                    let src = spoofed(i);
                    let mut pkt = Raw::packet(src, server4, &good);
                    match i % 4 {
                        0 => pkt[24..26].copy_from_slice(&200u16.to_be_bytes()), // UDP length beyond the datagram
                        1 => pkt[26] ^= 0xff,                                    // bad UDP checksum
                        2 => {
                            let mut body = good.clone();
                            body[20] ^= 1; // bad CRC32C, valid checksum
                            pkt = Raw::packet(src, server4, &body);
                        }
                        _ => {
                            let mut body = good.clone();
                            body[0] = b'Q'; // wrong magic
                            pkt = Raw::packet(src, server4, &body);
                        }
                    }
                    n += u64::from(raw.send(&pkt, server4));
                }
                n
            }),
        ),
        (
            "spoofed handshake flood",
            Box::new(move |until| {
                let raw = Raw::new();
                let hello = hello_bytes(server);
                let mut n = 0u64;
                let mut i = 0u64;
                while Instant::now() < until {
                    i += 1;
                    n += u64::from(raw.send(&Raw::packet(spoofed(i), server4, &hello), server4));
                }
                n
            }),
        ),
        (
            "replayed packets of a real connection",
            Box::new(move |until| {
                // A real client over a real socket, recording everything it sends.
                let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
                sock.set_read_timeout(Some(Duration::from_millis(5)))
                    .expect("timeout");
                let mut c = Client::new(
                    ClientConfig::default(),
                    server,
                    11,
                    Instant::now(),
                    xrudp_proto::session::Security::insecure_from_seed(11),
                )
                .expect("client");
                let mut sent: Vec<Vec<u8>> = Vec::new();
                let mut buf = vec![0u8; 2048];
                let t0 = Instant::now();
                while Instant::now() < t0 + Duration::from_secs(2) {
                    let now = Instant::now();
                    while let Some(tr) = c.poll_transmit(now, &mut buf) {
                        sock.send_to(&buf[..tr.len], server).expect("send");
                        sent.push(buf[..tr.len].to_vec());
                    }
                    if let Ok((len, from)) = sock.recv_from(&mut buf) {
                        c.handle_datagram(Instant::now(), from, &buf[..len]);
                    }
                    c.handle_timeout(Instant::now());
                    while let Some(ev) = c.poll_event() {
                        if matches!(ev, ClientEvent::Connected) {
                            for k in 0..20u8 {
                                let _ = c.send(0, &[k; 16]);
                            }
                        }
                    }
                }
                let mut n = 0u64;
                while Instant::now() < until {
                    for d in &sent {
                        if sock.send_to(d, server).is_ok() {
                            n += 1;
                        }
                    }
                }
                n
            }),
        ),
        (
            "connection slot grab beyond --max-connections",
            Box::new(move |until| {
                let mut fleet = Fleet::new().expect("fleet");
                let mut n = 0u64;
                for _ in 0..250 {
                    if fleet
                        .add(
                            server,
                            ClientConfig::default(),
                            &xrudp_client::Protection::default(),
                        )
                        .is_ok()
                    {
                        n += 1;
                    }
                }
                while Instant::now() < until {
                    fleet.drive(Duration::from_millis(5)).expect("drive");
                    while fleet.poll_event().is_some() {}
                }
                n
            }),
        ),
    ];
    for (i, (name, attack)) in attacks.into_iter().enumerate() {
        phase.store(i + 1, Relaxed);
        let sent = run_attack(&t.ns_cli, attack);
        let after = engine.snapshot();
        report.push((name, sent, before, after.clone()));
        before = after;
    }
    phase.store(15, Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Relaxed);
    let (mut stats, errors) = players.join().expect("players");
    assert!(
        errors.is_empty(),
        "honest players were hurt: {:?}",
        &errors[..errors.len().min(10)]
    );

    let mut base = stats[0].rtt_us.clone();
    let (b50, b99) = (percentile(&mut base, 50), percentile(&mut base, 99));
    eprintln!(
        "baseline: {} reliable messages, RTT p50 {b50} us p99 {b99} us",
        stats[0].sent
    );
    for (i, (name, sent, b, a)) in report.iter().enumerate() {
        let rtt = &mut stats[i + 1].rtt_us;
        let (p50, p99) = (percentile(rtt, 50), percentile(rtt, 99));
        let d = |f: &dyn Fn(&Snapshot) -> u64| f(a).saturating_sub(f(b));
        let xdp_drops: Vec<String> = a
            .xdp
            .iter()
            .filter(|(k, _)| k.starts_with("drop_"))
            .map(|(k, v)| (k, v.saturating_sub(b.xdp.get(k).copied().unwrap_or(0))))
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        eprintln!(
            "{name}: sent {sent} ({:.0}/s); honest RTT p50 {p50} us p99 {p99} us; xdp drops [{}]; worker drops checksum={} malformed={}; \
             protocol: decode_errors={} crc={} handshakes={} hellos_shed={} bad_cookies={} rejected_full={} unknown_conn={}",
            *sent as f64 / PHASE.as_secs_f64(),
            xdp_drops.join(" "),
            d(&|s| s.queues.iter().map(|q| q.drop_checksum).sum()),
            d(&|s| s.queues.iter().map(|q| q.drop_malformed).sum()),
            d(&|s| protocol_sum(s, |f| f.decode_errors)),
            d(&|s| protocol_sum(s, |f| f.crc_failures)),
            d(&|s| protocol_sum(s, |f| f.handshakes)),
            d(&|s| protocol_sum(s, |f| f.hellos_shed)),
            d(&|s| protocol_sum(s, |f| f.bad_cookies)),
            d(&|s| protocol_sum(s, |f| f.rejected.get("server_full").copied().unwrap_or(0))),
            d(&|s| protocol_sum(s, |f| f.unknown_connection)),
        );
        assert!(*sent > 0, "{name}: the attack sent nothing");
        assert!(
            p50 <= 2 * b50 + 5_000,
            "{name}: honest p50 {p50} us vs baseline {b50} us"
        );
    }
    // Spoofed hellos created no state: only honest players and the slot grabbers hold slots.
    let last = &report.last().expect("phases").3;
    assert!(
        protocol_sum(last, |f| f.connections) <= 200,
        "never more than --max-connections"
    );
    let spoof = &report[2];
    assert!(
        protocol_sum(&spoof.3, |f| f.handshakes) > protocol_sum(&spoof.2, |f| f.handshakes),
        "spoofed hellos were answered statelessly"
    );
    assert_eq!(
        protocol_sum(&spoof.3, |f| f.connections),
        HONEST as u64,
        "no state for unproven addresses"
    );
    let grab = &report[4];
    assert!(
        protocol_sum(&grab.3, |f| f
            .rejected
            .get("server_full")
            .copied()
            .unwrap_or(0))
            >= 150,
        "slot grabbers beyond the limit were refused as full"
    );
    let malformed = &report[1];
    let drops = |s: &Snapshot| -> u64 {
        s.xdp
            .iter()
            .filter(|(k, _)| k.starts_with("drop_"))
            .map(|(_, v)| v)
            .sum::<u64>()
            + s.queues
                .iter()
                .map(|q| q.drop_checksum + q.drop_malformed)
                .sum::<u64>()
            + protocol_sum(s, |f| f.decode_errors)
    };
    assert!(
        drops(&malformed.3) - drops(&malformed.2) > 0,
        "malformed datagrams are counted by reason"
    );
}

/// The server never sends an unproven address more bytes than it received from it.
#[test]
fn spoofed_hellos_are_not_amplified() {
    let t = Topology::new(1, true);
    let engine = Engine::start(&t, &["--port", &PORT.to_string()]);
    let server = t.srv_addr(PORT);
    let SocketAddr::V4(server4) = server else {
        unreachable!()
    };
    let before = engine.snapshot();
    let sent = Topology::in_ns(&t.ns_cli.clone(), move || {
        let raw = Raw::new();
        let hello = hello_bytes(server);
        let mut n = 0u64;
        for i in 0..5_000u64 {
            n += u64::from(raw.send(&Raw::packet(spoofed(i), server4, &hello), server4));
            // 256 at a time, well within the queue's 1,792 receive frames even if the
            // worker is slow to wake (the kernel would drop what does not fit).
            if i % 256 == 255 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        n
    });
    let after = engine.wait_for(Duration::from_secs(10), |s| {
        protocol_sum(s, |f| f.handshakes) - protocol_sum(&before, |f| f.handshakes) >= sent
    });
    let rx: u64 = after.queues.iter().map(|q| q.rx_bytes).sum::<u64>()
        - before.queues.iter().map(|q| q.rx_bytes).sum::<u64>();
    let tx: u64 = after.queues.iter().map(|q| q.tx_bytes).sum::<u64>()
        - before.queues.iter().map(|q| q.tx_bytes).sum::<u64>();
    eprintln!(
        "spoofed hellos: {sent} sent, server received {rx} B and sent {tx} B (ratio {:.3})",
        tx as f64 / rx.max(1) as f64
    );
    assert_eq!(
        protocol_sum(&after, |f| f.handshakes) - protocol_sum(&before, |f| f.handshakes),
        sent,
        "each hello got one stateless answer"
    );
    assert_eq!(
        protocol_sum(&after, |f| f.connections),
        0,
        "no state for spoofed addresses"
    );
    assert!(
        tx < rx,
        "replies to unproven addresses are smaller than what they sent ({tx} ≥ {rx})"
    );
}

/// `--hello-rate` sheds first hellos past the budget and counts them: 2,000 spoofed hellos
/// in bursts of 200 (10 ms apart: 20 times the budget's rate, and never more at once
/// than the queue's 1,792 receive frames hold, which one unpaced burst of 2,000 overran
/// when the worker was slow to wake, so the kernel dropped 208 before the engine saw
/// them) against a budget of 100 a second. The token bucket starts full and refills at
/// 100/s, so over the measured span of the run at most `100 × (1 + seconds)` hellos are
/// answered; every other one is shed. Counted, not timed: a stall of this VM only raises
/// the bound. With `--admission on` the XDP program sheds them (`drop_hello_budget`, a
/// budget per CPU); with `--admission off` each worker does (`hellos_shed`).
fn hello_rate_sheds_and_counts_hellos_past_the_budget(admission: &str) {
    const RATE: u64 = 100;
    let t = Topology::new(1, true);
    let engine = Engine::start(
        &t,
        &[
            "--port",
            &PORT.to_string(),
            "--hello-rate",
            &RATE.to_string(),
            "--admission",
            admission,
        ],
    );
    let in_xdp = admission == "on";
    let server = t.srv_addr(PORT);
    let SocketAddr::V4(server4) = server else {
        unreachable!()
    };
    // The budget holders: each worker with admission off, each CPU with it on.
    let holders = if in_xdp {
        std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
    } else {
        engine.snapshot().queues.len() as u64
    };
    let before = engine.snapshot();
    let start = Instant::now();
    let sent = Topology::in_ns(&t.ns_cli.clone(), move || {
        let raw = Raw::new();
        let hello = hello_bytes(server);
        let mut n = 0u64;
        for i in 0..2_000u64 {
            n += u64::from(raw.send(&Raw::packet(spoofed(i), server4, &hello), server4));
            if i % 200 == 199 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        n
    });
    let answered =
        |s: &Snapshot| protocol_sum(s, |f| f.handshakes) - protocol_sum(&before, |f| f.handshakes);
    let shed_in = |s: &Snapshot| {
        if in_xdp {
            s.xdp_counter("drop_hello_budget").unwrap_or(0)
        } else {
            protocol_sum(s, |f| f.hellos_shed)
        }
    };
    let shed = |s: &Snapshot| shed_in(s) - shed_in(&before);
    let after = engine.wait_for(Duration::from_secs(30), |s| answered(s) + shed(s) >= sent);
    let secs = start.elapsed().as_secs() + 1;
    eprintln!(
        "--hello-rate {RATE}, --admission {admission}: {sent} hellos sent, {} answered, {} shed, within {secs} s",
        answered(&after),
        shed(&after)
    );
    assert!(sent >= 1_000, "the burst was sent ({sent})");
    assert_eq!(
        answered(&after) + shed(&after),
        sent,
        "every hello is answered or shed, and counted"
    );
    let budget = holders * RATE * (1 + secs);
    assert!(
        answered(&after) <= budget,
        "at most the budget is answered: {} > {budget}",
        answered(&after)
    );
    assert!(
        shed(&after) >= sent - budget.min(sent),
        "the rest is shed: {} shed of {sent}",
        shed(&after)
    );
    assert!(shed(&after) > 0, "a burst past the budget sheds");
}

#[test]
fn hello_rate_sheds_and_counts_hellos_past_the_budget_in_xdp() {
    hello_rate_sheds_and_counts_hellos_past_the_budget("on");
}

#[test]
fn hello_rate_sheds_and_counts_hellos_past_the_budget_in_the_worker() {
    hello_rate_sheds_and_counts_hellos_past_the_budget("off");
}
