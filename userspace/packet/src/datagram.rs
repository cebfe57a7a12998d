//! What the engine needs per packet: parse a received frame, verify it, answer it in the
//! same buffer, or build a frame toward a remembered peer.
//!
//! ``text
//! RX frame ─ Datagram::parse ─ verify_udp_checksum ─ (protocol writes into
//!            payload_capacity_mut) ─ reply_in_place ─ TX the same frame
//! remembered Route ─ Route::payload_mut (write payload) ─ build ─ TX
//! ``
//! Nothing here allocates or copies payload bytes.
//!
//! ```
//! use xrudp_packet::{datagram, Datagram, Kernel};
//! # use xrudp_packet::{ethernet::Address, Route};
//! # use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
//! let kernel = Kernel::detect(); // once, at start-up
//! # let client = Route {
//! #     local_mac: Address([2, 0, 0, 0, 0, 2]), peer_mac: Address([2, 0, 0, 0, 0, 1]), vlan: None,
//! #     local: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000)),
//! #     peer: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7777)), dscp: 0,
//! # };
//! # let mut umem_frame = [0u8; 2048];
//! # client.payload_mut(&mut umem_frame)[..4].copy_from_slice(b"ping");
//! # let rx_len = datagram::build(&mut umem_frame, &client, 4, kernel).unwrap();
//! // `umem_frame` is the whole frame buffer; the NIC filled its first `rx_len` bytes.
//! let request = Datagram::parse(&umem_frame[..rx_len]).expect("counted and dropped if not");
//! assert!(request.verify_udp_checksum(kernel));
//! let (layout, peer) = (request.layout(), request.route());
//! assert_eq!(request.payload(), b"ping");
//!
//! // Write the answer where the request's payload was, then turn the frame around.
//! let area = datagram::payload_capacity_mut(&mut umem_frame, &layout);
//! area[..4].copy_from_slice(b"pong");
//! let tx_len = datagram::reply_in_place(&mut umem_frame, &layout, 4, kernel).unwrap();
//!
//! let reply = Datagram::parse(&umem_frame[..tx_len]).unwrap();
//! assert_eq!((reply.dst(), reply.payload()), (peer.peer, &b"pong"[..]));
//! ```

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use xrudp_common::wire::{
    ETH_LEN, ETH_TYPE_OFFSET, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, IPPROTO_UDP,
    IPV4_FRAG_OFFSET, IPV4_MF_OR_OFFSET_MASK, IPV4_MIN_LEN, IPV6_LEN, UDP_LEN, VLAN_LEN,
};

use crate::checksum::Kernel;
use crate::error::{BuildError, ParseError, ReplyError};
use crate::ethernet::{self, Address, Vlan};
use crate::{ipv4, ipv6, udp};

/// TTL / hop limit of every packet this crate writes (the common host default).
pub const DEFAULT_TTL: u8 = 64;

/// Where the headers and payload of a parsed frame sit. Only [`Datagram::parse`] makes
/// one, so its offsets are consistent with each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    l3: usize,
    l4: usize,
    payload: usize,
    payload_len: usize,
    ipv6: bool,
}

impl Layout {
    /// Offset of the IP header: 14, or 18 behind a VLAN tag.
    #[must_use]
    pub const fn l3(&self) -> usize {
        self.l3
    }

    /// Offset of the UDP header.
    #[must_use]
    pub const fn l4(&self) -> usize {
        self.l4
    }

    /// Offset of the UDP payload.
    #[must_use]
    pub const fn payload_offset(&self) -> usize {
        self.payload
    }

    /// Length of the UDP payload.
    #[must_use]
    pub const fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// Whether the network layer is IPv6.
    #[must_use]
    pub const fn is_ipv6(&self) -> bool {
        self.ipv6
    }

    /// Whether the frame carries an 802.1Q tag.
    #[must_use]
    pub const fn has_vlan(&self) -> bool {
        self.l3 > ETH_LEN
    }

