//! Server and client configuration, with defaults and validation.

use std::time::Duration;

use crate::congestion::Algorithm;
use crate::packet::MAX_CHANNELS;
use crate::session::Encryption;

/// Delivery guarantee of a channel (docs/PROTOCOL.md §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChannelKind {
    /// Every message exactly once, in send order. Large messages are fragmented.
    ReliableOrdered = 1,
    /// Every message exactly once, in any order. Large messages are fragmented.
    ReliableUnordered = 2,
    /// At most once, any order; never retransmitted.
    Unreliable = 3,
    /// At most once; a message older than one already delivered is dropped.
    UnreliableSequenced = 4,
}

impl ChannelKind {
    /// Decodes a kind byte.
    #[must_use]
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::ReliableOrdered,
            2 => Self::ReliableUnordered,
            3 => Self::Unreliable,
            4 => Self::UnreliableSequenced,
            _ => return None,
        })
    }

    /// Whether messages are retransmitted until acknowledged.
    #[must_use]
    pub fn is_reliable(self) -> bool {
        matches!(self, Self::ReliableOrdered | Self::ReliableUnordered)
    }

    /// Whether MESSAGE frames of this kind carry a sequence number.
    #[must_use]
    pub fn has_seq(self) -> bool {
        self != Self::Unreliable
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The MTU is outside 1200..=1472.
    #[error(
        "mtu {0} is outside 1200..=1472 bytes of UDP payload; use 1200 unless the path is known to carry more"
    )]
    Mtu(usize),
    /// No channel, or more than 8.
    #[error("{0} channels configured; configure 1 to 8")]
    Channels(usize),
    /// `max_connections` is 0 or above 2^24.
    #[error("max_connections {0} must be in 1..=16777216")]
    MaxConnections(usize),
    /// A duration that must be positive is zero, or an ordering between durations is violated.
    #[error("{0}")]
    Timing(&'static str),
    /// Inconsistent session protection settings.
    #[error("{0}")]
    Security(&'static str),
    /// A buffer is too small for the largest message.
    #[error("{0}")]
    Buffers(&'static str),
}

/// Settings shared by both ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transport {
    /// Largest UDP payload sent, 1200..=1472 (default 1200). With `pmtud` on it is the
    /// ceiling of the path MTU search, which starts at 1200.
    pub mtu: usize,
    /// Path MTU discovery (docs/PROTOCOL.md §5.5): start at 1200 bytes and probe up to
    /// `mtu` with padded probes, falling back to 1200 on a black hole (default on; with
    /// `mtu` 1200 there is nothing to probe).
    pub pmtud: bool,
    /// How long after a search completed below `mtu` (or fell back to 1200) the path is
    /// probed again (RFC 8899 §5.1.1 `PMTU_RAISE_TIMER`; default 600 s).
    pub pmtu_raise_interval: Duration,
    /// Congestion controller (default: see docs/PROTOCOL.md §9).
    pub congestion: Algorithm,
    /// Floor of the retransmission timeout (default 50 ms; TCP's 1 s suits no game).
    pub min_rto: Duration,
    /// RTT assumed before the first sample (default 100 ms).
    pub initial_rtt: Duration,
    /// Longest an ack-only packet is held (default 5 ms).
    pub max_ack_delay: Duration,
    /// Bytes of reliable and unreliable data queued or unacknowledged, at most (default 1 MiB).
    pub send_buffer: usize,
    /// Bytes held for reordering, reassembly and undelivered events, at most (default 1 MiB).
    pub recv_buffer: usize,
    /// Largest message accepted for sending or receiving (default 256 KiB).
    pub max_message_size: usize,
    /// First packet number and channel sequence number; `None` draws it from the seeded RNG.
    /// Tests set it near 65535 to exercise wraparound.
    pub initial_seq: Option<u16>,
}

impl Default for Transport {
    fn default() -> Self {
        Self {
            mtu: 1200,
            pmtud: true,
            pmtu_raise_interval: Duration::from_secs(600),
            congestion: Algorithm::default(),
            min_rto: Duration::from_millis(50),
            initial_rtt: Duration::from_millis(100),
            max_ack_delay: Duration::from_millis(5),
            send_buffer: 1 << 20,
            recv_buffer: 1 << 20,
            max_message_size: 256 * 1024,
            initial_seq: None,
        }
    }
}

impl Transport {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1200..=1472).contains(&self.mtu) {
            return Err(ConfigError::Mtu(self.mtu));
        }
        if self.pmtu_raise_interval < Duration::from_secs(1) {
            return Err(ConfigError::Timing(
                "pmtu_raise_interval must be at least 1 s (RFC 8899 suggests 600 s)",
            ));
        }
        if self.min_rto.is_zero() || self.initial_rtt.is_zero() {
            return Err(ConfigError::Timing(
                "min_rto and initial_rtt must be positive",
            ));
        }
        if self.max_ack_delay > Duration::from_millis(500) {
            return Err(ConfigError::Timing(
                "max_ack_delay must be at most 500 ms (the ack delay field's range)",
            ));
        }
        if self.max_message_size == 0 || self.max_message_size > 64 * 1024 * 1024 {
            return Err(ConfigError::Buffers(
                "max_message_size must be in 1..=64 MiB",
            ));
        }
        if self.send_buffer < self.max_message_size || self.recv_buffer < self.max_message_size {
            return Err(ConfigError::Buffers(
                "send_buffer and recv_buffer must each hold at least max_message_size bytes",
            ));
        }
        Ok(())
    }
}

