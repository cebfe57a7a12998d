//! Simulation tests of the protocol core through the deterministic network model.
#![expect(
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    reason = "test arithmetic on small counts"
)]

use std::net::SocketAddr;
use std::time::Duration;

use proptest::prelude::*;
use xrudp_proto::session::{self, Security};
use xrudp_proto::sim::network::Model;
use xrudp_proto::sim::{Cluster, Pair, SERVER_ADDR, client_addr};
use xrudp_proto::*;

const ORDERED: u8 = 0;
const UNORDERED: u8 = 1;
const UNRELIABLE: u8 = 2;
const SEQUENCED: u8 = 3;

fn msg(i: u32, len: usize) -> Vec<u8> {
    let mut v = i.to_be_bytes().to_vec();
    v.resize(len.max(4), (i % 251) as u8);
    v
}

fn server_msgs(p: &Pair, channel: u8) -> Vec<Vec<u8>> {
    p.server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Message {
                channel: c, data, ..
            } if *c == channel => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn client_msgs(p: &Pair, channel: u8) -> Vec<Vec<u8>> {
    p.client_events()
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Message { channel: c, data } if *c == channel => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn lossy(seed: u64, loss: f64, reorder: f64, duplicate: f64, jitter_ms: u64) -> Model {
    Model {
        delay: Duration::from_millis(15),
        jitter: Duration::from_millis(jitter_ms),
        loss,
        reorder,
        duplicate,
        seed,
        ..Model::default()
    }
}

/// Sends `n` messages each way on `channel`, in bursts, and drives until quiet.
fn exchange(p: &mut Pair, h: ConnHandle, channel: u8, n: u32, len: impl Fn(u32) -> usize) {
    for i in 0..n {
        p.client_mut().send(channel, &msg(i, len(i))).unwrap();
        p.server.send(h, channel, &msg(i, len(i))).unwrap();
        if i % 20 == 19 {
            p.run_for(Duration::from_millis(16));
        }
    }
    p.drive();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Reliable ordered: every message exactly once, in order, both ways, with up to 20 %
    /// loss, reordering, duplication and jitter; fragmented messages included.
    #[test]
    fn reliable_ordered_exactly_once_in_order(seed in any::<u64>(), loss in 0.0f64..0.2, reorder in 0.0f64..0.2, dup in 0.0f64..0.1, jitter in 0u64..20) {
        let mut p = Pair::new(ServerConfig::default(), ClientConfig::default(), lossy(seed, loss, reorder, dup, jitter), seed);
        let h = p.connect();
        let n = 300;
        exchange(&mut p, h, ORDERED, n, |i| if i % 50 == 7 { 5000 } else { 20 + (i as usize % 300) });
        let expect: Vec<_> = (0..n).map(|i| msg(i, if i % 50 == 7 { 5000 } else { 20 + (i as usize % 300) })).collect();
        prop_assert_eq!(server_msgs(&p, ORDERED), expect.clone());
        prop_assert_eq!(client_msgs(&p, ORDERED), expect);
    }

    /// Random schedules: messages of random sizes (up to 3 fragments) on random channels
    /// with random pauses, both ways, through loss, reordering, duplication, jitter and
    /// corruption. Each reliable channel delivers exactly what was sent (ordered: in order;
    /// unordered: as a multiset); the sequenced channel never goes backwards.
    #[test]
    fn random_schedules_keep_every_guarantee(
        seed in any::<u64>(),
        loss in 0.0f64..0.2,
        reorder in 0.0f64..0.2,
        corrupt in 0.0f64..0.05,
        schedule in proptest::collection::vec((0u8..4, 4usize..3500, 0u64..30), 50..200),
    ) {
        let mut model = lossy(seed, loss, reorder, 0.05, 10);
        model.corrupt = corrupt;
        let mut p = Pair::new(ServerConfig::default(), ClientConfig::default(), model, seed);
        let h = p.connect();
        let mut sent: [Vec<Vec<u8>>; 4] = Default::default();
        for (i, &(channel, len, pause)) in schedule.iter().enumerate() {
            let len = if channel >= UNRELIABLE { len.min(1000) } else { len };
            let m = msg(i as u32, len);
            p.client_mut().send(channel, &m).unwrap();
            p.server.send(h, channel, &m).unwrap();
            sent[usize::from(channel)].push(m);
            p.run_for(Duration::from_millis(pause));
        }
        p.drive();
        p.run_for(Duration::from_millis(500));
        prop_assert_eq!(&server_msgs(&p, ORDERED), &sent[0]);
        prop_assert_eq!(&client_msgs(&p, ORDERED), &sent[0]);
        let mut expect = sent[1].clone();
        expect.sort();
        for mut got in [server_msgs(&p, UNORDERED), client_msgs(&p, UNORDERED)] {
            got.sort();
            prop_assert_eq!(&got, &expect);
        }
        for got in [server_msgs(&p, SEQUENCED), client_msgs(&p, SEQUENCED)] {
            let ids: Vec<u32> = got.iter().map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]])).collect();
            prop_assert!(ids.windows(2).all(|w| w[0] < w[1]));
        }
        for got in [server_msgs(&p, UNRELIABLE), client_msgs(&p, UNRELIABLE)] {
            prop_assert!(got.iter().all(|m| sent[2].contains(m)));
        }
    }

    /// Reliable unordered: every message exactly once (any order).
    #[test]
    fn reliable_unordered_exactly_once(seed in any::<u64>(), loss in 0.0f64..0.2, reorder in 0.0f64..0.2, dup in 0.0f64..0.1, jitter in 0u64..20) {
        let mut p = Pair::new(ServerConfig::default(), ClientConfig::default(), lossy(seed, loss, reorder, dup, jitter), seed);
        let h = p.connect();
        let n = 300;
        exchange(&mut p, h, UNORDERED, n, |i| if i % 60 == 3 { 4000 } else { 40 });
        let mut expect: Vec<_> = (0..n).map(|i| msg(i, if i % 60 == 3 { 4000 } else { 40 })).collect();
        expect.sort();
        let mut got = server_msgs(&p, UNORDERED);
        got.sort();
        prop_assert_eq!(&got, &expect);
        let mut got = client_msgs(&p, UNORDERED);
        got.sort();
        prop_assert_eq!(got, expect);
    }

    /// Unreliable sequenced: never a stale or duplicate message (strictly increasing), and
    /// plain unreliable: never a duplicate, nothing invented.
    #[test]
    fn sequenced_never_stale_unreliable_never_duplicated(seed in any::<u64>(), loss in 0.0f64..0.2, reorder in 0.0f64..0.3, dup in 0.0f64..0.2, jitter in 0u64..20) {
        let mut p = Pair::new(ServerConfig::default(), ClientConfig::default(), lossy(seed, loss, reorder, dup, jitter), seed);
        let h = p.connect();
        for i in 0..400u32 {
            p.client_mut().send(SEQUENCED, &msg(i, 30)).unwrap();
            p.server.send(h, UNRELIABLE, &msg(i, 30)).unwrap();
            p.run_for(Duration::from_millis(2));
        }
        p.run_for(Duration::from_millis(500));
        let ids: Vec<u32> = server_msgs(&p, SEQUENCED).iter().map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]])).collect();
        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "stale or duplicate: {ids:?}");
        prop_assert!(!ids.is_empty());
        let mut ids: Vec<u32> = client_msgs(&p, UNRELIABLE).iter().map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]])).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        prop_assert_eq!(ids.len(), n, "duplicate unreliable message");
        prop_assert!(ids.iter().all(|&i| i < 400));
    }
}

