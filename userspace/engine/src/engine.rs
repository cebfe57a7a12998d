//! `xrudp attach`: load and attach the XDP program, bind one AF_XDP socket per active
//! queue, run pinned workers, serve figures on the control socket, and tear everything
//! down on SIGINT/SIGTERM.

use std::{
    os::fd::OwnedFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI32, Ordering::Relaxed},
    },
    thread,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    control,
    iface::Interface,
    loader::{ModeChoice, Program},
    runtime::Claim,
    sys::{
        self,
        xsk::{Xsk, XskConfig, ZeroCopy},
    },
    worker::{self, App, Queue},
};

/// Everything `xrudp attach` needs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Interface name.
    pub iface: String,
    /// UDP destination ports to steer.
    pub ports: Vec<u16>,
    /// Queues to bind (default: every active queue).
    pub queues: Option<Vec<u32>>,
    /// XDP attach mode.
    pub mode: ModeChoice,
    /// Zero-copy preference.
    pub zero_copy: ZeroCopy,
    /// The application the workers run.
    pub app: App,
    /// UMEM frames per queue.
    pub umem_frames: u32,
    /// Bytes per UMEM frame.
    pub frame_size: u32,
    /// Ring entries.
    pub ring_size: u32,
    /// Cores to pin workers to, in queue order (default: spread, avoiding core 0).
    pub cores: Option<Vec<usize>>,
    /// Busy-poll instead of sleeping on need_wakeup.
    pub busy_poll: bool,
}

/// What the running engine is, for figures and logs.
#[derive(Debug)]
pub struct Running {
    /// Interface.
    pub iface: Interface,
    /// The XDP program (maps read for counters).
    pub program: Mutex<Program>,
    /// Per-queue state.
    pub queues: Vec<Arc<Queue>>,
    /// Options it was started with.
    pub options: Options,
    /// Start time.
    pub started: Instant,
    /// Wall-clock start, seconds since the Unix epoch.
    pub started_unix: u64,
}

/// Runs the engine until `stop` is set (by SIGINT/SIGTERM in the binary).
pub fn run(options: &Options, stop: &Arc<AtomicBool>) -> anyhow::Result<()> {
    validate(options)?;
    let iface = Interface::lookup(&options.iface)?;
    let queues = select_queues(&iface, options.queues.as_deref())?;
    let cores = assign_cores(options.cores.as_deref(), queues.len())?;
    let claim = Claim::acquire(&iface.name)?;

    let mut program = Program::load()?;
    program.configure(&options.ports, options.app.rudp_filter())?;

    // Bind the sockets before attaching, so the first steered frame finds its socket.
    let xsk_cfg = XskConfig {
        frames: options.umem_frames,
        frame_size: options.frame_size,
        ring_size: options.ring_size,
        zero_copy: options.zero_copy,
        need_wakeup: !options.busy_poll,
    };
    // Native XDP first decides which zero-copy attempts make sense: SKB mode is copy only.
    let mode = program.attach(&iface.name, options.mode)?;
    let mut sockets = Vec::with_capacity(queues.len());
    for &q in &queues {
        let cfg = XskConfig {
            zero_copy: if mode == crate::loader::Mode::Skb && options.zero_copy == ZeroCopy::Auto {
                ZeroCopy::Off
            } else {
                xsk_cfg.zero_copy
            },
            ..xsk_cfg
        };
        let xsk = Xsk::open(&iface.name, q, &cfg)
            .map_err(|e| bind_error(e, &iface, mode, options.zero_copy))?;
        program.register_socket(q, xsk.fd())?;
        sockets.push((q, xsk));
    }
    let zc = sockets.iter().all(|(_, x)| x.zero_copy());
    tracing::info!(
        iface = %iface.name,
        driver = iface.driver.as_deref().unwrap_or("unknown"),
        xdp_mode = %mode,
        zero_copy = zc,
        queues = ?queues,
        cores = ?cores,
        numa_node = ?iface.numa_node,
        wakeup = if options.busy_poll { "busy-poll" } else { "need_wakeup" },
        ports = ?options.ports,
        "attached"
    );

    let mut shared = Vec::with_capacity(sockets.len());
    for ((q, xsk), core) in sockets.iter().zip(&cores) {
        let dup: OwnedFd = xsk
            .try_clone_fd()
            .context("duplicating the AF_XDP socket descriptor")?;
        shared.push(Arc::new(Queue {
            queue: *q,
            core: *core,
            zero_copy: xsk.zero_copy(),
            umem_frames: xsk.frames(),
            tid: AtomicI32::new(0),
            socket: dup,
            counters: crossbeam_utils::CachePadded::default(),
        }));
    }
    let running = Arc::new(Running {
        iface: iface.clone(),
        program: Mutex::new(program),
        queues: shared.clone(),
        options: options.clone(),
        started: Instant::now(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    let control = control::Server::start(&claim.paths().control, Arc::clone(&running))?;

    let settings = worker::Settings {
        app: options.app,
        busy_poll: options.busy_poll,
    };
    let mut handles = Vec::new();
    for ((_, xsk), q) in sockets.into_iter().zip(shared) {
        let stop = Arc::clone(stop);
        let name = format!("xrudp-q{}", q.queue);
        let h = thread::Builder::new()
            .name(name)
            .spawn(move || {
                if let Some(core) = q.core
                    && !core_affinity::set_for_current(core_affinity::CoreId { id: core })
                {
                    tracing::warn!(
                        queue = q.queue,
                        core,
                        "could not pin the worker to its core"
                    );
                }
                let span = tracing::info_span!("worker", queue = q.queue);
                let _g = span.enter();
                worker::run(xsk, &q, settings, &stop);
            })
            .context("spawning a worker thread")?;
        handles.push(h);
    }

    while !stop.load(Relaxed) {
        thread::park_timeout(std::time::Duration::from_millis(200));
    }
    tracing::info!("shutting down");
    for h in handles {
        if h.join().is_err() {
            tracing::error!("a worker thread panicked");
        }
    }
    control.stop();
    // Dropping `running` (the last Arc once the control thread is gone) detaches the
    // program: aya owns the bpf_link. The claim goes last, removing the runtime files.
    drop(running);
    drop(claim);
    Ok(())
}

fn validate(o: &Options) -> anyhow::Result<()> {
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
    if o.umem_frames < 2 * o.ring_size {
        bail!(
            "--umem-frames {} is too small for --ring-size {}: give at least {} so the fill \
             ring and the TX path both have frames",
            o.umem_frames,
            o.ring_size,
            2 * o.ring_size
        );
    }
    if sys::geteuid() != 0 {
        tracing::warn!(
            "not running as root: attaching needs CAP_BPF, CAP_NET_ADMIN and CAP_NET_RAW"
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
fn assign_cores(list: Option<&[usize]>, n: usize) -> anyhow::Result<Vec<Option<usize>>> {
    let available: Vec<usize> = core_affinity::get_core_ids()
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

impl App {
    /// Whether the XDP program's RUDP pre-filter suits this application.
    #[must_use]
    pub fn rudp_filter(self) -> bool {
        match self {
            Self::Discard => false,
        }
    }
}