    /// Offset just past the UDP datagram (Ethernet padding, if any, lies beyond).
    #[must_use]
    pub const fn end(&self) -> usize {
        self.payload + self.payload_len
    }

    /// The largest UDP payload a frame buffer of `buf_len` bytes can carry with these
    /// headers, also bounded by the 16-bit IP and UDP length fields.
    #[must_use]
    pub const fn max_payload(&self, buf_len: usize) -> usize {
        let overhead = if self.ipv6 {
            UDP_LEN
        } else {
            self.payload - self.l3
        };
        let by_fields = u16::MAX as usize - overhead;
        let by_buf = buf_len.saturating_sub(self.payload);
        if by_fields < by_buf {
            by_fields
        } else {
            by_buf
        }
    }
}

/// A received UDP datagram over IPv4 or IPv6, borrowed from its frame.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    frame: &'a [u8],
    layout: Layout,
}

impl<'a> Datagram<'a> {
    /// Walks Ethernet (at most one 802.1Q tag), IPv4 (any header length; header checksum
    /// verified, fragments refused) or IPv6 (fixed header; next header must be UDP) and
    /// UDP, checking every length against the frame and the one before it.
    ///
    /// Accepts exactly the frames `xrudp_common::steer::locate` steers, less those with a
    /// bad IPv4 header checksum or a wrong IPv6 version nibble (the XDP program checks
    /// neither).
    pub fn parse(frame: &'a [u8]) -> Result<Self, ParseError> {
        let eth = ethernet::Frame::new_checked(frame)?;
        let l3 = eth.header_len();
        let (l4, ip_end, ipv6) = match eth.ethertype() {
            ETHERTYPE_IPV4 => {
                let ip = ipv4::Packet::new_checked(eth.payload())?;
                if ip.protocol() != IPPROTO_UDP {
                    return Err(ParseError::NotUdp {
                        protocol: ip.protocol(),
                    });
                }
                if ip.is_fragment() {
                    return Err(ParseError::Fragment);
                }
                if !ip.verify_checksum() {
                    return Err(ParseError::Ipv4Checksum);
                }
                (
                    l3 + ip.header_len(),
                    l3 + usize::from(ip.total_len()),
                    false,
                )
            }
            ETHERTYPE_IPV6 => {
                let ip = ipv6::Packet::new_checked(eth.payload())?;
                if ip.next_header() != IPPROTO_UDP {
                    return Err(ParseError::NotUdp {
                        protocol: ip.next_header(),
                    });
                }
                (
                    l3 + IPV6_LEN,
                    l3 + IPV6_LEN + usize::from(ip.payload_len()),
                    true,
                )
            }
            ethertype => return Err(ParseError::NotIp { ethertype }),
        };
        let udp = udp::Packet::new_checked(&frame[l4..ip_end])?;
        Ok(Self {
            frame,
            layout: Layout {
                l3,
                l4,
                payload: l4 + UDP_LEN,
                payload_len: usize::from(udp.len()) - UDP_LEN,
                ipv6,
            },
        })
    }

    /// The header offsets, for [`reply_in_place`] and [`payload_capacity_mut`].
    #[must_use]
    pub const fn layout(&self) -> Layout {
        self.layout
    }

