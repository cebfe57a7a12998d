//! Why a blocking connect failed.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use xrudp_proto::{DisconnectReason, RejectReason};

/// Why [`crate::Connection::connect_blocking`] returned without a connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The socket could not be opened or used, or the configuration was refused
    /// (`InvalidInput`, with the [`xrudp_proto::ConfigError`] as its message).
    #[error("connecting to {server}: {source}")]
    Io {
        /// The server.
        server: SocketAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The server answered and refused to admit this client.
    #[error("server {server} refused the connection: {}", reject_advice(*.reason))]
    Rejected {
        /// The server.
        server: SocketAddr,
        /// Its reason.
        reason: RejectReason,
    },
    /// No welcome before the deadline.
    #[error(
        "no answer from {server} within {waited:.1?}{}",
        if *.refused > 0 {
            format!(" ({} ICMP port-unreachable reports: nothing listens on that port)", .refused)
        } else {
            "; check that the server runs, the address and port are right, and UDP gets through".to_owned()
        }
    )]
    TimedOut {
        /// The server.
        server: SocketAddr,
        /// How long the client tried.
        waited: Duration,
        /// `ECONNREFUSED` reports seen meanwhile.
        refused: u64,
    },
    /// The server speaks none of this client's protocol versions.
    #[error(
        "server {server} speaks a different xrudp protocol version; use a client and server of the same release"
    )]
    VersionMismatch {
        /// The server.
        server: SocketAddr,
    },
    /// The connection ended right after it opened, or for another reason during the handshake.
    #[error("connection to {server} ended during the handshake: {reason:?}")]
    Closed {
        /// The server.
        server: SocketAddr,
        /// Why.
        reason: DisconnectReason,
    },
}

fn reject_advice(reason: RejectReason) -> &'static str {
    match reason {
        RejectReason::ServerFull => "server full (every connection slot is taken); retry later",
        RejectReason::TokenRequired => {
            "this server requires a connect token; get one from the game backend"
        }
        RejectReason::TokenInvalid => {
            "the connect token is malformed or was not signed with this server's key"
        }
        RejectReason::TokenExpired => {
            "the connect token has expired (or the server's clock is unset); get a fresh one"
        }
        RejectReason::TokenReused => {
            "the connect token is in use from another address; the backend issues one per client"
        }
        RejectReason::SecurityMismatch => {
            "the server does not accept this encryption mode (it may run with --encryption \
             off, require connect tokens, or refuse unpinned clients); match its settings"
        }
    }
}