/// Corrupted datagrams are rejected by the CRC, and reliable delivery still completes.
#[test]
fn corruption_is_caught_by_crc() {
    let model = Model {
        delay: Duration::from_millis(10),
        corrupt: 0.1,
        seed: 3,
        ..Model::default()
    };
    let mut p = Pair::new(ServerConfig::default(), ClientConfig::default(), model, 3);
    let h = p.connect();
    exchange(&mut p, h, ORDERED, 300, |_| 200);
    let expect: Vec<_> = (0..300).map(|i| msg(i, 200)).collect();
    assert_eq!(server_msgs(&p, ORDERED), expect);
    assert_eq!(client_msgs(&p, ORDERED), expect);
    let corrupted = p.network.stats().corrupted;
    let caught = p.server.stats().crc_failures() + p.client().stats().crc_failures();
    assert!(corrupted > 20, "the model corrupted {corrupted}");
    // Every corrupted copy fails the CRC (a flipped bit in the magic/version/type byte is
    // caught by the header check first).
    let header = p.server.stats().decode_errors.iter().sum::<u64>()
        + p.client().stats().decode_errors.iter().sum::<u64>();
    assert_eq!(
        header, corrupted,
        "crc {caught}, all decode errors {header}"
    );
    assert!(caught > 0);
}

#[test]
fn handshake_completes_under_30_percent_loss() {
    for seed in 0..20 {
        let model = Model {
            delay: Duration::from_millis(50),
            loss: 0.3,
            seed,
            ..Model::default()
        };
        let mut p = Pair::new(
            ServerConfig::default(),
            ClientConfig::default(),
            model,
            seed,
        );
        assert!(
            p.run_while(Duration::from_secs(10), Cluster::all_connected),
            "seed {seed}"
        );
        // And a message gets through.
        p.client_mut().send(ORDERED, b"hello").unwrap();
        p.drive();
        assert_eq!(
            server_msgs(&p, ORDERED),
            vec![b"hello".to_vec()],
            "seed {seed}"
        );
    }
}

/// A hello from a spoofed address gets only a smaller challenge and allocates nothing; a
/// replayed response for a live connection allocates nothing either; a response with a
/// cookie for another address is dropped.
#[test]
fn spoofed_and_replayed_hellos_allocate_nothing() {
    let mut p = Pair::new(
        ServerConfig::default(),
        ClientConfig::default(),
        Model::default(),
        9,
    );
    let now = p.now;
    let mut buf = [0u8; 1500];
    // Capture the client's first hello and replay it from 1000 spoofed addresses.
    let t = p.client_mut().poll_transmit(now, &mut buf).unwrap();
    let hello = buf[..t.len].to_vec();
    assert_eq!(hello.len(), 1200);
    for i in 0..1000 {
        let spoofed = std::net::SocketAddr::from(([192, 0, 2, (i % 250) as u8], 1000 + i as u16));
        p.server.handle_datagram(now, spoofed, &hello);
    }
    assert_eq!(p.server.connection_count(), 0);
    let mut out = [0u8; 1500];
    let mut replies = 0;
    while let Some(t) = p.server.poll_transmit(now, &mut out) {
        assert!(t.len < hello.len(), "no amplification");
        replies += 1;
    }
    assert_eq!(replies, 1000);
    assert_eq!(p.server.stats().handshakes, 1000);
    // An unpadded hello gets nothing.
    p.server.handle_datagram(now, client_addr(0), &hello[..600]);
    assert!(p.server.poll_transmit(now, &mut out).is_none());
    // Now connect for real, endpoint to endpoint, capturing the response.
    let mut response = None;
    p.server.handle_datagram(now, client_addr(0), &hello);
    for _ in 0..10 {
        while let Some(t) = p.server.poll_transmit(now, &mut out) {
            if t.dst == client_addr(0) {
                p.client_mut()
                    .handle_datagram(now, SERVER_ADDR, &out[..t.len]);
            }
        }
        while let Some(t) = p.client_mut().poll_transmit(now, &mut buf) {
            if buf[3] == 3 {
                response = Some(buf[..t.len].to_vec());
            }
            p.server.handle_datagram(now, client_addr(0), &buf[..t.len]);
        }
        while let Some(t) = p.server.poll_transmit(now, &mut out) {
            if t.dst == client_addr(0) {
                p.client_mut()
                    .handle_datagram(now, SERVER_ADDR, &out[..t.len]);
            }
        }
    }
    p.flush();
    assert!(p.all_connected());
    let response = response.expect("captured response");
    assert_eq!(p.server.connection_count(), 1);
    let accepted = p.server.stats().accepted;
    let now = p.now;
    // Replayed from the same address: re-welcome, no allocation.
    for _ in 0..10 {
        p.server.handle_datagram(now, client_addr(0), &response);
    }
    // Replayed from another address: the cookie is bound to the address.
    for i in 0..10 {
        p.server
            .handle_datagram(now, client_addr(100 + i), &response);
    }
    assert_eq!(p.server.connection_count(), 1);
    assert_eq!(p.server.stats().accepted, accepted);
    assert_eq!(p.server.stats().bad_cookies, 10);
}

fn token_config(key: &TokenKey) -> ServerConfig {
    ServerConfig {
        encryption: session::Encryption::Token(key.clone()),
        public_addr: Some(SERVER_ADDR),
        ..ServerConfig::default()
    }
}

fn issue(
    key: &TokenKey,
    client_id: u64,
    expires: u64,
    user: &[u8],
    server: SocketAddr,
) -> Security {
    use rand_core::SeedableRng;
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(client_id);
    let t = token::issue(
        key,
        &token::TokenParams {
            client_id,
            expires,
            handshake_timeout: Duration::from_secs(10),
            addresses: vec![server],
            user_data: user.to_vec(),
        },
        &mut rng,
    )
    .expect("issued");
    Security::Token(Box::new(t))
}

#[test]
fn valid_token_admits_with_client_id_and_user_data() {
    let key = TokenKey([5; 32]);
    let token = issue(&key, 4242, 2_000_000_000, b"elo=1500", SERVER_ADDR);
    let mut p = Pair::with_security(
        token_config(&key),
        ClientConfig::default(),
        Model::default(),
        1,
        token,
    );
    let now = p.now;
    p.server.set_unix_time(now, 1_900_000_000);
    p.connect();
    assert!(p.server_events.iter().any(|e| matches!(e,
        ServerEvent::Connected { client_id: Some(4242), user_data, .. } if user_data == b"elo=1500")));
    // The session is sealed with the token's keys: messages still echo.
    let h = p.connect();
    p.server.send(h, 0, b"sealed").expect("queued");
    assert!(
        p.run_while(Duration::from_secs(2), |c| c.client_events[0].iter().any(
            |e| matches!(e, ClientEvent::Message { data, .. } if data == b"sealed")
        ))
    );
}

