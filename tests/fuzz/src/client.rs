//! The `client_sequence` target: a [`Client`] of the server at address 0, fed any sequence
//! of [`Op`]s (datagrams from the server's address and from strangers, forged handshake
//! answers with fuzzed fields, data packets with its connection id, timeouts, sends,
//! closes), polled as the input says.
//!
//! Invariants: no panic; every datagram it sends goes to the server, parses, is a
//! client-to-server type, and a `Hello`/`Response` is padded to `MIN_HANDSHAKE_LEN` (the
//! client's half of anti-amplification); it is `Connected` only after a `Welcome` from the
//! server's address; once `Disconnected` it stays so and sends nothing more; its
//! connection's memory stays under a bound set by configuration.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xrudp_common::rudp::PacketType;
use xrudp_proto::handshake::{self, Handshake, Welcome};
use xrudp_proto::packet::{COOKIE_LEN, Datagram, MAX_CHANNELS, MIN_HANDSHAKE_LEN};
use xrudp_proto::{Client, ClientEvent, ClientState};

use crate::ops::Endpoint;

/// Runs one input.
pub fn run(data: &[u8]) {
    let _ = run_rig(data);
}

/// Runs one input and returns the rig (for tests of the seeds).
#[must_use]
pub fn run_rig(data: &[u8]) -> Rig {
    Rig::new(Instant::now()).run(data)
}

/// A client under test and what the harness has observed of it.
#[derive(Debug)]
pub struct Rig {
    /// The client.
    pub client: Client,
    /// The current time.
    pub now: Instant,
    addrs: [SocketAddr; 4],
    /// Nonce and type of the last handshake packet the client sent.
    last_handshake: Option<(u64, PacketType)>,
    welcomed: bool,
    connected_events: u32,
    drain_events: u32,
    disconnected: bool,
    conn_id: u32,
    out: Vec<u8>,
    /// Datagrams the client sent, in order (kept only when recording seeds).
    pub sent: Option<Vec<Vec<u8>>>,
}

impl Rig {
    /// A fresh client (same seed every time) of the server at address 0.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        let addrs = crate::addrs();
        // INVARIANT: the fixed configuration validates (checked by the seed tests).
        let client = Client::new(
            crate::client_config(),
            addrs[0],
            crate::CLIENT_SEED,
            now,
            xrudp_proto::session::Security::Off,
        )
        .expect("valid");
        Self {
            client,
            now,
            addrs,
            last_handshake: None,
            welcomed: false,
            connected_events: 0,
            drain_events: 0,
            disconnected: false,
            conn_id: 0,
            out: vec![0; 2048],
            sent: None,
        }
    }
}

/// The ops as the client target reads them: address 0 is the server, the others are
/// strangers; `Send` and `Close` ignore `from` (the client has one connection).
impl Endpoint for Rig {
    fn deliver(&mut self, from: u8, bytes: &[u8]) {
        let i = usize::from(from) % 4;
        let before = self.client.state();
        self.client.handle_datagram(self.now, self.addrs[i], bytes);
        if before == ClientState::Connecting && self.client.state() != ClientState::Connecting {
            // It left the handshake on this datagram: a welcome (or a refusal) from the
            // server's address.
            assert_eq!(i, 0, "a stranger's datagram ended the handshake");
            let d = Datagram::parse(bytes).expect("it accepted the datagram");
            if d.kind == PacketType::Welcome {
                assert_ne!(d.conn_id, 0, "admitted with connection id 0");
                self.welcomed = true;
                self.conn_id = d.conn_id;
            }
        }
    }

    fn conn_id(&self, _from: u8) -> u32 {
        self.conn_id
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.client.handle_timeout(self.now);
    }

    fn respond(&mut self, from: u8, seq: u16, extra: &[u8]) {
        let Some((nonce, kind)) = self.last_handshake else {
            return;
        };
        let h = if kind == PacketType::Hello {
            let mut cookie = [0; COOKIE_LEN];
            let n = extra.len().min(COOKIE_LEN);
            cookie[..n].copy_from_slice(&extra[..n]);
            Handshake::Challenge { nonce, cookie }
        } else {
            Handshake::Welcome(welcome(nonce, seq, extra))
        };
        let mut buf = [0u8; 256];
        // INVARIANT: a challenge or welcome is under 100 bytes.
        let n = handshake::encode(&mut buf, conn_id_of(extra), &h).expect("fits");
        self.deliver(from, &buf[..n]);
    }