/// Configuration of a [`crate::Server`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Transport settings.
    pub transport: Transport,
    /// Connection slots, preallocated (default 1024).
    pub max_connections: usize,
    /// Channels, in index order; announced to clients (default: one of each kind, in
    /// [`ChannelKind`] order).
    pub channels: Vec<ChannelKind>,
    /// A connection that receives nothing for this long is closed (default 10 s).
    pub idle_timeout: Duration,
    /// Send a keepalive after this long without sending (default 1 s).
    pub keepalive: Duration,
    /// Session protection (docs/PROTOCOL.md §13). Default: [`Encryption::Open`] with a
    /// static key the server draws at start, anonymous clients allowed.
    pub encryption: Encryption,
    /// The address clients are told to connect to (an address of a connect token's server
    /// list): required with [`Encryption::Token`], which refuses tokens issued for other
    /// servers.
    pub public_addr: Option<std::net::SocketAddr>,
    /// Seed of the cookie secret; `None` derives it from the server's RNG seed. Servers
    /// behind one address that must accept each other's cookies share it.
    pub cookie_seed: Option<[u8; 32]>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            transport: Transport::default(),
            max_connections: 1024,
            channels: vec![
                ChannelKind::ReliableOrdered,
                ChannelKind::ReliableUnordered,
                ChannelKind::Unreliable,
                ChannelKind::UnreliableSequenced,
            ],
            idle_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(1),
            encryption: Encryption::Open {
                static_key: None,
                allow_anonymous: true,
            },
            public_addr: None,
            cookie_seed: None,
        }
    }
}

impl ServerConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transport.validate()?;
        if self.channels.is_empty() || self.channels.len() > MAX_CHANNELS {
            return Err(ConfigError::Channels(self.channels.len()));
        }
        if self.max_connections == 0 || self.max_connections > 1 << 24 {
            return Err(ConfigError::MaxConnections(self.max_connections));
        }
        if self.keepalive.is_zero() || self.keepalive >= self.idle_timeout {
            return Err(ConfigError::Timing(
                "keepalive must be positive and shorter than idle_timeout",
            ));
        }
        if self.idle_timeout > Duration::from_hours(1) {
            return Err(ConfigError::Timing("idle_timeout must be at most one hour"));
        }
        if matches!(self.encryption, Encryption::Token(_)) && self.public_addr.is_none() {
            return Err(ConfigError::Security(
                "token mode needs the server's public address (public_addr): tokens name the servers they admit to",
            ));
        }
        Ok(())
    }
}

/// Configuration of a [`crate::Client`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Transport settings (the MTU used is the smaller of the client's and the server's).
    pub transport: Transport,
    /// Give up connecting after this long (default 10 s).
    pub handshake_timeout: Duration,
    /// First resend interval of `Hello`/`Response`; doubles per resend up to 1 s (default 250 ms).
    pub handshake_resend: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            transport: Transport::default(),
            handshake_timeout: Duration::from_secs(10),
            handshake_resend: Duration::from_millis(250),
        }
    }
}

impl ClientConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.transport.validate()?;
        if self.handshake_resend.is_zero() || self.handshake_timeout <= self.handshake_resend {
            return Err(ConfigError::Timing(
                "handshake_resend must be positive and below handshake_timeout",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_do_not() {
        ServerConfig::default().validate().unwrap();
        ClientConfig::default().validate().unwrap();
        let mut c = ServerConfig::default();
        c.transport.mtu = 1473;
        assert_eq!(c.validate(), Err(ConfigError::Mtu(1473)));
        let mut c = ServerConfig::default();
        c.channels.clear();
        assert_eq!(c.validate(), Err(ConfigError::Channels(0)));
        let mut c = ServerConfig::default();
        c.keepalive = c.idle_timeout;
        assert!(c.validate().is_err());
        let mut c = ClientConfig::default();
        c.transport.recv_buffer = 10;
        assert!(c.validate().is_err());
    }
}