    /// The whole frame as received.
    #[must_use]
    pub const fn frame(&self) -> &'a [u8] {
        self.frame
    }

    /// Source MAC address (where a reply goes).
    #[must_use]
    pub fn src_mac(&self) -> Address {
        Address(mac_at(self.frame, 6))
    }

    /// Destination MAC address.
    #[must_use]
    pub fn dst_mac(&self) -> Address {
        Address(mac_at(self.frame, 0))
    }

    /// The 802.1Q tag, if any.
    #[must_use]
    pub fn vlan(&self) -> Option<Vlan> {
        self.layout
            .has_vlan()
            .then(|| Vlan(be16(self.frame, ETH_LEN)))
    }

    /// Source IP address.
    #[must_use]
    pub fn src_ip(&self) -> IpAddr {
        let l3 = self.layout.l3;
        if self.layout.ipv6 {
            IpAddr::V6(ipv6_at(self.frame, l3 + 8))
        } else {
            IpAddr::V4(ipv4_at(self.frame, l3 + 12))
        }
    }

    /// Destination IP address.
    #[must_use]
    pub fn dst_ip(&self) -> IpAddr {
        let l3 = self.layout.l3;
        if self.layout.ipv6 {
            IpAddr::V6(ipv6_at(self.frame, l3 + 24))
        } else {
            IpAddr::V4(ipv4_at(self.frame, l3 + 16))
        }
    }

    /// UDP source port.
    #[must_use]
    pub fn src_port(&self) -> u16 {
        be16(self.frame, self.layout.l4)
    }

    /// UDP destination port.
    #[must_use]
    pub fn dst_port(&self) -> u16 {
        be16(self.frame, self.layout.l4 + 2)
    }

    /// Source socket address. Over IPv6 its `flowinfo` holds the packet's flow label, so
    /// packets [`build`] toward it carry the same label as replies.
    #[must_use]
    pub fn src(&self) -> SocketAddr {
        self.socket(self.src_ip(), self.src_port())
    }

    /// Destination socket address (flow label in `flowinfo` over IPv6, as [`Datagram::src`]).
    #[must_use]
    pub fn dst(&self) -> SocketAddr {
        self.socket(self.dst_ip(), self.dst_port())
    }

    /// The IP DSCP (traffic class or TOS without the ECN bits).
    #[must_use]
    pub fn dscp(&self) -> u8 {
        let b = self.frame;
        let l3 = self.layout.l3;
        if self.layout.ipv6 {
            ((b[l3] << 4) | (b[l3 + 1] >> 4)) >> 2
        } else {
            b[l3 + 1] >> 2
        }
    }

    /// The UDP payload.
    #[must_use]
    pub fn payload(&self) -> &'a [u8] {
        &self.frame[self.layout.payload..self.layout.end()]
    }

    /// Verifies the UDP checksum over the pseudo-header. IPv4: a zero field means "no
    /// checksum" and is accepted (RFC 768); IPv6: a zero field is invalid (RFC 8200 §8.1).
    /// The caller drops and counts failures.
    #[must_use]
    pub fn verify_udp_checksum(&self, kernel: Kernel) -> bool {
        let seg = &self.frame[self.layout.l4..self.layout.end()];
        // The length field was checked by `parse`: this view cannot fail.
        let Ok(udp) = udp::Packet::new_checked(seg) else {
            return false;
        };
        match (self.src_ip(), self.dst_ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => udp.verify_ipv4(kernel, s, d),
            (IpAddr::V6(s), IpAddr::V6(d)) => udp.verify_ipv6(kernel, &s, &d),
            _ => false,
        }
    }

    /// Whether both ends are unicast at L2 and L3, so that a reply is allowed: a reply to
    /// a group MAC or a multicast/broadcast IP would fan out, and one *from* such an
    /// address would be invalid. [`reply_in_place`] checks this too.
    #[must_use]
    pub fn is_unicast(&self) -> bool {
        unicast(self.frame, &self.layout)
    }

    /// The way back to the sender, to answer later or originate packets with [`build`].
    #[must_use]
    pub fn route(&self) -> Route {
        Route {
            local_mac: self.dst_mac(),
            peer_mac: self.src_mac(),
            vlan: self.vlan(),
            local: self.dst(),
            peer: self.src(),
            dscp: self.dscp(),
        }
    }

    fn socket(&self, ip: IpAddr, port: u16) -> SocketAddr {
        match ip {
            IpAddr::V4(a) => SocketAddr::V4(SocketAddrV4::new(a, port)),
            IpAddr::V6(a) => {
                let b = self.frame;
                let l3 = self.layout.l3;
                let label = u32::from_be_bytes([0, b[l3 + 1] & 0x0f, b[l3 + 2], b[l3 + 3]]);
                SocketAddr::V6(SocketAddrV6::new(a, port, label, 0))
            }
        }
    }
}

