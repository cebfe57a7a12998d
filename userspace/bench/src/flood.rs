//! `xrudp flood`: spoofed floods through AF_XDP, to test a server's defences (its XDP
//! pre-filter, session allow-list and rate limits) at rates a raw socket cannot reach.
//!
//! For testing your own servers only, inside network namespaces or a lab you own: every
//! kind but `replay` forges source addresses.
//!
//! One thread per `--cores`, each with its own AF_XDP socket (copy mode unless the driver
//! does zero-copy) bound to queue `i` of the interface toward the target; no XDP program
//! is needed on that side, since nothing is received. Frames are written in the UMEM in
//! place — Ethernet, IPv4 (header checksum computed), UDP (checksum 0, "none" on IPv4 per
//! RFC 768) and the kind's payload — and put on the TX ring in batches: no allocation and
//! one `sendto` kick per 32 frames (copy mode's budget per kick, net/xdp/xsk.c). Every
//! run is bounded by `--count` and/or `--duration`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use xrudp_packet::ethernet::Address;
use xrudp_proto::{Client, ClientConfig, ClientEvent, ClientState};
use xrudp_xdp::xsk::{Frame, ProgramMode, Xsk, XskConfig, ZeroCopy};

use crate::xdp_io;

/// What a flood sends to the target port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Random bytes (1–64 of them) from random spoofed sources: the XDP pre-filter's
    /// work (wrong magic, too short).
    Junk,
    /// The right RUDP magic and version, a defined non-handshake packet type, then
    /// random bytes (12–64 in all), from random spoofed sources: passes the pre-filter,
    /// so only the session allow-list stops it.
    MagicJunk,
    /// Well-formed `Data` packets (valid CRC32C) with random connection ids from random
    /// spoofed sources: what a guesser of live sessions sends.
    Data,
    /// Real padded `Hello`s (1,200 bytes) from random spoofed sources: the handshake
    /// budget (`--hello-rate`) decides.
    Hello,
    /// Replayed packets of a real session: first a real client connects from this
    /// namespace over a kernel UDP socket, exchanges a few reliable messages and
    /// disconnects; then every packet it sent after the handshake is resent, round and
    /// round, from its own address and port.
    Replay,
    /// Real padded `Hello`s all from one spoofed source (the first address of
    /// `--sources`, port 40000): the per-source budget (`--source-rate`) decides.
    OneSource,
}

/// `xrudp flood` arguments.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("bound").required(true).multiple(true).args(["duration", "count"]))]
pub struct FloodArgs {
    /// What to send: one of the kinds below.
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// The server under test, IPv4 address and port; it must be on the same link as
    /// --iface (its MAC comes from the neighbour table).
    #[arg(long, value_name = "ADDR:PORT")]
    pub target: SocketAddrV4,
    /// The interface toward the target in this network namespace (the client end of the
    /// link); the flood leaves through its queues 0..--cores.
    #[arg(long, value_name = "IF")]
    pub iface: String,
    /// Packets per second in total; 0 sends as fast as the machine can.
    #[arg(long, default_value_t = 0, value_name = "PPS")]
    pub rate: u64,
    /// Stop after this many seconds (at most 3600). With --count, whichever comes first.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Stop after this many packets in total. With --duration, whichever comes first.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Sending threads, each pinned to one core and bound to its own queue of --iface
    /// (thread i on queue i): the interface needs that many active queues.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub cores: usize,
    /// The IPv4 network spoofed sources are drawn from (random address and port).
    #[arg(long, default_value = "198.19.0.0/16", value_name = "CIDR")]
    pub sources: Net,
    /// `data`: draw connection ids from LO..=HI instead of all 2^32. The engine's ids are
    /// a slot index under a generation count, so the first connections of a server with
    /// --max-connections 1024 have ids 1024..=2047: a guesser who knows that hits live
    /// ones.
    #[arg(long, value_name = "LO..=HI", value_parser = parse_ids)]
    pub ids: Option<(u32, u32)>,
    /// Seed of the random generator: the same seed sends the same packets.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// An IPv4 network, `A.B.C.D/LEN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    base: u32,
    /// Host bits (32 - prefix length).
    host_bits: u32,
}

