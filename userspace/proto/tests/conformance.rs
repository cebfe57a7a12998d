//! Conformance: the rules of docs/PROTOCOL.md that a client written from the document
//! alone depends on, one test each, checked against the real server (and, for what the
//! server tells a client in `Welcome`, the real client).
//!
//! The peer on the other side of each test is written from the document, not from the
//! crate: its own CRC32C, its own header and frame encoders, byte offsets as the tables
//! give them. Only the server (or client) under test comes from the crate. Mode `Off`
//! throughout: the rules here are those of the clear wire (§13's are pinned by its test
//! vectors).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use xrudp_proto::session::{Encryption, Security};
use xrudp_proto::sim::{SERVER_ADDR, client_addr};
use xrudp_proto::{
    Client, ClientConfig, ClientEvent, ClientState, ConnHandle, DecodeError, DisconnectReason,
    Server, ServerConfig, ServerEvent, Violation,
};

// ---- the document's wire format, written out (§1, §2, §4, §5) ----

const HELLO: u8 = 1;
const CHALLENGE: u8 = 2;
const RESPONSE: u8 = 3;
const WELCOME: u8 = 4;
const DATA: u8 = 6;
const DISCONNECT: u8 = 7;
const VERSION_MISMATCH: u8 = 8;
const MIN_HANDSHAKE: usize = 1200;

/// §2: CRC32C, Castagnoli, reflected, init and final XOR 0xFFFFFFFF (bit by bit).
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A datagram: the fixed header (version 1 unless given), the body, the CRC over the
/// whole with its field zero, written big-endian (§1: every integer is).
fn datagram_v(version: u8, kind: u8, conn_id: u32, body: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(12 + body.len());
    d.extend_from_slice(b"XR");
    d.push(version);
    d.push(kind);
    d.extend_from_slice(&[0; 4]);
    d.extend_from_slice(&conn_id.to_be_bytes());
    d.extend_from_slice(body);
    reseal(&mut d);
    d
}

/// Writes the CRC of `d` (§2: over the datagram with its field zero), after a header edit.
fn reseal(d: &mut [u8]) {
    d[4..8].fill(0);
    let crc = crc32c(d);
    d[4..8].copy_from_slice(&crc.to_be_bytes());
}

fn datagram(kind: u8, conn_id: u32, body: &[u8]) -> Vec<u8> {
    datagram_v(1, kind, conn_id, body)
}

fn padded(mut body: Vec<u8>) -> Vec<u8> {
    body.resize(MIN_HANDSHAKE - 12, 0);
    body
}

/// A received datagram, its header checked as §2 says a receiver must.
struct Packet {
    kind: u8,
    conn_id: u32,
    body: Vec<u8>,
}

fn parse(d: &[u8]) -> Packet {
    assert!(d.len() >= 12);
    assert_eq!(&d[..3], b"XR\x01");
    let mut zeroed = d.to_vec();
    zeroed[4..8].fill(0);
    assert_eq!(
        u32::from_be_bytes(d[4..8].try_into().unwrap()),
        crc32c(&zeroed)
    );
    Packet {
        kind: d[3],
        conn_id: u32::from_be_bytes(d[8..12].try_into().unwrap()),
        body: d[12..].to_vec(),
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// §5.2 frames.
mod frame {
    pub(crate) fn ack(largest: u16, delay: u16, bits: u32) -> Vec<u8> {
        let mut f = vec![0x01];
        f.extend_from_slice(&largest.to_be_bytes());
        f.extend_from_slice(&delay.to_be_bytes());
        f.extend_from_slice(&bits.to_be_bytes());
        f
    }

    pub(crate) fn ping() -> Vec<u8> {
        vec![0x02]
    }

    /// `MESSAGE` on a channel with a sequence number (reliable or sequenced).
    pub(crate) fn message(channel: u8, seq: u16, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x03, channel];
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&(data.len() as u16).to_be_bytes());
        f.extend_from_slice(data);
        f
    }

    pub(crate) fn fragment(channel: u8, seq: u16, index: u16, count: u16, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x04, channel];
        for v in [seq, index, count, data.len() as u16] {
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(data);
        f
    }

    /// A decoded `ACK`: (largest, bits).
    pub(crate) fn find_ack(frames: &[u8]) -> Option<(u16, u32)> {
        // The server puts its ACK first in every Data packet that has one (§5.2: every
        // Data packet carries one once its sender has received anything).
        (frames.first() == Some(&0x01))
            .then(|| (super::u16_at(frames, 1), super::u32_at(frames, 5)))
    }
}

