//! The userspace I/O layer of xrudp: AF_XDP sockets and the batched UDP syscalls both
//! loops use — the engine's workers and the load generator (`xrudp-bench`) alike.
//!
//! - [`xsk`]: one UMEM with its fill/completion/RX/TX rings and frame pool per socket,
//!   and the one implementation of socket open — the zero-copy → copy fallback, the
//!   SKB ⇒ copy-mode rule and the EBUSY bind retry ([`xsk::Xsk::bind`]);
//! - [`ring`]: the frame logic, written once against a seam so it also runs on plain
//!   memory and under miri;
//! - [`mmsg`]: `recvmmsg`/`sendmmsg` batches on kernel UDP sockets; [`epoll`]: waiting on
//!   thousands of them at once;
//! - [`os`]: the effective uid and `SCHED_IDLE`.
//!
//! With the engine's `sys` module this is the only userspace crate with `unsafe`: every
//! block says what it relies on (`// SAFETY:`), every unsafe fn its contract (`# Safety`).
//! It needs no eBPF toolchain: the XDP program that redirects into these sockets is the
//! engine's.

pub mod epoll;
pub mod mmsg;
pub mod os;
pub mod ring;
pub mod xsk;
