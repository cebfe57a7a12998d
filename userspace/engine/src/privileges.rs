//! What the AF_XDP backend needs beyond an ordinary user, checked before anything is
//! set up, and given up once the sockets are bound.
//!
//! Measured on kernel 6.18 by starting `xrudp attach` as an unprivileged uid through
//! `setpriv` with one capability taken away at a time (tests/tests/privileges.rs repeats
//! it on every run; docs/OPERATIONS.md, "Least privilege", lists what fails without
//! each):
//! - `CAP_BPF`: loading the XDP program and creating its maps (`bpf(BPF_PROG_LOAD)`,
//!   `bpf(BPF_MAP_CREATE)`: EPERM without it);
//! - `CAP_PERFMON`: the verifier refuses the program without it (EACCES, "pointer
//!   arithmetic with it prohibited for !root": bounds-checked packet pointer arithmetic
//!   is allowed only to `perfmon_capable()` loaders);
//! - `CAP_NET_ADMIN`: creating the XSKMAP (`bpf(BPF_MAP_CREATE)` of an XSKMAP: EPERM
//!   without it) and attaching the program to the interface;
//! - `CAP_NET_RAW`: opening the AF_XDP sockets (`socket(AF_XDP)`: EPERM without it);
//! - `CAP_IPC_LOCK`, unless `RLIMIT_MEMLOCK` covers every UMEM: the kernel pins each
//!   UMEM and charges it to the user's locked memory (`XDP_UMEM_REG`: ENOBUFS past the
//!   limit).
//!
//! Everything else a root process holds is unnecessary: the check below names what is
//! missing, and [`drop_after_attach`] gives up all of them once the program is attached
//! and the sockets bound. The descriptors the engine holds keep working without them (the
//! kernel checks capabilities when a descriptor is made, not when it is used), and the
//! attachment is a BPF link that closing its descriptor removes. `--busy-poll` keeps
//! `CAP_NET_ADMIN`: the interface's IRQ-deferral knobs are written back at exit.

use std::fmt;

use caps::{CapSet, Capability};

/// One capability the AF_XDP backend needs, and what for.
#[derive(Clone, Copy, Debug)]
pub struct Need {
    /// The capability.
    pub cap: Capability,
    /// What the engine does with it, for the error message.
    pub what: &'static str,
}

/// The capabilities the AF_XDP backend cannot do without.
pub const XDP: [Need; 4] = [
    Need {
        cap: Capability::CAP_BPF,
        what: "load the XDP program and create its maps",
    },
    Need {
        cap: Capability::CAP_PERFMON,
        what: "pass the verifier's packet-pointer checks",
    },
    Need {
        cap: Capability::CAP_NET_ADMIN,
        what: "create the socket map and attach the XDP program to the interface",
    },
    Need {
        cap: Capability::CAP_NET_RAW,
        what: "open the AF_XDP sockets",
    },
];

/// Pins the UMEMs beyond `RLIMIT_MEMLOCK`.
pub const IPC_LOCK: Need = Need {
    cap: Capability::CAP_IPC_LOCK,
    what: "pin the UMEMs beyond RLIMIT_MEMLOCK",
};

/// The unit's and the docs' grant, for the error message.
const GRANT: &str = "CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_RAW CAP_IPC_LOCK";
const SETPRIV: &str = "+bpf,+perfmon,+net_admin,+net_raw,+ipc_lock";

