//! The AF_XDP load backend (`xrudp bench --backend xdp --iface IF`): the load generator
//! drives its connections through the engine's own machinery on the client end of the
//! link, bypassing the kernel's UDP stack.
//!
//! Each connection gets its own local UDP port, from a contiguous range that the engine's
//! XDP program (attached to IF by a [`Steering`], its ports map set to that range) steers
//! into one AF_XDP socket per load thread (thread `i` on queue `i`). Frames are built in
//! the UMEM with complete checksums ([`xrudp_packet::datagram::build`]) and batched on the
//! TX ring; echoes are taken off the RX ring in batches, checksum-verified and handed to
//! the connection their destination port names. IPv4 only: the source address is the one the
//! kernel would use toward the server, the source MAC is IF's, and the server's MAC comes
//! from the kernel's neighbour table, which a datagram to the server's discard port fills.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use xrudp_packet::Kernel;
use xrudp_packet::datagram::{self, Datagram, Route};
use xrudp_packet::ethernet::Address;
use xrudp_proto::Client;
use xrudp_xdp::xsk::{Frame, ProgramMode, Xsk, XskConfig, ZeroCopy};

use super::conns::{IoCounters, Transport};

/// Frames taken off the RX ring, or put on the TX ring, per pass.
const BATCH: usize = 64;
/// RX ring passes per round at most; more waiting is taken next round.
const RX_PASSES: usize = 8;
/// Copy-mode transmit sends at most this many frames per kick (net/xdp/xsk.c).
const KICK_FRAMES: usize = 32;

/// UMEM and ring sizes of each load thread's socket.
const XSK: XskConfig = XskConfig {
    frames: 4096,
    frame_size: 2048,
    ring_size: 2048,
    zero_copy: ZeroCopy::Auto,
    need_wakeup: true,
    huge_pages: false,
};

/// What `--backend xdp` needs from the engine: the interface's queue count and the XDP
/// program that steers the load's ports into its AF_XDP sockets. The `xrudp` binary
/// implements it with the engine's loader; this crate cannot, since the engine's binary
/// depends on it.
pub trait Steering {
    /// Active receive queues of `iface` in this network namespace; an error if there is
    /// no such interface.
    fn rx_queues(&self, iface: &str) -> anyhow::Result<u32>;
    /// Loads the XDP program, sets its steered ports to `ports` and attaches it to
    /// `iface` (native if the driver can, else SKB). Errors say what to do.
    fn steer(&self, iface: &str, ports: &[u16]) -> anyhow::Result<Box<dyn Steered>>;
}

/// An XDP program attached by [`Steering::steer`]; dropping it detaches the program.
pub trait Steered: std::fmt::Debug {
    /// Where the program attached; the AF_XDP sockets bind to match.
    fn mode(&self) -> ProgramMode;
    /// Puts the AF_XDP socket bound to `queue` in the program's socket map.
    fn register_socket(&mut self, queue: u32, fd: RawFd) -> anyhow::Result<()>;
}

/// The XDP program attached to the client interface, and one transport per load thread.
/// Keep the [`Attachment`] alive for the run: dropping it detaches the program.
#[derive(Debug)]
pub struct Attachment {
    _program: Box<dyn Steered>,
}

