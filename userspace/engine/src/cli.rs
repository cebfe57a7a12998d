//! The `xrudp` command line.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};

use crate::{
    engine::AppKind,
    engine::{self, Backend},
    iface,
    loader::{self, ModeChoice, Program},
    runtime,
    stats::connections::SortKey,
    sys::{self, xsk::ZeroCopy},
};

/// xrudp — an AF_XDP kernel-bypass engine for reliable-UDP game servers.
///
/// `attach` binds the engine to a NIC and serves the game's UDP port(s) from AF_XDP
/// sockets, one per NIC queue; every other packet goes to the kernel untouched.
/// `stats` shows the live figures of running engines. Logs go to stderr; set RUST_LOG
/// (e.g. RUST_LOG=xrudp=debug) for more.
#[derive(Debug, Parser)]
#[command(name = "xrudp", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Attach to a NIC and serve the game's UDP port(s) until SIGINT/SIGTERM.
    ///
    /// Loads the XDP program, binds one AF_XDP socket per active receive queue and runs
    /// one pinned worker per queue. Needs root, or CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN,
    /// CAP_NET_RAW and CAP_IPC_LOCK, which it gives up once attached (docs/OPERATIONS.md,
    /// "Least privilege"). Exit status 0 after a clean shutdown.
    /// Example: xrudp attach --iface eth0 --port 7777
    Attach(AttachArgs),
    /// Remove a stale XDP attachment left on an interface (not one of a running engine).
    Detach(DetachArgs),
    /// Show live figures of running engines (all of them, or one with --iface).
    Stats(StatsArgs),
    /// Drain an engine for a rolling update: it admits no new client, tells every
    /// connected one to leave (and where to reconnect, with --redirect), and exits 0 once
    /// the last session has ended or at the deadline, closing what is left. Waits for it.
    /// Example: xrudp drain --iface eth0 --deadline 120 --redirect 203.0.113.8:7777
    Drain(DrainArgs),
    /// Load-test an echo server with N real connections; report msg/s, RTT percentiles,
    /// loss and retransmissions. Example:
    /// xrudp bench --server 198.18.0.1:7777 --clients 1000 --rate 20000 --duration 10
    Bench(xrudp_bench::BenchArgs),
    /// Send a spoofed flood at a server through AF_XDP, to test its defences. For your
    /// own servers only, inside network namespaces or a lab you own. Always bounded
    /// (--count and/or --duration); reports packets sent and the rate reached. Kinds:
    /// junk (random bytes), magic-junk (right magic and version, garbage after), data
    /// (random connection ids), hello (spoofed hellos), replay (a real session's packets
    /// from its own address, after it ended), one-source (hellos from one address).
    /// Example: ip netns exec CLI xrudp flood --iface veth1 --target 198.18.0.1:7777
    /// --kind data --duration 5
    Flood(xrudp_bench::flood::FloodArgs),
    /// Connect tokens for `--encryption token` servers: `xrudp token issue` writes one.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `xrudp token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a connect token (what a game backend does for an authenticated player) and
    /// write the public token the client passes to its connect call. Example:
    /// xrudp token issue --key-file token.key --client-id 42 --server 203.0.113.7:7777
    /// --expires-in 30 --out player42.token
    Issue(TokenIssueArgs),
}

/// `xrudp token issue` options.
#[derive(Debug, Args)]
pub struct TokenIssueArgs {
    /// The 32-byte key shared with the servers (their --token-key-file).
    #[arg(long = "key-file")]
    pub key_file: PathBuf,
    /// The player's id, handed to the game server on connect.
    #[arg(long = "client-id")]
    pub client_id: u64,
    /// A server the token admits to, as players reach it (repeat for up to 8; the
    /// server's --public-addr).
    #[arg(long = "server", required = true)]
    pub servers: Vec<std::net::SocketAddr>,
    /// Seconds until the token expires (keep it short: it only has to outlive the
    /// connect).
    #[arg(long = "expires-in", default_value_t = 30)]
    pub expires_in: u64,
    /// How long the client tries to connect, seconds.
    #[arg(long = "handshake-timeout", default_value_t = 10.0)]
    pub handshake_timeout: f64,
    /// Opaque data for the game server (at most 256 bytes), sealed from the client.
    #[arg(long = "user-data", default_value = "")]
    pub user_data: String,
    /// Where to write the public token (binary); `-` writes it to stdout as hex.
    #[arg(long, default_value = "-")]
    pub out: String,
}