#[test]
fn expired_forged_foreign_or_missing_token_is_refused() {
    let key = TokenKey([5; 32]);
    let elsewhere: SocketAddr = "192.0.2.1:7777".parse().expect("addr");
    let cases = [
        (
            issue(&key, 1, 1_000, b"", SERVER_ADDR),
            RejectReason::TokenExpired,
        ),
        (
            issue(&TokenKey([6; 32]), 1, 2_000_000_000, b"", SERVER_ADDR),
            RejectReason::TokenInvalid,
        ),
        (
            issue(&key, 1, 2_000_000_000, b"", elsewhere),
            RejectReason::TokenInvalid,
        ),
        (
            Security::insecure_from_seed(1),
            RejectReason::SecurityMismatch,
        ),
    ];
    for (security, reason) in cases {
        let mut c = Cluster::with_securities(
            token_config(&key),
            &ClientConfig::default(),
            vec![security],
            Model::default(),
            2,
        );
        let now = c.now;
        c.server.set_unix_time(now, 1_900_000_000);
        c.run_for(Duration::from_secs(1));
        assert_eq!(c.server.connection_count(), 0);
        assert_eq!(c.server.stats().rejected_for(reason), 1, "{reason:?}");
        assert_eq!(
            c.client_events[0],
            vec![ClientEvent::Disconnected {
                reason: DisconnectReason::Rejected(reason)
            }]
        );
    }
}

#[test]
fn a_token_in_use_is_refused_from_another_address() {
    let key = TokenKey([5; 32]);
    let token = issue(&key, 7, 2_000_000_000, b"", SERVER_ADDR);
    let mut c = Cluster::with_securities(
        token_config(&key),
        &ClientConfig::default(),
        vec![token.clone(), token],
        Model::default(),
        3,
    );
    let now = c.now;
    c.server.set_unix_time(now, 1_900_000_000);
    c.run_for(Duration::from_secs(2));
    assert_eq!(c.server.connection_count(), 1, "one holder admitted");
    assert_eq!(c.server.stats().token_reused, 1);
    assert_eq!(c.server.stats().rejected_for(RejectReason::TokenReused), 1);
    assert_eq!(
        c.clients
            .iter()
            .filter(|cl| cl.state() == ClientState::Connected)
            .count(),
        1
    );
}

#[test]
fn a_server_with_encryption_off_refuses_protected_clients_and_the_reverse() {
    let off = ServerConfig {
        encryption: session::Encryption::Off,
        ..ServerConfig::default()
    };
    for (server, security) in [
        (off, Security::insecure_from_seed(1)),
        (ServerConfig::default(), Security::Off),
    ] {
        let mut c = Cluster::with_securities(
            server,
            &ClientConfig::default(),
            vec![security],
            Model::default(),
            5,
        );
        c.run_for(Duration::from_secs(1));
        assert_eq!(c.server.connection_count(), 0);
        assert_eq!(
            c.server
                .stats()
                .rejected_for(RejectReason::SecurityMismatch),
            1
        );
    }
}

#[test]
fn full_server_rejects_with_reason() {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let mut c = Cluster::new(
        config,
        &ClientConfig::default(),
        3,
        Model {
            delay: Duration::from_millis(5),
            ..Model::default()
        },
        4,
    );
    c.run_for(Duration::from_secs(2));
    assert_eq!(c.server.connection_count(), 2);
    let rejected: Vec<_> = c
        .client_events
        .iter()
        .filter(|e| {
            e.contains(&ClientEvent::Disconnected {
                reason: DisconnectReason::Rejected(RejectReason::ServerFull),
            })
        })
        .collect();
    assert_eq!(rejected.len(), 1);
}

#[test]
fn version_mismatch_is_reported() {
    let mut p = Pair::new(
        ServerConfig::default(),
        ClientConfig::default(),
        Model::default(),
        1,
    );
    let now = p.now;
    let mut buf = [0u8; 1500];
    let t = p.client_mut().poll_transmit(now, &mut buf).unwrap();
    buf[2] = 9; // a future version
    xrudp_proto::packet::seal(&mut buf[..t.len]);
    p.server.handle_datagram(now, client_addr(0), &buf[..t.len]);
    let r = p.server.poll_transmit(now, &mut buf).unwrap();
    p.client_mut()
        .handle_datagram(now, SERVER_ADDR, &buf[..r.len]);
    p.flush();
    assert_eq!(
        p.client_events(),
        &[ClientEvent::Disconnected {
            reason: DisconnectReason::VersionMismatch
        }]
    );
    assert_eq!(p.server.stats().version_mismatches, 1);
}

/// Packet and channel sequence numbers start just below 65535 and wrap during the run.
#[test]
fn sequence_numbers_wrap() {
    let mut server = ServerConfig::default();
    server.transport.initial_seq = Some(65_500);
    let mut client = ClientConfig::default();
    client.transport.initial_seq = Some(65_530);
    let mut p = Pair::new(server, client, lossy(11, 0.05, 0.05, 0.02, 5), 11);
    let h = p.connect();
    exchange(&mut p, h, ORDERED, 400, |_| 100);
    for i in 0..300u32 {
        p.client_mut().send(SEQUENCED, &msg(i, 10)).unwrap();
        p.run_for(Duration::from_millis(1));
    }
    p.drive();
    let expect: Vec<_> = (0..400).map(|i| msg(i, 100)).collect();
    assert_eq!(server_msgs(&p, ORDERED), expect);
    assert_eq!(client_msgs(&p, ORDERED), expect);
    let ids: Vec<u32> = server_msgs(&p, SEQUENCED)
        .iter()
        .map(|m| u32::from_be_bytes([m[0], m[1], m[2], m[3]]))
        .collect();
    assert!(ids.len() > 250 && ids.windows(2).all(|w| w[0] < w[1]));
}

/// A 256 KiB message crosses a lossy link; one byte more is refused with `TooLarge`.
#[test]
fn large_message_fragments_and_reassembles() {
    let mut p = Pair::new(
        ServerConfig::default(),
        ClientConfig::default(),
        lossy(5, 0.05, 0.02, 0.01, 5),
        5,
    );
    let h = p.connect();
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i * 7 % 253) as u8).collect();
    p.server.send(h, ORDERED, &big).unwrap();
    p.client_mut().send(UNORDERED, &big).unwrap();
    p.drive();
    assert_eq!(client_msgs(&p, ORDERED), vec![big.clone()]);
    assert_eq!(server_msgs(&p, UNORDERED), vec![big.clone()]);
    let mut bigger = big;
    bigger.push(0);
    assert!(matches!(
        p.server.send(h, ORDERED, &bigger),
        Err(SendError::TooLarge { .. })
    ));
    assert!(matches!(
        p.server.send(h, UNRELIABLE, &[0; 1300]),
        Err(SendError::TooLarge { .. })
    ));
}