/// Attaches to `iface` through `steering`, steering ports
/// `port_base .. port_base + sum(clients)`, and opens one AF_XDP socket per entry of
/// `clients` (thread `i` on queue `i`, its connections on the next `clients[i]` ports).
/// `verify_checksums`: drop echoes whose UDP checksum does not verify.
pub fn attach(
    steering: &dyn Steering,
    iface: &str,
    server: SocketAddr,
    port_base: u16,
    clients: &[usize],
    verify_checksums: bool,
) -> anyhow::Result<(Attachment, Vec<Rings>)> {
    if xrudp_xdp::os::geteuid() != 0 {
        bail!(
            "--backend xdp loads an XDP program and binds AF_XDP sockets: run as root (or with \
             CAP_NET_ADMIN, CAP_BPF and CAP_NET_RAW), or use --backend socket"
        );
    }
    let SocketAddr::V4(server4) = server else {
        bail!("--backend xdp supports IPv4 servers only; use --backend socket for IPv6");
    };
    let rx_queues = steering.rx_queues(iface).with_context(|| {
        format!(
            "--iface {iface}: no such interface in this network namespace; run the bench in \
             the client's namespace (`ip netns exec NS xrudp bench ...`) and name the link \
             toward the server"
        )
    })?;
    let threads = clients.len();
    if threads as u64 > u64::from(rx_queues) {
        bail!(
            "--backend xdp binds one AF_XDP socket per load thread, thread i on queue i, but \
             {iface} has {rx_queues} active queue(s): use --threads {rx_queues} or fewer (or \
             give the link more queues)"
        );
    }
    let total: usize = clients.iter().sum();
    if usize::from(port_base) + total > usize::from(u16::MAX) + 1 || port_base == 0 {
        bail!(
            "--xdp-ports {port_base}: {total} connections need ports {port_base}..{} (one per \
             connection), past 65535; choose a lower base",
            usize::from(port_base) + total - 1
        );
    }
    let local_ip = source_ip(server4)?;
    let local_mac = interface_mac(iface)?;
    let server_mac = resolve_mac(iface, server4)?;
    tracing::info!(%local_ip, %local_mac, %server_mac, iface, "bench: AF_XDP load backend");

    let ports: Vec<u16> = (0..total)
        .filter_map(|k| u16::try_from(usize::from(port_base) + k).ok())
        .collect();
    let mut program = steering.steer(iface, &ports)?;
    let program_mode = program.mode();
    let kernel = Kernel::detect();
    let mut rings = Vec::with_capacity(threads);
    let mut first = port_base;
    for (q, &n) in clients.iter().enumerate() {
        let queue = u32::try_from(q).context("too many threads")?;
        let xsk = Xsk::bind(iface, queue, &XSK, program_mode).with_context(|| {
            format!(
                "binding an AF_XDP socket to {iface} queue {queue}; if another AF_XDP \
                 program owns the queue, stop it"
            )
        })?;
        program.register_socket(queue, xsk.fd())?;
        rings.push(Rings {
            xsk,
            kernel,
            verify_checksums,
            route: Route {
                local_mac,
                peer_mac: server_mac,
                vlan: None,
                local: SocketAddr::V4(SocketAddrV4::new(local_ip, first)),
                peer: server,
                dscp: 0,
            },
            first_port: first,
            ports: n,
            open: vec![false; n],
            rx: Vec::with_capacity(BATCH),
            tx: Vec::with_capacity(BATCH),
            queued: 0,
            counters: IoCounters::default(),
        });
        // The range check above keeps this within u16.
        first = first.wrapping_add(u16::try_from(n).unwrap_or(0));
    }
    Ok((Attachment { _program: program }, rings))
}

/// One load thread's AF_XDP socket and its connections' ports.
#[derive(Debug)]
pub struct Rings {
    xsk: Xsk,
    kernel: Kernel,
    verify_checksums: bool,
    /// The route of the thread's first port; connection `i` uses port `first_port + i`.
    route: Route,
    first_port: u16,
    ports: usize,
    open: Vec<bool>,
    rx: Vec<Frame>,
    tx: Vec<Frame>,
    /// Frames put on the TX ring this round.
    queued: usize,
    counters: IoCounters,
}

impl Rings {
    fn route_of(&self, index: usize) -> Route {
        let port = self
            .first_port
            .wrapping_add(u16::try_from(index).unwrap_or(0));
        let mut r = self.route;
        r.local.set_port(port);
        r
    }

    fn push_tx(&mut self) {
        if !self.tx.is_empty() {
            self.queued += self.xsk.transmit(&mut self.tx);
            self.counters.send_calls += 1;
        }
    }
}

