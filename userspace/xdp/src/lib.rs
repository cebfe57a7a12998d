//! The AF_XDP layer of xrudp, shared by the engine and the load generator: one UMEM with
//! its fill/completion/RX/TX rings and frame pool per socket ([`xsk`]), the frame logic
//! written once against a seam so it also runs on plain memory and under miri
//! ([`ring`]), and the one implementation of socket open — the zero-copy → copy
//! fallback, the SKB ⇒ copy-mode rule and the EBUSY bind retry ([`xsk::Xsk::bind`]).
//!
//! With the engine's `sys` module this is the only userspace crate with `unsafe`: every
//! block says what it relies on (`// SAFETY:`), every unsafe fn its contract (`# Safety`).
//! It needs no eBPF toolchain: the XDP program that redirects into these sockets is the
//! engine's.

pub mod ring;
pub mod xsk;
