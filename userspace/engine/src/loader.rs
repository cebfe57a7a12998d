//! Loads the embedded XDP program, configures its maps and attaches it.

use std::os::fd::{AsFd as _, RawFd};

use aya::{
    Ebpf,
    maps::{Array, MapData, PerCpuArray, XskMap},
    programs::{Xdp, XdpMode},
};
use xrudp_common::{
    admit::{Rate, SessionSlots},
    maps::{self, Config, Counter},
};

use crate::sys::bpf::SessionMap;

/// XDP attach mode requested by the operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeChoice {
    /// Native (driver) mode, falling back to generic (SKB) mode.
    Auto,
    /// Native (driver) mode or fail.
    Native,
    /// Generic (SKB) mode: works on any interface, slower.
    Skb,
}

/// The mode the program is attached in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// In the driver.
    Native,
    /// In the kernel's generic receive path.
    Skb,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Skb => "skb",
        })
    }
}

/// Loader and attach failures, each saying what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// This binary embeds the stub object, not the XDP program (see `build.rs`).
    #[error(
        "this xrudp was built without its XDP program (XRUDP_BUILD_EBPF=0, or bpf-linker was \
         not on PATH when it was built), so it cannot attach; install the eBPF toolchain \
         (scripts/setup.sh) and rebuild with XRUDP_BUILD_EBPF=1 cargo build --release"
    )]
    NoXdpProgram,
    /// The kernel refused to load the program or create its maps.
    #[error(
        "loading the XDP program failed: {0}; xrudp needs root (or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON) \
         and a kernel with BPF enabled"
    )]
    Load(#[source] aya::EbpfError),
    /// The kernel could not create the maps at the requested size.
    #[error(
        "creating the XDP program's maps with room for {sessions} sessions failed: {source}; \
         lower --max-connections (sessions = --max-connections × (highest queue id + 1)) or \
         turn admission control off with --admission off"
    )]
    SessionMap {
        /// Sessions asked for.
        sessions: u32,
        /// Cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// The verifier or the kernel refused the program.
    #[error("the kernel refused the XDP program: {0}")]
    Program(#[source] aya::programs::ProgramError),
    /// A map is missing or of the wrong type (a build mismatch).
    #[error("XDP program map {name}: {source}")]
    Map {
        /// Map name.
        name: &'static str,
        /// Cause.
        #[source]
        source: aya::maps::MapError,
    },
    /// Attaching failed in every mode tried.
    #[error("attaching XDP to {iface} in {mode} mode failed: {source}; {hint}")]
    Attach {
        /// Interface.
        iface: String,
        /// Mode tried last.
        mode: Mode,
        /// Cause.
        #[source]
        source: aya::programs::ProgramError,
        /// What to do about it.
        hint: &'static str,
    },
}

/// The rates of admission control ([`Program::admission`]), each per CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmissionRates {
    /// Each source's bucket: handshakes and migration attempts.
    pub source: Rate,
    /// First hellos, whatever their source.
    pub hello: Rate,
    /// Migration attempts (a live encrypted session's packets from a new address),
    /// whatever their source.
    pub migration: Rate,
}

/// The loaded program and its maps.
pub struct Program {
    ebpf: Ebpf,
    mode: Option<Mode>,
    /// The session allow-list's layout (written into the config by `configure`).
    sessions: SessionSlots,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Program")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

const PROGRAM: &str = "xrudp";

/// The XDP object `build.rs` embedded: the real program, or an empty stub when it was built
/// without the eBPF toolchain (`XRUDP_BUILD_EBPF=0`, or no bpf-linker on PATH).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xrudp"));

/// Whether this binary carries the XDP program (false with the stub object).
pub const EMBEDDED: bool = !OBJECT.is_empty();

impl Program {
    /// Loads the embedded object into the kernel (verifier included); nothing is attached
    /// yet. The session allow-list holds [`maps::DEFAULT_SESSIONS`] sessions, all on
    /// queue 0.
    pub fn load() -> Result<Self, LoadError> {
        Self::load_sized(maps::DEFAULT_SESSIONS, 1)
    }