/// The default channel layout (§6.1): 0 reliable ordered, 1 reliable unordered,
/// 2 unreliable, 3 unreliable sequenced.
fn server_config() -> ServerConfig {
    ServerConfig {
        encryption: Encryption::Off,
        ..ServerConfig::default()
    }
}

/// A client written from the document, connected to a real server.
struct Peer {
    server: Server,
    now: Instant,
    addr: SocketAddr,
    nonce: u64,
    /// Our initial sequence number *S*c and next packet number (wire, 16 bits).
    sc: u16,
    pn: u16,
    /// The server's *S*s, the connection id, our handle on the server side.
    ss: u16,
    id: u32,
    handle: Option<ConnHandle>,
    cookie: [u8; 20],
}

impl Peer {
    fn new(config: ServerConfig, sc: u16) -> Self {
        let now = Instant::now();
        let server = Server::new(config, 7, now).expect("server config");
        let mut p = Self {
            server,
            now,
            addr: client_addr(1),
            nonce: 0x0123_4567_89AB_CDEF,
            sc,
            pn: sc,
            ss: 0,
            id: 0,
            handle: None,
            cookie: [0; 20],
        };
        p.connect();
        p
    }

    fn connected(sc: u16) -> Self {
        Self::new(server_config(), sc)
    }

    fn send(&mut self, d: &[u8]) {
        self.server.handle_datagram(self.now, self.addr, d);
    }

    /// Everything the server has to send to us now, parsed.
    fn recv(&mut self) -> Vec<Packet> {
        let mut out = vec![0u8; 1500];
        let mut got = Vec::new();
        while let Some(t) = self.server.poll_transmit(self.now, &mut out) {
            assert_eq!(t.dst, self.addr, "the server sends only to its one client");
            got.push(parse(&out[..t.len]));
        }
        got
    }

    fn events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    fn hello(&self) -> Vec<u8> {
        datagram(HELLO, 0, &padded(self.nonce.to_be_bytes().to_vec()))
    }

    /// §4.2 `Response` in mode `Off`: nonce, cookie, *S*c, token length 0, mode 0.
    fn response(&self) -> Vec<u8> {
        let mut b = self.nonce.to_be_bytes().to_vec();
        b.extend_from_slice(&self.cookie);
        b.extend_from_slice(&self.sc.to_be_bytes());
        b.extend_from_slice(&0u16.to_be_bytes());
        b.push(0);
        datagram(RESPONSE, 0, &padded(b))
    }

    fn connect(&mut self) {
        self.send(&self.hello());
        let c = self.recv();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].kind, CHALLENGE);
        assert_eq!(
            u64::from_be_bytes(c[0].body[..8].try_into().unwrap()),
            self.nonce
        );
        self.cookie.copy_from_slice(&c[0].body[8..28]);
        self.send(&self.response());
        let w = self.recv();
        assert_eq!(w.len(), 1);
        self.welcomed(&w[0]);
        let Some(ServerEvent::Connected { handle, .. }) = self.events().pop() else {
            panic!("no Connected event")
        };
        self.handle = Some(handle);
    }

    /// §4.4 `Welcome` in mode `Off`.
    fn welcomed(&mut self, w: &Packet) {
        assert_eq!(w.kind, WELCOME);
        assert_ne!(w.conn_id, 0);
        assert_eq!(
            u64::from_be_bytes(w.body[..8].try_into().unwrap()),
            self.nonce
        );
        self.id = w.conn_id;
        self.ss = u16_at(&w.body, 8);
    }

    /// A `Data` packet with the next packet number.
    fn data(&mut self, frames: &[&[u8]]) -> Vec<u8> {
        let mut b = self.pn.to_be_bytes().to_vec();
        self.pn = self.pn.wrapping_add(1);
        for f in frames {
            b.extend_from_slice(f);
        }
        datagram(DATA, self.id, &b)
    }

    fn send_data(&mut self, frames: &[&[u8]]) {
        let d = self.data(frames);
        self.send(&d);
    }

    /// The first `Disconnect` the server sends now: (kind, code).
    fn disconnect_sent(&mut self) -> Option<(u8, u16)> {
        self.recv()
            .into_iter()
            .find(|p| p.kind == DISCONNECT)
            .map(|p| (p.body[0], u16_at(&p.body, 1)))
    }
}

