//! The run's summary: figures merged over the threads, as a table for people and one JSON
//! object for scripts.

use std::fmt::{self, Write as _};

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

/// The smallest send-lag p90, µs, that [`Report::load_behind`] reports: below it the
/// load generator's delay is too small to matter beside any server's.
pub const BEHIND_LAG_US: f64 = 100.0;

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
    /// How long after its scheduled time each message was handed to the protocol, µs:
    /// the load generator's own delay on the way out, included in `rtt_us`. When it is
    /// a large part of the round trip, the load generator, not the server, is what
    /// stopped first.
    pub send_lag_us: Percentiles,
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
    pub fn text(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_text(&mut s);
        s
    }

    /// Writes the summary, one line per part; the probe and server lines only when there
    /// is something to show.
    fn write_text(&self, s: &mut String) -> fmt::Result {
        self.write_settings(s)?;
        self.write_connect(s)?;
        self.write_messages(s)?;
        self.write_rtt(s)?;
        self.write_probe(s)?;
        self.write_retrans(s)?;
        self.write_cpu(s)?;
        self.write_server(s)
    }

    fn write_settings(&self, s: &mut String) -> fmt::Result {
        let st = &self.settings;
        writeln!(
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
        )
    }

    fn write_connect(&self, s: &mut String) -> fmt::Result {
        let c = &self.connect_us;
        writeln!(
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
        )
    }

    fn write_messages(&self, s: &mut String) -> fmt::Result {
        let m = &self.messages;
        writeln!(
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
        )
    }

    fn write_rtt(&self, s: &mut String) -> fmt::Result {
        let r = &self.rtt_us;
        writeln!(
            s,
            "rtt µs    p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  mean {:.1}  (n={})",
            r.p50, r.p90, r.p99, r.p999, r.max, r.mean, r.count
        )?;
        let l = &self.send_lag_us;
        writeln!(
            s,
            "send lag  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1} µs after the schedule (the load generator's own delay)",
            l.p50, l.p90, l.p99, l.max
        )?;
        if self.load_behind() {
            writeln!(
                s,
                "warning   the load generator fell behind its schedule: its send lag is {:.0} % of the RTT at p90, so these figures are largely its own. Give it more load threads (--threads) on cores of their own (--cores), or lower --rate",
                100.0 * l.p90 / r.p90
            )?;
        }
        Ok(())
    }

    /// Whether the load generator's own lateness makes up most of the tail it reports:
    /// a send-lag p90 of at least [`BEHIND_LAG_US`] and at least half the RTT p90 (each
    /// message's lag is part of its round trip). A run with no echo has no round trip
    /// to compare with (its loss says what went wrong).
    #[must_use]
    pub fn load_behind(&self) -> bool {
        let (lag, rtt) = (self.send_lag_us.p90, self.rtt_us.p90);
        rtt > 0.0 && lag >= BEHIND_LAG_US && 2.0 * lag >= rtt
    }

    /// The probe's line, left out when no core was probed.
    fn write_probe(&self, s: &mut String) -> fmt::Result {
        let gaps: Vec<String> = self.probe.iter().map(gaps_text).collect();
        if gaps.is_empty() {
            return Ok(());
        }
        writeln!(s, "probe     {}", gaps.join("; "))
    }

    fn write_retrans(&self, s: &mut String) -> fmt::Result {
        writeln!(
            s,
            "retrans   {} of {} packets ({:.4}%); client I/O errors {}, send drops {}, receive drops {}",
            self.retransmitted_packets,
            self.packets_out,
            self.retransmission_ratio * 100.0,
            self.socket_errors,
            self.send_dropped,
            self.rx_dropped
        )
    }

    fn write_cpu(&self, s: &mut String) -> fmt::Result {
        let cpu: Vec<String> = self.cpu.iter().map(cpu_share_text).collect();
        writeln!(
            s,
            "cpu       {}; load generator {:.0} ns/msg, {:.2} syscalls/datagram",
            cpu.join("; "),
            self.loadgen_cpu_ns_per_msg,
            self.loadgen_syscalls_per_datagram
        )
    }

    /// The server's line, left out when no pid was given.
    fn write_server(&self, s: &mut String) -> fmt::Result {
        let Some(sv) = &self.server else {
            return Ok(());
        };
        writeln!(
            s,
            "server    pid {}: {:.0} ns CPU/msg ({:.3} s), RSS {:.1} MiB (peak {:.1} MiB)",
            sv.pid,
            sv.cpu_ns_per_msg,
            sv.cpu_ns as f64 / 1e9,
            sv.rss_bytes as f64 / 1_048_576.0,
            sv.hwm_bytes as f64 / 1_048_576.0
        )
    }
}

