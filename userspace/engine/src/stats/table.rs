//! The compact table `xrudp stats` prints for people.

use std::io::{self, Write};

use xrudp_common::maps::Counter;

use super::{ProtocolTotals, Rates, Report};

/// Writes one engine's table.
pub fn render(out: &mut impl Write, r: &Report) -> io::Result<()> {
    header(out, r)?;
    queue_table(out, r)?;
    datapath_totals(out, r)?;
    if let Some(p) = &r.totals.protocol {
        protocol(out, p)?;
    }
    Ok(())
}

/// The engine's identity and settings, and the interval the rates cover.
fn header(out: &mut impl Write, r: &Report) -> io::Result<()> {
    let s = &r.snapshot;
    writeln!(
        out,
        "{} ({}) pid {} · {} · xdp {} · {} · {} · simd {} · app {} · ports {:?} · up {} · rss {}",
        s.iface,
        r.netns,
        s.pid,
        s.backend,
        if s.xdp_mode.is_empty() {
            "-"
        } else {
            &s.xdp_mode
        },
        if s.zero_copy { "zero-copy" } else { "copy" },
        s.wakeup,
        if s.simd_level.is_empty() {
            "?"
        } else {
            &s.simd_level
        },
        s.app,
        s.ports,
        duration(s.uptime_secs),
        s.rss_bytes.map_or_else(|| "?".into(), bytes),
    )?;
    if let Some(a) = &s.agones {
        agones(out, a)?;
    }
    match r.interval_secs {
        Some(i) => writeln!(out, "  rates over the last {i:.1} s"),
        None => writeln!(out, "  (no earlier sample of this engine yet: no rates)"),
    }
}

/// Under `--agones`: the GameServer's state, health pings, the connection counter.
fn agones(out: &mut impl Write, a: &crate::telemetry::Agones) -> io::Result<()> {
    write!(
        out,
        "  agones: {} · {} · {} health pings",
        if a.state.is_empty() { "?" } else { &a.state },
        if a.ready {
            "ready sent"
        } else {
            "not ready yet"
        },
        a.health_pings,
    )?;
    if !a.stalled_workers.is_empty() {
        write!(out, " · STALLED workers {:?}: no pings", a.stalled_workers)?;
    }
    if let Some(n) = a.connections_reported {
        write!(out, " · connections counter {n}")?;
    }
    if !a.draining.is_empty() {
        write!(out, " · draining ({})", a.draining)?;
    }
    writeln!(out)
}

/// One row of rates, frame use and latency per queue, and a total row when there are
/// several queues.
fn queue_table(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(
        out,
        "  {:<6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>6} {:>11} {:>5} {:>20}",
        "queue",
        "rx pkt/s",
        "rx bit/s",
        "tx pkt/s",
        "tx bit/s",
        "msg in/s",
        "msg out/s",
        "cpu%",
        "umem use/hw",
        "fill",
        "lat p50/p99/p99.9 µs"
    )?;
    let queues = &r.snapshot.queues;
    for (q, qr) in queues.iter().zip(&r.queue_rates) {
        let lat = q.latency.as_ref().map(|l| (l.p50_ns, l.p99_ns, l.p999_ns));
        row(
            out,
            &format!("q{}", q.queue),
            qr.rates.as_ref(),
            &format!("{}/{}", q.frames_in_use, q.frames_high_water),
            q.fill_ring_level,
            lat,
        )?;
    }
    if queues.len() > 1 {
        let t = &r.totals;
        let lat = t.latency.as_ref().map(|l| (l.p50_ns, l.p99_ns, l.p999_ns));
        row(
            out,
            "total",
            r.rates.as_ref(),
            &format!("{}/{}", t.frames_in_use, t.frames_high_water),
            t.fill_ring_level,
            lat,
        )?;
    }
    Ok(())
}

/// Totals since start: traffic, XDP program counters, XDP_STATISTICS and drops.
fn datapath_totals(out: &mut impl Write, r: &Report) -> io::Result<()> {
    let t = &r.totals;
    writeln!(
        out,
        "  totals: rx {} pkts {} · tx {} pkts {} · cpu {}",
        t.rx_packets,
        bytes(t.rx_bytes),
        t.tx_packets,
        bytes(t.tx_bytes),
        t.cpu_secs
            .map_or_else(|| "?".into(), |c| format!("{c:.2} s")),
    )?;
    let xdp: Vec<String> = Counter::ALL
        .iter()
        .filter_map(|c| {
            r.snapshot
                .xdp_counter(c.label())
                .map(|v| format!("{}={v}", c.label()))
        })
        .collect();
    if !xdp.is_empty() {
        writeln!(out, "  xdp prog: {}", xdp.join(" "))?;
    }
    if let Some(x) = &t.xdp_statistics {
        writeln!(
            out,
            "  xsk: rx_dropped={} rx_invalid_descs={} tx_invalid_descs={} rx_ring_full={} \
             rx_fill_ring_empty_descs={} tx_ring_empty_descs={}",
            x.rx_dropped,
            x.rx_invalid_descs,
            x.tx_invalid_descs,
            x.rx_ring_full,
            x.rx_fill_ring_empty_descs,
            x.tx_ring_empty_descs
        )?;
    }
    let crc = t.protocol.as_ref().map_or(0, |p| p.crc_failures);
    write!(
        out,
        "  drops: malformed={} udp_checksum={} crc={} unanswerable={} tx_full={}",
        t.drop_malformed, t.drop_checksum, crc, t.drop_unanswerable, t.drop_tx_full
    )?;
    match &t.protocol {
        Some(p) => writeln!(
            out,
            " unknown_connection={} version_mismatch={} hellos_shed={} session_updates_failed={}",
            p.unknown_connection, p.version_mismatches, p.hellos_shed, p.session_updates_failed
        ),
        None => writeln!(out),
    }
}

