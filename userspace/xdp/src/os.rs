//! Process and thread calls both loops need: the effective uid (AF_XDP and XDP want
//! root or the matching capabilities, so callers check it before they try), moving a
//! thread to `SCHED_IDLE`, and waiting for a descriptor to the microsecond (a load
//! thread's sends are due every few microseconds; poll(2) and epoll_wait(2) count
//! milliseconds).

use std::{io, os::fd::RawFd, time::Duration};

/// The effective user id of the process.
#[must_use]
pub fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// Moves the calling thread to `SCHED_IDLE` (sched(7)): it runs only when its core has
/// nothing else to do and is preempted at once when something wakes (the bench's
/// noise probe uses this so it never delays the engine or the load).
pub fn set_thread_idle() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid, initialised sched_param
    // that outlives the call, and SCHED_IDLE requires priority 0.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets the calling thread's timer slack to `ns` nanoseconds (prctl `PR_SET_TIMERSLACK`):
/// how late the kernel may end its timed waits to batch wake-ups (50 µs by default).
pub fn set_timer_slack(ns: u64) -> io::Result<()> {
    let ns = libc::c_ulong::try_from(ns).unwrap_or(libc::c_ulong::MAX);
    let zero: libc::c_ulong = 0;
    // SAFETY: PR_SET_TIMERSLACK takes the slack by value and reads no memory; the
    // unused arguments are zero as prctl(2) asks.
    let r = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, zero, zero, zero) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Waits until `fd` is readable or `timeout` passes (`ppoll(2)`, to the nanosecond plus
/// the thread's timer slack). Returns whether it is readable; an interrupted wait
/// returns `false`.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: `p` is one valid pollfd and `ts` a valid timespec, both outliving the
    // call; a null signal mask keeps the thread's own.
    let n = unsafe { libc::ppoll(&raw mut p, 1, &raw const ts, std::ptr::null()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    use super::*;

    #[test]
    fn a_short_wait_ends_in_microseconds_and_input_ends_it_at_once() {
        set_timer_slack(1).unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Nothing to read: the wait times out (a poll(2) of 0 ms would not have waited,
        // one of 1 ms would have waited 1 ms).
        let t = std::time::Instant::now();
        assert!(!wait_readable(b.as_raw_fd(), Duration::from_micros(200)).unwrap());
        assert!(t.elapsed() >= Duration::from_micros(200));
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        // Input waiting: readable whatever the timeout.
        assert!(wait_readable(b.as_raw_fd(), Duration::from_secs(10)).unwrap());
    }
}