/// A full send buffer is an error the caller sees; nothing reliable is silently lost.
#[test]
fn full_send_queue_is_backpressure() {
    let mut client = ClientConfig::default();
    client.transport.send_buffer = 300 * 1024;
    let mut p = Pair::new(
        ServerConfig::default(),
        client,
        lossy(1, 0.0, 0.0, 0.0, 0),
        1,
    );
    p.connect();
    let mut accepted = 0u32;
    let err = loop {
        match p.client_mut().send(ORDERED, &msg(accepted, 1000)) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, SendError::QueueFull);
    assert_eq!(accepted, 307);
    p.drive();
    assert_eq!(server_msgs(&p, ORDERED).len(), accepted as usize);
    // Room again after the acks.
    p.client_mut().send(ORDERED, &msg(0, 1000)).unwrap();
}

#[test]
fn graceful_disconnect_and_kick_carry_reasons() {
    let model = Model {
        delay: Duration::from_millis(10),
        loss: 0.2,
        seed: 8,
        ..Model::default()
    };
    let mut p = Pair::new(
        ServerConfig::default(),
        ClientConfig::default(),
        model.clone(),
        8,
    );
    let h = p.connect();
    p.server.disconnect(h, 77);
    p.run_for(Duration::from_secs(1));
    assert!(p.client_events().contains(&ClientEvent::Disconnected {
        reason: DisconnectReason::Peer { code: 77 }
    }));
    assert!(p.server_events.contains(&ServerEvent::Disconnected {
        handle: h,
        reason: DisconnectReason::Local { code: 77 }
    }));
    assert_eq!(p.server.connection_count(), 0);
    assert!(matches!(
        p.server.send(h, 0, b"x"),
        Err(SendError::NotConnected)
    ));

    let mut p = Pair::new(ServerConfig::default(), ClientConfig::default(), model, 8);
    let h = p.connect();
    p.client_mut().disconnect(5);
    p.run_for(Duration::from_secs(1));
    assert!(p.server_events.contains(&ServerEvent::Disconnected {
        handle: h,
        reason: DisconnectReason::Peer { code: 5 }
    }));
    assert_eq!(p.client().state(), ClientState::Disconnected);
}

#[test]
fn keepalive_holds_an_idle_connection_and_silence_times_out() {
    let mut p = Pair::new(
        ServerConfig::default(),
        ClientConfig::default(),
        Model {
            delay: Duration::from_millis(20),
            ..Model::default()
        },
        2,
    );
    let h = p.connect();
    p.run_for(Duration::from_mins(1));
    assert_eq!(p.client().state(), ClientState::Connected);
    assert!(p.server.stats().keepalives > 10);
    // Cut the link: both ends time out after the idle timeout.
    // The blackhole windows count from the network start: cover everything from now on.
    p.network.model_mut().blackholes = vec![(Duration::ZERO, Duration::from_secs(100_000))];
    p.run_for(Duration::from_secs(11));
    assert!(p.server_events.contains(&ServerEvent::Disconnected {
        handle: h,
        reason: DisconnectReason::TimedOut
    }));
    assert!(p.client_events().contains(&ClientEvent::Disconnected {
        reason: DisconnectReason::TimedOut
    }));
    assert_eq!(p.server.stats().timed_out, 1);
}

/// Stream `secs` of traffic from server to client as a game would: 60 Hz ticks of 20
/// reliable messages of 50 bytes. Returns (packets sent by the server, retransmitted ones).
fn game_traffic(model: Model, secs: u64) -> (u64, u64, u64) {
    let mut p = Pair::new(ServerConfig::default(), ClientConfig::default(), model, 7);
    let h = p.connect();
    let ticks = secs * 60;
    for t in 0..ticks {
        for i in 0..20 {
            p.server
                .send(h, ORDERED, &msg((t * 20 + i) as u32, 50))
                .unwrap();
        }
        p.run_for(Duration::from_micros(16_667));
    }
    p.drive();
    assert_eq!(client_msgs(&p, ORDERED).len() as u64, ticks * 20);
    let s = p.server.stats();
    (s.packets_out, s.retransmitted_packets, s.spurious_losses)
}

#[test]
fn retransmissions_at_one_percent_loss_stay_under_one_and_a_half_percent() {
    let model = Model {
        delay: Duration::from_millis(25),
        loss: 0.01,
        seed: 21,
        ..Model::default()
    };
    let (sent, retx, _) = game_traffic(model, 20);
    let ratio = retx as f64 / sent as f64;
    eprintln!("sent {sent} retransmitted {retx} ratio {ratio:.4}");
    assert!(ratio <= 0.015, "ratio {ratio}");
}

#[test]
fn jitter_without_loss_causes_almost_no_spurious_retransmission() {
    // ±10 ms around 25 ms one way: the model's jitter is [0, 20 ms] on top of 15 ms.
    let model = Model {
        delay: Duration::from_millis(15),
        jitter: Duration::from_millis(20),
        seed: 22,
        ..Model::default()
    };
    let (sent, retx, spurious) = game_traffic(model, 20);
    let ratio = retx as f64 / sent as f64;
    eprintln!("sent {sent} retransmitted {retx} spurious losses {spurious} ratio {ratio:.5}");
    assert!(ratio < 0.001, "ratio {ratio}");
}

/// An idle connection's whole state (table slot + heap) is at most 512 bytes, plus its two
/// AES-256-GCM key schedules when protected (at most 1,536 bytes more).
#[test]
fn idle_connection_costs_at_most_512_bytes_plus_its_keys() {
    for (encryption, limit) in [
        (session::Encryption::Off, 512),
        (ServerConfig::default().encryption, 512 + 1536),
    ] {
        let mut p = Pair::new(
            ServerConfig {
                encryption: encryption.clone(),
                ..ServerConfig::default()
            },
            ClientConfig::default(),
            Model {
                delay: Duration::from_millis(5),
                ..Model::default()
            },
            1,
        );
        let h = p.connect();
        exchange(&mut p, h, ORDERED, 100, |_| 500);
        // Go idle past a keepalive interval so buffers are given back.
        p.run_for(Duration::from_secs(3));
        let m = p.server.connection_memory(h).unwrap();
        eprintln!("idle connection ({encryption:?}): {m} bytes");
        assert!(m <= limit, "{encryption:?}: {m} bytes");
    }
}

/// 100,000 unprotected connections fit in 64 MiB of server state (table, maps, queues,
/// connections). Protected ones add their keys (`idle_connection_costs_...`); 100,000
/// X25519 exchanges would make this test slow without showing anything more.
#[test]
fn hundred_thousand_connections_fit_in_64_mib() {
    const N: usize = 100_000;
    let config = ServerConfig {
        max_connections: N,
        encryption: session::Encryption::Off,
        ..ServerConfig::default()
    };
    let now = std::time::Instant::now();
    let mut server = Server::new(config, 1, now).unwrap();
    let mut a = [0u8; 1500];
    let mut b = [0u8; 1500];
    for i in 0..N {
        let addr = client_addr(i);
        let mut client = Client::new(
            ClientConfig::default(),
            SERVER_ADDR,
            i as u64,
            now,
            Security::Off,
        )
        .unwrap();
        // Hello -> challenge -> response -> welcome, endpoint to endpoint.
        for _ in 0..2 {
            let t = client.poll_transmit(now, &mut a).unwrap();
            server.handle_datagram(now, addr, &a[..t.len]);
            let r = server.poll_transmit(now, &mut b).unwrap();
            assert_eq!(r.dst, addr);
            client.handle_datagram(now, SERVER_ADDR, &b[..r.len]);
        }
        assert_eq!(client.state(), ClientState::Connected, "client {i}");
    }
    assert_eq!(server.connection_count(), N);
    while server.poll_event().is_some() {}
    let mem = server.memory();
    eprintln!(
        "{N} connections: {mem} bytes ({:.1} MiB)",
        mem as f64 / 1_048_576.0
    );
    assert!(mem <= 64 << 20, "{mem} bytes");
}

