//! Frames built byte by byte here (checksums from the `internet-checksum` crate, not from
//! this crate) go through parse → verify → reply → parse; truncations, corruptions and
//! random bytes must give errors, never panics; the parser must agree with the XDP
//! program's classifier (`xrudp_common::steer::locate`).

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use proptest::prelude::*;
use proptest::test_runner::Config;
use xrudp_common::steer::{self, Located};
use xrudp_packet::datagram::{self, DEFAULT_TTL};
use xrudp_packet::ethernet::{Address, Vlan};
use xrudp_packet::{BuildError, Datagram, Kernel, ParseError, ReplyError, Route};

/// Frame capacity used for replies (a common UMEM frame size).
const FRAME: usize = 2048;

#[derive(Clone, Debug)]
struct Spec {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    vlan: Option<u16>,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    /// IPv4: options bytes (a multiple of 4, at most 40).
    options: Vec<u8>,
    tos: u8,
    ttl: u8,
    ident: u16,
    df: bool,
    flow: u32,
    /// IPv4 only: send a zero UDP checksum ("none").
    no_udp_checksum: bool,
    payload: Vec<u8>,
}

fn csum(parts: &[&[u8]]) -> u16 {
    let mut c = internet_checksum::Checksum::new();
    for p in parts {
        c.add_bytes(p);
    }
    u16::from_be_bytes(c.checksum())
}

/// The frame `spec` describes, built without this crate.
fn make(spec: &Spec) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&spec.dst_mac);
    frame.extend_from_slice(&spec.src_mac);
    if let Some(tci) = spec.vlan {
        frame.extend_from_slice(&0x8100u16.to_be_bytes());
        frame.extend_from_slice(&tci.to_be_bytes());
    }
    let udp_len = (8 + spec.payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&spec.sport.to_be_bytes());
    udp.extend_from_slice(&spec.dport.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&spec.payload);
    match (spec.src, spec.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            let hl = 20 + spec.options.len();
            let mut hdr = vec![(0x40 | (hl / 4)) as u8, spec.tos];
            hdr.extend_from_slice(&((hl + udp.len()) as u16).to_be_bytes());
            hdr.extend_from_slice(&spec.ident.to_be_bytes());
            hdr.extend_from_slice(&(if spec.df { 0x4000u16 } else { 0 }).to_be_bytes());
            hdr.extend_from_slice(&[spec.ttl, 17, 0, 0]);
            hdr.extend_from_slice(&src.octets());
            hdr.extend_from_slice(&dst.octets());
            hdr.extend_from_slice(&spec.options);
            let c = csum(&[&hdr]);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
            frame.extend_from_slice(&hdr);
            if !spec.no_udp_checksum {
                let mut pseudo = Vec::new();
                pseudo.extend_from_slice(&src.octets());
                pseudo.extend_from_slice(&dst.octets());
                pseudo.extend_from_slice(&[0, 17]);
                pseudo.extend_from_slice(&udp_len.to_be_bytes());
                let c = csum(&[&pseudo, &udp]);
                udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
            }
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            frame.extend_from_slice(&0x86ddu16.to_be_bytes());
            let first = (6u32 << 28) | (u32::from(spec.tos) << 20) | (spec.flow & 0xf_ffff);
            frame.extend_from_slice(&first.to_be_bytes());
            frame.extend_from_slice(&udp_len.to_be_bytes());
            frame.extend_from_slice(&[17, spec.ttl]);
            frame.extend_from_slice(&src.octets());
            frame.extend_from_slice(&dst.octets());
            let mut pseudo = Vec::new();
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&u32::from(udp_len).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            let c = csum(&[&pseudo, &udp]);
            udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
        }
        _ => unreachable!("specs pair addresses of one family"),
    }
    frame.extend_from_slice(&udp);
    frame
}

