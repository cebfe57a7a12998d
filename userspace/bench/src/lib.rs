//! `xrudp bench`: the load generator, a library the `xrudp` binary runs as a subcommand.
//!
//! N real protocol connections ([`conns::Conns`] of [`xrudp_proto::Client`]s per thread,
//! over a batched transport: kernel sockets with `recvmmsg`/`sendmmsg`, or AF_XDP on the
//! client end of the link with `--backend xdp`) send to an echo server on an open-loop
//! schedule: message `k` of a thread is due at `t0 + k / rate`
//! and its round-trip time is measured from that scheduled time to its echo, so a stall
//! anywhere shows in the figures (no coordinated omission). Round-trip and connect times
//! go into hdrhistograms; after the schedule a drain period waits for the last echoes,
//! and what never came back is the loss.
//!
//! Beside the latency figures it reports a spinning probe's gaps on each core (the VM's
//! noise floor — see [`probe`]), each core's busy/softirq/steal share, the load threads'
//! CPU per message and, given the server's pid, the server's CPU per message and RSS.
//!
//! - [`schedule`]: the open-loop due-count arithmetic;
//! - [`payload`]: the stamp each message carries;
//! - [`loadgen`]: one load thread; [`conns`]: its connections and timers;
//! - [`socket_io`], [`xdp_io`]: the two load backends;
//! - [`flood`]: `xrudp flood`, spoofed floods through AF_XDP for testing defences;
//! - [`probe`], [`host`]: the noise-floor probe and procfs figures;
//! - [`report`], [`plot`]: the summary, its JSON, and the percentile plot (SVG).
//!
//! Its I/O goes through `xrudp-xdp` (AF_XDP sockets, `recvmmsg`/`sendmmsg`, epoll), so
//! this crate has no `unsafe`. It does not depend on the engine crate, whose binary
//! depends on it: what `--backend xdp` needs from the engine — the interface's queue
//! count and the engine's XDP program, attached on the client end of the link to steer
//! the load's ports into its AF_XDP sockets — comes in through a [`Steering`], which
//! `xrudp bench` implements with the engine's loader and passes to [`run`].
#![deny(unsafe_code)]
#![expect(
    clippy::cast_precision_loss,
    reason = "counts and nanoseconds become f64 only for figures shown to people (rates, \
              ratios, µs); they stay far below 2^52"
)]

pub mod conns;
pub mod flood;
pub mod host;
pub mod loadgen;
pub mod payload;
pub mod plot;
pub mod probe;
pub mod report;
pub mod schedule;
pub mod socket_io;
pub mod xdp_io;

pub use self::xdp_io::{Steered, Steering};

