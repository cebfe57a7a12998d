//! The raw applications: no protocol, the data path alone (`--app discard`,
//! `--app udp-echo`), for measuring the ports and the XDP program by themselves.

use std::{net::SocketAddr, time::Instant};

use super::{Handler, Verdict};

/// Counts and discards every datagram: the port gives each buffer straight back without
/// parsing it.
#[derive(Debug, Default)]
pub(crate) struct Discard;

impl Handler for Discard {
    const INSPECTS: bool = false;
    const ORIGINATES: bool = false;

    fn on_datagram(&mut self, _now: Instant, _from: SocketAddr, _payload: &[u8]) -> Verdict {
        Verdict::Consumed
    }
}

/// Echoes every valid UDP datagram back to its sender (on AF_XDP, in the received frame).
#[derive(Debug, Default)]
pub(crate) struct UdpEcho;

impl Handler for UdpEcho {
    const ORIGINATES: bool = false;

    fn on_datagram(&mut self, _now: Instant, _from: SocketAddr, _payload: &[u8]) -> Verdict {
        Verdict::Echo
    }
}
