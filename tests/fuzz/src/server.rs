//! The `server_sequence` target: a [`Server`] fed any sequence of [`Op`]s from four peer
//! addresses, with `handle_datagram`, `handle_timeout`, `poll_transmit` and `poll_event`
//! interleaved as the input says.
//!
//! Invariants checked as it runs:
//! - no panic; `connection_count() <= max_connections`; `memory()` stays under a bound
//!   set by the configuration, not by the input;
//! - every datagram the server sends parses (header and CRC), is a server-to-client type,
//!   fits the MTU, and goes to an address that sent it something;
//! - anti-amplification: the stateless replies (`Challenge`, `Reject`, `VersionMismatch`)
//!   sent to an address never add up to more bytes than that address sent;
//! - connection packets (`Welcome`, `Data`, `Disconnect`) go only to addresses the server
//!   admitted (a `Connected` event, checked once every event has been drained at the end):
//!   an address that has not proved it receives its cookie can get nothing else.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xrudp_common::rudp::PacketType;
use xrudp_proto::handshake::{self, Handshake};
use xrudp_proto::packet::{COOKIE_LEN, Datagram, MAX_TOKEN_LEN};
use xrudp_proto::{ConnHandle, Server, ServerEvent};

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

/// A server under test and what the harness has observed of it.
#[derive(Debug)]
pub struct Rig {
    /// The server.
    pub server: Server,
    /// The current time.
    pub now: Instant,
    addrs: [SocketAddr; 4],
    bytes_in: [u64; 4],
    reply_out: [u64; 4],
    conn_out: [bool; 4],
    connected: [bool; 4],
    handles: [Option<ConnHandle>; 4],
    challenge: [Option<(u64, [u8; COOKIE_LEN])>; 4],
    conn_id: [u32; 4],
    baseline: usize,
    out: Vec<u8>,
    /// Datagrams the server sent, in order (kept only when recording seeds).
    pub sent: Option<Vec<(SocketAddr, Vec<u8>)>>,
}

impl Rig {
    /// A fresh server (same seed every time) at `now`.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        // INVARIANT: the fixed configuration validates (checked by the seed tests).
        let server = Server::new(crate::server_config(), crate::SERVER_SEED, now).expect("valid");
        let baseline = server.memory();
        Self {
            server,
            now,
            addrs: crate::addrs(),
            bytes_in: [0; 4],
            reply_out: [0; 4],
            conn_out: [false; 4],
            connected: [false; 4],
            handles: [None; 4],
            challenge: [None; 4],
            conn_id: [0; 4],
            baseline,
            out: vec![0; 2048],
            sent: None,
        }
    }
}

/// The ops as the server target reads them: `from` picks one of four peer addresses.
impl Endpoint for Rig {
    fn deliver(&mut self, from: u8, bytes: &[u8]) {
        let i = usize::from(from) % 4;
        self.bytes_in[i] += bytes.len() as u64;
        self.server.handle_datagram(self.now, self.addrs[i], bytes);
    }

    fn conn_id(&self, from: u8) -> u32 {
        self.conn_id[usize::from(from) % 4]
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.server.handle_timeout(self.now);
    }

    fn respond(&mut self, from: u8, seq: u16, extra: &[u8]) {
        let Some((nonce, cookie)) = self.challenge[usize::from(from) % 4] else {
            return;
        };
        let mut buf = [0u8; 2048];
        // The first byte picks the protection mode, the next 32 the client's key (open
        // modes), the rest is the token.
        let mode = extra.first().map_or(0, |m| m % 4);
        let extra = extra.get(1..).unwrap_or(&[]);
        let client_key = (mode >= 2).then(|| {
            let mut k = [0u8; 32];
            let n = extra.len().min(32);
            k[..n].copy_from_slice(&extra[..n]);
            k
        });
        let extra = if mode >= 2 {
            extra.get(32..).unwrap_or(&[])
        } else {
            extra
        };
        let token = &extra[..extra.len().min(MAX_TOKEN_LEN)];
        let h = Handshake::Response {
            nonce,
            cookie,
            initial_seq: seq,
            token,
            mode,
            client_key,
        };
        // INVARIANT: 2048 bytes hold a padded response with the largest token.
        let n = handshake::encode(&mut buf, 0, &h).expect("fits");
        self.deliver(from, &buf[..n]);
    }

    fn send(&mut self, from: u8, channel: u8, len: u16) {
        if let Some(h) = self.handles[usize::from(from) % 4] {
            let ch = channel % self.server.config().channels.len() as u8;
            let m = crate::message(u32::from(len), usize::from(len));
            let _ = self.server.send(h, ch, &m);
        }
    }

    fn close(&mut self, from: u8, code: u16) {
        if let Some(h) = self.handles[usize::from(from) % 4] {
            self.server.disconnect(h, code);
        }
    }

    fn transmit(&mut self) -> bool {
        let Some(t) = self.server.poll_transmit(self.now, &mut self.out) else {
            return false;
        };
        let bytes = &self.out[..t.len];
        assert!(
            t.len <= self.server.config().transport.mtu,
            "{} > mtu",
            t.len
        );
        let i = crate::addr_index(t.dst).expect("sent only to an address that sent to it");
        let d = Datagram::parse(bytes).expect("the server's datagrams parse");
        match d.kind {
            PacketType::Challenge | PacketType::Reject | PacketType::VersionMismatch => {
                assert_eq!(d.conn_id, 0, "stateless replies carry no connection id");
                self.reply_out[i] += t.len as u64;
                assert!(
                    self.reply_out[i] <= self.bytes_in[i],
                    "amplification: {} bytes of replies to {} for {} received",
                    self.reply_out[i],
                    t.dst,
                    self.bytes_in[i]
                );
                if let Ok(Handshake::Challenge { nonce, cookie }) =
                    handshake::decode(d.kind, d.body, d.len)
                {
                    self.challenge[i] = Some((nonce, cookie));
                }
            }
            PacketType::Welcome | PacketType::Data | PacketType::Disconnect => {
                assert_ne!(d.conn_id, 0, "connection packets carry a connection id");
                self.conn_out[i] = true;
                if d.kind == PacketType::Welcome {
                    self.conn_id[i] = d.conn_id;
                }
            }
            PacketType::Hello | PacketType::Response => panic!("server sent a {:?}", d.kind),
        }
        if let Some(sent) = &mut self.sent {
            sent.push((t.dst, bytes.to_vec()));
        }
        true
    }

    /// Records admissions.
    fn events(&mut self) {
        while let Some(e) = self.server.poll_event() {
            match e {
                ServerEvent::Connected { handle, addr, .. } => {
                    let i = crate::addr_index(addr).expect("admitted a known address");
                    self.connected[i] = true;
                    self.handles[i] = Some(handle);
                }
                ServerEvent::Disconnected { handle, .. } => {
                    for h in &mut self.handles {
                        if *h == Some(handle) {
                            *h = None;
                        }
                    }
                }
                ServerEvent::Message { data, .. } => self.server.recycle(data),
            }
        }
    }

    /// Connections within `max_connections`, memory within the configured bound.
    fn check(&self) {
        let max = self.server.config().max_connections;
        assert!(self.server.connection_count() <= max);
        let bound = self.baseline + max * crate::memory_bound_per_connection();
        assert!(
            self.server.memory() <= bound,
            "server memory {} > {bound}",
            self.server.memory()
        );
    }

    /// Connection packets went only to admitted addresses.
    fn check_end(&self) {
        for i in 0..4 {
            assert!(
                !self.conn_out[i] || self.connected[i],
                "connection packets sent to {} which was never admitted",
                self.addrs[i]
            );
        }
    }
}
