//! The `protected` target: a protected session's receive path (`Conn::unprotect`, the
//! AES-256-GCM open, the replay window; docs/PROTOCOL.md §13.4) on hostile bytes, at both
//! ends of an established open-mode session.
//!
//! Input: a sequence of steps, each a byte `op` and a length-prefixed chunk. Packets to
//! the server come from the client's address when `op / 4 % 3 == 0`, else from one of
//! two other addresses (a migration attempt, docs/PROTOCOL.md §5.4):
//! - `op % 4 == 0`: the chunk as a datagram, its header rewritten to a `Data` (or, odd
//!   length, `Disconnect`) packet of the live connection, CRC made right, so it reaches
//!   the decryption;
//! - `1`: a genuine sealed packet (one the client sent) with the bit at each chunk byte's
//!   position flipped, CRC made right;
//! - `2`: the genuine packet again (a replay);
//! - `3`: the chunk as a datagram to the client, header rewritten likewise.
//!
//! Invariants: nothing panics; the server delivers only the genuine message, at most
//! once, and the client nothing (the server sent it nothing but a Welcome); every forged
//! packet is counted (`auth_failed` or a decode/lookup drop); the session survives forged
//! `Disconnect`s; it never migrates (no one answers a challenge), and no other address
//! gets more than 3× the bytes it sent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use xrudp_proto::packet;
use xrudp_proto::session::Security;
use xrudp_proto::{Client, ClientEvent, ClientState, Server, ServerConfig, ServerEvent};

/// The genuine message the client sends.
pub const MESSAGE: &[u8] = b"genuine";

/// Runs one input.
///
/// # Panics
/// When an invariant above fails (the fuzzer's finding).
pub fn run(data: &[u8]) {
    let now = Instant::now();
    let config = ServerConfig {
        encryption: ServerConfig::default().encryption,
        ..crate::server_config()
    };
    // INVARIANT: the fixed configurations validate (checked by the seed tests).
    let mut server = Server::new(config, crate::SERVER_SEED, now).expect("valid");
    let mut client = Client::new(
        crate::client_config(),
        crate::addrs()[0],
        crate::CLIENT_SEED,
        now,
        Security::insecure_from_seed(crate::CLIENT_SEED),
    )
    .expect("valid");
    let (from, server_addr) = (crate::addrs()[1], crate::addrs()[0]);
    let (mut up, mut down) = ([0u8; 2048], [0u8; 2048]);
    for _ in 0..2 {
        let sent = client
            .poll_transmit(now, &mut up)
            .expect("handshake packet");
        server.handle_datagram(now, from, &up[..sent.len]);
        let reply = server
            .poll_transmit(now, &mut down)
            .expect("handshake reply");
        client.handle_datagram(now, server_addr, &down[..reply.len]);
    }
    assert_eq!(client.state(), ClientState::Connected);
    while server.poll_event().is_some() {}
    while client.poll_event().is_some() {}
    client.send(0, MESSAGE).expect("queued");
    let sent = client.poll_transmit(now, &mut up).expect("the message");
    let genuine = up[..sent.len].to_vec();
    let conn_id = u32::from_be_bytes(genuine[8..12].try_into().expect("4 bytes"));

    let mut delivered = 0usize;
    // Bytes each address sent the server, and the server sent it.
    let mut traffic: HashMap<SocketAddr, (u64, u64)> = HashMap::new();
    let mut out = [0u8; 2048];
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let src = crate::addrs()[1 + usize::from(op / 4) % 3];
        let mut to_server = |d: &[u8]| {
            traffic.entry(src).or_default().0 += d.len() as u64;
            server.handle_datagram(now, src, d);
        };
        match op % 4 {
            0 | 3 => {
                let mut d = header(conn_id, chunk.len() % 2 == 1);
                d.extend_from_slice(chunk);
                packet::seal(&mut d);
                if op % 4 == 0 {
                    to_server(&d);
                } else {
                    client.handle_datagram(now, server_addr, &d);
                }
            }
            1 => {
                let mut d = genuine.clone();
                for &p in chunk {
                    let i = usize::from(p) % d.len();
                    if !(4..8).contains(&i) {
                        d[i] ^= 1 << (p % 8);
                    }
                }
                packet::seal(&mut d);
                to_server(&d);
            }
            _ => to_server(&genuine),
        }
        while let Some(t) = server.poll_transmit(now, &mut out) {
            let (received, sent) = traffic.entry(t.dst).or_default();
            *sent += t.len as u64;
            assert!(
                t.dst == from || *sent <= 3 * *received,
                "{sent} bytes to {} after {received} from it",
                t.dst
            );
        }
        assert_eq!(server.stats().migrated, 0, "no one answered a challenge");
        while let Some(e) = server.poll_event() {
            match e {
                ServerEvent::Message { data, .. } => {
                    assert_eq!(data, MESSAGE, "only the genuine message is delivered");
                    delivered += 1;
                }
                ServerEvent::Disconnected { reason, .. } => {
                    panic!("a forged packet closed the session: {reason:?}")
                }
                ServerEvent::Connected { .. } => panic!("no second connection"),
            }
        }
        while let Some(e) = client.poll_event() {
            assert!(
                !matches!(
                    e,
                    ClientEvent::Message { .. } | ClientEvent::Disconnected { .. }
                ),
                "the client delivered or closed on forged bytes: {e:?}"
            );
        }
        assert!(
            delivered <= 1,
            "the genuine message is delivered at most once"
        );
    }
    assert_eq!(server.connection_count(), 1);
}

/// A fixed header of a `Data` (or `Disconnect`) packet of connection `conn_id`, CRC zero.
fn header(conn_id: u32, disconnect: bool) -> Vec<u8> {
    let kind = if disconnect { 7 } else { 6 };
    let mut h = vec![b'X', b'R', 1, kind, 0, 0, 0, 0];
    h.extend_from_slice(&conn_id.to_be_bytes());
    h
}

/// Seeds: replays, flips of every region, and junk to both ends.
#[must_use]
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut flips = vec![1u8, 40];
    flips.extend((0u8..40).map(|i| i.wrapping_mul(7)));
    vec![
        ("replay".into(), vec![2, 0, 2, 0, 2, 0]),
        ("flips".into(), flips),
        (
            "junk_both_ways".into(),
            [
                vec![0, 20],
                vec![0x5a; 20],
                vec![3, 21],
                vec![0xa5; 21],
                vec![2, 0],
            ]
            .concat(),
        ),
        (
            "forged_disconnect".into(),
            [vec![0, 3], vec![1, 0, 7]].concat(),
        ),
        // The genuine packet first from another address (a challenge goes there), then
        // from the client's, then flipped and replayed from the third.
        (
            "migration_attempts".into(),
            vec![6, 0, 2, 0, 9, 2, 3, 40, 10, 0, 4, 4, 1, 2, 3, 4],
        ),
    ]
}
