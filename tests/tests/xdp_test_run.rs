//! The XDP program itself, run by the kernel on crafted frames (BPF_PROG_TEST_RUN):
//! every row of the steering table must get the expected action and bump exactly the
//! expected counter. A socket bound on queue 0 of a test veth fills XSKMAP slot 0, so
//! steered frames return XDP_REDIRECT (the kernel checks the slot, test_run does not
//! deliver the frame).

use xrudp::{
    loader::Program,
    sys::xsk::{Xsk, XskConfig, ZeroCopy},
};
use xrudp_common::maps::Counter;
use xrudp_tests::{
    Topology,
    frames::{self, Expect},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

fn counter_delta(before: &[u64], after: &[u64]) -> Vec<(Counter, u64)> {
    Counter::ALL
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(c, (b, a))| (*c, a - b))
        .collect()
}

#[test]
fn table_through_bpf_prog_test_run() {
    let t = Topology::new(1, false);
    let iface = t.if_srv.clone();
    let (failures, rows) = Topology::in_ns(&t.ns_srv, move || {
        let mut failures = Vec::new();
        let mut rows = 0;
        // One program and one socket for both filter settings: the kernel releases an
        // AF_XDP socket asynchronously, so binding the queue again at once can see EBUSY.
        let mut prog = Program::load().expect("loading the XDP program");
        let cfg = XskConfig {
            frames: 256,
            frame_size: 2048,
            ring_size: 64,
            zero_copy: ZeroCopy::Off,
            need_wakeup: true,
            huge_pages: false,
        };
        let xsk = Xsk::open(&iface, 0, &cfg).expect("binding an AF_XDP socket on queue 0");
        prog.register_socket(0, xsk.fd())
            .expect("filling XSKMAP slot 0");
        for filter in [true, false] {
            prog.configure(&[frames::PORT], filter)
                .expect("configuring maps");
            for c in frames::table()
                .into_iter()
                .filter(|c| c.rudp_filter == filter)
            {
                rows += 1;
                let before = prog.counters().expect("reading counters");
                let action = match prog.test_run(&c.frame) {
                    Ok(a) => a,
                    Err(e) => {
                        failures.push(format!("{}: test_run failed: {e}", c.name));
                        continue;
                    }
                };
                let after = prog.counters().expect("reading counters");
                let (want_action, want_counter) = match c.expect {
                    Expect::Steer => (XDP_REDIRECT, Counter::Redirected),
                    Expect::Pass => (XDP_PASS, Counter::Passed),
                    Expect::Drop(r) => (XDP_DROP, r),
                };
                let delta = counter_delta(&before, &after);
                let want_delta = vec![(Counter::Seen, 1), (want_counter, 1)];
                let mut sorted = delta.clone();
                sorted.sort_by_key(|(c, _)| *c as u32);
                if action != want_action || sorted != want_delta {
                    failures.push(format!(
                        "{} (filter {filter}): action {action} counters {delta:?}; want action {want_action} counters {want_delta:?}",
                        c.name
                    ));
                }
            }
        }
        drop(xsk);
        (failures, rows)
    });
    assert_eq!(rows, frames::table().len(), "every row ran in the kernel");
    assert!(
        failures.is_empty(),
        "XDP program disagrees with the table:\n{}",
        failures.join("\n")
    );
}

#[test]
fn steered_frame_without_a_socket_falls_back_to_pass() {
    let t = Topology::new(1, false);
    Topology::in_ns(&t.ns_srv, || {
        let mut prog = Program::load().expect("loading the XDP program");
        prog.configure(&[frames::PORT], true)
            .expect("configuring maps");
        let frame = frames::FrameSpec::udp(
            frames::PORT,
            frames::rudp_payload(xrudp_common::rudp::PacketType::Data, 8),
        )
        .build();
        let before = prog.counters().expect("counters");
        assert_eq!(prog.test_run(&frame).expect("test_run"), XDP_PASS);
        let after = prog.counters().expect("counters");
        assert_eq!(
            counter_delta(&before, &after),
            vec![(Counter::Seen, 1), (Counter::PassedNoSocket, 1)]
        );
    });
}

/// Admission control's verdicts, each run in the kernel on a crafted frame: the action
/// and the exact counter deltas. Budgets are spent inside one `repeat` run, which the
/// kernel keeps on one CPU, so the per-CPU buckets see every packet of the row.
mod admission {
    use super::*;
    use xrudp::{loader::AdmissionRates, sys::bpf::SessionMap};
    use xrudp_common::{
        admit::{Peer, Rate, SessionKey},
        rudp::PacketType,
    };