/// An independent check of a frame's IPv4 header and UDP checksums.
fn checksums_ok(frame: &[u8], d: &Datagram<'_>) -> bool {
    let l = d.layout();
    let udp = &frame[l.l4()..l.end()];
    let mut pseudo = Vec::new();
    match (d.src_ip(), d.dst_ip()) {
        (IpAddr::V4(s), IpAddr::V4(t)) => {
            if csum(&[&frame[l.l3()..l.l4()]]) != 0 {
                return false;
            }
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&t.octets());
            pseudo.extend_from_slice(&[0, 17]);
            pseudo.extend_from_slice(&(udp.len() as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(t)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&t.octets());
            pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
        }
        _ => return false,
    }
    udp[6..8] != [0, 0] && csum(&[&pseudo, udp]) == 0
}

fn unicast_mac() -> impl Strategy<Value = [u8; 6]> {
    any::<[u8; 6]>().prop_map(|mut m| {
        m[0] &= 0xfe;
        m
    })
}

fn addr_pair(v6: bool) -> BoxedStrategy<(IpAddr, IpAddr)> {
    if v6 {
        (any::<[u8; 16]>(), any::<[u8; 16]>())
            .prop_map(|(mut a, mut b)| {
                a[0] = 0x20;
                b[0] = 0xfd;
                (IpAddr::V6(Ipv6Addr::from(a)), IpAddr::V6(Ipv6Addr::from(b)))
            })
            .boxed()
    } else {
        (1u8..=223, any::<[u8; 3]>(), 1u8..=223, any::<[u8; 3]>())
            .prop_map(|(a0, a, b0, b)| {
                (
                    IpAddr::V4(Ipv4Addr::new(a0, a[0], a[1], a[2])),
                    IpAddr::V4(Ipv4Addr::new(b0, b[0], b[1], b[2])),
                )
            })
            .boxed()
    }
}

prop_compose! {
    fn spec()(v6 in any::<bool>())(
        dst_mac in unicast_mac(),
        src_mac in unicast_mac(),
        vlan in prop::option::of(any::<u16>()),
        (src, dst) in addr_pair(v6),
        sport in any::<u16>(),
        dport in any::<u16>(),
        options in (0usize..=10).prop_flat_map(|n| prop::collection::vec(any::<u8>(), n * 4)),
        tos in any::<u8>(),
        ttl in any::<u8>(),
        ident in any::<u16>(),
        df in any::<bool>(),
        flow in 0u32..(1 << 20),
        no_udp_checksum in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 0..1400),
    ) -> Spec {
        Spec {
            dst_mac, src_mac, vlan, src, dst, sport, dport,
            options: if src.is_ipv6() { Vec::new() } else { options },
            tos, ttl, ident, df, flow,
            no_udp_checksum: no_udp_checksum && src.is_ipv4(),
            payload,
        }
    }
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

use support::kernels;

