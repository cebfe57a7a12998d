//! Crafted Ethernet frames and the table of steering cases, shared by the host-side
//! classifier test and the BPF_PROG_TEST_RUN test, so both judge the same frames.

use xrudp_common::{
    maps::Counter,
    rudp::{self, PacketType},
};

/// The steered port in the table.
pub const PORT: u16 = 7777;

/// What the classifier must decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Redirect to the AF_XDP socket.
    Steer,
    /// Hand to the kernel.
    Pass,
    /// Drop, counting this reason.
    Drop(Counter),
}

/// One row of the table.
#[derive(Debug)]
pub struct Case {
    /// What the frame is.
    pub name: &'static str,
    /// The frame.
    pub frame: Vec<u8>,
    /// The RUDP pre-filter setting for this row.
    pub rudp_filter: bool,
    /// The expected verdict.
    pub expect: Expect,
}

/// A valid RUDP v1 datagram body of `extra` bytes after the header.
#[must_use]
pub fn rudp_payload(kind: PacketType, extra: usize) -> Vec<u8> {
    let mut p = vec![0u8; rudp::HEADER_LEN + extra];
    rudp::write_header(&mut p, kind, 42).expect("buffer fits the header");
    p
}

/// Builder for Ethernet / optional VLAN tag / IPv4|IPv6 / UDP|other frames.
#[derive(Clone, Debug)]
pub struct FrameSpec {
    /// One 802.1Q tag with this VLAN id.
    pub vlan: Option<u16>,
    /// IPv6 instead of IPv4.
    pub ipv6: bool,
    /// IPv4 options bytes (multiple of 4).
    pub ip_options: usize,
    /// IP protocol / next header.
    pub proto: u8,
    /// IPv4 flags+fragment offset field.
    pub frag: u16,
    /// UDP destination port.
    pub dport: u16,
    /// L4 payload (after the UDP header when proto is UDP).
    pub payload: Vec<u8>,
    /// Overrides the UDP length field.
    pub udp_len: Option<u16>,
    /// Overrides the IP length field (IPv4 total / IPv6 payload).
    pub ip_len: Option<u16>,
}

impl FrameSpec {
    /// A UDP datagram to `dport` carrying `payload`.
    #[must_use]
    pub fn udp(dport: u16, payload: Vec<u8>) -> Self {
        Self {
            vlan: None,
            ipv6: false,
            ip_options: 0,
            proto: 17,
            frag: 0,
            dport,
            payload,
            udp_len: None,
            ip_len: None,
        }
    }