/// Turns the received frame in `frame` (the whole frame buffer: its capacity, not just
/// the received length) into the reply to its sender, in place, and returns the reply's
/// frame length.
///
/// The UDP payload must already be in place: the echo case passes the request's length;
/// a protocol first writes its reply into [`payload_capacity_mut`] and passes the new
/// length. Payload bytes are never read or moved except by the checksum.
///
/// Rewrites: MACs swapped (the reply goes to the L2 address the request came from, VLAN
/// tag kept), IP addresses and UDP ports swapped, TTL / hop limit [`DEFAULT_TTL`], ECN
/// cleared (DSCP kept), IPv4 total length / IPv6 payload length / UDP length set, IPv4
/// options blanked to End-of-Option-List (header length kept), IPv4 identification and
/// DF kept — the peer's IDs are unique for its own datagrams (RFC 6864 §4.1), one reply
/// per request inherits that, and packets made by [`build`] are atomic (DF, ID 0) — and
/// the IPv4 header checksum updated incrementally (RFC 1624), the UDP checksum computed
/// in full over the new pseudo-header.
///
/// On error the frame is left untouched.
pub fn reply_in_place(
    frame: &mut [u8],
    layout: &Layout,
    new_payload_len: usize,
    kernel: Kernel,
) -> Result<usize, ReplyError> {
    let max = layout.max_payload(frame.len());
    if new_payload_len > max {
        return Err(ReplyError::PayloadTooLong {
            len: new_payload_len,
            max,
        });
    }
    check_layout(frame, layout)?;
    if !unicast(frame, layout) {
        return Err(ReplyError::NotUnicast);
    }
    // Lengths fit the 16-bit fields: `max_payload` bounds them, and `check_layout` saw
    // every view below succeed on this frame.
    let udp_len = (UDP_LEN + new_payload_len) as u16;
    let (dst_mac, rest) = frame.split_at_mut(6);
    dst_mac.swap_with_slice(&mut rest[..6]);
    let mismatch = |_| ReplyError::LayoutMismatch;
    let (src, dst) = if layout.ipv6 {
        let mut ip = ipv6::Packet::new_checked(&mut frame[layout.l3..]).map_err(mismatch)?;
        ip.rewrite_for_reply(udp_len, DEFAULT_TTL);
        (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()))
    } else {
        let mut ip = ipv4::Packet::new_checked(&mut frame[layout.l3..]).map_err(mismatch)?;
        let total = (layout.l4 - layout.l3) as u16 + udp_len;
        ip.rewrite_for_reply(total, DEFAULT_TTL);
        (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()))
    };
    let mut udp = udp::Packet::new_checked(&mut frame[layout.l4..]).map_err(mismatch)?;
    udp.swap_ports();
    if udp.set_len(udp_len).is_none() {
        return Err(ReplyError::LayoutMismatch);
    }
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => udp.fill_ipv4(kernel, s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => udp.fill_ipv6(kernel, &s, &d),
        _ => return Err(ReplyError::LayoutMismatch),
    }
    Ok(layout.payload + new_payload_len)
}

/// The writable payload area of a received frame buffer: from the UDP payload offset to
/// the end of the buffer's capacity (bounded by the 16-bit length fields). Its first
/// [`Layout::payload_len`] bytes are the request's payload. Empty if the buffer is
/// shorter than the headers.
#[must_use]
pub fn payload_capacity_mut<'b>(frame: &'b mut [u8], layout: &Layout) -> &'b mut [u8] {
    let max = layout.max_payload(frame.len());
    frame
        .get_mut(layout.payload..layout.payload + max)
        .unwrap_or_default()
}

