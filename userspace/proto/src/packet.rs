//! The wire codec: handshake packets, data packet frames, the CRC32C (docs/PROTOCOL.md §2–§5).
//!
//! Decoding is a pure function of the bytes: every read is bounds-checked and a malformed
//! datagram is a [`DecodeError`] value, never a panic. Encoding writes into a caller's
//! buffer (a UMEM frame on the engine's fast path) and never allocates.

use std::net::SocketAddr;

use xrudp_common::rudp::{self, HEADER_LEN, PacketType};
use xrudp_packet::crc::rudp_crc;

/// Minimum datagram length of `Hello` and `Response`: the client pads them so that every
/// reply of the server to an unvalidated address is smaller than what it received
/// (anti-amplification, docs/PROTOCOL.md §4).
pub const MIN_HANDSHAKE_LEN: usize = 1200;

/// Length of a stateless cookie: 4-byte timestamp + 16-byte MAC.
pub const COOKIE_LEN: usize = 20;

/// Largest connect token accepted on the wire.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Largest number of channels a server may configure.
pub const MAX_CHANNELS: usize = 8;

/// Length of the data packet prefix after the fixed header: the 16-bit packet number.
pub const DATA_PREFIX_LEN: usize = 2;

/// Length of an ACK frame: type, largest (2), delay (2), bitfield (4).
pub const ACK_FRAME_LEN: usize = 9;

/// Header bytes of a MESSAGE frame at most: type, channel, seq (2), len (2).
pub const MESSAGE_OVERHEAD: usize = 6;

/// Header bytes of a FRAGMENT frame: type, channel, seq, index, count, len.
pub const FRAGMENT_OVERHEAD: usize = 10;

/// Frame type bytes inside a `Data` packet (docs/PROTOCOL.md §5).
pub mod frame {
    /// Acknowledgement: largest packet number, ack delay, 32-bit redundant bitfield.
    pub const ACK: u8 = 0x01;
    /// Makes the packet ack-eliciting without carrying data (keepalive, probe).
    pub const PING: u8 = 0x02;
    /// A whole message on a channel.
    pub const MESSAGE: u8 = 0x03;
    /// One fragment of a message larger than a packet (reliable channels only).
    pub const FRAGMENT: u8 = 0x04;
    /// Padding: the rest of the packet is zero and ignored.
    pub const PADDING: u8 = 0x00;
    /// Path validation (server to client): 8 unpredictable bytes the client echoes.
    pub const PATH_CHALLENGE: u8 = 0x05;
    /// Path validation (client to server): the 8 bytes of a `PATH_CHALLENGE`.
    pub const PATH_RESPONSE: u8 = 0x06;
    /// Drain notice (server to client): the server is going away; reconnect, to the
    /// address given if any (§8.5).
    pub const DRAIN: u8 = 0x07;
}

/// Bytes of a DRAIN frame at most: type, family, an IPv6 address and a port.
pub const DRAIN_FRAME_MAX: usize = 20;

/// Bytes of a PATH_CHALLENGE or PATH_RESPONSE frame: type and 8 bytes of data.
pub const PATH_FRAME_LEN: usize = 9;

/// Why a datagram could not be decoded. Each is counted by the server or client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Shorter than the fixed header.
    #[error("datagram shorter than the fixed header")]
    TooShort,
    /// Bad magic bytes.
    #[error("bad magic bytes: not an xrudp datagram")]
    BadMagic,
    /// A version this build does not speak (on a non-hello packet).
    #[error("protocol version this build does not speak")]
    BadVersion,
    /// An undefined packet type.
    #[error("undefined packet type")]
    BadType,
    /// The CRC32C does not match.
    #[error("CRC32C mismatch: the datagram was corrupted")]
    BadCrc,
    /// A hello or response shorter than [`MIN_HANDSHAKE_LEN`].
    #[error("handshake packet shorter than the minimum handshake length")]
    Unpadded,
    /// A body shorter than its packet type requires, or a field that overruns it.
    #[error("body shorter than its packet type requires, or a field overruns it")]
    Truncated,
    /// A field value outside its allowed range (unknown frame type, bad token length...).
    #[error("field value outside its allowed range")]
    BadField,
    /// A packet type that this endpoint never accepts (e.g. `Challenge` at a server).
    #[error("packet type this endpoint never accepts")]
    Unexpected,
}

