//! Errors of the header views, the datagram parser and the reply and build helpers.

/// The header a [`ParseError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// The Ethernet header (with its 802.1Q tag, if any).
    Ethernet,
    /// The IPv4 header.
    Ipv4,
    /// The IPv6 header.
    Ipv6,
    /// The UDP header.
    Udp,
}

impl core::fmt::Display for Layer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Layer::Ethernet => "Ethernet",
            Layer::Ipv4 => "IPv4",
            Layer::Ipv6 => "IPv6",
            Layer::Udp => "UDP",
        })
    }
}

/// Why a frame is not a datagram this crate can read. Network input is hostile: every
/// malformation ends here, never in a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer ends inside a header.
    #[error("frame ends inside the {0} header")]
    Truncated(Layer),
    /// A length field says more bytes follow than the frame holds.
    #[error("{0} length field exceeds the frame")]
    LengthExceedsFrame(Layer),
    /// A length field is smaller than its own header.
    #[error("{0} length field is shorter than its header")]
    LengthTooSmall(Layer),
    /// The `EtherType` (after at most one 802.1Q tag) is neither IPv4 nor IPv6.
    #[error("EtherType {ethertype:#06x} is not IPv4 or IPv6")]
    NotIp {
        /// The `EtherType` found.
        ethertype: u16,
    },
    /// A second VLAN tag (802.1ad `QinQ` or stacked 802.1Q): not supported.
    #[error("stacked VLAN tags are not supported")]
    StackedVlan,
    /// The IP version nibble does not match the `EtherType`.
    #[error("IP version {version} does not match the EtherType")]
    IpVersion {
        /// The version nibble found.
        version: u8,
    },
    /// The IPv4 header checksum is wrong (RFC 1122 §3.2.1.2: silently discard).
    #[error("bad IPv4 header checksum")]
    Ipv4Checksum,
    /// An IPv4 fragment: the engine does not reassemble.
    #[error("IPv4 fragment")]
    Fragment,
    /// The IP payload is not UDP (IPv6 extension headers land here too).
    #[error("IP protocol {protocol} is not UDP")]
    NotUdp {
        /// The IPv4 protocol or IPv6 next header found.
        protocol: u8,
    },
}

/// Why [`reply_in_place`](crate::datagram::reply_in_place) cannot build a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The new payload does not fit in the frame buffer or in the IP/UDP length fields.
    #[error("reply payload of {len} bytes exceeds the {max} bytes available")]
    PayloadTooLong {
        /// Payload length asked for.
        len: usize,
        /// Largest payload possible in this buffer.
        max: usize,
    },
    /// The buffer's headers do not match the layout (not the frame it was parsed from).
    #[error("frame headers do not match the layout")]
    LayoutMismatch,
    /// The request came from or went to a group MAC or a multicast, broadcast or
    /// unspecified IP address: answering would fan out or forge a source.
    #[error("request is not unicast at both ends; no reply is sent")]
    NotUnicast,
}

/// Why [`build`](crate::datagram::build) cannot write headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The route's local and peer addresses are of different IP families.
    #[error("local and peer addresses are of different IP families")]
    FamilyMismatch,
    /// The payload does not fit in the frame buffer or in the IP/UDP length fields.
    #[error("payload of {len} bytes exceeds the {max} bytes available")]
    PayloadTooLong {
        /// Payload length asked for.
        len: usize,
        /// Largest payload possible in this buffer.
        max: usize,
    },
}