use std::io::{IsTerminal as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use xrudp_client::ClientConfig;

use self::loadgen::{Plan, Progress, Start, Wait};
use self::report::{Messages, Percentiles, Report, ServerFigures, Settings, ratio};

/// `xrudp bench` options.
///
/// Example (against `xrudp attach --app echo` on 198.18.0.1:7777):
/// xrudp bench --server 198.18.0.1:7777 --clients 1000 --rate 20000 --size 64 --duration 10 --plot rtt.svg
///
/// Through AF_XDP on the client end of the link (root, IPv4 only):
/// xrudp bench --backend xdp --iface veth-cli --server 198.18.0.1:7777 --clients 1000 --rate 20000
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// The echo server, ADDR:PORT.
    #[arg(long)]
    pub server: SocketAddr,
    /// Session encryption, as the server runs it: `open` (X25519 + AES-256-GCM, the
    /// engine's default) or `off` (for a server attached with `--encryption off`).
    #[arg(long, value_enum, default_value_t = Encryption::Open)]
    pub encryption: Encryption,
    /// Open mode: pin the server's public key (64 hex digits, as `xrudp attach` logs it).
    #[arg(long = "server-key", value_parser = parse_key)]
    pub server_key: Option<[u8; 32]>,
    /// Connections to open (spread over the threads).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Messages per second offered, all connections together (0: connect and stay idle).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Message size in bytes (at least 18: the stamp each message carries).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Length of the send schedule in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Channel index to send on (server default: 0 reliable-ordered, 1 reliable-unordered,
    /// 2 unreliable, 3 unreliable-sequenced).
    #[arg(long, default_value_t = 0)]
    pub channel: u8,
    /// Load threads, each with its own share of the connections and of the rate.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Cores to pin the load threads to (round-robin), comma-separated. Default: the
    /// cores no running xrudp engine has pinned a worker to (a load thread on a
    /// worker's core would slow the engine it measures); unpinned when there are none
    /// or no engine runs here. Naming a worker's core is allowed, with a warning.
    #[arg(long, value_delimiter = ',')]
    pub cores: Option<Vec<usize>>,
    /// Local addresses to connect from, round-robin, comma-separated (one address has
    /// about 28,000 ephemeral ports: use several for more connections).
    #[arg(long, value_delimiter = ',')]
    pub local: Option<Vec<IpAddr>>,
    /// How the load threads wait between sends: spin (a busy core) or sleep (ppoll to
    /// the microsecond until the next send or an echo; the core is free while nothing
    /// is due, for CPU figures).
    #[arg(long, value_enum, default_value_t = Wait::Spin)]
    pub wait: Wait,
    /// Seconds to wait for the last echoes after the schedule.
    #[arg(long, default_value_t = 2.0)]
    pub drain: f64,
    /// Handshakes in flight per thread, at most.
    #[arg(long = "connect-window", default_value_t = 256)]
    pub connect_window: usize,
    /// Seconds to wait for every connection to be admitted.
    #[arg(long = "connect-timeout", default_value_t = 60.0)]
    pub connect_timeout: f64,
    /// Don't run the noise-floor probe (one SCHED_IDLE spinning thread per core). Its
    /// spinning counts as busy CPU time, so measure CPU shares with this flag.
    #[arg(long = "no-probe")]
    pub no_probe: bool,
    /// The server's pid: report its CPU time per message and its RSS.
    #[arg(long = "server-pid")]
    pub server_pid: Option<u32>,
    /// How the load moves its datagrams. socket: one kernel UDP socket per connection,
    /// drained with recvmmsg and flushed with one sendmmsg per socket per round. xdp:
    /// AF_XDP on --iface (the client end of the link; root; IPv4 servers on the same
    /// link only), one socket per thread on queues 0..threads, every connection on its
    /// own local port from --xdp-ports.
    #[arg(long, value_enum, default_value_t = Backend::Socket)]
    pub backend: Backend,
    /// With --backend xdp: the interface toward the server.
    #[arg(long)]
    pub iface: Option<String>,
    /// With --backend xdp: the first local UDP port; connection k uses BASE+k. The XDP
    /// program steers the whole range to the load generator, so keep it free of other
    /// UDP sockets in this namespace.
    #[arg(long = "xdp-ports", default_value_t = 20000)]
    pub xdp_ports: u16,
    /// With --backend xdp: don't verify the echoes' UDP checksums (the protocol's own
    /// CRC still checks every packet). A server sending from a veth end with TX checksum
    /// offload on leaves only the pseudo-header sum in them: pass this, or run
    /// `ethtool -K <server-dev> tx off` on the server's end.
    #[arg(long = "no-udp-checksum-check")]
    pub no_udp_checksum_check: bool,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Write a latency-by-percentile plot (SVG) to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// `--encryption`: how the load clients protect their sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Encryption {
    /// Open mode (the engine's default).
    Open,
    /// No encryption.
    Off,
}

/// Parses 64 hex digits into a 32-byte key.
fn parse_key(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "expected 64 hex digits (the public key `xrudp attach` logs), got {} characters",
            s.len()
        ));
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(k)
}

/// How the load generator moves its datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Kernel UDP sockets, batched with recvmmsg/sendmmsg.
    Socket,
    /// AF_XDP on the client end of the link.
    Xdp,
}

