//! `xrudp attach`: load and attach the XDP program, bind one AF_XDP socket per active
//! queue, run pinned workers, serve figures on the control socket, and tear everything
//! down on SIGINT/SIGTERM.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
        mpsc,
    },
    thread,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    control,
    drive::{self, Port, raw, udp::UdpPort, xdp::XdpPort},
    iface::Interface,
    loader::{AdmissionRates, ModeChoice, Program},
    runtime::Claim,
    service::{App, Embedded, Queues, Relay, RelayShared, Service},
    sys::{
        self,
        xsk::{Xsk, XskConfig, ZeroCopy},
    },
    telemetry::{self, Running, Worker},
};
use xrudp_common::admit::Rate;

pub use crate::{drive::WaitStrategy, iface::IfaceError};

/// What the workers do with the datagrams they receive (`--app`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AppKind {
    /// Count and discard every datagram (returns frames straight to the fill ring).
    Discard,
    /// Echo every valid UDP datagram back to its sender (on AF_XDP, built in the
    /// received frame).
    UdpEcho,
    /// The RUDP protocol; every message goes back to its sender on the same channel.
    Echo,
    /// The RUDP protocol; clients join rooms (a message `JOIN` + room id, u32 big-endian)
    /// and every other message is forwarded to the room's other members.
    Relay,
}

impl AppKind {
    /// Whether the application runs the RUDP protocol (and so suits the XDP program's
    /// RUDP pre-filter).
    #[must_use]
    pub fn is_protocol(self) -> bool {
        match self {
            Self::Discard | Self::UdpEcho => false,
            Self::Echo | Self::Relay => true,
        }
    }
}

/// Which data path serves the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// AF_XDP sockets steered by the XDP program.
    Xdp,
    /// Kernel UDP sockets (SO_REUSEPORT, recvmmsg/sendmmsg).
    Socket,
    /// AF_XDP, falling back to kernel sockets (with a warning saying why).
    Auto,
}

/// Why [`Engine::start`] (and so `xrudp attach` and `GameServer::start`) failed. Every
/// message says what to do; the alternate form (`{:#}`) adds the causes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is invalid or does not fit this host: ports, ring and UMEM sizes,
    /// queues, cores, huge pages, protocol settings.
    #[error(transparent)]
    Options(anyhow::Error),
    /// The interface does not exist or cannot be read.
    #[error(transparent)]
    Interface(#[from] crate::iface::IfaceError),
    /// Another engine serves the interface, or the runtime directory is unusable.
    #[error(transparent)]
    Claim(#[from] crate::runtime::ClaimError),
    /// The XDP program or the AF_XDP sockets could not be set up (with
    /// [`Backend::Auto`], only when the kernel-socket fallback failed as well).
    #[error(transparent)]
    Xdp(anyhow::Error),
    /// The kernel-socket backend could not bind its UDP port.
    #[error(transparent)]
    Socket(anyhow::Error),
    /// The control socket or a worker thread could not be started.
    #[error(transparent)]
    Runtime(anyhow::Error),
}

/// Everything `xrudp attach` needs.
#[expect(
    clippy::struct_excessive_bools,
    reason = "each bool is an independent engine switch, set from a command-line flag"
)]
#[derive(Clone, Debug)]
pub struct Options {
    /// Interface name.
    pub iface: String,
    /// UDP destination ports to steer (the socket backend serves the first).
    pub ports: Vec<u16>,
    /// Queues to bind (default: every active queue).
    pub queues: Option<Vec<u32>>,
    /// XDP attach mode.
    pub mode: ModeChoice,
    /// Zero-copy preference.
    pub zero_copy: ZeroCopy,
    /// The application the workers run.
    pub app: AppKind,
    /// UMEM frames per queue.
    pub umem_frames: u32,
    /// Back each UMEM with reserved huge pages (`--umem-hugepages`).
    pub umem_hugepages: bool,
    /// Bytes per UMEM frame.
    pub frame_size: u32,
    /// Ring entries.
    pub ring_size: u32,
    /// Cores to pin workers to, in queue order (default: spread, avoiding core 0).
    pub cores: Option<Vec<usize>>,
    /// How an idle worker waits for traffic.
    pub wait: WaitStrategy,
    /// With [`WaitStrategy::Adaptive`]: the longest a worker keeps checking its rings
    /// after the last datagram before it sleeps.
    pub spin: std::time::Duration,
    /// Verify incoming UDP checksums (`--no-udp-checksum-check` turns it off).
    pub udp_checksum_check: bool,
    /// The data path.
    pub backend: Backend,
    /// Socket-backend workers (default: one per active queue of the interface).
    pub workers: Option<usize>,
    /// Protocol settings for every worker's server (connection slots are per worker).
    pub protocol: xrudp_proto::ServerConfig,
    /// First hellos each worker answers per second; past it they are shed and counted
    /// (0: unlimited). With admission control on, the XDP program enforces it, per CPU.
    pub hello_rate: u32,
    /// Admission control in the XDP program (AF_XDP backend, protocol applications):
    /// the session allow-list, the per-source buckets, the handshake budget and the
    /// migration budget (docs/SECURITY.md). Off: only the pre-filter, and the hello budget in userspace.
    pub admission: bool,
    /// Admission control: handshakes and migration attempts each source (IPv4 address,
    /// IPv6 /64) may send per second, per CPU (0: unlimited).
    pub source_rate: u32,
    /// Admission control: how many of those a source may send at once after a quiet spell.
    pub source_burst: u32,
    /// Admission control: migration attempts (a live encrypted session's packets from an
    /// address it does not have) let through per second, per CPU, whatever their source;
    /// the same number at once after a quiet spell (0: unlimited).
    pub migration_rate: u32,
    /// With the AF_XDP backend: give up every capability once the program is attached
    /// and the sockets are bound (`xrudp attach` sets it; an embedding game decides for
    /// its own process). See [`crate::privileges`].
    pub drop_capabilities: bool,
}

