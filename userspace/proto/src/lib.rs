//! xrudp's reliable-UDP protocol core: sans-IO, portable, no `unsafe`.
//!
//! It reads no clock, socket or unseeded RNG: a [`Server`] (one per worker) and a
//! [`Client`] are driven with `handle_datagram` / `handle_timeout` and polled with
//! `poll_transmit` / `poll_event` / `poll_timeout`, with the time passed in. The wire
//! format, state machine, timers and constants are specified in `docs/PROTOCOL.md`.
//!
//! The endpoints and their configuration, events and errors are re-exported here; the
//! connection, server, client, config and stats modules are private. A few modules stay
//! public as namespaces, because what they hold is used by name from outside:
//! - [`packet`]: the codec (fixed header from `xrudp-common`, CRC32C, frames), for the
//!   engine, the fuzz targets and hostile-peer tests that write raw datagrams.
//! - [`handshake`]: stateless cookies and handshake packets.
//! - [`crypto`], [`session`], [`token`]: session protection (docs/PROTOCOL.md §13) — the
//!   AES-256-GCM packet keys and HKDF key schedule; the protection modes, the X25519
//!   exchange and the sealed `Welcome`; connect tokens (issued by a game backend).
//! - [`congestion`], [`rtt`], [`pacing`]: the controllers, the RTT estimator and the pacer,
//!   tested on their own.
//! - [`timer`]: the server's timing wheel (O(1) per connection timer change), benched.
//! - [`pool`]: the buffer pool behind [`Server::pool`] and its size classes.
//! - `sim` (feature `testing`): a deterministic simulated network and the `Pair` test
//!   harness.
//! - `echo` (feature `testing`): an in-memory echo server and client pair, for
//!   per-message benches and allocation counts.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod config;
pub mod congestion;
mod conn;
pub mod crypto;
#[cfg(feature = "testing")]
pub mod echo;
pub mod handshake;
pub mod pacing;
pub mod packet;
pub mod pool;
pub mod rtt;
mod server;
pub mod session;
#[cfg(feature = "testing")]
pub mod sim;
mod stats;
pub mod timer;
pub mod token;

pub use client::{Client, ClientEvent, ClientState};
pub use config::{ChannelKind, ClientConfig, ConfigError, ServerConfig, Transport};
pub use congestion::Algorithm;
pub use conn::{DisconnectReason, SendError, Violation};
pub use handshake::{RejectReason, TokenKey};
pub use packet::DecodeError;
pub use server::{ConnHandle, ConnStats, Server, ServerEvent, SessionChange, Transmit, slot_bits};
pub use stats::{Counters, share};
