//! Batched datagram I/O on kernel UDP sockets: `recvmmsg(2)` and `sendmmsg(2)`.
//!
//! The engine's socket backend and the load generator's socket backend receive and send
//! up to [`BATCH`] datagrams per syscall. Buffers are allocated once per worker; the
//! `mmsghdr`/`iovec` arrays that point into them are rebuilt on the stack-free scratch
//! vectors each call (cheap, and it keeps the buffers free of self-references).

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::{AsRawFd, BorrowedFd},
};

/// Datagrams per syscall.
pub const BATCH: usize = 64;
/// Bytes per datagram buffer (the largest UDP payload on a 1500-byte MTU path is 1472).
pub const BUF: usize = 2048;

/// A batch of datagram buffers with their peer addresses and lengths.
pub struct Batch {
    bufs: Vec<[u8; BUF]>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: Vec<usize>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    /// Datagrams filled (received, or queued for sending).
    len: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch of [`BATCH`] buffers.
    #[must_use]
    pub fn new() -> Self {
        // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs for which all
        // zero bytes is a valid (empty) value.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        Self {
            bufs: vec![[0; BUF]; BATCH],
            addrs: vec![zero_addr; BATCH],
            lens: vec![0; BATCH],
            iov: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                BATCH
            ],
            hdrs: vec![zero_hdr; BATCH],
            len: 0,
        }
    }

    /// Datagrams in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the batch has no free buffer left.
    #[must_use]
    pub fn is_full(&self) -> bool {
        self.len == BATCH
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Datagram `i`: its bytes and peer.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        if i >= self.len {
            return None;
        }
        Some((&self.bufs[i][..self.lens[i]], from_storage(&self.addrs[i])?))
    }

    /// The next free buffer, to write a datagram for `dst` into; finish with [`Batch::commit`].
    pub fn next_buf(&mut self) -> Option<&mut [u8; BUF]> {
        self.bufs.get_mut(self.len)
    }

    /// Queues the `len` bytes written into the buffer [`Batch::next_buf`] returned, for `dst`.
    pub fn commit(&mut self, len: usize, dst: SocketAddr) {
        if self.len < BATCH {
            self.lens[self.len] = len.min(BUF);
            to_storage(dst, &mut self.addrs[self.len]);
            self.len += 1;
        }
    }

    /// Points the first `count` headers at the buffers; `named`: with the peer address
    /// (receiving, or sending on an unconnected socket), else without (a connected
    /// socket then uses its cached route instead of a lookup per datagram).
    fn prepare(&mut self, count: usize, recv: bool, named: bool) {
        for i in 0..count {
            self.iov[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: if recv { BUF } else { self.lens[i] },
            };
            let h = &mut self.hdrs[i];
            if named {
                h.msg_hdr.msg_name = (&raw mut self.addrs[i]).cast();
                h.msg_hdr.msg_namelen = if recv {
                    size_of::<libc::sockaddr_storage>() as libc::socklen_t
                } else {
                    addr_len(&self.addrs[i])
                };
            } else {
                h.msg_hdr.msg_name = std::ptr::null_mut();
                h.msg_hdr.msg_namelen = 0;
            }
            h.msg_hdr.msg_iov = &raw mut self.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = std::ptr::null_mut();
            h.msg_hdr.msg_controllen = 0;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
    }
}

/// Receives up to [`BATCH`] datagrams without blocking; `Ok(0)` when none are waiting.
pub fn recv_batch(fd: BorrowedFd<'_>, batch: &mut Batch) -> io::Result<usize> {
    batch.prepare(BATCH, true, true);
    // SAFETY: every header points at a live buffer, address and iovec of `batch`, sized
    // as declared; the kernel writes at most that much into each.
    let n = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            batch.hdrs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        batch.len = 0;
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(e)
        };
    }
    let n = usize::try_from(n).unwrap_or(0);
    for i in 0..n {
        batch.lens[i] = batch.hdrs[i].msg_len as usize;
    }
    batch.len = n;
    Ok(n)
}

/// Sends the queued datagrams, as many as the kernel takes in one call, and removes
/// them from the front of the batch. Returns how many were sent.
pub fn send_batch(fd: BorrowedFd<'_>, batch: &mut Batch) -> io::Result<usize> {
    send(fd, batch, true)
}