    /// [`Program::load`], with a session allow-list of `slots` connection slots for each
    /// receive queue id below `queue_span`. The map is preallocated: its memory is
    /// committed here, so a size the kernel cannot hold fails now, never a worker's
    /// update later.
    pub fn load_sized(slots: u32, queue_span: u32) -> Result<Self, LoadError> {
        if !EMBEDDED {
            return Err(LoadError::NoXdpProgram);
        }
        let slots = slots.max(1);
        let sessions = slots.saturating_mul(queue_span.max(1));
        // No kernel BTF: the program uses no CO-RE relocations, and parsing
        // /sys/kernel/btf/vmlinux would cost the engine tens of MiB of RSS for nothing.
        let mut ebpf = aya::EbpfLoader::new()
            .btf(None)
            .map_max_entries(maps::SESSIONS, sessions)
            .load(OBJECT)
            .map_err(|e| match e {
                aya::EbpfError::MapError(source) => LoadError::SessionMap { sessions, source },
                e => LoadError::Load(e),
            })?;
        let prog: &mut Xdp = program_mut(&mut ebpf)?;
        prog.load().map_err(LoadError::Program)?;
        Ok(Self {
            ebpf,
            mode: None,
            sessions: SessionSlots::new(slots),
        })
    }

    /// Writes the steered ports and the run-time flags.
    pub fn configure(&mut self, ports: &[u16], rudp_filter: bool) -> Result<(), LoadError> {
        let mut words = [0u64; maps::PORT_WORDS as usize];
        for &p in ports {
            let (w, bit) = maps::port_slot(p);
            words[w as usize] |= bit;
        }
        let mut map: Array<&mut MapData, u64> = self.map_mut(maps::PORTS)?;
        for (i, w) in words.iter().enumerate() {
            if *w != 0 {
                map.set(i as u32, w, 0).map_err(|source| LoadError::Map {
                    name: maps::PORTS,
                    source,
                })?;
            }
        }
        let cfg = Config {
            flags: if rudp_filter {
                Config::FLAG_RUDP_FILTER
            } else {
                0
            },
            sessions: self.sessions,
            ..Config::default()
        };
        let mut map: Array<&mut MapData, Config> = self.map_mut(maps::CONFIG)?;
        map.set(0, cfg, 0).map_err(|source| LoadError::Map {
            name: maps::CONFIG,
            source,
        })
    }

    /// Turns admission control on (with its rates) or off, on top of what
    /// [`Program::configure`] wrote. It acts only with the RUDP pre-filter.
    pub fn admission(&mut self, rates: Option<AdmissionRates>) -> Result<(), LoadError> {
        let mut map: Array<&mut MapData, Config> = self.map_mut(maps::CONFIG)?;
        let mut cfg = map.get(&0, 0).map_err(|source| LoadError::Map {
            name: maps::CONFIG,
            source,
        })?;
        match rates {
            Some(r) => {
                cfg.flags |= Config::FLAG_ADMISSION;
                cfg.source = r.source;
                cfg.hello = r.hello;
                cfg.migration = r.migration;
            }
            None => cfg.flags &= !Config::FLAG_ADMISSION,
        }
        map.set(0, cfg, 0).map_err(|source| LoadError::Map {
            name: maps::CONFIG,
            source,
        })
    }

