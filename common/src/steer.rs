//! The steering classifier: the decision the XDP program makes for every frame.
//!
//! Written once, over the [`Bytes`] trait, so that the XDP program (reading packet memory
//! through bounds-checked pointers) and the host (tests and fuzz targets reading a slice)
//! run the very same logic.
//!
//! Policy:
//! - anything that is not an unfragmented UDP datagram to a steered port — ARP, ICMP, TCP,
//!   other ports, IP fragments, IPv6 extension headers, QinQ, frames too short to read
//!   the destination port — is [`Verdict::Pass`]ed to the kernel untouched (the kernel
//!   validates and counts its own malformed traffic);
//! - a datagram to a steered port whose IP or UDP lengths lie about the frame is dropped;
//! - with the RUDP pre-filter on, a datagram that cannot be RUDP (shorter than the header,
//!   wrong magic, version or type) is dropped: junk floods die in the driver;
//! - everything else is [`Verdict::Steer`]: redirect to the queue's AF_XDP socket.

use crate::admit::{Addr, Peer};
use crate::maps::Counter;
use crate::rudp;
use crate::wire::{
    ETH_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, IPPROTO_UDP, IPV4_MF_OR_OFFSET_MASK,
    IPV4_MIN_LEN, IPV6_LEN, UDP_LEN, VLAN_LEN, ethernet, ipv4, ipv6, udp, vlan,
};

/// Read access to a frame, every read bounds-checked.
pub trait Bytes {
    /// Frame length in bytes.
    fn len(&self) -> usize;
    /// Whether the frame is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The byte at `off`, or `None` past the end.
    fn u8_at(&self, off: usize) -> Option<u8>;
    /// The big-endian `u16` at `off`, or `None` if it does not fit.
    fn be16_at(&self, off: usize) -> Option<u16>;
    /// The big-endian `u32` at `off`, or `None` if it does not fit.
    #[expect(
        clippy::inline_always,
        reason = "the XDP program needs this inlined into one function: the verifier tracks packet bounds within a function, not across calls"
    )]
    #[inline(always)]
    fn be32_at(&self, off: usize) -> Option<u32> {
        let hi = self.be16_at(off)?;
        let lo = self.be16_at(off + 2)?;
        Some(u32::from(hi) << 16 | u32::from(lo))
    }
}

impl Bytes for [u8] {
    #[inline]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    #[inline]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.get(off).copied()
    }
    #[inline]
    fn be16_at(&self, off: usize) -> Option<u16> {
        let b = self.get(off..off.checked_add(2)?)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
}

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A datagram for a steered port: redirect it to the queue's AF_XDP socket.
    Steer,
    /// Not ours: hand it to the kernel untouched.
    Pass,
    /// Ours but malformed or not RUDP: drop it, counting the reason.
    Drop(Counter),
}

/// Where the UDP header and payload sit in a steered frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the IP header (14, or 18 behind a VLAN tag).
    pub l3: usize,
    /// Offset of the UDP header.
    pub l4: usize,
    /// Value of the UDP length field (header + payload), checked against the frame.
    pub udp_len: usize,
    /// Whether the IP version is 6.
    pub ipv6: bool,
}

/// Classifies one frame. `steered(port)` says whether a UDP destination port is served;
/// `rudp_filter` turns on the RUDP pre-filter.
#[expect(
    clippy::inline_always,
    reason = "the XDP program needs this inlined into one function: the verifier tracks packet bounds within a function, not across calls"
)]
#[inline(always)]
pub fn classify<B: Bytes + ?Sized>(
    frame: &B,
    steered: impl Fn(u16) -> bool,
    rudp_filter: bool,
) -> Verdict {
    classify_admit(frame, steered, rudp_filter, None::<fn(&Admit) -> Verdict>)
}