/// Like [`send_batch`] on a connected socket: the datagrams go to its peer (their
/// queued addresses are ignored), and the kernel routes with the socket's cached route
/// rather than looking the route up for every datagram.
pub fn send_batch_connected(fd: BorrowedFd<'_>, batch: &mut Batch) -> io::Result<usize> {
    send(fd, batch, false)
}

fn send(fd: BorrowedFd<'_>, batch: &mut Batch, named: bool) -> io::Result<usize> {
    let count = batch.len;
    if count == 0 {
        return Ok(0);
    }
    batch.prepare(count, false, named);
    // SAFETY: the first `count` headers point at live buffers of `batch` holding
    // `lens[i]` bytes each, and at initialised addresses of the declared length (or at
    // no address, length 0).
    let n = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            batch.hdrs.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(e)
        };
    }
    let n = usize::try_from(n).unwrap_or(0);
    // Move the unsent tail to the front.
    for i in n..count {
        batch.bufs.swap(i - n, i);
        batch.addrs.swap(i - n, i);
        batch.lens.swap(i - n, i);
    }
    batch.len = count - n;
    Ok(n)
}

fn addr_len(s: &libc::sockaddr_storage) -> libc::socklen_t {
    if i32::from(s.ss_family) == libc::AF_INET6 {
        size_of::<libc::sockaddr_in6>() as libc::socklen_t
    } else {
        size_of::<libc::sockaddr_in>() as libc::socklen_t
    }
}

fn to_storage(addr: SocketAddr, out: &mut libc::sockaddr_storage) {
    match addr {
        // A dual-stack (AF_INET6, not v6-only) socket accepts a plain sockaddr_in too:
        // Linux's udpv6_sendmsg hands it to the IPv4 path.
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&raw mut *out).cast::<libc::sockaddr_in>(), sin) };
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&raw mut *out).cast::<libc::sockaddr_in6>(), sin6) };
        }
    }
}

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a = unsafe { &*(&raw const *s).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a = unsafe { &*(&raw const *s).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            // Report IPv4 peers of a dual-stack socket as IPv4, as AF_XDP sees them.
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                None => SocketAddr::V6(SocketAddrV6::new(
                    ip,
                    port,
                    u32::from_be(a.sin6_flowinfo),
                    a.sin6_scope_id,
                )),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::{net::UdpSocket, os::fd::AsFd as _};

    use super::*;

    #[test]
    fn batch_round_trip_over_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = b.local_addr().unwrap();
        let mut out = Batch::new();
        for i in 0..10u8 {
            let buf = out.next_buf().unwrap();
            buf[..3].copy_from_slice(&[i, i, i]);
            out.commit(3, dst);
        }
        let mut sent = 0;
        while !out.is_empty() {
            sent += send_batch(a.as_fd(), &mut out).unwrap();
        }
        assert_eq!(sent, 10);
        let mut inb = Batch::new();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while got.len() < 10 && std::time::Instant::now() < deadline {
            let n = recv_batch(b.as_fd(), &mut inb).unwrap();
            for i in 0..n {
                let (d, from) = inb.get(i).unwrap();
                assert_eq!(from, a.local_addr().unwrap());
                got.push(d.to_vec());
            }
        }
        assert_eq!(got, (0..10u8).map(|i| vec![i, i, i]).collect::<Vec<_>>());
    }

    #[test]
    fn connected_batch_goes_to_the_peer_whatever_address_is_queued() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let decoy = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.connect(b.local_addr().unwrap()).unwrap();
        let mut out = Batch::new();
        for i in 0..5u8 {
            out.next_buf().unwrap()[0] = i;
            out.commit(1, decoy.local_addr().unwrap());
        }
        let mut sent = 0;
        while !out.is_empty() {
            sent += send_batch_connected(a.as_fd(), &mut out).unwrap();
        }
        assert_eq!(sent, 5);
        b.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 16];
        for i in 0..5u8 {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&[i][..], a.local_addr().unwrap()));
        }
        decoy.set_nonblocking(true).unwrap();
        assert!(
            decoy.recv_from(&mut buf).is_err(),
            "nothing goes to the queued address"
        );
    }
}
