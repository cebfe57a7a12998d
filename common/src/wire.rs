//! Link, network and transport header layout: offsets and constants (big-endian fields).
//!
//! Only what the steering classifier and the engine's header views need. Sources:
//! IEEE 802.3 / 802.1Q, RFC 791 (IPv4), RFC 8200 (IPv6), RFC 768 (UDP).

/// A header field: its byte range from the start of its header (smoltcp's `wire::field`).
pub type Field = core::ops::Range<usize>;

/// Ethernet II (IEEE 802.3) header fields.
pub mod ethernet {
    /// Field offsets.
    pub mod field {
        use super::super::Field;
        /// Destination MAC address.
        pub const DESTINATION: Field = 0..6;
        /// Source MAC address.
        pub const SOURCE: Field = 6..12;
        /// EtherType (or the 802.1Q TPID of a tagged frame).
        pub const ETHERTYPE: Field = 12..14;
        /// First byte after the header.
        pub const PAYLOAD: usize = 14;
    }
}

/// 802.1Q tag fields, counted from the end of the untagged header's source address
/// plus the TPID, i.e. from offset 14 of a tagged frame.
pub mod vlan {
    /// Field offsets.
    pub mod field {
        use super::super::Field;
        /// Tag control information (priority, DEI, VLAN id).
        pub const TCI: Field = 0..2;
        /// The inner EtherType.
        pub const ETHERTYPE: Field = 2..4;
        /// First byte after the tag.
        pub const PAYLOAD: usize = 4;
    }
}

/// IPv4 header fields (RFC 791 §3.1).
pub mod ipv4 {
    /// Field offsets.
    pub mod field {
        use super::super::Field;
        /// Version (high nibble) and IHL (low nibble, in 32-bit words).
        pub const VER_IHL: usize = 0;
        /// DSCP and ECN.
        pub const DSCP_ECN: usize = 1;
        /// Total length: header and payload.
        pub const LENGTH: Field = 2..4;
        /// Identification.
        pub const IDENT: Field = 4..6;
        /// Flags and fragment offset.
        pub const FLG_OFF: Field = 6..8;
        /// Time to live.
        pub const TTL: usize = 8;
        /// Protocol of the payload.
        pub const PROTOCOL: usize = 9;
        /// Header checksum.
        pub const CHECKSUM: Field = 10..12;
        /// Source address.
        pub const SRC_ADDR: Field = 12..16;
        /// Destination address.
        pub const DST_ADDR: Field = 16..20;
        /// First byte after an option-less header.
        pub const PAYLOAD: usize = 20;
    }
}

/// IPv6 fixed header fields (RFC 8200 §3).
pub mod ipv6 {
    /// Field offsets.
    pub mod field {
        use super::super::Field;
        /// Version, traffic class and flow label.
        pub const VER_TC_FLOW: Field = 0..4;
        /// Payload length (everything after the fixed header).
        pub const LENGTH: Field = 4..6;
        /// Next header.
        pub const NXT_HDR: usize = 6;
        /// Hop limit.
        pub const HOP_LIMIT: usize = 7;
        /// Source address.
        pub const SRC_ADDR: Field = 8..24;
        /// Destination address.
        pub const DST_ADDR: Field = 24..40;
        /// First byte after the fixed header.
        pub const PAYLOAD: usize = 40;
    }
}

/// UDP header fields (RFC 768).
pub mod udp {
    /// Field offsets.
    pub mod field {
        use super::super::Field;
        /// Source port.
        pub const SRC_PORT: Field = 0..2;
        /// Destination port.
        pub const DST_PORT: Field = 2..4;
        /// Length: header and payload.
        pub const LENGTH: Field = 4..6;
        /// Checksum (0 on IPv4: none).
        pub const CHECKSUM: Field = 6..8;
        /// First byte of the payload.
        pub const PAYLOAD: usize = 8;
    }
}

/// Ethernet header length (destination, source, EtherType).
pub const ETH_LEN: usize = ethernet::field::PAYLOAD;
/// Offset of the EtherType in an untagged Ethernet header.
pub const ETH_TYPE_OFFSET: usize = ethernet::field::ETHERTYPE.start;
/// Length of one 802.1Q tag (TCI + inner EtherType).
pub const VLAN_LEN: usize = vlan::field::PAYLOAD;

/// EtherType: IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType: IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
/// EtherType: ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType: 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType: 802.1ad service tag (QinQ outer tag; not steered).
pub const ETHERTYPE_QINQ: u16 = 0x88A8;

/// Minimum IPv4 header length (IHL 5).
pub const IPV4_MIN_LEN: usize = ipv4::field::PAYLOAD;
/// Offset of the total-length field in the IPv4 header.
pub const IPV4_TOTAL_LEN_OFFSET: usize = ipv4::field::LENGTH.start;
/// Offset of the flags/fragment-offset field in the IPv4 header.
pub const IPV4_FRAG_OFFSET: usize = ipv4::field::FLG_OFF.start;
/// Offset of the protocol field in the IPv4 header.
pub const IPV4_PROTO_OFFSET: usize = ipv4::field::PROTOCOL;
/// Mask of the More-Fragments flag and the fragment offset (RFC 791 §3.1).
pub const IPV4_MF_OR_OFFSET_MASK: u16 = 0x3FFF;

/// IPv6 fixed header length.
pub const IPV6_LEN: usize = ipv6::field::PAYLOAD;
/// Offset of the payload-length field in the IPv6 header.
pub const IPV6_PAYLOAD_LEN_OFFSET: usize = ipv6::field::LENGTH.start;
/// Offset of the next-header field in the IPv6 header.
pub const IPV6_NEXT_HEADER_OFFSET: usize = ipv6::field::NXT_HDR;

/// IP protocol number: UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number: TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number: ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IPv6 next header: Fragment extension header.
pub const IPV6_NEXT_FRAGMENT: u8 = 44;

/// UDP header length.
pub const UDP_LEN: usize = udp::field::PAYLOAD;