/// [`classify`], then, for a datagram that passed the RUDP pre-filter, admission
/// control: `admit` (the XDP program's map lookups and buckets) decides between
/// [`Verdict::Steer`] and a counted drop. `None`, or the pre-filter off, skips it.
#[expect(
    clippy::inline_always,
    reason = "the XDP program needs this inlined into one function: the verifier tracks packet bounds within a function, not across calls"
)]
#[inline(always)]
pub fn classify_admit<B: Bytes + ?Sized>(
    frame: &B,
    steered: impl Fn(u16) -> bool,
    rudp_filter: bool,
    admit: Option<impl FnOnce(&Admit) -> Verdict>,
) -> Verdict {
    match locate(frame, steered) {
        Located::Pass => Verdict::Pass,
        Located::Drop(c) => Verdict::Drop(c),
        Located::Udp(layout) => {
            if !rudp_filter {
                return Verdict::Steer;
            }
            if let Some(c) = rudp_reject(frame, &layout) {
                return Verdict::Drop(c);
            }
            match admit {
                None => Verdict::Steer,
                Some(decide) => match admit_fields(frame, &layout) {
                    Some(a) => decide(&a),
                    None => Verdict::Drop(Counter::DropShort),
                },
            }
        }
    }
}

/// Result of walking the headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Located {
    /// Not a steered datagram.
    Pass,
    /// A steered datagram whose lengths are inconsistent.
    Drop(Counter),
    /// A well-formed datagram to a steered port.
    Udp(Layout),
}

/// Walks Ethernet, one optional 802.1Q tag, IPv4 (any IHL) or IPv6 (fixed header) and UDP.
#[expect(
    clippy::inline_always,
    reason = "the XDP program needs this inlined into one function: the verifier tracks packet bounds within a function, not across calls"
)]
#[inline(always)]
pub fn locate<B: Bytes + ?Sized>(frame: &B, steered: impl Fn(u16) -> bool) -> Located {
    let Some(mut ethertype) = frame.be16_at(ethernet::field::ETHERTYPE.start) else {
        return Located::Pass;
    };
    let mut l3 = ETH_LEN;
    if ethertype == ETHERTYPE_VLAN {
        let Some(inner) = frame.be16_at(ETH_LEN + vlan::field::ETHERTYPE.start) else {
            return Located::Pass;
        };
        ethertype = inner;
        l3 = ETH_LEN + VLAN_LEN;
    }
    // (l4 offset, bytes the IP header says follow the start of l4)
    let (l4, ip_payload_len, ipv6) = if ethertype == ETHERTYPE_IPV4 {
        let Some(vihl) = frame.u8_at(l3 + ipv4::field::VER_IHL) else {
            return Located::Pass;
        };
        let ihl = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || ihl < IPV4_MIN_LEN {
            return Located::Pass;
        }
        // One read at a time, each checked: the BPF verifier follows sequential bounds
        // checks, not reads the optimiser merged across branches.
        let Some(proto) = frame.u8_at(l3 + ipv4::field::PROTOCOL) else {
            return Located::Pass;
        };
        let Some(frag) = frame.be16_at(l3 + ipv4::field::FLG_OFF.start) else {
            return Located::Pass;
        };
        let Some(total) = frame.be16_at(l3 + ipv4::field::LENGTH.start) else {
            return Located::Pass;
        };
        if proto != IPPROTO_UDP || frag & IPV4_MF_OR_OFFSET_MASK != 0 {
            return Located::Pass;
        }
        (l3 + ihl, usize::from(total).wrapping_sub(ihl), false)
    } else if ethertype == ETHERTYPE_IPV6 {
        let Some(next) = frame.u8_at(l3 + ipv6::field::NXT_HDR) else {
            return Located::Pass;
        };
        let Some(payload) = frame.be16_at(l3 + ipv6::field::LENGTH.start) else {
            return Located::Pass;
        };
        if next != IPPROTO_UDP {
            return Located::Pass;
        }
        (l3 + IPV6_LEN, usize::from(payload), true)
    } else {
        return Located::Pass;
    };
    let Some(dport) = frame.be16_at(l4 + udp::field::DST_PORT.start) else {
        return Located::Pass;
    };
    if !steered(dport) {
        return Located::Pass;
    }
    // From here on the datagram is ours: inconsistencies are dropped and counted.
    let Some(udp_len) = frame.be16_at(l4 + udp::field::LENGTH.start) else {
        return Located::Drop(Counter::DropTruncated);
    };
    let udp_len = usize::from(udp_len);
    let avail = frame.len().saturating_sub(l4);
    // The IP length must cover a UDP header and fit in the frame (Ethernet may pad).
    // `ip_payload_len` wrapped to a huge value when IPv4 total < IHL: caught here too.
    if ip_payload_len < UDP_LEN || ip_payload_len > avail {
        return Located::Drop(Counter::DropTruncated);
    }
    if udp_len < UDP_LEN || udp_len > ip_payload_len {
        return Located::Drop(Counter::DropBadUdpLength);
    }
    Located::Udp(Layout {
        l3,
        l4,
        udp_len,
        ipv6,
    })
}

