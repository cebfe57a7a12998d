//! The endpoint targets' inputs, a sequence of [`Op`]s, and the one driver that applies
//! them to an endpoint rig ([`Endpoint`]: the server target's and the client target's).
//!
//! Byte format: one tag byte chooses the op (`tag % Op::KINDS`), then its fields follow:
//! single bytes, little-endian `u16`s, and byte strings as a `u16` length (clipped to what
//! is left and to [`MAX_BYTES`]) followed by the bytes. Decoding never fails: a truncated
//! op ends the input. Encoding is the inverse, so seed inputs are written from real
//! exchanges.

use std::time::Duration;

use xrudp_common::rudp::{HEADER_LEN, PacketType};
use xrudp_proto::packet::{self, Writer};

/// Longest byte string an op carries (bigger than any datagram the endpoints accept).
pub const MAX_BYTES: usize = 2048;

/// One step of an endpoint target's input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Deliver `bytes` as they are, from address `from`.
    Raw {
        /// Index into the target's address table.
        from: u8,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// Deliver `bytes` from `from` with the RUDP CRC32C made right (if it has a header).
    Sealed {
        /// Index into the target's address table.
        from: u8,
        /// The datagram.
        bytes: Vec<u8>,
    },
    /// Deliver a `Data` (even `kind`) or `Disconnect` (odd `kind`) packet carrying `body`,
    /// with the connection id the endpoint gave `from`, sealed.
    Conn {
        /// Index into the target's address table.
        from: u8,
        /// Packet type selector.
        kind: u8,
        /// The body after the fixed header.
        body: Vec<u8>,
    },
    /// Let `ms` milliseconds pass, then call `handle_timeout`.
    Advance {
        /// Milliseconds.
        ms: u16,
    },
    /// Call `poll_transmit` up to `max + 1` times.
    Transmit {
        /// Polls, minus one.
        max: u8,
    },
    /// Call `poll_event` until it returns `None`.
    Events,
    /// Answer the endpoint's last handshake packet to `from` the way an honest peer at
    /// `from` would (server target: a `Response` echoing the cookie; client target: a
    /// `Challenge`, or a `Welcome` whose fields come from `extra`).
    Respond {
        /// Index into the target's address table.
        from: u8,
        /// The initial sequence number announced.
        seq: u16,
        /// Token (server) or cookie / welcome fields (client).
        extra: Vec<u8>,
    },
    /// Queue an application message of `len` bytes on `channel` to the peer at `from`.
    Send {
        /// Index into the target's address table.
        from: u8,
        /// Channel index (taken modulo the channel count by the target).
        channel: u8,
        /// Message length.
        len: u16,
    },
    /// Close the connection with `from` with an application `code`.
    Close {
        /// Index into the target's address table.
        from: u8,
        /// Close code.
        code: u16,
    },
}

impl Op {
    /// Number of op kinds (the tag byte is taken modulo this).
    pub const KINDS: u8 = 9;

    /// Appends the op's encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Raw { from, bytes } => {
                out.extend([0, *from]);
                put_bytes(out, bytes);
            }
            Self::Sealed { from, bytes } => {
                out.extend([1, *from]);
                put_bytes(out, bytes);
            }
            Self::Conn { from, kind, body } => {
                out.extend([2, *from, *kind]);
                put_bytes(out, body);
            }
            Self::Advance { ms } => {
                out.push(3);
                out.extend(ms.to_le_bytes());
            }
            Self::Transmit { max } => out.extend([4, *max]),
            Self::Events => out.push(5),
            Self::Respond { from, seq, extra } => {
                out.extend([6, *from]);
                out.extend(seq.to_le_bytes());
                put_bytes(out, extra);
            }
            Self::Send { from, channel, len } => {
                out.extend([7, *from, *channel]);
                out.extend(len.to_le_bytes());
            }
            Self::Close { from, code } => {
                out.extend([8, *from]);
                out.extend(code.to_le_bytes());
            }
        }
    }

    /// Encodes a whole sequence.
    #[must_use]
    pub fn encode_all(ops: &[Self]) -> Vec<u8> {
        let mut out = Vec::new();
        for op in ops {
            op.encode(&mut out);
        }
        out
    }
}

/// Decodes ops from fuzzer bytes, stopping at the first truncated one.
#[derive(Debug)]
pub struct Ops<'a> {
    rest: &'a [u8],
}

impl<'a> Ops<'a> {
    /// Ops of `data`.
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        let b = self.rest.get(..2)?;
        let v = u16::from_le_bytes([b[0], b[1]]);
        self.rest = &self.rest[2..];
        Some(v)
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = usize::from(self.u16()?).min(self.rest.len()).min(MAX_BYTES);
        let (b, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(b.to_vec())
    }
}