/// Runs `xrudp bench`: prints the summary (or JSON) on stdout, a progress line on stderr
/// when it is a terminal, and writes the plot if asked. `steering` attaches the XDP
/// program for `--backend xdp`; the socket backend never calls it.
pub fn run(args: &BenchArgs, steering: &dyn Steering) -> anyhow::Result<()> {
    let (report, rtt) = measure(args, steering, std::io::stderr().is_terminal())?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report).context("writing JSON")?;
        writeln!(out).context("writing to stdout")?;
    } else {
        write!(out, "{}", report.text()).context("writing to stdout")?;
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "{} clients, {} msg/s, {} B → {}: p50 {:.0} µs, p99 {:.0} µs",
            args.clients, args.rate, args.size, args.server, report.rtt_us.p50, report.rtt_us.p99
        );
        std::fs::write(path, plot::svg(&rtt, &title))
            .with_context(|| format!("writing the plot to {}", path.display()))?;
    }
    Ok(())
}

/// Runs the load and returns the report and the merged round-trip histogram (ns).
/// `steering` is used with `--backend xdp` only.
pub fn measure(
    args: &BenchArgs,
    steering: &dyn Steering,
    show_progress: bool,
) -> anyhow::Result<(Report, hdrhistogram::Histogram<u64>)> {
    let plans = plans(args)?;
    let threads = plans.len();
    // Dropping the attachment detaches the XDP program: it lives until `measure` returns.
    let (_attachment, rings) = attach(args, steering, &plans)?;
    let load = LoadThreads::spawn(plans, rings)?;
    load.wait_connected(args.clients, show_progress);
    let probe = start_probe(args, threads)?;
    let (window, gaps) = run_schedule(args, &load, probe, show_progress);
    let outcomes = load.join(show_progress)?;
    let totals = Totals::merge(outcomes, gaps)?;
    totals.ensure_connected(args.server)?;
    Ok(totals.into_report(args, threads, &window))
}

/// With `--backend xdp` (and `--iface`), attaches the XDP program and opens one AF_XDP
/// transport per plan; otherwise nothing, and each thread opens its own sockets.
fn attach(
    args: &BenchArgs,
    steering: &dyn Steering,
    plans: &[Plan],
) -> anyhow::Result<(Option<xdp_io::Attachment>, Vec<Option<xdp_io::Rings>>)> {
    let (Backend::Xdp, Some(iface)) = (args.backend, &args.iface) else {
        return Ok((None, Vec::new()));
    };
    let clients: Vec<usize> = plans.iter().map(|p| p.clients).collect();
    let (a, r) = xdp_io::attach(
        steering,
        iface,
        args.server,
        args.xdp_ports,
        &clients,
        !args.no_udp_checksum_check,
    )?;
    Ok((Some(a), r.into_iter().map(Some).collect()))
}

/// The load threads, and what the main thread shares with them.
struct LoadThreads {
    start: Arc<Start>,
    progress: Arc<Vec<Progress>>,
    handles: Vec<JoinHandle<std::io::Result<loadgen::Outcome>>>,
}

impl LoadThreads {
    /// Spawns one thread per plan: thread `i` over `rings[i]` if there is one, else
    /// over kernel sockets.
    fn spawn(plans: Vec<Plan>, mut rings: Vec<Option<xdp_io::Rings>>) -> anyhow::Result<Self> {
        let threads = plans.len();
        let start = Arc::new(Start::default());
        let progress: Arc<Vec<Progress>> =
            Arc::new((0..threads).map(|_| Progress::default()).collect());
        let mut handles = Vec::with_capacity(threads);
        for (i, plan) in plans.into_iter().enumerate() {
            let start = Arc::clone(&start);
            let progress = Arc::clone(&progress);
            let builder = std::thread::Builder::new().name(format!("bench-{i}"));
            let spawned = match rings.get_mut(i).and_then(Option::take) {
                Some(r) => {
                    builder.spawn(move || loadgen::run(&plan, || Ok(r), &start, &progress[i]))
                }
                None => builder.spawn(move || {
                    loadgen::run(&plan, socket_io::Sockets::new, &start, &progress[i])
                }),
            };
            handles.push(spawned.context("spawning a load thread")?);
        }
        Ok(Self {
            start,
            progress,
            handles,
        })
    }