/// `xrudp attach` options.
#[expect(
    clippy::struct_excessive_bools,
    reason = "each bool is a command-line flag"
)]
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Read settings from a TOML file first: one `key = value` per long flag of this
    /// command (`iface = "eth0"`, `port = [7777]`, `busy-poll = true`, ...); flags given
    /// on the command line override the file. Unknown keys and bad values are an error
    /// naming the key. Example: /etc/xrudp/eth0.toml (docs/OPERATIONS.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the settings (file and flags) as attach would, without attaching: exit
    /// status 0 and a line saying so when they are valid, else the error.
    #[arg(long)]
    pub check: bool,
    /// Network interface to attach to, e.g. eth0.
    #[arg(long, short = 'i')]
    pub iface: String,
    /// UDP destination port(s) to serve, comma-separated (e.g. 7777 or 7777,7778).
    #[arg(long, short = 'p', value_delimiter = ',', required = true, value_parser = clap::value_parser!(u16))]
    pub port: Vec<u16>,
    /// Receive queues to bind (comma-separated ids); default: every active queue.
    #[arg(long, value_delimiter = ',')]
    pub queues: Option<Vec<u32>>,
    /// XDP attach mode: auto tries native (driver) mode first and falls back to skb.
    #[arg(long, value_enum, default_value_t = defaults().mode)]
    pub mode: ModeChoice,
    /// AF_XDP zero-copy: auto uses it where the driver supports it; on fails otherwise.
    #[arg(long = "zero-copy", value_enum, default_value_t = ZeroCopyArg::from(defaults().zero_copy))]
    pub zero_copy: ZeroCopyArg,
    /// What the workers do with the traffic: `echo` and `relay` speak the RUDP protocol;
    /// `udp-echo` and `discard` are raw-UDP diagnostics (AF_XDP backend only).
    #[arg(long, value_enum, default_value_t = defaults().app)]
    pub app: AppKind,
    /// Data path: AF_XDP (`xdp`), kernel UDP sockets (`socket`), or AF_XDP with a
    /// fallback to sockets (`auto`, logged with the reason).
    #[arg(long, value_enum, default_value_t = defaults().backend)]
    pub backend: Backend,
    /// Socket backend: worker threads (one SO_REUSEPORT socket each); default one per
    /// active receive queue of the interface.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Connection slots per worker, preallocated; further clients are refused with
    /// "server full".
    #[arg(long = "max-connections", default_value_t = defaults().protocol.max_connections)]
    pub max_connections: usize,
    /// Close a connection after this many seconds without a packet from it.
    #[arg(long = "idle-timeout", default_value_t = defaults().protocol.idle_timeout.as_secs_f64())]
    pub idle_timeout: f64,
    /// Largest UDP payload sent (1200..=1472). With --pmtud on (the default) it is the
    /// ceiling: each connection starts at 1200 and probes up to it.
    #[arg(long, default_value_t = defaults().protocol.transport.mtu)]
    pub mtu: usize,
    /// Path MTU discovery (docs/PROTOCOL.md §5.5). `on`: each connection starts at
    /// 1200-byte datagrams, probes up to --mtu with padded probes that carry no data, and
    /// drops back to 1200 if larger datagrams stop getting through (a VPN or tunnel on
    /// the way). `off`: datagrams of up to --mtu from the first packet, which stall if
    /// the path carries less. Nothing changes with --mtu 1200.
    #[arg(long, value_enum, default_value_t = OnOff::from(defaults().protocol.transport.pmtud))]
    pub pmtud: OnOff,
    /// Congestion controller: aimd, newreno, cubic or bbr (docs/PROTOCOL.md says which is
    /// the default and why).
    #[arg(long)]
    pub congestion: Option<xrudp_proto::Algorithm>,
    /// Session encryption (docs/PROTOCOL.md §13). `open`: every session runs an X25519
    /// exchange and is sealed with AES-256-GCM; clients that pin the server's public key
    /// (logged at start; fixed with --server-key-file) also authenticate the server.
    /// `token`: clients present connect tokens from the game backend, which carry the
    /// keys (needs --token-key-file and --public-addr). `off`: clear text, for LANs and
    /// benchmarks only. Default: `token` with --token-key-file, else `open`.
    #[arg(long, value_enum)]
    pub encryption: Option<EncryptionArg>,
    /// Token mode: the 32-byte key shared with the game backend that issues connect
    /// tokens (a file holding exactly 32 bytes). Implies --encryption token.
    #[arg(long = "token-key-file")]
    pub token_key_file: Option<PathBuf>,
    /// Token mode: the address players connect to, as the backend lists it in tokens
    /// (tokens issued for other servers are refused), e.g. 203.0.113.7:7777.
    #[arg(long = "public-addr")]
    pub public_addr: Option<std::net::SocketAddr>,
    /// Open mode: the server's static X25519 private key (a file holding exactly 32
    /// bytes, e.g. `head -c 32 /dev/urandom > server.key`). Without it a fresh key is
    /// drawn at every start, so clients cannot pin it.
    #[arg(long = "server-key-file")]
    pub server_key_file: Option<PathBuf>,
    /// Open mode: refuse clients that do not pin the server's public key.
    #[arg(long = "require-pinned")]
    pub require_pinned: bool,
    /// First hellos answered per second; a flood beyond it (spoofed handshakes) is shed
    /// and counted, so established players keep the CPU. With --admission on the XDP
    /// program sheds them in the driver, per CPU (`drop_hello_budget`); otherwise each
    /// worker does (`hellos_shed`). 0: no limit.
    #[arg(long = "hello-rate", default_value_t = defaults().hello_rate)]
    pub hello_rate: u32,
    /// Admission control in the XDP program (AF_XDP backend, echo/relay or an embedding
    /// game): packets of connections that are not live, or from an address their
    /// session does not have, are dropped in the driver; handshakes and migration
    /// attempts are rate-limited per source (--source-rate, --source-burst) and first
    /// hellos by --hello-rate. `off` keeps only the RUDP pre-filter (docs/SECURITY.md).
    #[arg(long, value_enum, default_value_t = OnOff::from(defaults().admission))]
    pub admission: OnOff,
    /// Admission control: handshake packets and migration attempts each source (an IPv4
    /// address, or an IPv6 /64) may send per second, per CPU; beyond it they are
    /// dropped in the driver (`drop_rate_limited`). 0: no limit.
    #[arg(long = "source-rate", default_value_t = defaults().source_rate)]
    pub source_rate: u32,
    /// Admission control: how many such packets a source may send at once after a quiet
    /// spell (a migrating client's packets until its new address is validated).
    #[arg(long = "source-burst", default_value_t = defaults().source_burst)]
    pub source_burst: u32,
    /// Admission control: packets of live encrypted sessions arriving from an address the
    /// session does not have (a client whose NAT rebound, or an attacker guessing live
    /// connection ids from spoofed sources) let through per second, per CPU, whatever
    /// their source; beyond it they are dropped in the driver
    /// (`drop_migration_budget`). 0: no limit.
    #[arg(long = "migration-rate", default_value_t = defaults().migration_rate)]
    pub migration_rate: u32,
    /// UMEM frames per queue (caps packet-buffer memory: frames × frame size).
    /// Default 2048 × 2048 B = 4 MiB per queue.
    #[arg(long = "umem-frames", default_value_t = defaults().umem_frames)]
    pub umem_frames: u32,
    /// Back each UMEM with huge pages (fewer TLB misses on a busy queue). Reserve them
    /// first: `sysctl vm.nr_hugepages=N`, 2 pages of 2 MiB per queue for the default
    /// UMEM. Their memory shows as HugetlbPages in /proc/PID/status, not in the RSS.
    #[arg(long = "umem-hugepages")]
    pub umem_hugepages: bool,
    /// Bytes per UMEM frame: 2048 or 4096.
    #[arg(long = "frame-size", default_value_t = defaults().frame_size)]
    pub frame_size: u32,
    /// Entries per AF_XDP ring (fill, completion, RX, TX); a power of two, at most
    /// --umem-frames. The default matches the default UMEM, so the fill ring can hand the
    /// kernel every frame not kept back for replies: that is how long a stalled worker
    /// can fall behind before packets drop.
    #[arg(long = "ring-size", default_value_t = defaults().ring_size)]
    pub ring_size: u32,
    /// Cores to pin the workers to, one per bound queue, comma-separated.
    /// Default: spread over all cores except core 0 (when there is more than one).
    #[arg(long, value_delimiter = ',')]
    pub cores: Option<Vec<usize>>,
    /// How an idle worker waits for traffic. `sleep`: on need_wakeup (or poll(2) on the
    /// socket backend), near-zero CPU when idle. `spin`: busy-poll, the lowest latency,
    /// a core per worker at 100 %. `adaptive`: keep checking the rings for up to
    /// --spin-us after the last datagram while traffic is dense, then sleep — close to
    /// spin's latency under load, sleep's CPU when idle.
    #[arg(
        long,
        value_enum,
        default_value = "sleep",
        conflicts_with = "busy_poll"
    )]
    pub wait: engine::WaitStrategy,
    /// The same as --wait spin (kept for existing scripts).
    #[arg(long = "busy-poll")]
    pub busy_poll: bool,
    /// With --wait adaptive: the longest a worker keeps checking its rings after the
    /// last datagram before it sleeps, in microseconds (1–10000).
    #[arg(long = "spin-us", default_value_t = default_spin_us(),
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub spin_us: u64,
    /// Skip verifying incoming UDP checksums. Frames from a local veth peer with TX
    /// checksum offload on carry only the pseudo-header sum (the kernel never finishes
    /// it on veth), so they fail verification: either run
    /// `ethtool -K <peer-dev> tx off` on the sending end or pass this flag.
    #[arg(long = "no-udp-checksum-check")]
    pub no_udp_checksum_check: bool,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics (off by default; bind it to
    /// loopback, e.g. 127.0.0.1:9187, unless a firewall guards it).
    #[arg(long = "metrics-addr", value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Run as an Agones game server (the engine in a GameServer's pod): connect to the
    /// pod's SDK sidecar at start (localhost:$AGONES_SDK_GRPC_PORT; an error after 30 s if
    /// none answers), mark the GameServer Ready once serving, send a health ping each
    /// second only while every worker's loop turns, publish the open connections in the
    /// GameServer's Counter `connections`, and on Shutdown or SIGTERM drain as `xrudp
    /// drain` does, then call Shutdown and exit 0 (docs/DEPLOY.md).
    #[arg(long)]
    pub agones: bool,
    /// With --agones: seconds a drain (GameServer Shutdown, or SIGTERM) waits for the
    /// sessions to end before it closes the rest; keep it below the pod's
    /// terminationGracePeriodSeconds. Default 60.
    #[arg(long = "agones-drain-deadline", value_name = "SECS")]
    pub agones_drain_deadline: Option<u64>,
}

