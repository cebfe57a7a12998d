//! The xrudp client over ordinary UDP sockets: portable (std and mio only; no aya, no
//! xsk-rs), no `unsafe`.
//!
//! It drives the sans-IO [`xrudp_proto::Client`] over `std::net`/`mio` UDP sockets, one
//! connected socket per connection, so the kernel filters out datagrams from anyone but the
//! server and reports ICMP port-unreachable as `ECONNREFUSED` (counted in [`IoStats`]).
//!
//! - [`Connection`]: one connection. Non-blocking ([`Connection::poll`]) or blocking
//!   ([`Connection::wait`], [`Connection::connect_blocking`]). For game clients and tests.
//! - [`Fleet`]: many connections driven by one thread through one `mio::Poll` and one timer
//!   heap, so a [`Fleet::drive`] call costs O(connections with work), not O(all). For load
//!   generators.
//!
//! With the non-default feature `loadgen` (for xrudp's load generator, not for games):
//! `bookkeeping`, what a thread driving many connections over its own I/O keeps per
//! connection (the same [`Fleet`] keeps), and `testing`, a loopback echo server.
//!
//! ```no_run
//! use std::time::Duration;
//! use xrudp_client::{ClientConfig, ClientEvent, Connection, Protection};
//!
//! let addr = "127.0.0.1:7777".parse().unwrap();
//! let mut conn = Connection::connect_blocking(addr, ClientConfig::default(), &Protection::default(), Duration::from_secs(5))?;
//! conn.send(0, b"hello")?;
//! loop {
//!     conn.wait(Duration::from_millis(50))?;
//!     while let Some(event) = conn.next_event() {
//!         match event {
//!             ClientEvent::Message { channel, data } => {
//!                 println!("channel {channel}: {} bytes", data.len());
//!                 conn.recycle(data);
//!             }
//!             ClientEvent::Disconnected { reason } => return Ok(println!("closed: {reason:?}")),
//!             ClientEvent::Draining { redirect } => println!("server going away; reconnect to {redirect:?}"),
//!             ClientEvent::Connected => {}
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "loadgen")]
pub mod bookkeeping;
#[cfg(not(feature = "loadgen"))]
#[expect(
    unreachable_pub,
    reason = "public to the load generator under `loadgen`; without it, Fleet's alone"
)]
mod bookkeeping;
mod connection;
mod error;
mod fleet;
mod sock;
mod sys;
#[cfg(any(test, feature = "loadgen"))]
pub mod testing;

mod protection;

pub use connection::{Connection, MAX_RECV_PER_POLL, POOL_PREFILL};
pub use error::ConnectError;
pub use fleet::{FLEET_POOL_PREFILL, Fleet, FleetId, FleetStats, RECV_BUDGET};
pub use protection::Protection;
pub use sock::{IoStats, RECV_BUFFER_LEN};
pub use xrudp_proto::token::PublicToken;
pub use xrudp_proto::{
    ChannelKind, ClientConfig, ClientEvent, ClientState, ConnStats, Counters, DisconnectReason,
    RejectReason, SendError,
};
