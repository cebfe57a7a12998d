//! Link, network and transport header layout: offsets and constants (big-endian fields).
//!
//! Only what the steering classifier and the engine's header views need. Sources:
//! IEEE 802.3 / 802.1Q, RFC 791 (IPv4), RFC 8200 (IPv6), RFC 768 (UDP).

/// Ethernet header length (destination, source, EtherType).
pub const ETH_LEN: usize = 14;
/// Offset of the EtherType in an untagged Ethernet header.
pub const ETH_TYPE_OFFSET: usize = 12;
/// Length of one 802.1Q tag (TCI + inner EtherType).
pub const VLAN_LEN: usize = 4;

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
pub const IPV4_MIN_LEN: usize = 20;
/// Offset of the total-length field in the IPv4 header.
pub const IPV4_TOTAL_LEN_OFFSET: usize = 2;
/// Offset of the flags/fragment-offset field in the IPv4 header.
pub const IPV4_FRAG_OFFSET: usize = 6;
/// Offset of the protocol field in the IPv4 header.
pub const IPV4_PROTO_OFFSET: usize = 9;
/// Mask of the More-Fragments flag and the fragment offset (RFC 791 §3.1).
pub const IPV4_MF_OR_OFFSET_MASK: u16 = 0x3FFF;

/// IPv6 fixed header length.
pub const IPV6_LEN: usize = 40;
/// Offset of the payload-length field in the IPv6 header.
pub const IPV6_PAYLOAD_LEN_OFFSET: usize = 4;
/// Offset of the next-header field in the IPv6 header.
pub const IPV6_NEXT_HEADER_OFFSET: usize = 6;

/// IP protocol number: UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number: TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number: ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IPv6 next header: Fragment extension header.
pub const IPV6_NEXT_FRAGMENT: u8 = 44;

/// UDP header length.
pub const UDP_LEN: usize = 8;