impl Default for Options {
    /// The one place the engine's defaults are written: the command line's
    /// `default_value_t`s and [`crate::api::ServerOptions::new`] start from it.
    fn default() -> Self {
        Self {
            iface: String::new(),
            ports: Vec::new(),
            queues: None,
            mode: ModeChoice::Auto,
            zero_copy: ZeroCopy::Auto,
            app: AppKind::Echo,
            umem_frames: 2048,
            umem_hugepages: false,
            frame_size: 2048,
            ring_size: 2048,
            cores: None,
            wait: WaitStrategy::Sleep,
            spin: std::time::Duration::from_micros(200),
            udp_checksum_check: true,
            backend: Backend::Xdp,
            workers: None,
            protocol: xrudp_proto::ServerConfig::default(),
            hello_rate: 5000,
            admission: true,
            source_rate: 1000,
            source_burst: 2000,
            migration_rate: 1000,
            drop_capabilities: false,
        }
    }
}

/// The attached XDP program, as telemetry reads it (and whose last reference detaches it).
#[derive(Debug)]
struct XdpProgram(Mutex<Program>);

impl telemetry::Program for XdpProgram {
    fn mode(&self) -> String {
        let p = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.mode().map_or_else(String::new, |m| m.to_string())
    }

    fn counters(&self) -> Vec<u64> {
        let p = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        p.counters().unwrap_or_default()
    }
}

