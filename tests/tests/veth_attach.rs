//! `xrudp attach` end to end on a veth pair between two fresh namespaces:
//! steered datagrams reach AF_XDP (counted at the XDP program and at the workers),
//! everything else still reaches the kernel, and the engine leaves nothing attached
//! whether it exits by SIGTERM or dies by SIGKILL.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use nix::sys::signal::Signal;
use xrudp_tests::{Engine, Topology, send_udp};

const PORT: u16 = 7777;
const OTHER: u16 = 7778;

#[test]
fn steered_port_reaches_af_xdp_and_the_kernel_keeps_the_rest() {
    let t = Topology::new(2, false);
    let mut engine = Engine::start(&t, &["--port", &PORT.to_string(), "--app", "discard"]);
    let snap = engine.snapshot();
    assert_eq!(snap.queues.len(), 2, "one socket per active veth queue");
    assert_eq!(snap.xdp_mode, "native");
    assert!(!snap.zero_copy, "veth binds AF_XDP in copy mode");

    // A kernel socket on another port in the server namespace, read while we send.
    let n_other = 300;
    let other = Topology::in_ns(&t.ns_srv, || {
        UdpSocket::bind(("0.0.0.0", OTHER)).expect("bind other port")
    });
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let receiver = std::thread::spawn(move || {
        let mut got = 0;
        let mut buf = [0u8; 2048];
        while got < n_other {
            match other.recv(&mut buf) {
                Ok(50) => got += 1,
                Ok(n) => panic!("unexpected {n}-byte datagram on the other port"),
                Err(e) => panic!("kernel socket on port {OTHER} got {got}/{n_other}: {e}"),
            }
        }
        got
    });

    let n4 = 2_000;
    let n6 = 500;
    let dst4 = t.srv_addr(PORT);
    let dst6: SocketAddr = format!("[{}]:{PORT}", t.ip6_srv).parse().expect("addr");
    let dst_other = t.srv_addr(OTHER);
    assert_eq!(
        send_udp(&t.ns_cli, dst4, n4, 200, 64, Duration::from_millis(2)).expect("send v4"),
        n4
    );
    assert_eq!(
        send_udp(&t.ns_cli, dst6, n6, 100, 64, Duration::from_millis(2)).expect("send v6"),
        n6
    );
    assert_eq!(
        send_udp(
            &t.ns_cli,
            dst_other,
            n_other,
            50,
            64,
            Duration::from_millis(2)
        )
        .expect("send other"),
        n_other
    );

    assert_eq!(
        receiver.join().expect("receiver"),
        n_other,
        "the kernel got every other-port datagram"
    );

    let want = (n4 + n6) as u64;
    let snap = engine.wait_for(Duration::from_secs(10), |s| {
        s.queues.iter().map(|q| q.rx_packets).sum::<u64>() >= want
    });
    assert_eq!(
        snap.xdp_counter("redirected"),
        Some(want),
        "XDP redirected exactly what was sent: {:?}",
        snap.xdp
    );
    let rx: u64 = snap.queues.iter().map(|q| q.rx_packets).sum();
    assert_eq!(rx, want, "workers received every redirected datagram");
    assert_eq!(snap.xdp_counter("passed_no_socket"), Some(0));
    assert!(
        snap.xdp_counter("passed").unwrap_or(0) >= n_other as u64,
        "other-port datagrams were passed: {:?}",
        snap.xdp
    );
    for q in &snap.queues {
        let st = q.xdp_statistics.expect("XDP_STATISTICS readable");
        assert_eq!(
            st.rx_dropped + st.rx_ring_full,
            0,
            "queue {} dropped frames: {st:?}",
            q.queue
        );
    }

    // ICMP echo still answered by the server's kernel.
    let ping = Topology::exec(
        &t.ns_cli,
        &["ping", "-c", "3", "-i", "0.2", "-W", "5", &t.ip_srv],
    );
    assert!(
        ping.status.success(),
        "ping failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    assert_ne!(t.srv_xdp_prog(), 0, "program attached while running");
    let status = engine.signal_and_wait(Signal::SIGTERM);
    assert!(
        status.success(),
        "SIGTERM → exit 0, got {status}\n{}",
        engine.log_text()
    );
    assert_eq!(t.srv_xdp_prog(), 0, "SIGTERM left the XDP program attached");
}

#[test]
fn second_attach_names_the_running_engine() {
    let t = Topology::new(1, false);
    let first = Engine::start(&t, &["--port", "7777", "--app", "discard"]);
    let first_pid = first.snapshot().pid;
    let err = Engine::try_start(&t, &["--port", "7777"]).expect_err("a second attach must fail");
    assert!(err.0.contains("exited with exit status: 1"), "{err:?}");
    assert!(
        err.1.contains(&format!("engine pid {first_pid}")),
        "message names the engine: {}",
        err.1
    );
}

#[test]
fn sigkill_leaves_nothing_attached_and_a_fresh_attach_succeeds() {
    let t = Topology::new(1, false);
    let mut engine = Engine::start(&t, &["--port", "7777", "--app", "discard"]);
    assert_ne!(t.srv_xdp_prog(), 0);
    let status = engine.signal_and_wait(Signal::SIGKILL);
    assert!(!status.success());
    // The bpf_link closes with the process; give the kernel a moment to release it.
    let attached = t.srv_xdp_detached_within(Duration::from_secs(5));
    assert_eq!(attached, 0, "SIGKILL left program {attached} attached");
    let again = Engine::start(&t, &["--port", "7777", "--app", "discard"]);
    let dst = t.srv_addr(7777);
    send_udp(&t.ns_cli, dst, 100, 64, 50, Duration::from_millis(2)).expect("send");
    let snap = again.wait_for(Duration::from_secs(10), |s| {
        s.xdp_counter("redirected") == Some(100)
    });
    assert_eq!(
        snap.xdp_counter("redirected"),
        Some(100),
        "the restarted engine serves traffic"
    );
}

#[test]
fn detach_refuses_a_live_engine_and_removes_a_leftover_attachment() {
    let t = Topology::new(1, false);
    let bin = xrudp_tests::xrudp_bin();
    let bin = bin.to_str().expect("utf-8 path").to_owned();
    let engine = Engine::start(&t, &["--port", "7777", "--app", "discard"]);
    let live = Topology::exec(&t.ns_srv, &[&bin, "detach", "--iface", &t.if_srv]);
    assert!(
        !live.status.success(),
        "detach must refuse while an engine runs"
    );
    let msg = String::from_utf8_lossy(&live.stderr);
    assert!(msg.contains("running xrudp engine"), "{msg}");
    assert_ne!(
        t.srv_xdp_prog(),
        0,
        "the refused detach left the engine attached"
    );
    drop(engine);

    // A leftover: the program attached by a process that is not a running engine (this
    // test), as a crashed supervisor or a hung old process would leave it.
    let iface = t.if_srv.clone();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let ns = t.ns_srv.clone();
        move || {
            Topology::in_ns(&ns, move || {
                let mut prog = xrudp::loader::Program::load().expect("load");
                prog.configure(&[7777], true).expect("configure");
                prog.attach(&iface, xrudp::loader::ModeChoice::Auto)
                    .expect("attach");
                ready_tx.send(()).expect("signal");
                let _ = rx.recv();
                drop(prog);
            });
        }
    });
    ready_rx.recv().expect("holder attached");
    assert_ne!(t.srv_xdp_prog(), 0, "leftover attached");
    let out = Topology::exec(&t.ns_srv, &[&bin, "detach", "--iface", &t.if_srv]);
    assert!(
        out.status.success(),
        "detach failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed "),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(t.srv_xdp_prog(), 0, "detach left the program attached");
    let again = Topology::exec(&t.ns_srv, &[&bin, "detach", "--iface", &t.if_srv]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to do"));
    tx.send(()).expect("release holder");
    holder.join().expect("holder thread");
}
