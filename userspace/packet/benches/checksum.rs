//! Throughput of each Internet checksum kernel beside the `internet-checksum` crate, of
//! the RUDP CRC32C, and of the per-packet path (parse + verify + reply in place), at the
//! packet sizes that matter: 64, 512 and 1500 bytes.
//!
//! `cargo bench -p xrudp-packet -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use xrudp_packet::datagram::{self, Route};
use xrudp_packet::ethernet::Address;
use xrudp_packet::{Datagram, Kernel, Level, crc};

const SIZES: [usize; 3] = [64, 512, 1500];

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 131 + 17) as u8).collect()
}

fn internet_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("internet_checksum");
    for size in SIZES {
        let d = data(size);
        g.throughput(Throughput::Bytes(size as u64));
        for level in Level::ALL {
            let Some(k) = Kernel::forced(level) else {
                eprintln!("{level} not available on this CPU: skipped");
                continue;
            };
            g.bench_with_input(BenchmarkId::new(level.name(), size), &d, |b, d| {
                b.iter(|| k.checksum(black_box(d)));
            });
        }
        g.bench_with_input(
            BenchmarkId::new("internet-checksum crate", size),
            &d,
            |b, d| {
                b.iter(|| internet_checksum::checksum(black_box(d)));
            },
        );
    }
    g.finish();
}

fn crc32c(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for size in SIZES {
        let d = data(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("rudp_crc", size), &d, |b, d| {
            b.iter(|| crc::rudp_crc(black_box(d)));
        });
        g.bench_with_input(
            BenchmarkId::new("crc32c crate, one call", size),
            &d,
            |b, d| {
                b.iter(|| ::crc32c::crc32c(black_box(d)));
            },
        );
    }
    g.finish();
}

/// A client's request frame with `payload` bytes, in a 2048-byte UMEM-like buffer.
fn request(v6: bool, payload: usize) -> (Vec<u8>, usize) {
    let (local, peer) = if v6 {
        (
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
                40000,
                0,
                0,
            )),
            SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
                7777,
                0,
                0,
            )),
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
    let body = data(payload);
    route.payload_mut(&mut buf)[..payload].copy_from_slice(&body);
    let n = datagram::build(&mut buf, &route, payload, Kernel::detect()).expect("fits");
    (buf, n)
}

fn per_packet(crit: &mut Criterion) {
    let mut group = crit.benchmark_group("parse_verify_reply");
    for (v6, family) in [(false, "ipv4"), (true, "ipv6")] {
        for payload in [64usize, 1200] {
            let (mut buf, n) = request(v6, payload);
            group.throughput(Throughput::Bytes(n as u64));
            for level in [Level::Avx2, Level::Scalar] {
                let Some(kernel) = Kernel::forced(level) else {
                    continue;
                };
                let id = BenchmarkId::new(format!("{family}/{level}"), payload);
                // Each reply is a valid request in the other direction, so the same buffer
                // keeps going round: parse, verify, answer.
                group.bench_function(id, |bencher| {
                    bencher.iter(|| {
                        let dgram = Datagram::parse(black_box(&buf[..n])).expect("valid");
                        assert!(dgram.verify_udp_checksum(kernel));
                        let layout = dgram.layout();
                        let len = layout.payload_len();
                        datagram::reply_in_place(&mut buf, &layout, len, kernel).expect("reply")
                    });
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, internet_checksum, crc32c, per_packet);
criterion_main!(benches);
