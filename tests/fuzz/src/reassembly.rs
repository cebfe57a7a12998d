//! The `reassembly` target: a connected Client/Server pair exchanging fragmented messages
//! over a "network" the fuzzer controls: each packet in flight is delivered, dropped,
//! duplicated, deferred behind the others, or corrupted (with or without a valid CRC), and
//! forged fragments (any channel, sequence, index, count, length) are injected into either
//! end.
//!
//! Invariants: no panic; both ends' `memory()` stays under a bound set by configuration;
//! until a direction sees a forged or resealed packet, every message it delivers on the
//! reliable channels is whole and unaltered, delivered at most once, and in order on the
//! ordered channel. Liveness: at the end of the input the network turns faithful; if
//! nothing was forged either way and the connection is still open once both ends are quiet,
//! every message either end queued has been delivered.
//!
//! Input: a sequence of steps, each a tag byte and its operands (see [`Step`]).

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use xrudp_common::rudp::PacketType;
use xrudp_proto::packet::{self, Datagram, FRAGMENT_OVERHEAD, Writer, frame};
use xrudp_proto::{Client, ClientEvent, ClientState, ConnHandle, Server, ServerEvent};

use crate::ops::conn_packet;

/// Packets held in flight per direction, at most (the oldest is dropped beyond it).
const MAX_IN_FLIGHT: usize = 512;

/// Largest message the target sends (the configured maximum).
const MAX_MESSAGE: usize = 16 * 1024;

/// One step of the input; the tag byte is taken modulo 8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// `[0, channel, len_lo, len_hi]`: the client sends a message (channel 0 ordered, 1
    /// unordered).
    ClientSend {
        /// Channel selector.
        channel: u8,
        /// Length selector.
        len: u16,
    },
    /// `[1, channel, len_lo, len_hi]`: the server sends a message.
    ServerSend {
        /// Channel selector.
        channel: u8,
        /// Length selector.
        len: u16,
    },
    /// `[2, action, pos]`: the next client→server packet's fate.
    ToServer {
        /// What happens to it.
        action: u8,
        /// Which byte a corruption flips.
        pos: u8,
    },
    /// `[3, action, pos]`: the next server→client packet's fate.
    ToClient {
        /// What happens to it.
        action: u8,
        /// Which byte a corruption flips.
        pos: u8,
    },
    /// `[4, ms]`: time passes (`ms * 4` milliseconds); both ends handle timeouts.
    Advance {
        /// Quarter of the milliseconds.
        ms: u8,
    },
    /// `[5]`: both ends transmit what they have (up to 64 datagrams each).
    Transmit,
    /// `[6, to_client, pn(2), channel, seq(2), index(2), count(2), len, data...]`: a forged
    /// data packet carrying one FRAGMENT frame.
    Forge {
        /// Into the client (odd) or the server (even).
        to_client: u8,
        /// Packet number.
        pn: u16,
        /// Channel.
        channel: u8,
        /// Message sequence number.
        seq: u16,
        /// Fragment index.
        index: u16,
        /// Fragment count.
        count: u16,
        /// Fragment data length (the data is taken from the input).
        len: u8,
    },
    /// `[7]`: both ends' events are drained and checked.
    Events,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let _ = run_rig(data);
}

/// Runs one input and returns the rig (for tests of the seeds).
#[must_use]
pub fn run_rig(data: &[u8]) -> Rig {
    let mut rig = Rig::new(Instant::now());
    let mut rest = data;
    while let Some((step, data, tail)) = next_step(rest) {
        rig.apply(step, data);
        rest = tail;
    }
    rig.apply(Step::Events, &[]);
    rig.settle();
    rig
}

