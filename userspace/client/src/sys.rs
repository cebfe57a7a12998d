//! The one socket option the standard library and mio do not offer: path MTU probing
//! (`IP_MTU_DISCOVER` / `IPV6_MTU_DISCOVER` = `*_PMTUDISC_PROBE`).

use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsFd, AsRawFd};

/// Whether this platform's client can send unfragmented datagrams
/// ([`probe_path_mtu`]), which path MTU discovery's probes need: Linux only for now.
/// Elsewhere the client does not probe at all ([`crate::sock::for_this_platform`]).
pub(crate) const SENDS_UNFRAGMENTED: bool = cfg!(target_os = "linux");

/// Sets the don't-fragment bit on every datagram `socket` sends and makes the kernel
/// neither fragment them nor cap them at a path MTU it learned from ICMP: a datagram
/// larger than the local link fails with `EMSGSIZE` and one larger than a link further on
/// is dropped there, which is what path MTU discovery's probes need to find the path's
/// real size (RFC 8899 §3). Without it, Linux fragments datagrams larger than the local
/// link, so a probe "succeeds" at any size and the connection goes on sending IP
/// fragments. Linux only ([`SENDS_UNFRAGMENTED`]).
#[cfg(target_os = "linux")]
pub(crate) fn probe_path_mtu(socket: &impl AsFd, ipv6: bool) -> io::Result<()> {
    let (level, name, value) = if ipv6 {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_PROBE,
        )
    } else {
        (
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )
    };
    set_int(socket, level, name, value)
}

/// The socket's `IP_MTU_DISCOVER` (or `IPV6_MTU_DISCOVER`) mode, for tests.
#[cfg(all(test, target_os = "linux"))]
pub(crate) fn mtu_discover_mode(socket: &impl AsFd, ipv6: bool) -> io::Result<libc::c_int> {
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER)
    };
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    #[allow(unsafe_code)]
    // SAFETY: the descriptor is borrowed from a live socket; `value` and `len` are valid,
    // writable and sized for the `int` this option reports.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(target_os = "linux")]
fn set_int(
    socket: &impl AsFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: the descriptor is borrowed from a live socket; the option value points at
    // an `int` on the stack for the duration of the call, with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_fd().as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether a send failed because the datagram is larger than the local link allows
/// (`EMSGSIZE`, with [`probe_path_mtu`] set): a probe past the path MTU.
pub(crate) fn too_big(e: &io::Error) -> bool {
    #[cfg(target_os = "linux")]
    {
        e.raw_os_error() == Some(libc::EMSGSIZE)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = e;
        false
    }
}
