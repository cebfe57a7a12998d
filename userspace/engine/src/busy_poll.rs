//! Preferred busy polling (`--busy-poll`): socket options on each AF_XDP socket and the
//! interface's IRQ-deferral knobs, restored when the engine stops.
//!
//! With `SO_PREFER_BUSY_POLL` the application's `poll()`/`sendto()` drives the queue's
//! NAPI context; `napi_defer_hard_irqs` and `gro_flush_timeout` keep the device's own
//! interrupts out of the way meanwhile, with the timeout as a safety net should the
//! application stop polling (kernel Documentation/networking/napi.rst, "Busy polling" and
//! "IRQ mitigation"). Where the kernel or driver refuses a setting the engine says which
//! and carries on: busy polling is a latency optimisation, not a requirement.

use std::{fs, io, path::PathBuf};

use crate::sys;

/// `SO_BUSY_POLL`: microseconds a busy-poll call may spin for packets.
pub const BUSY_POLL_USECS: i32 = 20;
/// `SO_BUSY_POLL_BUDGET`: packets one busy-poll round may process.
pub const BUSY_POLL_BUDGET: i32 = 64;
/// `napi_defer_hard_irqs`: NAPI polls that may find nothing before IRQs come back.
pub const DEFER_HARD_IRQS: &str = "2";
/// `gro_flush_timeout` in ns: the watchdog that re-arms IRQs if polling stops.
pub const GRO_FLUSH_TIMEOUT_NS: &str = "200000";

/// What could and could not be set, for the log.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Settings that took effect.
    pub applied: Vec<String>,
    /// Settings the kernel or driver refused, with the reason.
    pub refused: Vec<String>,
}

/// Sets the three busy-poll socket options on an AF_XDP socket.
pub fn configure_socket(fd: i32, out: &mut Outcome) {
    for (name, opt, value) in [
        ("SO_PREFER_BUSY_POLL", libc::SO_PREFER_BUSY_POLL, 1),
        ("SO_BUSY_POLL", libc::SO_BUSY_POLL, BUSY_POLL_USECS),
        (
            "SO_BUSY_POLL_BUDGET",
            libc::SO_BUSY_POLL_BUDGET,
            BUSY_POLL_BUDGET,
        ),
    ] {
        match sys::set_sockopt_int(fd, libc::SOL_SOCKET, opt, value) {
            Ok(()) => out.applied.push(format!("{name}={value} (fd {fd})")),
            Err(e) => out.refused.push(format!("{name}={value} (fd {fd}): {e}")),
        }
    }
}

/// The interface's sysfs knobs as they were before the engine changed them; writing
/// them back on drop restores the interface even when the engine fails later on.
#[derive(Debug)]
pub struct IfaceKnobs {
    saved: Vec<(PathBuf, String)>,
}

impl IfaceKnobs {
    /// Sets `napi_defer_hard_irqs` and `gro_flush_timeout` on `iface`, remembering the
    /// previous values. Refusals go to `out` and are not errors.
    #[must_use]
    pub fn apply(iface: &str, out: &mut Outcome) -> Self {
        let dir = PathBuf::from("/sys/class/net").join(iface);
        let mut saved = Vec::new();
        for (knob, value) in [
            ("napi_defer_hard_irqs", DEFER_HARD_IRQS),
            ("gro_flush_timeout", GRO_FLUSH_TIMEOUT_NS),
        ] {
            let path = dir.join(knob);
            match swap(&path, value) {
                Ok(old) => {
                    out.applied.push(format!("{knob}={value} (was {old})"));
                    saved.push((path, old));
                }
                Err(e) => out.refused.push(format!("{}={value}: {e}", path.display())),
            }
        }
        Self { saved }
    }

    /// Whether anything was changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.saved.is_empty()
    }
}

impl Drop for IfaceKnobs {
    fn drop(&mut self) {
        for (path, old) in self.saved.drain(..) {
            if let Err(e) = fs::write(&path, &old) {
                tracing::warn!(path = %path.display(), value = %old, error = %e, "could not restore a busy-poll setting");
            } else {
                tracing::info!(path = %path.display(), value = %old, "restored");
            }
        }
    }
}

fn swap(path: &std::path::Path, value: &str) -> io::Result<String> {
    let old = fs::read_to_string(path)?.trim().to_owned();
    fs::write(path, value)?;
    Ok(old)
}