impl Transport for Rings {
    fn open(&mut self, index: usize, local: IpAddr, _server: SocketAddr) -> io::Result<()> {
        if index >= self.ports {
            return Err(io::Error::other(format!(
                "connection {index} has no port of this thread's range ({} ports)",
                self.ports
            )));
        }
        if !local.is_unspecified() && local != self.route.local.ip() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--backend xdp sends from the interface's own address; drop --local",
            ));
        }
        self.open[index] = true;
        Ok(())
    }

    fn close(&mut self, index: usize) {
        if let Some(o) = self.open.get_mut(index) {
            *o = false;
        }
    }

    fn wait(&mut self, wait: Duration) {
        // Frames may sit on the TX ring until kicked (copy mode sends 32 per kick).
        self.xsk.complete();
        if self.xsk.tx_ring_level() > 0 {
            self.xsk.kick_tx();
            self.counters.send_calls += 1;
        }
        // To the microsecond, as the socket backend waits.
        if !wait.is_zero() && xrudp_xdp::os::wait_readable(self.xsk.fd(), wait).is_err() {
            self.counters.errors += 1;
        }
    }

    fn receive(&mut self, deliver: &mut dyn FnMut(usize, SocketAddr, &[u8])) -> bool {
        let reserve = XSK.frames as usize / 2;
        self.xsk.refill(reserve);
        let server = self.route.peer;
        let local_ip = self.route.local.ip();
        let (verify, kernel) = (self.verify_checksums, self.kernel);
        let mut more = false;
        for pass in 0..RX_PASSES {
            let n = self.xsk.recv(&mut self.rx, BATCH);
            for f in self.rx.drain(..) {
                let ok = match Datagram::parse(self.xsk.data(&f)) {
                    Ok(d) if (!verify || d.verify_udp_checksum(kernel)) && d.src() == server => {
                        let index = usize::from(d.dst_port().wrapping_sub(self.first_port));
                        if d.dst_ip() == local_ip && self.open.get(index).copied().unwrap_or(false)
                        {
                            deliver(index, server, d.payload());
                            true
                        } else {
                            false
                        }
                    }
                    _ => false,
                };
                if ok {
                    self.counters.received += 1;
                } else {
                    self.counters.rx_dropped += 1;
                }
                self.xsk.release(f);
            }
            if n < BATCH {
                break;
            }
            self.xsk.refill(reserve);
            if pass + 1 == RX_PASSES {
                more = true;
            }
        }
        self.xsk.refill(reserve);
        more
    }

    fn flush(&mut self, index: usize, client: &mut Client, now: Instant) -> bool {
        let route = self.route_of(index);
        let kernel = self.kernel;
        loop {
            if self.tx.len() >= BATCH {
                self.push_tx();
                if self.tx.len() >= BATCH {
                    // The TX ring is full: the rest stays queued in the protocol.
                    return false;
                }
            }
            if self.xsk.frames_in_use() >= self.xsk.frames() {
                self.xsk.complete();
            }
            let Some(mut f) = self.xsk.alloc() else {
                return false;
            };
            let built = self.xsk.with_buffer(&mut f, |buf, _| {
                let area = route.payload_mut(buf);
                let Some(t) = client.poll_transmit(now, area) else {
                    return (0, None);
                };
                match datagram::build(buf, &route, t.len, kernel) {
                    Ok(len) => (len, Some(true)),
                    Err(_) => (0, Some(false)),
                }
            });
            match built {
                None => {
                    self.xsk.release(f);
                    return true;
                }
                Some(true) => {
                    self.counters.sent += 1;
                    self.tx.push(f);
                }
                Some(false) => {
                    self.counters.send_dropped += 1;
                    self.xsk.release(f);
                }
            }
        }
    }

    fn end_round(&mut self) {
        self.push_tx();
        // Copy-mode TX sends at most 32 frames per kick: kick again while the kernel has
        // left frames on the ring (once per 32 queued at most; `wait` kicks any rest).
        for _ in 1..self.queued.div_ceil(KICK_FRAMES) {
            if self.xsk.tx_ring_level() == 0 {
                break;
            }
            self.xsk.kick_tx();
            self.counters.send_calls += 1;
        }
        self.queued = 0;
        self.xsk.complete();
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}

/// The address the kernel would send from toward `server` (a connected UDP socket's
/// local address; nothing is sent).
pub(crate) fn source_ip(server: SocketAddrV4) -> anyhow::Result<Ipv4Addr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("opening a UDP socket")?;
    s.connect(server)
        .with_context(|| format!("no route to {server} from this network namespace"))?;
    match s.local_addr().context("getsockname")? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(_) => bail!("the route to {server} has no IPv4 source address"),
    }
}