    /// A descriptor of the session allow-list, for a worker to publish its sessions.
    pub fn session_map(&self) -> Result<SessionMap, LoadError> {
        let map = self
            .ebpf
            .map(maps::SESSIONS)
            .ok_or_else(|| no_map(maps::SESSIONS))?;
        let fd = match map {
            aya::maps::Map::Array(m) => m.fd().as_fd().try_clone_to_owned(),
            _ => {
                return Err(LoadError::Map {
                    name: maps::SESSIONS,
                    source: aya::maps::MapError::InvalidName {
                        name: maps::SESSIONS.into(),
                    },
                });
            }
        };
        fd.map(|fd| SessionMap::new(fd, self.sessions))
            .map_err(|e| LoadError::Map {
                name: maps::SESSIONS,
                source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                    call: "dup",
                    io_error: e,
                }),
            })
    }

    /// Puts an AF_XDP socket in the XSKMAP slot of `queue`.
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), LoadError> {
        let map = self
            .ebpf
            .map_mut(maps::XSKS)
            .ok_or_else(|| no_map(maps::XSKS))?;
        let mut xsks: XskMap<&mut MapData> =
            XskMap::try_from(map).map_err(|source| LoadError::Map {
                name: maps::XSKS,
                source,
            })?;
        // SAFETY-free: `fd` is borrowed only for the duration of the update syscall.
        let borrowed = BorrowedRaw(fd);
        xsks.set(queue, borrowed, 0)
            .map_err(|source| LoadError::Map {
                name: maps::XSKS,
                source,
            })
    }

    /// Attaches to `iface` in the requested mode, falling back from native to SKB mode
    /// under [`ModeChoice::Auto`]. Returns the mode in use.
    pub fn attach(&mut self, iface: &str, choice: ModeChoice) -> Result<Mode, LoadError> {
        let tries: &[Mode] = match choice {
            ModeChoice::Auto => &[Mode::Native, Mode::Skb],
            ModeChoice::Native => &[Mode::Native],
            ModeChoice::Skb => &[Mode::Skb],
        };
        let prog: &mut Xdp = program_mut(&mut self.ebpf)?;
        for (i, &mode) in tries.iter().enumerate() {
            let flags = match mode {
                Mode::Native => XdpMode::Driver,
                Mode::Skb => XdpMode::Skb,
            };
            match prog.attach(iface, flags) {
                Ok(_) => {
                    self.mode = Some(mode);
                    return Ok(mode);
                }
                Err(source) if i + 1 == tries.len() => {
                    let hint = attach_hint(&source, mode);
                    return Err(LoadError::Attach {
                        iface: iface.to_owned(),
                        mode,
                        source,
                        hint,
                    });
                }
                Err(e) => {
                    tracing::warn!(iface, error = %e, "native XDP attach failed; falling back to skb mode");
                }
            }
        }
        unreachable_attach(iface)
    }

    /// The mode the program is attached in, once attached.
    #[must_use]
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// The XDP counters summed over CPUs, indexed by [`Counter`].
    pub fn counters(&self) -> Result<Vec<u64>, LoadError> {
        let map = self
            .ebpf
            .map(maps::COUNTERS)
            .ok_or_else(|| no_map(maps::COUNTERS))?;
        let arr: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|source| LoadError::Map {
                name: maps::COUNTERS,
                source,
            })?;
        Counter::ALL
            .iter()
            .map(|&c| {
                arr.get(&(c as u32), 0)
                    .map(|v| v.iter().sum())
                    .map_err(|source| LoadError::Map {
                        name: maps::COUNTERS,
                        source,
                    })
            })
            .collect()
    }

    /// Runs the program once on `frame` through `BPF_PROG_TEST_RUN`; returns the XDP action.
    pub fn test_run(&self, frame: &[u8]) -> Result<u32, LoadError> {
        self.test_run_repeat(frame, 1).map(|(action, _)| action)
    }

    /// Runs the program `repeat` times on `frame` in the kernel (`BPF_PROG_TEST_RUN`);
    /// returns the XDP action and the kernel's mean time per run.
    pub fn test_run_repeat(
        &self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, std::time::Duration), LoadError> {
        use aya::programs::{TestRun as _, TestRunOptions};
        let prog: &Xdp = self
            .ebpf
            .program(PROGRAM)
            .ok_or_else(no_program)?
            .try_into()
            .map_err(LoadError::Program)?;
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let r = prog.test_run(opts).map_err(LoadError::Program)?;
        Ok((r.return_value, r.duration))
    }

    fn map_mut<V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<Array<&mut MapData, V>, LoadError> {
        let map = self.ebpf.map_mut(name).ok_or_else(|| no_map(name))?;
        Array::try_from(map).map_err(|source| LoadError::Map { name, source })
    }
}