/// Connections, protocol traffic and path estimates (protocol apps only).
fn protocol(out: &mut impl Write, p: &ProtocolTotals) -> io::Result<()> {
    let rejected: Vec<String> = p.rejected.iter().map(|(k, v)| format!("{k}={v}")).collect();
    writeln!(
        out,
        "  conns: active={} handshakes={} accepted={} timed_out={} violations={} rejected={} ({})",
        p.connections,
        p.handshakes,
        p.accepted,
        p.timed_out,
        p.violations,
        p.rejected_total,
        rejected.join(" ")
    )?;
    writeln!(
        out,
        "  proto: pkts in={} out={} · msgs in={} out={} · retransmitted={} ({}) · lost={} ({})",
        p.packets_in,
        p.packets_out,
        p.messages_in,
        p.messages_out,
        p.retransmitted_packets,
        ratio(p.retransmission_ratio),
        p.lost_packets,
        ratio(p.loss_rate),
    )?;
    writeln!(
        out,
        "  rtt p50/p99: {} µs · cwnd min/median/max: {} bytes · pmtu: probes={} black_holes={}",
        opt_pair(p.rtt_p50_us, p.rtt_p99_us),
        match (p.cwnd_min, p.cwnd_median, p.cwnd_max) {
            (Some(a), Some(b), Some(c)) => format!("{a}/{b}/{c}"),
            _ => "-".into(),
        },
        p.pmtu_probes,
        p.pmtu_black_holes
    )
}

fn row(
    out: &mut impl Write,
    name: &str,
    rates: Option<&Rates>,
    umem: &str,
    fill: Option<u64>,
    lat: Option<(u64, u64, u64)>,
) -> io::Result<()> {
    let f = |v: Option<f64>| v.map_or_else(|| "-".into(), si);
    writeln!(
        out,
        "  {:<6} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>6} {:>11} {:>5} {:>20}",
        name,
        f(rates.map(|r| r.rx_packets)),
        f(rates.map(|r| r.rx_bytes * 8.0)),
        f(rates.map(|r| r.tx_packets)),
        f(rates.map(|r| r.tx_bytes * 8.0)),
        f(rates.map(|r| r.messages_in)),
        f(rates.map(|r| r.messages_out)),
        rates
            .and_then(|r| r.cpu_percent)
            .map_or_else(|| "-".into(), |c| format!("{c:.1}")),
        umem,
        fill.map_or_else(|| "-".into(), |l| l.to_string()),
        lat.map_or_else(
            || "-".into(),
            |(a, b, c)| format!("{}/{}/{}", us(a), us(b), us(c))
        ),
    )
}

/// A rate with an SI suffix: 950, 12.3k, 4.56M, 1.20G.
fn si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn us(ns: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let v = ns as f64 / 1000.0;
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn bytes(b: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    let v = b as f64;
    if v >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", v / (1024.0 * 1024.0 * 1024.0))
    } else if v >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", v / (1024.0 * 1024.0))
    } else if v >= 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{b} B")
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.3}%", r * 100.0))
}

fn opt_pair(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{a}/{b}"),
        _ => "-".into(),
    }
}

fn duration(secs: f64) -> String {
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "uptime is positive and far below u64::MAX seconds"
    )]
    let s = secs.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_of_fixed_reports_are_unchanged() {
        use crate::stats::fixture;
        for (name, report) in [
            ("table-full.txt", fixture::full()),
            ("table-sparse.txt", fixture::sparse()),
        ] {
            let mut out = Vec::new();
            render(&mut out, &report).expect("rendering into a Vec");
            fixture::check_golden(name, &String::from_utf8(out).expect("UTF-8"));
        }
    }

    #[test]
    fn units_read_well() {
        assert_eq!(si(950.0), "950");
        assert_eq!(si(12_345.0), "12.3k");
        assert_eq!(si(4_560_000.0), "4.56M");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(us(1_500), "1.5");
        assert_eq!(us(250_000), "250");
        assert_eq!(duration(75.0), "1m15s");
        assert_eq!(ratio(Some(0.0125)), "1.250%");
    }
}
