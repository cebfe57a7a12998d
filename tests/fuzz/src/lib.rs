//! The harnesses behind xrudp's fuzz targets (`fuzz_targets/*.rs` are one-line wrappers).
//!
//! They live in a library so that `cargo test` replays every committed seed through the
//! very code the fuzzer runs, and so that the seed writer (`seeds`) can record real
//! exchanges in the targets' input format ([`ops`]).
#![deny(unsafe_code)]

pub mod client;
pub mod decode;
pub mod ops;
pub mod protected;
pub mod reassembly;
pub mod seeds;
pub mod server;
pub mod steer;
pub mod token;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use xrudp_proto::{ClientConfig, ServerConfig, Transport};

/// The seed both endpoints' RNGs start from: the same input replays the same exchange
/// (cookies, nonces, sequence numbers), so recorded seeds stay valid.
pub const SERVER_SEED: u64 = 0x5eed_0001;

/// The client's RNG seed.
pub const CLIENT_SEED: u64 = 0x5eed_0002;

/// Addresses a target's ops refer to by index (taken modulo the table's length): three
/// IPv4 peers and one IPv6 peer. For the client target, index 0 is the server.
#[must_use]
pub fn addrs() -> [SocketAddr; 4] {
    [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)), 4001),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)), 4002),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)), 4003),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9)), 4004),
    ]
}

/// Index of an address in [`addrs`].
#[must_use]
pub fn addr_index(addr: SocketAddr) -> Option<usize> {
    addrs().iter().position(|a| *a == addr)
}

/// Transport settings of every target: small buffers, so that limits are reached within
/// a short input.
#[must_use]
pub fn transport() -> Transport {
    Transport {
        send_buffer: 64 * 1024,
        recv_buffer: 64 * 1024,
        max_message_size: 16 * 1024,
        ..Transport::default()
    }
}

/// Server settings of every target: two slots, so that a full server is reachable.
#[must_use]
pub fn server_config() -> ServerConfig {
    ServerConfig {
        transport: transport(),
        max_connections: 2,
        idle_timeout: Duration::from_secs(10),
        keepalive: Duration::from_secs(1),
        // The sequence targets write clear `Data` packets to reach deep protocol state;
        // packet protection has its own target (`token`) and known-answer tests.
        encryption: xrudp_proto::session::Encryption::Off,
        ..ServerConfig::default()
    }
}

/// Client settings of every target.
#[must_use]
pub fn client_config() -> ClientConfig {
    ClientConfig {
        transport: transport(),
        ..ClientConfig::default()
    }
}

/// An upper bound on the bytes an endpoint with one connection may hold with
/// [`transport`]'s buffers: both buffers several times over (capacities round up), plus
/// fixed tables. Exceeding it means state grows with input rather than with configuration.
#[must_use]
pub fn memory_bound_per_connection() -> usize {
    let t = transport();
    4 * (t.send_buffer + t.recv_buffer) + 256 * 1024
}

/// A deterministic message body: `[id u32][len u32]` then bytes derived from both, so a
/// receiver can check that a message arrived whole and unaltered.
#[must_use]
pub fn message(id: u32, len: usize) -> Vec<u8> {
    let len = len.max(8);
    let mut m = Vec::with_capacity(len);
    m.extend(id.to_le_bytes());
    m.extend((len as u32).to_le_bytes());
    m.extend((8..len).map(|i| (id as usize * 31 + i * 7) as u8));
    m
}

/// The id of a message built by [`message`] if it is intact.
#[must_use]
pub fn check_message(m: &[u8]) -> Option<u32> {
    let id = u32::from_le_bytes(m.get(..4)?.try_into().ok()?);
    let len = u32::from_le_bytes(m.get(4..8)?.try_into().ok()?) as usize;
    (m.len() == len && message(id, len) == m).then_some(id)
}
