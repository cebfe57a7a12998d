//! The client against a real `xrudp_proto::Server` on 127.0.0.1 (the `testing` echo
//! server). Every loop is bounded by a count and a generous wall-clock deadline; nothing
//! asserts on timing.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use xrudp_client::testing::EchoServer;
use xrudp_client::{
    ClientConfig, ClientEvent, ClientState, ConnectError, Connection, DisconnectReason, Fleet,
    FleetId, RejectReason,
};
use xrudp_proto::{ServerConfig, TokenKey};

/// Far beyond what any of these exchanges needs, even on a VM that stalls.
const DEADLINE: Duration = Duration::from_mins(1);

fn connect(addr: SocketAddr) -> Connection {
    Connection::connect_blocking(
        addr,
        ClientConfig::default(),
        &xrudp_client::Protection::default(),
        DEADLINE,
    )
    .expect("connects to the echo server")
}

fn message(client: u32, seq: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + seq as usize % 64);
    m.extend_from_slice(&client.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.resize(8 + seq as usize % 64, seq as u8);
    m
}

#[test]
fn reliable_ordered_messages_echo_exactly_once_in_order() {
    const N: u32 = 300;
    let server = EchoServer::start(ServerConfig::default()).unwrap();
    let mut conn = connect(server.addr());
    assert_eq!(conn.state(), ClientState::Connected);
    assert_eq!(
        conn.channels()[0],
        xrudp_client::ChannelKind::ReliableOrdered
    );
    assert!(conn.local_addr().unwrap().ip().is_loopback());

    let mut sent = 0;
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < N as usize && start.elapsed() < DEADLINE {
        while sent < N {
            match conn.send(0, &message(0, sent)) {
                Ok(()) => sent += 1,
                Err(xrudp_client::SendError::QueueFull) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        conn.wait(Duration::from_millis(20)).unwrap();
        while let Some(e) = conn.next_event() {
            match e {
                ClientEvent::Message { channel, data } => {
                    assert_eq!(channel, 0);
                    got.push(data);
                }
                e => panic!("unexpected {e:?}"),
            }
        }
    }
    let want: Vec<_> = (0..N).map(|i| message(0, i)).collect();
    assert_eq!(got.len(), want.len(), "all echoes within the deadline");
    assert_eq!(got, want, "each echo exactly once, in order");
    assert!(conn.rtt().is_some());
    assert!(conn.io_stats().datagrams_received > 0);
    // Nothing more arrives: no duplicates after the last one either.
    let settle = Instant::now();
    while !conn.is_quiet() && settle.elapsed() < DEADLINE {
        conn.wait(Duration::from_millis(20)).unwrap();
    }
    conn.poll().unwrap();
    assert_eq!(conn.next_event(), None);
    let stats = server.stop().unwrap();
    assert_eq!(stats.messages, u64::from(N));
    assert_eq!(stats.echo_failures, 0);
}

#[test]
fn a_fleet_of_200_connects_and_echoes_everything() {
    const CLIENTS: u32 = 200;
    const N: u32 = 20;
    // A short idle timeout: a `Disconnect` whose copies all fall to a full socket buffer
    // (200 clients x 3 copies at once can overflow loopback's default receive buffer) ends
    // the server's side by timeout instead.
    let server = EchoServer::start(ServerConfig {
        idle_timeout: Duration::from_secs(2),
        keepalive: Duration::from_millis(500),
        ..ServerConfig::default()
    })
    .unwrap();
    let mut fleet = Fleet::new().unwrap();
    let ids: Vec<FleetId> = (0..CLIENTS)
        .map(|_| {
            fleet
                .add(
                    server.addr(),
                    ClientConfig::default(),
                    &xrudp_client::Protection::default(),
                )
                .unwrap()
        })
        .collect();
    assert_eq!(fleet.len(), CLIENTS as usize);
    assert_eq!(fleet.count(ClientState::Connecting), CLIENTS as usize);

    fleet_echoes_in_order(&mut fleet, &ids, N);
    assert_eq!(fleet.count(ClientState::Connected), CLIENTS as usize);
    let stats = fleet.stats();
    assert!(stats.io.datagrams_sent >= u64::from(CLIENTS * 2));
    assert!(stats.io.datagrams_received >= u64::from(CLIENTS * 2));
    assert_eq!(stats.socket_errors, 0);

    fleet_disconnects(&mut fleet, &ids, 9);
    server_saw_every_client_go(server, CLIENTS, u64::from(CLIENTS * N), 9);
    for id in ids {
        assert!(fleet.remove(id));
        assert!(!fleet.remove(id), "stale after removal");
    }
    assert!(fleet.is_empty());
}

/// Drives `fleet` until every client has connected and had `n` messages echoed, each
/// client's in the order it sent them.
fn fleet_echoes_in_order(fleet: &mut Fleet, ids: &[FleetId], n: u32) {
    let clients = ids.len() as u32;
    let mut next = vec![0u32; ids.len()];
    let mut echoed = vec![0u32; ids.len()];
    let mut connected = 0;
    let mut total = 0;
    let start = Instant::now();
    while total < clients * n && start.elapsed() < DEADLINE {
        fleet.drive(Duration::from_millis(20)).unwrap();
        while let Some((id, e)) = fleet.poll_event() {
            let i = id.index();
            assert_eq!(ids[i], id);
            match e {
                ClientEvent::Connected => connected += 1,
                ClientEvent::Message { channel, data } => {
                    assert_eq!(channel, 0);
                    assert_eq!(data, message(i as u32, echoed[i]), "client {i} in order");
                    echoed[i] += 1;
                    total += 1;
                    fleet.recycle(id, data);
                }
                e @ (ClientEvent::Disconnected { .. } | ClientEvent::Draining { .. }) => {
                    panic!("client {i}: {e:?}")
                }
            }
        }
        for (i, &id) in ids.iter().enumerate() {
            while next[i] < n && fleet.state(id) == Some(ClientState::Connected) {
                if fleet.send(id, 0, &message(i as u32, next[i])).is_err() {
                    break;
                }
                next[i] += 1;
            }
        }
    }
    assert_eq!(connected, clients);
    assert_eq!(total, clients * n, "every message echoed: {echoed:?}");
}

/// Disconnects every client with `code` and waits until each reports it.
fn fleet_disconnects(fleet: &mut Fleet, ids: &[FleetId], code: u16) {
    for &id in ids {
        fleet.disconnect(id, code);
    }
    let mut gone = 0;
    let start = Instant::now();
    while gone < ids.len() && start.elapsed() < DEADLINE {
        fleet.drive(Duration::from_millis(20)).unwrap();
        while let Some((_, e)) = fleet.poll_event() {
            if let ClientEvent::Disconnected { reason } = e {
                assert_eq!(reason, DisconnectReason::Local { code });
                gone += 1;
            }
        }
    }
    assert_eq!(gone, ids.len());
    assert_eq!(fleet.count(ClientState::Disconnected), ids.len());
}

/// Stops `server` once it has seen `clients` disconnects, and checks it echoed
/// `messages` and saw each client go: by its `Disconnect` (`code`), or by timeout when
/// every copy of it was lost.
fn server_saw_every_client_go(server: EchoServer, clients: u32, messages: u64, code: u16) {
    let start = Instant::now();
    while server.stats().disconnects.len() < clients as usize && start.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats = server.stop().unwrap();
    assert_eq!(stats.messages, messages);
    assert_eq!(stats.connected, u64::from(clients));
    assert_eq!(stats.disconnects.len(), clients as usize);
    let graceful = stats
        .disconnects
        .iter()
        .filter(|r| **r == DisconnectReason::Peer { code })
        .count();
    assert!(graceful > 0, "{:?}", stats.disconnects);
    assert!(
        stats
            .disconnects
            .iter()
            .all(|r| *r == DisconnectReason::Peer { code } || *r == DisconnectReason::TimedOut),
        "{:?}",
        stats.disconnects
    );
    eprintln!("{graceful} of {clients} disconnects arrived, the rest timed out");
}

/// A loopback port with nothing bound to it (bound, read and released).
fn dead_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

#[test]
fn connecting_to_a_port_with_no_server_times_out_clearly() {
    let config = ClientConfig {
        handshake_timeout: Duration::from_millis(800),
        handshake_resend: Duration::from_millis(100),
        ..ClientConfig::default()
    };
    let addr = dead_port();
    let err =
        Connection::connect_blocking(addr, config, &xrudp_client::Protection::default(), DEADLINE)
            .unwrap_err();
    let ConnectError::TimedOut {
        server, refused, ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(*server, addr);
    // Linux reports the ICMP port-unreachable of loopback as ECONNREFUSED.
    assert!(*refused > 0, "{err}");
    assert!(err.to_string().contains("nothing listens"), "{err}");
}

#[test]
fn fleet_connections_to_no_server_time_out_by_their_timers() {
    let config = ClientConfig {
        handshake_timeout: Duration::from_millis(500),
        handshake_resend: Duration::from_millis(100),
        ..ClientConfig::default()
    };
    let addr = dead_port();
    let mut fleet = Fleet::new().unwrap();
    for _ in 0..50 {
        fleet
            .add(addr, config.clone(), &xrudp_client::Protection::default())
            .unwrap();
    }
    let mut timed_out = 0;
    let start = Instant::now();
    while timed_out < 50 && start.elapsed() < DEADLINE {
        fleet.drive(Duration::from_millis(100)).unwrap();
        while let Some((_, e)) = fleet.poll_event() {
            assert_eq!(
                e,
                ClientEvent::Disconnected {
                    reason: DisconnectReason::HandshakeTimedOut
                }
            );
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 50);
    assert_eq!(fleet.count(ClientState::Disconnected), 50);
    assert!(fleet.stats().io.refused > 0);
    assert!(fleet.stats().timers_fired >= 50);
    // Over connections cost nothing per drive.
    let settled = fleet.stats().settled;
    for _ in 0..100 {
        fleet.drive(Duration::ZERO).unwrap();
    }
    assert_eq!(fleet.stats().settled, settled);
    assert_eq!(fleet.poll_event(), None);
}

#[test]
fn a_full_server_rejects_the_second_client_with_the_reason() {
    let server = EchoServer::start(ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    })
    .unwrap();
    let first = connect(server.addr());
    let err = Connection::connect_blocking(
        server.addr(),
        ClientConfig::default(),
        &xrudp_client::Protection::default(),
        DEADLINE,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Rejected {
                reason: RejectReason::ServerFull,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("server full"), "{err}");
    assert_eq!(first.state(), ClientState::Connected);
}

#[test]
fn tokens_are_carried_and_checked() {
    let key = TokenKey([7; 32]);
    let server = EchoServer::start(ServerConfig {
        encryption: xrudp_proto::session::Encryption::Token(key.clone()),
        ..ServerConfig::default()
    })
    .unwrap();
    let err = Connection::connect_blocking(
        server.addr(),
        ClientConfig::default(),
        &xrudp_client::Protection::default(),
        DEADLINE,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Rejected {
                reason: RejectReason::SecurityMismatch,
                ..
            }
        ),
        "{err}"
    );
    let token = xrudp_proto::token::issue(
        &key,
        &xrudp_proto::token::TokenParams {
            client_id: 42,
            expires: u64::MAX,
            handshake_timeout: DEADLINE,
            addresses: vec![server.addr()],
            user_data: b"player".to_vec(),
        },
        &mut <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(42),
    )
    .unwrap();
    let conn = Connection::connect_blocking(
        server.addr(),
        ClientConfig::default(),
        &xrudp_client::Protection::Token(Box::new(token)),
        DEADLINE,
    )
    .unwrap();
    assert_eq!(conn.state(), ClientState::Connected);
}

#[test]
fn disconnect_is_seen_by_the_server() {
    let server = EchoServer::start(ServerConfig::default()).unwrap();
    let mut conn = connect(server.addr());
    conn.disconnect(7).unwrap();
    assert_eq!(conn.state(), ClientState::Disconnected);
    assert_eq!(
        conn.next_event(),
        Some(ClientEvent::Disconnected {
            reason: DisconnectReason::Local { code: 7 }
        })
    );
    let start = Instant::now();
    while server.stats().disconnects.is_empty() && start.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        server.stop().unwrap().disconnects,
        vec![DisconnectReason::Peer { code: 7 }]
    );
}

#[test]
fn a_bad_config_is_refused_before_any_socket() {
    let config = ClientConfig {
        handshake_resend: Duration::ZERO,
        ..ClientConfig::default()
    };
    let err = Connection::connect(
        dead_port(),
        config.clone(),
        &xrudp_client::Protection::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let err = Fleet::new()
        .unwrap()
        .add(dead_port(), config, &xrudp_client::Protection::default())
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn a_large_message_is_fragmented_and_echoed_whole() {
    let server = EchoServer::start(ServerConfig::default()).unwrap();
    let mut conn = connect(server.addr());
    let big: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    conn.send(1, &big).unwrap();
    let start = Instant::now();
    let mut got = None;
    while got.is_none() && start.elapsed() < DEADLINE {
        conn.wait(Duration::from_millis(20)).unwrap();
        if let Some(e) = conn.next_event() {
            got = Some(e);
        }
    }
    assert_eq!(
        got,
        Some(ClientEvent::Message {
            channel: 1,
            data: big
        })
    );
    assert!(conn.stats().reassembled > 0);
}

#[test]
fn fleet_ids_go_stale_when_their_slot_is_reused() {
    let mut fleet = Fleet::new().unwrap();
    let addr = dead_port();
    let a = fleet
        .add(
            addr,
            ClientConfig::default(),
            &xrudp_client::Protection::default(),
        )
        .unwrap();
    assert!(fleet.remove(a));
    let b = fleet
        .add(
            addr,
            ClientConfig::default(),
            &xrudp_client::Protection::default(),
        )
        .unwrap();
    assert_eq!(a.index(), b.index(), "the slot is reused");
    assert_ne!(a, b);
    assert_eq!(fleet.state(a), None);
    assert_eq!(fleet.state(b), Some(ClientState::Connecting));
    assert_eq!(
        fleet.send(a, 0, b"x"),
        Err(xrudp_client::SendError::NotConnected)
    );
    assert_eq!(fleet.ids().collect::<Vec<_>>(), vec![b]);
    assert_eq!(fleet.len(), 1);
    assert_eq!(fleet.count(ClientState::Connecting), 1);
}

#[test]
fn connections_and_fleets_can_move_to_other_threads() {
    fn is_send<T: Send>() {}
    is_send::<Connection>();
    is_send::<Fleet>();
    is_send::<EchoServer>();
    let server = EchoServer::start(ServerConfig::default()).unwrap();
    let addr = server.addr();
    let echoed = std::thread::spawn(move || {
        let mut fleet = Fleet::new().unwrap();
        let id = fleet
            .add(
                addr,
                ClientConfig::default(),
                &xrudp_client::Protection::default(),
            )
            .unwrap();
        let start = Instant::now();
        let mut sent = false;
        while start.elapsed() < DEADLINE {
            fleet.drive(Duration::from_millis(20)).unwrap();
            if !sent && fleet.state(id) == Some(ClientState::Connected) {
                fleet.send(id, 0, b"ping").unwrap();
                sent = true;
            }
            if let Some((_, ClientEvent::Message { data, .. })) = fleet.poll_event() {
                return data;
            }
        }
        Vec::new()
    })
    .join()
    .unwrap();
    assert_eq!(echoed, b"ping");
}

#[test]
fn ipv6_loopback_works_too() {
    let server = EchoServer::bind("[::1]:0".parse().unwrap(), ServerConfig::default()).unwrap();
    let mut conn = connect(server.addr());
    assert!(conn.local_addr().unwrap().is_ipv6());
    conn.send(0, b"over ipv6").unwrap();
    let start = Instant::now();
    let mut got = None;
    while got.is_none() && start.elapsed() < DEADLINE {
        conn.wait(Duration::from_millis(20)).unwrap();
        got = conn.next_event();
    }
    assert_eq!(
        got,
        Some(ClientEvent::Message {
            channel: 0,
            data: b"over ipv6".to_vec()
        })
    );
}

/// A client that moves to a new socket halfway through a stream (as after a NAT rebinding)
/// keeps its session: every echo arrives exactly once, in order, and the server moved the
/// session to the new address after validating it.
#[test]
fn a_rebound_connection_keeps_its_session() {
    const N: u32 = 400;
    let server = EchoServer::start(ServerConfig::default()).unwrap();
    let mut conn = connect(server.addr());
    let before = conn.local_addr().unwrap();
    let mut after = None;
    let (mut sent, mut got) = (0, Vec::new());
    let start = Instant::now();
    while got.len() < N as usize && start.elapsed() < DEADLINE {
        while sent < N && (after.is_some() || sent < N / 2) {
            match conn.send(0, &message(0, sent)) {
                Ok(()) => sent += 1,
                Err(xrudp_client::SendError::QueueFull) => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        if after.is_none() && sent == N / 2 {
            after = Some(conn.rebind().unwrap());
        }
        conn.wait(Duration::from_millis(20)).unwrap();
        while let Some(e) = conn.next_event() {
            match e {
                ClientEvent::Message { data, .. } => got.push(data),
                e => panic!("unexpected {e:?}"),
            }
        }
    }
    let want: Vec<_> = (0..N).map(|i| message(0, i)).collect();
    assert_eq!(
        got, want,
        "each echo exactly once, in order, across the move"
    );
    let after = after.expect("rebound halfway");
    assert_ne!(after.port(), before.port());
    assert_eq!(conn.local_addr().unwrap(), after);
    assert_eq!(conn.state(), ClientState::Connected);
    let stats = server.stop().unwrap();
    assert_eq!(stats.server.migrated, 1);
    assert!(stats.server.path_challenges >= 1);
    assert_eq!(stats.connected, 1, "the same session, not a reconnect");
}