impl Iterator for Ops<'_> {
    type Item = Op;

    fn next(&mut self) -> Option<Op> {
        Some(match self.u8()? % Op::KINDS {
            0 => Op::Raw {
                from: self.u8()?,
                bytes: self.bytes()?,
            },
            1 => Op::Sealed {
                from: self.u8()?,
                bytes: self.bytes()?,
            },
            2 => Op::Conn {
                from: self.u8()?,
                kind: self.u8()?,
                body: self.bytes()?,
            },
            3 => Op::Advance { ms: self.u16()? },
            4 => Op::Transmit { max: self.u8()? },
            5 => Op::Events,
            6 => Op::Respond {
                from: self.u8()?,
                seq: self.u16()?,
                extra: self.bytes()?,
            },
            7 => Op::Send {
                from: self.u8()?,
                channel: self.u8()?,
                len: self.u16()?,
            },
            _ => Op::Close {
                from: self.u8()?,
                code: self.u16()?,
            },
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(MAX_BYTES);
    out.extend((n as u16).to_le_bytes());
    out.extend(&b[..n]);
}

/// An endpoint under test, as an endpoint target drives it: one call per op. The op
/// dispatch, the invariant check after each op, a whole input's run and the final drain
/// are written once, in the provided methods.
pub trait Endpoint: Sized {
    /// Delivers `bytes` as a datagram from address `from` (an index into [`crate::addrs`]).
    fn deliver(&mut self, from: u8, bytes: &[u8]);
    /// The connection id the endpoint gave the peer at `from` (0 if none yet).
    fn conn_id(&self, from: u8) -> u32;
    /// Lets `by` pass, then calls `handle_timeout`.
    fn advance(&mut self, by: Duration);
    /// Polls one datagram and checks it; false when there was none.
    fn transmit(&mut self) -> bool;
    /// Drains the endpoint's events, checking them.
    fn events(&mut self);
    /// [`Op::Respond`]: answers the endpoint's last handshake packet as the peer at `from`.
    fn respond(&mut self, from: u8, seq: u16, extra: &[u8]);
    /// [`Op::Send`]: queues a message of `len` bytes on `channel` (to the peer at `from`).
    fn send(&mut self, from: u8, channel: u8, len: u16);
    /// [`Op::Close`]: closes (the connection of the peer at `from`) with `code`.
    fn close(&mut self, from: u8, code: u16);
    /// Checks the invariants that hold after every op.
    fn check(&self);
    /// Checks the invariants that hold once everything has been drained.
    fn check_end(&self) {}

    /// Runs a whole input on `self`, then [`Endpoint::finish`]es.
    #[must_use]
    fn run(mut self, data: &[u8]) -> Self {
        for op in Ops::new(data) {
            self.apply(&op);
        }
        self.finish();
        self
    }

    /// Applies one op and checks the invariants.
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Raw { from, bytes } => self.deliver(*from, bytes),
            Op::Sealed { from, bytes } => {
                let mut b = bytes.clone();
                if b.len() >= HEADER_LEN {
                    packet::seal(&mut b);
                }
                self.deliver(*from, &b);
            }
            Op::Conn { from, kind, body } => {
                let kind = if kind % 2 == 0 {
                    PacketType::Data
                } else {
                    PacketType::Disconnect
                };
                let b = conn_packet(kind, self.conn_id(*from), body);
                self.deliver(*from, &b);
            }
            Op::Advance { ms } => self.advance(Duration::from_millis(u64::from(*ms))),
            Op::Transmit { max } => {
                for _ in 0..=*max {
                    if !self.transmit() {
                        break;
                    }
                }
            }
            Op::Events => self.events(),
            Op::Respond { from, seq, extra } => self.respond(*from, *seq, extra),
            Op::Send { from, channel, len } => self.send(*from, *channel, *len),
            Op::Close { from, code } => self.close(*from, *code),
        }
        self.check();
    }

    /// Drains what is left (datagrams, then events) and checks the end-of-input invariants.
    fn finish(&mut self) {
        for _ in 0..4096 {
            if !self.transmit() {
                break;
            }
        }
        self.events();
        self.check_end();
    }
}

/// A `Data` or `Disconnect` datagram with `conn_id` and `body`, sealed.
#[must_use]
pub fn conn_packet(kind: PacketType, conn_id: u32, body: &[u8]) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN + body.len()];
    let mut w = Writer::new(&mut b);
    // INVARIANT: the buffer is sized for the header and body.
    w.header(kind, conn_id).expect("fits");
    w.bytes(body).expect("fits");
    let n = w.finish();
    b.truncate(n);
    packet::seal(&mut b);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_round_trip() {
        let ops = vec![
            Op::Raw {
                from: 1,
                bytes: vec![1, 2, 3],
            },
            Op::Sealed {
                from: 0,
                bytes: vec![],
            },
            Op::Conn {
                from: 2,
                kind: 6,
                body: vec![9; 40],
            },
            Op::Advance { ms: 300 },
            Op::Transmit { max: 7 },
            Op::Events,
            Op::Respond {
                from: 3,
                seq: 65535,
                extra: vec![4; 5],
            },
            Op::Send {
                from: 0,
                channel: 1,
                len: 5000,
            },
            Op::Close { from: 1, code: 42 },
        ];
        let bytes = Op::encode_all(&ops);
        assert_eq!(Ops::new(&bytes).collect::<Vec<_>>(), ops);
        // A truncated tail is dropped, never misread.
        assert_eq!(Ops::new(&bytes[..bytes.len() - 1]).count(), ops.len() - 1);
    }
}