impl FromStr for Net {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected A.B.C.D/LEN"))?;
        let a: Ipv4Addr = a.parse().map_err(|e| format!("{a:?}: {e}"))?;
        let len: u32 = len.parse().map_err(|e| format!("{len:?}: {e}"))?;
        if !(8..=32).contains(&len) {
            return Err(format!("prefix length {len}: use 8 to 32"));
        }
        let host_bits = 32 - len;
        let mask = if host_bits == 32 {
            0
        } else {
            u32::MAX << host_bits
        };
        Ok(Self {
            base: u32::from(a) & mask,
            host_bits,
        })
    }
}

impl Net {
    /// A random address of the network (its first one if it is a /32).
    fn pick(self, r: u64) -> u32 {
        let span = 1u64 << self.host_bits;
        // `span - 1` fits in 32 bits, so the sum is an address of the network.
        self.base | u32::try_from(r % span).unwrap_or(0)
    }

    /// The network's first host address.
    fn first(self) -> u32 {
        if self.host_bits == 0 {
            self.base
        } else {
            self.base | 1
        }
    }
}

/// What a flood did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Report {
    /// The kind sent.
    pub kind: Kind,
    /// Frames the kernel took off the TX rings (completed).
    pub sent: u64,
    /// Seconds from the first frame to the last completion.
    pub seconds: f64,
    /// `sent / seconds`.
    pub rate: f64,
    /// Sending threads.
    pub cores: usize,
    /// Whether the sockets were bound in zero-copy mode.
    pub zero_copy: bool,
    /// Datagrams captured for `replay` (0 for other kinds).
    pub captured: usize,
}

/// Frames built and put on the TX ring per pass.
const BATCH: usize = 64;
/// Copy-mode transmit sends at most this many frames per kick (net/xdp/xsk.c).
const KICK_FRAMES: usize = 32;
/// The longest flood: an operator's typo must not run for a day.
const MAX_DURATION: f64 = 3600.0;
/// UMEM and rings of each sending socket. RX is unused.
const XSK: XskConfig = XskConfig {
    frames: 4096,
    frame_size: 2048,
    ring_size: 2048,
    zero_copy: ZeroCopy::Auto,
    need_wakeup: true,
    huge_pages: false,
};
/// The packet types of `magic-junk`: every defined type but the two that open a
/// handshake (`Hello`, `Response`), so that the session allow-list is what must stop it.
const MAGIC_JUNK_TYPES: [u8; 6] = {
    use xrudp_common::rudp::PacketType as T;
    [
        T::Challenge as u8,
        T::Welcome as u8,
        T::Reject as u8,
        T::Data as u8,
        T::Disconnect as u8,
        T::VersionMismatch as u8,
    ]
};
/// Ethernet + IPv4 + UDP header bytes.
const HEADERS: usize = 14 + 20 + 8;