/// The name a value-enum serialises to ("xdp", "udp-echo", ...).
fn serde_name(v: impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A running engine: its workers, control socket and runtime claim.
#[derive(Debug)]
pub struct Engine {
    running: Arc<Running>,
    handles: Vec<thread::JoinHandle<()>>,
    control: Option<control::Server>,
    claim: Option<Claim>,
    stop: Arc<AtomicBool>,
    _busy_knobs: Arc<crate::busy_poll::Knobs>,
}

/// Runs the engine until `stop` is set (by SIGINT/SIGTERM in the binary).
pub fn run(options: &Options, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    serve(options, stop, None, None)
}

/// [`run`], also serving Prometheus metrics at `http://<metrics>/metrics` when given
/// (`xrudp attach --metrics-addr`), and as an Agones game server with `agones`
/// (`xrudp attach --agones`: see [`crate::agones`]). Returns after a stop, or once a
/// drain (`xrudp drain`; under Agones also GameServer Shutdown or SIGTERM) has ended.
pub fn serve(
    options: &Options,
    stop: &Arc<AtomicBool>,
    metrics: Option<std::net::SocketAddr>,
    agones: Option<&crate::agones::Config>,
) -> anyhow::Result<()> {
    // Before anything is attached: an unreachable sidecar is the error, not a detach.
    let sidecar = agones
        .map(|_| crate::agones::Sidecar::connect())
        .transpose()?;
    let (engine, _) = Engine::start(options, None, Arc::clone(stop))?;
    let exporter = match metrics {
        Some(addr) => Some(
            crate::stats::prometheus::Server::start(addr, {
                let running = Arc::clone(engine.running());
                move || running.snapshot()
            })
            .with_context(|| {
                format!(
                    "binding --metrics-addr {addr}: is the port free? (`ss -tlpn sport = :{}`)",
                    addr.port()
                )
            })?,
        ),
        None => None,
    };
    if let Some(s) = &sidecar {
        let running = engine.running();
        let slots = running.protocol.then(|| {
            (options.protocol.max_connections as u64).saturating_mul(running.workers.len() as u64)
        });
        s.serving(Arc::clone(running), slots);
    }
    let mut failed = None;
    while !stop.load(Relaxed) {
        thread::park_timeout(std::time::Duration::from_millis(200));
        if let (Some(s), Some(cfg)) = (&sidecar, agones) {
            if let Some(why) = s.failure() {
                failed = Some(why);
                break;
            }
            agones_drain(engine.running(), s, cfg);
        }
        if let Some(deadline) = engine.running().drain_deadline() {
            let open = engine.running().open_connections();
            if open == 0 {
                tracing::info!("drained: the last connection has ended");
                break;
            }
            if Instant::now() >= deadline {
                tracing::info!(open, "drain deadline reached; closing the rest");
                break;
            }
        }
    }
    tracing::info!("shutting down");
    if let Some(e) = exporter {
        e.stop();
    }
    engine.stop();
    if let Some(why) = failed {
        bail!("Agones: {why}");
    }
    if let Some(s) = sidecar {
        s.finish();
    }
    Ok(())
}

/// Under Agones, GameServer Shutdown or SIGTERM drains the engine as `xrudp drain` does
/// (no redirect), once.
fn agones_drain(running: &Running, sidecar: &crate::agones::Sidecar, cfg: &crate::agones::Config) {
    if running.drain_deadline().is_some() {
        return;
    }
    let why = if cfg.term.load(Relaxed) {
        "SIGTERM"
    } else if sidecar.shutdown_requested() {
        "GameServer Shutdown"
    } else {
        return;
    };
    let open = running.drain(None, Instant::now() + cfg.drain_deadline);
    running.update_agones(|a| why.clone_into(&mut a.draining));
    tracing::info!(
        reason = why,
        open,
        deadline_secs = cfg.drain_deadline.as_secs(),
        "Agones: draining"
    );
}

impl Engine {
    /// Starts the engine. With `embedded = Some(capacity)`, the workers serve embedding
    /// game code through one pair of bounded queues per worker (returned), whatever
    /// `options.app` says. Workers stop when `stop` is set or [`Engine::stop`] is called.
    pub fn start(
        options: &Options,
        embedded: Option<usize>,
        stop: Arc<AtomicBool>,
    ) -> Result<(Self, Vec<Arc<Queues>>), StartError> {
        validate(options).map_err(StartError::Options)?;
        let iface = Interface::lookup(&options.iface)?;
        match options.backend {
            Backend::Xdp => start_xdp(options, &iface, embedded, stop),
            Backend::Socket => start_socket(options, &iface, embedded, stop),
            Backend::Auto => {
                let claim_probe = crate::runtime::live_engine(&iface.name).ok().flatten();
                if let Some(pid) = claim_probe {
                    return Err(crate::runtime::ClaimError::Busy {
                        iface: iface.name.clone(),
                        pid,
                    }
                    .into());
                }
                match start_xdp(options, &iface, embedded, Arc::clone(&stop)) {
                    Ok(e) => Ok(e),
                    Err(e) => {
                        tracing::warn!(
                            iface = %iface.name,
                            error = %format!("{e:#}"),
                            "AF_XDP is unavailable; falling back to kernel UDP sockets"
                        );
                        start_socket(options, &iface, embedded, stop)
                    }
                }
            }
        }
    }

    /// What is running.
    #[must_use]
    pub fn running(&self) -> &Arc<Running> {
        &self.running
    }

    /// Stops the workers (clients get disconnect notices), the control socket, detaches
    /// the XDP program and removes the runtime files.
    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        for h in self.handles.drain(..) {
            if h.join().is_err() {
                tracing::error!("a worker thread panicked");
            }
        }
        if let Some(c) = self.control.take() {
            c.stop();
        }
        // Dropping the last reference to `running` detaches the program (aya owns the
        // bpf_link); the busy-poll knobs are restored, then the claim goes.
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
        if let Some(c) = self.control.take() {
            c.stop();
        }
        self.claim.take();
    }
}

/// Free message buffers each worker's protocol pool starts with, per size class up to
/// 2 KiB (about 850 KiB per worker): bursts after startup (a large batch after a stall,
/// a slow client's unacknowledged echoes) take these instead of allocating on the worker.
const POOL_PREFILL: usize = 256;

/// What one worker runs, built before the workers start (so a bad setting is an error
/// of `Engine::start`, not of a worker thread).
#[derive(Debug)]
enum Job {
    /// The protocol and a protocol application.
    Protocol(Box<Service>),
    /// `--app discard`.
    Discard,
    /// `--app udp-echo`.
    UdpEcho,
}

impl Job {
    /// Capacity of the AF_XDP port's route table: the protocol originates datagrams
    /// toward every peer it serves (and those it answers before admitting them).
    fn routes(&self) -> Option<usize> {
        match self {
            Self::Protocol(s) => Some(2 * s.server().config().max_connections + 1024),
            Self::Discard | Self::UdpEcho => None,
        }
    }

    /// Drives `port` for this job until `stop` (see [`drive::run`]).
    fn run<P: Port>(self, port: &mut P, worker: &Worker, idle: drive::Idle, stop: &AtomicBool) {
        match self {
            Self::Protocol(mut s) => drive::run(port, &mut *s, worker, idle, stop),
            Self::Discard => drive::run(port, &mut raw::Discard, worker, idle, stop),
            Self::UdpEcho => drive::run(port, &mut raw::UdpEcho, worker, idle, stop),
        }
    }
}

