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
//! - [`bookkeeping`]: what a thread driving many connections keeps per connection (work
//!   pending, event queue, timer deadline, state counts, seeds): [`Fleet`]'s, and that of a
//!   load generator with its own I/O.
//!
//! ```no_run
//! use std::time::Duration;
//! use xrudp_client::{ClientConfig, ClientEvent, Connection};
//!
//! let addr = "127.0.0.1:7777".parse().unwrap();
//! let mut conn = Connection::connect_blocking(addr, ClientConfig::default(), None, Duration::from_secs(5))?;
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
//!             ClientEvent::Connected => {}
//!         }
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

pub mod bookkeeping;
mod connection;
mod error;
mod fleet;
mod sock;
#[doc(hidden)]
pub mod testing;

pub use connection::{Connection, MAX_RECV_PER_POLL, POOL_PREFILL};
pub use error::ConnectError;
pub use fleet::{FLEET_POOL_PREFILL, Fleet, FleetId, FleetStats, RECV_BUDGET};
pub use sock::{IoStats, RECV_BUFFER_LEN};
pub use xrudp_proto::{
    ChannelKind, ClientConfig, ClientEvent, ClientState, ConnStats, ConnectToken, Counters,
    DisconnectReason, RejectReason, SendError,
};