/// Runs `xrudp flood` and prints its report.
pub fn run(args: &FloodArgs) -> anyhow::Result<()> {
    let report = flood(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "flood {:?}: {} packets in {:.2} s = {:.0} packets/s ({} core(s), {} mode{})",
            report.kind,
            report.sent,
            report.seconds,
            report.rate,
            report.cores,
            if report.zero_copy {
                "zero-copy"
            } else {
                "copy"
            },
            if report.kind == Kind::Replay {
                format!(", {} datagrams captured", report.captured)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// Runs the flood `args` describes; returns what it sent.
pub fn flood(args: &FloodArgs) -> anyhow::Result<Report> {
    if xrudp_xdp::os::geteuid() != 0 {
        bail!(
            "xrudp flood binds AF_XDP sockets: run it as root (or with CAP_NET_RAW and \
             CAP_NET_ADMIN), inside the network namespace of the test client"
        );
    }
    let duration = match args.duration {
        Some(d) if !(d > 0.0 && d <= MAX_DURATION) => {
            bail!("--duration {d}: give a number of seconds above 0 and at most {MAX_DURATION}")
        }
        Some(d) => Some(Duration::from_secs_f64(d)),
        None => None,
    };
    if args.count == Some(0) {
        bail!("--count 0 sends nothing: give at least 1");
    }
    let queues = tx_queues(&args.iface)?;
    if args.cores == 0 || args.cores > queues {
        bail!(
            "--cores {}: {} has {queues} queue(s), and each sending thread binds its own \
             (thread i on queue i); use 1 to {queues}, or create the link with more queues \
             (`ip link add ... numtxqueues N numrxqueues N type veth ...`)",
            args.cores,
            args.iface
        );
    }
    // Only to fail early, and clearly, without a route.
    xdp_io::source_ip(args.target)?;
    let local_mac = xdp_io::interface_mac(&args.iface)?;
    let target_mac = xdp_io::resolve_mac(&args.iface, args.target)?;
    let replay = if args.kind == Kind::Replay {
        capture(args.target).context("--kind replay: capturing a real session to replay")?
    } else {
        Capture::default()
    };
    let mut socks = Vec::with_capacity(args.cores);
    for q in 0..args.cores {
        let queue = u32::try_from(q).context("too many cores")?;
        let xsk = Xsk::bind(&args.iface, queue, &XSK, ProgramMode::Skb).with_context(|| {
            format!(
                "binding an AF_XDP socket to {} queue {queue}; if another AF_XDP program \
                 owns the queue, stop it",
                args.iface
            )
        })?;
        socks.push(xsk);
    }
    let zero_copy = socks.iter().all(Xsk::zero_copy);
    let hello = hello_bytes(args.target)?;
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let shared = Arc::new(Shared {
        kind: args.kind,
        eth: Eth {
            src: local_mac,
            dst: target_mac,
        },
        target: args.target,
        sources: args.sources,
        ids: args.ids,
        hello,
        replay: replay.packets,
        replay_from: replay.from,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let n = args.cores as u64;
    let start = Instant::now();
    let deadline = duration.map(|d| start + d);
    let threads: Vec<_> = socks
        .into_iter()
        .enumerate()
        .map(|(i, xsk)| {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            let core = cores.get(i % cores.len().max(1)).copied();
            let i64 = i as u64;
            // Thread i's share of the count and the rate (the first ones take the rest).
            let count = args.count.map(|c| c / n + u64::from(i64 < c % n));
            let rate = args.rate / n + u64::from(i64 < args.rate % n);
            let seed = args.seed ^ (i64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            std::thread::Builder::new()
                .name(format!("flood-{i}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    let mut s = Sender {
                        xsk,
                        build: Builder {
                            shared: &shared,
                            rng: Rng::new(seed),
                            next_replay: i,
                        },
                    };
                    s.run(count, rate, deadline, &stop)
                })
                .context("spawning a flood thread")
        })
        .collect::<anyhow::Result<_>>()?;
    let mut sent = 0;
    for t in threads {
        match t.join() {
            Ok(n) => sent += n,
            Err(_) => bail!("a flood thread panicked"),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Report {
        kind: args.kind,
        sent,
        seconds,
        rate: sent as f64 / seconds.max(1e-9),
        cores: args.cores,
        zero_copy,
        captured: shared.replay.len(),
    })
}

/// What all sending threads read.
#[derive(Debug)]
struct Shared {
    kind: Kind,
    eth: Eth,
    target: SocketAddrV4,
    sources: Net,
    ids: Option<(u32, u32)>,
    hello: Vec<u8>,
    replay: Vec<Vec<u8>>,
    replay_from: SocketAddrV4,
}

#[derive(Clone, Copy, Debug)]
struct Eth {
    src: Address,
    dst: Address,
}

/// One sending thread.
struct Sender<'a> {
    xsk: Xsk,
    build: Builder<'a>,
}

/// Writes the frames of one sending thread.
struct Builder<'a> {
    shared: &'a Shared,
    rng: Rng,
    next_replay: usize,
}

impl Sender<'_> {
    /// Sends until `count` frames have completed, `deadline` passed or `stop` is set;
    /// returns the frames completed. `rate` 0: unpaced.
    fn run(
        &mut self,
        count: Option<u64>,
        rate: u64,
        deadline: Option<Instant>,
        stop: &AtomicBool,
    ) -> u64 {
        let mut tx: Vec<Frame> = Vec::with_capacity(BATCH);
        let mut queued: u64 = 0;
        let mut completed: u64 = 0;
        let start = Instant::now();
        let limit = count.unwrap_or(u64::MAX);
        loop {
            completed += self.xsk.complete() as u64;
            let now = Instant::now();
            let over = deadline.is_some_and(|d| now >= d) || stop.load(Ordering::Relaxed);
            if over || queued >= limit {
                break;
            }
            let mut budget = (limit - queued).min(BATCH as u64);
            if rate > 0 {
                let due = (now - start).as_nanos() * u128::from(rate) / 1_000_000_000;
                let due = u64::try_from(due).unwrap_or(u64::MAX);
                budget = budget.min(due.saturating_sub(queued));
                if budget == 0 {
                    self.kick();
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
            }
            while (tx.len() as u64) < budget {
                let Some(mut f) = self.xsk.alloc() else { break };
                let build = &mut self.build;
                self.xsk
                    .with_buffer(&mut f, |buf, _| (build.frame(buf), ()));
                tx.push(f);
            }
            if tx.is_empty() {
                // Every frame is in flight: let the kernel send some.
                self.kick();
                continue;
            }
            queued += self.xsk.transmit(&mut tx) as u64;
            self.kick();
        }
        // Frames built but not queued go back; what is on the ring is sent out.
        for f in tx.drain(..) {
            self.xsk.release(f);
        }
        let drain_until = Instant::now() + Duration::from_secs(1);
        while completed < queued && Instant::now() < drain_until {
            self.kick();
            completed += self.xsk.complete() as u64;
        }
        completed
    }

    /// Kicks copy-mode TX until the ring is empty (at most one kick per 32 frames on it).
    fn kick(&mut self) {
        let level = self.xsk.tx_ring_level() as usize;
        for _ in 0..level.div_ceil(KICK_FRAMES).max(1) {
            if self.xsk.tx_ring_level() == 0 {
                break;
            }
            self.xsk.kick_tx();
        }
    }
}

impl Builder<'_> {
    /// Writes one frame of the flood's kind at the start of `buf`; returns its length.
    fn frame(&mut self, buf: &mut [u8]) -> usize {
        let s = self.shared;
        let r = self.rng.next();
        let spoofed = SocketAddrV4::new(
            Ipv4Addr::from(s.sources.pick(r)),
            1024 + u16::try_from((r >> 32) % 64_000).unwrap_or(0),
        );
        let (src, len) = match s.kind {
            Kind::Junk => {
                let len = 1 + usize::try_from(self.rng.next() % 64).unwrap_or(0);
                self.fill_random(&mut buf[HEADERS..HEADERS + len]);
                (spoofed, len)
            }
            Kind::MagicJunk => {
                let len = 12 + usize::try_from(self.rng.next() % 53).unwrap_or(0);
                let p = &mut buf[HEADERS..HEADERS + len];
                self.fill_random(p);
                p[..2].copy_from_slice(&xrudp_common::rudp::MAGIC);
                p[2] = xrudp_common::rudp::VERSION;
                p[3] = MAGIC_JUNK_TYPES[usize::try_from(r % 6).unwrap_or(0)];
                (spoofed, len)
            }
            Kind::Data => {
                let len = 12 + 16 + usize::try_from(self.rng.next() % 32).unwrap_or(0);
                let p = &mut buf[HEADERS..HEADERS + len];
                self.fill_random(p);
                p[..2].copy_from_slice(&xrudp_common::rudp::MAGIC);
                p[2] = xrudp_common::rudp::VERSION;
                p[3] = xrudp_common::rudp::PacketType::Data as u8;
                if let Some((lo, hi)) = s.ids {
                    let span = u64::from(hi - lo) + 1;
                    let id = lo + u32::try_from((r >> 16) % span).unwrap_or(0);
                    p[xrudp_common::rudp::CONN_ID_OFFSET..][..4].copy_from_slice(&id.to_be_bytes());
                }
                // The body is long enough for the header: sealing cannot fail.
                let _ = xrudp_packet::crc::rudp_seal(p);
                (spoofed, len)
            }
            Kind::Hello => {
                let len = s.hello.len();
                buf[HEADERS..HEADERS + len].copy_from_slice(&s.hello);
                (spoofed, len)
            }
            Kind::OneSource => {
                let len = s.hello.len();
                buf[HEADERS..HEADERS + len].copy_from_slice(&s.hello);
                (
                    SocketAddrV4::new(Ipv4Addr::from(s.sources.first()), 40_000),
                    len,
                )
            }
            Kind::Replay => {
                let d = &s.replay[self.next_replay % s.replay.len()];
                self.next_replay = self.next_replay.wrapping_add(1);
                buf[HEADERS..HEADERS + d.len()].copy_from_slice(d);
                (s.replay_from, d.len())
            }
        };
        write_headers(buf, s.eth, src, s.target, len);
        HEADERS + len
    }

    fn fill_random(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let x = self.rng.next().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }
}

/// `LO..=HI` (or `LO..HI`, exclusive) as an inclusive pair.
fn parse_ids(s: &str) -> Result<(u32, u32), String> {
    let (lo, hi, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(format!("{s:?}: expected LO..=HI"));
    };
    let lo: u32 = lo.trim().parse().map_err(|e| format!("{lo:?}: {e}"))?;
    let hi: u32 = hi.trim().parse().map_err(|e| format!("{hi:?}: {e}"))?;
    let hi = if inclusive {
        Some(hi)
    } else {
        hi.checked_sub(1)
    };
    match hi {
        Some(hi) if hi >= lo => Ok((lo, hi)),
        _ => Err(format!("{s:?}: an empty range")),
    }
}

/// Ethernet, IPv4 (with its header checksum) and UDP (checksum 0: none) headers for a
/// `payload`-byte datagram from `src` to `dst`, at the start of `buf`.
fn write_headers(buf: &mut [u8], eth: Eth, src: SocketAddrV4, dst: SocketAddrV4, payload: usize) {
    let udp_len = u16::try_from(8 + payload).unwrap_or(u16::MAX);
    let ip_len = udp_len.saturating_add(20);
    buf[0..6].copy_from_slice(&eth.dst.0);
    buf[6..12].copy_from_slice(&eth.src.0);
    buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut buf[14..34];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]);
    ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF, no fragment
    ip[8] = 64;
    ip[9] = 17;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&src.ip().octets());
    ip[16..20].copy_from_slice(&dst.ip().octets());
    let sum = ip_checksum(ip);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let udp = &mut buf[34..42];
    udp[0..2].copy_from_slice(&src.port().to_be_bytes());
    udp[2..4].copy_from_slice(&dst.port().to_be_bytes());
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
}

