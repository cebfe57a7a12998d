//! The run's summary: figures merged over the threads, as a table for people and one JSON
//! object for scripts.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::host::CpuShare;
use super::probe::Gaps;

/// Percentiles of a histogram of nanoseconds, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Summarises `h` (values in ns) in µs; all zero when empty.
    #[must_use]
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = micros;
        Self {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The settings a run used.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    /// Server address.
    pub server: String,
    /// Connections asked for.
    pub clients: usize,
    /// Load threads.
    pub threads: usize,
    /// Offered rate, messages per second (all threads).
    pub rate: u64,
    /// Message size, bytes.
    pub size: usize,
    /// Channel index.
    pub channel: u8,
    /// Schedule length, s.
    pub duration_secs: f64,
    /// How the threads waited.
    pub wait: super::loadgen::Wait,
    /// How the load moved its datagrams: kernel sockets or AF_XDP.
    pub backend: super::Backend,
}

/// Message accounting.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Messages {
    /// Messages in the schedule.
    pub scheduled: u64,
    /// Messages the protocol took.
    pub sent: u64,
    /// Refused by a full send queue (never sent).
    pub send_refused: u64,
    /// Due on a connection that had closed (never sent).
    pub not_connected: u64,
    /// Distinct messages echoed back.
    pub echoed: u64,
    /// Scheduled but never echoed: `scheduled - echoed`.
    pub lost: u64,
    /// `lost / scheduled`.
    pub loss_ratio: f64,
    /// Echoes of an already echoed message.
    pub duplicates: u64,
    /// Messages that did not carry one of this run's stamps.
    pub foreign: u64,
}

/// The server process's figures, when its pid was given.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerFigures {
    /// Its pid.
    pub pid: u32,
    /// CPU time of all its threads over the schedule, ns.
    pub cpu_ns: u64,
    /// `cpu_ns` per echoed message.
    pub cpu_ns_per_msg: f64,
    /// Resident memory at the end of the schedule (connections still open), bytes.
    pub rss_bytes: u64,
    /// Peak resident memory so far, bytes.
    pub hwm_bytes: u64,
}

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// What was asked for.
    pub settings: Settings,
    /// Connections admitted.
    pub connected: u64,
    /// Connections that failed to open.
    pub connect_failed: u64,
    /// Why the first one failed.
    pub connect_failure: Option<String>,
    /// Connect times, µs.
    pub connect_us: Percentiles,
    /// Connections that closed during the run, and the first reason.
    pub closed_during_run: u64,
    /// The first reason a connection closed during the run.
    pub close_reason: Option<String>,
    /// Message accounting.
    pub messages: Messages,
    /// Offered rate actually scheduled, messages per second.
    pub offered_msg_per_s: f64,
    /// Distinct echoes per second of schedule.
    pub achieved_msg_per_s: f64,
    /// Round-trip time from each message's scheduled send to its echo, µs.
    pub rtt_us: Percentiles,
    /// Data packets that carried a retransmission.
    pub retransmitted_packets: u64,
    /// Datagrams the clients produced.
    pub packets_out: u64,
    /// `retransmitted_packets / packets_out`.
    pub retransmission_ratio: f64,
    /// Client socket errors, and datagrams the kernel would not take.
    pub socket_errors: u64,
    /// Datagrams the kernel would not take on the client side.
    pub send_dropped: u64,
    /// Received datagrams the load backend dropped (malformed, bad checksum, unknown
    /// port): zero unless something else sends to the load's ports.
    pub rx_dropped: u64,
    /// The load threads' CPU time per echoed message, ns.
    pub loadgen_cpu_ns_per_msg: f64,
    /// The load threads' I/O syscalls per datagram moved: `sendmmsg` and `recvmmsg`
    /// calls (socket backend) or TX kicks (xdp); waits for input are not counted.
    pub loadgen_syscalls_per_datagram: f64,
    /// Each core's busy, softirq and steal share over the schedule. The probe's
    /// `SCHED_IDLE` spinning counts as busy: use `--no-probe` for these figures.
    pub cpu: Vec<CpuShare>,
    /// The noise-floor probe's gaps per core.
    pub probe: Vec<Gaps>,
    /// The server's CPU and memory, if its pid was given.
    pub server: Option<ServerFigures>,
}