/// The jobs of `n` workers, and the embedding queues when embedded (game code then
/// serves every worker, whatever `options.app` says).
fn jobs(
    options: &Options,
    embedded: Option<usize>,
    n: usize,
) -> anyhow::Result<(Vec<Job>, Vec<Arc<Queues>>)> {
    let mut queues = Vec::new();
    let relay = Arc::new(RelayShared::new(n, 16 * 1024));
    let cookie_seed = random_seed()?;
    let slots = options.protocol.max_connections;
    let mut jobs = Vec::with_capacity(n);
    for i in 0..n {
        let app = match (embedded, options.app) {
            (Some(cap), _) => {
                let q =
                    Arc::new(Queues::new(cap).context("creating the embedding queues' eventfd")?);
                queues.push(Arc::clone(&q));
                App::Embedded(Embedded::new(q))
            }
            (None, AppKind::Echo) => App::Echo,
            (None, AppKind::Relay) => App::Relay(Relay::new(Arc::clone(&relay), slots)),
            (None, AppKind::Discard) => {
                jobs.push(Job::Discard);
                continue;
            }
            (None, AppKind::UdpEcho) => {
                jobs.push(Job::UdpEcho);
                continue;
            }
        };
        let worker = u16::try_from(i).context("too many workers (at most 65,536)")?;
        let service = new_service(options, app, worker, cookie_seed)?;
        jobs.push(Job::Protocol(Box::new(service)));
    }
    Ok((jobs, queues))
}

/// A fresh protocol service for one worker, running `app`.
fn new_service(
    options: &Options,
    app: App,
    worker: u16,
    cookie_seed: [u8; 32],
) -> anyhow::Result<Service> {
    let mut cfg = options.protocol.clone();
    cfg.cookie_seed = Some(cookie_seed);
    let now = Instant::now();
    let mut server = xrudp_proto::Server::with_entropy(cfg, random_seed()?, now)
        .map_err(|e| anyhow::anyhow!("invalid protocol settings: {e}"))?;
    // Connect tokens carry Unix expiry times; the sans-IO core reads no clock.
    server.set_unix_time(now, unix_now());
    server.prefill_pool(POOL_PREFILL);
    Ok(Service::new(server, app, worker, options.hello_rate))
}

/// One worker before it starts: how to make its port (on the worker's own thread, so
/// the port's buffers are first touched on its core), its shared state and its core.
struct Planned<F> {
    port: F,
    worker: Arc<Worker>,
    core: Option<usize>,
}

/// Starts the control socket over `running`, then one thread per planned worker, each
/// driving its port for its job; the same for every backend.
fn launch<P: Port, F: FnOnce() -> P + Send + 'static>(
    options: &Options,
    running: Running,
    claim: Claim,
    planned: Vec<Planned<F>>,
    jobs: Vec<Job>,
    stop: Arc<AtomicBool>,
    busy_knobs: Arc<crate::busy_poll::Knobs>,
) -> anyhow::Result<Engine> {
    let running = Arc::new(running);
    let control = control::Server::start(
        &claim.paths().control,
        control::Sources {
            snapshot: Box::new({
                let running = Arc::clone(&running);
                move || running.snapshot()
            }),
            connections: Box::new({
                let running = Arc::clone(&running);
                move || running.connections()
            }),
            drain: Box::new({
                let running = Arc::clone(&running);
                move |redirect, deadline| running.drain(redirect, Instant::now() + deadline)
            }),
        },
    )?;
    let prefix = if running.backend == "xdp" { "q" } else { "s" };
    let idle = drive::Idle::new(options.wait, options.spin);
    let mut handles = Vec::with_capacity(planned.len());
    for (p, job) in planned.into_iter().zip(jobs) {
        let Planned { port, worker, core } = p;
        let stop = Arc::clone(&stop);
        let id = worker.id;
        handles.push(spawn_worker(
            format!("xrudp-{prefix}{id}"),
            core,
            Arc::clone(&worker),
            move || {
                let span = tracing::info_span!("worker", id);
                let _g = span.enter();
                job.run(&mut port(), &worker, idle, &stop);
            },
        )?);
    }
    Ok(Engine {
        running,
        handles,
        control: Some(control),
        claim: Some(claim),
        stop,
        _busy_knobs: busy_knobs,
    })
}

