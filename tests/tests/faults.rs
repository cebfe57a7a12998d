//! Bad configuration and faults: every mistake gets one clear message, a non-zero exit
//! and nothing left attached; signals and interface changes never hang the engine.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use nix::sys::signal::Signal;
use xrudp_proto::{ClientEvent, DisconnectReason};
use xrudp_tests::{Clients, Engine, Topology, connect_fleet, drive_until, protocol_sum, xrudp_bin};

/// Runs `xrudp attach <args>` in the server namespace; returns (exit code, stderr).
fn attach(t: &Topology, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &t.ns_srv])
        .arg(xrudp_bin())
        .arg("attach")
        .args(args)
        .output()
        .expect("running xrudp attach");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_refused(t: &Topology, args: &[&str], says: &str) {
    let (code, err) = attach(t, args);
    assert!(
        matches!(code, Some(c) if c != 0),
        "{args:?} must fail, got {code:?}: {err}"
    );
    assert!(
        err.contains(says),
        "{args:?}: the message should say {says:?}, got:\n{err}"
    );
    let errors = err.lines().filter(|l| l.starts_with("error:")).count();
    assert!(errors <= 1, "{args:?}: one message, not {errors}:\n{err}");
    assert_eq!(t.srv_xdp_prog(), 0, "{args:?}: nothing may stay attached");
    let claim = xrudp::runtime::base_dir()
        .join(format!("net-{}", xrudp_tests::netns_inode(&t.ns_srv)))
        .join(format!("{}.lock", t.if_srv));
    assert!(
        !claim.exists(),
        "{args:?}: the runtime claim {} was left behind",
        claim.display()
    );
}

#[test]
fn bad_configuration_is_refused_clearly() {
    let t = Topology::new(1, false);
    let i = t.if_srv.as_str();
    assert_refused(
        &t,
        &["--iface", "nosuch0", "--port", "7777"],
        "no network interface named \"nosuch0\"",
    );
    assert_refused(
        &t,
        &["--iface", i, "--port", "0"],
        "--port 0 is not a usable port",
    );
    assert_refused(
        &t,
        &["--iface", i, "--port", "7777", "--cores", "97"],
        "core 97 is not available",
    );
    assert_refused(
        &t,
        &["--iface", i, "--port", "7777", "--cores", "x"],
        "invalid value 'x'",
    );
    assert_refused(
        &t,
        &["--iface", i, "--port", "7777", "--queues", "3"],
        "queue 3 does not exist",
    );
    assert_refused(
        &t,
        &["--iface", i, "--port", "7777", "--zero-copy", "on"],
        "--zero-copy auto",
    );
    assert_refused(
        &t,
        &["--iface", i, "--port", "7777", "--frame-size", "1000"],
        "--frame-size 1000 is not supported",
    );
    assert_refused(
        &t,
        &["--iface", i, "--port", "7777", "--mtu", "9000"],
        "invalid protocol settings",
    );
    // An interface without native XDP: the loopback device of the server namespace.
    let (code, err) = attach(&t, &["--iface", "lo", "--port", "7777", "--mode", "native"]);
    assert_ne!(code, Some(0), "native XDP on loopback must fail: {err}");
    assert!(
        err.contains("--mode skb"),
        "the message should suggest --mode skb:\n{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
}

#[test]
fn without_privileges_the_message_says_what_is_needed() {
    let t = Topology::new(1, false);
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &t.ns_srv,
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(xrudp_bin())
        .args(["attach", "--iface", &t.if_srv, "--port", "7777"])
        .output()
        .expect("running xrudp as nobody");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "an unprivileged attach must fail: {err}"
    );
    assert!(
        err.contains("root") || err.contains("CAP_"),
        "the message should say root/capabilities are needed:\n{err}"
    );
    assert_eq!(t.srv_xdp_prog(), 0);
}

/// `n` connected clients of `server` (the test fails unless all connect within 30 s).
fn connect_all(server: SocketAddr, n: usize) -> Clients {
    let c = connect_fleet(server, n, Duration::from_secs(30));
    assert_eq!(c.connected(), n, "clients connect");
    c
}

fn sigterm_tells_clients(backend: &str) {
    let t = Topology::new(1, true);
    let mut engine = Engine::start(&t, &["--port", "7777", "--backend", backend]);
    let server = t.srv_addr(7777);
    let ns = t.ns_cli.clone();
    let clients = std::thread::spawn(move || {
        Topology::in_ns(&ns, move || {
            let Clients { mut fleet, ids, .. } = connect_all(server, 20);
            let mut notified = 0;
            let deadline = Instant::now() + Duration::from_secs(30);
            drive_until(&mut fleet, deadline, |_, ev| {
                if let ClientEvent::Disconnected { reason } = ev {
                    assert_eq!(
                        reason,
                        DisconnectReason::ServerShutdown,
                        "clients learn the server shut down"
                    );
                    notified += 1;
                }
                notified == ids.len()
            });
            notified
        })
    });
    // Wait until the engine counts them, then stop it.
    let snap = engine.wait_for(Duration::from_secs(30), |s| {
        protocol_sum(s, |f| f.connections) == 20
    });
    assert_eq!(protocol_sum(&snap, |f| f.connections), 20);
    let status = engine.signal_and_wait(Signal::SIGTERM);
    assert!(
        status.success(),
        "{backend}: SIGTERM → exit 0, got {status}\n{}",
        engine.log_text()
    );
    assert_eq!(
        clients.join().expect("clients"),
        20,
        "{backend}: every client got the shutdown notice"
    );
    assert_eq!(t.srv_xdp_prog(), 0);
}