/// Parses and checks every field against the spec.
fn assert_matches(frame: &[u8], spec: &Spec) -> Result<(), TestCaseError> {
    let d = Datagram::parse(frame).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(d.dst_mac(), Address(spec.dst_mac));
    prop_assert_eq!(d.src_mac(), Address(spec.src_mac));
    prop_assert_eq!(d.vlan(), spec.vlan.map(Vlan));
    prop_assert_eq!((d.src_ip(), d.dst_ip()), (spec.src, spec.dst));
    prop_assert_eq!((d.src_port(), d.dst_port()), (spec.sport, spec.dport));
    prop_assert_eq!(d.dscp(), spec.tos >> 2);
    prop_assert_eq!(d.payload(), &spec.payload[..]);
    prop_assert!(d.is_unicast());
    let l = d.layout();
    prop_assert_eq!(l.is_ipv6(), spec.src.is_ipv6());
    prop_assert_eq!(l.has_vlan(), spec.vlan.is_some());
    prop_assert_eq!(l.payload_len(), spec.payload.len());
    prop_assert_eq!(l.end(), frame.len());
    for k in kernels() {
        prop_assert!(d.verify_udp_checksum(k), "{}", k.level());
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(300))]

    /// parse → reply (same payload) → parse: everything swapped, payload untouched,
    /// checksums right (checked independently), TTL 64, ECN cleared, options blanked.
    #[test]
    fn echo_round_trip(spec in spec()) {
        let wire = make(&spec);
        assert_matches(&wire, &spec)?;
        let layout = Datagram::parse(&wire).unwrap().layout();
        for k in kernels() {
            let mut buf = vec![0u8; FRAME];
            buf[..wire.len()].copy_from_slice(&wire);
            let n = datagram::reply_in_place(&mut buf, &layout, spec.payload.len(), k).unwrap();
            prop_assert_eq!(n, wire.len());
            let r = Datagram::parse(&buf[..n]).unwrap();
            prop_assert!(checksums_ok(&buf[..n], &r));
            prop_assert!(r.verify_udp_checksum(k));
            prop_assert_eq!((r.src_mac(), r.dst_mac()), (Address(spec.dst_mac), Address(spec.src_mac)));
            prop_assert_eq!(r.vlan(), spec.vlan.map(Vlan));
            prop_assert_eq!((r.src_ip(), r.dst_ip()), (spec.dst, spec.src));
            prop_assert_eq!((r.src_port(), r.dst_port()), (spec.dport, spec.sport));
            prop_assert_eq!(r.payload(), &spec.payload[..]);
            prop_assert_eq!(r.layout(), layout);
            let l3 = layout.l3();
            if spec.src.is_ipv4() {
                prop_assert_eq!(buf[l3 + 8], DEFAULT_TTL);
                prop_assert_eq!(buf[l3 + 1], spec.tos & 0xfc);
                prop_assert_eq!(&buf[l3 + 4..l3 + 6], &spec.ident.to_be_bytes());
                prop_assert_eq!(buf[l3 + 6] & 0x40 != 0, spec.df);
                prop_assert!(buf[l3 + 20..layout.l4()].iter().all(|&b| b == 0));
            } else {
                prop_assert_eq!(buf[l3 + 7], DEFAULT_TTL);
                prop_assert_eq!(r.dscp(), spec.tos >> 2);
                let flow = u32::from_be_bytes([0, buf[l3 + 1] & 0x0f, buf[l3 + 2], buf[l3 + 3]]);
                prop_assert_eq!(flow, spec.flow);
                prop_assert_eq!((buf[l3 + 1] >> 4) & 0x3, 0, "ECN cleared");
            }
            // Bytes past the reply are untouched.
            prop_assert!(buf[n..].iter().all(|&b| b == 0));
        }
    }

    /// The protocol's path: write a new payload into the capacity area, then reply with
    /// its length; and the reply's reply is the original request's addressing.
    #[test]
    fn reply_with_new_payload(spec in spec(), new in prop::collection::vec(any::<u8>(), 0..1800)) {
        let wire = make(&spec);
        let layout = Datagram::parse(&wire).unwrap().layout();
        let k = Kernel::detect();
        let mut buf = vec![0u8; FRAME];
        buf[..wire.len()].copy_from_slice(&wire);
        let cap = datagram::payload_capacity_mut(&mut buf, &layout);
        prop_assert_eq!(cap.len(), FRAME - layout.payload_offset());
        prop_assert_eq!(&cap[..spec.payload.len()], &spec.payload[..]);
        cap[..new.len()].copy_from_slice(&new);
        let n = datagram::reply_in_place(&mut buf, &layout, new.len(), k).unwrap();
        prop_assert_eq!(n, layout.payload_offset() + new.len());
        let r = Datagram::parse(&buf[..n]).unwrap();
        prop_assert!(checksums_ok(&buf[..n], &r));
        prop_assert_eq!(r.payload(), &new[..]);
        let r_layout = r.layout();
        let back = datagram::reply_in_place(&mut buf, &r_layout, new.len(), k).unwrap();
        let b = Datagram::parse(&buf[..back]).unwrap();
        prop_assert_eq!((b.src(), b.dst()), (Datagram::parse(&wire).unwrap().src(), Datagram::parse(&wire).unwrap().dst()));
        prop_assert_eq!((b.src_mac(), b.dst_mac()), (Address(spec.src_mac), Address(spec.dst_mac)));
    }

    /// `build` toward a learned route makes a frame that parses back to that route.
    #[test]
    fn build_from_route(spec in spec(), payload in prop::collection::vec(any::<u8>(), 0..1400)) {
        let wire = make(&spec);
        let route = Datagram::parse(&wire).unwrap().route();
        for k in kernels() {
            let mut buf = vec![0u8; FRAME];
            let area = route.payload_mut(&mut buf);
            area[..payload.len()].copy_from_slice(&payload);
            let n = datagram::build(&mut buf, &route, payload.len(), k).unwrap();
            prop_assert_eq!(n, route.header_len() + payload.len());
            let d = Datagram::parse(&buf[..n]).unwrap();
            prop_assert!(checksums_ok(&buf[..n], &d));
            prop_assert_eq!(d.payload(), &payload[..]);
            prop_assert_eq!((d.src_mac(), d.dst_mac()), (route.local_mac, route.peer_mac));
            prop_assert_eq!(d.vlan(), route.vlan);
            prop_assert_eq!((d.src(), d.dst()), (route.local, route.peer));
            prop_assert_eq!(d.dscp(), route.dscp);
            // The frame's reverse route is the route's reverse.
            let back = d.route();
            prop_assert_eq!((back.local, back.peer), (route.peer, route.local));
        }
    }

    /// Every strict prefix of a valid frame (no Ethernet padding) is refused; with
    /// padding appended the frame still parses to the same datagram.
    #[test]
    fn truncations_are_errors(spec in spec(), pad in prop::collection::vec(any::<u8>(), 1..40)) {
        let wire = make(&spec);
        for n in 0..wire.len() {
            prop_assert!(Datagram::parse(&wire[..n]).is_err(), "prefix of {} bytes of {} parsed", n, wire.len());
        }
        let mut padded = wire.clone();
        padded.extend_from_slice(&pad);
        let d = Datagram::parse(&padded).unwrap();
        prop_assert_eq!(d.payload(), &spec.payload[..]);
        prop_assert_eq!(d.layout(), Datagram::parse(&wire).unwrap().layout());
    }

    /// Corrupted frames: never a panic, a flipped bit in the checksummed area is caught,
    /// and the parser agrees with the XDP classifier.
    #[test]
    fn corruption_never_panics(spec in spec(), flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)) {
        let mut wire = make(&spec);
        let layout = Datagram::parse(&wire).unwrap().layout();
        for (at, x) in &flips {
            let i = at.index(wire.len());
            wire[i] ^= x;
        }
        let k = Kernel::detect();
        agrees_with_classifier(&wire)?;
        if let Ok(d) = Datagram::parse(&wire) {
            let _ = d.verify_udp_checksum(k);
            let mut buf = vec![0u8; FRAME];
            buf[..wire.len()].copy_from_slice(&wire);
            let _ = datagram::reply_in_place(&mut buf, &d.layout(), d.payload().len(), k);
            // A stale layout on a changed frame: an error or a consistent reply, never a panic.
            let _ = datagram::reply_in_place(&mut buf, &layout, spec.payload.len(), k);
        }
    }

    /// One flipped bit in the UDP segment (length field aside: it is cross-checked
    /// against the IP length) is detected, unless it turns an IPv4 checksum into 0 ("none").
    #[test]
    fn single_bit_flip_is_detected(spec in spec(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut spec = spec;
        spec.no_udp_checksum = false;
        let mut wire = make(&spec);
        let layout = Datagram::parse(&wire).unwrap().layout();
        // Flip inside the UDP segment (ports, length excluded: it is cross-checked).
        let seg: Vec<usize> = (layout.l4()..layout.end()).filter(|i| !(layout.l4() + 4..layout.l4() + 6).contains(i)).collect();
        let i = seg[at.index(seg.len())];
        wire[i] ^= 1 << bit;
        let k = Kernel::detect();
        let l4 = layout.l4();
        if spec.src.is_ipv4() && wire[l4 + 6..l4 + 8] == [0, 0] {
            return Ok(());
        }
        match Datagram::parse(&wire) {
            Ok(d) => prop_assert!(!d.verify_udp_checksum(k), "flip at {} not caught", i),
            Err(e) => prop_assert!(false, "flip at {} broke parsing: {}", i, e),
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200), head in 0usize..3) {
        // Give random tails realistic heads now and then, so deeper layers are reached.
        let mut f = bytes;
        if f.len() > 40 {
            match head {
                0 => f[12..14].copy_from_slice(&[0x08, 0x00]),
                1 => f[12..14].copy_from_slice(&[0x86, 0xdd]),
                _ => {}
            }
            if head == 0 { f[14] = 0x45; f[23] = 17; }
            if head == 1 { f[14] = 0x60; f[20] = 17; }
        }
        agrees_with_classifier(&f)?;
        if let Ok(d) = Datagram::parse(&f) {
            let _ = (d.src(), d.dst(), d.route(), d.payload(), d.verify_udp_checksum(Kernel::detect()));
        }
    }
}