impl DecodeError {
    /// All variants, in counter order.
    pub const ALL: [Self; 9] = [
        Self::TooShort,
        Self::BadMagic,
        Self::BadVersion,
        Self::BadType,
        Self::BadCrc,
        Self::Unpadded,
        Self::Truncated,
        Self::BadField,
        Self::Unexpected,
    ];

    /// Index into a counter array of length [`DecodeError::ALL`]`.len()`.
    #[must_use]
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<rudp::HeaderError> for DecodeError {
    fn from(e: rudp::HeaderError) -> Self {
        match e {
            rudp::HeaderError::TooShort => Self::TooShort,
            rudp::HeaderError::BadMagic => Self::BadMagic,
            rudp::HeaderError::BadVersion => Self::BadVersion,
            rudp::HeaderError::BadType => Self::BadType,
        }
    }
}

/// Fills in the CRC field of a finished datagram (CRC32C with the field taken as zero,
/// [`rudp_crc`]).
pub fn seal(datagram: &mut [u8]) {
    let crc = rudp_crc(datagram);
    datagram[rudp::field::CRC].copy_from_slice(&crc.to_be_bytes());
}

/// A datagram whose fixed header and CRC are checked.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    /// The packet type.
    pub kind: PacketType,
    /// The version byte (differs from [`rudp::VERSION`] only on a foreign `Hello`).
    pub version: u8,
    /// The connection id field.
    pub conn_id: u32,
    /// Everything after the fixed header.
    pub body: &'a [u8],
    /// The whole datagram's length.
    pub len: usize,
}

impl<'a> Datagram<'a> {
    /// Checks header and CRC. A foreign-version `Hello` passes with its version reported.
    pub fn parse(data: &'a [u8]) -> Result<Self, DecodeError> {
        let header = rudp::Header::new_checked(data)?;
        if header.crc() != rudp_crc(data) {
            return Err(DecodeError::BadCrc);
        }
        let kind = PacketType::from_u8(header.kind()).ok_or(DecodeError::BadType)?;
        Ok(Self {
            kind,
            version: header.version(),
            conn_id: header.conn_id(),
            body: &data[HEADER_LEN..],
            len: data.len(),
        })
    }
}

/// A bounds-checked reader over a body.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    #[must_use]
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }
    /// Bytes left.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    /// Takes `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    /// Takes one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.bytes(1)?[0])
    }
    /// Takes a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    /// Takes a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// Takes a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
}

/// A bounds-checked writer into a caller's buffer; writes past the end fail as a whole.
#[derive(Debug)]
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// Writes from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes written so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pos
    }
    /// Whether nothing was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
    /// Room left.
    #[must_use]
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Appends bytes; `None` if they do not fit (nothing is written then).
    pub fn bytes(&mut self, b: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(b.len())?;
        self.buf.get_mut(self.pos..end)?.copy_from_slice(b);
        self.pos = end;
        Some(())
    }
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> Option<()> {
        self.bytes(&[v])
    }
    /// Appends a big-endian `u16`.
    pub fn u16(&mut self, v: u16) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }
    /// Appends a big-endian `u32`.
    pub fn u32(&mut self, v: u32) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }
    /// Appends a big-endian `u64`.
    pub fn u64(&mut self, v: u64) -> Option<()> {
        self.bytes(&v.to_be_bytes())
    }
    /// Appends `n` zero bytes.
    pub fn zeros(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n)?;
        self.buf.get_mut(self.pos..end)?.fill(0);
        self.pos = end;
        Some(())
    }
    /// Starts a packet: writes the fixed header.
    pub fn header(&mut self, kind: PacketType, conn_id: u32) -> Option<()> {
        rudp::write_header(self.buf.get_mut(self.pos..)?, kind, conn_id)?;
        self.pos += HEADER_LEN;
        Some(())
    }
    /// Seals the packet written so far (CRC) and returns its length.
    #[must_use]
    pub fn finish(self) -> usize {
        seal(&mut self.buf[..self.pos]);
        self.pos
    }
    /// Overwrites the version byte of the packet started at 0 (tests of negotiation).
    pub fn set_version(&mut self, version: u8) {
        if self.buf.len() > rudp::field::VERSION {
            self.buf[rudp::field::VERSION] = version;
        }
    }
}