    /// Waits for every thread to finish connecting, showing the admitted count.
    fn wait_connected(&self, clients: usize, show_progress: bool) {
        let connect_started = Instant::now();
        while self.start.ready.load(Ordering::Acquire) < self.handles.len() {
            std::thread::sleep(Duration::from_millis(50));
            if show_progress {
                let c = self.total(|p| &p.connected);
                eprint!(
                    "\rconnecting: {c}/{clients} admitted ({:.1} s)   ",
                    connect_started.elapsed().as_secs_f64()
                );
            }
        }
    }

    /// Shows messages sent and echoed so far, and the echo rate since `last` (when, and
    /// how many echoed then); returns the new `last`.
    fn show_schedule_progress(
        &self,
        t0: Instant,
        duration_secs: f64,
        last: (Instant, u64),
    ) -> (Instant, u64) {
        let sent = self.total(|p| &p.sent);
        let echoed = self.total(|p| &p.echoed);
        let now = Instant::now();
        let rate = (echoed - last.1.min(echoed)) as f64 / (now - last.0).as_secs_f64();
        eprint!(
            "\r{:5.1}/{duration_secs:.0} s  sent {sent}  echoed {echoed}  {rate:.0} msg/s   ",
            now.saturating_duration_since(t0).as_secs_f64(),
        );
        (now, echoed)
    }

    /// One progress counter summed over the threads.
    fn total(&self, counter: impl Fn(&Progress) -> &AtomicU64) -> u64 {
        self.progress
            .iter()
            .map(|p| counter(p).load(Ordering::Relaxed))
            .sum()
    }

    /// Waits for every thread's outcome; fails if any thread failed or panicked.
    fn join(self, show_progress: bool) -> anyhow::Result<Vec<loadgen::Outcome>> {
        let mut outcomes = Vec::with_capacity(self.handles.len());
        for h in self.handles {
            match h.join() {
                Ok(r) => outcomes.push(r.context("a load thread failed")?),
                Err(_) => bail!("a load thread panicked"),
            }
        }
        if show_progress {
            eprint!("\r{:60}\r", "");
        }
        Ok(outcomes)
    }
}

/// Starts the noise-floor probe on every core but those a spinning, pinned load thread
/// measures itself (a `SCHED_IDLE` probe there would starve); none with `--no-probe`.
fn start_probe(args: &BenchArgs, threads: usize) -> anyhow::Result<Option<probe::Probe>> {
    if args.no_probe {
        return Ok(None);
    }
    let spun: Vec<usize> = match (&load_cores(args), args.wait) {
        (Some(c), Wait::Spin) => c.iter().copied().take(threads).collect(),
        _ => Vec::new(),
    };
    let cores: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .filter(|c| !spun.contains(c))
        .collect();
    Ok(Some(
        probe::Probe::start(&cores).context("starting the probe threads")?,
    ))
}

/// The host's and the server's counters on either side of the schedule.
struct Window {
    duration: Duration,
    cpu_before: Vec<host::CpuTicks>,
    cpu_after: Vec<host::CpuTicks>,
    server_cpu_before: Option<u64>,
    server_cpu_after: Option<u64>,
    /// The server's RSS and peak RSS at the end of the schedule.
    server_rss: Option<(u64, u64)>,
}

