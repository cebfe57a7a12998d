//! The `steer` target: the XDP program's classifier (`xrudp_common::steer`), built for
//! the host, on any frame, with any port set and the RUDP pre-filter on or off.
//!
//! Input: `[flags, port_hi, port_lo]` then the frame. `flags & 1` turns the pre-filter
//! on; `(flags >> 1) & 3` picks the steered set: every port, none, exactly `port`, or
//! every port at or above `port`.

use core::cell::Cell;

use xrudp_common::maps::Counter;
use xrudp_common::rudp;
use xrudp_common::steer::{self, Bytes, Located, Verdict};
use xrudp_common::wire::{
    ETH_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, UDP_LEN, VLAN_LEN,
};

/// Most reads one classification may make: the XDP program has no loops, so the count is
/// a small constant whatever the frame.
const MAX_READS: usize = 16;

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((head, frame)) = data.split_first_chunk::<3>() else {
        return;
    };
    let [flags, hi, lo] = *head;
    let filter = flags & 1 != 0;
    let port = u16::from_be_bytes([hi, lo]);
    let set = (flags >> 1) & 3;
    let steered = |p: u16| match set {
        0 => true,
        1 => false,
        2 => p == port,
        _ => p >= port,
    };

    let located = steer::locate(frame, steered);
    let verdict = steer::classify(frame, steered, filter);

    // The same classification through a reader that counts its reads, as the XDP program's
    // bounds-checked frame reader would make them.
    let counted = Counting {
        frame,
        reads: Cell::new(0),
    };
    assert_eq!(steer::classify(&counted, steered, filter), verdict);
    assert!(
        counted.reads.get() <= MAX_READS,
        "{} reads",
        counted.reads.get()
    );

    match (located, verdict) {
        (Located::Pass, Verdict::Pass) => {}
        (Located::Drop(a), Verdict::Drop(b)) => {
            assert_eq!(a, b);
            assert!(matches!(
                a,
                Counter::DropTruncated | Counter::DropBadUdpLength
            ));
            assert!(set != 1, "dropped a frame with no port steered");
            assert!(
                steered(dport_of(frame)),
                "dropped a frame for a port not steered"
            );
        }
        (Located::Udp(l), v) => {
            check_layout(frame, &l, steered);
            match v {
                Verdict::Steer => {
                    if filter {
                        check_rudp(frame, &l);
                    }
                }
                Verdict::Drop(c) => {
                    assert!(filter, "a located datagram dropped with the filter off");
                    assert!(matches!(
                        c,
                        Counter::DropShort
                            | Counter::DropBadMagic
                            | Counter::DropBadVersion
                            | Counter::DropBadType
                    ));
                    assert_eq!(steer::rudp_reject(frame, &l), Some(c));
                }
                Verdict::Pass => panic!("a located datagram passed"),
            }
        }
        (l, v) => panic!("locate {l:?} but classify {v:?}"),
    }
}

/// A steered datagram: the headers it claims lie inside the frame and say what `locate`
/// concluded.
fn check_layout(frame: &[u8], l: &steer::Layout, steered: impl Fn(u16) -> bool) {
    let ethertype = be16(frame, 12);
    if l.l3 == ETH_LEN + VLAN_LEN {
        assert_eq!(ethertype, ETHERTYPE_VLAN);
    } else {
        assert_eq!(l.l3, ETH_LEN);
    }
    let inner = be16(frame, l.l3 - 2);
    if l.ipv6 {
        assert_eq!(inner, ETHERTYPE_IPV6);
        assert_eq!(l.l4, l.l3 + 40);
        assert_eq!(frame[l.l3 + 6], 17, "IPv6 next header is UDP");
        let payload = usize::from(be16(frame, l.l3 + 4));
        assert!(l.udp_len <= payload && l.l4 + payload <= frame.len());
    } else {
        assert_eq!(inner, ETHERTYPE_IPV4);
        let vihl = frame[l.l3];
        assert_eq!(vihl >> 4, 4);
        let ihl = usize::from(vihl & 15) * 4;
        assert!(ihl >= 20);
        assert_eq!(l.l4, l.l3 + ihl);
        assert_eq!(frame[l.l3 + 9], 17, "IPv4 protocol is UDP");
        assert_eq!(be16(frame, l.l3 + 6) & 0x3fff, 0, "not a fragment");
        let total = usize::from(be16(frame, l.l3 + 2));
        assert!(total >= ihl + UDP_LEN && l.l3 + total <= frame.len());
        assert!(l.udp_len <= total - ihl);
    }
    assert!(l.udp_len >= UDP_LEN);
    assert!(
        l.l4 + l.udp_len <= frame.len(),
        "claimed UDP length past the frame"
    );
    assert_eq!(usize::from(be16(frame, l.l4 + 4)), l.udp_len);
    assert!(steered(be16(frame, l.l4 + 2)));
}