/// Expands a 16-bit wire sequence number to the 64-bit value closest to `expected`
/// (RFC 9000 §A.3's method, for a 16-bit field).
#[must_use]
pub fn expand16(expected: u64, wire: u16) -> u64 {
    const WIN: u64 = 1 << 16;
    const HALF: u64 = WIN / 2;
    let candidate = (expected & !(WIN - 1)) | u64::from(wire);
    if candidate + HALF <= expected && candidate < u64::MAX - WIN {
        candidate + WIN
    } else if candidate > expected + HALF && candidate >= WIN {
        candidate - WIN
    } else {
        candidate
    }
}

/// A decoded ACK frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Low 16 bits of the largest packet number received.
    pub largest: u16,
    /// How long the receiver held the ack, in units of [`ACK_DELAY_UNIT_US`] µs.
    pub delay: u16,
    /// Bit `i` set: packet `largest - 1 - i` was received too.
    pub bits: u32,
}

/// Unit of the ACK frame's delay field: 8 µs, so the field spans about 524 ms.
pub const ACK_DELAY_UNIT_US: u64 = 8;

/// One frame of a data packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// An acknowledgement.
    Ack(Ack),
    /// An ack-eliciting no-op.
    Ping,
    /// Path validation: the sender asks the receiver to echo these bytes (§5.4).
    PathChallenge([u8; 8]),
    /// Path validation: the echo of a `PathChallenge`'s bytes.
    PathResponse([u8; 8]),
    /// The server is draining; `Some` is where to reconnect (§8.5).
    Drain(Option<SocketAddr>),
    /// A whole message; `seq` is present on every channel kind but `Unreliable`.
    Message {
        /// Channel index.
        channel: u8,
        /// Channel sequence number (0 on unreliable channels).
        seq: u16,
        /// The message.
        data: &'a [u8],
    },
    /// One fragment of a large reliable message.
    Fragment {
        /// Channel index.
        channel: u8,
        /// Channel sequence number of this fragment (fragments take consecutive numbers).
        seq: u16,
        /// Index of this fragment in the message.
        index: u16,
        /// Number of fragments of the message (2 or more).
        count: u16,
        /// The fragment's bytes.
        data: &'a [u8],
    },
}

/// Iterates the frames of a data packet body (after the packet number). `has_seq(channel)`
/// says whether a channel's MESSAGE frames carry a sequence number; `None` for an unknown
/// channel, which is a decode error.
#[derive(Debug)]
pub struct Frames<'a, F> {
    reader: Reader<'a>,
    has_seq: F,
}

impl<'a, F: Fn(u8) -> Option<bool>> Frames<'a, F> {
    /// Frames of `body`.
    pub fn new(body: &'a [u8], has_seq: F) -> Self {
        Self {
            reader: Reader::new(body),
            has_seq,
        }
    }