/// The way to a peer: both ends' link and socket addresses, as learned from a received
/// datagram ([`Datagram::route`]) or configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// This host's MAC address (source of built frames).
    pub local_mac: Address,
    /// The next hop's MAC address toward the peer (destination of built frames): the
    /// address the peer's packets came from.
    pub peer_mac: Address,
    /// The 802.1Q tag to send with, if any.
    pub vlan: Option<Vlan>,
    /// This host's address and port.
    pub local: SocketAddr,
    /// The peer's address and port. Over IPv6, `flowinfo`'s low 20 bits are sent as the
    /// flow label.
    pub peer: SocketAddr,
    /// DSCP to send with (6 bits; ECN is always Not-ECT).
    pub dscp: u8,
}

impl Route {
    /// Bytes of headers before the UDP payload of a frame built on this route.
    #[must_use]
    pub const fn header_len(&self) -> usize {
        let eth = if self.vlan.is_some() {
            ETH_LEN + VLAN_LEN
        } else {
            ETH_LEN
        };
        let ip = if self.local.is_ipv6() {
            IPV6_LEN
        } else {
            IPV4_MIN_LEN
        };
        eth + ip + UDP_LEN
    }

    /// The largest payload a frame buffer of `buf_len` bytes can carry on this route.
    #[must_use]
    pub const fn max_payload(&self, buf_len: usize) -> usize {
        let overhead = if self.local.is_ipv6() {
            UDP_LEN
        } else {
            IPV4_MIN_LEN + UDP_LEN
        };
        let by_fields = u16::MAX as usize - overhead;
        let by_buf = buf_len.saturating_sub(self.header_len());
        if by_fields < by_buf {
            by_fields
        } else {
            by_buf
        }
    }

    /// Where to write the payload in `buf` before calling [`build`]; empty if the buffer
    /// is shorter than the headers.
    #[must_use]
    pub fn payload_mut<'b>(&self, buf: &'b mut [u8]) -> &'b mut [u8] {
        let at = self.header_len();
        let end = at + self.max_payload(buf.len());
        buf.get_mut(at..end).unwrap_or_default()
    }
}

/// Writes Ethernet (with the route's VLAN tag), IPv4 or IPv6 and UDP headers in front of
/// the `payload_len` bytes already at [`Route::payload_mut`], with complete checksums,
/// and returns the frame length.
///
/// IPv4: no options, DF set, identification 0 (an atomic datagram, RFC 6864 §4.1), TTL
/// [`DEFAULT_TTL`]. IPv6: hop limit [`DEFAULT_TTL`], flow label from `route.peer`.
pub fn build(
    buf: &mut [u8],
    route: &Route,
    payload_len: usize,
    kernel: Kernel,
) -> Result<usize, BuildError> {
    let max = route.max_payload(buf.len());
    if payload_len > max {
        return Err(BuildError::PayloadTooLong {
            len: payload_len,
            max,
        });
    }
    let udp_len = (UDP_LEN + payload_len) as u16;
    let tos = route.dscp << 2;
    let (ethertype, l3_len) = match (route.local, route.peer) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => (ETHERTYPE_IPV4, IPV4_MIN_LEN),
        (SocketAddr::V6(_), SocketAddr::V6(_)) => (ETHERTYPE_IPV6, IPV6_LEN),
        _ => return Err(BuildError::FamilyMismatch),
    };
    let eth = ethernet::Repr {
        dst: route.peer_mac,
        src: route.local_mac,
        vlan: route.vlan,
        ethertype,
    };
    // The length checks above make every emit below fit.
    let too_long = BuildError::PayloadTooLong {
        len: payload_len,
        max,
    };
    let l3 = eth.emit(buf).ok_or(too_long)?;
    let l4 = l3 + l3_len;
    let end = l4 + usize::from(udp_len);
    let (head, seg) = buf.split_at_mut(l4);
    let seg = seg.get_mut(..usize::from(udp_len)).ok_or(too_long)?;
    udp::emit_header(seg, route.local.port(), route.peer.port(), payload_len).ok_or(too_long)?;
    let mut udp = udp::Packet::new_checked(seg).map_err(|_| too_long)?;
    match (route.local, route.peer) {
        (SocketAddr::V4(local), SocketAddr::V4(peer)) => {
            ipv4::Repr {
                src: *local.ip(),
                dst: *peer.ip(),
                protocol: IPPROTO_UDP,
                payload_len: udp_len,
                ttl: DEFAULT_TTL,
                tos,
                ident: 0,
                dont_frag: true,
            }
            .emit(&mut head[l3..])
            .ok_or(too_long)?;
            udp.fill_ipv4(kernel, *local.ip(), *peer.ip());
        }
        (SocketAddr::V6(local), SocketAddr::V6(peer)) => {
            ipv6::Repr {
                src: *local.ip(),
                dst: *peer.ip(),
                next_header: IPPROTO_UDP,
                payload_len: udp_len,
                hop_limit: DEFAULT_TTL,
                traffic_class: tos,
                flow_label: peer.flowinfo(),
            }
            .emit(&mut head[l3..])
            .ok_or(too_long)?;
            udp.fill_ipv6(kernel, local.ip(), peer.ip());
        }
        _ => return Err(BuildError::FamilyMismatch),
    }
    Ok(end)
}

