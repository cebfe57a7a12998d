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
pub(crate) const BUSY_POLL_USECS: i32 = 20;
/// `SO_BUSY_POLL_BUDGET`: packets one busy-poll round may process.
pub(crate) const BUSY_POLL_BUDGET: i32 = 64;
/// `napi_defer_hard_irqs`: NAPI polls that may find nothing before IRQs come back.
pub(crate) const DEFER_HARD_IRQS: &str = "2";
/// `gro_flush_timeout` in ns: the watchdog that re-arms IRQs if polling stops.
pub(crate) const GRO_FLUSH_TIMEOUT_NS: &str = "200000";

/// What could and could not be set, for the log.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Settings that took effect.
    pub applied: Vec<String>,
    /// Settings the kernel or driver refused, with the reason.
    pub refused: Vec<String>,
}

/// Sets the three busy-poll socket options on an AF_XDP socket.
pub(crate) fn configure_socket(fd: i32, out: &mut Outcome) {
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
pub(crate) struct IfaceKnobs {
    saved: Vec<(PathBuf, String)>,
}

impl IfaceKnobs {
    /// Sets `napi_defer_hard_irqs` and `gro_flush_timeout` on `iface`, remembering the
    /// previous values. Refusals go to `out` and are not errors.
    #[must_use]
    pub(crate) fn apply(iface: &str, out: &mut Outcome) -> Self {
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
    pub(crate) fn is_empty(&self) -> bool {
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

/// The interface knobs of a busy-polling engine, shared by its workers: preferred busy
/// polling only works on a queue whose NAPI context has an id the socket learns from its
/// first packets. Where a queue has none (veth registers its XDP queues before their
/// NAPI gets an id), `poll()` cannot drive that queue, and deferring its interrupts would
/// only hold every packet for `gro_flush_timeout`: the first worker to see that restores
/// the interface's settings and says so.
#[derive(Debug, Default)]
pub(crate) struct Knobs {
    knobs: std::sync::Mutex<Option<IfaceKnobs>>,
}

impl Knobs {
    /// Holds `knobs` (none: nothing to restore).
    #[must_use]
    pub(crate) fn new(knobs: Option<IfaceKnobs>) -> Self {
        Self {
            knobs: std::sync::Mutex::new(knobs),
        }
    }

    /// Called once per queue, after its first packets, with the socket's
    /// `SO_INCOMING_NAPI_ID`. Returns the id to publish (0 when the kernel has none).
    #[cold]
    pub(crate) fn queue_napi_id(&self, queue: u32, napi_id: io::Result<i32>) -> u32 {
        let id = match napi_id {
            Ok(id) => u32::try_from(id).unwrap_or(0),
            Err(e) => {
                tracing::debug!(queue, error = %e, "SO_INCOMING_NAPI_ID unreadable");
                0
            }
        };
        let mut knobs = self
            .knobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if id == 0 && knobs.as_ref().is_some_and(|k| !k.is_empty()) {
            tracing::warn!(
                queue,
                "this queue's NAPI context has no id (veth does this), so busy polling cannot \
                 drive it; restoring napi_defer_hard_irqs and gro_flush_timeout, which would \
                 otherwise hold each packet until the flush timeout. The worker keeps spinning."
            );
            // Dropping the guard writes the saved values back.
            *knobs = None;
        } else if id != 0 {
            tracing::info!(
                queue,
                napi_id = id,
                "busy polling drives this queue's NAPI context"
            );
        }
        id
    }
}

fn swap(path: &std::path::Path, value: &str) -> io::Result<String> {
    let old = fs::read_to_string(path)?.trim().to_owned();
    fs::write(path, value)?;
    Ok(old)
}