    /// Per-source bucket: 10 at once, then one a second (nothing refills during a run).
    const SOURCE_BURST: u32 = 10;
    /// Handshake budget: 5 first hellos at once, then one a second.
    const HELLO_BURST: u32 = 5;
    /// Migration budget: 16 migration attempts at once, then one a second. The three
    /// migration rows before the one that finds it spent take 1 + 1 + `SOURCE_BURST`.
    const MIGRATION_BURST: u32 = 16;

    /// A frame from `src` (IPv4 or IPv6, per `ipv6`) port `sport`, of type `kind`,
    /// carrying `conn_id`.
    fn frame(kind: PacketType, conn_id: u32, ipv6: bool, src: &[u8], sport: u16) -> Vec<u8> {
        let mut payload = frames::rudp_payload(kind, 40);
        payload[8..12].copy_from_slice(&conn_id.to_be_bytes());
        let mut spec = frames::FrameSpec::udp(frames::PORT, payload);
        spec.ipv6 = ipv6;
        let mut f = spec.build();
        let (src_at, l4) = if ipv6 {
            (14 + 8, 14 + 40)
        } else {
            (14 + 12, 14 + 20)
        };
        f[src_at..src_at + src.len()].copy_from_slice(src);
        f[l4..l4 + 2].copy_from_slice(&sport.to_be_bytes());
        f
    }

    fn v4(last: u8) -> [u8; 4] {
        [198, 18, 0, last]
    }

    fn v6(host: u8, prefix: u8) -> [u8; 16] {
        [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, prefix, 0, 0, 0, 0, 0, 0, 0, host,
        ]
    }

    fn peer(ip: std::net::IpAddr, port: u16, may_migrate: bool) -> Peer {
        Peer::new(std::net::SocketAddr::new(ip, port), may_migrate)
    }

    struct Row {
        name: &'static str,
        /// Run first, uncounted: spends a budget the row then finds empty.
        spend: Option<(Vec<u8>, u32)>,
        frame: Vec<u8>,
        repeat: u32,
        action: u32,
        delta: Vec<(Counter, u64)>,
    }

