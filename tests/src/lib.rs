//! Shared helpers for the integration tests: privileged-test guard, network namespace
//! topologies (scripts/netns.sh), the engine as a child process, fleets of RUDP clients
//! and their message tags, the engine's protocol figures, crafted frames.
//!
//! Privileged tests never skip: without root they fail with a message saying so.
#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers fail the test by panicking, with a message saying why"
)]

pub mod alloc;
pub mod frames;

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sched::{CloneFlags, setns},
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use xrudp::{control, telemetry::Snapshot};
use xrudp_client::{Fleet, FleetId};
use xrudp_proto::{ClientConfig, ClientEvent};

/// Fails the test loudly unless it runs as root: these tests create namespaces, load
/// XDP programs and bind AF_XDP sockets. They are never skipped, in CI or elsewhere.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (network namespaces, XDP, AF_XDP): run it through scripts/test.sh as root"
    );
}

/// The repository root.
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// What `xrudp stats ARGS` printed; fails the test, with its error output, if it failed.
#[must_use]
pub fn xrudp_stats(args: &[&str]) -> Vec<u8> {
    let out = Command::new(xrudp_bin())
        .arg("stats")
        .args(args)
        .output()
        .expect("running xrudp stats");
    assert!(
        out.status.success(),
        "xrudp stats {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The `xrudp` binary built next to this test executable.
#[must_use]
pub fn xrudp_bin() -> PathBuf {
    // target/<profile>/deps/<test-exe> → target/<profile>/xrudp
    let exe = std::env::current_exe().unwrap_or_default();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("xrudp"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "{} is missing: build it first (`cargo build -p xrudp`; scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Two fresh namespaces joined by a veth pair (scripts/netns.sh), owned by this test
/// process; removed on drop (or, if the process dies first, by `netns.sh down --all`).
#[derive(Debug)]
pub struct Topology {
    /// Topology id.
    pub id: String,
    /// Server namespace name.
    pub ns_srv: String,
    /// Client namespace name.
    pub ns_cli: String,
    /// Server-end interface.
    pub if_srv: String,
    /// Client-end interface.
    pub if_cli: String,
    /// Server IPv4 address.
    pub ip_srv: String,
    /// Client IPv4 address.
    pub ip_cli: String,
    /// Server IPv6 address.
    pub ip6_srv: String,
}

impl Topology {
    /// Builds a topology with `queues` rx/tx queues per veth end; `tx_csum_off` turns
    /// checksum offload off on the client end.
    #[must_use]
    pub fn new(queues: u32, tx_csum_off: bool) -> Self {
        require_root();
        let mut cmd = Command::new(repo_root().join("scripts/netns.sh"));
        cmd.args(["up", "--queues", &queues.to_string()]);
        // This test process owns the topology: while it runs, another suite's
        // `netns.sh down --all` leaves the namespaces alone; after a crash it removes them.
        cmd.args(["--owner", &std::process::id().to_string()]);
        if tx_csum_off {
            cmd.arg("--no-tx-csum");
        }
        let out = cmd.output().expect("running scripts/netns.sh");
        assert!(
            out.status.success(),
            "netns.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("netns.sh printed no {k}"))
                .to_owned()
        };
        Self {
            id: get("XR_ID"),
            ns_srv: get("XR_NS_SRV"),
            ns_cli: get("XR_NS_CLI"),
            if_srv: get("XR_IF_SRV"),
            if_cli: get("XR_IF_CLI"),
            ip_srv: get("XR_IP_SRV"),
            ip_cli: get("XR_IP_CLI"),
            ip6_srv: get("XR_IP6_SRV"),
        }
    }

    /// Runs `f` on a thread inside namespace `ns`; sockets it creates belong to `ns`.
    pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{ns}");
        thread::spawn(move || {
            let file = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
            setns(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// Runs a command inside namespace `ns` and returns its output.
    #[must_use]
    pub fn exec(ns: &str, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .output()
            .expect("running ip netns exec")
    }

    /// The server's IPv4 address with `port`.
    #[must_use]
    pub fn srv_addr(&self, port: u16) -> SocketAddr {
        format!("{}:{port}", self.ip_srv)
            .parse()
            .expect("netns.sh printed an IPv4 address")
    }

    /// The XDP program id attached to the server interface (0 if none).
    #[must_use]
    pub fn srv_xdp_prog(&self) -> u32 {
        let iface = self.if_srv.clone();
        Self::in_ns(&self.ns_srv, move || {
            let idx = xrudp::sys::if_index(&iface).expect("server interface exists");
            xrudp::sys::bpf::xdp_query(idx)
                .expect("bpf_xdp_query")
                .prog_id
        })
    }

    /// Polls [`Topology::srv_xdp_prog`] until no program is attached to the server
    /// interface or `timeout` has passed; returns the last id seen (0: detached). A killed
    /// engine's bpf_link closes with the process, a moment after it exits.
    #[must_use]
    pub fn srv_xdp_detached_within(&self, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            let id = self.srv_xdp_prog();
            if id == 0 || Instant::now() > deadline {
                return id;
            }
            thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/netns.sh"))
            .args(["down", &self.id])
            .status();
    }
}

/// How [`Engine::try_start_as`] launches the engine.
#[derive(Debug, Default)]
pub struct Launch<'a> {
    /// A command the engine runs under, inside the namespace (every program in it must
    /// `exec` the next, so that the child's pid is the engine's).
    pub wrapper: &'a [&'a str],
    /// The engine's runtime directory (`XRUDP_RUN_DIR`) instead of /run/xrudp.
    pub run_dir: Option<&'a Path>,
}

/// `xrudp attach` running in the server namespace of a topology.
#[derive(Debug)]
pub struct Engine {
    child: Option<Child>,
    control: PathBuf,
    /// Captured stderr (the engine's log), read after it exits.
    pub log: PathBuf,
}

impl Engine {
    /// Starts `xrudp attach --iface <srv> <args>` and waits until its control socket answers.
    #[must_use]
    pub fn start(t: &Topology, args: &[&str]) -> Self {
        Self::try_start(t, args).unwrap_or_else(|(e, log)| {
            panic!("engine did not start: {e}\n--- engine log ---\n{log}")
        })
    }

    /// Like [`Engine::start`], returning the error and the log instead of panicking.
    pub fn try_start(t: &Topology, args: &[&str]) -> Result<Self, (String, String)> {
        Self::try_start_as(t, &Launch::default(), args)
    }

    /// Like [`Engine::try_start`], launched as `launch` says (under `setpriv`, say).
    pub fn try_start_as(
        t: &Topology,
        launch: &Launch<'_>,
        args: &[&str],
    ) -> Result<Self, (String, String)> {
        let log = std::env::temp_dir().join(format!("xrudp-engine-{}-{}.log", t.id, nanos()));
        let f = File::create(&log).expect("creating the engine log file");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &t.ns_srv]);
        cmd.args(launch.wrapper);
        cmd.arg(xrudp_bin())
            .args(["attach", "--iface", &t.if_srv])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f);
        if let Some(dir) = launch.run_dir {
            cmd.env("XRUDP_RUN_DIR", dir);
        }
        let child = cmd.spawn().expect("spawning xrudp attach");
        let ino = netns_inode(&t.ns_srv);
        let control = launch
            .run_dir
            .map_or_else(xrudp::runtime::base_dir, Path::to_path_buf)
            .join(format!("net-{ino}"))
            .join(format!("{}.sock", t.if_srv));
        let pid = child.id();
        let mut e = Self {
            child: Some(child),
            control,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Another engine may answer on the same path: wait for this one's pid.
            if control::query(&e.control).is_ok_and(|s| s.pid == pid) {
                return Ok(e);
            }
            if let Some(status) = e.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                e.child = None;
                return Err((format!("exited with {status}"), e.log_text()));
            }
            if Instant::now() > deadline {
                return Err((
                    "control socket did not answer within 30 s".into(),
                    e.log_text(),
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The engine's control socket (reachable from any namespace).
    #[must_use]
    pub fn control_path(&self) -> PathBuf {
        self.control.clone()
    }

    /// A snapshot of the engine's figures.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        control::query(&self.control).expect("querying the engine's control socket")
    }

    /// Polls snapshots until `done` holds or `timeout` passes; returns the last one.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.snapshot();
            if done(&s) || Instant::now() > deadline {
                return s;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The engine's pid.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("engine already stopped").id()
    }

    /// Sends `sig` without waiting (e.g. `SIGSTOP`/`SIGCONT` to freeze the workers while
    /// the kernel keeps delivering into the rings).
    pub fn signal(&self, sig: Signal) {
        let child = self.child.as_ref().expect("engine already stopped");
        // `ip netns exec` execs the engine, so the child pid is the engine's pid.
        kill(
            Pid::from_raw(i32::try_from(child.id()).expect("pid fits")),
            sig,
        )
        .expect("signalling the engine");
    }

    /// Stops every thread of the engine (`SIGSTOP`) and returns once the kernel reports
    /// them all stopped. `kill` only queues the signal: a worker running on another core
    /// keeps serving until it is interrupted, and a test that loads a frozen engine must
    /// not start before then (a worker once took 2 datagrams of such a burst).
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
        let tasks = PathBuf::from(format!("/proc/{}/task", self.pid()));
        let stopped = || {
            std::fs::read_dir(&tasks).is_ok_and(|dir| {
                dir.flatten().all(|task| {
                    std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                        // The state is the field after the command name's closing ')'.
                        stat.rsplit_once(')')
                            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
                    })
                })
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !stopped() {
            assert!(
                Instant::now() < deadline,
                "the engine did not stop within 10 s of SIGSTOP"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits up to `timeout` for the engine to exit by itself; its status, or `None`
    /// (the engine is left running, and killed on drop).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().expect("engine already stopped");
            if let Some(s) = child.try_wait().expect("waiting for the engine") {
                self.child = None;
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `sig` and waits (up to 20 s) for the engine to exit.
    pub fn signal_and_wait(&mut self, sig: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("engine already stopped");
        // `ip netns exec` execs the engine, so the child pid is the engine's pid.
        kill(
            Pid::from_raw(i32::try_from(child.id()).expect("pid fits")),
            sig,
        )
        .expect("signalling the engine");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().expect("waiting for the engine") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "engine did not exit within 20 s of {sig:?}\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The engine's log so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Inode of a named namespace (/var/run/netns/NAME): the key under /run/xrudp.
#[must_use]
pub fn netns_inode(ns: &str) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/var/run/netns/{ns}"))
        .expect("namespace exists")
        .ino()
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Waits until the engine answers a UDP datagram sent to `dst` (the udp-echo app): the
/// engine's control socket answers before its workers have bound their sockets, so a
/// test that needs a serving worker probes first. Probes every 200 ms for up to 30 s,
/// then drains late probe echoes so that a caller counting echoes is not off by one.
/// Call it in the client namespace.
///
/// # Panics
/// If nothing echoes within 30 s.
pub fn wait_udp_echo(sock: &std::net::UdpSocket, dst: SocketAddr) {
    let mut buf = [0u8; 2048];
    let saved = sock.read_timeout().expect("read timeout");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        sock.send_to(b"ready?", dst).expect("send");
        if sock.recv_from(&mut buf).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine did not echo within 30 s"
        );
    }
    while sock.recv_from(&mut buf).is_ok() {}
    sock.set_read_timeout(saved).expect("timeout");
}

/// Sends `count` UDP datagrams of `size` bytes from a fresh socket in `ns` to `dst`,
/// pausing `pause` after every `burst` datagrams so no ring overflows.
pub fn send_udp(
    ns: &str,
    dst: std::net::SocketAddr,
    count: usize,
    size: usize,
    burst: usize,
    pause: Duration,
) -> io::Result<usize> {
    Topology::in_ns(ns, move || {
        let bind = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let s = std::net::UdpSocket::bind(bind)?;
        let payload = vec![0x5a; size];
        let mut sent = 0;
        for i in 0..count {
            s.send_to(&payload, dst)?;
            sent += 1;
            if burst > 0 && (i + 1) % burst == 0 {
                thread::sleep(pause);
            }
        }
        Ok(sent)
    })
}

/// Clients of one server in a [`Fleet`], as [`connect_fleet`] left them.
#[derive(Debug)]
pub struct Clients {
    /// The fleet; its clients go on running after [`connect_fleet`] returns.
    pub fleet: Fleet,
    /// Every client added, in the order added.
    pub ids: Vec<FleetId>,
    /// Time from the start of [`connect_fleet`] to each `Connected` event, in arrival order.
    pub connect_times: Vec<Duration>,
    /// Every other event seen while connecting; a refusal arrives as `Disconnected`.
    pub others: Vec<(FleetId, ClientEvent)>,
}

impl Clients {
    /// How many `Connected` events came.
    #[must_use]
    pub fn connected(&self) -> usize {
        self.connect_times.len()
    }

    /// Each client's position in [`Clients::ids`].
    #[must_use]
    pub fn index(&self) -> HashMap<FleetId, usize> {
        self.ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i))
            .collect()
    }
}

/// The end-to-end tests' connect-and-wait loop: adds `n` clients of `server` (default
/// configuration) to a new fleet, then drives it until every client has either connected
/// or been disconnected (refused, timed out), or until `timeout` has passed. Asserts
/// nothing: the caller compares [`Clients::connected`] and [`Clients::others`] with what
/// it expects. Call it in the client namespace ([`Topology::in_ns`]).
#[must_use]
pub fn connect_fleet(server: SocketAddr, n: usize, timeout: Duration) -> Clients {
    let start = Instant::now();
    let mut fleet = Fleet::new().expect("creating a client fleet");
    let ids: Vec<FleetId> = (0..n)
        .map(|_| {
            fleet
                .add(
                    server,
                    ClientConfig::default(),
                    &xrudp_client::Protection::default(),
                )
                .expect("adding a client to the fleet")
        })
        .collect();
    let mut connect_times = Vec::with_capacity(n);
    let mut others = Vec::new();
    let mut settled = HashSet::with_capacity(n);
    let deadline = start + timeout;
    while settled.len() < n && Instant::now() < deadline {
        fleet
            .drive(Duration::from_millis(5))
            .expect("driving the fleet");
        while let Some((id, ev)) = fleet.poll_event() {
            match ev {
                ClientEvent::Connected => {
                    connect_times.push(start.elapsed());
                    settled.insert(id);
                }
                ClientEvent::Disconnected { .. } => {
                    settled.insert(id);
                    others.push((id, ev));
                }
                ClientEvent::Message { .. } | ClientEvent::Draining { .. } => {
                    others.push((id, ev));
                }
            }
        }
    }
    Clients {
        fleet,
        ids,
        connect_times,
        others,
    }
}

/// Drives `fleet`, handing each event to `on`, until `on` returns true (then true) or
/// `deadline` has passed (then false). Drives at least once.
pub fn drive_until(
    fleet: &mut Fleet,
    deadline: Instant,
    mut on: impl FnMut(FleetId, ClientEvent) -> bool,
) -> bool {
    loop {
        fleet
            .drive(Duration::from_millis(5))
            .expect("driving the fleet");
        while let Some((id, ev)) = fleet.poll_event() {
            if on(id, ev) {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

/// What [`echo_rounds`] saw.
#[derive(Debug, Default)]
pub struct Echoes {
    /// Messages queued.
    pub sent: u64,
    /// Echoes received.
    pub echoed: u64,
    /// Refused sends and unexpected events.
    pub errors: Vec<String>,
}

/// Sends `rounds` rounds of one reliable message per client (the round number,
/// big-endian) on `channel`: each round in batches of `batch` clients, driving the fleet
/// for `gap` after each batch and counting echoes; then drives for up to `wait` until
/// every echo has come back.
#[must_use]
pub fn echo_rounds(
    fleet: &mut Fleet,
    ids: &[FleetId],
    channel: u8,
    rounds: u32,
    (batch, gap): (usize, Duration),
    wait: Duration,
) -> Echoes {
    let mut s = Echoes::default();
    for round in 0..rounds {
        for chunk in ids.chunks(batch.max(1)) {
            for id in chunk {
                match fleet.send(*id, channel, &round.to_be_bytes()) {
                    Ok(()) => s.sent += 1,
                    Err(e) => s.errors.push(format!("send: {e}")),
                }
            }
            drive_until(fleet, Instant::now() + gap, |_, ev| {
                match ev {
                    ClientEvent::Message { .. } => s.echoed += 1,
                    other => s.errors.push(format!("during traffic: {other:?}")),
                }
                false
            });
        }
    }
    // (`drive_until` asks its predicate per event: only wait if echoes are missing.)
    if s.echoed < s.sent {
        let expected = s.sent;
        drive_until(fleet, Instant::now() + wait, |_, ev| {
            if let ClientEvent::Message { .. } = ev {
                s.echoed += 1;
            }
            s.echoed >= expected
        });
    }
    s
}

/// The 8-byte message the end-to-end tests send: sender index and sequence number, both
/// big-endian `u32`s, so that an echo or a relayed copy says whose it is and which.
#[must_use]
pub fn tagged(client: u32, seq: u32) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&client.to_be_bytes());
    m[4..].copy_from_slice(&seq.to_be_bytes());
    m
}

/// The (sender, sequence number) of a [`tagged`] message; `None` unless it is 8 bytes.
#[must_use]
pub fn untag(d: &[u8]) -> Option<(u32, u32)> {
    let d: &[u8; 8] = d.try_into().ok()?;
    let (client, seq) = d.split_at(4);
    Some((
        u32::from_be_bytes(client.try_into().ok()?),
        u32::from_be_bytes(seq.try_into().ok()?),
    ))
}

/// Sum of one protocol figure over the engine's queues (queues without the protocol
/// count nothing).
pub fn protocol_sum(s: &Snapshot, f: impl Fn(&xrudp::telemetry::Figures) -> u64) -> u64 {
    s.queues
        .iter()
        .filter_map(|q| q.protocol.as_ref())
        .map(f)
        .sum()
}

/// The `p`th percentile (nearest rank) of `v`, sorting it; 0 when it is empty.
pub fn percentile(v: &mut [u64], p: usize) -> u64 {
    v.sort_unstable();
    if v.is_empty() {
        return 0;
    }
    v[((p * v.len()).div_ceil(100)).clamp(1, v.len()) - 1]
}
