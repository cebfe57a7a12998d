//! Connection migration (docs/PROTOCOL.md §5.4; RFC 9000 §8.2 and §9): a protected packet
//! that authenticates from a new client address starts path validation. The server sends
//! a PATH_CHALLENGE there, never more than [`AMPLIFICATION_FACTOR`] times the bytes it
//! received from that address, and keeps sending everything else to the old address
//! until a PATH_RESPONSE echoes the challenge. The client echoes every challenge at once.
//! Unprotected connections never migrate: nothing proves a new address is the client.

use std::net::SocketAddr;
use std::time::Instant;

use xrudp_common::rudp::{HEADER_LEN, PacketType};

use super::{Conn, Ctx, State};
use crate::congestion::Congestion;
use crate::crypto::TAG_LEN;
use crate::packet::{self, DATA_PREFIX_LEN, PATH_FRAME_LEN, Writer};
use crate::rtt::RttEstimator;

/// Bytes the server may send to an unvalidated address per byte received from it
/// (RFC 9000 §8: three times).
pub(crate) const AMPLIFICATION_FACTOR: u64 = 3;

/// Bytes of a packet that carries only a PATH_CHALLENGE.
pub(crate) const CHALLENGE_PACKET_LEN: usize =
    HEADER_LEN + DATA_PREFIX_LEN + PATH_FRAME_LEN + TAG_LEN;

/// A protected connection's path validation state.
#[derive(Debug, Default)]
pub(crate) struct Path {
    /// Server: the new address being validated.
    probe: Option<Probe>,
    /// Server: an address whose challenge was echoed, for the server to move to.
    validated: Option<SocketAddr>,
    /// Client: the challenge to echo in the next packet.
    response: Option<[u8; 8]>,
}

/// A new client address under validation.
#[derive(Debug)]
struct Probe {
    addr: SocketAddr,
    challenge: [u8; 8],
    /// Bytes of authenticated packets received from `addr` since validation began.
    received: u64,
    /// Bytes sent to `addr`.
    sent: u64,
    /// When the last challenge went out (one per probe timeout at most).
    last_sent: Option<Instant>,
}

impl Conn {
    /// The largest packet number received, if any (a packet raised it if this grows
    /// across its handling).
    pub(crate) fn largest_received(&self) -> Option<u64> {
        self.rx_any().then_some(self.rx_largest)
    }

    /// Server: an authenticated packet came from the current peer address. One that is the largest yet ends any validation of another address:
    /// the client is still where it was (or the other address was an on-path copy).
    pub(crate) fn on_peer_packet(&mut self, newest: bool) {
        if newest && let Some(p) = self.keys.as_deref_mut() {
            p.path.probe = None;
        }
    }

    /// Server: an authenticated packet of `len` bytes came from `from`, which is not the
    /// peer address. Only the largest packet number yet starts validating a new address
    /// (older ones are the old path's stragglers, RFC 9000 §9.3); `challenge` draws the
    /// challenge's bytes. Returns whether a challenge may be due (queue the connection).
    pub(crate) fn on_new_path_packet(
        &mut self,
        from: SocketAddr,
        len: usize,
        newest: bool,
        challenge: impl FnOnce() -> [u8; 8],
    ) -> bool {
        if self.state != State::Open {
            return false;
        }
        let Some(p) = self.keys.as_deref_mut() else {
            return false;
        };
        match &mut p.path.probe {
            Some(probe) if probe.addr == from => {
                probe.received += len as u64;
                true
            }
            _ if newest => {
                p.path.probe = Some(Probe {
                    addr: from,
                    challenge: challenge(),
                    received: len as u64,
                    sent: 0,
                    last_sent: None,
                });
                true
            }
            _ => false,
        }
    }

    /// Server: writes a packet carrying a PATH_CHALLENGE for the address under
    /// validation if one is due and the amplification limit allows it; returns where to
    /// send it and its length.
    pub(crate) fn poll_path_challenge(
        &mut self,
        now: Instant,
        out: &mut [u8],
        ctx: &mut Ctx<'_>,
    ) -> Option<(SocketAddr, usize)> {
        if self.state != State::Open {
            return None;
        }
        let retry = self.rtt.pto();
        let probe = self.keys.as_deref()?.path.probe.as_ref()?;
        if probe.last_sent.is_some_and(|t| now < t + retry)
            || probe.sent + CHALLENGE_PACKET_LEN as u64 > AMPLIFICATION_FACTOR * probe.received
        {
            return None;
        }
        let (addr, challenge) = (probe.addr, probe.challenge);
        let pn = self.next_pn;
        let out = out.get_mut(..CHALLENGE_PACKET_LEN)?;
        let mut w = Writer::new(&mut out[..CHALLENGE_PACKET_LEN - TAG_LEN]);
        w.header(PacketType::Data, self.conn_id)?;
        w.u16(pn as u16)?;
        packet::write_path(&mut w, false, challenge)?;
        let written = w.len();
        let len = self.protect(pn, out, HEADER_LEN + DATA_PREFIX_LEN, written)?;
        self.next_pn += 1;
        ctx.stats.packets_out += 1;
        ctx.stats.path_challenges += 1;
        let probe = self.keys.as_deref_mut()?.path.probe.as_mut()?;
        probe.sent += len as u64;
        probe.last_sent = Some(now);
        Some((addr, len))
    }

    /// Either end: a PATH_CHALLENGE arrived; the client echoes it in its next packet.
    pub(super) fn on_path_challenge(&mut self, data: [u8; 8]) {
        if let Some(p) = self.keys.as_deref_mut() {
            p.path.response = Some(data);
        }
    }

    /// Either end: a PATH_RESPONSE arrived; if it echoes the challenge, the address
    /// under validation is validated (whichever address the response came from: only the
    /// holder of the keys could read the challenge, RFC 9000 §8.2.3).
    pub(super) fn on_path_response(&mut self, data: [u8; 8]) {
        let Some(p) = self.keys.as_deref_mut() else {
            return;
        };
        if p.path
            .probe
            .as_ref()
            .is_some_and(|probe| probe.challenge == data)
        {
            p.path.validated = p.path.probe.take().map(|probe| probe.addr);
        }
    }

    /// The echo the next packet must carry, if any.
    pub(super) fn path_response(&self) -> Option<[u8; 8]> {
        self.keys.as_deref()?.path.response
    }

    /// The echo went out.
    pub(super) fn path_response_sent(&mut self) {
        if let Some(p) = self.keys.as_deref_mut() {
            p.path.response = None;
        }
    }

    /// Server: the address validated since the last call, if any.
    pub(crate) fn take_validated_path(&mut self) -> Option<SocketAddr> {
        self.keys.as_deref_mut()?.path.validated.take()
    }

    /// Server: moves the connection to `addr`. A new IP address is a new network path,
    /// so its congestion controller and RTT estimate start over (RFC 9000 §9.4); a new
    /// port on the same address is a NAT rebinding and keeps them.
    pub(crate) fn migrate(&mut self, now: Instant, addr: SocketAddr, ctx: &Ctx<'_>) {
        if addr.ip() != self.peer.ip() {
            let t = ctx.transport;
            // A new path has its own MTU: search again from the base (RFC 8899 §4.6).
            self.pmtud = self.pmtud.restart(ctx.mtu);
            self.cc = Congestion::new(t.congestion, u64::from(self.mtu()), now);
            self.rtt =
                RttEstimator::new(t.initial_rtt, self.rtt.min_rto(), self.rtt.max_ack_delay());
        }
        self.peer = addr;
    }
}
