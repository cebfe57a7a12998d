//! The noise-floor probe: one thread per core, pinned, spinning on the clock and counting
//! the gaps between consecutive readings — time the core was not given to it.
//!
//! The probe threads run under `SCHED_IDLE`, so they take only CPU time nothing else
//! wants and never delay the server or the load generator. A gap is therefore time the
//! core spent elsewhere: taken away by the hypervisor (steal), or running other work
//! (the server, the load generator, softirq) for that long. On a core that is busy the
//! whole run (a busy-polling worker) the probe starves, which shows as a gap as long as
//! the run; the report says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

/// Gaps longer than this are counted.
pub const SHORT_GAP: Duration = Duration::from_micros(50);
/// Gaps longer than this are counted separately.
pub const LONG_GAP: Duration = Duration::from_millis(1);

/// What the probe on one core saw.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Gaps {
    /// The core.
    pub core: usize,
    /// Who measured: "probe" (a SCHED_IDLE thread) or "load-loop" (a spinning load
    /// thread's own loop).
    pub source: &'static str,
    /// Whether the thread could be pinned to that core and lowered to `SCHED_IDLE`.
    pub pinned: bool,
    /// Gaps longer than 50 µs.
    pub over_50us: u64,
    /// Gaps longer than 1 ms.
    pub over_1ms: u64,
    /// The longest gap, µs.
    pub longest_us: f64,
    /// Sum of the gaps over 50 µs, as a share of the probe's run time.
    pub lost_share: f64,
    /// How long the probe ran, s.
    pub ran_secs: f64,
}

/// Probe threads running until [`Probe::finish`].
#[derive(Debug)]
pub struct Probe {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Gaps>>,
}

impl Probe {
    /// Starts one probe thread on each of `cores`.
    pub fn start(cores: &[usize]) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(cores.len());
        for &core in cores {
            let stop = Arc::clone(&stop);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("probe-{core}"))
                    .spawn(move || spin(core, &stop))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Stops the probes and returns each core's gaps.
    #[must_use]
    pub fn finish(self) -> Vec<Gaps> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .collect()
    }
}

fn spin(core: usize, stop: &AtomicBool) -> Gaps {
    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: core })
        && set_idle_policy().is_ok();
    let mut rec = Recorder::new(core);
    let mut n: u32 = 0;
    loop {
        rec.tick(Instant::now());
        n = n.wrapping_add(1);
        if n.is_multiple_of(1024) && stop.load(Ordering::Relaxed) {
            break;
        }
    }
    rec.finish(pinned)
}

/// Gap accounting over successive clock readings (the probe's loop, or a spinning load
/// thread's).
#[derive(Debug)]
pub struct Recorder {
    core: usize,
    start: Option<Instant>,
    last: Option<Instant>,
    over_50us: u64,
    over_1ms: u64,
    lost: Duration,
    longest: Duration,
}

impl Recorder {
    /// No readings yet, for `core`.
    #[must_use]
    pub fn new(core: usize) -> Self {
        Self {
            core,
            start: None,
            last: None,
            over_50us: 0,
            over_1ms: 0,
            lost: Duration::ZERO,
            longest: Duration::ZERO,
        }
    }

    /// One clock reading.
    pub fn tick(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last);
            if gap > SHORT_GAP {
                self.over_50us += 1;
                self.lost += gap;
                if gap > LONG_GAP {
                    self.over_1ms += 1;
                }
                self.longest = self.longest.max(gap);
            }
        } else {
            self.start = Some(now);
        }
        self.last = Some(now);
    }

    /// The figures; `pinned` says whether the readings came from a thread pinned to the core.
    #[must_use]
    pub fn finish(&self, pinned: bool) -> Gaps {
        let ran = self
            .start
            .zip(self.last)
            .map_or(Duration::ZERO, |(a, b)| b.saturating_duration_since(a));
        Gaps {
            core: self.core,
            source: "probe",
            pinned,
            over_50us: self.over_50us,
            over_1ms: self.over_1ms,
            longest_us: self.longest.as_secs_f64() * 1e6,
            lost_share: if ran.is_zero() {
                0.0
            } else {
                self.lost.as_secs_f64() / ran.as_secs_f64()
            },
            ran_secs: ran.as_secs_f64(),
        }
    }
}

/// Moves the calling thread to `SCHED_IDLE` (sched(7)); see [`xrudp_xdp::os::set_thread_idle`].
fn set_idle_policy() -> std::io::Result<()> {
    xrudp_xdp::os::set_thread_idle()
}