/// The engine's defaults, which the options' `default_value_t`s show.
fn defaults() -> engine::Options {
    engine::Options::default()
}

fn default_spin_us() -> u64 {
    u64::try_from(defaults().spin.as_micros()).unwrap_or(u64::MAX)
}

/// A switch on the command line (`--admission on|off`, `--pmtud on|off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

impl From<bool> for OnOff {
    fn from(on: bool) -> Self {
        if on { Self::On } else { Self::Off }
    }
}

/// `--encryption`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EncryptionArg {
    /// X25519 exchange per session, AES-256-GCM per packet.
    Open,
    /// Keys from connect tokens issued by the game backend.
    Token,
    /// No encryption or authentication (LANs and benchmarks).
    Off,
}

/// Zero-copy choice on the command line (`--zero-copy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ZeroCopyArg {
    /// Zero-copy where supported, copy mode otherwise.
    Auto,
    /// Zero-copy or fail.
    On,
    /// Copy mode.
    Off,
}

impl From<ZeroCopy> for ZeroCopyArg {
    fn from(z: ZeroCopy) -> Self {
        match z {
            ZeroCopy::Auto => Self::Auto,
            ZeroCopy::On => Self::On,
            ZeroCopy::Off => Self::Off,
        }
    }
}

impl From<ZeroCopyArg> for ZeroCopy {
    fn from(z: ZeroCopyArg) -> Self {
        match z {
            ZeroCopyArg::Auto => Self::Auto,
            ZeroCopyArg::On => Self::On,
            ZeroCopyArg::Off => Self::Off,
        }
    }
}

