//! UDP headers (RFC 768) and their checksums over the IPv4 and IPv6 pseudo-headers.

use core::net::{Ipv4Addr, Ipv6Addr};

use xrudp_common::wire::{IPPROTO_UDP, UDP_LEN, udp::field};

use crate::checksum::{self, Kernel};
use crate::error::{Layer, ParseError};

/// Offset of the length field.
const LENGTH: usize = field::LENGTH.start;
/// Offset of the checksum field.
const CHECKSUM: usize = field::CHECKSUM.start;

/// A read/write view of a UDP datagram; [`Packet::new_checked`] checks the length field
/// against the buffer once, after which no accessor panics.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks `8 <= length field <= buffer length`. The buffer should be the IP payload;
    /// bytes after the length field's end are ignored.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < UDP_LEN {
            return Err(ParseError::Truncated(Layer::Udp));
        }
        let len = usize::from(be16(b, LENGTH));
        if len < UDP_LEN {
            return Err(ParseError::LengthTooSmall(Layer::Udp));
        }
        if len > b.len() {
            return Err(ParseError::LengthExceedsFrame(Layer::Udp));
        }
        Ok(Self { buffer })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[must_use]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    #[must_use]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// The length field: header and payload.
    #[must_use]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), LENGTH)
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) == UDP_LEN
    }

    /// The checksum field.
    #[must_use]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), CHECKSUM)
    }

    /// Header and payload, as far as the length field says.
    #[must_use]
    pub fn segment(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }

    /// The payload.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[UDP_LEN..usize::from(self.len())]
    }

    /// Verifies the checksum over the IPv4 pseudo-header. A zero field means the sender
    /// computed none (RFC 768) and is accepted.
    #[must_use]
    pub fn verify_ipv4(&self, kernel: Kernel, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0
            || checksum::add(
                checksum::pseudo_ipv4(src, dst, IPPROTO_UDP, self.len()),
                kernel.sum(self.segment()),
            ) == 0xffff
    }

    /// Verifies the checksum over the IPv6 pseudo-header. A zero field is invalid
    /// (RFC 8200 §8.1: the checksum is mandatory over IPv6).
    #[must_use]
    pub fn verify_ipv6(&self, kernel: Kernel, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        self.checksum() != 0
            && checksum::add(
                checksum::pseudo_ipv6(src, dst, IPPROTO_UDP, u32::from(self.len())),
                kernel.sum(self.segment()),
            ) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Swaps source and destination ports.
    pub fn swap_ports(&mut self) {
        let (src, dst) = self.buffer.as_mut()[field::SRC_PORT.start..field::DST_PORT.end]
            .split_at_mut(field::SRC_PORT.len());
        src.swap_with_slice(dst);
    }

    /// Sets the length field; `None` (nothing written) if `len` is below 8 or beyond the
    /// buffer, so the view's invariant holds.
    pub fn set_len(&mut self, len: u16) -> Option<()> {
        let n = usize::from(len);
        if !(UDP_LEN..=self.buffer.as_ref().len()).contains(&n) {
            return None;
        }
        self.buffer.as_mut()[LENGTH..LENGTH + 2].copy_from_slice(&len.to_be_bytes());
        Some(())
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.buffer.as_mut()[CHECKSUM..CHECKSUM + 2].copy_from_slice(&checksum.to_be_bytes());
    }

    /// Computes and writes the complete checksum over the IPv4 pseudo-header (a computed
    /// zero is sent as 0xFFFF, RFC 768).
    pub fn fill_ipv4(&mut self, kernel: Kernel, src: Ipv4Addr, dst: Ipv4Addr) {
        let pseudo = checksum::pseudo_ipv4(src, dst, IPPROTO_UDP, self.len());
        self.fill_with(kernel, pseudo);
    }

    /// Computes and writes the complete checksum over the IPv6 pseudo-header (a computed
    /// zero is sent as 0xFFFF, RFC 8200 §8.1).
    pub fn fill_ipv6(&mut self, kernel: Kernel, src: &Ipv6Addr, dst: &Ipv6Addr) {
        let pseudo = checksum::pseudo_ipv6(src, dst, IPPROTO_UDP, u32::from(self.len()));
        self.fill_with(kernel, pseudo);
    }

    fn fill_with(&mut self, kernel: Kernel, pseudo: u16) {
        self.set_checksum(0);
        let c = !checksum::add(pseudo, kernel.sum(self.segment()));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[UDP_LEN..end]
    }
}

/// Writes a UDP header (checksum zero, to be filled once the payload is in place) at the
/// start of `buf`; `None` if it does not fit or the length would exceed 65535.
pub fn emit_header(
    buf: &mut [u8],
    src_port: u16,
    dst_port: u16,
    payload_len: usize,
) -> Option<usize> {
    let len = u16::try_from(payload_len.checked_add(UDP_LEN)?).ok()?;
    let h = buf.get_mut(..UDP_LEN)?;
    h[field::SRC_PORT].copy_from_slice(&src_port.to_be_bytes());
    h[field::DST_PORT].copy_from_slice(&dst_port.to_be_bytes());
    h[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    h[field::CHECKSUM].fill(0);
    Some(UDP_LEN)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_then_verify_both_families() {
        let k = Kernel::detect();
        let mut b = [0u8; 64];
        emit_header(&mut b, 1111, 2222, 21).unwrap();
        b[8..29].copy_from_slice(b"some game state bytes");
        let (s4, d4) = (Ipv4Addr::new(10, 9, 8, 7), Ipv4Addr::new(1, 2, 3, 4));
        let (s6, d6): (Ipv6Addr, Ipv6Addr) =
            ("fd00::7".parse().unwrap(), "fd00::1:4".parse().unwrap());
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (1111, 2222, 29));
        assert_eq!(p.payload(), b"some game state bytes");
        p.fill_ipv4(k, s4, d4);
        assert!(p.verify_ipv4(k, s4, d4));
        assert!(!p.verify_ipv4(k, d4, Ipv4Addr::new(1, 2, 3, 5)));
        p.set_checksum(0);
        assert!(p.verify_ipv4(k, s4, d4), "IPv4: zero means no checksum");
        assert!(!p.verify_ipv6(k, &s6, &d6), "IPv6: zero is invalid");
        p.fill_ipv6(k, &s6, &d6);
        assert!(p.verify_ipv6(k, &s6, &d6));
        p.payload_mut()[0] ^= 1;
        assert!(!p.verify_ipv6(k, &s6, &d6));
        assert_eq!(p.set_len(7), None);
        assert_eq!(p.set_len(65), None);
        assert_eq!(p.set_len(64), Some(()));
    }

    #[test]
    fn length_rules() {
        let mut b = [0u8; 16];
        assert_eq!(
            Packet::new_checked(&b[..7]).unwrap_err(),
            ParseError::Truncated(Layer::Udp)
        );
        b[5] = 7;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            ParseError::LengthTooSmall(Layer::Udp)
        );
        b[5] = 17;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            ParseError::LengthExceedsFrame(Layer::Udp)
        );
        assert!(emit_header(&mut b, 1, 2, 65_528).is_none());
    }
}