/// Streams 1,000-byte reliable messages from the server to every client, keeping each
/// connection's window plus 4 KiB queued, until `until`; returns the bytes each client
/// received in `[from, until)` (seconds since the cluster's start).
fn stream(c: &mut Cluster, from: Duration, until: Duration) -> Vec<u64> {
    let start = c.now;
    let handles: Vec<ConnHandle> = c
        .server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Connected { handle, .. } => Some(*handle),
            _ => None,
        })
        .collect();
    // Client i connected as the i-th `Connected` event only if they connected in order:
    // map handles to clients by address instead.
    let mut by_client = vec![None; c.clients.len()];
    for h in handles {
        let addr = c.server.connection_stats(h).expect("open").addr;
        by_client[xrudp_proto::sim::client_index(addr).expect("client")] = Some(h);
    }
    c.keep_messages = false;
    let mut got = vec![0u64; c.clients.len()];
    let mut base = c.client_messages.clone();
    let mut measuring = false;
    while c.now < start + until {
        if !measuring && c.now >= start + from {
            measuring = true;
            base.clone_from(&c.client_messages);
        }
        for h in by_client.iter().flatten() {
            while let Some(s) = c.server.connection_stats(*h) {
                if s.send_buffered as u64 >= s.cwnd + 4_096 {
                    break;
                }
                c.server.send(*h, ORDERED, &[0u8; 1_000]).expect("room");
            }
        }
        c.step();
    }
    for (i, g) in got.iter_mut().enumerate() {
        *g = (c.client_messages[i] - base[i]) * 1_000;
    }
    got
}

fn bottleneck(rate: u64, rtt_ms: u64, seed: u64) -> Model {
    Model {
        delay: Duration::from_millis(rtt_ms / 2),
        bandwidth: Some(rate),
        queue_bytes: (rate * rtt_ms / 1_000).max(12_000) as usize,
        sharing: xrudp_proto::sim::network::Sharing::Sender,
        seed,
        ..Model::default()
    }
}

/// Through the whole protocol, each controller fills a 2 Mbit/s bottleneck (≥ 85 %), and two
/// connections sharing the server's uplink split it fairly (Jain index ≥ 0.9).
#[test]
fn connections_fill_and_share_a_bottleneck_fairly() {
    const RATE: u64 = 250_000;
    for algorithm in Algorithm::ALL {
        let mut server = ServerConfig::default();
        server.transport.congestion = algorithm;
        let mut c = Cluster::new(
            server.clone(),
            &ClientConfig::default(),
            1,
            bottleneck(RATE, 40, 1),
            1,
        );
        assert!(c.run_while(Duration::from_secs(5), Cluster::all_connected));
        let one = stream(&mut c, Duration::from_secs(3), Duration::from_secs(13))[0];
        let share = one as f64 / 10.0 / RATE as f64;
        assert!(
            share >= 0.85,
            "{algorithm}: one flow got {share:.2} of the bottleneck"
        );

        let mut c = Cluster::new(
            server,
            &ClientConfig::default(),
            2,
            bottleneck(RATE, 40, 2),
            2,
        );
        assert!(c.run_while(Duration::from_secs(5), Cluster::all_connected));
        let got = stream(&mut c, Duration::from_secs(5), Duration::from_secs(25));
        let (a, b) = (got[0] as f64, got[1] as f64);
        let jain = (a + b).powi(2) / (2.0 * (a * a + b * b));
        let total = (a + b) / 20.0 / RATE as f64;
        eprintln!(
            "{algorithm}: one flow {share:.2}; two flows {got:?}, Jain {jain:.3}, total {total:.2}"
        );
        assert!(jain >= 0.9, "{algorithm}: Jain index {jain:.3} ({got:?})");
        assert!(
            total >= 0.85,
            "{algorithm}: two flows used {total:.2} of the bottleneck"
        );
    }
}

/// A 2-second blackhole mid-transfer: the connection survives (idle timeout 10 s), every
/// message still arrives exactly once, and the rate recovers afterwards.
#[test]
fn recovers_from_a_two_second_blackhole() {
    const RATE: u64 = 250_000;
    for algorithm in Algorithm::ALL {
        let mut server = ServerConfig::default();
        server.transport.congestion = algorithm;
        let mut model = bottleneck(RATE, 40, 3);
        model.blackholes = vec![(Duration::from_secs(6), Duration::from_secs(2))];
        let mut c = Cluster::new(server, &ClientConfig::default(), 1, model, 3);
        assert!(c.run_while(Duration::from_secs(5), Cluster::all_connected));
        // The blackhole covers seconds 6..8 since the network's start; measure 10..20.
        let after = stream(&mut c, Duration::from_secs(10), Duration::from_secs(20))[0];
        let share = after as f64 / 10.0 / RATE as f64;
        eprintln!(
            "{algorithm}: after the blackhole {share:.2}; {:?}",
            c.server.stats().ptos
        );
        assert_eq!(c.clients[0].state(), ClientState::Connected);
        assert!(c.network.stats().blackholed > 0);
        assert!(
            share >= 0.8,
            "{algorithm}: {share:.2} of the bottleneck after the blackhole"
        );
    }
}

/// A stale handle never reaches the connection that reuses its slot, and a client that
/// reconnects from the same address with a fresh handshake replaces its old connection.
#[test]
fn stale_handles_and_replaced_connections() {
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let model = Model {
        delay: Duration::from_millis(5),
        ..Model::default()
    };
    let mut p = Pair::new(config, ClientConfig::default(), model, 6);
    let first = p.connect();
    // The same address starts over (a restarted game client).
    let now = p.now;
    p.clients[0] = Client::new(
        ClientConfig::default(),
        SERVER_ADDR,
        99,
        now,
        xrudp_proto::session::Security::insecure_from_seed(99),
    )
    .unwrap();
    assert!(p.run_while(Duration::from_secs(5), Cluster::all_connected));
    assert!(p.server_events.contains(&ServerEvent::Disconnected {
        handle: first,
        reason: DisconnectReason::Replaced
    }));
    let second = p
        .server_events
        .iter()
        .rev()
        .find_map(|e| match e {
            ServerEvent::Connected { handle, .. } => Some(*handle),
            _ => None,
        })
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(first.index(), second.index(), "the one slot is reused");
    assert_eq!(
        p.server.send(first, ORDERED, b"stale"),
        Err(SendError::NotConnected)
    );
    assert!(p.server.connection_stats(first).is_none());
    p.server.disconnect(first, 1); // ignored
    p.server.send(second, ORDERED, b"fresh").unwrap();
    p.drive();
    assert_eq!(client_msgs(&p, ORDERED), vec![b"fresh".to_vec()]);
    assert_eq!(p.client().state(), ClientState::Connected);
}