// ---- §2: the CRC ----

/// §2 with §1: the CRC field holds the CRC32C big-endian. The same CRC written
/// little-endian fails the check and is a counted drop, not an answer.
#[test]
fn the_crc_is_written_big_endian() {
    let mut p = Peer::connected(100);
    let mut d = p.data(&[&frame::ping()]);
    d[4..8].reverse();
    p.send(&d);
    assert!(p.recv().is_empty());
    assert_eq!(
        p.server.stats().decode_errors[DecodeError::BadCrc.index()],
        1
    );
    // The same packet with the CRC as the document says is answered (a PING: at once).
    d[4..8].reverse();
    p.send(&d);
    assert_eq!(p.recv().len(), 1);
}

// ---- §4.1, §4.2: the version byte ----

/// §4.1: every packet but `Hello` carries version 1; a `Response` with another version
/// is dropped (`BadVersion`), while a `Hello` with another gets `VersionMismatch`.
#[test]
fn only_a_hello_may_carry_a_foreign_version() {
    let mut p = Peer::connected(100);
    let before = p.server.stats().accepted;
    p.nonce ^= 1;
    let mut r = p.response();
    r[2] = 2;
    reseal(&mut r);
    p.send(&r);
    assert!(p.recv().is_empty());
    assert_eq!(
        p.server.stats().decode_errors[DecodeError::BadVersion.index()],
        1
    );
    assert_eq!(p.server.stats().accepted, before);

    let hello = datagram_v(2, HELLO, 0, &padded(p.nonce.to_be_bytes().to_vec()));
    p.send(&hello);
    let m = p.recv();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].kind, VERSION_MISMATCH);
    assert_eq!(
        u64::from_be_bytes(m[0].body[8..16].try_into().unwrap()) & 0b10,
        0b10
    );
}

// ---- §4.4: Welcome, resent; Replaced ----

/// §4.4 item 1: a `Response` with the connection's nonce, from its address, gets the same
/// `Welcome` again for as long as the connection lives — also after `Data` has flowed.
#[test]
fn a_repeated_response_gets_the_welcome_again_while_the_connection_lives() {
    let mut p = Peer::connected(100);
    let (id, ss) = (p.id, p.ss);
    p.send_data(&[&frame::ping()]);
    assert_eq!(p.recv().len(), 1, "the PING's ack");
    p.send(&p.response());
    let w = p.recv();
    assert_eq!(w.len(), 1);
    p.welcomed(&w[0]);
    assert_eq!((p.id, p.ss), (id, ss));
    assert_eq!(p.server.stats().accepted, 1);
    assert_eq!(p.server.connection_count(), 1);
}

/// §4.4 item 2: a `Response` from the same address with another nonce (the client
/// restarted) closes the old connection with reason `Replaced` — the server's application
/// sees it — and sends nothing to the old id: its peer is the restarted client.
#[test]
fn a_restarted_client_replaces_its_connection_without_a_disconnect() {
    let mut p = Peer::connected(100);
    let (old_id, old) = (p.id, p.handle.unwrap());
    p.nonce = 0x1111;
    p.send(&p.hello());
    let c = p.recv();
    p.cookie.copy_from_slice(&c[0].body[8..28]);
    p.send(&p.response());
    let sent = p.recv();
    assert_eq!(sent.len(), 1, "only the new Welcome, no Disconnect");
    p.welcomed(&sent[0]);
    assert_ne!(p.id, old_id);
    let events = p.events();
    assert!(matches!(
        events[0],
        ServerEvent::Disconnected { handle, reason: DisconnectReason::Replaced } if handle == old
    ));
    assert!(matches!(events[1], ServerEvent::Connected { .. }));
    // The old id is gone: a packet with it is an unknown connection.
    let mut d = p.data(&[&frame::ping()]);
    d[8..12].copy_from_slice(&old_id.to_be_bytes());
    reseal(&mut d);
    p.send(&d);
    assert!(p.recv().is_empty());
    assert_eq!(p.server.stats().unknown_connection, 1);
}

// ---- §5.1, §6.2: where numbers start; ack-only packets take numbers ----

