//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`], and the small HTTP
//! server `xrudp attach --metrics-addr ADDR:PORT` runs in its own thread: `GET /metrics`
//! builds a fresh snapshot per scrape; nothing else is served.
#![expect(
    clippy::cast_precision_loss,
    reason = "the exposition format's values are floats; counters far below 2^52 stay exact"
)]

use std::{
    fmt::Write as _,
    io::{self, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use xrudp_common::maps::Counter;

use crate::telemetry::{Figures, QueueSnapshot, Snapshot, XdpStatistics};

/// The exposition's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `s` in the Prometheus text format. Counters end in `_total`, times are in
/// seconds and sizes in bytes; per-queue series carry a `queue` label, and every series
/// an `iface` label.
#[must_use]
pub fn render(s: &Snapshot) -> String {
    let mut m = Metrics {
        out: String::with_capacity(16 * 1024),
        iface: escape(&s.iface),
    };
    engine(&mut m, s);
    xdp_program(&mut m, s);
    worker_traffic(&mut m, s);
    umem(&mut m, s);
    xsk_statistics(&mut m, s);
    if s.queues.iter().any(|x| x.protocol.is_some()) {
        connections(&mut m, s);
        protocol_traffic(&mut m, s);
        path_estimates(&mut m, s);
    }
    processing_latency(&mut m, s);
    m.out
}

/// The engine's settings, uptime and memory.
fn engine(m: &mut Metrics, s: &Snapshot) {
    m.family(
        "xrudp_info",
        "gauge",
        "Engine settings, as labels; always 1.",
    );
    m.sample_raw(
        "xrudp_info",
        &format!(
            "backend=\"{}\",xdp_mode=\"{}\",zero_copy=\"{}\",wakeup=\"{}\",simd=\"{}\",app=\"{}\"",
            escape(&s.backend),
            escape(&s.xdp_mode),
            s.zero_copy,
            escape(&s.wakeup),
            escape(&s.simd_level),
            escape(&s.app)
        ),
        1.0,
    );
    m.gauge(
        "xrudp_uptime_seconds",
        "Seconds since the engine started.",
        &[(None, s.uptime_secs)],
    );
    m.gauge(
        "xrudp_start_time_seconds",
        "Engine start, seconds since the Unix epoch.",
        &[(None, s.started_unix as f64)],
    );
    if let Some(rss) = s.rss_bytes {
        m.gauge(
            "xrudp_process_resident_memory_bytes",
            "Resident set size of the engine process.",
            &[(None, rss as f64)],
        );
    }
}

/// The XDP program's verdict and drop counters (none on the socket backend).
fn xdp_program(m: &mut Metrics, s: &Snapshot) {
    if s.xdp.is_empty() {
        return;
    }
    m.family(
        "xrudp_xdp_program_packets_total",
        "counter",
        "XDP program verdicts and drop reasons, summed over CPUs.",
    );
    for c in Counter::ALL {
        if let Some(v) = s.xdp_counter(c.label()) {
            m.sample_raw(
                "xrudp_xdp_program_packets_total",
                &format!("counter=\"{}\"", c.label()),
                v as f64,
            );
        }
    }
}

/// What the workers received, sent and dropped, and the CPU time they took.
fn worker_traffic(m: &mut Metrics, s: &Snapshot) {
    m.counter(
        "xrudp_rx_packets_total",
        "Datagrams taken off the RX ring (or recvmmsg) by the workers.",
        &per_queue(s, |x| Some(x.rx_packets as f64)),
    );
    m.counter(
        "xrudp_rx_bytes_total",
        "Bytes of the frames received by the workers.",
        &per_queue(s, |x| Some(x.rx_bytes as f64)),
    );
    m.counter(
        "xrudp_tx_packets_total",
        "Datagrams handed to TX by the workers.",
        &per_queue(s, |x| Some(x.tx_packets as f64)),
    );
    m.counter(
        "xrudp_tx_bytes_total",
        "Bytes of the frames handed to TX.",
        &per_queue(s, |x| Some(x.tx_bytes as f64)),
    );
    m.family(
        "xrudp_worker_drops_total",
        "counter",
        "Datagrams the workers dropped, by reason.",
    );
    for x in &s.queues {
        for (reason, v) in [
            ("malformed", x.drop_malformed),
            ("udp_checksum", x.drop_checksum),
            ("unanswerable", x.drop_unanswerable),
            ("tx_full", x.drop_tx_full),
        ] {
            m.sample_raw(
                "xrudp_worker_drops_total",
                &format!("queue=\"{}\",reason=\"{reason}\"", x.queue),
                v as f64,
            );
        }
    }
    m.counter(
        "xrudp_worker_cpu_seconds_total",
        "CPU time of the worker thread (user + system).",
        &per_queue(s, |x| x.cpu_secs),
    );
}

/// UMEM frame use and the fill ring's level.
fn umem(m: &mut Metrics, s: &Snapshot) {
    m.gauge(
        "xrudp_umem_frames",
        "UMEM frames of the queue.",
        &per_queue(s, |x| Some(f64::from(x.umem_frames))),
    );
    m.gauge(
        "xrudp_umem_frames_in_use",
        "UMEM frames out of the pool (rings, kernel, worker).",
        &per_queue(s, |x| Some(x.frames_in_use as f64)),
    );
    m.gauge(
        "xrudp_umem_frames_high_water",
        "Highest UMEM frames in use since start.",
        &per_queue(s, |x| Some(x.frames_high_water as f64)),
    );
    m.gauge(
        "xrudp_fill_ring_descriptors",
        "Descriptors on the fill ring.",
        &per_queue(s, |x| x.fill_ring_level.map(|v| v as f64)),
    );
}

/// The kernel's per-socket XDP_STATISTICS.
fn xsk_statistics(m: &mut Metrics, s: &Snapshot) {
    for (name, help, field) in [
        (
            "xrudp_xsk_rx_dropped_total",
            "XDP_STATISTICS rx_dropped: dropped for reasons other than invalid descriptors.",
            (|x| x.rx_dropped) as fn(&XdpStatistics) -> u64,
        ),
        (
            "xrudp_xsk_rx_invalid_descs_total",
            "XDP_STATISTICS rx_invalid_descs.",
            |x| x.rx_invalid_descs,
        ),
        (
            "xrudp_xsk_tx_invalid_descs_total",
            "XDP_STATISTICS tx_invalid_descs.",
            |x| x.tx_invalid_descs,
        ),
        (
            "xrudp_xsk_rx_ring_full_total",
            "XDP_STATISTICS rx_ring_full: dropped because the RX ring was full.",
            |x| x.rx_ring_full,
        ),
        (
            "xrudp_xsk_rx_fill_ring_empty_total",
            "XDP_STATISTICS rx_fill_ring_empty_descs.",
            |x| x.rx_fill_ring_empty_descs,
        ),
        (
            "xrudp_xsk_tx_ring_empty_total",
            "XDP_STATISTICS tx_ring_empty_descs.",
            |x| x.tx_ring_empty_descs,
        ),
    ] {
        let values = per_queue(s, |x| x.xdp_statistics.as_ref().map(|st| field(st) as f64));
        m.counter(name, help, &values);
    }
}

/// Connection admission and closing (protocol apps only).
fn connections(m: &mut Metrics, s: &Snapshot) {
    m.gauge(
        "xrudp_connections",
        "Established connections.",
        &per_worker(s, |f| f.connections),
    );
    m.counter(
        "xrudp_connections_accepted_total",
        "Connections admitted.",
        &per_worker(s, |f| f.accepted),
    );
    m.counter(
        "xrudp_handshakes_total",
        "Hellos answered with a stateless cookie.",
        &per_worker(s, |f| f.handshakes),
    );
    m.counter(
        "xrudp_bad_cookies_total",
        "Responses with a forged, stale or misaddressed cookie.",
        &per_worker(s, |f| f.bad_cookies),
    );
    m.counter(
        "xrudp_auth_failed_total",
        "Protected packets that failed authentication (forged, altered or another session's).",
        &per_worker(s, |f| f.auth_failed),
    );
    m.counter(
        "xrudp_replayed_total",
        "Protected packets that authenticated but were received before, dropped.",
        &per_worker(s, |f| f.replayed),
    );
    m.counter(
        "xrudp_token_reused_total",
        "Connect tokens refused as in use from another address.",
        &per_worker(s, |f| f.token_reused),
    );
    m.counter(
        "xrudp_migrated_total",
        "Connections moved to a new client address after path validation.",
        &per_worker(s, |f| f.migrated),
    );
    m.counter(
        "xrudp_path_challenges_total",
        "PATH_CHALLENGE packets sent to unvalidated client addresses.",
        &per_worker(s, |f| f.path_challenges),
    );
    m.counter(
        "xrudp_pmtu_probes_total",
        "Path MTU probes sent (padded packets that carry no messages).",
        &per_worker(s, |f| f.pmtu_probes),
    );
    m.counter(
        "xrudp_pmtu_black_holes_total",
        "Path MTU black holes detected: connections that fell back to 1200 bytes.",
        &per_worker(s, |f| f.pmtu_black_holes),
    );
    m.counter(
        "xrudp_connections_timed_out_total",
        "Connections closed by the idle timeout.",
        &per_worker(s, |f| f.timed_out),
    );
    m.counter(
        "xrudp_protocol_violations_total",
        "Connections closed for protocol violations.",
        &per_worker(s, |f| f.violations),
    );
    m.family(
        "xrudp_connections_rejected_total",
        "counter",
        "Admissions refused, by reason.",
    );
    for x in &s.queues {
        let Some(f) = &x.protocol else { continue };
        for (reason, v) in &f.rejected {
            m.sample_raw(
                "xrudp_connections_rejected_total",
                &format!("queue=\"{}\",reason=\"{}\"", x.queue, escape(reason)),
                *v as f64,
            );
        }
    }
}

/// Protocol packets and messages, losses, decode failures and connection memory.
fn protocol_traffic(m: &mut Metrics, s: &Snapshot) {
    for (name, help, field) in [
        (
            "xrudp_protocol_packets_received_total",
            "Protocol packets received and accepted.",
            (|f| f.packets_in) as fn(&Figures) -> u64,
        ),
        (
            "xrudp_protocol_packets_sent_total",
            "Protocol packets sent.",
            |f| f.packets_out,
        ),
        (
            "xrudp_retransmitted_packets_total",
            "Packets sent again after being declared lost.",
            |f| f.retransmitted_packets,
        ),
        (
            "xrudp_lost_packets_total",
            "Packets declared lost (acks or timeouts).",
            |f| f.lost_packets,
        ),
        (
            "xrudp_messages_received_total",
            "Messages delivered to the application.",
            |f| f.messages_in,
        ),
        (
            "xrudp_messages_sent_total",
            "Messages queued by the application.",
            |f| f.messages_out,
        ),
        (
            "xrudp_crc_failures_total",
            "Datagrams dropped for a bad CRC32C.",
            |f| f.crc_failures,
        ),
        (
            "xrudp_decode_errors_total",
            "Undecodable datagrams (CRC failures included).",
            |f| f.decode_errors,
        ),
        (
            "xrudp_unknown_connection_total",
            "Datagrams for no known connection, dropped.",
            |f| f.unknown_connection,
        ),
        (
            "xrudp_version_mismatches_total",
            "Hellos of a protocol version this server does not speak.",
            |f| f.version_mismatches,
        ),
        (
            "xrudp_hellos_shed_total",
            "First hellos shed by the per-worker hello budget (--hello-rate).",
            |f| f.hellos_shed,
        ),
        (
            "xrudp_session_updates_failed_total",
            "Admission control: updates of the XDP session allow-list the kernel refused.",
            |f| f.session_updates_failed,
        ),
    ] {
        m.counter(name, help, &per_worker(s, field));
    }
    m.gauge(
        "xrudp_connection_memory_bytes",
        "Bytes of protocol state held by the connection table.",
        &per_worker(s, |f| f.memory),
    );
}

/// RTT quantiles and congestion windows over each worker's connections.
fn path_estimates(m: &mut Metrics, s: &Snapshot) {
    m.family(
        "xrudp_rtt_seconds",
        "gauge",
        "Smoothed RTT over the worker's connections, by quantile.",
    );
    for x in &s.queues {
        let Some((p50, p99)) = x.protocol.as_ref().and_then(|f| f.rtt_us) else {
            continue;
        };
        for (quantile, us) in [("0.5", p50), ("0.99", p99)] {
            m.sample_raw(
                "xrudp_rtt_seconds",
                &format!("queue=\"{}\",quantile=\"{quantile}\"", x.queue),
                us as f64 / 1e6,
            );
        }
    }
    m.family(
        "xrudp_congestion_window_bytes",
        "gauge",
        "Congestion windows over the worker's connections: min, median, max.",
    );
    for x in &s.queues {
        let Some((lo, mid, hi)) = x.protocol.as_ref().and_then(|f| f.cwnd) else {
            continue;
        };
        for (stat, bytes) in [("min", lo), ("median", mid), ("max", hi)] {
            m.sample_raw(
                "xrudp_congestion_window_bytes",
                &format!("queue=\"{}\",stat=\"{stat}\"", x.queue),
                bytes as f64,
            );
        }
    }
}

/// The workers' RX-to-TX processing latency histograms (none before traffic).
fn processing_latency(m: &mut Metrics, s: &Snapshot) {
    if !s.queues.iter().any(|x| x.latency.is_some()) {
        return;
    }
    let name = "xrudp_processing_latency_seconds";
    m.family(
        name,
        "histogram",
        "Worker processing latency from RX to TX, per batch, weighted by the batch's packets.",
    );
    for x in &s.queues {
        let Some(l) = &x.latency else { continue };
        for b in &l.buckets {
            m.sample_raw(
                &format!("{name}_bucket"),
                &format!("queue=\"{}\",le=\"{}\"", x.queue, b.le_seconds),
                b.count as f64,
            );
        }
        m.sample_raw(
            &format!("{name}_bucket"),
            &format!("queue=\"{}\",le=\"+Inf\"", x.queue),
            l.count as f64,
        );
        m.sample_raw(
            &format!("{name}_sum"),
            &format!("queue=\"{}\"", x.queue),
            l.sum_ns as f64 / 1e9,
        );
        m.sample_raw(
            &format!("{name}_count"),
            &format!("queue=\"{}\"", x.queue),
            l.count as f64,
        );
    }
}

/// One value per queue that has it, labelled with the queue.
fn per_queue(s: &Snapshot, f: impl Fn(&QueueSnapshot) -> Option<f64>) -> Vec<(Option<u32>, f64)> {
    s.queues
        .iter()
        .filter_map(|x| f(x).map(|v| (Some(x.queue), v)))
        .collect()
}

/// One protocol figure per queue whose worker publishes figures.
fn per_worker(s: &Snapshot, field: fn(&Figures) -> u64) -> Vec<(Option<u32>, f64)> {
    per_queue(s, |x| x.protocol.as_ref().map(|f| field(f) as f64))
}

struct Metrics {
    out: String,
    iface: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample_raw(&mut self, name: &str, labels: &str, v: f64) {
        let sep = if labels.is_empty() { "" } else { "," };
        let _ = writeln!(
            self.out,
            "{name}{{iface=\"{}\"{sep}{labels}}} {v}",
            self.iface
        );
    }

    fn series(&mut self, name: &str, kind: &str, help: &str, values: &[(Option<u32>, f64)]) {
        if values.is_empty() {
            return;
        }
        self.family(name, kind, help);
        for (queue, v) in values {
            let labels = queue.map_or_else(String::new, |q| format!("queue=\"{q}\""));
            self.sample_raw(name, &labels, *v);
        }
    }

    fn counter(&mut self, name: &str, help: &str, values: &[(Option<u32>, f64)]) {
        self.series(name, "counter", help, values);
    }

    fn gauge(&mut self, name: &str, help: &str, values: &[(Option<u32>, f64)]) {
        self.series(name, "gauge", help, values);
    }
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics endpoint's serving thread.
#[derive(Debug)]
pub struct Server {
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    handle: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` and serves `GET /metrics` from the snapshots `snapshot` takes until
    /// [`Server::stop`] (or drop).
    pub fn start(
        addr: SocketAddr,
        snapshot: impl Fn() -> Snapshot + Send + 'static,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("xrudp-metrics".into())
            .spawn(move || {
                while !s2.load(Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            if let Err(e) = serve(conn, &snapshot) {
                                tracing::debug!(error = %e, "metrics request failed");
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics accept failed");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })?;
        tracing::info!(%addr, "serving Prometheus metrics at /metrics");
        Ok(Self {
            stop,
            addr,
            handle: Some(handle),
        })
    }

    /// The bound address (the port is chosen by the kernel when 0 was given).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Answers one connection: reads the request head (at most 8 KiB, 2 s), answers
/// `GET /metrics` with the exposition, anything else with 404 or 405.
fn serve(mut conn: TcpStream, snapshot: &impl Fn() -> Snapshot) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = [0u8; 8192];
    let mut len = 0;
    while len < head.len() {
        let n = conn.read(&mut head[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if head[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let (status, body) = match request_target(&head[..len]) {
        Some(("GET", path)) if path == "/metrics" || path.starts_with("/metrics?") => {
            let snap = snapshot();
            ("200 OK", render(&snap))
        }
        Some(("GET", _)) => ("404 Not Found", "only /metrics is served\n".to_owned()),
        Some(_) => ("405 Method Not Allowed", "only GET is served\n".to_owned()),
        None => ("400 Bad Request", "malformed request\n".to_owned()),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    conn.write_all(body.as_bytes())?;
    conn.flush()
}

/// The method and target of an HTTP/1.x request line.
fn request_target(head: &[u8]) -> Option<(&str, &str)> {
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    (version.starts_with("HTTP/1.") && parts.next().is_none()).then_some((method, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_parse_or_are_refused() {
        assert_eq!(
            request_target(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_target(b"GET /metrics\r\n\r\n"), None);
        assert_eq!(request_target(b"GET /metrics HTTP/1.1"), None);
        assert_eq!(request_target(b"\xff\xfe / HTTP/1.1\r\n"), None);
        assert_eq!(request_target(b"GET  /metrics HTTP/1.1\r\n"), None);
    }

    #[test]
    fn exposition_of_fixed_snapshots_is_unchanged() {
        use crate::stats::fixture;
        fixture::check_golden("prometheus-full.txt", &render(&fixture::full().snapshot));
        fixture::check_golden(
            "prometheus-sparse.txt",
            &render(&fixture::sparse().snapshot),
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
