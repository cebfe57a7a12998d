//! Datagram I/O shared by [`crate::Connection`] and [`crate::Fleet`]: one receive, one
//! send, and the flush of a client's transmit queue, with the I/O counters.

use std::io;
use std::time::Instant;

use xrudp_proto::Client;

/// Length of the receive buffer: above the largest datagram the protocol sends (1472
/// bytes of UDP payload), so a longer datagram arrives truncated and fails its CRC.
pub const RECV_BUFFER_LEN: usize = 2048;

/// Length of the transmit buffer: the largest MTU the protocol allows.
pub(crate) const SEND_BUFFER_LEN: usize = 1472;

/// Datagram I/O counters of a connection or a fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStats {
    /// Datagrams handed to the kernel.
    pub datagrams_sent: u64,
    /// Datagrams received (and handed to the protocol).
    pub datagrams_received: u64,
    /// UDP payload bytes handed to the kernel.
    pub bytes_sent: u64,
    /// UDP payload bytes received.
    pub bytes_received: u64,
    /// `ECONNREFUSED` reports: an ICMP port-unreachable came back (no server on the port).
    pub refused: u64,
    /// `EHOSTUNREACH`/`ENETUNREACH` reports from ICMP.
    pub unreachable: u64,
    /// Datagrams the kernel would not take (`WouldBlock`, an ICMP error pending on the
    /// socket, or a path MTU probe larger than the local link); dropped, as the network
    /// would, and left to loss recovery (a probe that is never acknowledged is a probe
    /// past the path MTU).
    pub send_dropped: u64,
}

/// The two socket types this crate drives (both connected to the server).
pub(crate) trait DatagramSocket {
    fn send_datagram(&self, data: &[u8]) -> io::Result<usize>;
    fn recv_datagram(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl DatagramSocket for std::net::UdpSocket {
    fn send_datagram(&self, data: &[u8]) -> io::Result<usize> {
        self.send(data)
    }
    fn recv_datagram(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf)
    }
}

impl DatagramSocket for mio::net::UdpSocket {
    fn send_datagram(&self, data: &[u8]) -> io::Result<usize> {
        self.send(data)
    }
    fn recv_datagram(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf)
    }
}

/// The outcome of one receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recv {
    /// A datagram of this length is at the start of the buffer.
    Datagram(usize),
    /// An ICMP error was reported (and counted); more datagrams may follow.
    Skipped,
    /// Nothing to read (`WouldBlock`, or the read timeout passed).
    Empty,
}

/// Receives one datagram, counting it or the ICMP error reported instead.
pub(crate) fn recv(
    sock: &impl DatagramSocket,
    buf: &mut [u8],
    io_stats: &mut IoStats,
) -> io::Result<Recv> {
    loop {
        return match sock.recv_datagram(buf) {
            Ok(n) => {
                io_stats.datagrams_received += 1;
                io_stats.bytes_received += n as u64;
                Ok(Recv::Datagram(n))
            }
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(Recv::Empty),
                io::ErrorKind::ConnectionRefused => {
                    io_stats.refused += 1;
                    Ok(Recv::Skipped)
                }
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    io_stats.unreachable += 1;
                    Ok(Recv::Skipped)
                }
                _ => Err(e),
            },
        };
    }
}

/// Sends everything the client has to send now. A datagram the kernel refuses for want of
/// buffer space or because of a pending ICMP error is counted and dropped; the protocol's
/// loss recovery resends what matters.
pub(crate) fn flush(
    client: &mut Client,
    sock: &impl DatagramSocket,
    tx: &mut [u8],
    now: Instant,
    io_stats: &mut IoStats,
) -> io::Result<()> {
    while let Some(t) = client.poll_transmit(now, tx) {
        send(sock, &tx[..t.len], io_stats)?;
    }
    Ok(())
}

fn send(sock: &impl DatagramSocket, data: &[u8], io_stats: &mut IoStats) -> io::Result<()> {
    loop {
        return match sock.send_datagram(data) {
            Ok(_) => {
                io_stats.datagrams_sent += 1;
                io_stats.bytes_sent += data.len() as u64;
                Ok(())
            }
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    io_stats.send_dropped += 1;
                    Ok(())
                }
                io::ErrorKind::ConnectionRefused => {
                    io_stats.refused += 1;
                    io_stats.send_dropped += 1;
                    Ok(())
                }
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    io_stats.unreachable += 1;
                    io_stats.send_dropped += 1;
                    Ok(())
                }
                _ if crate::sys::too_big(&e) => {
                    io_stats.send_dropped += 1;
                    Ok(())
                }
                _ => Err(e),
            },
        };
    }
}

/// Whether a client with `config` sends unfragmented datagrams ([`prepare`]): with path
/// MTU discovery on and a ceiling above the 1,200 bytes every path carries.
pub(crate) fn probes_path_mtu(config: &xrudp_proto::ClientConfig) -> bool {
    config.transport.pmtud && config.transport.mtu > 1200
}

/// `config` as this platform can run it. Path MTU discovery needs its probes sent
/// unfragmented (RFC 8899 §3), which the client can ask for only on Linux
/// ([`crate::sys::SENDS_UNFRAGMENTED`]); elsewhere the operating system may fragment a
/// probe larger than the local link and the far end reassemble it, so every probe would
/// "succeed" and the connection go on in IP fragments. There discovery is turned off: the
/// client stays at 1,200 bytes (the server still probes its own direction).
pub(crate) fn for_this_platform(
    mut config: xrudp_proto::ClientConfig,
) -> xrudp_proto::ClientConfig {
    if !crate::sys::SENDS_UNFRAGMENTED {
        config.transport.pmtud = false;
    }
    config
}

/// Readies a freshly bound client socket: with `probe` ([`probes_path_mtu`]), datagrams
/// go unfragmented so that path MTU probes find the path's real MTU
/// ([`crate::sys::probe_path_mtu`]); otherwise the kernel's default (it fragments what the
/// local link cannot carry) is kept.
#[cfg(target_os = "linux")]
pub(crate) fn prepare(
    socket: &impl std::os::fd::AsFd,
    server: std::net::SocketAddr,
    probe: bool,
) -> io::Result<()> {
    if probe {
        crate::sys::probe_path_mtu(socket, server.is_ipv6())?;
    }
    Ok(())
}

/// Elsewhere nothing is asked of the socket: its config never probes
/// ([`for_this_platform`]).
#[cfg(not(target_os = "linux"))]
pub(crate) fn prepare<S>(
    _socket: &S,
    _server: std::net::SocketAddr,
    _probe: bool,
) -> io::Result<()> {
    Ok(())
}

/// The unspecified address of `server`'s family, port 0: what a client binds.
pub(crate) fn any_local(server: std::net::SocketAddr) -> std::net::SocketAddr {
    match server {
        std::net::SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    }
}

/// A seed from the operating system's RNG.
/// 32 bytes from the OS random source: an ephemeral X25519 key.
pub(crate) fn os_key() -> io::Result<[u8; 32]> {
    let mut k = [0; 32];
    getrandom::fill(&mut k)
        .map_err(|e| io::Error::other(format!("the OS random number generator failed: {e}")))?;
    Ok(k)
}

pub(crate) fn os_seed() -> io::Result<u64> {
    getrandom::u64()
        .map_err(|e| io::Error::other(format!("the OS random number generator failed: {e}")))
}