/// With the pre-filter on, a steered datagram starts with a plausible RUDP header.
fn check_rudp(frame: &[u8], l: &steer::Layout) {
    assert!(l.udp_len >= UDP_LEN + rudp::HEADER_LEN);
    let p = l.l4 + UDP_LEN;
    let h = &frame[p..p + rudp::HEADER_LEN];
    assert_eq!(rudp::check_prefix([h[0], h[1]], h[2], h[3]), Ok(()));
}

/// The destination port of a frame `locate` got far enough into to drop.
fn dport_of(frame: &[u8]) -> u16 {
    let mut l3 = ETH_LEN;
    if be16(frame, 12) == ETHERTYPE_VLAN {
        l3 += VLAN_LEN;
    }
    let l4 = if be16(frame, l3 - 2) == ETHERTYPE_IPV6 {
        l3 + 40
    } else {
        l3 + usize::from(frame[l3] & 15) * 4
    };
    be16(frame, l4 + 2)
}

fn be16(frame: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([frame[off], frame[off + 1]])
}

/// A frame reader that counts reads (the XDP program's reader is the same shape: every
/// read checked against the frame end).
struct Counting<'a> {
    frame: &'a [u8],
    reads: Cell<usize>,
}

impl Bytes for Counting<'_> {
    fn len(&self) -> usize {
        self.frame.len()
    }

    fn u8_at(&self, off: usize) -> Option<u8> {
        self.reads.set(self.reads.get() + 1);
        self.frame.u8_at(off)
    }

    fn be16_at(&self, off: usize) -> Option<u16> {
        self.reads.set(self.reads.get() + 1);
        self.frame.be16_at(off)
    }
}

/// Frames the target's seeds start from, built by hand: (name, input bytes).
#[must_use]
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let rudp = {
        let mut p = Vec::from(*b"XR");
        p.extend([rudp::VERSION, 6, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0xAA]);
        p
    };
    let mut out = Vec::new();
    for (name, vlan, v6, payload, flags) in [
        ("ipv4_rudp_filter", false, false, &rudp[..], 0b001),
        ("vlan_ipv4_rudp_port", true, false, &rudp[..], 0b101),
        ("ipv6_rudp_filter", false, true, &rudp[..], 0b001),
        (
            "ipv4_junk_filter",
            false,
            false,
            &b"junk junk junk"[..],
            0b001,
        ),
        ("vlan_ipv6_junk_nofilter", true, true, &b"junk"[..], 0b110),
    ] {
        let mut input = vec![flags, 0x1e, 0x61]; // port 7777
        input.extend(udp_frame(vlan, v6, 7777, payload));
        out.push((name.to_string(), input));
    }
    // An ARP frame and a truncated IPv4 header.
    let mut arp = vec![0, 0x1e, 0x61];
    arp.extend([0xff; 12]);
    arp.extend([0x08, 0x06]);
    arp.extend([0; 28]);
    out.push(("arp".into(), arp));
    let mut short = vec![1, 0x1e, 0x61];
    short.extend(&udp_frame(false, false, 7777, &rudp)[..30]);
    out.push(("ipv4_truncated".into(), short));
    out
}

/// An Ethernet frame carrying a UDP datagram to `dport` (checksums left zero: the
/// classifier does not read them).
#[must_use]
pub fn udp_frame(vlan: bool, v6: bool, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    if vlan {
        f.extend(ETHERTYPE_VLAN.to_be_bytes());
        f.extend([0, 5]);
    }
    let udp_len = (UDP_LEN + payload.len()) as u16;
    if v6 {
        f.extend(ETHERTYPE_IPV6.to_be_bytes());
        f.extend([0x60, 0, 0, 0]);
        f.extend(udp_len.to_be_bytes());
        f.extend([17, 64]);
        f.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        f.extend(ETHERTYPE_IPV4.to_be_bytes());
        f.extend([0x45, 0]);
        f.extend((udp_len + 20).to_be_bytes());
        f.extend([0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    }
    f.extend(40000u16.to_be_bytes());
    f.extend(dport.to_be_bytes());
    f.extend(udp_len.to_be_bytes());
    f.extend([0, 0]);
    f.extend(payload);
    f
}