/// `parse` accepts exactly what `steer::locate` steers, less bad IPv4 header checksums
/// and wrong IPv6 version nibbles, which the XDP program does not check.
fn agrees_with_classifier(frame: &[u8]) -> Result<(), TestCaseError> {
    let located = steer::locate(frame, |_| true);
    match (Datagram::parse(frame), located) {
        (Ok(d), Located::Udp(l)) => {
            let ours = d.layout();
            prop_assert_eq!((l.l3, l.l4, l.ipv6), (ours.l3(), ours.l4(), ours.is_ipv6()));
            prop_assert_eq!(l.udp_len, 8 + ours.payload_len());
        }
        (Ok(_), other) => prop_assert!(false, "parse accepted what locate gave {:?}", other),
        (Err(_), _) => {}
    }
    if let Located::Udp(_) = located {
        match Datagram::parse(frame) {
            Ok(_) | Err(ParseError::Ipv4Checksum | ParseError::IpVersion { .. }) => {}
            Err(e) => prop_assert!(false, "locate steered what parse refused: {}", e),
        }
    }
    Ok(())
}

fn v4_request() -> Spec {
    Spec {
        dst_mac: [2, 0, 0, 0, 0, 1],
        src_mac: [2, 0, 0, 0, 0, 2],
        vlan: None,
        src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        dst: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        sport: 40000,
        dport: 7777,
        options: Vec::new(),
        tos: 0,
        ttl: 63,
        ident: 7,
        df: true,
        flow: 0,
        no_udp_checksum: false,
        payload: b"ping".to_vec(),
    }
}