    /// Builds the frame bytes.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        if let Some(id) = self.vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        }
        let l4_len = if self.proto == 17 {
            8 + self.payload.len()
        } else {
            self.payload.len()
        };
        if self.ipv6 {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&self.ip_len.unwrap_or(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[self.proto, 64]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        } else {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let ihl = 20 + self.ip_options;
            f.push(0x40 | (ihl / 4) as u8);
            f.push(0);
            f.extend_from_slice(&self.ip_len.unwrap_or((ihl + l4_len) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 1]);
            f.extend_from_slice(&self.frag.to_be_bytes());
            f.extend_from_slice(&[64, self.proto, 0, 0]);
            f.extend_from_slice(&[198, 18, 0, 2, 198, 18, 0, 1]);
            f.extend(std::iter::repeat_n(1u8, self.ip_options)); // NOP options
        }
        if self.proto == 17 {
            f.extend_from_slice(&40000u16.to_be_bytes());
            f.extend_from_slice(&self.dport.to_be_bytes());
            f.extend_from_slice(&self.udp_len.unwrap_or(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        }
        f.extend_from_slice(&self.payload);
        f
    }
}

fn case(name: &'static str, frame: Vec<u8>, expect: Expect) -> Case {
    Case {
        name,
        frame,
        rudp_filter: true,
        expect,
    }
}

/// The steering table.
#[must_use]
pub fn table() -> Vec<Case> {
    use Expect::{Drop, Pass, Steer};
    let data = || rudp_payload(PacketType::Data, 20);
    let udp = |p| FrameSpec::udp(PORT, p);
    let mut v = vec![
        case("ipv4 udp rudp data", udp(data()).build(), Steer),
        case(
            "ipv6 udp rudp data",
            FrameSpec {
                ipv6: true,
                ..udp(data())
            }
            .build(),
            Steer,
        ),
        case(
            "vlan ipv4 udp rudp data",
            FrameSpec {
                vlan: Some(5),
                ..udp(data())
            }
            .build(),
            Steer,
        ),
        case(
            "vlan ipv6 udp rudp data",
            FrameSpec {
                vlan: Some(5),
                ipv6: true,
                ..udp(data())
            }
            .build(),
            Steer,
        ),
        case(
            "ipv4 with options (ihl 8)",
            FrameSpec {
                ip_options: 12,
                ..udp(data())
            }
            .build(),
            Steer,
        ),
        case(
            "hello of a foreign version",
            {
                let mut p = rudp_payload(PacketType::Hello, 100);
                p[2] = 7;
                udp(p).build()
            },
            Steer,
        ),
        case(
            "ethernet padding after the datagram",
            {
                let mut f = udp(data()).build();
                f.extend_from_slice(&[0; 6]);
                f
            },
            Steer,
        ),
        case(
            "other udp port",
            FrameSpec::udp(PORT + 1, data()).build(),
            Pass,
        ),
        case(
            "arp",
            {
                let mut f = vec![0xff; 6];
                f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2, 0x08, 0x06]);
                f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
                f.extend_from_slice(&[0; 20]);
                f
            },
            Pass,
        ),
        case(
            "icmp echo",
            FrameSpec {
                proto: 1,
                payload: vec![8, 0, 0, 0, 0, 1, 0, 1],
                ..udp(vec![])
            }
            .build(),
            Pass,
        ),
        case(
            "tcp to the game port",
            FrameSpec {
                proto: 6,
                payload: {
                    let mut t = vec![0u8; 20];
                    t[2..4].copy_from_slice(&PORT.to_be_bytes());
                    t
                },
                ..udp(vec![])
            }
            .build(),
            Pass,
        ),
        case(
            "ipv4 first fragment (MF)",
            FrameSpec {
                frag: 0x2000,
                ..udp(data())
            }
            .build(),
            Pass,
        ),
        case(
            "ipv4 later fragment (offset)",
            FrameSpec {
                frag: 0x0010,
                ..udp(data())
            }
            .build(),
            Pass,
        ),
        case(
            "ipv6 fragment header",
            FrameSpec {
                ipv6: true,
                proto: 44,
                payload: vec![17, 0, 0, 1, 0, 0, 0, 1],
                ..udp(vec![])
            }
            .build(),
            Pass,
        ),
        case(
            "qinq outer tag",
            {
                let mut f = FrameSpec {
                    vlan: Some(5),
                    ..udp(data())
                }
                .build();
                f[12..14].copy_from_slice(&0x88a8u16.to_be_bytes());
                f
            },
            Pass,
        ),
        case(
            "ipv4 header truncated",
            udp(data()).build()[..30].to_vec(),
            Pass,
        ),
        case(
            "udp header cut after the ports",
            udp(data()).build()[..38].to_vec(),
            Drop(Counter::DropTruncated),
        ),
        case(
            "ipv4 total length beyond the frame",
            FrameSpec {
                ip_len: Some(1000),
                ..udp(data())
            }
            .build(),
            Drop(Counter::DropTruncated),
        ),
        case(
            "ipv4 total length below ihl",
            FrameSpec {
                ip_len: Some(10),
                ..udp(data())
            }
            .build(),
            Drop(Counter::DropTruncated),
        ),
        case(
            "ipv6 payload length beyond the frame",
            FrameSpec {
                ipv6: true,
                ip_len: Some(900),
                ..udp(data())
            }
            .build(),
            Drop(Counter::DropTruncated),
        ),
        case(
            "udp length beyond the ip payload",
            FrameSpec {
                udp_len: Some(500),
                ..udp(data())
            }
            .build(),
            Drop(Counter::DropBadUdpLength),
        ),
        case(
            "udp length below 8",
            FrameSpec {
                udp_len: Some(4),
                ..udp(data())
            }
            .build(),
            Drop(Counter::DropBadUdpLength),
        ),
        case(
            "payload shorter than the rudp header",
            udp(vec![b'X', b'R', 1, 6, 0]).build(),
            Drop(Counter::DropShort),
        ),
        case(
            "empty udp payload",
            udp(vec![]).build(),
            Drop(Counter::DropShort),
        ),
        case(
            "bad magic",
            {
                let mut p = data();
                p[0] = b'Q';
                udp(p).build()
            },
            Drop(Counter::DropBadMagic),
        ),
        case(
            "bad version",
            {
                let mut p = data();
                p[2] = 2;
                udp(p).build()
            },
            Drop(Counter::DropBadVersion),
        ),
        case(
            "type zero",
            {
                let mut p = data();
                p[3] = 0;
                udp(p).build()
            },
            Drop(Counter::DropBadType),
        ),
        case(
            "type beyond the last",
            {
                let mut p = data();
                p[3] = PacketType::MAX + 1;
                udp(p).build()
            },
            Drop(Counter::DropBadType),
        ),
    ];
    // With the pre-filter off (raw UDP apps), anything well-formed to the port is steered,
    // while length lies are still dropped.
    v.push(Case {
        name: "filter off: junk payload",
        frame: udp(b"not rudp at all".to_vec()).build(),
        rudp_filter: false,
        expect: Steer,
    });
    v.push(Case {
        name: "filter off: empty payload",
        frame: udp(vec![]).build(),
        rudp_filter: false,
        expect: Steer,
    });
    v.push(Case {
        name: "filter off: udp length lies",
        frame: FrameSpec {
            udp_len: Some(500),
            ..udp(data())
        }
        .build(),
        rudp_filter: false,
        expect: Drop(Counter::DropBadUdpLength),
    });
    v
}
