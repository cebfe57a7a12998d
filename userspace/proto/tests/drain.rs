//! Draining (docs/PROTOCOL.md §8.5) in the deterministic simulator: every client learns of
//! it exactly once, with the server's redirect address, through loss; no reliable message
//! queued before or after the notice is lost; the server learns that each notice arrived;
//! a new client is refused.

use std::net::SocketAddr;
use std::time::Duration;

use xrudp_proto::sim::network::Model;
use xrudp_proto::sim::{Cluster, Pair};
use xrudp_proto::{
    ClientConfig, ClientEvent, ConnHandle, DisconnectReason, RejectReason, ServerConfig,
    ServerEvent,
};

const CLIENTS: usize = 20;
const BEFORE: u32 = 30;
const AFTER: u32 = 30;

fn handles(c: &Cluster) -> Vec<ConnHandle> {
    c.server_events
        .iter()
        .filter_map(|e| match e {
            ServerEvent::Connected { handle, .. } => Some(*handle),
            _ => None,
        })
        .collect()
}

#[test]
fn every_client_gets_the_notice_once_and_keeps_every_reliable_message() {
    for (loss, redirect) in [
        (0.0, Some("198.18.0.1:7778".parse::<SocketAddr>().unwrap())),
        (0.05, Some("[2001:db8::1]:7779".parse().unwrap())),
        (0.05, None),
    ] {
        let model = Model {
            delay: Duration::from_millis(10),
            loss,
            seed: 11,
            ..Model::default()
        };
        let mut c = Cluster::new(
            ServerConfig::default(),
            &ClientConfig::default(),
            CLIENTS,
            model,
            11,
        );
        assert!(c.run_while(Duration::from_secs(10), Cluster::all_connected));
        let hs = handles(&c);
        assert_eq!(hs.len(), CLIENTS);
        let send = |c: &mut Cluster, from: u32, n: u32| {
            for h in &hs {
                for k in from..from + n {
                    c.server
                        .send(*h, 0, &k.to_be_bytes())
                        .expect("room to send");
                }
            }
        };
        send(&mut c, 0, BEFORE);
        c.server.drain(redirect);
        assert!(c.server.is_draining());
        send(&mut c, BEFORE, AFTER);
        let done = c.run_while(Duration::from_secs(30), |c| {
            c.server.drain_notices_acked() == CLIENTS
                && c.client_messages
                    .iter()
                    .all(|&n| n == u64::from(BEFORE + AFTER))
        });
        assert!(
            done,
            "loss {loss}: {} of {CLIENTS} notices acknowledged, messages {:?}",
            c.server.drain_notices_acked(),
            c.client_messages
        );
        // Keep running: the notice rides on every packet until acked, reported once.
        c.run_for(Duration::from_secs(2));
        for (i, events) in c.client_events.iter().enumerate() {
            let notices: Vec<_> = events
                .iter()
                .filter_map(|e| match e {
                    ClientEvent::Draining { redirect } => Some(*redirect),
                    _ => None,
                })
                .collect();
            assert_eq!(notices, vec![redirect], "loss {loss}: client {i}");
            let seqs: Vec<u32> = events
                .iter()
                .filter_map(|e| match e {
                    ClientEvent::Message { data, .. } => {
                        Some(u32::from_be_bytes(data[..4].try_into().expect("4 bytes")))
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(
                seqs,
                (0..BEFORE + AFTER).collect::<Vec<_>>(),
                "loss {loss}: client {i} got every message, in order"
            );
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, ClientEvent::Disconnected { .. })),
                "loss {loss}: client {i} stays connected while the server drains"
            );
        }
        assert_eq!(c.server.connection_count(), CLIENTS);
    }
}

#[test]
fn a_draining_server_refuses_new_clients_as_full() {
    let mut p = Pair::new(
        ServerConfig::default(),
        ClientConfig::default(),
        Model {
            delay: Duration::from_millis(5),
            ..Model::default()
        },
        3,
    );
    p.server.drain(None);
    p.run_for(Duration::from_secs(5));
    assert_eq!(p.server.connection_count(), 0);
    assert!(
        p.client_events().iter().any(|e| matches!(
            e,
            ClientEvent::Disconnected {
                reason: DisconnectReason::Rejected(RejectReason::ServerFull)
            }
        )),
        "{:?}",
        p.client_events()
    );
}