#[test]
fn refusals_leave_the_frame_untouched() {
    let k = Kernel::detect();
    let wire = make(&v4_request());
    let layout = Datagram::parse(&wire).unwrap().layout();

    let mut buf = wire.clone();
    let max = layout.max_payload(buf.len());
    assert_eq!(max, 4);
    assert_eq!(
        datagram::reply_in_place(&mut buf, &layout, 5, k),
        Err(ReplyError::PayloadTooLong { len: 5, max: 4 })
    );
    assert_eq!(buf, wire);

    for (i, mask) in [(0usize, 1u8), (6, 1)] {
        let mut spec = v4_request();
        if i == 0 {
            spec.dst_mac[0] |= mask;
        } else {
            spec.src_mac[0] |= mask;
        }
        let w = make(&spec);
        let mut b = w.clone();
        let l = Datagram::parse(&w).unwrap().layout();
        assert_eq!(
            datagram::reply_in_place(&mut b, &l, 4, k),
            Err(ReplyError::NotUnicast)
        );
        assert_eq!(b, w);
    }
    for dst in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(239, 1, 1, 1),
        Ipv4Addr::UNSPECIFIED,
    ] {
        let mut spec = v4_request();
        spec.dst = IpAddr::V4(dst);
        let w = make(&spec);
        let mut b = w.clone();
        let d = Datagram::parse(&w).unwrap();
        assert!(!d.is_unicast());
        assert_eq!(
            datagram::reply_in_place(&mut b, &d.layout(), 4, k),
            Err(ReplyError::NotUnicast)
        );
    }

    // A layout from an IPv4 frame applied to an IPv6 frame.
    let mut spec6 = v4_request();
    spec6.src = "2001:db8::2".parse().unwrap();
    spec6.dst = "2001:db8::1".parse().unwrap();
    let w6 = make(&spec6);
    let mut b6 = w6.clone();
    b6.resize(200, 0);
    assert_eq!(
        datagram::reply_in_place(&mut b6, &layout, 4, k),
        Err(ReplyError::LayoutMismatch)
    );
    assert_eq!(&b6[..w6.len()], &w6[..]);
    assert!(datagram::payload_capacity_mut(&mut [0u8; 10], &layout).is_empty());
}