/// What admission control reads from a steered datagram that passed the pre-filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admit {
    /// The RUDP packet type byte.
    pub kind: u8,
    /// The RUDP connection id.
    pub conn_id: u32,
    /// The IP source address.
    pub source: Addr,
    /// The UDP source port.
    pub sport: u16,
}

impl Admit {
    /// Whether the packet is a handshake from the client (`Hello` or `Response`), which
    /// carries no connection id yet.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "called from the XDP program, where every helper is inlined"
    )]
    #[inline(always)]
    pub const fn handshake(&self) -> bool {
        self.kind == rudp::PacketType::Hello as u8 || self.kind == rudp::PacketType::Response as u8
    }

    /// Whether `peer` is where this packet comes from.
    #[must_use]
    #[expect(
        clippy::inline_always,
        reason = "called from the XDP program, where every helper is inlined"
    )]
    #[inline(always)]
    pub fn from_peer(&self, peer: &Peer) -> bool {
        // Word by word: a derived array comparison may become a `bcmp` call, which a BPF
        // program cannot make.
        let (p, s) = (&peer.addr.words, &self.source.words);
        peer.port == self.sport && p[0] == s[0] && p[1] == s[1] && p[2] == s[2] && p[3] == s[3]
    }
}

/// Reads the fields admission control decides on; `None` if the frame is shorter than
/// the pre-filter already checked (not reached for a datagram that passed it).
#[expect(
    clippy::inline_always,
    reason = "the XDP program needs this inlined into one function: the verifier tracks packet bounds within a function, not across calls"
)]
#[inline(always)]
pub fn admit_fields<B: Bytes + ?Sized>(frame: &B, layout: &Layout) -> Option<Admit> {
    let p = layout.l4 + udp::field::PAYLOAD;
    let kind = frame.u8_at(p + rudp::field::TYPE)?;
    let conn_id = frame.be32_at(p + rudp::field::CONN_ID.start)?;
    let sport = frame.be16_at(layout.l4 + udp::field::SRC_PORT.start)?;
    let source = if layout.ipv6 {
        let a = layout.l3 + ipv6::field::SRC_ADDR.start;
        Addr::v6([
            frame.be32_at(a)?,
            frame.be32_at(a + 4)?,
            frame.be32_at(a + 8)?,
            frame.be32_at(a + 12)?,
        ])
    } else {
        Addr::v4(frame.be32_at(layout.l3 + ipv4::field::SRC_ADDR.start)?)
    };
    Some(Admit {
        kind,
        conn_id,
        source,
        sport,
    })
}

/// With the pre-filter on: why a steered datagram cannot be RUDP, if it cannot.
#[expect(
    clippy::inline_always,
    reason = "the XDP program needs this inlined into one function: the verifier tracks packet bounds within a function, not across calls"
)]
#[inline(always)]
pub fn rudp_reject<B: Bytes + ?Sized>(frame: &B, layout: &Layout) -> Option<Counter> {
    if layout.udp_len < UDP_LEN + rudp::HEADER_LEN {
        return Some(Counter::DropShort);
    }
    let p = layout.l4 + udp::field::PAYLOAD;
    let Some(magic) = frame.be16_at(p + rudp::field::MAGIC.start) else {
        return Some(Counter::DropShort);
    };
    // Version and type are adjacent bytes: one 16-bit read.
    let Some(version_kind) = frame.be16_at(p + rudp::field::VERSION) else {
        return Some(Counter::DropShort);
    };
    let [m0, m1] = magic.to_be_bytes();
    let [version, kind] = version_kind.to_be_bytes();
    match rudp::check_prefix([m0, m1], version, kind) {
        Ok(()) => None,
        Err(rudp::HeaderError::TooShort) => Some(Counter::DropShort),
        Err(rudp::HeaderError::BadMagic) => Some(Counter::DropBadMagic),
        Err(rudp::HeaderError::BadVersion) => Some(Counter::DropBadVersion),
        Err(rudp::HeaderError::BadType) => Some(Counter::DropBadType),
    }
}