    fn send(&mut self, _from: u8, channel: u8, len: u16) {
        let ch = channel % MAX_CHANNELS as u8;
        let m = crate::message(u32::from(len), usize::from(len));
        let _ = self.client.send(ch, &m);
    }

    fn close(&mut self, _from: u8, code: u16) {
        self.client.disconnect(code);
    }

    fn transmit(&mut self) -> bool {
        let Some(t) = self.client.poll_transmit(self.now, &mut self.out) else {
            return false;
        };
        assert!(!self.disconnected, "sent after Disconnected");
        assert_eq!(t.dst, self.addrs[0], "sent only to the server");
        let bytes = &self.out[..t.len];
        let d = Datagram::parse(bytes).expect("the client's datagrams parse");
        match d.kind {
            PacketType::Hello | PacketType::Response => {
                assert!(t.len >= MIN_HANDSHAKE_LEN, "unpadded {:?}", d.kind);
                let h = handshake::decode(d.kind, d.body, d.len).expect("decodes");
                let (Handshake::Hello { nonce } | Handshake::Response { nonce, .. }) = h else {
                    unreachable!("decoded as its kind")
                };
                self.last_handshake = Some((nonce, d.kind));
            }
            PacketType::Data | PacketType::Disconnect => {
                assert!(self.welcomed, "connection packet before a welcome");
                assert_eq!(d.conn_id, self.conn_id);
            }
            k => panic!("client sent a {k:?}"),
        }
        if let Some(sent) = &mut self.sent {
            sent.push(bytes.to_vec());
        }
        true
    }

    /// Checks the order of the events.
    fn events(&mut self) {
        while let Some(e) = self.client.poll_event() {
            match e {
                ClientEvent::Connected => {
                    assert!(self.welcomed, "connected without a welcome from the server");
                    assert!(!self.disconnected, "connected after disconnected");
                    self.connected_events += 1;
                    assert_eq!(self.connected_events, 1, "connected twice");
                }
                ClientEvent::Disconnected { .. } => {
                    assert!(!self.disconnected, "disconnected twice");
                    self.disconnected = true;
                }
                ClientEvent::Message { data, .. } => {
                    assert!(!self.disconnected, "message after disconnected");
                    self.client.recycle(data);
                }
                ClientEvent::Draining { .. } => {
                    assert!(self.welcomed, "a drain notice before the welcome");
                    assert!(!self.disconnected, "a drain notice after disconnected");
                    self.drain_events += 1;
                    assert_eq!(self.drain_events, 1, "the drain notice reported twice");
                }
            }
        }
    }

    /// A disconnected client stays so; its connection's memory stays under the bound.
    fn check(&self) {
        if self.disconnected {
            assert_eq!(self.client.state(), ClientState::Disconnected);
        }
        if let Some(s) = self.client.connection_stats() {
            assert_eq!(s.addr, self.addrs[0]);
            let bound = crate::memory_bound_per_connection();
            assert!(s.memory <= bound, "client memory {} > {bound}", s.memory);
        }
    }
}

/// The connection id a forged welcome carries: from the fuzz bytes, so zero is reachable.
fn conn_id_of(extra: &[u8]) -> u32 {
    match extra.get(20..24) {
        Some(b) => u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        None => 1,
    }
}

/// A welcome with fields from the fuzz bytes (defaults past their end).
fn welcome(nonce: u64, initial_seq: u16, extra: &[u8]) -> Welcome {
    let u16_at = |o: usize, d: u16| {
        extra
            .get(o..o + 2)
            .map_or(d, |b| u16::from_be_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize, d: u32| {
        extra
            .get(o..o + 4)
            .map_or(d, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let count = extra.get(14).map_or(4, |c| c % (MAX_CHANNELS as u8 + 1));
    let mut channels = [0; MAX_CHANNELS];
    for (i, c) in channels.iter_mut().enumerate().take(usize::from(count)) {
        *c = extra.get(24 + i).copied().unwrap_or((i % 4) as u8 + 1);
    }
    Welcome {
        nonce,
        initial_seq,
        mtu: u16_at(0, 1200),
        max_ack_delay_us: u32_at(2, 5000),
        idle_timeout_ms: u32_at(6, 10_000),
        keepalive_ms: u32_at(10, 1000),
        channels,
        channel_count: count.max(1),
    }
}
