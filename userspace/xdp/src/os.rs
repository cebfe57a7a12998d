//! Two process and thread calls both loops need: the effective uid (AF_XDP and XDP want
//! root or the matching capabilities, so callers check it before they try) and moving a
//! thread to `SCHED_IDLE`.

use std::io;

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