#[test]
fn sigterm_sends_disconnect_notices_and_exits_zero_xdp() {
    sigterm_tells_clients("xdp");
}

#[test]
fn sigterm_sends_disconnect_notices_and_exits_zero_socket() {
    sigterm_tells_clients("socket");
}

#[test]
fn sigkill_under_load_then_restart_serves_new_connections() {
    let t = Topology::new(1, true);
    let mut engine = Engine::start(&t, &["--port", "7777"]);
    let server = t.srv_addr(7777);
    // Load: clients streaming reliable messages while the engine is killed.
    let ns = t.ns_cli.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let load = std::thread::spawn(move || {
        Topology::in_ns(&ns, move || {
            let Clients { mut fleet, ids, .. } = connect_all(server, 50);
            let mut sent = 0u64;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                for id in &ids {
                    if fleet.send(*id, 0, b"load").is_ok() {
                        sent += 1;
                    }
                }
                fleet.drive(Duration::from_millis(2)).expect("drive");
                while fleet.poll_event().is_some() {}
            }
            sent
        })
    });
    let _ = engine.wait_for(Duration::from_secs(10), |s| {
        s.queues.iter().map(|q| q.rx_packets).sum::<u64>() > 500
    });
    let status = engine.signal_and_wait(Signal::SIGKILL);
    assert!(!status.success());
    let attached = t.srv_xdp_detached_within(Duration::from_secs(5));
    assert_eq!(attached, 0, "the XDP program went with the killed engine");
    let restarted = Instant::now();
    let again = Engine::start(&t, &["--port", "7777"]);
    let ready = restarted.elapsed();
    let first = Topology::in_ns(&t.ns_cli.clone(), move || {
        let t0 = Instant::now();
        let _ = connect_all(server, 1);
        t0.elapsed()
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(load.join().expect("load thread") > 0);
    eprintln!("restart: engine ready in {ready:?}; a new client connected {first:?} after that");
    drop(again);
}

#[test]
fn interface_down_and_up_while_attached_never_hangs() {
    let t = Topology::new(1, true);
    let mut engine = Engine::start(&t, &["--port", "7777"]);
    let server = t.srv_addr(7777);
    for state in ["down", "up"] {
        let out = Topology::exec(&t.ns_srv, &["ip", "link", "set", &t.if_srv, state]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The engine still answers its control socket and serves after the link returns.
    let n = Topology::in_ns(&t.ns_cli.clone(), move || connect_all(server, 5).ids.len());
    assert_eq!(n, 5, "clients connect after the interface came back");
    let status = engine.signal_and_wait(Signal::SIGTERM);
    assert!(status.success(), "{}", engine.log_text());
}

#[test]
fn tiny_umem_under_load_counts_drops_and_recovers() {
    let t = Topology::new(1, true);
    let engine = Engine::start(
        &t,
        &[
            "--port",
            "7777",
            "--app",
            "udp-echo",
            "--umem-frames",
            "128",
            "--ring-size",
            "64",
        ],
    );
    let dst = t.srv_addr(7777);
    // The worker must be serving (its fill ring stocked) before it is frozen: the control
    // socket answers before the worker has bound its socket. CI once froze it earlier and
    // the frozen worker had received nothing, not the ring's worth this test is about.
    Topology::in_ns(&t.ns_cli.clone(), move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        xrudp_tests::wait_udp_echo(&s, dst);
    });
    let before = engine.snapshot();
    // Freeze the engine (every worker) so the burst must overflow, whatever the speed of
    // the worker: the XDP program runs in the sender's context and keeps redirecting into
    // a 64-slot RX ring that nobody drains.
    engine.freeze();
    let burst = 4 * 5_000;
    for _ in 0..4 {
        xrudp_tests::send_udp(&t.ns_cli, dst, 5_000, 64, 0, Duration::ZERO).expect("burst");
    }
    engine.signal(Signal::SIGCONT);
    let dropped = |s: &xrudp::telemetry::Snapshot| {
        let st = s.queues[0].xdp_statistics.unwrap_or_default();
        st.rx_dropped + st.rx_ring_full + st.rx_fill_ring_empty_descs
    };
    let received =
        |s: &xrudp::telemetry::Snapshot| s.queues[0].rx_packets - before.queues[0].rx_packets;
    let redirected = |s: &xrudp::telemetry::Snapshot| {
        s.xdp_counter("redirected").unwrap_or(0) - before.xdp_counter("redirected").unwrap_or(0)
    };
    // Every redirected datagram is received by the worker or counted as a kernel drop.
    let snap = engine.wait_for(Duration::from_secs(30), |s| {
        received(s) + dropped(s) >= redirected(s)
    });
    eprintln!(
        "burst of {burst}: redirected {}, received {}, dropped {} ({:?})",
        redirected(&snap),
        received(&snap),
        dropped(&snap),
        snap.queues[0].xdp_statistics
    );
    assert!(redirected(&snap) > 64, "the burst reached the engine");
    assert!(
        received(&snap) + dropped(&snap) >= redirected(&snap),
        "every redirected datagram is received or counted as dropped: {:?}",
        snap.queues[0]
    );
    // While frozen only the RX ring's 64 slots could hold a datagram: the rest of what
    // was redirected must have been dropped, and counted.
    assert!(
        received(&snap) <= 64,
        "a frozen worker received at most one ring's worth: {:?}",
        snap.queues[0]
    );
    assert!(
        dropped(&snap) >= redirected(&snap) - 64,
        "the overflow is counted as kernel drops: {:?}",
        snap.queues[0]
    );
    // Recovery: a paced load is echoed in full once the burst is over.
    let echoed = Topology::in_ns(&t.ns_cli.clone(), move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        let mut ok = 0;
        for i in 0..500u32 {
            s.send_to(&i.to_be_bytes(), dst).expect("send");
            // One in flight at a time: nothing can overflow.
            loop {
                match s.recv(&mut buf) {
                    Ok(4) if buf[..4] == i.to_be_bytes() => {
                        ok += 1;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => panic!("echo {i} not answered after the burst: {e}"),
                }
            }
        }
        ok
    });
    assert_eq!(echoed, 500, "full recovery after the burst");
    let after = engine.snapshot();
    assert!(after.queues[0].frames_in_use <= 128);
}

/// A 64-entry TX ring under a burst of reliable traffic (5,000 echoes at once): what does
/// not fit waits inside the protocol (its send buffers and loss recovery), so every
/// reliable message still arrives exactly once and in order.
///
/// Named for what it shows: the engine does not count the rounds in which the TX ring was
/// full (the AF_XDP service breaks out and leaves the rest queued in the protocol), so
/// this test cannot assert that the ring filled; it prints the figures that hint at it.
/// Asserting it needs an engine counter (e.g. `tx_ring_full_rounds` in the queue snapshot).
#[test]
fn reliable_burst_through_a_64_slot_tx_ring_arrives_exactly_once_in_order() {
    let t = Topology::new(1, true);
    let engine = Engine::start(
        &t,
        &[
            "--port",
            "7777",
            "--ring-size",
            "64",
            "--umem-frames",
            "256",
        ],
    );
    let server = t.srv_addr(7777);
    let clients = 50usize;
    let n = 100u32;
    let (got, errors) = Topology::in_ns(&t.ns_cli.clone(), move || {
        let c = connect_all(server, clients);
        let index = c.index();
        let Clients { mut fleet, ids, .. } = c;
        // The whole burst at once: 5,000 messages against 64 TX slots.
        for seq in 0..n {
            for id in &ids {
                fleet.send(*id, 0, &seq.to_be_bytes()).expect("send");
            }
        }
        let mut next = vec![0u32; clients];
        let mut got = 0usize;
        let mut errors = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        drive_until(&mut fleet, deadline, |id, ev| {
            match ev {
                ClientEvent::Message { channel: 0, data } => {
                    let c = index[&id];
                    let seq = u32::from_be_bytes(data[..4].try_into().expect("4 bytes"));
                    if seq != next[c] {
                        errors.push(format!("client {c}: {seq}, expected {}", next[c]));
                    }
                    next[c] = seq + 1;
                    got += 1;
                }
                ClientEvent::Disconnected { reason } => {
                    errors.push(format!("disconnected: {reason:?}"));
                }
                ClientEvent::Message { .. }
                | ClientEvent::Connected
                | ClientEvent::Draining { .. } => {}
            }
            got == clients * n as usize
        });
        (got, errors)
    });
    assert!(errors.is_empty(), "{:?}", &errors[..errors.len().min(10)]);
    assert_eq!(got, clients * n as usize, "every reliable echo arrived");
    let snap = engine.snapshot();
    eprintln!(
        "64-slot TX ring: tx_ring_empty_descs {:?}, frames high water {}",
        snap.queues[0].xdp_statistics.map(|s| s.tx_ring_empty_descs),
        snap.queues[0].frames_high_water
    );
}
