//! A C ABI over [`xrudp_client::Connection`], for game engines written in C, C++ or C#
//! (docs/CLIENTS.md). The header, `include/xrudp.h`, is generated from this crate by
//! cbindgen and checked against it by `tests/header.rs`.
//!
//! The rules every entry point keeps:
//! - Opaque handles: a connection is a non-zero `uint64_t` from a handle table (slot and
//!   generation), never a pointer, so a freed, stale or forged handle is refused with
//!   [`Status::InvalidHandle`] instead of touching freed memory.
//! - A poll model: the caller's thread does all work inside `xrudp_poll`/`xrudp_wait` and
//!   takes events with `xrudp_next_event`. No callbacks cross the boundary and the
//!   library starts no thread.
//! - Every pointer is null-checked, no panic unwinds into the caller
//!   ([`std::panic::catch_unwind`]), and every failure is a [`Status`] that
//!   `xrudp_status_text` turns into text.
//! - The caller owns every buffer it passes; the library reads or writes it only during
//!   the call and keeps no pointer to it.
//!
//! All `unsafe` lives in [`abi`]: the `extern "C"` functions and their pointer accesses.
//! [`table`] and [`status`] are safe Rust and tested as such.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[expect(
    unsafe_code,
    reason = "the C ABI: #[no_mangle] entry points that read and write caller memory"
)]
pub mod abi;
pub mod status;
pub mod table;

pub use status::Status;