impl Window {
    /// The server's figures, if its pid was given; `echoed` messages share its CPU time.
    fn server(&self, pid: Option<u32>, echoed: u64) -> Option<ServerFigures> {
        pid.map(|pid| {
            let cpu = self
                .server_cpu_after
                .zip(self.server_cpu_before)
                .map_or(0, |(a, b)| a.saturating_sub(b));
            ServerFigures {
                pid,
                cpu_ns: cpu,
                cpu_ns_per_msg: ratio(cpu as f64, echoed as f64),
                rss_bytes: self.server_rss.map_or(0, |r| r.0),
                hwm_bytes: self.server_rss.map_or(0, |r| r.1),
            }
        })
    }
}

/// Starts every thread's schedule 20 ms from now and waits it out, reading the counters
/// on either side; then stops the probe. Returns the counters and the probe's gaps.
fn run_schedule(
    args: &BenchArgs,
    load: &LoadThreads,
    probe: Option<probe::Probe>,
    show_progress: bool,
) -> (Window, Vec<probe::Gaps>) {
    let duration = Duration::from_secs_f64(args.duration);
    let t0 = Instant::now() + Duration::from_millis(20);
    std::thread::sleep(t0.saturating_duration_since(Instant::now()));
    let cpu_before = host::cpu_ticks();
    let server_cpu_before = args.server_pid.and_then(host::process_cpu_ns);
    // Only this thread sets t0, once, so this cannot find it set.
    let _ = load.start.t0.set(t0);
    let end = t0 + duration;
    let mut last = (Instant::now(), 0u64);
    while Instant::now() < end {
        std::thread::sleep(
            Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())),
        );
        if show_progress {
            last = load.show_schedule_progress(t0, args.duration, last);
        }
    }
    let cpu_after = host::cpu_ticks();
    let server_cpu_after = args.server_pid.and_then(host::process_cpu_ns);
    let server_rss = args.server_pid.and_then(host::rss);
    let gaps = probe.map(probe::Probe::finish).unwrap_or_default();
    if show_progress {
        eprint!("\rdraining…                                              \r");
    }
    let window = Window {
        duration,
        cpu_before,
        cpu_after,
        server_cpu_before,
        server_cpu_after,
        server_rss,
    };
    (window, gaps)
}

/// The threads' outcomes summed, their histograms merged.
struct Totals {
    rtt: hdrhistogram::Histogram<u64>,
    send_lag: hdrhistogram::Histogram<u64>,
    connect: hdrhistogram::Histogram<u64>,
    messages: Messages,
    connected: u64,
    connect_failed: u64,
    closed: u64,
    retrans: u64,
    packets_out: u64,
    socket_errors: u64,
    send_dropped: u64,
    rx_dropped: u64,
    datagrams: u64,
    syscalls: u64,
    cpu_ns: u64,
    connect_failure: Option<String>,
    close_reason: Option<String>,
    /// The probe's gaps and the spinning threads' loop gaps, by core.
    gaps: Vec<probe::Gaps>,
}

impl Totals {
    /// Sums `outcomes` in order; `gaps` are the probe's, to which the threads' loop gaps
    /// are added.
    fn merge(outcomes: Vec<loadgen::Outcome>, gaps: Vec<probe::Gaps>) -> anyhow::Result<Self> {
        let mut t = Self {
            rtt: loadgen::histogram(),
            send_lag: loadgen::histogram(),
            connect: loadgen::histogram(),
            messages: Messages::default(),
            connected: 0,
            connect_failed: 0,
            closed: 0,
            retrans: 0,
            packets_out: 0,
            socket_errors: 0,
            send_dropped: 0,
            rx_dropped: 0,
            datagrams: 0,
            syscalls: 0,
            cpu_ns: 0,
            connect_failure: None,
            close_reason: None,
            gaps,
        };
        for o in outcomes {
            t.add(o)?;
        }
        t.gaps.sort_by_key(|g| g.core);
        Ok(t)
    }

