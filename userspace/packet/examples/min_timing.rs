//! Per-call times as the minimum over many rounds, for a machine too busy for criterion's
//! medians to mean much: a round that another process did not interrupt shows the cost
//! of the code itself. Not a replacement for `cargo bench`, a cross-check of it.
//!
//! `cargo run --release -p xrudp-packet --example min_timing [rounds]`

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::Instant;

use xrudp_packet::datagram::{self, Route};
use xrudp_packet::ethernet::Address;
use xrudp_packet::{Datagram, Kernel, Level, crc};

/// Calls per timed round.
const CALLS: u32 = 1000;

/// Nanoseconds per call: the fastest of `rounds` rounds of `CALLS` calls.
fn min_ns(rounds: u32, mut f: impl FnMut()) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..CALLS {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS));
    }
    best
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + 17) as u8).collect()
}

fn gbps(bytes: usize, ns: f64) -> f64 {
    f64::from(u32::try_from(bytes).unwrap_or(u32::MAX)) / ns
}

fn main() {
    let rounds = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let kernels: Vec<Kernel> = Level::ALL.into_iter().filter_map(Kernel::forced).collect();
    println!("min of {rounds} rounds x {CALLS} calls; GB/s = bytes / ns");

    println!("\nInternet checksum");
    for size in [64usize, 512, 1500] {
        let d = data(size);
        print!("{size:>5} B:");
        for k in &kernels {
            let ns = min_ns(rounds, || {
                black_box(k.checksum(black_box(&d)));
            });
            print!("  {} {ns:.2} ns {:.1} GB/s", k.level(), gbps(size, ns));
        }
        let ns = min_ns(rounds, || {
            black_box(internet_checksum::checksum(black_box(&d)));
        });
        println!("  internet-checksum {ns:.2} ns {:.1} GB/s", gbps(size, ns));
    }

    println!("\nCRC32C");
    for size in [64usize, 512, 1500] {
        let d = data(size);
        let ours = min_ns(rounds, || {
            black_box(crc::rudp_crc(black_box(&d)));
        });
        let plain = min_ns(rounds, || {
            black_box(crc32c::crc32c(black_box(&d)));
        });
        println!(
            "{size:>5} B:  rudp_crc {ours:.2} ns {:.1} GB/s  crc32c one call {plain:.2} ns {:.1} GB/s",
            gbps(size, ours),
            gbps(size, plain)
        );
    }

    println!("\nparse + verify + reply_in_place (frame bytes)");
    for v6 in [false, true] {
        for payload in [64usize, 1200] {
            let (mut buf, n) = request(v6, payload);
            print!(
                "{} {payload:>4} B payload, {n} B frame:",
                if v6 { "ipv6" } else { "ipv4" }
            );
            for k in &kernels {
                let ns = min_ns(rounds, || {
                    let d = Datagram::parse(black_box(&buf[..n])).expect("valid");
                    assert!(d.verify_udp_checksum(*k));
                    let layout = d.layout();
                    let len = layout.payload_len();
                    black_box(datagram::reply_in_place(&mut buf, &layout, len, *k).expect("reply"));
                });
                print!("  {} {ns:.1} ns", k.level());
            }
            println!();
        }
    }
}

/// A client's request frame with `payload` bytes in a 2048-byte buffer.
fn request(v6: bool, payload: usize) -> (Vec<u8>, usize) {
    let (local, peer) = if v6 {
        let ip = |last| Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, last);
        (
            SocketAddr::V6(SocketAddrV6::new(ip(2), 40000, 0, 0)),
            SocketAddr::V6(SocketAddrV6::new(ip(1), 7777, 0, 0)),
        )
    } else {
        (
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000)),
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 7777)),
        )
    };
    let route = Route {
        local_mac: Address([2, 0, 0, 0, 0, 2]),
        peer_mac: Address([2, 0, 0, 0, 0, 1]),
        vlan: None,
        local,
        peer,
        dscp: 0,
    };
    let mut buf = vec![0u8; 2048];
    route.payload_mut(&mut buf)[..payload].copy_from_slice(&data(payload));
    let n = datagram::build(&mut buf, &route, payload, Kernel::detect()).expect("fits");
    (buf, n)
}