/// `iface`'s MAC address, from sysfs.
pub(crate) fn interface_mac(iface: &str) -> anyhow::Result<Address> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_mac(text.trim()).with_context(|| format!("{path} holds no MAC address: {text:?}"))
}

/// The server's MAC from the kernel's neighbour table (/proc/net/arp) on `iface`. If it
/// is not there yet, one datagram to the server's discard port (9) makes the kernel
/// resolve it; then the table is read again for up to three seconds.
pub(crate) fn resolve_mac(iface: &str, server: SocketAddrV4) -> anyhow::Result<Address> {
    if let Some(mac) = arp_lookup(iface, *server.ip())? {
        return Ok(mac);
    }
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("opening a UDP socket")?;
    s.connect((*server.ip(), 9))
        .with_context(|| format!("no route to {}", server.ip()))?;
    // Only the ARP exchange matters; the datagram itself may well be refused or dropped.
    let _ = s.send(&[0]);
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        if let Some(mac) = arp_lookup(iface, *server.ip())? {
            return Ok(mac);
        }
    }
    bail!(
        "the server {} has no complete ARP entry on {iface} after 3 s: --backend xdp needs the \
         server on the same link as {iface} (no router between), answering ARP; check \
         `ip neigh show dev {iface}` and `ping {}`",
        server.ip(),
        server.ip()
    )
}

/// A complete (`ATF_COM`) entry for `ip` on `iface` in /proc/net/arp.
fn arp_lookup(iface: &str, ip: Ipv4Addr) -> anyhow::Result<Option<Address>> {
    let text = std::fs::read_to_string("/proc/net/arp").context("reading /proc/net/arp")?;
    Ok(parse_arp(&text, iface, ip))
}

/// Finds `ip` on `iface` in the text of /proc/net/arp (columns: IP address, HW type,
/// Flags, HW address, Mask, Device); only complete entries (flag 0x2) count.
fn parse_arp(text: &str, iface: &str, ip: Ipv4Addr) -> Option<Address> {
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [addr, _hw, flags, mac, _mask, dev] = f.as_slice() else {
            return None;
        };
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
        (addr.parse::<Ipv4Addr>().ok()? == ip && *dev == iface && flags & 0x2 != 0)
            .then(|| parse_mac(mac))
            .flatten()
    })
}

fn parse_mac(s: &str) -> Option<Address> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    (parts.next().is_none() && out != [0; 6]).then_some(Address(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP: &str =
        "IP address       HW type     Flags       HW address            Mask     Device
198.18.0.1       0x1         0x2         8a:3e:01:02:03:04     *        bc1
198.18.0.9       0x1         0x0         00:00:00:00:00:00     *        bc1
198.18.0.1       0x1         0x2         02:00:00:00:00:01     *        eth0
";

    #[test]
    fn arp_lookup_wants_a_complete_entry_on_the_interface() {
        let ip = Ipv4Addr::new(198, 18, 0, 1);
        assert_eq!(
            parse_arp(ARP, "bc1", ip),
            Some(Address([0x8a, 0x3e, 1, 2, 3, 4]))
        );
        assert_eq!(
            parse_arp(ARP, "eth0", ip),
            Some(Address([2, 0, 0, 0, 0, 1]))
        );
        assert_eq!(parse_arp(ARP, "bc2", ip), None);
        // Incomplete (flags 0x0): not resolved yet.
        assert_eq!(parse_arp(ARP, "bc1", Ipv4Addr::new(198, 18, 0, 9)), None);
        assert_eq!(parse_arp("", "bc1", ip), None);
    }

    #[test]
    fn mac_parsing_is_strict() {
        assert_eq!(
            parse_mac("02:0a:ff:00:10:01"),
            Some(Address([2, 0x0a, 0xff, 0, 0x10, 1]))
        );
        assert_eq!(parse_mac("02:0a:ff:00:10"), None);
        assert_eq!(parse_mac("02:0a:ff:00:10:01:02"), None);
        assert_eq!(parse_mac("zz:0a:ff:00:10:01"), None);
        assert_eq!(parse_mac("00:00:00:00:00:00"), None);
    }
}
