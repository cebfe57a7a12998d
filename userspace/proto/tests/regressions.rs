//! Regressions found by the fuzz targets, replayed step by step over a hand-driven network
//! (deterministic: time is simulated, every packet's fate is chosen by the test).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use xrudp_proto::*;

/// A connected Client/Server pair and one packet queue per direction.
struct Rig {
    server: Server,
    client: Client,
    handle: Option<ConnHandle>,
    now: Instant,
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    out: Vec<u8>,
}

const SERVER_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)), 4001);
const CLIENT_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 9)), 4004);

impl Rig {
    /// The `reassembly` fuzz target's settings: 64 KiB buffers, 16 KiB messages, 1 s
    /// keepalive, 10 s idle timeout; handshake over a perfect network.
    fn new() -> Self {
        let now = Instant::now();
        let transport = Transport {
            send_buffer: 64 * 1024,
            recv_buffer: 64 * 1024,
            max_message_size: 16 * 1024,
            ..Transport::default()
        };
        let server_config = ServerConfig {
            transport: transport.clone(),
            max_connections: 2,
            idle_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(1),
            ..ServerConfig::default()
        };
        let client_config = ClientConfig {
            transport,
            ..ClientConfig::default()
        };
        let server = Server::new(server_config, 1, now).expect("valid server config");
        let client = Client::new(
            client_config,
            SERVER_ADDR,
            2,
            now,
            xrudp_proto::session::Security::insecure_from_seed(2),
        )
        .expect("valid client config");
        let mut rig = Self {
            server,
            client,
            handle: None,
            now,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            out: vec![0; 2048],
        };
        for _ in 0..8 {
            rig.transmit();
            rig.deliver_all();
            while let Some(e) = rig.server.poll_event() {
                if let ServerEvent::Connected { handle, .. } = e {
                    rig.handle = Some(handle);
                }
            }
        }
        assert_eq!(rig.client.state(), ClientState::Connected, "handshake");
        assert!(rig.handle.is_some(), "the server saw the connection");
        rig
    }

    fn handle(&self) -> ConnHandle {
        // INVARIANT: set in `new`.
        self.handle.expect("connected")
    }

    fn transmit(&mut self) {
        while let Some(t) = self.client.poll_transmit(self.now, &mut self.out) {
            self.to_server.push_back(self.out[..t.len].to_vec());
        }
        while let Some(t) = self.server.poll_transmit(self.now, &mut self.out) {
            self.to_client.push_back(self.out[..t.len].to_vec());
        }
    }

    fn deliver_to_server(&mut self, n: usize) {
        for _ in 0..n {
            let d = self
                .to_server
                .pop_front()
                .expect("a packet towards the server");
            self.server.handle_datagram(self.now, CLIENT_ADDR, &d);
        }
    }

    fn deliver_to_client(&mut self, n: usize) {
        for _ in 0..n {
            let d = self
                .to_client
                .pop_front()
                .expect("a packet towards the client");
            self.client.handle_datagram(self.now, SERVER_ADDR, &d);
        }
    }

    fn deliver_all(&mut self) {
        while let Some(d) = self.to_server.pop_front() {
            self.server.handle_datagram(self.now, CLIENT_ADDR, &d);
        }
        while let Some(d) = self.to_client.pop_front() {
            self.client.handle_datagram(self.now, SERVER_ADDR, &d);
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.server.handle_timeout(self.now);
        self.client.handle_timeout(self.now);
    }

    /// A faithful network until both ends are quiet, jumping to the next timer when
    /// nothing is in flight; returns the messages each end received (server, client).
    fn settle(&mut self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (mut at_server, mut at_client) = (Vec::new(), Vec::new());
        for _ in 0..4000 {
            self.transmit();
            let moved = !self.to_server.is_empty() || !self.to_client.is_empty();
            self.deliver_all();
            while let Some(e) = self.server.poll_event() {
                if let ServerEvent::Message { data, .. } = e {
                    at_server.push(data);
                }
            }
            while let Some(e) = self.client.poll_event() {
                if let ClientEvent::Message { data, .. } = e {
                    at_client.push(data);
                }
            }
            if moved {
                continue;
            }
            if self.client.is_quiet() && !self.server.has_pending() {
                break;
            }
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { break };
            self.now = self.now.max(next);
            self.server.handle_timeout(self.now);
            self.client.handle_timeout(self.now);
        }
        (at_server, at_client)
    }
}

fn message(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

/// Fuzz input `reassembly-idle-then-send-never-acked`: a loss leaves a lost packet on
/// record at the server, the connection goes quiet, a keepalive interval passes (the
/// per-connection stream state is freed), then the server sends. The client receives the
/// message, and the server must count it as acknowledged.
#[test]
fn message_sent_after_idle_keepalive_is_acknowledged() {
    let mut rig = Rig::new();
    let (up, down, late) = (message(1, 5008), message(2, 520), message(3, 777));
    rig.client.send(0, &up).expect("client send");
    rig.server
        .send(rig.handle(), 0, &down)
        .expect("server send");
    rig.advance(Duration::from_millis(60));
    rig.transmit();
    rig.to_server.pop_front().expect("first fragment"); // lost
    rig.advance(Duration::from_millis(80));
    rig.deliver_to_server(1);
    rig.deliver_to_client(1);
    rig.transmit();
    rig.deliver_to_server(1);
    rig.advance(Duration::from_millis(1020));
    rig.deliver_to_server(1);
    rig.transmit();
    rig.deliver_to_server(2);
    rig.advance(Duration::from_millis(1020));
    rig.server
        .send(rig.handle(), 0, &late)
        .expect("server send after idle");
    let (at_server, at_client) = rig.settle();

    assert_eq!(at_server, [up], "the client's message arrives once");
    assert_eq!(
        at_client,
        [down, late],
        "the server's messages arrive in order"
    );
    let s = rig
        .server
        .connection_stats(rig.handle())
        .expect("still connected");
    assert_eq!(s.send_buffered, 0, "server: everything acknowledged: {s:?}");
    assert!(rig.client.is_quiet(), "client quiet");
    assert!(!rig.server.has_pending(), "server quiet: {s:?}");
}
