//! What admitting one client costs the server, per protection mode (issue 13: handshakes
//! per second per core; open mode pays X25519). Each sample: a fresh server and a batch of
//! clients taken (untimed) through Hello and Challenge; timed: the server handling each
//! client's `Response` — cookie check, the mode's key work, allocation, the sealed
//! `Welcome` — and writing the `Welcome`. Per element: one admission.
//!
//! `cargo bench -p xrudp-proto --bench handshake -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand_core::SeedableRng;
use xrudp_proto::session::{Encryption, Security};
use xrudp_proto::{Client, ClientConfig, Server, ServerConfig, TokenKey, token};

const BATCH: usize = 256;
const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 7777);
const KEY: TokenKey = TokenKey([5; 32]);

fn addr(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8)),
        40_000,
    )
}

fn server(mode: &str, now: Instant) -> Server {
    let encryption = match mode {
        "off" => Encryption::Off,
        "token" => Encryption::Token(KEY),
        _ => Encryption::Open {
            static_key: Some([9; 32]),
            allow_anonymous: true,
        },
    };
    let mut s = Server::new(
        ServerConfig {
            max_connections: BATCH,
            encryption,
            public_addr: Some(SERVER),
            ..ServerConfig::default()
        },
        1,
        now,
    )
    .expect("valid");
    s.set_unix_time(now, 1_000_000);
    s
}

fn security(mode: &str, i: usize, static_public: [u8; 32]) -> Security {
    match mode {
        "off" => Security::Off,
        "token" => {
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(i as u64);
            let params = token::TokenParams {
                client_id: i as u64,
                expires: 2_000_000,
                handshake_timeout: Duration::from_secs(10),
                addresses: vec![SERVER],
                user_data: vec![],
            };
            Security::Token(Box::new(
                token::issue(&KEY, &params, &mut rng).expect("issued"),
            ))
        }
        "pinned" => Security::Open {
            ephemeral: [(i % 251) as u8 + 1; 32],
            server_key: Some(static_public),
        },
        _ => Security::Open {
            ephemeral: [(i % 251) as u8 + 1; 32],
            server_key: None,
        },
    }
}

/// A server and the `Response` of each of `BATCH` clients to its challenge.
fn batch(mode: &str, now: Instant) -> (Server, Vec<Vec<u8>>) {
    let mut s = server(mode, now);
    let static_public = xrudp_proto::session::public_key(&[9; 32]);
    let mut buf = [0u8; 1500];
    let responses = (0..BATCH)
        .map(|i| {
            let mut c = Client::new(
                ClientConfig::default(),
                SERVER,
                i as u64,
                now,
                security(mode, i, static_public),
            )
            .expect("valid");
            let t = c.poll_transmit(now, &mut buf).expect("hello");
            s.handle_datagram(now, addr(i), &buf[..t.len]);
            let r = s.poll_transmit(now, &mut buf).expect("challenge");
            c.handle_datagram(now, SERVER, &buf[..r.len]);
            let t = c.poll_transmit(now, &mut buf).expect("response");
            buf[..t.len].to_vec()
        })
        .collect();
    (s, responses)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("handshake/admit");
    g.throughput(Throughput::Elements(1));
    for mode in ["off", "token", "anonymous", "pinned"] {
        g.bench_function(mode, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                let mut out = [0u8; 1500];
                while done < iters {
                    let now = Instant::now();
                    let (mut s, responses) = batch(mode, now);
                    let n = (iters - done).min(BATCH as u64) as usize;
                    let t0 = Instant::now();
                    for (i, r) in responses.iter().take(n).enumerate() {
                        s.handle_datagram(now, addr(i), r);
                        black_box(s.poll_transmit(now, &mut out).expect("welcome"));
                    }
                    total += t0.elapsed();
                    assert_eq!(s.connection_count(), n, "{mode}: every client admitted");
                    done += n as u64;
                }
                total
            });
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