fn next_step(b: &[u8]) -> Option<(Step, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let u16_at = |b: &[u8], o: usize| Some(u16::from_le_bytes([*b.get(o)?, *b.get(o + 1)?]));
    Some(match tag % 8 {
        0 | 1 => {
            let (channel, len) = (*b.first()?, u16_at(b, 1)?);
            let s = if tag % 8 == 0 {
                Step::ClientSend { channel, len }
            } else {
                Step::ServerSend { channel, len }
            };
            (s, &[][..], &b[3..])
        }
        2 | 3 => {
            let (action, pos) = (*b.first()?, *b.get(1)?);
            let s = if tag % 8 == 2 {
                Step::ToServer { action, pos }
            } else {
                Step::ToClient { action, pos }
            };
            (s, &[][..], &b[2..])
        }
        4 => (Step::Advance { ms: *b.first()? }, &[][..], &b[1..]),
        5 => (Step::Transmit, &[][..], b),
        6 => {
            let len = *b.get(11)?;
            let s = Step::Forge {
                to_client: b[0],
                pn: u16_at(b, 1)?,
                channel: b[3],
                seq: u16_at(b, 4)?,
                index: u16_at(b, 6)?,
                count: u16_at(b, 8)?,
                len,
            };
            let end = (12 + usize::from(len)).min(b.len());
            (s, &b[12..end], &b[end..])
        }
        _ => (Step::Events, &[][..], b),
    })
}

/// Appends a step's encoding (for seeds); `data` is a forged fragment's payload.
pub fn encode(step: Step, data: &[u8], out: &mut Vec<u8>) {
    match step {
        Step::ClientSend { channel, len } | Step::ServerSend { channel, len } => {
            out.push(u8::from(matches!(step, Step::ServerSend { .. })));
            out.push(channel);
            out.extend(len.to_le_bytes());
        }
        Step::ToServer { action, pos } => out.extend([2, action, pos]),
        Step::ToClient { action, pos } => out.extend([3, action, pos]),
        Step::Advance { ms } => out.extend([4, ms]),
        Step::Transmit => out.push(5),
        Step::Forge {
            to_client,
            pn,
            channel,
            seq,
            index,
            count,
            len,
        } => {
            out.extend([6, to_client]);
            out.extend(pn.to_le_bytes());
            out.push(channel);
            out.extend(seq.to_le_bytes());
            out.extend(index.to_le_bytes());
            out.extend(count.to_le_bytes());
            out.push(len);
            out.extend(&data[..usize::from(len).min(data.len())]);
        }
        Step::Events => out.push(7),
    }
}

/// One direction's receiving side, as the harness checks it.
#[derive(Debug, Default)]
struct Receiver {
    /// A forged or resealed packet went this way: content is no longer the sender's.
    forged: bool,
    seen: [HashSet<u32>; 2],
    last_ordered: Option<u32>,
    count: usize,
    /// Ids queued towards this receiver, per channel.
    sent: [HashSet<u32>; 2],
}

impl Receiver {
    fn delivered(&mut self, channel: u8, data: &[u8]) {
        self.count += 1;
        if self.forged || channel > 1 {
            return;
        }
        let id =
            crate::check_message(data).expect("a reliable message arrives whole and unaltered");
        assert!(
            self.seen[usize::from(channel)].insert(id),
            "message {id} delivered twice on channel {channel}"
        );
        if channel == 0 {
            assert!(
                self.last_ordered.is_none_or(|l| id > l),
                "ordered channel delivered {id} after {:?}",
                self.last_ordered
            );
            self.last_ordered = Some(id);
        }
    }
}

/// The connected pair and the network between them.
#[derive(Debug)]
pub struct Rig {
    server: Server,
    client: Client,
    now: Instant,
    to_server: VecDeque<Vec<u8>>,
    to_client: VecDeque<Vec<u8>>,
    at_server: Receiver,
    at_client: Receiver,
    next_id: u32,
    conn_id: u32,
    server_handle: Option<ConnHandle>,
    server_baseline: usize,
    out: Vec<u8>,
}