/// Capabilities the process lacks for the AF_XDP backend.
#[derive(Debug)]
pub struct Missing {
    /// What is missing, in [`XDP`] order, then [`IPC_LOCK`].
    pub needs: Vec<Need>,
    /// `RLIMIT_MEMLOCK` in bytes (`None`: unlimited or unreadable) and the UMEM bytes it
    /// would have to cover, when `CAP_IPC_LOCK` is among the missing.
    pub memlock: Option<(Option<u64>, u64)>,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the AF_XDP backend needs ")?;
        for (i, n) in self.needs.iter().enumerate() {
            if i > 0 {
                f.write_str(if i + 1 == self.needs.len() {
                    " and "
                } else {
                    ", "
                })?;
            }
            write!(f, "{} (to {})", n.cap, n.what)?;
        }
        f.write_str(", which this process does not have")?;
        if let Some((limit, umem)) = self.memlock {
            match limit {
                Some(l) => write!(f, "; RLIMIT_MEMLOCK is {l} bytes and the UMEMs need {umem}")?,
                None => write!(f, "; the UMEMs need {umem} bytes of locked memory")?,
            }
        }
        write!(
            f,
            ". Run as root, or grant the capabilities (systemd: AmbientCapabilities={GRANT}; \
             setpriv: --inh-caps={SETPRIV} --ambient-caps={SETPRIV}; docs/OPERATIONS.md, \
             \"Least privilege\"), or serve from kernel sockets with --backend socket"
        )
    }
}

impl std::error::Error for Missing {}

/// Checks that the process holds what the AF_XDP backend needs to set up UMEMs of
/// `umem_bytes` in all. Capabilities are read from the calling thread's effective set.
pub fn check_xdp(umem_bytes: u64) -> Result<(), Missing> {
    let has = |cap| caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false);
    let mut needs: Vec<Need> = XDP.into_iter().filter(|n| !has(n.cap)).collect();
    let mut memlock = None;
    if !has(IPC_LOCK.cap) {
        let limit = memlock_limit();
        if limit.is_some_and(|l| l < umem_bytes) {
            needs.push(IPC_LOCK);
            memlock = Some((limit, umem_bytes));
        }
    }
    if needs.is_empty() {
        Ok(())
    } else {
        Err(Missing { needs, memlock })
    }
}

/// The soft `RLIMIT_MEMLOCK` in bytes from /proc/self/limits; `None` when unlimited or
/// unreadable.
fn memlock_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_memlock(&limits)
}

fn parse_memlock(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    line["Max locked memory".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Gives up every capability of the calling thread (effective, permitted, inheritable
/// and ambient) except `keep`, once the program is attached and the sockets are bound.
/// Threads started afterwards inherit the reduced sets, so call it before the workers
/// start. Returns what was given up, for the log.
pub fn drop_after_attach(keep: &[Capability]) -> Result<Vec<Capability>, caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let dropped: Vec<Capability> = permitted
        .iter()
        .copied()
        .filter(|c| !keep.contains(c))
        .collect();
    caps::clear(None, CapSet::Ambient)?;
    let kept: caps::CapsHashSet = permitted
        .iter()
        .copied()
        .filter(|c| keep.contains(c))
        .collect();
    caps::set(None, CapSet::Inheritable, &caps::CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    let mut dropped = dropped;
    dropped.sort_by_key(Capability::index);
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_limit_reads_bytes_and_unlimited() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n\
                      Max locked memory         8388608              8388608              bytes     \n";
        assert_eq!(parse_memlock(limits), Some(8_388_608));
        let unlimited = limits.replace(
            "8388608              8388608",
            "unlimited            unlimited",
        );
        assert_eq!(parse_memlock(&unlimited), None);
        assert_eq!(parse_memlock("garbage"), None);
    }

    #[test]
    fn missing_names_every_capability_and_the_limit() {
        let m = Missing {
            needs: vec![XDP[3], IPC_LOCK],
            memlock: Some((Some(65_536), 16_777_216)),
        };
        let s = m.to_string();
        assert!(
            s.starts_with(
                "the AF_XDP backend needs CAP_NET_RAW (to open the AF_XDP sockets) and CAP_IPC_LOCK"
            ),
            "{s}"
        );
        assert!(
            s.contains("RLIMIT_MEMLOCK is 65536 bytes and the UMEMs need 16777216"),
            "{s}"
        );
        assert!(s.contains("--backend socket"), "{s}");
    }
}