impl Report {
    /// The human-readable summary.
    #[must_use]
    #[expect(clippy::too_many_lines, reason = "one line of output after another")]
    pub fn text(&self) -> String {
        let mut s = String::new();
        let st = &self.settings;
        let m = &self.messages;
        let r = &self.rtt_us;
        let c = &self.connect_us;
        // Writing into a String cannot fail.
        let _ = writeln!(
            s,
            "xrudp bench → {}: {} clients on {} thread(s), {} msg/s offered, {} B, channel {}, {:.1} s, wait {:?}, load backend {:?}",
            st.server,
            st.clients,
            st.threads,
            st.rate,
            st.size,
            st.channel,
            st.duration_secs,
            st.wait,
            st.backend
        );
        let _ = writeln!(
            s,
            "connect   {} admitted, {} failed{}; p50 {:.0} µs  p99 {:.0} µs  max {:.0} µs",
            self.connected,
            self.connect_failed,
            self.connect_failure
                .as_ref()
                .map_or(String::new(), |w| format!(" ({w})")),
            c.p50,
            c.p99,
            c.max
        );
        let _ = writeln!(
            s,
            "messages  {} scheduled, {} sent, {} echoed; achieved {:.0} msg/s; lost {} ({:.4}%: {} refused by a full queue, {} on closed connections){}",
            m.scheduled,
            m.sent,
            m.echoed,
            self.achieved_msg_per_s,
            m.lost,
            m.loss_ratio * 100.0,
            m.send_refused,
            m.not_connected,
            if m.duplicates + m.foreign > 0 {
                format!("; {} duplicates, {} foreign", m.duplicates, m.foreign)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "rtt µs    p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}  (n={})",
            r.p50, r.p90, r.p99, r.p999, r.max, r.mean, r.count
        );
        let gaps: Vec<String> = self
            .probe
            .iter()
            .map(|g| {
                format!(
                    "core {} ({}): {} >50µs, {} >1ms, longest {:.0} µs{}",
                    g.core,
                    g.source,
                    g.over_50us,
                    g.over_1ms,
                    g.longest_us,
                    if g.pinned { "" } else { " (not pinned)" }
                )
            })
            .collect();
        if !gaps.is_empty() {
            let _ = writeln!(s, "probe     {}", gaps.join("; "));
        }
        let _ = writeln!(
            s,
            "retrans   {} of {} packets ({:.4}%); client I/O errors {}, send drops {}, receive drops {}",
            self.retransmitted_packets,
            self.packets_out,
            self.retransmission_ratio * 100.0,
            self.socket_errors,
            self.send_dropped,
            self.rx_dropped
        );
        let cpu: Vec<String> = self
            .cpu
            .iter()
            .map(|c| {
                format!(
                    "core {}: busy {:.1}% softirq {:.1}% steal {:.1}%",
                    c.core,
                    c.busy * 100.0,
                    c.softirq * 100.0,
                    c.steal * 100.0
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "cpu       {}; load generator {:.0} ns/msg, {:.2} syscalls/datagram",
            cpu.join("; "),
            self.loadgen_cpu_ns_per_msg,
            self.loadgen_syscalls_per_datagram
        );
        if let Some(sv) = &self.server {
            let _ = writeln!(
                s,
                "server    pid {}: {:.0} ns CPU/msg ({:.3} s), RSS {:.1} MiB (peak {:.1} MiB)",
                sv.pid,
                sv.cpu_ns_per_msg,
                sv.cpu_ns as f64 / 1e9,
                sv.rss_bytes as f64 / 1_048_576.0,
                sv.hwm_bytes as f64 / 1_048_576.0
            );
        }
        s
    }
}

/// Nanoseconds as microseconds.
#[must_use]
pub fn micros(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

/// `a / b`, 0 when `b` is 0.
#[must_use]
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_histogram() {
        let mut h = super::super::loadgen::histogram();
        // 1..=1000 µs, one value each.
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        // 3 significant digits: each figure within 0.1% of the exact one.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 1e-9;
        assert!(close(p.p50, 500.0), "p50 {}", p.p50);
        assert!(close(p.p90, 900.0), "p90 {}", p.p90);
        assert!(close(p.p99, 990.0), "p99 {}", p.p99);
        assert!(close(p.p999, 999.0), "p99.9 {}", p.p999);
        assert!(close(p.max, 1000.0), "max {}", p.max);
        assert!(close(p.mean, 500.5), "mean {}", p.mean);
        assert_eq!(
            Percentiles::of(&super::super::loadgen::histogram()),
            Percentiles::default()
        );
    }

    #[test]
    fn ratio_guards_zero() {
        assert!(ratio(1.0, 0.0).abs() < f64::EPSILON);
        assert!((ratio(1.0, 4.0) - 0.25).abs() < f64::EPSILON);
    }
}
