//! The one corner of the engine where `unsafe` lives: libbpf queries of XDP attachments
//! ([`bpf`]), and a few raw syscalls (ethtool channel counts, socket options, thread CPU
//! time). The userspace I/O the load generator shares lives in its own crate,
//! `xrudp-xdp`, re-exported here: AF_XDP rings and UMEM as [`xsk`] and [`ring`], the
//! batched UDP syscalls as [`mmsg`] and [`epoll`], and [`geteuid`] and
//! [`set_thread_idle`]. Everything outside `sys` is `#![deny(unsafe_code)]` and reaches
//! the kernel only through the safe functions here and in `xrudp-xdp`.
#![allow(unsafe_code)]

pub mod bpf;

pub use xrudp_xdp::os::{geteuid, set_thread_idle};
pub use xrudp_xdp::{epoll, mmsg, ring, xsk};

use std::{ffi::CString, io, os::fd::AsRawFd as _};

/// Interface index of `name` in the calling thread's network namespace.
#[must_use]
pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// Queue counts reported by the driver through `ETHTOOL_GCHANNELS`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    /// Dedicated receive queues in use.
    pub rx: u32,
    /// Dedicated transmit queues in use.
    pub tx: u32,
    /// Combined (rx+tx) queues in use.
    pub combined: u32,
}

#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;
const SIOCETHTOOL: libc::c_ulong = 0x8946;

/// Asks the driver for its channel (queue) counts. `None` when the driver does not
/// implement `get_channels` or the name is not an interface.
#[must_use]
pub fn ethtool_channels(name: &str) -> Option<Channels> {
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let sock = std::net::UdpSocket::bind("0.0.0.0:0")
        .or_else(|_| std::net::UdpSocket::bind("[::]:0"))
        .ok()?;
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: (&raw mut ch).cast(),
        _pad: [0; 16],
    };
    for (d, s) in req.name.iter_mut().zip(name.bytes()) {
        *d = libc::c_char::from_ne_bytes([s]);
    }
    // SAFETY: SIOCETHTOOL reads `req` (a NUL-terminated name and a pointer to `ch`,
    // both live for the call) and writes only into `ch`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut req) };
    (rc == 0).then_some(Channels {
        rx: ch.rx_count,
        tx: ch.tx_count,
        combined: ch.combined_count,
    })
}

/// Inode number of the calling thread's network namespace: a stable key for the
/// namespace, used to keep engines in different namespaces apart under /run/xrudp.
pub fn netns_inode() -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}