/// `xrudp detach` options.
#[derive(Debug, Args)]
pub struct DetachArgs {
    /// Interface to clear.
    #[arg(long, short = 'i')]
    pub iface: String,
}

/// `xrudp drain` options.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// The interface of the engine to drain (in this network namespace).
    #[arg(long, short = 'i')]
    pub iface: String,
    /// Seconds the engine waits for its clients to leave before it closes the rest
    /// (they get the protocol's server-shutdown notice) and exits.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub deadline: u64,
    /// Where clients should reconnect, e.g. the engine that replaces this one; sent to
    /// every client with the drain notice (the client library reports it).
    #[arg(long, value_name = "ADDR:PORT")]
    pub redirect: Option<std::net::SocketAddr>,
    /// Return once the engine has accepted the drain, without waiting for it to exit.
    #[arg(long)]
    pub no_wait: bool,
}

/// `xrudp stats` options.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only the engine on this interface.
    #[arg(long, short = 'i')]
    pub iface: Option<String>,
    /// Print JSON (schema in docs/stats.schema.json) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh every SECS seconds (redrawn in place on a terminal; with --json, one
    /// document per line) until interrupted. Without it, rates cover one second.
    #[arg(long, value_name = "SECS")]
    pub watch: Option<f64>,
    /// One row per connection instead: smoothed/min RTT, RTT variance, jitter, packets
    /// sent, loss and retransmitted shares since it connected, congestion window, bytes in
    /// flight and send-queue depth (as the workers published them, at most 100 ms ago).
    /// JSON schema in docs/connections.schema.json.
    #[arg(long)]
    pub connections: bool,
    /// With --connections: sort worst first by smoothed RTT, loss share or send-queue
    /// depth.
    #[arg(long, value_enum, default_value_t = SortKey::Rtt, requires = "connections")]
    pub sort: SortKey,
    /// With --connections: show the N worst connections per engine (0: all; default 20
    /// on the table, all with --json).
    #[arg(long, value_name = "N", requires = "connections")]
    pub top: Option<usize>,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Attach(a) => attach(a),
        Command::Detach(d) => detach(&d),
        Command::Stats(s) => stats(&s),
        Command::Drain(d) => drain(&d),
        Command::Bench(b) => xrudp_bench::run(&b, &BenchSteering),
        Command::Flood(f) => xrudp_bench::flood::run(&f),
        Command::Token(TokenCommand::Issue(t)) => issue_token(&t),
    }
}

