//! Admission control over veth: the XDP session allow-list, read back from the kernel
//! (the map of the program attached to the server's veth end), follows the sessions of
//! a real engine: a session appears when a client connects, moves when the client
//! migrates, and goes when the client disconnects or times out; after 1,000 connects and
//! disconnects nothing stale remains. Run serially as root:
//! `cargo test -p xrudp-tests --test admission_e2e -- --test-threads=1`.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use xrudp_client::{ClientConfig, ClientEvent, Connection, Protection};
use xrudp_common::admit::{Peer, SessionKey};
use xrudp_tests::{Engine, Topology, protocol_sum, tagged};

const PORT: u16 = 7777;
/// Bounds a hung run; this VM stalls for milliseconds, so every wait has seconds of room.
const TIMEOUT: Duration = Duration::from_secs(60);

/// The session allow-list of the program attached to the server's interface.
fn sessions(t: &Topology) -> Vec<(SessionKey, Peer)> {
    let iface = t.if_srv.clone();
    Topology::in_ns(&t.ns_srv, move || {
        let name = std::ffi::CString::new(iface).expect("interface name");
        // SAFETY: `name` is a NUL-terminated string alive for the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "the server interface exists");
        xrudp::sys::bpf::attached_sessions(ifindex).expect("reading the session map")
    })
}

/// Polls the allow-list until `done` holds or [`TIMEOUT`] passes; returns the last read.
fn wait_sessions(
    t: &Topology,
    done: impl Fn(&[(SessionKey, Peer)]) -> bool,
) -> Vec<(SessionKey, Peer)> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let s = sessions(t);
        if done(&s) || Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(server: SocketAddr) -> Connection {
    Connection::connect_blocking(
        server,
        ClientConfig::default(),
        &Protection::default(),
        TIMEOUT,
    )
    .expect("connects")
}

/// Sends one reliable message and waits for its echo.
fn echo(c: &mut Connection, i: u32) {
    c.send(0, &tagged(0, i)).expect("send");
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        c.wait(Duration::from_millis(20)).expect("client I/O");
        while let Some(ev) = c.next_event() {
            if let ClientEvent::Message { data, .. } = ev {
                assert_eq!(data, tagged(0, i), "the echo");
                return;
            }
        }
    }
    panic!("no echo of message {i} within {TIMEOUT:?}");
}

fn peer_is(p: &Peer, ip: IpAddr, port: u16) -> bool {
    *p == Peer::new(SocketAddr::new(ip, port), true)
}

#[test]
fn sessions_appear_move_and_go_with_connect_migration_and_timeout() {
    let t = Topology::new(1, true);
    let _engine = Engine::start(&t, &["--port", &PORT.to_string(), "--idle-timeout", "2"]);
    let server = t.srv_addr(PORT);
    let ip: IpAddr = t.ip_cli.parse().expect("client address");
    assert!(sessions(&t).is_empty(), "no session before any client");

    let (c, port) = Topology::in_ns(&t.ns_cli.clone(), move || {
        let mut c = connect(server);
        echo(&mut c, 0);
        let port = c.local_addr().expect("local address").port();
        (c, port)
    });
    let s = wait_sessions(&t, |s| s.len() == 1);
    assert_eq!(s.len(), 1, "one session after one connect: {s:?}");
    assert!(
        peer_is(&s[0].1, ip, port),
        "{s:?} is the client at {ip}:{port}"
    );
    let id = s[0].0;

    let (c, moved) = Topology::in_ns(&t.ns_cli.clone(), move || {
        let mut c = c;
        let moved = c.rebind().expect("rebind").port();
        for i in 1..20 {
            echo(&mut c, i);
        }
        (c, moved)
    });
    assert_ne!(moved, port);
    let s = wait_sessions(&t, |s| s.len() == 1 && peer_is(&s[0].1, ip, moved));
    assert_eq!(s.len(), 1, "still one session after the move: {s:?}");
    assert_eq!(s[0].0, id, "the same session");
    assert!(peer_is(&s[0].1, ip, moved), "{s:?} moved to port {moved}");

    // The client goes silent (no disconnect): the idle timeout ends the session.
    std::mem::forget(c);
    let s = wait_sessions(&t, <[_]>::is_empty);
    assert!(s.is_empty(), "the timed-out session is withdrawn: {s:?}");
}

#[test]
fn nothing_stale_after_a_thousand_connects_and_disconnects() {
    const ROUNDS: usize = 50;
    const HELD: usize = 20;
    let t = Topology::new(1, true);
    let engine = Engine::start(&t, &["--port", &PORT.to_string(), "--idle-timeout", "2"]);
    let server = t.srv_addr(PORT);
    let ip: IpAddr = t.ip_cli.parse().expect("client address");
    for round in 0..ROUNDS {
        // HELD clients at once: all of them are in the map, each at its own address.
        let (held, ports) = Topology::in_ns(&t.ns_cli.clone(), move || {
            let held: Vec<Connection> = (0..HELD).map(|_| connect(server)).collect();
            let ports: Vec<u16> = held
                .iter()
                .map(|c| c.local_addr().expect("local address").port())
                .collect();
            (held, ports)
        });
        let s = wait_sessions(&t, |s| s.len() == HELD);
        assert_eq!(s.len(), HELD, "round {round}: {HELD} live sessions");
        for port in &ports {
            assert!(
                s.iter().any(|(_, p)| peer_is(p, ip, *port)),
                "round {round}: the client on port {port} is in {s:?}"
            );
        }
        // Most leave with a disconnect; every fifth round's clients just go silent.
        Topology::in_ns(&t.ns_cli.clone(), move || {
            for mut c in held {
                if round % 5 == 4 {
                    std::mem::forget(c);
                } else {
                    c.disconnect(0).expect("disconnect");
                    let until = Instant::now() + Duration::from_millis(5);
                    while Instant::now() < until {
                        let _ = c.wait(Duration::from_millis(1));
                    }
                }
            }
        });
        let s = wait_sessions(&t, <[_]>::is_empty);
        assert!(s.is_empty(), "round {round}: nothing stale: {s:?}");
    }
    // Figures are published every 100 ms: wait for the one after the last close.
    let snap = engine.wait_for(TIMEOUT, |s| protocol_sum(s, |f| f.connections) == 0);
    assert_eq!(
        protocol_sum(&snap, |f| f.accepted),
        (ROUNDS * HELD) as u64,
        "1,000 sessions were admitted"
    );
    assert_eq!(protocol_sum(&snap, |f| f.connections), 0);
    assert_eq!(protocol_sum(&snap, |f| f.session_updates_failed), 0);
}

#[test]
fn admission_off_publishes_nothing() {
    let t = Topology::new(1, true);
    let _engine = Engine::start(&t, &["--port", &PORT.to_string(), "--admission", "off"]);
    let server = t.srv_addr(PORT);
    let c = Topology::in_ns(&t.ns_cli.clone(), move || {
        let mut c = connect(server);
        echo(&mut c, 0);
        c
    });
    assert!(
        sessions(&t).is_empty(),
        "admission off: the map stays empty"
    );
    drop(c);
}