impl Rig {
    /// A pair that has completed its handshake over a perfect network.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        let addrs = crate::addrs();
        // INVARIANT: the fixed configurations validate (checked by the seed tests).
        let server = Server::new(crate::server_config(), crate::SERVER_SEED, now).expect("valid");
        let client = Client::new(
            crate::client_config(),
            addrs[3],
            crate::CLIENT_SEED,
            now,
            xrudp_proto::session::Security::Off,
        )
        .expect("valid");
        let server_baseline = server.memory();
        let mut rig = Self {
            server,
            client,
            now,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            at_server: Receiver::default(),
            at_client: Receiver::default(),
            next_id: 0,
            conn_id: 0,
            server_handle: None,
            server_baseline,
            out: vec![0; 2048],
        };
        // Hello, challenge, response, welcome: one leg per round.
        for _ in 0..8 {
            rig.transmit();
            rig.deliver_all();
        }
        assert_eq!(
            rig.client.state(),
            ClientState::Connected,
            "handshake completes"
        );
        rig.events();
        rig
    }

    /// Messages delivered (to the server, to the client) so far.
    #[must_use]
    pub fn delivered(&self) -> (usize, usize) {
        (self.at_server.count, self.at_client.count)
    }

    /// Applies one step; `data` is a forged fragment's payload.
    pub fn apply(&mut self, step: Step, data: &[u8]) {
        let addrs = crate::addrs();
        match step {
            Step::ClientSend { channel, len } | Step::ServerSend { channel, len } => {
                let ch = channel % 2;
                let m = crate::message(self.next_id, 8 + usize::from(len) % (MAX_MESSAGE - 8));
                let to_server = matches!(step, Step::ClientSend { .. });
                let ok = if to_server {
                    self.client.send(ch, &m).is_ok()
                } else {
                    let handle = self.server_handle;
                    handle.is_some_and(|h| self.server.send(h, ch, &m).is_ok())
                };
                if ok {
                    let rx = if to_server {
                        &mut self.at_server
                    } else {
                        &mut self.at_client
                    };
                    rx.sent[usize::from(ch)].insert(self.next_id);
                    self.next_id += 1;
                }
            }
            Step::ToServer { action, pos } => {
                if let Some(d) = pump(&mut self.to_server, action, pos, &mut self.at_server) {
                    self.server.handle_datagram(self.now, addrs[0], &d);
                }
            }
            Step::ToClient { action, pos } => {
                if let Some(d) = pump(&mut self.to_client, action, pos, &mut self.at_client) {
                    self.client.handle_datagram(self.now, addrs[3], &d);
                }
            }
            Step::Advance { ms } => {
                self.now += Duration::from_millis(4 * u64::from(ms));
                self.server.handle_timeout(self.now);
                self.client.handle_timeout(self.now);
            }
            Step::Transmit => self.transmit(),
            Step::Forge {
                to_client,
                pn,
                channel,
                seq,
                index,
                count,
                len,
            } => {
                let n = usize::from(len).min(data.len());
                let mut body = vec![0u8; 2 + FRAGMENT_OVERHEAD + n];
                let mut w = Writer::new(&mut body);
                // INVARIANT: the body is sized for the packet number and one frame.
                w.u16(pn).expect("fits");
                w.u8(frame::FRAGMENT).expect("fits");
                w.u8(channel).expect("fits");
                w.u16(seq).expect("fits");
                w.u16(index).expect("fits");
                w.u16(count).expect("fits");
                w.u16(n as u16).expect("fits");
                w.bytes(&data[..n]).expect("fits");
                let d = conn_packet(PacketType::Data, self.conn_id, &body);
                if to_client % 2 == 1 {
                    self.at_client.forged = true;
                    self.client.handle_datagram(self.now, addrs[3], &d);
                } else {
                    self.at_server.forged = true;
                    self.server.handle_datagram(self.now, addrs[0], &d);
                }
            }
            Step::Events => self.events(),
        }
        self.check();
    }

    /// Runs a faithful network until both ends are quiet (or a bounded number of rounds),
    /// then checks that everything queued was delivered, unless a packet was forged or the
    /// connection ended.
    pub fn settle(&mut self) {
        for _ in 0..4000 {
            self.transmit();
            let moved = self.deliver_all();
            self.events();
            self.check();
            if moved {
                continue;
            }
            if self.client.is_quiet() && !self.server.has_pending() {
                break;
            }
            // Nothing in flight: jump to the next timer.
            let next = [self.client.poll_timeout(), self.server.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { break };
            self.now = self.now.max(next);
            self.server.handle_timeout(self.now);
            self.client.handle_timeout(self.now);
        }
        let open = self.client.state() == ClientState::Connected && self.server_handle.is_some();
        if self.at_server.forged || self.at_client.forged || !open {
            return;
        }
        assert!(
            self.client.is_quiet() && !self.server.has_pending(),
            "a faithful network did not drain both ends: client {:?}, server {:?}",
            self.client.connection_stats(),
            self.server_handle
                .and_then(|h| self.server.connection_stats(h)),
        );
        for (rx, name) in [(&self.at_server, "server"), (&self.at_client, "client")] {
            for ch in 0..2 {
                let missing: Vec<_> = rx.sent[ch].difference(&rx.seen[ch]).collect();
                assert!(
                    missing.is_empty(),
                    "the {name} never received messages {missing:?} on channel {ch}"
                );
            }
        }
    }

    /// Delivers everything in flight, both ways, in order; false when nothing was.
    fn deliver_all(&mut self) -> bool {
        let addrs = crate::addrs();
        let moved = !self.to_server.is_empty() || !self.to_client.is_empty();
        while let Some(d) = self.to_server.pop_front() {
            self.server.handle_datagram(self.now, addrs[0], &d);
        }
        while let Some(d) = self.to_client.pop_front() {
            self.client.handle_datagram(self.now, addrs[3], &d);
        }
        moved
    }

    fn transmit(&mut self) {
        for _ in 0..64 {
            let Some(t) = self.client.poll_transmit(self.now, &mut self.out) else {
                break;
            };
            push(&mut self.to_server, self.out[..t.len].to_vec());
        }
        for _ in 0..64 {
            let Some(t) = self.server.poll_transmit(self.now, &mut self.out) else {
                break;
            };
            if let Ok(d) = Datagram::parse(&self.out[..t.len])
                && d.kind == PacketType::Welcome
            {
                self.conn_id = d.conn_id;
            }
            push(&mut self.to_client, self.out[..t.len].to_vec());
        }
    }

    fn events(&mut self) {
        while let Some(e) = self.server.poll_event() {
            self.server_event(e);
        }
        while let Some(e) = self.client.poll_event() {
            if let ClientEvent::Message { channel, data } = e {
                self.at_client.delivered(channel, &data);
                self.client.recycle(data);
            }
        }
    }

    fn server_event(&mut self, e: ServerEvent) {
        match e {
            ServerEvent::Connected { handle, .. } => self.server_handle = Some(handle),
            ServerEvent::Disconnected { .. } => self.server_handle = None,
            ServerEvent::Message { channel, data, .. } => {
                self.at_server.delivered(channel, &data);
                self.server.recycle(data);
            }
        }
    }

    fn check(&self) {
        let bound = crate::memory_bound_per_connection();
        let m = self.server.memory();
        assert!(m <= self.server_baseline + bound, "server memory {m}");
        if let Some(s) = self.client.connection_stats() {
            assert!(s.memory <= bound, "client memory {}", s.memory);
        }
        assert!(self.server.connection_count() <= 1);
    }
}

fn push(q: &mut VecDeque<Vec<u8>>, d: Vec<u8>) {
    if q.len() >= MAX_IN_FLIGHT {
        q.pop_front();
    }
    q.push_back(d);
}

/// Takes the next packet off `q` and decides its fate; returns what is delivered.
fn pump(q: &mut VecDeque<Vec<u8>>, action: u8, pos: u8, rx: &mut Receiver) -> Option<Vec<u8>> {
    let mut d = q.pop_front()?;
    match action % 6 {
        0 => Some(d),
        1 => None,
        2 => {
            push(q, d.clone());
            Some(d)
        }
        3 => {
            push(q, d);
            None
        }
        4 => {
            let i = usize::from(pos) % d.len();
            d[i] ^= 1 << (pos % 8);
            Some(d)
        }
        _ => {
            let i = usize::from(pos) % d.len();
            d[i] ^= 1 << (pos % 8);
            if d.len() >= xrudp_common::rudp::HEADER_LEN {
                packet::seal(&mut d);
            }
            rx.forged = true;
            Some(d)
        }
    }
}