    fn add(&mut self, o: loadgen::Outcome) -> anyhow::Result<()> {
        self.rtt.add(&o.rtt).context("merging histograms")?;
        self.send_lag
            .add(&o.send_lag)
            .context("merging histograms")?;
        self.connect.add(&o.connect).context("merging histograms")?;
        let m = &mut self.messages;
        m.scheduled += o.scheduled;
        m.sent += o.sent;
        m.send_refused += o.send_refused;
        m.not_connected += o.not_connected;
        m.echoed += o.echoed;
        m.duplicates += o.duplicates;
        m.foreign += o.foreign;
        self.connected += o.connected;
        self.connect_failed += o.connect_failed;
        self.closed += o.closed_during_run;
        self.retrans += o.retransmitted_packets;
        self.packets_out += o.packets_out;
        self.socket_errors += o.socket_errors;
        self.send_dropped += o.send_dropped;
        self.rx_dropped += o.rx_dropped;
        self.datagrams += o.datagrams;
        self.syscalls += o.syscalls;
        self.cpu_ns += o.cpu_ns;
        self.gaps.extend(o.loop_gaps);
        self.connect_failure = self.connect_failure.take().or(o.connect_failure);
        self.close_reason = self.close_reason.take().or(o.close_reason);
        Ok(())
    }

    /// Fails, saying what to check, if no connection to `server` was admitted.
    fn ensure_connected(&self, server: SocketAddr) -> anyhow::Result<()> {
        if self.connected > 0 {
            return Ok(());
        }
        let rx_dropped = self.rx_dropped;
        let dropped = if rx_dropped > 0 {
            format!(
                "; the load backend dropped {rx_dropped} received datagrams (malformed, bad UDP \
                 checksum or unknown port: with --backend xdp, a server whose veth end has TX \
                 checksum offload on sends partial checksums — pass --no-udp-checksum-check)"
            )
        } else {
            String::new()
        };
        bail!(
            "no connection to {server} was admitted ({}){dropped}; check that `xrudp attach --app echo` serves that address and port",
            self.connect_failure.as_deref().unwrap_or("no reason given")
        );
    }

    /// The report, and the merged round-trip histogram.
    fn into_report(
        self,
        args: &BenchArgs,
        threads: usize,
        window: &Window,
    ) -> (Report, hdrhistogram::Histogram<u64>) {
        let mut m = self.messages;
        m.lost = m.scheduled.saturating_sub(m.echoed);
        m.loss_ratio = ratio(m.lost as f64, m.scheduled as f64);
        let secs = window.duration.as_secs_f64();
        let report = Report {
            settings: Settings {
                server: args.server.to_string(),
                clients: args.clients,
                threads,
                rate: args.rate,
                size: args.size,
                channel: args.channel,
                duration_secs: secs,
                wait: args.wait,
                backend: args.backend,
            },
            connected: self.connected,
            connect_failed: self.connect_failed,
            connect_failure: self.connect_failure,
            connect_us: Percentiles::of(&self.connect),
            closed_during_run: self.closed,
            close_reason: self.close_reason,
            offered_msg_per_s: ratio(m.scheduled as f64, secs),
            achieved_msg_per_s: ratio(m.echoed as f64, secs),
            rtt_us: Percentiles::of(&self.rtt),
            send_lag_us: Percentiles::of(&self.send_lag),
            retransmitted_packets: self.retrans,
            packets_out: self.packets_out,
            retransmission_ratio: ratio(self.retrans as f64, self.packets_out as f64),
            socket_errors: self.socket_errors,
            send_dropped: self.send_dropped,
            rx_dropped: self.rx_dropped,
            loadgen_cpu_ns_per_msg: ratio(self.cpu_ns as f64, m.echoed as f64),
            loadgen_syscalls_per_datagram: ratio(self.syscalls as f64, self.datagrams as f64),
            cpu: host::shares(&window.cpu_before, &window.cpu_after),
            probe: self.gaps,
            server: window.server(args.server_pid, m.echoed),
            messages: m,
        };
        (report, self.rtt)
    }
}