    fn next_frame(&mut self) -> Result<Option<Frame<'a>>, DecodeError> {
        let r = &mut self.reader;
        if r.remaining() == 0 {
            return Ok(None);
        }
        let kind = r.u8()?;
        Ok(Some(match kind {
            frame::PADDING => {
                let rest = r.remaining();
                r.bytes(rest)?;
                return Ok(None);
            }
            frame::ACK => Frame::Ack(Ack {
                largest: r.u16()?,
                delay: r.u16()?,
                bits: r.u32()?,
            }),
            frame::PING => Frame::Ping,
            frame::PATH_CHALLENGE | frame::PATH_RESPONSE => {
                let mut data = [0; 8];
                data.copy_from_slice(r.bytes(8)?);
                if kind == frame::PATH_CHALLENGE {
                    Frame::PathChallenge(data)
                } else {
                    Frame::PathResponse(data)
                }
            }
            frame::DRAIN => Frame::Drain(match r.u8()? {
                0 => None,
                4 => {
                    let ip: [u8; 4] = r.bytes(4)?.try_into().map_err(|_| DecodeError::BadField)?;
                    Some(SocketAddr::from((ip, r.u16()?)))
                }
                6 => {
                    let ip: [u8; 16] =
                        r.bytes(16)?.try_into().map_err(|_| DecodeError::BadField)?;
                    Some(SocketAddr::from((ip, r.u16()?)))
                }
                _ => return Err(DecodeError::BadField),
            }),
            frame::MESSAGE => {
                let channel = r.u8()?;
                let seq = match (self.has_seq)(channel) {
                    None => return Err(DecodeError::BadField),
                    Some(true) => r.u16()?,
                    Some(false) => 0,
                };
                let len = usize::from(r.u16()?);
                Frame::Message {
                    channel,
                    seq,
                    data: r.bytes(len)?,
                }
            }
            frame::FRAGMENT => {
                let channel = r.u8()?;
                if (self.has_seq)(channel).is_none() {
                    return Err(DecodeError::BadField);
                }
                let seq = r.u16()?;
                let index = r.u16()?;
                let count = r.u16()?;
                if count < 2 || index >= count {
                    return Err(DecodeError::BadField);
                }
                let len = usize::from(r.u16()?);
                Frame::Fragment {
                    channel,
                    seq,
                    index,
                    count,
                    data: r.bytes(len)?,
                }
            }
            _ => return Err(DecodeError::BadField),
        }))
    }
}

impl<'a, F: Fn(u8) -> Option<bool>> Iterator for Frames<'a, F> {
    type Item = Result<Frame<'a>, DecodeError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_frame() {
            Ok(Some(f)) => Some(Ok(f)),
            Ok(None) => None,
            Err(e) => {
                // Stop after the first error.
                self.reader = Reader::new(&[]);
                Some(Err(e))
            }
        }
    }
}

/// Writes an ACK frame.
pub fn write_ack(w: &mut Writer<'_>, ack: Ack) -> Option<()> {
    if w.remaining() < ACK_FRAME_LEN {
        return None;
    }
    w.u8(frame::ACK)?;
    w.u16(ack.largest)?;
    w.u16(ack.delay)?;
    w.u32(ack.bits)
}

/// Writes a PATH_CHALLENGE (`response` false) or PATH_RESPONSE frame.
pub fn write_path(w: &mut Writer<'_>, response: bool, data: [u8; 8]) -> Option<()> {
    if w.remaining() < PATH_FRAME_LEN {
        return None;
    }
    w.u8(if response {
        frame::PATH_RESPONSE
    } else {
        frame::PATH_CHALLENGE
    })?;
    w.bytes(&data)
}

/// Writes a DRAIN frame: family 0 (no address), 4 or 6, then the address and port.
pub fn write_drain(w: &mut Writer<'_>, redirect: Option<SocketAddr>) -> Option<()> {
    let need = match redirect {
        None => 2,
        Some(SocketAddr::V4(_)) => 8,
        Some(SocketAddr::V6(_)) => DRAIN_FRAME_MAX,
    };
    if w.remaining() < need {
        return None;
    }
    w.u8(frame::DRAIN)?;
    match redirect {
        None => w.u8(0),
        Some(SocketAddr::V4(a)) => {
            w.u8(4)?;
            w.bytes(&a.ip().octets())?;
            w.u16(a.port())
        }
        Some(SocketAddr::V6(a)) => {
            w.u8(6)?;
            w.bytes(&a.ip().octets())?;
            w.u16(a.port())
        }
    }
}

/// Writes a MESSAGE frame (`seq` only if `with_seq`).
pub fn write_message(w: &mut Writer<'_>, channel: u8, seq: Option<u16>, data: &[u8]) -> Option<()> {
    let need = 4 + usize::from(seq.is_some()) * 2 + data.len();
    if w.remaining() < need {
        return None;
    }
    w.u8(frame::MESSAGE)?;
    w.u8(channel)?;
    if let Some(s) = seq {
        w.u16(s)?;
    }
    w.u16(u16::try_from(data.len()).ok()?)?;
    w.bytes(data)
}

