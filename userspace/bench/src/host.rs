//! Figures read from procfs around a measured window: each core's busy, softirq and steal
//! time (`/proc/stat`), a process's on-CPU time summed over its threads
//! (`/proc/PID/task/*/schedstat`, nanoseconds) and its resident memory
//! (`/proc/PID/status`).

use std::fs;

use serde::Serialize;

/// One core's `/proc/stat` counters, in clock ticks (USER_HZ).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// The core.
    pub core: usize,
    /// user + nice + system + irq + softirq.
    pub busy: u64,
    /// softirq alone.
    pub softirq: u64,
    /// Time the hypervisor ran something else.
    pub steal: u64,
    /// Every field summed (the elapsed ticks).
    pub total: u64,
}

/// One core's share of a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CpuShare {
    /// The core.
    pub core: usize,
    /// Busy (user, system, irq, softirq), share of the window.
    pub busy: f64,
    /// Softirq alone, share of the window.
    pub softirq: f64,
    /// Steal, share of the window.
    pub steal: f64,
}

/// Reads every core's counters from `/proc/stat`.
#[must_use]
pub fn cpu_ticks() -> Vec<CpuTicks> {
    fs::read_to_string("/proc/stat")
        .map(|s| parse_stat(&s))
        .unwrap_or_default()
}

/// Parses the per-core `cpuN` lines of `/proc/stat` (proc(5)).
#[must_use]
pub fn parse_stat(text: &str) -> Vec<CpuTicks> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(core) = fields
            .next()
            .and_then(|name| name.strip_prefix("cpu"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let v: Vec<u64> = fields.map_while(|f| f.parse().ok()).collect();
        if v.len() < 8 {
            continue;
        }
        // user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is
        // already counted in user, so only the first eight are summed.
        out.push(CpuTicks {
            core,
            busy: v[0] + v[1] + v[2] + v[5] + v[6],
            softirq: v[6],
            steal: v[7],
            total: v[..8].iter().sum(),
        });
    }
    out
}

/// Each core's shares between two readings.
#[must_use]
pub fn shares(before: &[CpuTicks], after: &[CpuTicks]) -> Vec<CpuShare> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.core == a.core)?;
            let total = a.total.saturating_sub(b.total);
            if total == 0 {
                return None;
            }
            let share = |x: u64, y: u64| x.saturating_sub(y) as f64 / total as f64;
            Some(CpuShare {
                core: a.core,
                busy: share(a.busy, b.busy),
                softirq: share(a.softirq, b.softirq),
                steal: share(a.steal, b.steal),
            })
        })
        .collect()
}

/// The cores that running xrudp engines have pinned a worker to: threads named
/// `xrudp-q<N>` (AF_XDP) or `xrudp-s<N>` (kernel sockets) allowed on exactly one core.
/// Threads and processes that come and go meanwhile are skipped.
#[must_use]
pub fn engine_worker_cores() -> Vec<usize> {
    let mut cores = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return cores;
    };
    for p in procs.flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(tasks) = fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            if !is_worker_name(comm.trim_end()) {
                continue;
            }
            let status = fs::read_to_string(t.path().join("status")).unwrap_or_default();
            if let Some(&[core]) = status
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .map(parse_cpu_list)
                .as_deref()
                && !cores.contains(&core)
            {
                cores.push(core);
            }
        }
    }
    cores.sort_unstable();
    cores
}

/// Whether a thread name is an engine worker's (`xrudp-q3`, `xrudp-s0`).
#[must_use]
pub fn is_worker_name(comm: &str) -> bool {
    ["xrudp-q", "xrudp-s"].iter().any(|p| {
        comm.strip_prefix(p)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// A kernel CPU list (`0-3,6`) as core numbers; nothing for text it cannot read.
#[must_use]
pub fn parse_cpu_list(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let range = match part.split_once('-') {
            Some((a, b)) => a
                .trim()
                .parse::<usize>()
                .ok()
                .zip(b.trim().parse::<usize>().ok()),
            None => part.trim().parse::<usize>().ok().map(|a| (a, a)),
        };
        match range {
            // A list longer than any machine's cores is not one this reads.
            Some((a, b)) if a <= b && b - a < 4096 => out.extend(a..=b),
            _ => return Vec::new(),
        }
    }
    out
}

/// A process's time on CPU, nanoseconds, summed over its live threads; `None` if the
/// process is gone.
#[must_use]
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let dir = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut sum = 0u64;
    for task in dir.flatten() {
        // A thread that exits meanwhile is skipped.
        if let Ok(s) = fs::read_to_string(task.path().join("schedstat")) {
            sum += parse_schedstat(&s).unwrap_or(0);
        }
    }
    Some(sum)
}

/// The calling thread's time on CPU, nanoseconds.
#[must_use]
pub fn thread_cpu_ns() -> Option<u64> {
    parse_schedstat(&fs::read_to_string("/proc/thread-self/schedstat").ok()?)
}

/// The first field of a `schedstat` file: time spent on the CPU, ns.
#[must_use]
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// Resident memory of a process, bytes: `(VmRSS, VmHWM)`.
#[must_use]
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    parse_status(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `(VmRSS, VmHWM)` in bytes from a `/proc/PID/status` text.
#[must_use]
pub fn parse_status(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_ascii_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_worker_names_parse() {
        assert_eq!(parse_cpu_list("1\n"), [1]);
        assert_eq!(parse_cpu_list("0-3,6"), [0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("3-1"), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("x"), Vec::<usize>::new());
        assert_eq!(parse_cpu_list("0-999999"), Vec::<usize>::new());
        assert!(is_worker_name("xrudp-q0"));
        assert!(is_worker_name("xrudp-s12"));
        assert!(!is_worker_name("xrudp-q"));
        assert!(!is_worker_name("xrudp-ctl"));
        assert!(!is_worker_name("xrudp"));
    }

    #[test]
    fn stat_lines_parse_and_diff() {
        let before = parse_stat(
            "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0 0 0\ncpu1 5 0 5 50 0 0 0 0 0 0\nintr 1 2\n",
        );
        assert_eq!(before.len(), 2, "the aggregate line is skipped");
        let after = parse_stat("cpu0 25 0 15 100 0 2 8 10 0 0\ncpu1 5 0 5 150 0 0 0 0 0 0\n");
        let s = shares(&before, &after);
        assert_eq!(s.len(), 2);
        // cpu0: 100 ticks elapsed, busy 20+10+2+8 = 40, softirq 8, steal 10.
        assert!((s[0].busy - 0.40).abs() < 1e-9);
        assert!((s[0].softirq - 0.08).abs() < 1e-9);
        assert!((s[0].steal - 0.10).abs() < 1e-9);
        assert!(s[1].busy.abs() < 1e-9);
    }

    #[test]
    fn status_and_schedstat_parse() {
        let st = "Name:\txrudp\nVmHWM:\t   9000 kB\nVmRSS:\t    8192 kB\nThreads:\t3\n";
        assert_eq!(parse_status(st), Some((8192 * 1024, 9000 * 1024)));
        assert_eq!(parse_status("Name: x\n"), None);
        assert_eq!(parse_schedstat("123456 789 10\n"), Some(123_456));
        assert_eq!(parse_schedstat(""), None);
        assert!(thread_cpu_ns().is_some());
        assert!(process_cpu_ns(std::process::id()).is_some());
        assert!(rss(std::process::id()).is_some_and(|(r, h)| r > 0 && h >= r));
    }
}