/// One ack-eliciting packet is acknowledged by an ack-only packet no later than
/// `max_ack_delay`; a second one is acknowledged at once; an ack-only packet draws no reply.
#[test]
fn acks_are_delayed_at_most_max_ack_delay() {
    let mut p = Pair::new(
        ServerConfig::default(),
        ClientConfig::default(),
        Model::default(),
        12,
    );
    p.connect();
    p.run_for(Duration::from_millis(50));
    let max_ack_delay = ServerConfig::default().transport.max_ack_delay;
    let (mut a, mut b) = ([0u8; 1500], [0u8; 1500]);
    let t0 = p.now;
    p.client_mut().send(ORDERED, b"one").unwrap();
    let t = p.client_mut().poll_transmit(t0, &mut a).unwrap();
    p.server.handle_datagram(t0, client_addr(0), &a[..t.len]);
    assert!(
        p.server.poll_transmit(t0, &mut b).is_none(),
        "a lone packet's ack waits"
    );
    let due = p.server.poll_timeout().unwrap();
    assert!(due <= t0 + max_ack_delay);
    p.server.handle_timeout(due);
    let ack = p
        .server
        .poll_transmit(due, &mut b)
        .expect("the delayed ack");
    assert_eq!(b[3], 6);
    // The ack-only packet is not acknowledged in turn.
    p.client_mut()
        .handle_datagram(due, SERVER_ADDR, &b[..ack.len]);
    assert!(p.client_mut().poll_transmit(due, &mut a).is_none());
    // Two ack-eliciting packets: acknowledged at once.
    for m in [&b"two"[..], b"three"] {
        p.client_mut().send(ORDERED, m).unwrap();
        let t = p.client_mut().poll_transmit(due, &mut a).unwrap();
        p.server.handle_datagram(due, client_addr(0), &a[..t.len]);
    }
    assert!(
        p.server.poll_transmit(due, &mut b).is_some(),
        "the second packet is acked at once"
    );
}

/// Endpoint to endpoint, no network: a default (protected) server and a client with
/// `config`, through the handshake, the server's events drained.
fn handshaken(config: ClientConfig, now: std::time::Instant) -> (Server, Client) {
    let mut server = Server::new(ServerConfig::default(), 1, now).unwrap();
    let mut client =
        Client::new(config, SERVER_ADDR, 2, now, Security::insecure_from_seed(2)).unwrap();
    let (mut a, mut b) = ([0u8; 1500], [0u8; 1500]);
    for _ in 0..2 {
        let t = client.poll_transmit(now, &mut a).unwrap();
        server.handle_datagram(now, client_addr(0), &a[..t.len]);
        let r = server.poll_transmit(now, &mut b).unwrap();
        client.handle_datagram(now, SERVER_ADDR, &b[..r.len]);
    }
    assert_eq!(client.state(), ClientState::Connected);
    while server.poll_event().is_some() {}
    (server, client)
}

/// [`handshaken`], then the client sends a message on the reliable ordered channel;
/// returns the datagram that carries it.
fn protected_pair(now: std::time::Instant) -> (Server, Client, Vec<u8>) {
    let (server, mut client) = handshaken(ClientConfig::default(), now);
    client.send(ORDERED, b"the message").unwrap();
    let mut a = [0u8; 1500];
    let t = client.poll_transmit(now, &mut a).unwrap();
    (server, client, a[..t.len].to_vec())
}

fn messages(server: &mut Server) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(e) = server.poll_event() {
        if let ServerEvent::Message { data, .. } = e {
            out.push(data);
        }
    }
    out
}

fn drops(s: &Counters) -> u64 {
    s.decode_errors.iter().sum::<u64>() + s.unknown_connection + s.auth_failed + s.replayed
}

/// A bit flipped in any byte of a protected packet (the CRC recomputed, as an attacker
/// would) gets it dropped and counted, never delivered; the untouched packet is then
/// delivered once, and a replay of it is dropped as `replayed`.
#[test]
fn tampered_and_replayed_packets_are_dropped_and_counted_never_delivered() {
    let now = std::time::Instant::now();
    let (mut server, _client, datagram) = protected_pair(now);
    assert!(
        !datagram
            .windows(b"the message".len())
            .any(|w| w == b"the message"),
        "the message travels sealed"
    );
    for i in 0..datagram.len() {
        if (4..8).contains(&i) {
            continue; // the CRC itself: recomputed below
        }
        let mut d = datagram.clone();
        d[i] ^= 1 << (i % 8);
        packet::seal(&mut d);
        let before = drops(server.stats());
        server.handle_datagram(now, client_addr(0), &d);
        assert_eq!(
            drops(server.stats()),
            before + 1,
            "byte {i}: dropped and counted"
        );
        assert!(
            messages(&mut server).is_empty(),
            "byte {i}: nothing delivered"
        );
    }
    assert!(server.stats().auth_failed >= (datagram.len() - 14) as u64);
    server.handle_datagram(now, client_addr(0), &datagram);
    assert_eq!(messages(&mut server), vec![b"the message".to_vec()]);
    server.handle_datagram(now, client_addr(0), &datagram);
    assert_eq!(server.stats().replayed, 1);
    assert!(
        messages(&mut server).is_empty(),
        "a replay is not delivered"
    );
    assert_eq!(server.connection_count(), 1, "the session survives it all");
}

/// Every message is delivered exactly once, in order, with encryption on across lossy,
/// reordering, duplicating links (the default configuration is protected).
#[test]
fn protected_sessions_deliver_exactly_once_over_bad_links() {
    for (seed, loss, rtt_ms) in [(1, 0.0, 1), (2, 0.05, 20), (3, 0.1, 100)] {
        let mut p = Pair::new(
            ServerConfig::default(),
            ClientConfig::default(),
            lossy(seed, loss, 0.05, 0.05, rtt_ms / 2),
            seed,
        );
        let h = p.connect();
        let len = |i: u32| 1 + (i as usize * 37) % 3000;
        exchange(&mut p, h, ORDERED, 300, len);
        let expect: Vec<_> = (0..300).map(|i| msg(i, len(i))).collect();
        assert_eq!(server_msgs(&p, ORDERED), expect, "seed {seed}");
        assert_eq!(client_msgs(&p, ORDERED), expect, "seed {seed}");
        // The link's duplicates authenticated and were dropped as replays; nothing forged.
        assert_eq!(
            p.server.stats().auth_failed + p.client().stats().auth_failed,
            0
        );
        assert!(
            p.server.stats().replayed + p.client().stats().replayed > 0,
            "seed {seed}"
        );
    }
}