    fn rows(sessions: &SessionMap) -> Vec<Row> {
        use Counter::{
            DropHelloBudget, DropMigrationBudget, DropRateLimited, DropUnknownSession,
            DropWrongAddress, MigrationAttempts, Redirected, Seen,
        };
        let live = |conn_id: u32, p: Peer| {
            sessions
                .insert(&SessionKey { queue: 0, conn_id }, &p)
                .expect("publishing a session");
        };
        let ip4 = |last: u8| std::net::IpAddr::from(v4(last));
        let ip6 = |host: u8, prefix: u8| std::net::IpAddr::from(v6(host, prefix));
        live(100, peer(ip4(2), 40000, false));
        live(101, peer(ip4(2), 40000, false));
        live(102, peer(ip4(3), 40000, true));
        live(103, peer(ip6(2, 0), 40000, true));
        live(104, peer(ip4(4), 40000, true));
        vec![
            Row {
                spend: None,
                name: "live session, its own address: steered",
                frame: frame(PacketType::Data, 100, false, &v4(2), 40000),
                repeat: 1,
                action: XDP_REDIRECT,
                delta: vec![(Seen, 1), (Redirected, 1)],
            },
            Row {
                spend: None,
                name: "live session's disconnect: steered",
                frame: frame(PacketType::Disconnect, 100, false, &v4(2), 40000),
                repeat: 1,
                action: XDP_REDIRECT,
                delta: vec![(Seen, 1), (Redirected, 1)],
            },
            Row {
                spend: None,
                name: "live IPv6 session, its own address: steered",
                frame: frame(PacketType::Data, 103, true, &v6(2, 0), 40000),
                repeat: 1,
                action: XDP_REDIRECT,
                delta: vec![(Seen, 1), (Redirected, 1)],
            },
            Row {
                spend: None,
                name: "unknown connection id: dropped",
                frame: frame(PacketType::Data, 999, false, &v4(2), 40000),
                repeat: 1,
                action: XDP_DROP,
                delta: vec![(Seen, 1), (DropUnknownSession, 1)],
            },
            Row {
                spend: None,
                // The program's 1,024 slots take 10 bits: this id names slot 100, the
                // live session's, with another generation (a closed connection's id).
                name: "a live slot's id of another generation: dropped",
                frame: frame(PacketType::Data, (3 << 10) + 100, false, &v4(2), 40000),
                repeat: 1,
                action: XDP_DROP,
                delta: vec![(Seen, 1), (DropUnknownSession, 1)],
            },
            Row {
                spend: None,
                name: "connection id 0 on a data packet: dropped",
                frame: frame(PacketType::Data, 0, false, &v4(2), 40000),
                repeat: 1,
                action: XDP_DROP,
                delta: vec![(Seen, 1), (DropUnknownSession, 1)],
            },
            Row {
                spend: None,
                name: "unencrypted session, another address: dropped",
                frame: frame(PacketType::Data, 101, false, &v4(9), 40000),
                repeat: 1,
                action: XDP_DROP,
                delta: vec![(Seen, 1), (DropWrongAddress, 1)],
            },
            Row {
                spend: None,
                name: "unencrypted session, another port: dropped",
                frame: frame(PacketType::Data, 101, false, &v4(2), 40001),
                repeat: 1,
                action: XDP_DROP,
                delta: vec![(Seen, 1), (DropWrongAddress, 1)],
            },
            Row {
                spend: None,
                name: "encrypted session, new address: a migration attempt, steered",
                frame: frame(PacketType::Data, 102, false, &v4(10), 40001),
                repeat: 1,
                action: XDP_REDIRECT,
                delta: vec![(Seen, 1), (Redirected, 1), (MigrationAttempts, 1)],
            },
            Row {
                spend: None,
                name: "encrypted IPv6 session, new address: a migration attempt, steered",
                frame: frame(PacketType::Data, 103, true, &v6(7, 1), 40000),
                repeat: 1,
                action: XDP_REDIRECT,
                delta: vec![(Seen, 1), (Redirected, 1), (MigrationAttempts, 1)],
            },
            Row {
                spend: None,
                name: "migration attempts past the source's budget: dropped",
                frame: frame(PacketType::Data, 104, false, &v4(11), 40000),
                repeat: SOURCE_BURST + 3,
                action: XDP_DROP,
                delta: vec![
                    (Seen, u64::from(SOURCE_BURST + 3)),
                    (Redirected, u64::from(SOURCE_BURST)),
                    (DropRateLimited, 3),
                    (MigrationAttempts, u64::from(SOURCE_BURST)),
                ],
            },
            Row {
                spend: None,
                name: "migration attempts past this CPU's migration budget: dropped",
                frame: frame(PacketType::Data, 102, false, &v4(12), 40000),
                repeat: 6,
                action: XDP_DROP,
                delta: vec![
                    (Seen, 6),
                    (Redirected, 4),
                    (MigrationAttempts, 4),
                    (DropMigrationBudget, 2),
                ],
            },
            Row {
                spend: None,
                name: "a response within the source's budget: steered",
                frame: frame(PacketType::Response, 0, false, &v4(20), 40000),
                repeat: 1,
                action: XDP_REDIRECT,
                delta: vec![(Seen, 1), (Redirected, 1)],
            },
            Row {
                spend: None,
                name: "responses past one source's budget: dropped",
                frame: frame(PacketType::Response, 0, false, &v4(21), 40000),
                repeat: SOURCE_BURST + 4,
                action: XDP_DROP,
                delta: vec![
                    (Seen, u64::from(SOURCE_BURST + 4)),
                    (Redirected, u64::from(SOURCE_BURST)),
                    (DropRateLimited, 4),
                ],
            },
            Row {
                spend: Some((
                    frame(PacketType::Response, 0, true, &v6(8, 5), 40000),
                    SOURCE_BURST,
                )),
                name: "an IPv6 /64 shares one budget: another host of a spent /64 is dropped",
                frame: frame(PacketType::Response, 0, true, &v6(9, 5), 40000),
                repeat: 1,
                action: XDP_DROP,
                delta: vec![(Seen, 1), (DropRateLimited, 1)],
            },
            Row {
                spend: None,
                name: "first hellos past this CPU's handshake budget: dropped",
                frame: frame(PacketType::Hello, 0, false, &v4(30), 40000),
                repeat: HELLO_BURST + 2,
                action: XDP_DROP,
                delta: vec![
                    (Seen, u64::from(HELLO_BURST + 2)),
                    (Redirected, u64::from(HELLO_BURST)),
                    (DropHelloBudget, 2),
                ],
            },
        ]
    }

    /// Sorted by counter index, as the comparison wants.
    fn sorted(mut d: Vec<(Counter, u64)>) -> Vec<(Counter, u64)> {
        d.sort_by_key(|(c, _)| *c as u32);
        d
    }

