//! A level-triggered `epoll(7)` set of descriptors, each with a `u64` token: how the
//! bench's socket load backend waits on thousands of connected UDP sockets at once.

use std::os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd};
use std::{io, time::Duration};

/// An epoll instance.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// A new epoll instance that reports at most `capacity` ready descriptors per wait.
    pub fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions; the flag is valid.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            fd,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)],
        })
    }

    /// Watches `fd` for input (level-triggered: it is reported while data is waiting).
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are valid for the call and `ev` outlives it.
        let rc = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &raw mut ev,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Stops watching `fd` (closing it does too).
    pub fn remove(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // SAFETY: both descriptors are valid for the call; DEL ignores the event pointer.
        let rc = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                std::ptr::null_mut(),
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Waits up to `timeout` (to the microsecond: [`crate::os::wait_readable`] on the
    /// epoll descriptor, then a non-blocking `epoll_wait`) and calls `ready(token)` for
    /// each ready descriptor. Returns how many were ready.
    ///
    /// Two system calls when something is ready, where `epoll_pwait2(2)` would take one:
    /// its libc wrapper needs glibc 2.35, and this crate is linked into the operator's
    /// `xrudp` binary, which should not need a newer glibc for a load generator's wait.
    pub fn wait_for(&mut self, timeout: Duration, ready: impl FnMut(u64)) -> io::Result<usize> {
        if !timeout.is_zero() && !crate::os::wait_readable(self.fd.as_raw_fd(), timeout)? {
            return Ok(0);
        }
        self.wait(0, ready)
    }

    /// Waits up to `timeout_ms` (0: don't block) and calls `ready(token)` for each ready
    /// descriptor. Returns how many were ready; an interrupted wait counts as none.
    pub fn wait(&mut self, timeout_ms: i32, mut ready: impl FnMut(u64)) -> io::Result<usize> {
        let max = i32::try_from(self.events.len()).unwrap_or(i32::MAX);
        // SAFETY: `events` is a writable array of `max` epoll_event for the call.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                max,
                timeout_ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        let n = usize::try_from(n).unwrap_or(0);
        for ev in &self.events[..n] {
            ready(ev.u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use super::*;

    /// Two loopback sockets, both watched: `a` with token 7, `b` with token 9.
    fn watched() -> (std::net::UdpSocket, std::net::UdpSocket, Epoll) {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let ep = Epoll::new(4).unwrap();
        ep.add(a.as_fd(), 7).unwrap();
        ep.add(b.as_fd(), 9).unwrap();
        (a, b, ep)
    }

    #[test]
    fn reports_the_readable_socket_by_token() {
        let (a, b, mut ep) = watched();
        let mut got = Vec::new();
        assert_eq!(ep.wait(0, |t| got.push(t)).unwrap(), 0);
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        // Level-triggered and blocking up to 10 s: returns as soon as the datagram lands.
        ep.wait(10_000, |t| got.push(t)).unwrap();
        assert_eq!(got, vec![9]);
        ep.remove(b.as_fd()).unwrap();
        got.clear();
        assert_eq!(ep.wait(0, |t| got.push(t)).unwrap(), 0);
    }

    #[test]
    fn a_microsecond_wait_times_out_empty_and_reports_what_arrives() {
        let (a, b, mut ep) = watched();
        let mut got = Vec::new();
        assert_eq!(
            ep.wait_for(Duration::from_micros(50), |t| got.push(t))
                .unwrap(),
            0
        );
        assert_eq!(ep.wait_for(Duration::ZERO, |t| got.push(t)).unwrap(), 0);
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        ep.wait_for(Duration::from_secs(10), |t| got.push(t))
            .unwrap();
        assert_eq!(got, vec![9]);
    }
}