/// Writes a FRAGMENT frame.
pub fn write_fragment(
    w: &mut Writer<'_>,
    channel: u8,
    seq: u16,
    index: u16,
    count: u16,
    data: &[u8],
) -> Option<()> {
    if w.remaining() < FRAGMENT_OVERHEAD + data.len() {
        return None;
    }
    w.u8(frame::FRAGMENT)?;
    w.u8(channel)?;
    w.u16(seq)?;
    w.u16(index)?;
    w.u16(count)?;
    w.u16(u16::try_from(data.len()).ok()?)?;
    w.bytes(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn expand16_picks_nearest() {
        assert_eq!(expand16(0xfff0, 0x0005), 0x1_0005);
        assert_eq!(expand16(0x1_0005, 0xfff0), 0xfff0);
        assert_eq!(expand16(5, 0xfff0), 0xfff0);
        assert_eq!(expand16(0x12_3456, 0x3456), 0x12_3456);
    }

    proptest! {
        #[test]
        fn expand16_round_trips_within_half_window(base in 0u64..(1 << 40), delta in -32767i64..32767) {
            let v = base.checked_add_signed(delta);
            prop_assume!(v.is_some());
            let v = v.unwrap();
            prop_assert_eq!(expand16(base, v as u16), v);
        }

        #[test]
        fn frames_never_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            for f in Frames::new(&body, |c| (c < 4).then_some(c != 2)) {
                if f.is_err() { break; }
            }
        }

        #[test]
        fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Datagram::parse(&data);
        }
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = [0u8; 200];
        let mut w = Writer::new(&mut buf);
        write_ack(
            &mut w,
            Ack {
                largest: 7,
                delay: 3,
                bits: 0xdead_beef,
            },
        )
        .unwrap();
        w.u8(frame::PING).unwrap();
        write_message(&mut w, 1, Some(9), b"hi").unwrap();
        write_message(&mut w, 2, None, b"yo").unwrap();
        write_fragment(&mut w, 0, 4, 1, 3, b"abc").unwrap();
        write_path(&mut w, false, *b"chalenge").unwrap();
        write_path(&mut w, true, *b"response").unwrap();
        write_drain(&mut w, None).unwrap();
        write_drain(&mut w, Some("198.18.0.1:7778".parse().unwrap())).unwrap();
        write_drain(&mut w, Some("[2001:db8::1]:7779".parse().unwrap())).unwrap();
        let n = w.len();
        let frames: Vec<_> = Frames::new(&buf[..n], |c| (c < 3).then_some(c != 2))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            frames,
            vec![
                Frame::Ack(Ack {
                    largest: 7,
                    delay: 3,
                    bits: 0xdead_beef
                }),
                Frame::Ping,
                Frame::Message {
                    channel: 1,
                    seq: 9,
                    data: b"hi"
                },
                Frame::Message {
                    channel: 2,
                    seq: 0,
                    data: b"yo"
                },
                Frame::Fragment {
                    channel: 0,
                    seq: 4,
                    index: 1,
                    count: 3,
                    data: b"abc"
                },
                Frame::PathChallenge(*b"chalenge"),
                Frame::PathResponse(*b"response"),
                Frame::Drain(None),
                Frame::Drain(Some("198.18.0.1:7778".parse().unwrap())),
                Frame::Drain(Some("[2001:db8::1]:7779".parse().unwrap())),
            ]
        );
        // A path frame cut short is a decode error, not a shorter frame.
        assert!(Frames::new(&[frame::PATH_CHALLENGE, 1, 2, 3], |_| Some(true)).any(|f| f.is_err()));
    }

    #[test]
    fn crc_detects_any_single_bit_flip() {
        let mut buf = [0u8; 40];
        let mut w = Writer::new(&mut buf);
        w.header(PacketType::Data, 77).unwrap();
        w.bytes(b"payload payload payload").unwrap();
        let n = w.finish();
        assert!(Datagram::parse(&buf[..n]).is_ok());
        for bit in 0..n * 8 {
            let mut b = buf;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Datagram::parse(&b[..n]).is_err(), "bit {bit}");
        }
    }
}
