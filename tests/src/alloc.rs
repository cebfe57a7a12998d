//! Counting what one engine worker allocates, for the steady-state allocation tests
//! (tests/datapath_alloc.rs, tests/proto_alloc.rs).
//!
//! A test binary installs [`ThreadCounting`] as its global allocator, runs the engine in
//! its own process ([`InProcessEngine`], inside the server namespace), finds the worker
//! thread by name and counts only what that thread allocates ([`count_thread`]): the
//! control thread, the test's clients and the main engine thread are not counted.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    fs::File,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::sched::{CloneFlags, setns};

/// A global allocator that forwards to the system allocator and counts allocations
/// (alloc, zeroed alloc, realloc) made by the thread [`count_thread`] watches.
#[derive(Debug)]
pub struct ThreadCounting;

static WATCHED: AtomicI32 = AtomicI32::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Sizes of the first counted allocations, to tell what allocated in a failure message.
static SIZES: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn note(size: usize) {
    let watched = WATCHED.load(Relaxed);
    // SAFETY: gettid has no preconditions and does not allocate.
    if watched != 0 && unsafe { libc::gettid() } == watched {
        let n = ALLOCS.fetch_add(1, Relaxed);
        if let Some(s) = SIZES.get(n as usize) {
            s.store(size as u64, Relaxed);
        }
        counted(size);
    }
}

/// A counted allocation: a function of its own, for a debugger's breakpoint.
#[inline(never)]
fn counted(size: usize) {
    std::hint::black_box(size);
}

// SAFETY: every method forwards to the system allocator unchanged; counting touches only
// atomics.
unsafe impl GlobalAlloc for ThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` while counting what thread `tid` allocates; returns `f`'s result and the
/// count. Only counts when [`ThreadCounting`] is the binary's global allocator.
pub fn count_thread<R>(tid: i32, f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.store(0, Relaxed);
    for s in &SIZES {
        s.store(0, Relaxed);
    }
    WATCHED.store(tid, Relaxed);
    let r = f();
    WATCHED.store(0, Relaxed);
    (r, ALLOCS.load(Relaxed))
}

/// Sizes of the first (up to 8) allocations of the last [`count_thread`].
#[must_use]
pub fn first_sizes() -> Vec<u64> {
    let n = ALLOCS.load(Relaxed).min(SIZES.len() as u64) as usize;
    SIZES[..n].iter().map(|s| s.load(Relaxed)).collect()
}

/// The kernel thread id of this process's thread named `name` (/proc/self/task/*/comm).
#[must_use]
pub fn thread_tid(name: &str) -> Option<i32> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .flatten()
        .find_map(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == name)
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
}

/// The engine running in this process, inside a network namespace.
#[derive(Debug)]
pub struct InProcessEngine {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<(), String>>,
    /// Kernel thread id of the worker named at start.
    pub worker_tid: i32,
}

impl InProcessEngine {
    /// Starts `xrudp::engine::run(options)` on a thread that enters namespace `ns`, and
    /// waits (up to 30 s) for its worker thread `worker` (e.g. `xrudp-q0`) to appear.
    #[must_use]
    pub fn start(ns: &str, options: xrudp::engine::Options, worker: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let path = format!("/var/run/netns/{ns}");
        let stop2 = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let f = File::open(&path).expect("server namespace");
            setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
            xrudp::engine::run(&options, &stop2).map_err(|e| format!("{e:#}"))
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let worker_tid = loop {
            if let Some(tid) = thread_tid(worker) {
                break tid;
            }
            assert!(
                !handle.is_finished(),
                "the engine stopped: {:?}",
                handle.join()
            );
            assert!(Instant::now() < deadline, "no worker thread within 30 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            stop,
            handle,
            worker_tid,
        }
    }

    /// Stops the engine and checks it ran cleanly.
    pub fn stop(self) {
        self.stop.store(true, Relaxed);
        self.handle
            .join()
            .expect("engine thread")
            .expect("engine ran cleanly");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: ThreadCounting = ThreadCounting;

    #[test]
    fn counts_the_watched_thread_only() {
        // SAFETY: gettid has no preconditions.
        let me = unsafe { libc::gettid() };
        let (v, n) = count_thread(me, || std::hint::black_box(Vec::<u8>::with_capacity(100)));
        assert_eq!(n, 1, "one allocation on this thread");
        assert_eq!(first_sizes(), vec![100]);
        drop(v);
        let (_, other) = count_thread(me, || {
            std::thread::spawn(|| std::hint::black_box(vec![0u8; 12_345]))
                .join()
                .expect("thread")
        });
        // Spawning allocates on this thread; the vector is another thread's and is not
        // counted.
        assert!(
            !first_sizes().contains(&12_345),
            "{other} counted: {:?}",
            first_sizes()
        );
        let (_, none) = count_thread(me, || std::hint::black_box(1 + 1));
        assert_eq!(none, 0);
    }
}
