//! `xrudp stats --connections`: every connection's quality (RTT, jitter, loss,
//! retransmissions, congestion window, send queue) from the engines' control sockets,
//! sorted so that the players who suffer come first: a table, or JSON
//! (docs/connections.schema.json).

use std::{io::IsTerminal as _, time::Duration};

use anyhow::bail;
use serde::{Deserialize, Serialize};

use super::engines;
use crate::{control, telemetry::ConnRow};

/// Version of the `xrudp stats --connections --json` document.
pub const CONNECTIONS_SCHEMA_VERSION: u32 = 2;

/// What the rows are sorted by, worst first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Smoothed round-trip time, highest first.
    #[default]
    Rtt,
    /// Share of packets lost, highest first.
    Loss,
    /// Send-queue depth (bytes queued or unacknowledged), deepest first.
    Queue,
}

/// One engine's connections as `--connections --json` prints them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EngineConnections {
    /// Document schema version ([`CONNECTIONS_SCHEMA_VERSION`]).
    pub connections_schema: u32,
    /// The engine's network namespace directory under /run/xrudp (`net-<inode>`).
    pub netns: String,
    /// Interface name.
    pub iface: String,
    /// Engine process id.
    pub pid: u32,
    /// Connections the engine has.
    pub total: usize,
    /// The rows shown, sorted worst first (all of them, or the `--top` worst).
    pub connections: Vec<ConnectionView>,
}

/// One connection's row with its ratios worked out.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ConnectionView {
    /// The row as the engine published it.
    #[serde(flatten)]
    pub row: ConnRow,
    /// `packets_lost / packets_sent` in percent (0 before anything was sent).
    pub loss_pct: f64,
    /// `packets_retransmitted / packets_sent` in percent.
    pub retransmitted_pct: f64,
}

/// Sorts `rows` worst first by `key` (ties by queue and slot, so the order is stable
/// between refreshes) and keeps the first `top` (all with `None`).
#[must_use]
pub fn select(mut rows: Vec<ConnRow>, key: SortKey, top: Option<usize>) -> Vec<ConnectionView> {
    rows.sort_by(|a, b| {
        let worst = match key {
            SortKey::Rtt => b.srtt_us.cmp(&a.srtt_us),
            SortKey::Loss => b.loss().total_cmp(&a.loss()),
            SortKey::Queue => b.send_queue_bytes.cmp(&a.send_queue_bytes),
        };
        worst.then((a.queue, a.slot).cmp(&(b.queue, b.slot)))
    });
    if let Some(n) = top {
        rows.truncate(n);
    }
    rows.into_iter()
        .map(|row| ConnectionView {
            loss_pct: row.loss() * 100.0,
            retransmitted_pct: row.retransmission() * 100.0,
            row,
        })
        .collect()
}

/// `xrudp stats --connections`: one table (or JSON document) of every running engine's
/// (or the one on `iface`'s) connections; with `watch`, again every `watch` seconds.
/// `top`: how many rows per engine (`Some(0)` = all; `None` = 20 on the table, all in
/// JSON).
pub fn run(
    iface: Option<&str>,
    json: bool,
    key: SortKey,
    top: Option<usize>,
    watch: Option<f64>,
) -> anyhow::Result<()> {
    let interval = match watch {
        None => None,
        Some(s) if s.is_finite() && (0.1..=3600.0).contains(&s) => Some(Duration::from_secs_f64(s)),
        Some(s) => bail!("--watch {s} is out of range: give seconds in [0.1, 3600]"),
    };
    let top = match top {
        Some(0) => None,
        Some(n) => Some(n),
        None if json => None,
        None => Some(DEFAULT_TOP),
    };
    let terminal = std::io::stdout().is_terminal();
    loop {
        let engines = sample(iface, key, top)?;
        let mut out = std::io::stdout().lock();
        let written = super::write_documents(
            &mut out,
            &engines,
            json,
            interval.is_some(),
            terminal,
            render,
        );
        match written {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            r => r?,
        }
        let Some(interval) = interval else {
            return Ok(());
        };
        drop(out);
        std::thread::sleep(interval);
    }
}

/// Rows per engine on the table unless `--top` says otherwise.
const DEFAULT_TOP: usize = 20;

