//! IPv4 headers (RFC 791), options included.

use core::net::Ipv4Addr;

use xrudp_common::wire::{
    IPV4_FRAG_OFFSET, IPV4_MF_OR_OFFSET_MASK, IPV4_MIN_LEN, IPV4_PROTO_OFFSET,
    IPV4_TOTAL_LEN_OFFSET, ipv4::field,
};

use crate::checksum::{self, Kernel};
use crate::error::{Layer, ParseError};

/// Offset of the TTL byte.
const TTL: usize = field::TTL;
/// Offset of the header checksum.
const CHECKSUM: usize = field::CHECKSUM.start;
/// Offset of the identification field.
const IDENT: usize = field::IDENT.start;
/// Don't-Fragment flag in the flags/fragment-offset word.
const DF: u16 = 0x4000;

/// A read/write view of an IPv4 packet; [`Packet::new_checked`] checks the version, the
/// header length and the total length against the buffer once, after which no accessor
/// panics.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version 4, `20 <= IHL*4 <= total length <= buffer length`. Bytes after the
    /// total length (Ethernet padding) are ignored by [`Packet::payload`].
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < IPV4_MIN_LEN {
            return Err(ParseError::Truncated(Layer::Ipv4));
        }
        let version = b[0] >> 4;
        if version != 4 {
            return Err(ParseError::IpVersion { version });
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if ihl < IPV4_MIN_LEN {
            return Err(ParseError::LengthTooSmall(Layer::Ipv4));
        }
        if ihl > b.len() {
            return Err(ParseError::Truncated(Layer::Ipv4));
        }
        let total = usize::from(be16(b, IPV4_TOTAL_LEN_OFFSET));
        if total < ihl {
            return Err(ParseError::LengthTooSmall(Layer::Ipv4));
        }
        if total > b.len() {
            return Err(ParseError::LengthExceedsFrame(Layer::Ipv4));
        }
        Ok(Self { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length in bytes (IHL × 4, 20..=60).
    #[must_use]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0f) * 4
    }

    /// The type-of-service byte: DSCP (high six bits) and ECN (low two).
    #[must_use]
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[1]
    }

    /// Total length of the datagram (header and payload).
    #[must_use]
    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), IPV4_TOTAL_LEN_OFFSET)
    }

    /// Identification.
    #[must_use]
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), IDENT)
    }

    /// Don't-Fragment flag.
    #[must_use]
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), IPV4_FRAG_OFFSET) & DF != 0
    }

    /// Whether this is a fragment (More-Fragments set or a non-zero offset).
    #[must_use]
    pub fn is_fragment(&self) -> bool {
        be16(self.buffer.as_ref(), IPV4_FRAG_OFFSET) & IPV4_MF_OR_OFFSET_MASK != 0
    }

    /// Time to live.
    #[must_use]
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[TTL]
    }

    /// Protocol of the payload.
    #[must_use]
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[IPV4_PROTO_OFFSET]
    }

    /// The header checksum field.
    #[must_use]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), CHECKSUM)
    }

    /// Source address.
    #[must_use]
    pub fn src_addr(&self) -> Ipv4Addr {
        addr_at(self.buffer.as_ref(), field::SRC_ADDR.start)
    }

    /// Destination address.
    #[must_use]
    pub fn dst_addr(&self) -> Ipv4Addr {
        addr_at(self.buffer.as_ref(), field::DST_ADDR.start)
    }

    /// The whole header, options included.
    #[must_use]
    pub fn header(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.header_len()]
    }

    /// Whether the header checksum is right (the header sums to 0xFFFF).
    #[must_use]
    pub fn verify_checksum(&self) -> bool {
        Kernel::scalar().sum(self.header()) == 0xffff
    }

    /// The payload: from the end of the header to the total length.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the type-of-service byte.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[1] = tos;
    }

    /// Sets the total length. The caller keeps it within the buffer: the accessors
    /// clamp nothing, so [`Packet::payload`] would panic on a longer value.
    fn set_total_len_raw(&mut self, len: u16) {
        self.buffer.as_mut()[IPV4_TOTAL_LEN_OFFSET..][..2].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[TTL] = ttl;
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[CHECKSUM..CHECKSUM + 2].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Swaps source and destination addresses. The header checksum does not change: the
    /// one's complement sum is commutative.
    pub fn swap_addresses(&mut self) {
        let (src, dst) = self.buffer.as_mut()[field::SRC_ADDR.start..field::DST_ADDR.end]
            .split_at_mut(field::SRC_ADDR.len());
        src.swap_with_slice(dst);
    }

    /// Recomputes the header checksum from scratch.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = Kernel::scalar().checksum(self.header());
        self.set_checksum(c);
    }

    /// Rewrites what a reply changes in a received header and updates the checksum
    /// incrementally (RFC 1624 eqn. 3), word by word:
    /// - addresses swapped (no checksum change);
    /// - ECN cleared to Not-ECT, DSCP kept (a CE mark on the request says nothing about
    ///   the reply's path);
    /// - total length set to `total_len`, which must not exceed the buffer;
    /// - TTL set to `ttl`;
    /// - options, if any, replaced by End-of-Option-List padding so that nothing the
    ///   sender asked for (source routes, timestamps) is echoed; the header keeps its
    ///   length so no payload byte moves;
    /// - identification and Don't-Fragment kept (fragments never get here).
    ///
    /// The incremental update keeps a right checksum right and a wrong one wrong.
    pub(crate) fn rewrite_for_reply(&mut self, total_len: u16, ttl: u8) {
        let b = self.buffer.as_ref();
        let mut hc = self.checksum();
        let w0 = be16(b, 0);
        let w_ttl = be16(b, TTL);
        let old_total = self.total_len();
        let hl = self.header_len();
        self.swap_addresses();
        let new_w0 = w0 & 0xfffc;
        let new_w_ttl = (u16::from(ttl) << 8) | (w_ttl & 0x00ff);
        hc = checksum::update_word(hc, w0, new_w0);
        hc = checksum::update_word(hc, old_total, total_len);
        hc = checksum::update_word(hc, w_ttl, new_w_ttl);
        let b = self.buffer.as_mut();
        b[0..2].copy_from_slice(&new_w0.to_be_bytes());
        b[TTL..TTL + 2].copy_from_slice(&new_w_ttl.to_be_bytes());
        if hl > IPV4_MIN_LEN {
            let options = &mut b[IPV4_MIN_LEN..hl];
            hc = checksum::update(hc, options, &[0u8; 40][..options.len()]);
            options.fill(0);
        }
        self.set_total_len_raw(total_len);
        self.set_checksum(hc);
    }

    /// The payload, writable (up to the total length).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, total) = (self.header_len(), usize::from(self.total_len()));
        &mut self.buffer.as_mut()[hl..total]
    }
}

