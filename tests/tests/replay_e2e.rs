//! A captured datagram re-sent is dropped and counted, over veth, on both backends: a
//! client (the sans-IO core over a UDP socket in the client namespace, so the test holds
//! every datagram it sent) runs an encrypted session with the echo app; one of its sealed
//! `Data` packets is then re-sent from its own address and port (what an attacker who
//! spoofs the source achieves) and from another socket (another process). Neither is
//! delivered again — no second echo arrives — and both are counted as `replayed`. The copy
//! from another address authenticates but is not new, so it does not start a migration
//! either: no PATH_CHALLENGE goes to that address.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use xrudp_proto::session::Security;
use xrudp_proto::{Client, ClientConfig, ClientEvent, ClientState};
use xrudp_tests::{Engine, Topology, protocol_sum};

const PORT: u16 = 7777;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Drives `client` over `sock` until `done` or the timeout; every datagram sent is kept.
fn drive(
    client: &mut Client,
    sock: &UdpSocket,
    sent: &mut Vec<Vec<u8>>,
    echoes: &mut Vec<Vec<u8>>,
    done: impl Fn(&Client, &[Vec<u8>]) -> bool,
) {
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + TIMEOUT;
    while !done(client, echoes) {
        assert!(Instant::now() < deadline, "no progress in {TIMEOUT:?}");
        let now = Instant::now();
        while let Some(t) = client.poll_transmit(now, &mut buf) {
            sock.send_to(&buf[..t.len], t.dst).expect("send");
            sent.push(buf[..t.len].to_vec());
        }
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            client.handle_datagram(Instant::now(), from, &buf[..n]);
        }
        client.handle_timeout(Instant::now());
        while let Some(e) = client.poll_event() {
            if let ClientEvent::Message { data, .. } = e {
                echoes.push(data);
            }
        }
    }
}

fn replayed_captures_are_dropped_and_counted(backend: &str) {
    let t = Topology::new(1, true);
    let engine = Engine::start(&t, &["--port", &PORT.to_string(), "--backend", backend]);
    let server: SocketAddr = t.srv_addr(PORT);
    let (echoes, after) = Topology::in_ns(&t.ns_cli.clone(), move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let seed = u64::from(std::process::id());
        let mut client = Client::new(
            ClientConfig::default(),
            server,
            seed,
            Instant::now(),
            Security::insecure_from_seed(seed),
        )
        .expect("client");
        let (mut sent, mut echoes) = (Vec::new(), Vec::new());
        drive(&mut client, &sock, &mut sent, &mut echoes, |c, _| {
            c.state() == ClientState::Connected
        });
        client.send(0, b"captured").expect("queued");
        drive(&mut client, &sock, &mut sent, &mut echoes, |_, e| {
            e.len() == 1
        });
        // The sealed packet that carried the message: the largest Data packet sent.
        let captured = sent
            .iter()
            .filter(|d| d.get(3) == Some(&6))
            .max_by_key(|d| d.len())
            .expect("a data packet")
            .clone();
        assert!(
            !captured.windows(8).any(|w| w == b"captured"),
            "the message travelled sealed"
        );
        sock.send_to(&captured, server)
            .expect("replay, same address");
        let other = UdpSocket::bind("0.0.0.0:0").expect("bind");
        other
            .send_to(&captured, server)
            .expect("replay, another socket");
        // Keep the session going (acks, keepalives) and collect whatever comes back.
        let until = Instant::now() + Duration::from_secs(2);
        drive(&mut client, &sock, &mut sent, &mut echoes, |_, _| {
            Instant::now() > until
        });
        (echoes, client.state())
    });
    assert_eq!(
        echoes,
        vec![b"captured".to_vec()],
        "one echo, no second delivery"
    );
    assert_eq!(after, ClientState::Connected, "the session survives");
    let snap = engine.wait_for(TIMEOUT, |s| protocol_sum(s, |f| f.replayed) >= 2);
    assert_eq!(
        protocol_sum(&snap, |f| f.replayed),
        2,
        "both copies counted as replayed"
    );
    assert_eq!(
        protocol_sum(&snap, |f| f.path_challenges),
        0,
        "a replay from another address starts no migration"
    );
    assert_eq!(protocol_sum(&snap, |f| f.migrated), 0);
    assert_eq!(
        protocol_sum(&snap, |f| f.auth_failed),
        0,
        "nothing failed to open"
    );
}

#[test]
fn replayed_captures_are_dropped_and_counted_xdp() {
    replayed_captures_are_dropped_and_counted("xdp");
}

#[test]
fn replayed_captures_are_dropped_and_counted_socket() {
    replayed_captures_are_dropped_and_counted("socket");
}