/// Takes an exclusive, non-blocking `flock` on `file`. `Ok(false)` if another process
/// holds it. The lock lives as long as the file descriptor.
pub fn try_lock_exclusive(file: &std::fs::File) -> io::Result<bool> {
    // SAFETY: flock on a valid, owned file descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// The calling thread's kernel thread id.
#[must_use]
pub fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Sets an integer socket option; used for the busy-poll knobs.
pub fn set_sockopt_int(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` lives for the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an integer socket option (e.g. `SO_INCOMING_NAPI_ID`).
pub fn get_sockopt_int(fd: i32, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` live for the call; `len` holds `value`'s size.
    let rc = unsafe { libc::getsockopt(fd, level, name, (&raw mut value).cast(), &raw mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The kernel's per-socket AF_XDP drop counters (`XDP_STATISTICS`, kernel 5.9+ layout).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpStatistics {
    /// Dropped for reasons other than invalid descriptors.
    pub rx_dropped: u64,
    /// Dropped due to invalid descriptors (RX).
    pub rx_invalid_descs: u64,
    /// Dropped due to invalid descriptors (TX).
    pub tx_invalid_descs: u64,
    /// Dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked for work.
    pub tx_ring_empty_descs: u64,
}

const SOL_XDP: i32 = 283;
const XDP_STATISTICS: i32 = 7;

/// Reads `XDP_STATISTICS` from an AF_XDP socket (any descriptor of it, e.g. a `dup`).
pub fn xdp_statistics(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<XdpStatistics> {
    let mut stats = XdpStatistics::default();
    let mut len = size_of::<XdpStatistics>() as libc::socklen_t;
    // SAFETY: `stats` is a writable buffer of `len` bytes for the duration of the call.
    let rc = unsafe {
        libc::getsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            SOL_XDP,
            XDP_STATISTICS,
            (&raw mut stats).cast(),
            &raw mut len,
        )
    };
    if rc == 0 {
        Ok(stats)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// CPU time (user + system) consumed by thread `tid` of this process, in clock ticks
/// (`/proc/self/task/TID/stat` fields 14 and 15), and the ticks per second.
#[must_use]
pub fn thread_cpu_ticks(tid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: split after its closing paren.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime, u64::try_from(hz).ok().filter(|&h| h > 0)?))
}

/// Waits until `fd` is readable or `timeout_ms` passes (`poll(2)`); `Ok(true)` if readable.
pub fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    poll_readable([fd.as_raw_fd()], timeout_ms)
}

/// Sleeps until one of `fds` is readable or `timeout_ms` passes (poll(2)); returns
/// whether one is. An interrupted sleep returns `false`.
pub fn poll_readable<const N: usize>(
    fds: [std::os::fd::RawFd; N],
    timeout_ms: i32,
) -> io::Result<bool> {
    let mut p = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: N valid pollfds for the duration of the call (N is 1 or 2 here, far below
    // nfds_t's range); poll reports a bad descriptor in revents and touches no other memory.
    let rc = unsafe { libc::poll(p.as_mut_ptr(), N as libc::nfds_t, timeout_ms) };
    match rc {
        0 => Ok(false),
        r if r > 0 => Ok(true),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// An eventfd(2) counter: one thread signals it, another wakes from [`poll_readable`]
/// on it.
#[derive(Debug)]
pub struct EventFd(std::fs::File);

impl EventFd {
    /// A non-blocking, close-on-exec eventfd at zero.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd(2) takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(Self(std::fs::File::from(owned)))
    }

    /// Adds one (a sleeper in poll wakes). Failure only means the counter is at its
    /// maximum, which is as readable as any other value.
    pub fn signal(&self) {
        let _ = io::Write::write(&mut &self.0, &1u64.to_ne_bytes());
    }

    /// Resets the counter to zero (nothing to read is not an error).
    pub fn clear(&self) {
        let mut b = [0u8; 8];
        let _ = io::Read::read(&mut &self.0, &mut b);
    }

    /// The descriptor, for [`poll_readable`].
    #[must_use]
    pub fn raw(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// The CPUs the calling thread may run on (sched_getaffinity(2)), in ascending order.
pub fn thread_affinity() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; `set` is writable and its size is passed.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &raw mut set) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the number of bits in `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Restricts the calling thread to `cpus` (sched_setaffinity(2)).
pub fn set_thread_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is a valid, empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `cpu` is below CPU_SETSIZE, the number of bits in `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is initialised and its size is passed.
    let r = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Resident set size of this process, bytes (`VmRSS` in /proc/self/status).
#[must_use]
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss(&status)
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let n: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => n.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let s = "Name:\txrudp\nVmRSS:\t    4321 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(s), Some(4321 * 1024));
        assert_eq!(parse_vm_rss("VmRSS: 12 MB\n"), None);
        assert_eq!(parse_vm_rss("Name: x\n"), None);
        assert!(rss_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn affinity_reads_back_what_was_set() {
        let before = thread_affinity().expect("sched_getaffinity");
        assert!(!before.is_empty());
        std::thread::scope(|s| {
            s.spawn(|| {
                set_thread_affinity(&before[..1]).expect("sched_setaffinity");
                assert_eq!(thread_affinity().expect("read back"), before[..1]);
            });
        });
    }
}