fn drain(d: &DrainArgs) -> anyhow::Result<()> {
    let Some(pid) = runtime::live_engine(&d.iface).context("reading the runtime directory")? else {
        bail!(
            "no engine is attached to {} in this network namespace (`xrudp stats` lists them)",
            d.iface
        );
    };
    let path = runtime::Paths::new(&runtime::ns_dir()?, &d.iface).control;
    let deadline = Duration::from_secs(d.deadline);
    let answer = crate::control::drain(&path, d.redirect, deadline)
        .with_context(|| format!("asking the engine on {} (pid {pid}) to drain", d.iface))?;
    println!(
        "draining {} (pid {pid}): {} connection(s) open, deadline {} s{}",
        d.iface,
        answer.open,
        d.deadline,
        d.redirect
            .map_or_else(String::new, |a| format!(", clients sent to {a}"))
    );
    if d.no_wait {
        return Ok(());
    }
    // The engine exits within a second of its last session or its deadline; leave room
    // for closing notices and detaching.
    let give_up = std::time::Instant::now() + deadline + Duration::from_secs(15);
    while runtime::live_engine(&d.iface)?.is_some() {
        if std::time::Instant::now() > give_up {
            bail!(
                "the engine on {} (pid {pid}) is still running {} s after the drain's \
                 deadline; look at its log",
                d.iface,
                15
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("drained: the engine on {} has exited", d.iface);
    Ok(())
}

fn attach(a: AttachArgs) -> anyhow::Result<()> {
    let check = a.check;
    let protocol = protocol_config(&a)?;
    let options = engine::Options {
        iface: a.iface,
        ports: a.port,
        queues: a.queues,
        mode: a.mode,
        zero_copy: a.zero_copy.into(),
        app: a.app,
        umem_frames: a.umem_frames,
        umem_hugepages: a.umem_hugepages,
        frame_size: a.frame_size,
        ring_size: a.ring_size,
        cores: a.cores,
        wait: if a.busy_poll {
            engine::WaitStrategy::Spin
        } else {
            a.wait
        },
        spin: std::time::Duration::from_micros(a.spin_us),
        udp_checksum_check: !a.no_udp_checksum_check,
        backend: a.backend,
        workers: a.workers,
        protocol,
        hello_rate: a.hello_rate,
        admission: a.admission == OnOff::On,
        source_rate: a.source_rate,
        source_burst: a.source_burst,
        migration_rate: a.migration_rate,
        drop_capabilities: true,
    };
    if a.agones_drain_deadline.is_some() && !a.agones {
        bail!("--agones-drain-deadline is for --agones");
    }
    if check {
        engine::validate(&options)?;
        println!("the settings are valid; nothing was attached (xrudp attach --check)");
        return Ok(());
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Under Agones, SIGTERM (Kubernetes deleting the pod) drains; SIGINT still stops.
    let term = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let agones = a.agones.then(|| crate::agones::Config {
        drain_deadline: a
            .agones_drain_deadline
            .map_or(crate::agones::DRAIN_DEADLINE, Duration::from_secs),
        term: std::sync::Arc::clone(&term),
    });
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let flag = if sig == signal_hook::consts::SIGTERM && a.agones {
            &term
        } else {
            &stop
        };
        signal_hook::flag::register(sig, std::sync::Arc::clone(flag))
            .context("installing signal handlers")?;
    }
    engine::serve(&options, &stop, a.metrics_addr, agones.as_ref())
}

/// The command line with `xrudp attach --config FILE` expanded: the file's settings as
/// flags right after `attach`, but none that the command line sets itself (flags
/// override the file, lists included). Any other command line comes back as it is.
/// Errors name the file and the key.
pub fn expand_config(args: Vec<std::ffi::OsString>) -> anyhow::Result<Vec<std::ffi::OsString>> {
    if args.get(1).is_none_or(|a| a != "attach") {
        return Ok(args);
    }
    let mut path = None;
    let mut it = args[2..].iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            path = it.next().map(PathBuf::from);
        } else if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            path = Some(PathBuf::from(v));
        }
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    let settings = config_flags(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let given = given_flags(&args[2..]);
    let mut out = Vec::with_capacity(args.len() + 2 * settings.len());
    out.extend_from_slice(&args[..2]);
    for (key, flags) in settings {
        if !given.contains(&key) {
            out.extend(flags.into_iter().map(std::ffi::OsString::from));
        }
    }
    out.extend_from_slice(&args[2..]);
    Ok(out)
}

/// The long names of the attach flags `args` sets (`--name`, `--name=v`, or the short
/// form), up to a `--`.
fn given_flags(args: &[std::ffi::OsString]) -> Vec<String> {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    let Some(attach) = cmd.find_subcommand("attach") else {
        return Vec::new();
    };
    let mut given = Vec::new();
    for a in args.iter().filter_map(|a| a.to_str()) {
        if a == "--" {
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            given.push(long.split('=').next().unwrap_or(long).to_owned());
        } else if let Some(short) = a.strip_prefix('-').and_then(|s| s.chars().next()) {
            let long = attach
                .get_arguments()
                .find(|arg| arg.get_short() == Some(short))
                .and_then(clap::Arg::get_long);
            given.extend(long.map(str::to_owned));
        }
    }
    given
}

/// The flags a config file's text stands for, by key, each key checked on its own
/// against the attach command (so an error names the key, not a flag the user never
/// typed).
fn config_flags(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    use clap::CommandFactory as _;
    let table: toml::Table = toml::from_str(text).map_err(|e| format!("not valid TOML: {e}"))?;
    let cmd = Cli::command();
    let attach = cmd
        .find_subcommand("attach")
        .ok_or("the attach command is missing")?;
    let mut flags = Vec::new();
    for (key, value) in &table {
        let arg = attach
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()))
            .filter(|_| !matches!(key.as_str(), "config" | "check" | "help"))
            .ok_or_else(|| {
                let keys: Vec<_> = attach
                    .get_arguments()
                    .filter_map(clap::Arg::get_long)
                    .filter(|l| !matches!(*l, "config" | "check" | "help"))
                    .collect();
                format!(
                    "unknown key `{key}`: the keys are the long flags of `xrudp attach`: {}",
                    keys.join(", ")
                )
            })?;
        let switch = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        let these = match (value, switch) {
            (toml::Value::Boolean(true), true) => vec![format!("--{key}")],
            (toml::Value::Boolean(false), true) => Vec::new(),
            (_, true) => return Err(format!("key `{key}` is a switch: give true or false")),
            (v, false) => vec![format!("--{key}"), scalar(key, v)?],
        };
        // Check the key alone (with stand-ins for the required flags it does not set).
        let mut probe = vec!["xrudp", "attach"];
        if key != "iface" {
            probe.extend(["--iface", "-"]);
        }
        if key != "port" {
            probe.extend(["--port", "1"]);
        }
        probe.extend(these.iter().map(String::as_str));
        if let Err(e) = Cli::try_parse_from(&probe) {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or_default();
            return Err(format!(
                "key `{key}`: {}",
                first.strip_prefix("error: ").unwrap_or(first)
            ));
        }
        flags.push((key.clone(), these));
    }
    Ok(flags)
}

/// A config value as the flag's text: numbers and strings as they are, arrays joined
/// with commas (the list flags take comma-separated values).
fn scalar(key: &str, v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    Err(format!("key `{key}`: a list holds plain values"))
                }
                other => scalar(key, other),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join(",")),
        toml::Value::Table(_) | toml::Value::Datetime(_) => Err(format!(
            "key `{key}`: give a string, a number, true/false or a list"
        )),
    }
}

fn protocol_config(a: &AttachArgs) -> anyhow::Result<xrudp_proto::ServerConfig> {
    let mut cfg = xrudp_proto::ServerConfig {
        max_connections: a.max_connections,
        ..Default::default()
    };
    if !(a.idle_timeout.is_finite() && a.idle_timeout > 0.0 && a.idle_timeout <= 3600.0) {
        bail!(
            "--idle-timeout {} is out of range: give seconds in (0, 3600]",
            a.idle_timeout
        );
    }
    cfg.idle_timeout = Duration::from_secs_f64(a.idle_timeout);
    cfg.keepalive = cfg.keepalive.min(cfg.idle_timeout / 3);
    cfg.transport.mtu = a.mtu;
    cfg.transport.pmtud = a.pmtud == OnOff::On;
    if let Some(c) = a.congestion {
        cfg.transport.congestion = c;
    }
    cfg.encryption = encryption(a)?;
    cfg.public_addr = a.public_addr;
    if matches!(cfg.encryption, xrudp_proto::session::Encryption::Token(_))
        && a.public_addr.is_none()
    {
        bail!(
            "--encryption token needs --public-addr IP:PORT: the address players connect to, as \
             the backend lists it in connect tokens"
        );
    }
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("invalid protocol settings: {e}"))?;
    Ok(cfg)
}