/// The fields of an option-less IPv4 header, for writing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol of the payload.
    pub protocol: u8,
    /// Payload length (total length minus 20).
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// Type of service (DSCP and ECN).
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-Fragment flag.
    pub dont_frag: bool,
}

impl Repr {
    /// Writes a 20-byte header with its checksum at the start of `buf`; `None` if it does
    /// not fit or the total length would exceed 65535.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let total = self.payload_len.checked_add(IPV4_MIN_LEN as u16)?;
        let h = buf.get_mut(..IPV4_MIN_LEN)?;
        h[0] = 0x45;
        h[1] = self.tos;
        h[field::LENGTH].copy_from_slice(&total.to_be_bytes());
        h[field::IDENT].copy_from_slice(&self.ident.to_be_bytes());
        h[field::FLG_OFF].copy_from_slice(&(if self.dont_frag { DF } else { 0 }).to_be_bytes());
        h[8] = self.ttl;
        h[9] = self.protocol;
        h[field::CHECKSUM].fill(0);
        h[field::SRC_ADDR].copy_from_slice(&self.src.octets());
        h[field::DST_ADDR].copy_from_slice(&self.dst.octets());
        let c = Kernel::scalar().checksum(h);
        h[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        Some(IPV4_MIN_LEN)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn addr_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use xrudp_common::wire::IPPROTO_UDP;

    fn sample(payload_len: u16) -> [u8; 64] {
        let mut b = [0u8; 64];
        Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IPPROTO_UDP,
            payload_len,
            ttl: 17,
            tos: 0xb9,
            ident: 0x1234,
            dont_frag: true,
        }
        .emit(&mut b)
        .unwrap();
        b
    }

    #[test]
    fn emit_then_read() {
        let b = sample(30);
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 50);
        assert_eq!(p.payload().len(), 30);
        assert_eq!((p.ttl(), p.tos(), p.ident()), (17, 0xb9, 0x1234));
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.protocol(), IPPROTO_UDP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert!(p.verify_checksum());
    }

    #[test]
    fn each_length_rule() {
        let b = sample(30);
        assert_eq!(
            Packet::new_checked(&b[..19]).unwrap_err(),
            ParseError::Truncated(Layer::Ipv4)
        );
        assert_eq!(
            Packet::new_checked(&b[..49]).unwrap_err(),
            ParseError::LengthExceedsFrame(Layer::Ipv4)
        );
        let mut c = b;
        c[0] = 0x44;
        assert_eq!(
            Packet::new_checked(&c[..]).unwrap_err(),
            ParseError::LengthTooSmall(Layer::Ipv4)
        );
        c[0] = 0x65;
        assert_eq!(
            Packet::new_checked(&c[..]).unwrap_err(),
            ParseError::IpVersion { version: 6 }
        );
        let mut c = b;
        c[0] = 0x4f;
        assert_eq!(
            Packet::new_checked(&c[..40]).unwrap_err(),
            ParseError::Truncated(Layer::Ipv4)
        );
        let mut c = b;
        c[2..4].copy_from_slice(&19u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&c[..]).unwrap_err(),
            ParseError::LengthTooSmall(Layer::Ipv4)
        );
    }

    #[test]
    fn reply_rewrite_keeps_checksum_valid_with_options() {
        let mut b = [0u8; 64];
        let mut hdr = sample(20);
        // Grow the header to 28 bytes with a record-route-like option.
        b[..20].copy_from_slice(&hdr[..20]);
        b[0] = 0x47;
        b[2..4].copy_from_slice(&48u16.to_be_bytes());
        b[20..28].copy_from_slice(&[7, 7, 4, 1, 2, 3, 4, 0]);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.fill_checksum();
        p.rewrite_for_reply(60, 64);
        assert!(p.verify_checksum());
        assert_eq!((p.total_len(), p.ttl(), p.tos()), (60, 64, 0xb8));
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(&p.header()[20..], &[0; 8]);
        let mut q = Packet::new_checked(&mut hdr[..]).unwrap();
        q.rewrite_for_reply(20, 64);
        assert!(q.verify_checksum());
    }
}
