//! Zero-copy wire views and SIMD checksums for the xrudp `AF_XDP` engine.
//!
//! Every received frame goes through [`Datagram::parse`] (Ethernet, one optional 802.1Q
//! tag, IPv4 or IPv6, UDP: every length checked, nothing copied), then
//! [`Datagram::verify_udp_checksum`]; the reply is built in the same buffer by
//! [`datagram::reply_in_place`]. Packets the server originates toward a remembered
//! [`Route`] are written by [`datagram::build`].
//!
//! - [`ethernet`], [`ipv4`], [`ipv6`], [`udp`]: smoltcp-style views — `Packet<T:
//!   AsRef<[u8]>>`, `new_checked` checks lengths once, after which no accessor panics;
//!   setters on `T: AsMut<[u8]>`; a `Repr` to write a header;
//! - [`checksum`]: the RFC 1071 Internet checksum with AVX2 / SSE4.1 / scalar kernels
//!   chosen once ([`Kernel::detect`]), pseudo-headers, RFC 1624 incremental updates;
//! - [`crc`]: CRC32C of a RUDP datagram ([`crc::rudp_seal`], [`crc::rudp_verify`]).
//!
//! Offsets and constants come from [`xrudp_common::wire`], the same ones the XDP program
//! uses. Nothing allocates. The only `unsafe` code is in [`checksum`].
#![deny(unsafe_code)]

// Only the x86-64 kernels need unsafe; elsewhere the module is plain safe code.
#[cfg_attr(
    target_arch = "x86_64",
    expect(
        unsafe_code,
        reason = "SIMD kernels: unaligned vector loads and calls into #[target_feature] fns"
    )
)]
pub mod checksum;
pub mod crc;
pub mod datagram;
pub mod error;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

pub use checksum::{Kernel, Level};
pub use datagram::{Datagram, Layout, Route};
pub use error::{BuildError, Layer, ParseError, ReplyError};