    #[test]
    fn admission_table_through_bpf_prog_test_run() {
        let t = Topology::new(1, false);
        let iface = t.if_srv.clone();
        let (failures, ran) = Topology::in_ns(&t.ns_srv, move || {
            // Budgets are per CPU: a row that spends one and the row that finds it spent
            // must run on the same CPU.
            let mut one = nix::sched::CpuSet::new();
            one.set(0).expect("CPU 0");
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &one)
                .expect("pinning the test thread to CPU 0");
            let mut prog = Program::load().expect("loading the XDP program");
            let xsk = Xsk::open(&iface, 0, &xsk_config()).expect("binding queue 0");
            prog.register_socket(0, xsk.fd()).expect("XSKMAP slot 0");
            prog.configure(&[frames::PORT], true).expect("configuring");
            prog.admission(Some(AdmissionRates {
                source: Rate::new(1, SOURCE_BURST),
                hello: Rate::new(1, HELLO_BURST),
                migration: Rate::new(1, MIGRATION_BURST),
            }))
            .expect("turning admission on");
            let sessions = prog.session_map().expect("the session map");
            let mut failures = Vec::new();
            let mut ran = 0;
            for row in rows(&sessions) {
                ran += 1;
                if let Some((spend, n)) = &row.spend {
                    prog.test_run_repeat(spend, *n).expect("spending a budget");
                }
                let before = prog.counters().expect("counters");
                let (action, _) = match prog.test_run_repeat(&row.frame, row.repeat) {
                    Ok(r) => r,
                    Err(e) => {
                        failures.push(format!("{}: test_run failed: {e}", row.name));
                        continue;
                    }
                };
                let after = prog.counters().expect("counters");
                let got = sorted(counter_delta(&before, &after));
                let want = sorted(row.delta);
                if action != row.action || got != want {
                    failures.push(format!(
                        "{}: action {action} counters {got:?}; want action {} counters {want:?}",
                        row.name, row.action
                    ));
                }
            }
            // The session closes: its packets are unknown from then on.
            sessions
                .remove(&SessionKey {
                    queue: 0,
                    conn_id: 100,
                })
                .expect("withdrawing a session");
            let before = prog.counters().expect("counters");
            let action = prog
                .test_run(&frame(PacketType::Data, 100, false, &v4(2), 40000))
                .expect("test_run");
            let got = sorted(counter_delta(&before, &prog.counters().expect("counters")));
            if action != XDP_DROP
                || got != vec![(Counter::Seen, 1), (Counter::DropUnknownSession, 1)]
            {
                failures.push(format!("closed session: action {action} counters {got:?}"));
            }
            drop(xsk);
            (failures, ran)
        });
        assert_eq!(ran, 16, "every row ran in the kernel");
        assert!(
            failures.is_empty(),
            "admission control disagrees with the table:\n{}",
            failures.join("\n")
        );
    }

    /// `--admission off`: the same frames reach the socket as before admission control
    /// existed (only the pre-filter acts), and the kernel's mean time per run, admission
    /// off and on, is printed for docs/BENCHMARKS.md.
    #[test]
    fn admission_off_steers_what_admission_on_drops_and_both_costs_are_measured() {
        const REPEAT: u32 = 1_000_000;
        let t = Topology::new(1, false);
        let iface = t.if_srv.clone();
        Topology::in_ns(&t.ns_srv, move || {
            let mut prog = Program::load().expect("loading the XDP program");
            let xsk = Xsk::open(&iface, 0, &xsk_config()).expect("binding queue 0");
            prog.register_socket(0, xsk.fd()).expect("XSKMAP slot 0");
            prog.configure(&[frames::PORT], true).expect("configuring");
            let sessions = prog.session_map().expect("the session map");
            sessions
                .insert(
                    &SessionKey {
                        queue: 0,
                        conn_id: 7,
                    },
                    &peer(std::net::IpAddr::from(v4(2)), 40000, true),
                )
                .expect("publishing");
            let unknown = frame(PacketType::Data, 999, false, &v4(2), 40000);
            let live = frame(PacketType::Data, 7, false, &v4(2), 40000);
            let mut report = Vec::new();
            for on in [false, true] {
                prog.admission(on.then(AdmissionRates::default))
                    .expect("admission");
                for (what, f, want) in [
                    (
                        "unknown id",
                        &unknown,
                        if on { XDP_DROP } else { XDP_REDIRECT },
                    ),
                    ("live session", &live, XDP_REDIRECT),
                ] {
                    let before = prog.counters().expect("counters");
                    let (action, per_run) = prog.test_run_repeat(f, REPEAT).expect("test_run");
                    let after = prog.counters().expect("counters");
                    assert_eq!(action, want, "admission {on}, {what}");
                    assert_eq!(
                        after[Counter::Seen as usize] - before[Counter::Seen as usize],
                        u64::from(REPEAT),
                        "every repeat ran the program"
                    );
                    report.push(format!(
                        "admission {}: {what}: {} ns per packet (BPF_PROG_TEST_RUN, repeat {REPEAT})",
                        if on { "on" } else { "off" },
                        per_run.as_nanos()
                    ));
                }
            }
            drop(xsk);
            eprintln!("{}", report.join("\n"));
        });
    }

    fn xsk_config() -> XskConfig {
        XskConfig {
            frames: 256,
            frame_size: 2048,
            ring_size: 64,
            zero_copy: ZeroCopy::Off,
            need_wakeup: true,
            huge_pages: false,
        }
    }
}