/// Every engine's rows, sorted and cut. Fails when none answers.
fn sample(
    iface: Option<&str>,
    key: SortKey,
    top: Option<usize>,
) -> anyhow::Result<Vec<EngineConnections>> {
    let mut out = Vec::new();
    for (netns, i, path) in engines(iface)? {
        match control::query_connections(&path) {
            Ok(c) => out.push(EngineConnections {
                connections_schema: CONNECTIONS_SCHEMA_VERSION,
                netns,
                iface: c.iface,
                pid: c.pid,
                total: c.connections.len(),
                connections: select(c.connections, key, top),
            }),
            Err(e) => {
                tracing::warn!(iface = %i, netns = %netns, error = %e, "engine did not answer");
            }
        }
    }
    if out.is_empty() {
        bail!(
            "no running xrudp engine answered (is it still starting, or were its runtime files left by a crash?)"
        );
    }
    Ok(out)
}

/// One engine's table.
pub fn render(out: &mut impl std::io::Write, e: &EngineConnections) -> std::io::Result<()> {
    writeln!(
        out,
        "{} ({}) pid {} · {} connections{}",
        e.iface,
        e.netns,
        e.pid,
        e.total,
        if e.connections.len() < e.total {
            format!(
                " · the {} worst shown (--top N for more, --top 0 for all)",
                e.connections.len()
            )
        } else {
            String::new()
        }
    )?;
    if e.connections.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "  {:<5} {:>10} {:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9} {:>5}",
        "queue",
        "conn id",
        "peer",
        "srtt µs",
        "min µs",
        "var µs",
        "jitter µs",
        "sent",
        "loss",
        "retx",
        "cwnd",
        "in flight",
        "queued",
        "mtu"
    )?;
    for v in &e.connections {
        let r = &v.row;
        writeln!(
            out,
            "  {:<5} {:>10} {:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6.2}% {:>6.2}% {:>9} {:>9} {:>9} {:>5}",
            r.queue,
            format!("{:#010x}", r.conn_id),
            r.peer.to_string(),
            r.srtt_us,
            r.min_rtt_us,
            r.rtt_var_us,
            r.jitter_us,
            r.packets_sent,
            v.loss_pct,
            v.retransmitted_pct,
            r.cwnd,
            r.bytes_in_flight,
            r.send_queue_bytes,
            r.mtu
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(slot: u32, srtt_us: u64, sent: u64, lost: u64, queued: u64) -> ConnRow {
        ConnRow {
            queue: u16::try_from(slot % 2).expect("small"),
            slot,
            generation: 1,
            conn_id: 0x1000 + slot,
            peer: format!("198.18.0.{}:{}", 2 + slot, 40_000 + slot)
                .parse()
                .expect("address"),
            srtt_us,
            min_rtt_us: srtt_us / 2,
            rtt_var_us: srtt_us / 4,
            jitter_us: srtt_us / 8,
            packets_sent: sent,
            packets_lost: lost,
            packets_retransmitted: lost,
            cwnd: 12_000,
            bytes_in_flight: 100 * u64::from(slot),
            send_queue_bytes: queued,
            mtu: 1200,
        }
    }

    fn rows() -> Vec<ConnRow> {
        vec![
            row(0, 300, 1_000, 0, 0),
            row(1, 9_000, 1_000, 10, 64),
            row(2, 300, 0, 0, 0),
            row(3, 800, 2_000, 100, 4_096),
        ]
    }

    fn slots(v: &[ConnectionView]) -> Vec<u32> {
        v.iter().map(|c| c.row.slot).collect()
    }

    #[test]
    fn worst_first_by_each_key_then_cut_to_top() {
        assert_eq!(slots(&select(rows(), SortKey::Rtt, None)), [1, 3, 0, 2]);
        assert_eq!(slots(&select(rows(), SortKey::Loss, None)), [3, 1, 0, 2]);
        assert_eq!(slots(&select(rows(), SortKey::Queue, Some(2))), [3, 1]);
        let v = select(rows(), SortKey::Loss, Some(1));
        assert!((v[0].loss_pct - 5.0).abs() < 1e-9, "{v:?}");
        // Nothing sent yet: 0 %, not NaN.
        let idle = select(vec![row(2, 300, 0, 0, 0)], SortKey::Loss, None);
        assert!(idle[0].loss_pct.abs() < f64::EPSILON, "{idle:?}");
    }

    #[test]
    fn table_of_fixed_rows_is_unchanged() {
        let e = EngineConnections {
            connections_schema: CONNECTIONS_SCHEMA_VERSION,
            netns: "net-4026531840".into(),
            iface: "veth-srv".into(),
            pid: 4242,
            total: 4,
            connections: select(rows(), SortKey::Rtt, Some(3)),
        };
        let mut out = Vec::new();
        render(&mut out, &e).expect("rendering into a Vec");
        super::super::fixture::check_golden(
            "connections.txt",
            &String::from_utf8(out).expect("UTF-8"),
        );
    }
}