/// Splits the work over the threads and checks the arguments.
/// The cores the load threads are pinned to: `--cores`, else the cores no engine
/// worker on this host is pinned to (see [`BenchArgs::cores`]).
fn load_cores(args: &BenchArgs) -> Option<Vec<usize>> {
    let taken = host::engine_worker_cores();
    let all: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    choose_cores(args.cores.as_deref(), &taken, &all)
}

/// [`load_cores`] given the engine workers' cores (`taken`) and the host's cores;
/// warns where the load will share a core with a worker.
fn choose_cores(asked: Option<&[usize]>, taken: &[usize], all: &[usize]) -> Option<Vec<usize>> {
    if let Some(asked) = asked {
        let shared: Vec<usize> = asked
            .iter()
            .copied()
            .filter(|c| taken.contains(c))
            .collect();
        if !shared.is_empty() {
            tracing::warn!(
                cores = ?shared,
                "--cores names cores an xrudp engine worker is pinned to: the load will \
                 take time from the engine it measures"
            );
        }
        return Some(asked.to_vec());
    }
    if taken.is_empty() {
        return None;
    }
    let free: Vec<usize> = all.iter().copied().filter(|c| !taken.contains(c)).collect();
    if free.is_empty() {
        tracing::warn!(
            workers = ?taken,
            "every core runs a pinned xrudp engine worker: the load threads share them \
             (give the engine fewer --cores, or pass --cores here to choose)"
        );
        return None;
    }
    Some(free)
}

