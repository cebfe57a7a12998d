//! Definitions shared by the xrudp XDP program (`ebpf/`) and userspace.
//!
//! Everything here is `#![no_std]` and allocation-free, so the same code runs in the
//! kernel's BPF VM, in the engine, in the portable protocol core and in fuzz targets:
//!
//! - [`rudp`]: the fixed RUDP packet header (magic, version, type, CRC, connection id),
//!   the one definition both the XDP pre-filter and the protocol core use;
//! - [`wire`]: Ethernet / 802.1Q / IPv4 / IPv6 / UDP offsets and constants;
//! - [`steer`]: the classifier the XDP program runs on every frame, written once over a
//!   [`steer::Bytes`] trait so the host can test and fuzz the very same logic;
//! - [`maps`]: BPF map names and the `#[repr(C)]` types stored in them;
//! - [`admit`]: admission control's session key and value, source key and token bucket.
#![no_std]
#![deny(unsafe_code)]

pub mod admit;
pub mod maps;
pub mod rudp;
pub mod steer;
pub mod wire;