/// Checks that `frame`'s headers are the ones `layout` describes, without changing it:
/// the few fields that fix the offsets, then the lengths the views below will check, so
/// that once this passes the rewrite cannot fail halfway.
fn check_layout(frame: &[u8], layout: &Layout) -> Result<(), ReplyError> {
    let Layout { l3, l4, ipv6, .. } = *layout;
    let Some(headers) = frame.get(..l4 + UDP_LEN) else {
        return Err(ReplyError::LayoutMismatch);
    };
    let tag_ok = if l3 == ETH_LEN + VLAN_LEN {
        be16(headers, ETH_TYPE_OFFSET) == ETHERTYPE_VLAN
    } else {
        l3 == ETH_LEN
    };
    let (ethertype, version, next) = if ipv6 {
        (ETHERTYPE_IPV6, 6, headers[l3 + 6])
    } else {
        (ETHERTYPE_IPV4, 4, headers[l3 + 9])
    };
    let ip_ok = be16(headers, l3 - 2) == ethertype
        && headers[l3] >> 4 == version
        && next == IPPROTO_UDP
        && if ipv6 {
            l4 == l3 + IPV6_LEN && l4 + usize::from(be16(headers, l3 + 4)) <= frame.len()
        } else {
            l4 == l3 + usize::from(headers[l3] & 0x0f) * 4
                && l3 + usize::from(be16(headers, l3 + 2)) <= frame.len()
                && usize::from(be16(headers, l3 + 2)) >= l4 - l3
                && be16(headers, l3 + IPV4_FRAG_OFFSET) & IPV4_MF_OR_OFFSET_MASK == 0
        };
    let udp_len = usize::from(be16(headers, l4 + 4));
    if tag_ok && ip_ok && (UDP_LEN..=frame.len() - l4).contains(&udp_len) {
        Ok(())
    } else {
        Err(ReplyError::LayoutMismatch)
    }
}

/// Whether the frame's MACs and IP addresses are all unicast.
fn unicast(frame: &[u8], layout: &Layout) -> bool {
    let macs = frame[0] & 1 == 0 && frame[6] & 1 == 0;
    let l3 = layout.l3;
    let ips = if layout.ipv6 {
        let (s, d) = (ipv6_at(frame, l3 + 8), ipv6_at(frame, l3 + 24));
        !s.is_multicast() && !d.is_multicast() && !s.is_unspecified() && !d.is_unspecified()
    } else {
        let (s, d) = (ipv4_at(frame, l3 + 12), ipv4_at(frame, l3 + 16));
        let ok = |a: Ipv4Addr| !a.is_multicast() && !a.is_broadcast() && !a.is_unspecified();
        ok(s) && ok(d)
    };
    macs && ips
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn mac_at(b: &[u8], at: usize) -> [u8; 6] {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    m
}

fn ipv4_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn ipv6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(o)
}
