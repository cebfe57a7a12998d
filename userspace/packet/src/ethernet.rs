//! Ethernet II frames with at most one 802.1Q tag (IEEE 802.3, 802.1Q).

use core::fmt;

use xrudp_common::wire::{
    ETH_LEN, ETH_TYPE_OFFSET, ETHERTYPE_QINQ, ETHERTYPE_VLAN, VLAN_LEN, ethernet::field,
};

use crate::error::{Layer, ParseError};

/// A 48-bit MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 6]);

impl Address {
    /// The broadcast address ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Address = Address([0xff; 6]);

    /// The six octets.
    #[must_use]
    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    /// Whether the group bit is set (multicast or broadcast).
    #[must_use]
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 1 != 0
    }

    /// Whether this is a unicast address.
    #[must_use]
    pub const fn is_unicast(self) -> bool {
        !self.is_multicast()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

/// An 802.1Q tag control information field: priority, drop eligibility, VLAN id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Vlan(pub u16);

impl Vlan {
    /// A tag with priority 0 for VLAN `vid` (low 12 bits).
    #[must_use]
    pub const fn with_id(vid: u16) -> Self {
        Self(vid & 0x0fff)
    }

    /// The raw tag control information.
    #[must_use]
    pub const fn tci(self) -> u16 {
        self.0
    }

    /// Priority code point (0..=7).
    #[must_use]
    pub const fn pcp(self) -> u8 {
        (self.0 >> 13) as u8
    }

    /// Drop eligible indicator.
    #[must_use]
    pub const fn dei(self) -> bool {
        self.0 & 0x1000 != 0
    }

    /// VLAN identifier (0..=4095).
    #[must_use]
    pub const fn vid(self) -> u16 {
        self.0 & 0x0fff
    }
}

/// A read/write view of an Ethernet frame; lengths are checked once by
/// [`Frame::new_checked`], after which no accessor panics.
#[derive(Clone, Copy, Debug)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
    header_len: usize,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks that the buffer holds the whole header (and the tag, if one is present).
    /// A second tag (`QinQ` or stacked 802.1Q) is refused.
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        if b.len() < ETH_LEN {
            return Err(ParseError::Truncated(Layer::Ethernet));
        }
        let outer = u16::from_be_bytes([b[ETH_TYPE_OFFSET], b[ETH_TYPE_OFFSET + 1]]);
        let header_len = if outer == ETHERTYPE_VLAN {
            if b.len() < ETH_LEN + VLAN_LEN {
                return Err(ParseError::Truncated(Layer::Ethernet));
            }
            let inner = u16::from_be_bytes([b[ETH_LEN + 2], b[ETH_LEN + 3]]);
            if inner == ETHERTYPE_VLAN || inner == ETHERTYPE_QINQ {
                return Err(ParseError::StackedVlan);
            }
            ETH_LEN + VLAN_LEN
        } else if outer == ETHERTYPE_QINQ {
            return Err(ParseError::StackedVlan);
        } else {
            ETH_LEN
        };
        Ok(Self { buffer, header_len })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Header length: 14, or 18 with a VLAN tag.
    #[must_use]
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Destination MAC address.
    #[must_use]
    pub fn dst(&self) -> Address {
        Address(mac_at(self.buffer.as_ref(), 0))
    }

    /// Source MAC address.
    #[must_use]
    pub fn src(&self) -> Address {
        Address(mac_at(self.buffer.as_ref(), 6))
    }

    /// The 802.1Q tag, if the frame carries one.
    #[must_use]
    pub fn vlan(&self) -> Option<Vlan> {
        let b = self.buffer.as_ref();
        (self.header_len > ETH_LEN).then(|| Vlan(u16::from_be_bytes([b[ETH_LEN], b[ETH_LEN + 1]])))
    }

    /// `EtherType` of the payload (the inner one behind a VLAN tag).
    #[must_use]
    pub fn ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        let at = self.header_len - 2;
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Everything after the header.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    /// Sets the destination MAC address.
    pub fn set_dst(&mut self, addr: Address) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC address.
    pub fn set_src(&mut self, addr: Address) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Swaps source and destination MAC addresses (a reply goes back to the sender's
    /// L2 address).
    pub fn swap_addresses(&mut self) {
        let (dst, rest) = self.buffer.as_mut().split_at_mut(6);
        dst.swap_with_slice(&mut rest[..6]);
    }

    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len;
        &mut self.buffer.as_mut()[at..]
    }
}

/// The fields of an Ethernet header, for writing one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Repr {
    /// Destination MAC address.
    pub dst: Address,
    /// Source MAC address.
    pub src: Address,
    /// Optional 802.1Q tag.
    pub vlan: Option<Vlan>,
    /// `EtherType` of the payload.
    pub ethertype: u16,
}

impl Repr {
    /// Bytes the header takes: 14, or 18 with a VLAN tag.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            ETH_LEN + VLAN_LEN
        } else {
            ETH_LEN
        }
    }

    /// Writes the header at the start of `buf`; `None` if it does not fit.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let len = self.header_len();
        let h = buf.get_mut(..len)?;
        h[0..6].copy_from_slice(&self.dst.0);
        h[6..12].copy_from_slice(&self.src.0);
        if let Some(tag) = self.vlan {
            h[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
            h[14..16].copy_from_slice(&tag.0.to_be_bytes());
        }
        h[len - 2..len].copy_from_slice(&self.ethertype.to_be_bytes());
        Some(len)
    }
}

fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use xrudp_common::wire::ETHERTYPE_IPV4;

    #[test]
    fn emit_then_read_tagged_and_untagged() {
        let src = Address([2, 0, 0, 0, 0, 1]);
        let dst = Address([2, 0, 0, 0, 0, 2]);
        for vlan in [None, Some(Vlan(0xa02a))] {
            let repr = Repr {
                dst,
                src,
                vlan,
                ethertype: ETHERTYPE_IPV4,
            };
            let mut buf = [0u8; 20];
            assert_eq!(repr.emit(&mut buf), Some(repr.header_len()));
            let mut f = Frame::new_checked(&mut buf[..]).unwrap();
            assert_eq!((f.dst(), f.src(), f.vlan()), (dst, src, vlan));
            assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
            assert_eq!(f.payload().len(), 20 - repr.header_len());
            f.swap_addresses();
            assert_eq!((f.dst(), f.src()), (src, dst));
        }
        assert_eq!(Vlan(0xa02a).pcp(), 5);
        assert!(!Vlan(0xa02a).dei());
        assert_eq!(Vlan(0xa02a).vid(), 42);
        assert_eq!(src.to_string(), "02:00:00:00:00:01");
        assert!(Address::BROADCAST.is_multicast() && src.is_unicast());
    }

    #[test]
    fn short_and_stacked_frames_are_refused() {
        assert_eq!(
            Frame::new_checked(&[0u8; 13][..]).unwrap_err(),
            ParseError::Truncated(Layer::Ethernet)
        );
        let mut b = [0u8; 18];
        b[12..14].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        assert_eq!(
            Frame::new_checked(&b[..17]).unwrap_err(),
            ParseError::Truncated(Layer::Ethernet)
        );
        b[16..18].copy_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        assert_eq!(
            Frame::new_checked(&b[..]).unwrap_err(),
            ParseError::StackedVlan
        );
        b[12..14].copy_from_slice(&ETHERTYPE_QINQ.to_be_bytes());
        assert_eq!(
            Frame::new_checked(&b[..]).unwrap_err(),
            ParseError::StackedVlan
        );
    }
}