fn start_xdp(
    options: &Options,
    iface: &Interface,
    embedded: Option<usize>,
    stop: Arc<AtomicBool>,
) -> Result<(Engine, Vec<Arc<Queues>>), StartError> {
    let queues = select_queues(iface, options.queues.as_deref()).map_err(StartError::Options)?;
    let cores = assign_cores(options.cores.as_deref(), queues.len(), iface.numa_node)
        .map_err(StartError::Options)?;
    if options.umem_hugepages {
        check_huge_pages(options, queues.len()).map_err(StartError::Options)?;
    }
    let umem_bytes =
        u64::from(options.umem_frames) * u64::from(options.frame_size) * queues.len() as u64;
    crate::privileges::check_xdp(umem_bytes).map_err(|e| StartError::Xdp(e.into()))?;
    let claim = Claim::acquire(&iface.name)?;

    let xdp = |e: crate::loader::LoadError| StartError::Xdp(e.into());
    let rudp_filter = embedded.is_some() || options.app.is_protocol();
    let admission = options.admission && rudp_filter;
    let mut program = if admission {
        let (slots, span) = session_layout(options, &queues).map_err(StartError::Options)?;
        Program::load_sized(slots, span)
    } else {
        Program::load()
    }
    .map_err(xdp)?;
    program
        .configure(&options.ports, rudp_filter)
        .map_err(xdp)?;
    program
        .admission(admission.then(|| AdmissionRates {
            source: Rate::new(options.source_rate, options.source_burst),
            hello: Rate::new(options.hello_rate, options.hello_rate),
            migration: Rate::new(options.migration_rate, options.migration_rate),
        }))
        .map_err(xdp)?;

    // Native XDP first decides which zero-copy attempts make sense: SKB mode is copy only.
    let mode = program.attach(&iface.name, options.mode).map_err(xdp)?;
    let sockets = open_sockets(options, iface, &queues, &cores, mode, &mut program)
        .map_err(StartError::Xdp)?;
    let busy_knobs = busy_poll_knobs(options, iface, &sockets);
    log_attached(options, iface, mode, &sockets, &cores);
    if options.drop_capabilities {
        give_up_capabilities(options);
    }

    let (mut jobs, api_queues) =
        jobs(options, embedded, sockets.len()).map_err(StartError::Options)?;
    if admission {
        for ((q, _), job) in sockets.iter().zip(&mut jobs) {
            if let Job::Protocol(service) = job {
                service.publish_sessions(program.session_map().map_err(xdp)?, *q);
            }
        }
    }
    let mut planned = Vec::with_capacity(sockets.len());
    for (((q, xsk), core), job) in sockets.into_iter().zip(cores).zip(&jobs) {
        let telemetry = telemetry::Xsk {
            socket: xsk
                .try_clone_fd()
                .context("duplicating the AF_XDP socket descriptor")
                .map_err(StartError::Xdp)?,
            zero_copy: xsk.zero_copy(),
            umem_frames: xsk.frames(),
        };
        let (knobs, check, routes) = (
            Arc::clone(&busy_knobs),
            options.udp_checksum_check,
            job.routes(),
        );
        planned.push(Planned {
            worker: Arc::new(Worker::new(q, Some(telemetry))),
            port: move || XdpPort::new(xsk, knobs, check, routes),
            core,
        });
    }
    let running = running(
        options,
        iface,
        Backend::Xdp,
        Some(Arc::new(XdpProgram(Mutex::new(program)))),
        planned.iter().map(|p| Arc::clone(&p.worker)).collect(),
        embedded.is_some(),
    );
    let engine = launch(options, running, claim, planned, jobs, stop, busy_knobs)
        .map_err(StartError::Runtime)?;
    Ok((engine, api_queues))
}

/// The session allow-list's layout: `--max-connections` slots for every receive queue id
/// up to the highest bound (each queue's slots start at `queue × slots`, so a packet's
/// entry is found from its queue and connection id alone). Fails when the array would
/// not fit a `u32` index.
fn session_layout(options: &Options, queues: &[u32]) -> anyhow::Result<(u32, u32)> {
    let span = queues.iter().max().map_or(1, |&q| q.saturating_add(1));
    let slots = options.protocol.max_connections;
    u32::try_from(slots)
        .ok()
        .and_then(|s| s.checked_mul(span).map(|_| (s, span)))
        .with_context(|| {
            format!(
                "--max-connections {slots} × {span} receive queue ids (the highest bound \
                 is {}) does not fit the XDP session map; lower --max-connections, or bind \
                 lower queue ids with --queues",
                span - 1
            )
        })
}

/// Gives up the capabilities the running engine does not need (all of them, or all but
/// `CAP_NET_ADMIN` with `--busy-poll`, whose interface knobs are written back at exit),
/// before the workers and the control socket's thread start so that they inherit the
/// reduced sets. A failure is logged, not fatal: the engine works as before, with more
/// privilege than it needs.
fn give_up_capabilities(options: &Options) {
    let keep: &[caps::Capability] = if options.wait.busy_poll() {
        &[caps::Capability::CAP_NET_ADMIN]
    } else {
        &[]
    };
    match crate::privileges::drop_after_attach(keep) {
        Ok(dropped) => tracing::info!(
            dropped = dropped.len(),
            kept = ?keep,
            "capabilities given up after attach"
        ),
        Err(e) => tracing::warn!(error = %e, "could not give up capabilities after attach"),
    }
}

/// Binds one AF_XDP socket per queue and registers it with the program.
///
/// NUMA: the UMEM's pages are pinned, and so placed, by the thread that registers it.
/// On a multi-node machine this thread moves to the first worker core (chosen on the
/// NIC's node) while it creates the UMEMs, so they land on the NIC's node; then it gets
/// its own affinity back (it may be the embedding game's thread).
fn open_sockets(
    options: &Options,
    iface: &Interface,
    queues: &[u32],
    cores: &[Option<usize>],
    mode: crate::loader::Mode,
    program: &mut Program,
) -> anyhow::Result<Vec<(u32, Xsk)>> {
    let cfg = XskConfig {
        frames: options.umem_frames,
        frame_size: options.frame_size,
        ring_size: options.ring_size,
        zero_copy: options.zero_copy,
        need_wakeup: !options.wait.busy_poll(),
        huge_pages: options.umem_hugepages,
    };
    let program_mode = match mode {
        crate::loader::Mode::Native => sys::xsk::ProgramMode::Native,
        crate::loader::Mode::Skb => sys::xsk::ProgramMode::Skb,
    };
    let umem_core = cores
        .first()
        .copied()
        .flatten()
        .filter(|_| numa_nodes() > 1 && iface.numa_node.is_some());
    on_core(umem_core, || {
        let mut sockets = Vec::with_capacity(queues.len());
        for &q in queues {
            let xsk = Xsk::bind(&iface.name, q, &cfg, program_mode)
                .map_err(|e| bind_error(e, iface, mode, options.zero_copy))?;
            program.register_socket(q, xsk.fd())?;
            sockets.push((q, xsk));
        }
        Ok(sockets)
    })
}

