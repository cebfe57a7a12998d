//! Any bytes as a received frame: parsing never panics, agrees with the XDP classifier,
//! and an accepted frame's reply parses back with right checksums and the same payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrudp_common::steer::{self, Located};
use xrudp_packet::{Datagram, Kernel, Level, ParseError, datagram};

fuzz_target!(|frame: &[u8]| {
    let located = steer::locate(frame, |_| true);
    let Ok(d) = Datagram::parse(frame) else {
        if let Located::Udp(_) = located {
            // Only the checks the XDP program leaves to userspace may refuse a steered frame.
            assert!(matches!(
                Datagram::parse(frame),
                Err(ParseError::Ipv4Checksum | ParseError::IpVersion { .. })
            ));
        }
        return;
    };
    let Located::Udp(l) = located else {
        panic!("parse accepted a frame locate passes or drops: {located:?}");
    };
    assert_eq!(
        (l.l3, l.l4, l.ipv6),
        (d.layout().l3(), d.layout().l4(), d.layout().is_ipv6())
    );

    let kernels: Vec<Kernel> = Level::ALL.into_iter().filter_map(Kernel::forced).collect();
    let ok = d.verify_udp_checksum(Kernel::scalar());
    for k in &kernels {
        assert_eq!(d.verify_udp_checksum(*k), ok);
    }
    let _ = (d.src(), d.dst(), d.route(), d.vlan(), d.dscp());

    let payload = d.payload().to_vec();
    let layout = d.layout();
    let mut buf = [0u8; 2048];
    let Some(room) = buf.get_mut(..frame.len()) else {
        return;
    };
    room.copy_from_slice(frame);
    match datagram::reply_in_place(&mut buf, &layout, payload.len(), Kernel::detect()) {
        Ok(n) => {
            let r = Datagram::parse(&buf[..n]).expect("a reply parses");
            assert!(r.verify_udp_checksum(Kernel::scalar()));
            assert_eq!(r.payload(), &payload[..]);
            assert_eq!((r.src(), r.dst()), (d.dst(), d.src()));
        }
        Err(e) => assert!(!d.is_unicast(), "reply refused a unicast datagram: {e}"),
    }
});
