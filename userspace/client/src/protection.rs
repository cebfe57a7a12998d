//! How a client protects its session (docs/PROTOCOL.md §13), with the ephemeral key drawn
//! from the operating system.

use std::io;

use xrudp_proto::session::Security;
use xrudp_proto::token::PublicToken;

use crate::sock;

/// How the session gets its keys. The default, [`Protection::Open`] without a pinned key,
/// encrypts every packet but does not authenticate the server; pin its public key
/// (`xrudp attach` prints it) to do both.
#[derive(Clone, Debug)]
pub enum Protection {
    /// An X25519 exchange with the server (docs/PROTOCOL.md §13.1, modes `Anonymous` and
    /// `Pinned`).
    Open {
        /// The server's static public key: set, only that server can complete the
        /// handshake.
        server_key: Option<[u8; 32]>,
    },
    /// A connect token from the game's backend (mode `Token`).
    Token(Box<PublicToken>),
    /// No encryption (mode `Off`): only servers run with `--encryption off` accept it.
    Off,
}

impl Protection {
    /// Anonymous open mode (the default).
    #[must_use]
    pub fn anonymous() -> Self {
        Self::Open { server_key: None }
    }

    /// Open mode with the server's public key pinned.
    #[must_use]
    pub fn pinned(server_key: [u8; 32]) -> Self {
        Self::Open {
            server_key: Some(server_key),
        }
    }

    /// The protocol core's setting, with a fresh ephemeral key from the OS.
    pub(crate) fn security(&self) -> io::Result<Security> {
        Ok(match self {
            Self::Open { server_key } => Security::Open {
                ephemeral: sock::os_key()?,
                server_key: *server_key,
            },
            Self::Token(t) => Security::Token(t.clone()),
            Self::Off => Security::Off,
        })
    }
}

impl Default for Protection {
    fn default() -> Self {
        Self::anonymous()
    }
}
