//! A protocol worker's figures ([`Figures`]) and where it publishes them ([`Published`]).

/// Protocol and application figures of one worker, as last published.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Figures {
    /// Established connections.
    pub connections: u64,
    /// Connections admitted so far.
    pub accepted: u64,
    /// Hellos answered with a stateless cookie (no state kept).
    pub handshakes: u64,
    /// Responses whose cookie was forged, stale or for another address.
    pub bad_cookies: u64,
    /// Protected packets that failed authentication (forged, altered, another session's).
    #[serde(default)]
    pub auth_failed: u64,
    /// Protected packets that authenticated but were received before (replays).
    #[serde(default)]
    pub replayed: u64,
    /// Connect tokens refused because they are in use from another address.
    #[serde(default)]
    pub token_reused: u64,
    /// Connections moved to a new client address after path validation.
    #[serde(default)]
    pub migrated: u64,
    /// PATH_CHALLENGE packets sent to unvalidated client addresses.
    #[serde(default)]
    pub path_challenges: u64,
    /// Path MTU probes sent (docs/PROTOCOL.md §5.5).
    #[serde(default)]
    pub pmtu_probes: u64,
    /// Path MTU black holes detected: connections that fell back to 1200 bytes.
    #[serde(default)]
    pub pmtu_black_holes: u64,
    /// Admissions refused, by reason.
    pub rejected: std::collections::BTreeMap<String, u64>,
    /// Hellos of a version this server does not speak.
    pub version_mismatches: u64,
    /// Connections closed by the idle timeout.
    pub timed_out: u64,
    /// Connections closed for protocol violations.
    pub violations: u64,
    /// Protocol packets received and accepted.
    pub packets_in: u64,
    /// Protocol packets sent.
    pub packets_out: u64,
    /// Packets sent again because the original was declared lost.
    pub retransmitted_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// Messages delivered to the application.
    pub messages_in: u64,
    /// Messages queued by the application.
    pub messages_out: u64,
    /// Datagrams dropped for a bad CRC32C.
    pub crc_failures: u64,
    /// Datagrams dropped as undecodable (all reasons, CRC included).
    pub decode_errors: u64,
    /// Datagrams for no known connection.
    pub unknown_connection: u64,
    /// Application figures.
    pub backpressure_rounds: u64,
    /// Sends deferred by full send buffers.
    pub sends_deferred: u64,
    /// Relay: messages forwarded.
    pub relayed: u64,
    /// Relay: members of rooms on this worker.
    pub relay_members: u64,
    /// First hellos shed by the hello budget (`--hello-rate`).
    pub hellos_shed: u64,
    /// Admission control: updates of the XDP session allow-list the kernel refused.
    #[serde(default)]
    pub session_updates_failed: u64,
    /// Smoothed RTT of the connections, microseconds: (p50, p99), when any are connected.
    pub rtt_us: Option<(u64, u64)>,
    /// Congestion windows of the connections, bytes: (min, median, max).
    pub cwnd: Option<(u64, u64, u64)>,
    /// Bytes of protocol state held by the connection table.
    pub memory: u64,
}

/// One connection's quality as a worker last published it (`xrudp stats --connections`,
/// `GameServer::connections`). Times in microseconds; counts since the connection opened.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConnRow {
    /// The worker (queue or socket index) that owns the connection.
    pub queue: u16,
    /// The connection's slot in its worker (with `generation`, the embedding API's
    /// `ConnId`).
    pub slot: u32,
    /// The slot's generation.
    pub generation: u32,
    /// The connection id on the wire (docs/PROTOCOL.md §3).
    pub conn_id: u32,
    /// The client's address.
    pub peer: std::net::SocketAddr,
    /// Smoothed RTT.
    pub srtt_us: u64,
    /// The smallest RTT sample: the path without ack delay.
    pub min_rtt_us: u64,
    /// RTT variance (RTTVAR).
    pub rtt_var_us: u64,
    /// RTT jitter (the smoothed step between consecutive samples).
    pub jitter_us: u64,
    /// Ack-eliciting packets sent to the client.
    pub packets_sent: u64,
    /// Of those, packets lost (declared lost and never acknowledged).
    pub packets_lost: u64,
    /// Packets that carried retransmitted messages.
    pub packets_retransmitted: u64,
    /// Congestion window, bytes.
    pub cwnd: u64,
    /// Bytes sent and not yet acknowledged.
    pub bytes_in_flight: u64,
    /// Bytes queued or unacknowledged: the send queue's depth.
    pub send_queue_bytes: u64,
    /// The largest datagram sent to the client now: the path MTU discovery confirmed
    /// (docs/PROTOCOL.md §5.5), or `--mtu` with `--pmtud off`.
    pub mtu: u16,
}