/// §5.1 and §6.2: the first `Data` packet of each side has number *S* and the first
/// message on each channel sequence number *S*; an ack-only packet takes a packet number
/// like any other.
#[test]
fn packet_and_channel_numbers_start_at_s_and_ack_only_packets_take_numbers() {
    let mut p = Peer::connected(40_000);
    let handle = p.handle.unwrap();
    // Message Sc + 1 first: held, not delivered (ordered channel, §6.2).
    let (sc, ss) = (p.sc, p.ss);
    p.send_data(&[
        &frame::message(0, sc.wrapping_add(1), b"second"),
        &frame::ping(),
    ]);
    assert!(p.events().is_empty());
    let first = p.recv();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].kind, DATA);
    // The server's first Data packet: number Ss, an ACK of our Sc, nothing else.
    assert_eq!(u16_at(&first[0].body, 0), ss);
    assert_eq!(frame::find_ack(&first[0].body[2..]), Some((sc, 0)));
    assert_eq!(first[0].body.len(), 2 + 9);
    // Message Sc: both delivered, in order.
    p.send_data(&[&frame::message(0, sc, b"first"), &frame::ping()]);
    let got: Vec<Vec<u8>> = p
        .events()
        .into_iter()
        .filter_map(|e| match e {
            ServerEvent::Message { data, .. } => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(got, [b"first".to_vec(), b"second".to_vec()]);
    let second = p.recv();
    assert_eq!(u16_at(&second[0].body, 0), ss.wrapping_add(1));
    // The server's first message: channel sequence Ss, in packet Ss + 2.
    p.server.send(handle, 0, b"hello").unwrap();
    let third = p.recv();
    assert_eq!(third.len(), 1);
    let b = &third[0].body;
    assert_eq!(u16_at(b, 0), ss.wrapping_add(2));
    let msg = &b[2 + 9..];
    assert_eq!(msg[0], 0x03);
    assert_eq!(msg[1], 0);
    assert_eq!(u16_at(msg, 2), ss);
    assert_eq!(&msg[6..6 + usize::from(u16_at(msg, 4))], b"hello");
}

/// §5.1: before any packet arrived, numbers expand around *S*; across the 16-bit wrap
/// they stay consecutive (the ACK's bits show all four).
#[test]
fn packet_numbers_expand_across_the_wrap_from_s() {
    let mut p = Peer::connected(0xFFFE);
    for _ in 0..4 {
        p.send_data(&[&frame::ping()]);
    }
    let acks: Vec<(u16, u32)> = p
        .recv()
        .iter()
        .filter_map(|d| frame::find_ack(&d.body[2..]))
        .collect();
    assert_eq!(acks.last(), Some(&(0x0001, 0b111)));
    assert_eq!(p.server.stats().duplicate_packets, 0);
}

// ---- §8.4: violations and their codes ----

/// Every cause §8.4 lists closes the connection with `Disconnect(kind 2, code)`, the
/// server's application seeing `Violation(..)`.
#[test]
fn every_violation_closes_with_its_code() {
    /// §6.3: the most fragments a message may have is `max_message_size / 1151 + 1`.
    fn max_count_of(_: &Peer) -> u16 {
        (ServerConfig::default().transport.max_message_size / 1151 + 1) as u16
    }
    type Case = (&'static str, fn(&Peer) -> Vec<Vec<u8>>, Violation);
    let cases: [Case; 11] = [
        (
            "unknown frame type",
            |_| vec![vec![0x07]],
            Violation::MalformedFrame,
        ),
        (
            "frame overrunning the packet",
            |p| {
                let mut f = frame::message(0, p.sc, b"abc");
                f[5] = 100; // length 100, 3 bytes follow
                vec![f]
            },
            Violation::MalformedFrame,
        ),
        (
            "channel not announced",
            |p| vec![frame::message(4, p.sc, b"x")],
            Violation::MalformedFrame,
        ),
        (
            "FRAGMENT count 1",
            |p| vec![frame::fragment(0, p.sc, 0, 1, b"x")],
            Violation::MalformedFrame,
        ),
        (
            "FRAGMENT index = count",
            |p| vec![frame::fragment(0, p.sc, 2, 2, b"x")],
            Violation::MalformedFrame,
        ),
        (
            "FRAGMENT on an unreliable channel",
            |_| {
                // Channel 2 has no sequence number on MESSAGE, but FRAGMENT always has.
                vec![frame::fragment(2, 0, 0, 2, b"x")]
            },
            Violation::BadFragment,
        ),
        (
            "FRAGMENT on the sequenced channel",
            |p| vec![frame::fragment(3, p.sc, 0, 2, b"x")],
            Violation::BadFragment,
        ),
        (
            "FRAGMENT count above the maximum message size",
            |p| vec![frame::fragment(0, p.sc, 0, max_count_of(p) + 1, b"x")],
            Violation::MessageTooLarge,
        ),
        (
            "fragments of one message disagreeing on the count",
            |p| {
                vec![
                    frame::fragment(0, p.sc.wrapping_add(1), 1, 3, b"x"),
                    frame::fragment(0, p.sc, 0, 2, b"x"),
                ]
            },
            Violation::BadFragment,
        ),
        (
            "ACK above the largest packet sent",
            |p| vec![frame::ack(p.ss.wrapping_add(5), 0, 0)],
            Violation::AckOfUnsent,
        ),
        (
            "ACK below the first packet sent",
            |p| vec![frame::ack(p.ss.wrapping_sub(1), 0, 0)],
            Violation::AckOfUnsent,
        ),
    ];
    for (name, frames, violation) in cases {
        let mut p = Peer::connected(100);
        // One packet per frame: a packet is checked whole before any frame takes effect.
        for f in frames(&p) {
            p.send_data(&[&f]);
        }
        assert_eq!(
            p.disconnect_sent(),
            Some((2, violation as u16)),
            "{name}: Disconnect(kind 2, code {})",
            violation as u16
        );
        let closed = p.events().into_iter().any(|e| {
            matches!(e, ServerEvent::Disconnected { reason: DisconnectReason::Violation(v), .. } if v == violation)
        });
        assert!(
            closed,
            "{name}: the application sees Violation({violation:?})"
        );
    }
}

/// §8.4 / §6.3: more than 32 messages in reassembly at once is `MessageTooLarge`; 32 are
/// fine. (On the unordered channel, where every fragment goes to reassembly as it
/// arrives.)
#[test]
fn a_33rd_reassembly_is_a_violation() {
    let mut p = Peer::connected(100);
    for k in 0..32u16 {
        p.send_data(&[&frame::fragment(1, p.sc.wrapping_add(2 * k), 0, 2, b"x")]);
    }
    assert_eq!(p.disconnect_sent(), None);
    p.send_data(&[&frame::fragment(1, p.sc.wrapping_add(2 * 32), 0, 2, b"x")]);
    assert_eq!(
        p.disconnect_sent(),
        Some((2, Violation::MessageTooLarge as u16))
    );
}

/// §8.4 / §6.3: a reassembly whose bytes exceed `max_message_size` is `MessageTooLarge`.
#[test]
fn a_reassembly_beyond_the_maximum_size_is_a_violation() {
    let mut config = server_config();
    config.transport.max_message_size = 4 * 1024;
    let mut p = Peer::new(config, 100);
    // 4 fragments are allowed (4096 / 1167 + 1), each of 1,100 bytes: 4,400 > 4,096.
    let chunk = vec![7u8; 1100];
    for i in 0..3u16 {
        p.send_data(&[&frame::fragment(0, p.sc.wrapping_add(i), i, 4, &chunk)]);
        assert_eq!(p.disconnect_sent(), None, "fragment {i}");
    }
    p.send_data(&[&frame::fragment(0, p.sc.wrapping_add(3), 3, 4, &chunk)]);
    assert_eq!(
        p.disconnect_sent(),
        Some((2, Violation::MessageTooLarge as u16))
    );
}

/// §8.4: a `Data` packet too short to hold its packet number is a counted drop, not a
/// violation (it fails before any frame is read); one that holds only the number is an
/// empty, valid packet.
#[test]
fn a_data_packet_without_a_packet_number_is_dropped_not_a_violation() {
    let mut p = Peer::connected(100);
    let id = p.id;
    p.send(&datagram(DATA, id, &[]));
    p.send(&datagram(DATA, id, &[0x00]));
    assert!(p.recv().is_empty());
    assert_eq!(
        p.server.stats().decode_errors[DecodeError::Truncated.index()],
        2
    );
    let empty = p.data(&[]);
    p.send(&empty);
    p.send_data(&[&frame::ping()]);
    let got = p.recv();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, DATA);
    assert_eq!(p.server.stats().violations, 0);
}

// ---- what the client takes from Welcome (§4.4, §7.1) ----

/// A real client, and the server side written from the document: it answers the
/// client's `Hello` with a `Challenge` and its `Response` with `welcome`'s fields.
struct FakeServer {
    client: Client,
    now: Instant,
    nonce: u64,
}

/// The `Welcome` fields after the nonce (§4.4).
struct WelcomeFields {
    ss: u16,
    mtu: u16,
    max_ack_delay_us: u32,
    idle_ms: u32,
    keepalive_ms: u32,
    channels: Vec<u8>,
}

impl Default for WelcomeFields {
    fn default() -> Self {
        Self {
            ss: 500,
            mtu: 1200,
            max_ack_delay_us: 5_000,
            idle_ms: 10_000,
            keepalive_ms: 1_000,
            channels: vec![1, 2, 3, 4],
        }
    }
}

impl FakeServer {
    fn new() -> Self {
        let now = Instant::now();
        let client = Client::new(ClientConfig::default(), SERVER_ADDR, 3, now, Security::Off)
            .expect("client");
        Self {
            client,
            now,
            nonce: 0,
        }
    }

    fn sent(&mut self) -> Vec<Packet> {
        let mut out = vec![0u8; 1500];
        let mut got = Vec::new();
        while let Some(t) = self.client.poll_transmit(self.now, &mut out) {
            got.push(parse(&out[..t.len]));
        }
        got
    }

    fn deliver(&mut self, d: &[u8]) {
        self.client.handle_datagram(self.now, SERVER_ADDR, d);
    }

    /// Runs the handshake up to the client's `Response`, then sends `w`.
    fn welcome(&mut self, w: &WelcomeFields) {
        let hello = self.sent();
        assert_eq!(hello[0].kind, HELLO);
        self.nonce = u64::from_be_bytes(hello[0].body[..8].try_into().unwrap());
        let mut c = self.nonce.to_be_bytes().to_vec();
        c.extend_from_slice(&[9; 20]);
        self.deliver(&datagram(CHALLENGE, 0, &c));
        let r = self.sent();
        assert_eq!(r[0].kind, RESPONSE);
        assert_eq!(r[0].body.len() + 12, MIN_HANDSHAKE);
        let mut b = self.nonce.to_be_bytes().to_vec();
        b.extend_from_slice(&w.ss.to_be_bytes());
        b.extend_from_slice(&w.mtu.to_be_bytes());
        b.extend_from_slice(&w.max_ack_delay_us.to_be_bytes());
        b.extend_from_slice(&w.idle_ms.to_be_bytes());
        b.extend_from_slice(&w.keepalive_ms.to_be_bytes());
        b.push(w.channels.len() as u8);
        b.extend_from_slice(&w.channels);
        self.deliver(&datagram(WELCOME, 77, &b));
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(t) = self.client.poll_timeout().filter(|&t| t <= end) {
            self.now = self.now.max(t);
            self.client.handle_timeout(self.now);
            let _ = self.sent();
        }
        self.now = end;
        self.client.handle_timeout(self.now);
    }
}

/// §4.4: the client clamps the idle timeout `Welcome` sets to at least 1 s rather than
/// refusing it: with 10 ms announced and a silent server, it is still connected at
/// 900 ms and closed (`TimedOut`) by 1.1 s.
#[test]
fn the_client_clamps_the_welcome_idle_timeout() {
    let mut s = FakeServer::new();
    s.welcome(&WelcomeFields {
        idle_ms: 10,
        ..WelcomeFields::default()
    });
    assert_eq!(s.client.state(), ClientState::Connected);
    s.advance(Duration::from_millis(900));
    assert_eq!(s.client.state(), ClientState::Connected);
    s.advance(Duration::from_millis(200));
    let reason = std::iter::from_fn(|| s.client.poll_event()).find_map(|e| match e {
        ClientEvent::Disconnected { reason } => Some(reason),
        _ => None,
    });
    assert_eq!(reason, Some(DisconnectReason::TimedOut));
}

/// §4.4: the client clamps the keepalive interval `Welcome` sets to at least 100 ms: with
/// 1 ms announced and every packet acknowledged at once (so nothing stays in flight and
/// only keepalives leave), it sends at most one packet per 100 ms.
#[test]
fn the_client_clamps_the_welcome_keepalive() {
    let mut s = FakeServer::new();
    let w = WelcomeFields {
        keepalive_ms: 1,
        ..WelcomeFields::default()
    };
    s.welcome(&w);
    let mut server_pn = w.ss;
    let mut sent = 0;
    let end = s.now + Duration::from_secs(1);
    loop {
        for p in s.sent() {
            sent += 1;
            let mut b = server_pn.to_be_bytes().to_vec();
            server_pn = server_pn.wrapping_add(1);
            b.extend_from_slice(&frame::ack(u16_at(&p.body, 0), 0, 0));
            s.deliver(&datagram(DATA, 77, &b));
        }
        match s.client.poll_timeout().filter(|&t| t <= end) {
            Some(t) => {
                s.now = s.now.max(t);
                s.client.handle_timeout(s.now);
            }
            None => break,
        }
    }
    assert_eq!(s.client.state(), ClientState::Connected);
    // The welcome's PING, then keepalives at 100 ms: about 10 (1 ms would give ~1,000).
    assert!((5..=12).contains(&sent), "{sent} packets in 1 s");
}

/// §4.4: an MTU in `Welcome` above the client's is clamped to the client's (1200 by
/// default), one below 1200 to 1200: a large message goes out in fragments of
/// 1200 − 12 − 2 − 9 − 10 = 1167 bytes (§6.3), so datagrams of 1191 bytes (no `ACK`
/// frame yet: the client has received no `Data`).
#[test]
fn the_client_clamps_the_welcome_mtu() {
    for mtu in [9000u16, 600] {
        let mut s = FakeServer::new();
        s.welcome(&WelcomeFields {
            mtu,
            ..WelcomeFields::default()
        });
        let _ = s.sent();
        s.client.send(0, &vec![1u8; 5000]).unwrap();
        let sizes: Vec<usize> = s.sent().iter().map(|p| p.body.len() + 12).collect();
        assert!(!sizes.is_empty());
        // The window lets a few out now; each is a full fragment (or the shorter last).
        assert_eq!(sizes[0], 12 + 2 + 10 + 1167, "MTU {mtu}: {sizes:?}");
        assert!(sizes.iter().all(|&n| n <= 1191), "MTU {mtu}: {sizes:?}");
    }
}

/// §4.4: a `Welcome` with a channel count outside 1..=8 or an unknown channel kind is
/// invalid and dropped: the client keeps waiting.
#[test]
fn a_welcome_with_bad_channels_is_dropped() {
    for channels in [vec![], vec![1; 9], vec![1, 5]] {
        let mut s = FakeServer::new();
        s.welcome(&WelcomeFields {
            channels: channels.clone(),
            ..WelcomeFields::default()
        });
        assert_eq!(s.client.state(), ClientState::Connecting, "{channels:?}");
    }
}

/// §7.1: the client delays an ack at most the `max_ack_delay` the server announced when
/// that is below its own (5 ms by default): the server's RTT estimator caps the client's
/// reported delays at its own value.
#[test]
fn the_client_acks_within_the_servers_max_ack_delay() {
    let mut s = FakeServer::new();
    let w = WelcomeFields {
        max_ack_delay_us: 2_000,
        ..WelcomeFields::default()
    };
    s.welcome(&w);
    let _ = s.sent();
    // One ack-eliciting packet without a PING: the client delays its ack.
    let mut b = w.ss.to_be_bytes().to_vec();
    b.extend_from_slice(&frame::message(0, w.ss, b"m"));
    s.deliver(&datagram(DATA, 77, &b));
    let received = s.now;
    assert!(s.sent().is_empty(), "the ack is delayed");
    let mut acks = Vec::new();
    while acks.is_empty() {
        let t = s.client.poll_timeout().expect("an ack timer");
        assert!(
            t <= received + Duration::from_millis(2),
            "nothing sent {:?} after the packet",
            t - received
        );
        s.now = s.now.max(t);
        s.client.handle_timeout(s.now);
        acks = s
            .sent()
            .iter()
            .filter(|p| p.kind == DATA)
            .map(|p| frame::find_ack(&p.body[2..]))
            .collect();
    }
    assert_eq!(acks, [Some((w.ss, 0))]);
}
