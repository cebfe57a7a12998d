//! IPv6 fixed headers (RFC 8200). Extension headers are not walked: a datagram is UDP
//! only if the fixed header's next header says so (as in the XDP program).

use core::net::Ipv6Addr;

use xrudp_common::wire::{IPV6_LEN, IPV6_NEXT_HEADER_OFFSET, IPV6_PAYLOAD_LEN_OFFSET, ipv6::field};

use crate::error::{Layer, ParseError};

/// Offset of the hop limit.
const HOP_LIMIT: usize = 7;

/// A read/write view of an IPv6 packet; [`Packet::new_checked`] checks the version and the
/// payload length against the buffer once, after which no accessor panics.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version 6 and `40 + payload length <= buffer length`. Bytes beyond
    /// (Ethernet padding) are ignored by [`Packet::payload`]. Jumbograms (payload length
    /// 0 with a hop-by-hop option) are not supported and read as an empty payload.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < IPV6_LEN {
            return Err(ParseError::Truncated(Layer::Ipv6));
        }
        let version = b[0] >> 4;
        if version != 6 {
            return Err(ParseError::IpVersion { version });
        }
        let payload = usize::from(be16(b, IPV6_PAYLOAD_LEN_OFFSET));
        if IPV6_LEN + payload > b.len() {
            return Err(ParseError::LengthExceedsFrame(Layer::Ipv6));
        }
        Ok(Self { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Traffic class: DSCP (high six bits) and ECN (low two).
    #[must_use]
    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Flow label (20 bits).
    #[must_use]
    pub fn flow_label(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }

    /// Payload length.
    #[must_use]
    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), IPV6_PAYLOAD_LEN_OFFSET)
    }

    /// Next header (the payload's protocol when there are no extension headers).
    #[must_use]
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[IPV6_NEXT_HEADER_OFFSET]
    }

    /// Hop limit.
    #[must_use]
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[HOP_LIMIT]
    }

    /// Source address.
    #[must_use]
    pub fn src_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), 8)
    }

    /// Destination address.
    #[must_use]
    pub fn dst_addr(&self) -> Ipv6Addr {
        addr_at(self.buffer.as_ref(), 24)
    }

    /// The payload: the payload length's worth of bytes after the fixed header.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[IPV6_LEN..IPV6_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hops: u8) {
        self.buffer.as_mut()[HOP_LIMIT] = hops;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC_ADDR].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv6Addr) {
        self.buffer.as_mut()[field::DST_ADDR].copy_from_slice(&addr.octets());
    }

    /// Swaps source and destination addresses.
    pub fn swap_addresses(&mut self) {
        let (src, dst) = self.buffer.as_mut()[field::SRC_ADDR.start..field::DST_ADDR.end]
            .split_at_mut(field::SRC_ADDR.len());
        src.swap_with_slice(dst);
    }

    /// Rewrites what a reply changes: addresses swapped, ECN cleared to Not-ECT (DSCP
    /// kept), flow label kept (reflected, as Linux's `flowlabel_reflect` does), payload
    /// length set to `payload_len` (which must fit in the buffer), hop limit set.
    pub(crate) fn rewrite_for_reply(&mut self, payload_len: u16, hops: u8) {
        self.swap_addresses();
        let b = self.buffer.as_mut();
        b[1] &= 0xcf;
        b[IPV6_PAYLOAD_LEN_OFFSET..][..2].copy_from_slice(&payload_len.to_be_bytes());
        b[HOP_LIMIT] = hops;
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = IPV6_LEN + usize::from(self.payload_len());
        &mut self.buffer.as_mut()[IPV6_LEN..end]
    }
}

/// The fields of an IPv6 fixed header, for writing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class (DSCP and ECN).
    pub traffic_class: u8,
    /// Flow label (low 20 bits used).
    pub flow_label: u32,
}

impl Repr {
    /// Writes the 40-byte header at the start of `buf`; `None` if it does not fit.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let h = buf.get_mut(..IPV6_LEN)?;
        let first =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xf_ffff);
        h[field::VER_TC_FLOW].copy_from_slice(&first.to_be_bytes());
        h[field::LENGTH].copy_from_slice(&self.payload_len.to_be_bytes());
        h[field::NXT_HDR] = self.next_header;
        h[field::HOP_LIMIT] = self.hop_limit;
        h[field::SRC_ADDR].copy_from_slice(&self.src.octets());
        h[field::DST_ADDR].copy_from_slice(&self.dst.octets());
        Some(IPV6_LEN)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn addr_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_then_read_then_rewrite() {
        let mut b = [0u8; 80];
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let repr = Repr {
            src,
            dst,
            next_header: 17,
            payload_len: 30,
            hop_limit: 3,
            traffic_class: 0xbb,
            flow_label: 0x1_2345,
        };
        assert_eq!(repr.emit(&mut b), Some(40));
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!((p.traffic_class(), p.flow_label()), (0xbb, 0x1_2345));
        assert_eq!(
            (p.payload_len(), p.next_header(), p.hop_limit()),
            (30, 17, 3)
        );
        assert_eq!((p.src_addr(), p.dst_addr()), (src, dst));
        assert_eq!(p.payload().len(), 30);
        p.rewrite_for_reply(40, 64);
        assert_eq!((p.src_addr(), p.dst_addr()), (dst, src));
        assert_eq!((p.traffic_class(), p.flow_label()), (0xb8, 0x1_2345));
        assert_eq!((p.payload_len(), p.hop_limit()), (40, 64));
        assert_eq!(
            Packet::new_checked(&b[..69]).unwrap_err(),
            ParseError::LengthExceedsFrame(Layer::Ipv6)
        );
        assert_eq!(
            Packet::new_checked(&b[..39]).unwrap_err(),
            ParseError::Truncated(Layer::Ipv6)
        );
        b[0] = 0x45;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            ParseError::IpVersion { version: 4 }
        );
    }
}