impl ConnRow {
    /// One connection's row from its protocol figures.
    #[must_use]
    pub fn new(queue: u16, handle: xrudp_proto::ConnHandle, s: &xrudp_proto::ConnStats) -> Self {
        let us = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Self {
            queue,
            slot: u32::try_from(handle.index()).unwrap_or(u32::MAX),
            generation: handle.generation(),
            conn_id: s.conn_id,
            peer: s.addr,
            srtt_us: us(s.rtt),
            min_rtt_us: us(s.min_rtt),
            rtt_var_us: us(s.rtt_var),
            jitter_us: us(s.jitter),
            packets_sent: s.packets_sent,
            packets_lost: s.packets_lost,
            packets_retransmitted: s.packets_retransmitted,
            cwnd: s.cwnd,
            bytes_in_flight: s.bytes_in_flight,
            send_queue_bytes: s.send_buffered as u64,
            mtu: s.mtu,
        }
    }

    /// Packets lost per packet sent, 0 to 1 (0 before any was sent).
    #[must_use]
    pub fn loss(&self) -> f64 {
        xrudp_proto::share(self.packets_lost, self.packets_sent)
    }

    /// Packets that carried retransmissions per packet sent, 0 to 1.
    #[must_use]
    pub fn retransmission(&self) -> f64 {
        xrudp_proto::share(self.packets_retransmitted, self.packets_sent)
    }
}

/// A worker's per-connection rows and the sort buffers for its percentiles.
#[derive(Debug, Default)]
struct Scratch {
    rows: Vec<ConnRow>,
    rtts: Vec<u64>,
    cwnds: Vec<u64>,
}

/// Where a worker publishes its [`Figures`] for the control thread. The worker only
/// ever `try_lock`s, so the control thread can never stall it.
#[derive(Debug, Default)]
pub struct Published {
    figures: std::sync::Mutex<Figures>,
    scratch: std::sync::Mutex<Scratch>,
}

impl Published {
    /// Lets `write` update the figures and push one [`ConnRow`] per connection, unless
    /// a reader holds the lock right now; then derives the RTT and congestion-window
    /// percentiles. `slots` is reserved in the vectors at the first publication (which
    /// the worker makes before serving), so no later one allocates.
    pub fn publish(&self, slots: usize, write: impl FnOnce(&mut Figures, &mut Vec<ConnRow>)) {
        let Ok(mut f) = self.figures.try_lock() else {
            return;
        };
        let Ok(mut scratch) = self.scratch.try_lock() else {
            return;
        };
        let Scratch { rows, rtts, cwnds } = &mut *scratch;
        rows.clear();
        rtts.clear();
        cwnds.clear();
        rows.reserve(slots);
        rtts.reserve(slots);
        cwnds.reserve(slots);
        write(&mut f, rows);
        rtts.extend(rows.iter().map(|r| r.srtt_us));
        cwnds.extend(rows.iter().map(|r| r.cwnd));
        rtts.sort_unstable();
        cwnds.sort_unstable();
        f.rtt_us = percentile(rtts, 50).zip(percentile(rtts, 99));
        f.cwnd = match (cwnds.first(), percentile(cwnds, 50), cwnds.last()) {
            (Some(&lo), Some(mid), Some(&hi)) => Some((lo, mid, hi)),
            _ => None,
        };
    }

    /// Appends the connections' smoothed RTTs (µs) and congestion windows (bytes) as of
    /// the last publication, for percentiles over several workers. Holding the lock
    /// makes the worker skip one publication, never wait.
    pub fn samples(&self, rtts: &mut Vec<u64>, cwnds: &mut Vec<u64>) {
        let s = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rtts.extend_from_slice(&s.rtts);
        cwnds.extend_from_slice(&s.cwnds);
    }

    /// Appends every connection's row as of the last publication (at most
    /// `PUBLISH_EVERY`, 100 ms, old). Holding the lock makes the worker skip one
    /// publication, never wait.
    pub fn rows(&self, out: &mut Vec<ConnRow>) {
        let s = self
            .scratch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        out.extend_from_slice(&s.rows);
    }

    /// Connections open as of the last publication, without copying the figures.
    #[must_use]
    pub fn connections(&self) -> u64 {
        self.figures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .connections
    }

    /// The last published figures.
    #[must_use]
    pub fn read(&self) -> Figures {
        self.figures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The `p`th percentile of sorted values (nearest rank).
#[must_use]
pub fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Stable snake_case names of reject reasons, as `xrudp stats` shows them.
#[must_use]
pub fn reject_name(r: xrudp_proto::RejectReason) -> &'static str {
    use xrudp_proto::RejectReason as R;
    match r {
        R::ServerFull => "server_full",
        R::TokenRequired => "token_required",
        R::TokenInvalid => "token_invalid",
        R::TokenExpired => "token_expired",
        R::TokenReused => "token_reused",
        R::SecurityMismatch => "security_mismatch",
    }
}