/// The error for a map named `name` that the loaded object lacks.
fn no_map(name: &'static str) -> LoadError {
    LoadError::Map {
        name,
        source: aya::maps::MapError::InvalidName { name: name.into() },
    }
}

/// The error for a loaded object that lacks the `xrudp` program.
fn no_program() -> LoadError {
    LoadError::Map {
        name: "program xrudp",
        source: aya::maps::MapError::InvalidName {
            name: PROGRAM.into(),
        },
    }
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    ebpf.program_mut(PROGRAM)
        .ok_or_else(no_program)?
        .try_into()
        .map_err(LoadError::Program)
}

/// `tries` is never empty and its last failure returns; this keeps the types honest
/// without a panic path.
fn unreachable_attach(iface: &str) -> Result<Mode, LoadError> {
    Err(LoadError::Attach {
        iface: iface.to_owned(),
        mode: Mode::Skb,
        source: aya::programs::ProgramError::UnknownInterface {
            name: iface.to_owned(),
        },
        hint: "no attach mode was tried",
    })
}

fn attach_hint(e: &aya::programs::ProgramError, mode: Mode) -> &'static str {
    match errno(e) {
        Some(libc::EEXIST | libc::EBUSY) => {
            "another XDP program is attached to this interface: if it is a stale xrudp attachment, \
             run `xrudp detach --iface IF`; otherwise stop the program that owns it"
        }
        _ if mode == Mode::Native => "the driver may not support native XDP: retry with --mode skb",
        Some(libc::EPERM | libc::EACCES) => {
            "run as root (or with CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)"
        }
        _ => "check `ip link show IF` and the kernel log (dmesg)",
    }
}

/// The errno behind an attach failure: aya reports it through a netlink error (legacy
/// attach), a syscall error (`bpf_link_create`) or a bare `io::Error`.
fn errno(e: &aya::programs::ProgramError) -> Option<i32> {
    use aya::programs::{ProgramError, xdp::XdpError};
    match e {
        ProgramError::XdpError(XdpError::NetlinkError(n)) => n.raw_os_error(),
        ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        ProgramError::IOError(io) => io.raw_os_error(),
        other => {
            let mut source = std::error::Error::source(other);
            while let Some(s) = source {
                if let Some(io) = s.downcast_ref::<std::io::Error>() {
                    return io.raw_os_error();
                }
                source = s.source();
            }
            None
        }
    }
}

/// A raw descriptor viewed as `AsRawFd` for one map update.
struct BorrowedRaw(RawFd);

impl std::os::fd::AsRawFd for BorrowedRaw {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syscall(errno: i32) -> aya::programs::ProgramError {
        aya::programs::ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_link_create",
            io_error: std::io::Error::from_raw_os_error(errno),
        })
    }

    #[test]
    fn attach_hint_reads_the_errno_not_the_text() {
        for e in [libc::EBUSY, libc::EEXIST] {
            assert!(attach_hint(&syscall(e), Mode::Skb).contains("another XDP program"));
            assert!(attach_hint(&syscall(e), Mode::Native).contains("another XDP program"));
        }
        assert!(attach_hint(&syscall(libc::EOPNOTSUPP), Mode::Native).contains("--mode skb"));
        assert!(attach_hint(&syscall(libc::EPERM), Mode::Skb).contains("run as root"));
        assert!(attach_hint(&syscall(libc::EINVAL), Mode::Skb).contains("dmesg"));
        let io =
            aya::programs::ProgramError::IOError(std::io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(errno(&io), Some(libc::EBUSY));
    }

    #[test]
    fn a_stub_build_refuses_to_load_and_says_how_to_rebuild() {
        if EMBEDDED {
            eprintln!(
                "this build embeds the XDP program; the stub path is tested with XRUDP_BUILD_EBPF=0"
            );
            return;
        }
        let e = Program::load().expect_err("the stub object must not load");
        assert!(matches!(e, LoadError::NoXdpProgram));
        assert!(e.to_string().contains("XRUDP_BUILD_EBPF=1"), "{e}");
    }
}