fn plans(args: &BenchArgs) -> anyhow::Result<Vec<Plan>> {
    let server_key = args.server_key;
    if args.size < payload::HEADER_LEN {
        bail!(
            "--size {} is below {} bytes, the stamp every message carries",
            args.size,
            payload::HEADER_LEN
        );
    }
    if args.clients == 0 {
        bail!("--clients must be at least 1");
    }
    match (args.backend, &args.iface, &args.local) {
        (Backend::Xdp, None, _) => {
            bail!("--backend xdp needs --iface IF: the client end of the link toward the server")
        }
        (Backend::Xdp, _, Some(_)) => bail!(
            "--backend xdp sends from --iface's own address, one port per connection: drop --local"
        ),
        (Backend::Socket, Some(_), _) => {
            bail!("--iface is for --backend xdp (the socket backend goes where the routes say)")
        }
        _ => {}
    }
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 86_400.0) {
        bail!("--duration must be between 0 and 86400 seconds");
    }
    for (name, v) in [
        ("--drain", args.drain),
        ("--connect-timeout", args.connect_timeout),
    ] {
        if !(v.is_finite() && (0.0..=3600.0).contains(&v)) {
            bail!("{name} must be between 0 and 3600 seconds");
        }
    }
    let threads = args
        .threads
        .clamp(1, args.clients)
        .min(usize::from(u16::MAX));
    let locals = match &args.local {
        Some(l) if !l.is_empty() => l.clone(),
        _ => vec![match args.server {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        }],
    };
    let cores = load_cores(args).unwrap_or_default();
    Ok((0..threads)
        .map(|i| Plan {
            // `threads` is at most u16::MAX.
            thread: i as u16,
            server: args.server,
            clients: schedule::split(args.clients as u64, threads, i) as usize,
            rate: schedule::split(args.rate, threads, i),
            size: args.size,
            channel: args.channel,
            duration: Duration::from_secs_f64(args.duration),
            drain: Duration::from_secs_f64(args.drain),
            locals: locals.clone(),
            connect_window: args.connect_window,
            connect_timeout: Duration::from_secs_f64(args.connect_timeout),
            core: (!cores.is_empty()).then(|| cores[i % cores.len()]),
            wait: args.wait,
            config: ClientConfig::default(),
            encryption: match args.encryption {
                Encryption::Open => Some(server_key),
                Encryption::Off => None,
            },
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use xrudp_client::testing::EchoServer;

    /// The socket backend steers nothing.
    struct Unused;

    impl Steering for Unused {
        fn rx_queues(&self, _: &str) -> anyhow::Result<u32> {
            unreachable!("the socket backend has no interface")
        }
        fn steer(&self, _: &str, _: &[u16]) -> anyhow::Result<Box<dyn Steered>> {
            unreachable!("the socket backend attaches no XDP program")
        }
    }

    fn args(server: SocketAddr) -> BenchArgs {
        BenchArgs {
            encryption: Encryption::Open,
            server_key: None,
            server,
            clients: 20,
            rate: 2000,
            size: 64,
            duration: 2.0,
            channel: 0,
            threads: 2,
            cores: None,
            local: None,
            wait: Wait::Sleep,
            drain: 5.0,
            connect_window: 8,
            connect_timeout: 30.0,
            no_probe: true,
            server_pid: Some(std::process::id()),
            backend: Backend::Socket,
            iface: None,
            xdp_ports: 20000,
            no_udp_checksum_check: false,
            json: false,
            plot: None,
        }
    }

    #[test]
    fn reliable_echo_run_accounts_for_every_message() {
        let server = EchoServer::start(xrudp_proto::ServerConfig::default()).unwrap();
        let (report, rtt) = measure(&args(server.addr()), &Unused, false).unwrap();
        let m = &report.messages;
        assert_eq!(report.connected, 20);
        assert_eq!(report.connect_failed, 0);
        assert_eq!(report.connect_us.count, 20);
        assert_eq!(m.scheduled, 4000, "2 s at 2,000 msg/s");
        assert_eq!(m.sent, m.scheduled);
        assert_eq!(
            m.echoed, m.sent,
            "reliable channel: every message comes back"
        );
        assert_eq!((m.lost, m.duplicates, m.foreign), (0, 0, 0));
        assert_eq!(rtt.len(), 4000);
        assert_eq!(report.rtt_us.count, 4000);
        // Every message's send lag is recorded, and each is part of its round trip (the
        // histograms bucket monotonically, so the order holds at every quantile).
        assert_eq!(report.send_lag_us.count, 4000);
        assert!(report.send_lag_us.p50 <= report.rtt_us.p50);
        assert!(report.send_lag_us.max <= report.rtt_us.max);
        assert!(report.packets_out >= 4000);
        assert!(report.server.as_ref().is_some_and(|s| s.rss_bytes > 0));
        let stats = server.stop().unwrap();
        assert_eq!(stats.messages, 4000, "the server saw each message once");
        assert_eq!(stats.connected, 20);
        // The text and JSON forms carry the figures.
        assert!(report.text().contains("4000 echoed"));
        let v: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(v["messages"]["echoed"], 4000);
        assert_eq!(v["send_lag_us"]["count"], 4000);
        assert_eq!(v["settings"]["wait"], "sleep");
    }

    #[test]
    fn load_threads_keep_off_engine_workers_cores_unless_told() {
        let all = [0, 1, 2, 3];
        assert_eq!(choose_cores(None, &[], &all), None, "no engine: unpinned");
        assert_eq!(choose_cores(None, &[1, 3], &all), Some(vec![0, 2]));
        assert_eq!(
            choose_cores(None, &[0, 1, 2, 3], &all),
            None,
            "no free core"
        );
        assert_eq!(
            choose_cores(Some(&[1]), &[1], &all),
            Some(vec![1]),
            "told to: allowed (with a warning)"
        );
    }

    #[test]
    fn bad_arguments_are_refused_before_connecting() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut a = args(addr);
        a.size = 17;
        assert!(plans(&a).unwrap_err().to_string().contains("--size 17"));
        let mut a = args(addr);
        a.duration = 0.0;
        assert!(plans(&a).is_err());
        let mut a = args(addr);
        a.clients = 3;
        a.threads = 8;
        a.rate = 1001;
        let p = plans(&a).unwrap();
        assert_eq!(p.len(), 3, "no more threads than clients");
        assert_eq!(p.iter().map(|p| p.rate).sum::<u64>(), 1001);
        assert_eq!(p.iter().map(|p| p.clients).sum::<usize>(), 3);
    }
}