/// With `--busy-poll`: the sockets' busy-poll options and the interface's knobs, which
/// are written back when the engine (holding the returned guard) drops.
fn busy_poll_knobs(
    options: &Options,
    iface: &Interface,
    sockets: &[(u32, Xsk)],
) -> Arc<crate::busy_poll::Knobs> {
    let knobs = options.wait.busy_poll().then(|| {
        let mut out = crate::busy_poll::Outcome::default();
        let knobs = crate::busy_poll::IfaceKnobs::apply(&iface.name, &mut out);
        for (_, xsk) in sockets {
            crate::busy_poll::configure_socket(xsk.fd(), &mut out);
        }
        tracing::info!(applied = ?out.applied, "busy polling");
        for r in &out.refused {
            tracing::warn!(setting = %r, "busy-poll setting refused; carrying on without it");
        }
        knobs
    });
    Arc::new(crate::busy_poll::Knobs::new(knobs))
}

fn log_attached(
    options: &Options,
    iface: &Interface,
    mode: crate::loader::Mode,
    sockets: &[(u32, Xsk)],
    cores: &[Option<usize>],
) {
    let zc = sockets.iter().all(|(_, x)| x.zero_copy());
    let queues: Vec<u32> = sockets.iter().map(|(q, _)| *q).collect();
    tracing::info!(
        iface = %iface.name,
        backend = "xdp",
        driver = iface.driver.as_deref().unwrap_or("unknown"),
        xdp_mode = %mode,
        zero_copy = zc,
        bind_mode = if zc { "zero-copy" } else { "copy" },
        udp_checksum_check = options.udp_checksum_check,
        umem_hugepages = options.umem_hugepages,
        queues = ?queues,
        cores = ?cores,
        numa_node = ?iface.numa_node,
        numa = numa_note(iface),
        wakeup = options.wait.wakeup_name(),
        ports = ?options.ports,
        app = ?options.app,
        "attached"
    );
}

fn start_socket(
    options: &Options,
    iface: &Interface,
    embedded: Option<usize>,
    stop: Arc<AtomicBool>,
) -> Result<(Engine, Vec<Arc<Queues>>), StartError> {
    let Some(&port) = options.ports.first() else {
        return Err(StartError::Options(anyhow::anyhow!(
            "no --port given: name the game's UDP port, e.g. --port 7777"
        )));
    };
    if options.ports.len() > 1 {
        tracing::warn!(ports = ?options.ports, "the socket backend serves only the first port");
    }
    let n = options.workers.unwrap_or(iface.rx_queues as usize).max(1);
    let cores =
        assign_cores(options.cores.as_deref(), n, iface.numa_node).map_err(StartError::Options)?;
    let claim = Claim::acquire(&iface.name)?;
    let mut planned = Vec::with_capacity(n);
    for (i, core) in cores.iter().enumerate() {
        let sock = UdpPort::open(port)
            .with_context(|| {
                format!("binding UDP port {port} (SO_REUSEPORT): is another program using it? (`ss -ulpn sport = :{port}`)")
            })
            .map_err(StartError::Socket)?;
        planned.push(Planned {
            port: move || UdpPort::new(sock),
            worker: Arc::new(Worker::new(i as u32, None)),
            core: *core,
        });
    }
    tracing::info!(
        iface = %iface.name,
        backend = "socket",
        workers = n,
        cores = ?cores,
        port,
        wakeup = options.wait.wakeup_name(),
        app = ?options.app,
        "serving on kernel UDP sockets"
    );
    let running = running(
        options,
        iface,
        Backend::Socket,
        None,
        planned.iter().map(|p| Arc::clone(&p.worker)).collect(),
        embedded.is_some(),
    );
    let (jobs, api_queues) = jobs(options, embedded, n).map_err(StartError::Options)?;
    let engine = launch(options, running, claim, planned, jobs, stop, Arc::default())
        .map_err(StartError::Runtime)?;
    Ok((engine, api_queues))
}

/// Spawns worker thread `name`, which pins itself to `core` (see [`pin`]), records its
/// thread id and real affinity in `worker`, and runs `work`. Returns once the worker has
/// recorded them, so the first snapshot shows where it runs.
fn spawn_worker(
    name: String,
    core: Option<usize>,
    worker: Arc<Worker>,
    work: impl FnOnce() + Send + 'static,
) -> anyhow::Result<thread::JoinHandle<()>> {
    let (started, wait) = mpsc::sync_channel(1);
    let handle = thread::Builder::new()
        .name(name)
        .spawn(move || {
            pin(core, worker.id);
            worker.started(sys::gettid(), pinned_core());
            let _ = started.send(());
            drop(worker);
            work();
        })
        .context("spawning a worker thread")?;
    let _ = wait.recv();
    Ok(handle)
}

