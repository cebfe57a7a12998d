//! Counters kept by servers and clients. Every counter is incremented where the event
//! happens; none is estimated.

use crate::handshake::RejectReason;
use crate::packet::DecodeError;

/// Counters of one endpoint (a server and all its connections, or a client).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counters {
    /// Datagrams handed to `handle_datagram`.
    pub packets_in: u64,
    /// Datagrams produced by `poll_transmit`.
    pub packets_out: u64,
    /// Data packets sent that carried at least one retransmitted message.
    pub retransmitted_packets: u64,
    /// Packets declared lost by the loss detector.
    pub lost_packets: u64,
    /// Packets declared lost that were acknowledged afterwards (spurious loss).
    pub spurious_losses: u64,
    /// Probe timeouts that fired.
    pub ptos: u64,
    /// Keepalive pings scheduled.
    pub keepalives: u64,
    /// Datagrams dropped by reason, indexed by [`DecodeError::index`]; `BadCrc` is the CRC
    /// failure count.
    pub decode_errors: [u64; DecodeError::ALL.len()],
    /// Server: challenges (cookies) sent in answer to hellos.
    pub handshakes: u64,
    /// Server: responses whose cookie did not verify (forged, stale or for another address).
    pub bad_cookies: u64,
    /// Server: connections admitted.
    pub accepted: u64,
    /// Server: admissions refused, by [`RejectReason::index`].
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Server: hellos answered with `VersionMismatch`.
    pub version_mismatches: u64,
    /// Server: handshake replies dropped because the reply queue was full.
    pub replies_dropped: u64,
    /// Data or disconnect packets for an unknown connection id, or from the wrong address.
    pub unknown_connection: u64,
    /// Connections closed by the idle timeout.
    pub timed_out: u64,
    /// Connections closed for a protocol violation by the peer.
    pub violations: u64,
    /// Packets received twice (or too old to tell), dropped.
    pub duplicate_packets: u64,
    /// Reliable messages received twice, dropped.
    pub duplicate_messages: u64,
    /// Sequenced messages older than one already delivered, dropped.
    pub stale_dropped: u64,
    /// Packets dropped unacknowledged because the receive buffer was full.
    pub recv_buffer_full: u64,
    /// Messages delivered to the application.
    pub messages_in: u64,
    /// Messages accepted by `send`.
    pub messages_out: u64,
    /// Fragmented messages reassembled.
    pub reassembled: u64,
    /// Protected packets (or a `Welcome`) that failed authentication: forged, altered,
    /// or sealed for another session; dropped before any of it was read.
    pub auth_failed: u64,
    /// Protected packets that authenticated but were received before (a replay, or a
    /// duplicate the network made); dropped before delivery.
    pub replayed: u64,
    /// Server: connect tokens refused because they are in use from another address
    /// (also counted in `rejected`).
    pub token_reused: u64,
    /// Server: connections moved to a new client address after path validation (a NAT
    /// rebinding or a client that changed networks).
    pub migrated: u64,
    /// Server: PATH_CHALLENGE packets sent to unvalidated client addresses.
    pub path_challenges: u64,
    /// Path MTU probes sent (docs/PROTOCOL.md §5.5); their losses are in no other count.
    pub pmtu_probes: u64,
    /// Path MTU black holes detected: connections that fell back to 1200 bytes.
    pub pmtu_black_holes: u64,
}

impl Counters {
    /// CRC failures.
    #[must_use]
    pub fn crc_failures(&self) -> u64 {
        self.decode_errors[DecodeError::BadCrc.index()]
    }

    /// Rejections for one reason.
    #[must_use]
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }
}

/// `part / of` as a fraction, 0 to 1 for a part of a whole (0 when `of` is 0, never NaN):
/// loss and retransmission shares of packet counts.
#[must_use]
#[expect(
    clippy::cast_precision_loss,
    reason = "packet counts stay far below 2^52, where f64 is exact"
)]
pub fn share(part: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        part as f64 / of as f64
    }
}