/// A client that pins the server's static key connects and is served; one that pins
/// another key cannot open the `Welcome` (`auth_failed`) and gives up at its handshake
/// timeout; a server that requires pinning refuses anonymous clients.
#[test]
fn pinned_clients_authenticate_the_server() {
    let static_key = [0x42; 32];
    let server = ServerConfig {
        encryption: session::Encryption::Open {
            static_key: Some(static_key),
            allow_anonymous: false,
        },
        ..ServerConfig::default()
    };
    let pinned = |key: [u8; 32]| Security::Open {
        ephemeral: [7; 32],
        server_key: Some(key),
    };
    let right = session::public_key(&static_key);
    let wrong = session::public_key(&[0x43; 32]);
    let mut c = Cluster::with_securities(
        server.clone(),
        &ClientConfig::default(),
        vec![
            pinned(right),
            pinned(wrong),
            Security::insecure_from_seed(3),
        ],
        Model::default(),
        6,
    );
    c.run_for(Duration::from_secs(12));
    assert_eq!(
        c.clients[0].state(),
        ClientState::Connected,
        "the right key"
    );
    assert_eq!(
        c.client_events[1].last(),
        Some(&ClientEvent::Disconnected {
            reason: DisconnectReason::HandshakeTimedOut
        }),
        "the wrong key"
    );
    assert!(
        c.clients[1].stats().auth_failed >= 1,
        "its Welcome did not open"
    );
    assert_eq!(
        c.client_events[2],
        vec![ClientEvent::Disconnected {
            reason: DisconnectReason::Rejected(RejectReason::SecurityMismatch)
        }],
        "anonymous refused"
    );
    assert_eq!(c.server.public_key(), Some(right));
}

/// The first packets near the 16-bit wrap: a client whose initial number is 65,535 loses
/// its first two `Data` packets (numbers 65,535 and 65,536, wire 65,535 and 0); the third
/// (wire 1) must expand to 65,537 — not 1 — to open, and its message (on the unordered
/// channel, so nothing waits for the lost ones) is delivered.
#[test]
fn a_lost_first_packet_across_the_16_bit_wrap_still_opens() {
    let now = std::time::Instant::now();
    let mut client_config = ClientConfig::default();
    client_config.transport.initial_seq = Some(65_535);
    let (mut server, mut client) = handshaken(client_config, now);
    let mut a = [0u8; 1500];
    let mut wires = Vec::new();
    let mut last = Vec::new();
    for i in 0..3u8 {
        client.send(UNORDERED, &[i]).unwrap();
        let t = client.poll_transmit(now, &mut a).unwrap();
        wires.push(u16::from_be_bytes([a[12], a[13]]));
        last = a[..t.len].to_vec();
    }
    assert_eq!(wires, vec![65_535, 0, 1], "the numbers cross the wrap");
    server.handle_datagram(now, client_addr(0), &last);
    assert_eq!(server.stats().auth_failed, 0, "the third packet opened");
    assert!(
        messages(&mut server).contains(&vec![2]),
        "its message is delivered"
    );
}

/// The client's address changes halfway through a stream, as a NAT rebinding does
/// (a new port) or a client that changed networks (a new IP address): the server
/// validates the new address, moves the session there, and every message in both
/// directions is delivered exactly once, in order — including over a link that loses,
/// reorders and duplicates, where stray packets from the old address arrive late.
#[test]
fn a_session_migrates_when_the_client_address_changes_mid_stream() {
    let new_port = SocketAddr::from(([10, 1, 0, 0], 6000));
    let new_ip = SocketAddr::from(([10, 200, 0, 9], 5000));
    for (seed, model, to) in [
        (1, lossy(1, 0.0, 0.0, 0.0, 0), new_port),
        (2, lossy(2, 0.05, 0.1, 0.05, 5), new_port),
        (3, lossy(3, 0.05, 0.1, 0.05, 5), new_ip),
    ] {
        let mut p = Pair::new(
            ServerConfig::default(),
            ClientConfig::default(),
            model,
            seed,
        );
        let h = p.connect();
        let len = |i: u32| 1 + (i as usize * 37) % 1500;
        for i in 0..400 {
            if i == 200 {
                p.rebind(0, to);
            }
            p.client_mut().send(ORDERED, &msg(i, len(i))).unwrap();
            p.server.send(h, ORDERED, &msg(i, len(i))).unwrap();
            p.run_for(Duration::from_millis(16));
        }
        p.drive();
        let expect: Vec<_> = (0..400).map(|i| msg(i, len(i))).collect();
        assert_eq!(server_msgs(&p, ORDERED), expect, "seed {seed}");
        assert_eq!(client_msgs(&p, ORDERED), expect, "seed {seed}");
        let s = p.server.stats();
        assert_eq!(s.migrated, 1, "seed {seed}");
        assert!(s.path_challenges >= 1, "seed {seed}");
        assert_eq!(s.auth_failed, 0, "seed {seed}");
        assert_eq!(
            p.server.connection_stats(h).unwrap().addr,
            to,
            "seed {seed}"
        );
        assert_eq!(p.server.connection_count(), 1);
        assert_eq!(p.client().state(), ClientState::Connected);
    }
}

/// With session tracking on, the server reports each session as it is admitted, moves
/// and ends — what the engine publishes into the XDP session allow-list — and nothing
/// about a path that was never validated.
#[test]
fn session_changes_follow_admission_migration_and_close() {
    let mut p = Pair::new(
        ServerConfig::default(),
        ClientConfig::default(),
        lossy(5, 0.0, 0.0, 0.0, 0),
        5,
    );
    p.server.track_sessions();
    let h = p.connect();
    let changes = |p: &mut Pair| std::iter::from_fn(|| p.server.poll_session()).collect::<Vec<_>>();
    let first = changes(&mut p);
    let conn_id = p.server.connection_stats(h).unwrap().conn_id;
    assert_eq!(
        first,
        vec![SessionChange::Live {
            conn_id,
            addr: client_addr(0),
            may_migrate: true
        }]
    );
    let to = SocketAddr::from(([10, 1, 0, 0], 6000));
    p.rebind(0, to);
    p.client_mut().send(ORDERED, b"moved").unwrap();
    p.drive();
    assert_eq!(
        changes(&mut p),
        vec![SessionChange::Live {
            conn_id,
            addr: to,
            may_migrate: true
        }]
    );
    p.server.disconnect(h, 0);
    p.drive();
    assert_eq!(changes(&mut p), vec![SessionChange::Gone { conn_id }]);
    assert_eq!(p.server.connection_count(), 0);
}