/// The Internet checksum (RFC 1071) of an IPv4 header whose checksum field is zero.
fn ip_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0)
}

/// xorshift64*: cheap, seeded, good enough to scatter sources and ids.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The active transmit queues of `iface` (sysfs).
fn tx_queues(iface: &str) -> anyhow::Result<usize> {
    let dir = format!("/sys/class/net/{iface}/queues");
    let entries = std::fs::read_dir(&dir).with_context(|| {
        format!(
            "--iface {iface}: no such interface in this network namespace; run the flood in \
             the client's namespace (`ip netns exec NS xrudp flood ...`) and name the link \
             toward the target"
        )
    })?;
    Ok(entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("tx-"))
        .count())
}

/// A real padded hello, as a client sends it first.
fn hello_bytes(target: SocketAddrV4) -> anyhow::Result<Vec<u8>> {
    let mut c = Client::new(
        ClientConfig::default(),
        SocketAddr::V4(target),
        7,
        Instant::now(),
        open_security()?,
    )
    .context("building a client to write a hello")?;
    let mut buf = vec![0u8; 1500];
    let t = c
        .poll_transmit(Instant::now(), &mut buf)
        .context("the client wrote no hello")?;
    buf.truncate(t.len);
    Ok(buf)
}

fn open_security() -> anyhow::Result<xrudp_proto::session::Security> {
    let mut ephemeral = [0u8; 32];
    getrandom::fill(&mut ephemeral).map_err(|e| anyhow::anyhow!("the OS random source: {e}"))?;
    Ok(xrudp_proto::session::Security::Open {
        ephemeral,
        server_key: None,
    })
}