#[test]
fn parse_errors_name_the_problem() {
    let wire = make(&v4_request());
    let mut f = wire.clone();
    f[14 + 10] ^= 1;
    assert_eq!(Datagram::parse(&f).unwrap_err(), ParseError::Ipv4Checksum);
    let mut f = wire.clone();
    f[14 + 9] = 6;
    assert_eq!(
        Datagram::parse(&f).unwrap_err(),
        ParseError::NotUdp { protocol: 6 }
    );
    let mut f = wire.clone();
    f[14 + 6] = 0x20; // More Fragments
    assert_eq!(Datagram::parse(&f).unwrap_err(), ParseError::Fragment);
    let mut f = wire.clone();
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    assert_eq!(
        Datagram::parse(&f).unwrap_err(),
        ParseError::NotIp { ethertype: 0x0806 }
    );

    // IPv6: zero UDP checksum is invalid; a wrong one is caught.
    let mut spec6 = v4_request();
    spec6.src = "2001:db8::2".parse().unwrap();
    spec6.dst = "2001:db8::1".parse().unwrap();
    let mut f = make(&spec6);
    let k = Kernel::detect();
    assert!(Datagram::parse(&f).unwrap().verify_udp_checksum(k));
    let l4 = Datagram::parse(&f).unwrap().layout().l4();
    f[l4 + 6..l4 + 8].fill(0);
    assert!(!Datagram::parse(&f).unwrap().verify_udp_checksum(k));

    // IPv4: zero means none and is accepted.
    let mut spec = v4_request();
    spec.no_udp_checksum = true;
    let f = make(&spec);
    assert!(Datagram::parse(&f).unwrap().verify_udp_checksum(k));
}

#[test]
fn build_refuses_mixed_families_and_oversize() {
    let route = Route {
        local_mac: Address([2, 0, 0, 0, 0, 1]),
        peer_mac: Address([2, 0, 0, 0, 0, 2]),
        vlan: Some(Vlan::with_id(7)),
        local: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7777)),
        peer: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 1, 0, 0)),
        dscp: 46,
    };
    let mut buf = [0u8; 200];
    let k = Kernel::detect();
    assert_eq!(
        datagram::build(&mut buf, &route, 10, k),
        Err(BuildError::FamilyMismatch)
    );
    let route = Route {
        peer: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5)),
        ..route
    };
    assert_eq!(route.header_len(), 18 + 20 + 8);
    assert_eq!(
        datagram::build(&mut buf, &route, 155, k),
        Err(BuildError::PayloadTooLong { len: 155, max: 154 })
    );
    let n = datagram::build(&mut buf, &route, 154, k).unwrap();
    assert_eq!(n, 200);
    let d = Datagram::parse(&buf).unwrap();
    assert_eq!(d.vlan(), Some(Vlan::with_id(7)));
    assert_eq!(d.dscp(), 46);
    assert!(checksums_ok(&buf, &d));
    // Atomic datagram: DF set, ID 0.
    assert_eq!(&buf[18 + 4..18 + 8], &[0, 0, 0x40, 0]);
}

#[test]
fn lengths_cap_at_the_16_bit_fields() {
    let wire = make(&v4_request());
    let layout = Datagram::parse(&wire).unwrap().layout();
    let mut big = vec![0u8; 70_000];
    big[..wire.len()].copy_from_slice(&wire);
    let max = layout.max_payload(big.len());
    assert_eq!(max, 65_535 - 20 - 8);
    assert_eq!(datagram::payload_capacity_mut(&mut big, &layout).len(), max);
    let n = datagram::reply_in_place(&mut big, &layout, max, Kernel::detect()).unwrap();
    let d = Datagram::parse(&big[..n]).unwrap();
    assert_eq!(d.payload().len(), max);
    assert!(checksums_ok(&big[..n], &d));
}