/// Until a new address answers its challenge, the server sends it at most three times
/// the bytes it received from it (RFC 9000 §8), however often it has reason to resend;
/// the session stays on the old address. A copy of a packet already received, sent from
/// another address, starts nothing.
#[test]
fn amplification_toward_an_unvalidated_address_stays_under_three_times() {
    let mut now = std::time::Instant::now();
    let (mut server, mut client) = handshaken(ClientConfig::default(), now);
    let elsewhere = SocketAddr::from(([192, 0, 2, 7], 4444));
    let (mut a, mut b) = ([0u8; 1500], [0u8; 1500]);
    // One genuine packet reaches the server from an address the client does not own
    // (copied by an on-path host and resent), ahead of the original. Nothing sent there
    // is ever answered, and the client falls silent.
    client.send(ORDERED, b"one").unwrap();
    let t = client.poll_transmit(now, &mut a).unwrap();
    let received = t.len as u64;
    server.handle_datagram(now, elsewhere, &a[..t.len]);
    assert_eq!(messages(&mut server), vec![b"one".to_vec()]);
    // The original arrives second: a replay, which must not start anything either.
    server.handle_datagram(now, client_addr(0), &a[..t.len]);
    assert_eq!(server.stats().replayed, 1);
    let (mut sent_there, mut challenges) = (0u64, 0u64);
    // Eight simulated seconds (under the 10 s idle timeout): the server's acks and
    // keepalives to the old address each give it a chance to resend its challenge.
    for _ in 0..800 {
        now += Duration::from_millis(10);
        if server.poll_timeout().is_some_and(|t| t <= now) {
            server.handle_timeout(now);
        }
        while let Some(t) = server.poll_transmit(now, &mut b) {
            if t.dst == elsewhere {
                sent_there += t.len as u64;
                challenges += 1;
            } else {
                assert_eq!(
                    t.dst,
                    client_addr(0),
                    "everything else goes to the old address"
                );
            }
        }
        assert!(
            sent_there <= 3 * received,
            "{sent_there} bytes sent to an address that sent {received}"
        );
    }
    assert!(challenges >= 1, "the new address was challenged");
    assert_eq!(server.stats().path_challenges, challenges);
    assert_eq!(server.stats().migrated, 0);
    assert_eq!(server.connection_count(), 1);
    // A packet the server already has, resent from a third address: a replay, no challenge.
    let third = SocketAddr::from(([192, 0, 2, 8], 4444));
    server.handle_datagram(now, third, &a[..t.len]);
    assert_eq!(server.stats().replayed, 2);
    while let Some(t) = server.poll_transmit(now, &mut b) {
        assert_ne!(t.dst, third, "nothing goes to a replayer's address");
    }
}

/// Without encryption nothing proves a new address is the client: a packet with a live
/// connection id from another address is dropped as `unknown_connection`.
#[test]
fn unprotected_sessions_do_not_migrate() {
    let server = ServerConfig {
        encryption: session::Encryption::Off,
        ..ServerConfig::default()
    };
    let mut p = Pair::new(
        server,
        ClientConfig::default(),
        lossy(4, 0.0, 0.0, 0.0, 0),
        4,
    );
    let h = p.connect();
    p.client_mut().send(ORDERED, b"before").unwrap();
    p.drive();
    p.rebind(0, SocketAddr::from(([10, 1, 0, 0], 6000)));
    p.client_mut().send(ORDERED, b"after").unwrap();
    p.run_for(Duration::from_millis(200));
    assert!(p.server.stats().unknown_connection > 0);
    assert_eq!(p.server.stats().migrated, 0);
    assert_eq!(p.server.stats().path_challenges, 0);
    assert_eq!(server_msgs(&p, ORDERED), vec![b"before".to_vec()]);
    assert_eq!(p.server.connection_stats(h).unwrap().addr, client_addr(0));
}

/// The RTT an endpoint reports is the path's, not the path's plus the peer's ack delay:
/// with one message each way every 50 ms (a game's tick, so acks wait out
/// `max_ack_delay`), both ends' smoothed and minimum RTT come within 5 % of the model's
/// round trip at 1, 20 and 100 ms, with 0, 1 and 5 % random loss each way (the matrix's
/// RTTs and losses). The periodic PING asks for an undelayed ack, which makes min_rtt
/// true and lets the delayed samples be corrected (RFC 9002 §5.3).
#[test]
fn reported_rtt_is_the_path_round_trip() {
    for (rtt_ms, loss) in [1u64, 20, 100]
        .into_iter()
        .flat_map(|r| [0.0, 0.01, 0.05].map(move |l| (r, l)))
    {
        let rtt = Duration::from_millis(rtt_ms);
        let model = Model {
            delay: rtt / 2,
            loss,
            seed: rtt_ms,
            ..Model::default()
        };
        let mut p = Pair::new(
            ServerConfig::default(),
            ClientConfig::default(),
            model,
            rtt_ms,
        );
        let h = p.connect();
        for i in 0..200 {
            p.client_mut().send(ORDERED, &msg(i, 64)).unwrap();
            p.server.send(h, ORDERED, &msg(i, 64)).unwrap();
            p.run_for(Duration::from_millis(50));
        }
        let server = p.server.connection_stats(h).unwrap();
        let client = p.client().connection_stats().unwrap();
        for (end, s) in [("server", server), ("client", client)] {
            for (what, got) in [("smoothed", s.rtt), ("min", s.min_rtt)] {
                let err = got.as_secs_f64() / rtt.as_secs_f64() - 1.0;
                eprintln!(
                    "{rtt_ms} ms, loss {loss}: {end} {what} {got:?} ({:+.2} %)",
                    err * 100.0
                );
                assert!(
                    err.abs() <= 0.05,
                    "{rtt_ms} ms path, {loss} loss: {end} {what} RTT {got:?} ({:+.1} %)",
                    err * 100.0
                );
            }
        }
    }
}

/// Per-connection quality (`ConnStats`, docs/STATS.md): over a clean path nothing is lost or
/// retransmitted and the jitter is near zero; over a path that drops 5 % of packets each
/// way and jitters each by up to 5 ms, both ends count about 5 % of their packets lost,
/// retransmit what they lost, and report milliseconds of jitter. 60 Hz, one reliable
/// message each way per tick, 20 s (1,200 packets each way).
#[test]
fn connection_stats_report_loss_retransmission_and_jitter() {
    for (loss, jitter_ms) in [(0.0, 0), (0.05, 5)] {
        let model = Model {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(jitter_ms),
            loss,
            seed: 77,
            ..Model::default()
        };
        let mut p = Pair::new(ServerConfig::default(), ClientConfig::default(), model, 77);
        let h = p.connect();
        for i in 0..1_200 {
            p.client_mut().send(ORDERED, &msg(i, 64)).unwrap();
            p.server.send(h, ORDERED, &msg(i, 64)).unwrap();
            p.run_for(Duration::from_micros(16_667));
        }
        p.drive();
        assert_eq!(server_msgs(&p, ORDERED).len(), 1_200);
        assert_eq!(client_msgs(&p, ORDERED).len(), 1_200);
        let server = p.server.connection_stats(h).unwrap();
        let client = p.client().connection_stats().unwrap();
        for (end, s) in [("server", server), ("client", client)] {
            eprintln!(
                "loss {loss} jitter {jitter_ms} ms, {end}: sent {} lost {} ({:.2} %) retransmitted {} ({:.2} %) jitter {:?}",
                s.packets_sent,
                s.packets_lost,
                s.loss() * 100.0,
                s.packets_retransmitted,
                s.retransmission() * 100.0,
                s.jitter
            );
            assert!(s.packets_sent >= 1_200, "{end}: {s:?}");
            if loss == 0.0 {
                assert_eq!((s.packets_lost, s.packets_retransmitted), (0, 0), "{end}");
                assert!(s.jitter <= Duration::from_micros(200), "{end}: {s:?}");
            } else {
                assert!((0.03..=0.07).contains(&s.loss()), "{end}: {s:?}");
                assert!(
                    s.packets_retransmitted >= s.packets_lost / 2,
                    "{end}: {s:?}"
                );
                assert!(
                    s.packets_retransmitted <= s.packets_sent / 10,
                    "{end}: {s:?}"
                );
                assert!(
                    (Duration::from_millis(1)..=Duration::from_millis(10)).contains(&s.jitter),
                    "{end}: {s:?}"
                );
            }
        }
    }
}