/// One core's probe figures, as the probe line shows them.
fn gaps_text(g: &Gaps) -> String {
    format!(
        "core {} ({}): {} >50µs, {} >1ms, longest {:.0} µs{}",
        g.core,
        g.source,
        g.over_50us,
        g.over_1ms,
        g.longest_us,
        if g.pinned { "" } else { " (not pinned)" }
    )
}

/// One core's CPU shares, as the cpu line shows them.
fn cpu_share_text(c: &CpuShare) -> String {
    format!(
        "core {}: busy {:.1}% softirq {:.1}% steal {:.1}%",
        c.core,
        c.busy * 100.0,
        c.softirq * 100.0,
        c.steal * 100.0
    )
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

    /// A report with every field set to a distinct value, optional sections included.
    fn full_report() -> Report {
        Report {
            settings: Settings {
                server: "198.18.0.1:7777".to_owned(),
                clients: 1000,
                threads: 2,
                rate: 20_000,
                size: 64,
                channel: 1,
                duration_secs: 10.25,
                wait: super::super::loadgen::Wait::Spin,
                backend: super::super::Backend::Xdp,
            },
            connected: 998,
            connect_failed: 2,
            connect_failure: Some("HandshakeTimedOut".to_owned()),
            connect_us: Percentiles {
                count: 998,
                p50: 812.4,
                p90: 1500.5,
                p99: 2048.6,
                p999: 3000.0,
                max: 4096.5,
                mean: 900.25,
            },
            closed_during_run: 1,
            close_reason: Some("TimedOut".to_owned()),
            messages: Messages {
                scheduled: 205_000,
                sent: 204_990,
                send_refused: 7,
                not_connected: 3,
                echoed: 204_980,
                lost: 20,
                loss_ratio: 20.0 / 205_000.0,
                duplicates: 4,
                foreign: 5,
            },
            offered_msg_per_s: 20_000.0,
            achieved_msg_per_s: 19_998.049,
            rtt_us: Percentiles {
                count: 204_980,
                p50: 41.25,
                p90: 55.55,
                p99: 120.04,
                p999: 480.96,
                max: 2500.5,
                mean: 44.449,
            },
            send_lag_us: Percentiles {
                count: 204_990,
                p50: 0.5,
                p90: 2.25,
                p99: 17.04,
                p999: 90.0,
                max: 812.5,
                mean: 1.5,
            },
            retransmitted_packets: 12,
            packets_out: 410_000,
            retransmission_ratio: 12.0 / 410_000.0,
            socket_errors: 1,
            send_dropped: 6,
            rx_dropped: 8,
            loadgen_cpu_ns_per_msg: 1234.5,
            loadgen_syscalls_per_datagram: 0.125,
            cpu: vec![
                CpuShare {
                    core: 0,
                    busy: 0.5,
                    softirq: 0.125,
                    steal: 0.0,
                },
                CpuShare {
                    core: 1,
                    busy: 0.987_65,
                    softirq: 0.333_33,
                    steal: 0.012_34,
                },
            ],
            probe: vec![
                Gaps {
                    core: 0,
                    source: "load-loop",
                    pinned: true,
                    over_50us: 17,
                    over_1ms: 2,
                    longest_us: 1520.6,
                    lost_share: 0.001,
                    ran_secs: 10.0,
                },
                Gaps {
                    core: 1,
                    source: "probe",
                    pinned: false,
                    over_50us: 0,
                    over_1ms: 0,
                    longest_us: 49.4,
                    lost_share: 0.0,
                    ran_secs: 10.0,
                },
            ],
            server: Some(ServerFigures {
                pid: 4242,
                cpu_ns: 1_500_000_000,
                cpu_ns_per_msg: 7317.8,
                rss_bytes: 50 * 1_048_576 + 524_288,
                hwm_bytes: 64 * 1_048_576,
            }),
        }
    }

    #[test]
    fn text_of_a_full_report_is_pinned() {
        let want = concat!(
            "xrudp bench → 198.18.0.1:7777: 1000 clients on 2 thread(s), 20000 msg/s offered, 64 B, channel 1, 10.2 s, wait Spin, load backend Xdp\n",
            "connect   998 admitted, 2 failed (HandshakeTimedOut); p50 812 µs  p99 2049 µs  max 4096 µs\n",
            "messages  205000 scheduled, 204990 sent, 204980 echoed; achieved 19998 msg/s; lost 20 (0.0098%: 7 refused by a full queue, 3 on closed connections); 4 duplicates, 5 foreign\n",
            "rtt µs    p50 41.2  p90 55.5  p99 120.0  p99.9 481.0  max 2500.5  mean 44.4  (n=204980)\n",
            "send lag  p50 0.5  p90 2.2  p99 17.0  max 812.5 µs after the schedule (the load generator's own delay)\n",
            "probe     core 0 (load-loop): 17 >50µs, 2 >1ms, longest 1521 µs; core 1 (probe): 0 >50µs, 0 >1ms, longest 49 µs (not pinned)\n",
            "retrans   12 of 410000 packets (0.0029%); client I/O errors 1, send drops 6, receive drops 8\n",
            "cpu       core 0: busy 50.0% softirq 12.5% steal 0.0%; core 1: busy 98.8% softirq 33.3% steal 1.2%; load generator 1234 ns/msg, 0.12 syscalls/datagram\n",
            "server    pid 4242: 7318 ns CPU/msg (1.500 s), RSS 50.5 MiB (peak 64.0 MiB)\n",
        );
        assert_eq!(full_report().text(), want);
    }

    #[test]
    fn text_without_the_optional_sections_is_pinned() {
        let mut r = full_report();
        r.connect_failure = None;
        r.messages.duplicates = 0;
        r.messages.foreign = 0;
        r.probe.clear();
        r.cpu.clear();
        r.server = None;
        r.settings.wait = super::super::loadgen::Wait::Sleep;
        r.settings.backend = super::super::Backend::Socket;
        let want = concat!(
            "xrudp bench → 198.18.0.1:7777: 1000 clients on 2 thread(s), 20000 msg/s offered, 64 B, channel 1, 10.2 s, wait Sleep, load backend Socket\n",
            "connect   998 admitted, 2 failed; p50 812 µs  p99 2049 µs  max 4096 µs\n",
            "messages  205000 scheduled, 204990 sent, 204980 echoed; achieved 19998 msg/s; lost 20 (0.0098%: 7 refused by a full queue, 3 on closed connections)\n",
            "rtt µs    p50 41.2  p90 55.5  p99 120.0  p99.9 481.0  max 2500.5  mean 44.4  (n=204980)\n",
            "send lag  p50 0.5  p90 2.2  p99 17.0  max 812.5 µs after the schedule (the load generator's own delay)\n",
            "retrans   12 of 410000 packets (0.0029%); client I/O errors 1, send drops 6, receive drops 8\n",
            "cpu       ; load generator 1234 ns/msg, 0.12 syscalls/datagram\n",
        );
        assert_eq!(r.text(), want);
    }

    #[test]
    fn a_load_generator_behind_its_schedule_is_called_out() {
        let mut r = full_report();
        assert!(!r.load_behind(), "2 µs of lag beside a 55 µs p90");
        r.send_lag_us.p90 = 900.0;
        r.rtt_us.p90 = 1_500.0;
        assert!(r.load_behind());
        assert!(r.text().contains(
            "warning   the load generator fell behind its schedule: its send lag is 60 % of the RTT at p90"
        ));
        // Half the round trip is the line; a small lag never counts, however large a share.
        r.rtt_us.p90 = 1_801.0;
        assert!(!r.load_behind());
        r.send_lag_us.p90 = 99.0;
        r.rtt_us.p90 = 100.0;
        assert!(!r.load_behind());
        assert!(!r.text().contains("warning"));
        // No echo at all: no ratio to print (it would divide by zero).
        r.send_lag_us.p90 = 900.0;
        r.rtt_us = Percentiles::default();
        assert!(!r.load_behind());
    }

    #[test]
    fn ratio_guards_zero() {
        assert!(ratio(1.0, 0.0).abs() < f64::EPSILON);
        assert!((ratio(1.0, 4.0) - 0.25).abs() < f64::EPSILON);
    }
}