fn issue_token(t: &TokenIssueArgs) -> anyhow::Result<()> {
    let key = xrudp_proto::TokenKey(key_file("--key-file", &t.key_file)?);
    if !(t.handshake_timeout.is_finite() && t.handshake_timeout > 0.0) {
        bail!(
            "--handshake-timeout {} must be a positive number of seconds",
            t.handshake_timeout
        );
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)
        .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
    let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed);
    let params = xrudp_proto::token::TokenParams {
        client_id: t.client_id,
        expires: now.saturating_add(t.expires_in),
        handshake_timeout: Duration::from_secs_f64(t.handshake_timeout),
        addresses: t.servers.clone(),
        user_data: t.user_data.as_bytes().to_vec(),
    };
    let token = xrudp_proto::token::issue(&key, &params, &mut rng)
        .map_err(|e| anyhow::anyhow!("cannot issue the token: {e}"))?;
    let bytes = token.encode();
    if t.out == "-" {
        let hex = bytes.iter().fold(String::new(), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        });
        println!("{hex}");
    } else {
        std::fs::write(&t.out, &bytes).with_context(|| format!("writing --out {}", t.out))?;
    }
    Ok(())
}

/// Reads a file that must hold exactly 32 bytes (a key), naming `flag` in errors.
fn key_file(flag: &str, path: &std::path::Path) -> anyhow::Result<[u8; 32]> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {flag} {}", path.display()))?;
    bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "{flag} {} holds {} bytes; it must hold exactly 32 (e.g. `head -c 32 /dev/urandom > FILE`)",
            path.display(),
            bytes.len()
        )
    })
}

/// The session protection the flags ask for (`--encryption`, the key files).
fn encryption(a: &AttachArgs) -> anyhow::Result<xrudp_proto::session::Encryption> {
    use xrudp_proto::session::Encryption;
    let mode = match (a.encryption, &a.token_key_file) {
        (None | Some(EncryptionArg::Token), Some(_)) => EncryptionArg::Token,
        (Some(EncryptionArg::Token), None) => {
            bail!("--encryption token needs --token-key-file (the key shared with the backend)")
        }
        (Some(m), Some(_)) => bail!(
            "--token-key-file is for --encryption token, not {}",
            format!("{m:?}").to_lowercase()
        ),
        (m, None) => m.unwrap_or(EncryptionArg::Open),
    };
    if mode != EncryptionArg::Open && (a.server_key_file.is_some() || a.require_pinned) {
        bail!("--server-key-file and --require-pinned are for --encryption open");
    }
    Ok(match mode {
        EncryptionArg::Off => {
            tracing::warn!(
                "--encryption off: sessions are neither encrypted nor authenticated; anyone \
                 on the path can read, forge or hijack them. Use it only on a LAN or for \
                 benchmarks"
            );
            Encryption::Off
        }
        EncryptionArg::Token => {
            // INVARIANT: the match above requires the file in token mode.
            let path = a
                .token_key_file
                .as_deref()
                .expect("token mode has a key file");
            Encryption::Token(xrudp_proto::TokenKey(key_file("--token-key-file", path)?))
        }
        EncryptionArg::Open => {
            let key = if let Some(path) = &a.server_key_file {
                key_file("--server-key-file", path)?
            } else {
                // One key for every worker, so a client pins one key whatever queue its
                // flow lands on.
                let mut k = [0; 32];
                getrandom::fill(&mut k)
                    .map_err(|e| anyhow::anyhow!("the OS random number generator failed: {e}"))?;
                k
            };
            let public = xrudp_proto::session::public_key(&key);
            let hex = public.iter().fold(String::new(), |mut s, b| {
                use std::fmt::Write as _;
                let _ = write!(s, "{b:02x}");
                s
            });
            tracing::info!(
                public_key = %hex,
                pinned_by_restart = a.server_key_file.is_some(),
                "encryption open: clients pin this server public key"
            );
            Encryption::Open {
                static_key: Some(key),
                allow_anonymous: !a.require_pinned,
            }
        }
    })
}

fn detach(d: &DetachArgs) -> anyhow::Result<()> {
    let iface = iface::Interface::lookup(&d.iface)?;
    if let Some(pid) = runtime::live_engine(&iface.name).context("reading the runtime directory")? {
        bail!(
            "{} is served by a running xrudp engine (pid {pid}); stop it with `kill -TERM {pid}` \
             — it detaches by itself",
            iface.name
        );
    }
    let q = sys::bpf::xdp_query(iface.index).context("querying the interface's XDP attachment")?;
    if q.prog_id == 0 {
        println!("{}: no XDP program attached; nothing to do", iface.name);
        return Ok(());
    }
    let n = sys::bpf::xdp_force_detach(iface.index).context("detaching the XDP program")?;
    let after = sys::bpf::xdp_query(iface.index)?;
    if after.prog_id != 0 {
        bail!(
            "{}: XDP program {} is still attached after detach; check `ip link show {}`",
            iface.name,
            after.prog_id,
            iface.name
        );
    }
    println!(
        "{}: removed {n} XDP attachment(s) (program id {})",
        iface.name, q.prog_id
    );
    Ok(())
}