/// A real session's packets, for `replay`.
#[derive(Debug)]
struct Capture {
    packets: Vec<Vec<u8>>,
    from: SocketAddrV4,
}

impl Default for Capture {
    fn default() -> Self {
        Self {
            packets: Vec::new(),
            from: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        }
    }
}

/// Connects a real client to `target` over a kernel UDP socket, sends 32 reliable
/// messages, disconnects, and returns every datagram it sent after the handshake
/// (`Data`, `Disconnect`) with its address. Up to 10 s.
fn capture(target: SocketAddrV4) -> anyhow::Result<Capture> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("opening a UDP socket")?;
    sock.connect(target)
        .with_context(|| format!("no route to {target}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(2)))?;
    let SocketAddr::V4(from) = sock.local_addr()? else {
        bail!("the socket toward {target} has no IPv4 address");
    };
    let t0 = Instant::now();
    let mut c = Client::new(
        ClientConfig::default(),
        SocketAddr::V4(target),
        t0.elapsed().as_nanos() as u64 ^ 0x5eed,
        t0,
        open_security()?,
    )
    .context("building the capture client")?;
    let mut buf = vec![0u8; 2048];
    let mut packets = Vec::new();
    let mut echoes = 0;
    let mut connected = false;
    let deadline = t0 + Duration::from_secs(10);
    while Instant::now() < deadline {
        let now = Instant::now();
        while let Some(t) = c.poll_transmit(now, &mut buf) {
            let d = &buf[..t.len];
            sock.send(d).context("sending")?;
            if connected && d.get(3) != Some(&(xrudp_common::rudp::PacketType::Response as u8)) {
                packets.push(d.to_vec());
            }
        }
        if c.state() == ClientState::Disconnected {
            break;
        }
        if let Ok(len) = sock.recv(&mut buf) {
            c.handle_datagram(Instant::now(), SocketAddr::V4(target), &buf[..len]);
        }
        c.handle_timeout(Instant::now());
        while let Some(ev) = c.poll_event() {
            match ev {
                ClientEvent::Connected => {
                    connected = true;
                    for k in 0..32u8 {
                        let _ = c.send(0, &[k; 24]);
                    }
                }
                ClientEvent::Message { .. } => {
                    echoes += 1;
                    if echoes == 32 {
                        c.disconnect(0);
                    }
                }
                ClientEvent::Disconnected { reason } if !connected => {
                    bail!("the server refused the capture client: {reason:?}")
                }
                _ => {}
            }
        }
    }
    if packets.is_empty() {
        bail!(
            "the capture client did not connect to {target} within 10 s (is an xrudp echo \
             server with --encryption open listening there?)"
        );
    }
    // Let the server withdraw the closed session before the replay starts.
    std::thread::sleep(Duration::from_millis(200));
    Ok(Capture { packets, from })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_checksum_matches_rfc_1071_example() {
        // A header from RFC 1071's worked style: the checksum of a header including its
        // own checksum is zero.
        let mut h = [
            0x45, 0, 0, 0x54, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 2, 198, 18, 0, 1,
        ];
        let s = ip_checksum(&h);
        h[10..12].copy_from_slice(&s.to_be_bytes());
        assert_eq!(ip_checksum(&h), 0);
    }

    #[test]
    fn networks_parse_and_pick_inside() {
        let n: Net = "198.19.7.9/16".parse().expect("net");
        assert_eq!(n.first(), u32::from(Ipv4Addr::new(198, 19, 0, 1)));
        for r in [0, 1, 65_535, 65_536, u64::MAX] {
            let a = Ipv4Addr::from(n.pick(r));
            assert_eq!(a.octets()[..2], [198, 19]);
        }
        let one: Net = "10.0.0.5/32".parse().expect("net");
        assert_eq!(one.pick(12345), u32::from(Ipv4Addr::new(10, 0, 0, 5)));
        assert!("10.0.0.0/7".parse::<Net>().is_err());
        assert!("10.0.0.0".parse::<Net>().is_err());
    }

    #[test]
    fn id_ranges_parse() {
        assert_eq!(parse_ids("1024..=2047"), Ok((1024, 2047)));
        assert_eq!(parse_ids("1024..2048"), Ok((1024, 2047)));
        assert_eq!(parse_ids("0..=4294967295"), Ok((0, u32::MAX)));
        assert!(parse_ids("5..5").is_err());
        assert!(parse_ids("6..=5").is_err());
        assert!(parse_ids("5").is_err());
    }
}