/// The core the calling thread runs on, if its affinity allows exactly one (read back
/// from the kernel: a failed or partial pin shows as `None`, not as the planned core).
fn pinned_core() -> Option<usize> {
    match sys::thread_affinity().as_deref() {
        Ok([core]) => Some(*core),
        _ => None,
    }
}

/// The engine's state for figures.
fn running(
    options: &Options,
    iface: &Interface,
    backend: Backend,
    program: Option<Arc<dyn telemetry::Program>>,
    workers: Vec<Arc<Worker>>,
    embedded: bool,
) -> Running {
    Running {
        iface: iface.name.clone(),
        backend: if backend == Backend::Xdp {
            "xdp"
        } else {
            "socket"
        },
        app: serde_name(options.app),
        protocol: embedded || options.app.is_protocol(),
        ports: options.ports.clone(),
        wakeup: options.wait.wakeup_name(),
        ring_size: if backend == Backend::Xdp {
            options.ring_size
        } else {
            0
        },
        program,
        workers,
        started: Instant::now(),
        started_unix: unix_now(),
        drain_deadline: std::sync::Mutex::new(None),
        agones: std::sync::Mutex::new(None),
    }
}

/// Runs `work` on the calling thread moved to `core` (when given), then gives the thread
/// back the affinity it had, whatever `work` returned.
fn on_core<T>(core: Option<usize>, work: impl FnOnce() -> T) -> T {
    let Some(core) = core else {
        return work();
    };
    let before = sys::thread_affinity();
    pin(Some(core), u32::MAX);
    let out = work();
    match before.and_then(|cpus| sys::set_thread_affinity(&cpus)) {
        Ok(()) => {}
        Err(e) => tracing::warn!(error = %e, "could not restore the caller's CPU affinity"),
    }
    out
}

fn pin(core: Option<usize>, queue: u32) {
    if let Some(core) = core
        && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
    {
        tracing::warn!(queue, core, "could not pin the worker to its core");
    }
}

/// NUMA placement, as logged: with several nodes and a NIC that reports its node, the
/// workers run on that node's cores and the UMEMs are registered from one of them (so
/// their pinned pages land there); worker stacks are first touched by the pinned
/// workers. With one node, or a NIC that reports none, there is nothing to choose.
fn numa_note(iface: &Interface) -> &'static str {
    match (iface.numa_node, numa_nodes()) {
        (_, 0 | 1) => "single node: nothing to place",
        (None, _) => "device reports no NUMA node: default placement",
        (Some(_), _) => "workers and UMEM on the NIC's node",
    }
}

fn numa_nodes() -> usize {
    std::fs::read_dir("/sys/devices/system/node").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.len() > 4 && n.starts_with("node") && n[4..].chars().all(|c| c.is_ascii_digit())
            })
            .count()
    })
}

/// The CPUs of NUMA node `node` (`/sys/devices/system/node/nodeN/cpulist`, e.g. "0-3,8-11").
fn node_cpus(node: u32) -> Vec<usize> {
    let Ok(list) = std::fs::read_to_string(format!("/sys/devices/system/node/node{node}/cpulist"))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let mut ends = part.splitn(2, '-').map(|x| x.trim().parse::<usize>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), None) => out.push(a),
            (Some(Ok(a)), Some(Ok(b))) if a <= b => out.extend(a..=b),
            _ => {}
        }
    }
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Random bytes from the kernel (per-worker RNG seeds, the shared cookie secret).
/// 32 bytes from the OS random source (they seed session keys: a failure is fatal).
fn random_seed() -> anyhow::Result<[u8; 32]> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b)
        .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
    Ok(b)
}

/// Checks `o` as `Engine::start` does before it touches the system (`xrudp attach
/// --check`).
pub fn validate(o: &Options) -> anyhow::Result<()> {
    if o.ports.is_empty() {
        bail!("no --port given: name the game's UDP port(s), e.g. --port 7777");
    }
    if let Some(p) = o.ports.iter().find(|&&p| p == 0) {
        bail!("--port {p} is not a usable port: choose 1..65535");
    }
    if !matches!(o.frame_size, 2048 | 4096) {
        bail!(
            "--frame-size {} is not supported: use 2048 or 4096",
            o.frame_size
        );
    }
    if !o.ring_size.is_power_of_two() || o.ring_size < 64 {
        bail!(
            "--ring-size {} must be a power of two of at least 64",
            o.ring_size
        );
    }
    if o.umem_frames < o.ring_size {
        bail!(
            "--umem-frames {} is too small for --ring-size {}: give at least {} frames, one \
             per ring entry (the workers keep some back from the fill ring for replies)",
            o.umem_frames,
            o.ring_size,
            o.ring_size
        );
    }
    Ok(())
}