fn stats(s: &StatsArgs) -> anyhow::Result<()> {
    if s.connections {
        return crate::stats::connections::run(s.iface.as_deref(), s.json, s.sort, s.top, s.watch);
    }
    crate::stats::run(s.iface.as_deref(), s.json, s.watch)
}

/// `xrudp bench --backend xdp` steers its ports into its AF_XDP sockets with the
/// engine's own XDP program, attached to the client end of the link.
#[derive(Debug)]
struct BenchSteering;

impl xrudp_bench::Steering for BenchSteering {
    fn rx_queues(&self, iface: &str) -> anyhow::Result<u32> {
        Ok(iface::Interface::lookup(iface)?.rx_queues)
    }

    fn steer(&self, iface: &str, ports: &[u16]) -> anyhow::Result<Box<dyn xrudp_bench::Steered>> {
        let mut program = Program::load().context(
            "loading the XDP program (needs a kernel with XDP and BPF; see docs/OPERATIONS.md)",
        )?;
        program
            .configure(ports, false)
            .context("writing the steered ports to the XDP program's maps")?;
        let mode = program.attach(iface, ModeChoice::Auto).with_context(|| {
            format!("attaching the XDP program to {iface} (is another XDP program attached there?)")
        })?;
        let mode = match mode {
            loader::Mode::Native => sys::xsk::ProgramMode::Native,
            loader::Mode::Skb => sys::xsk::ProgramMode::Skb,
        };
        Ok(Box::new(BenchProgram { program, mode }))
    }
}

/// The bench's attached XDP program; dropping it detaches the program.
#[derive(Debug)]
struct BenchProgram {
    program: Program,
    mode: sys::xsk::ProgramMode,
}

impl xrudp_bench::Steered for BenchProgram {
    fn mode(&self) -> sys::xsk::ProgramMode {
        self.mode
    }

