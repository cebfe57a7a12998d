//! xrudp's reliable-UDP protocol core: sans-IO, portable, no `unsafe`.
//!
//! It reads no clock, socket or unseeded RNG: a [`Server`] (one per worker) and a
//! [`Client`] are driven with `handle_datagram` / `handle_timeout` and polled with
//! `poll_transmit` / `poll_event` / `poll_timeout`, with the time passed in. The wire
//! format, state machine, timers and constants are specified in `docs/PROTOCOL.md`.
//!
//! - [`packet`]: the codec (fixed header from `xrudp-common`, CRC32C, frames).
//! - [`handshake`]: stateless cookies, connect tokens, handshake packets.
//! - [`conn`]: acks, channels, fragmentation, loss recovery, congestion, timers.
//! - [`server`] / [`client`]: the endpoints.
//! - [`congestion`], [`rtt`], [`pacing`]: the controllers, RTT estimator and pacer.
//! - [`timer`]: the server's timing wheel (O(1) per connection timer change).
//! - `sim` (feature `testing`): a deterministic simulated network and the `Pair` test
//!   harness.
//! - `echo` (feature `testing`): an in-memory echo server and client pair, for
//!   per-message benches and allocation counts.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod congestion;
pub mod conn;
#[cfg(feature = "testing")]
pub mod echo;
pub mod handshake;
pub mod pacing;
pub mod packet;
pub mod pool;
pub mod rtt;
pub mod server;
#[cfg(feature = "testing")]
pub mod sim;
pub mod stats;
pub mod timer;

pub use client::{Client, ClientEvent, ClientState};
pub use config::{ChannelKind, ClientConfig, ConfigError, ServerConfig, Transport};
pub use congestion::Algorithm;
pub use conn::{DisconnectReason, SendError, Violation};
pub use handshake::{ConnectToken, RejectReason, TokenKey};
pub use packet::DecodeError;
pub use server::{ConnHandle, ConnStats, Server, ServerEvent, Transmit};
pub use stats::Counters;