/// With `--umem-hugepages`: each UMEM must be a whole number of huge pages, and enough
/// of them must be free, or the mmap would fail with a bare ENOMEM.
fn check_huge_pages(o: &Options, queues: usize) -> anyhow::Result<()> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let field = |name: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| {
                v.trim_start_matches(':')
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
    };
    let (Some(page_kib), Some(free)) = (field("Hugepagesize"), field("HugePages_Free")) else {
        bail!(
            "--umem-hugepages: this kernel reports no huge pages (no Hugepagesize in /proc/meminfo)"
        );
    };
    let page = page_kib * 1024;
    let umem = u64::from(o.umem_frames) * u64::from(o.frame_size);
    if umem % page != 0 {
        let per_page = page / u64::from(o.frame_size);
        bail!(
            "--umem-hugepages: a UMEM of {} frames × {} B is not a whole number of {} KiB huge \
             pages; use a multiple of {per_page} frames (e.g. --umem-frames {})",
            o.umem_frames,
            o.frame_size,
            page_kib,
            umem.div_ceil(page) * per_page
        );
    }
    let need = umem / page * queues as u64;
    if free < need {
        bail!(
            "--umem-hugepages: {queues} queue(s) need {need} free {page_kib} KiB huge pages, \
             {free} are free; reserve more with `sysctl vm.nr_hugepages=N` (N counts the \
             pages already in use too, see HugePages_Total in /proc/meminfo)"
        );
    }
    Ok(())
}

fn select_queues(iface: &Interface, wanted: Option<&[u32]>) -> anyhow::Result<Vec<u32>> {
    let all: Vec<u32> = (0..iface.rx_queues).collect();
    let Some(wanted) = wanted else { return Ok(all) };
    if wanted.is_empty() {
        bail!("--queues is empty: list queue ids, e.g. --queues 0,1");
    }
    for &q in wanted {
        if q >= iface.rx_queues {
            bail!(
                "queue {q} does not exist on {}: it has {} active receive queue(s), ids 0..{}",
                iface.name,
                iface.rx_queues,
                iface.rx_queues - 1
            );
        }
    }
    let mut v = wanted.to_vec();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// Cores for `n` workers: the `--cores` list (one per queue), or by default the
/// available cores except core 0 when there is more than one, round-robin.
fn assign_cores(
    list: Option<&[usize]>,
    n: usize,
    numa: Option<u32>,
) -> anyhow::Result<Vec<Option<usize>>> {
    let mut available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if let Some(list) = list {
        if list.len() != n {
            bail!(
                "--cores lists {} core(s) but {n} queue(s) are bound: give one core per queue",
                list.len()
            );
        }
        if let Some(c) = list.iter().find(|c| !available.contains(c)) {
            bail!("--cores: core {c} is not available to this process (available: {available:?})");
        }
        return Ok(list.iter().copied().map(Some).collect());
    }
    // Prefer the cores of the NIC's NUMA node, when the system has several nodes.
    if let Some(node) = numa.filter(|_| numa_nodes() > 1) {
        let local = node_cpus(node);
        let on_node: Vec<usize> = available
            .iter()
            .copied()
            .filter(|c| local.contains(c))
            .collect();
        if !on_node.is_empty() {
            available = on_node;
        }
    }
    let pool: Vec<usize> = if available.len() > 1 {
        available.iter().copied().filter(|&c| c != 0).collect()
    } else {
        available
    };
    if pool.is_empty() {
        return Ok(vec![None; n]);
    }
    Ok((0..n).map(|i| Some(pool[i % pool.len()])).collect())
}

fn bind_error(
    e: sys::xsk::XskError,
    iface: &Interface,
    mode: crate::loader::Mode,
    zc: ZeroCopy,
) -> anyhow::Error {
    let hint = match (e.raw_os_error(), zc) {
        (Some(libc::EOPNOTSUPP), ZeroCopy::On) => format!(
            "driver {} does not support AF_XDP zero-copy{}; retry with --zero-copy auto (or off)",
            iface.driver.as_deref().unwrap_or("?"),
            if mode == crate::loader::Mode::Skb { " in skb mode" } else { "" }
        ),
        (Some(libc::EBUSY), _) => "another AF_XDP socket is bound to this queue; stop the program that owns it".into(),
        (Some(libc::EPERM | libc::EACCES), _) => "run as root (or with CAP_NET_RAW and CAP_NET_ADMIN)".into(),
        (Some(libc::ENOMEM | libc::ENOBUFS), _) => {
            "the kernel could not pin the UMEM: lower --umem-frames, or check RLIMIT_MEMLOCK/CAP_IPC_LOCK".into()
        }
        _ => "check the interface state (`ip link show`) and the kernel log (dmesg)".into(),
    };
    anyhow::Error::new(e).context(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Engine::start` (and so `GameServer::start`) creates the UMEMs through
    /// [`on_core`] on multi-node hosts: the caller's affinity must come back as it was.
    #[test]
    fn the_caller_gets_its_affinity_back() {
        thread::spawn(|| {
            let before = sys::thread_affinity().expect("sched_getaffinity");
            let core = *before.last().expect("at least one CPU");
            let inside = on_core(Some(core), || sys::thread_affinity().expect("inside"));
            assert_eq!(inside, [core], "work runs on the UMEM core");
            assert_eq!(sys::thread_affinity().expect("after"), before);
            let failed: anyhow::Result<()> = on_core(Some(core), || bail!("bind failed"));
            assert!(failed.is_err());
            assert_eq!(sys::thread_affinity().expect("after an error"), before);
        })
        .join()
        .expect("test thread");
    }
}