    fn register_socket(&mut self, queue: u32, fd: std::os::fd::RawFd) -> anyhow::Result<()> {
        self.program
            .register_socket(queue, fd)
            .context("putting the AF_XDP socket in the XDP program's map")
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn attach_defaults_are_the_engines() {
        let cli =
            Cli::try_parse_from(["xrudp", "attach", "-i", "eth0", "-p", "7777"]).expect("parses");
        let Command::Attach(a) = cli.command else {
            panic!("not attach");
        };
        let d = defaults();
        assert_eq!(a.mode, d.mode);
        assert_eq!(a.app, d.app);
        assert_eq!(a.backend, d.backend);
        assert_eq!(ZeroCopy::from(a.zero_copy), d.zero_copy);
        assert_eq!(
            (a.umem_frames, a.frame_size, a.ring_size, a.hello_rate),
            (d.umem_frames, d.frame_size, d.ring_size, d.hello_rate)
        );
        let p = protocol_config(&a).expect("valid");
        assert_eq!(p.max_connections, d.protocol.max_connections);
        assert_eq!(p.idle_timeout, d.protocol.idle_timeout);
        assert_eq!(p.transport.mtu, d.protocol.transport.mtu);
        assert_eq!(p.transport.pmtud, d.protocol.transport.pmtud);
        assert_eq!(!a.no_udp_checksum_check, d.udp_checksum_check);
    }

    fn os(args: &[&str]) -> Vec<std::ffi::OsString> {
        args.iter().map(std::ffi::OsString::from).collect()
    }

    /// Parses `xrudp attach <flags>` after expanding a config file holding `config`.
    fn attach_with(config: &str, flags: &[&str]) -> anyhow::Result<AttachArgs> {
        let path = std::env::temp_dir().join(format!(
            "xrudp-config-test-{}-{:x}.toml",
            std::process::id(),
            config.len() * 31 + flags.len()
        ));
        std::fs::write(&path, config).expect("writing the test config");
        let mut args = vec!["xrudp", "attach", "--config", path.to_str().expect("UTF-8")];
        args.extend_from_slice(flags);
        let expanded = expand_config(os(&args));
        let _ = std::fs::remove_file(&path);
        let cli = Cli::try_parse_from(expanded?)?;
        let Command::Attach(a) = cli.command else {
            panic!("not attach");
        };
        Ok(a)
    }

    #[test]
    fn admission_settings_come_from_flags_or_the_config_file() {
        let a = attach_with("iface = \"eth9\"\nport = [7777]\n", &[]).expect("valid");
        let d = defaults();
        assert_eq!(a.admission, OnOff::On, "on by default");
        assert_eq!(
            (a.source_rate, a.source_burst, a.migration_rate),
            (d.source_rate, d.source_burst, d.migration_rate)
        );
        let config = "iface = \"eth9\"\nport = [7777]\nadmission = \"off\"\n\
                      source-rate = 7\nsource-burst = 9\nmigration-rate = 11\n";
        let a = attach_with(config, &[]).expect("valid");
        assert_eq!(
            (a.admission, a.source_rate, a.source_burst, a.migration_rate),
            (OnOff::Off, 7, 9, 11)
        );
        let a = attach_with(config, &["--admission", "on"]).expect("valid");
        assert_eq!(a.admission, OnOff::On, "the flag wins");
        let e = attach_with(
            "iface = \"eth9\"\nport = [7777]\nadmission = \"maybe\"\n",
            &[],
        )
        .expect_err("refused");
        assert!(e.to_string().contains("admission"), "{e}");
    }

    #[test]
    fn pmtud_is_on_by_default_and_the_config_key_turns_it_off() {
        let base = "iface = \"eth9\"\nport = [7777]\nmtu = 1472\n";
        let a = attach_with(base, &[]).expect("valid");
        let p = protocol_config(&a).expect("valid");
        assert!(p.transport.pmtud);
        assert_eq!(p.transport.mtu, 1472);
        let a = attach_with(&format!("{base}pmtud = \"off\"\n"), &[]).expect("valid");
        assert!(!protocol_config(&a).expect("valid").transport.pmtud);
        // The flag overrides the file.
        let a =
            attach_with(&format!("{base}pmtud = \"off\"\n"), &["--pmtud", "on"]).expect("valid");
        assert!(protocol_config(&a).expect("valid").transport.pmtud);
        let err = attach_with(&format!("{base}pmtud = \"maybe\"\n"), &[])
            .expect_err("refused")
            .to_string();
        assert!(err.contains("pmtud"), "{err}");
    }

    #[test]
    fn a_config_file_sets_what_the_flags_set_and_flags_override_it() {
        let config = "iface = \"eth9\"\nport = [7777, 7778]\nbusy-poll = true\n\
                      ring-size = 1024\nidle-timeout = 30.5\ncores = [2, 3]\n\
                      umem-hugepages = false\nbackend = \"socket\"\n\
                      agones = true\nagones-drain-deadline = 25\n";
        let a = attach_with(config, &[]).expect("valid");
        assert_eq!(
            (a.iface.as_str(), a.port.as_slice()),
            ("eth9", &[7777, 7778][..])
        );
        assert!(a.busy_poll && !a.umem_hugepages);
        assert_eq!((a.ring_size, a.idle_timeout), (1024, 30.5));
        assert_eq!(a.cores, Some(vec![2, 3]));
        assert_eq!(a.backend, Backend::Socket);
        assert_eq!((a.agones, a.agones_drain_deadline), (true, Some(25)));
        // Flags after the file win, lists included.
        let a = attach_with(
            config,
            &["--port", "9000", "--ring-size", "512", "-i", "eth1"],
        )
        .expect("valid");
        assert_eq!((a.iface.as_str(), a.port.as_slice()), ("eth1", &[9000][..]));
        assert_eq!(a.ring_size, 512);
        // What the file leaves out keeps its default.
        assert_eq!(a.umem_frames, defaults().umem_frames);
    }

    #[test]
    fn config_file_errors_name_the_key() {
        let err = |config: &str| {
            format!(
                "{:#}",
                attach_with(config, &["-i", "eth0", "-p", "7777"]).expect_err("refused")
            )
        };
        let e = err("rign-size = 1024\n");
        assert!(
            e.contains("unknown key `rign-size`") && e.contains("ring-size"),
            "{e}"
        );
        let e = err("ring-size = \"big\"\n");
        assert!(e.contains("key `ring-size`") && e.contains("big"), "{e}");
        let e = err("busy-poll = 1\n");
        assert!(e.contains("key `busy-poll` is a switch"), "{e}");
        let e = err("backend = \"carrier-pigeon\"\n");
        assert!(e.contains("key `backend`"), "{e}");
        let e = err("cores = [[1]]\n");
        assert!(e.contains("key `cores`"), "{e}");
        let e = err("check = true\n");
        assert!(e.contains("unknown key `check`"), "{e}");
        let e = err("iface = \"eth0\n");
        assert!(e.contains("not valid TOML"), "{e}");
        // A file that is not there is named.
        let e = format!(
            "{:#}",
            expand_config(os(&["xrudp", "attach", "--config=/nonexistent/x.toml"]))
                .expect_err("refused")
        );
        assert!(e.contains("/nonexistent/x.toml"), "{e}");
        // Other commands, and attach without --config, pass through untouched.
        for args in [
            &["xrudp", "stats", "--config", "x"][..],
            &["xrudp", "attach", "-i", "eth0"],
        ] {
            assert_eq!(expand_config(os(args)).expect("untouched"), os(args));
        }
    }

    #[test]
    fn token_issue_writes_a_token_the_servers_key_opens() {
        let dir = std::env::temp_dir().join(format!("xrudp-token-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = dir.join("token.key");
        std::fs::write(&key, [9u8; 32]).expect("key file");
        let out = dir.join("player.token");
        let cli = Cli::try_parse_from([
            "xrudp",
            "token",
            "issue",
            "--key-file",
            key.to_str().expect("utf-8"),
            "--client-id",
            "42",
            "--server",
            "203.0.113.7:7777",
            "--user-data",
            "elo=1500",
            "--out",
            out.to_str().expect("utf-8"),
        ])
        .expect("parses");
        let Command::Token(TokenCommand::Issue(t)) = cli.command else {
            panic!("not token issue");
        };
        issue_token(&t).expect("issued");
        let bytes = std::fs::read(&out).expect("token written");
        let token = xrudp_proto::token::PublicToken::decode(&bytes).expect("decodes");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        assert!(
            token.expires > now && token.expires <= now + 31,
            "expires in 30 s"
        );
        let server = "203.0.113.7:7777".parse().expect("addr");
        let mut scratch = [0u8; xrudp_proto::token::MAX_PRIVATE_LEN];
        let opened = xrudp_proto::token::open(
            &xrudp_proto::TokenKey([9; 32]),
            token.private_bytes(),
            now,
            server,
            &mut scratch,
        )
        .expect("the servers' key opens it");
        assert_eq!((opened.client_id, opened.user_data), (42, &b"elo=1500"[..]));
        assert_eq!(opened.c2s_key, token.c2s_key);
        let short = dir.join("short.key");
        std::fs::write(&short, [1u8; 31]).expect("key file");
        let err = key_file("--key-file", &short).expect_err("31 bytes refused");
        assert!(err.to_string().contains("exactly 32"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
