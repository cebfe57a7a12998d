//! Path MTU discovery (docs/PROTOCOL.md §5.5) over veth, against the real engine and the
//! Rust client library: the engine serves with `--mtu 1472` and the client asks for 1472,
//! but the client's end of the veth pair has a link MTU of 1,400, so neither direction
//! carries the ceiling. Both ends must find what their direction carries, deliver every
//! reliable message exactly once and in order meanwhile, and when the link MTU then drops
//! to 1,280 mid-session, detect the black hole, lose nothing, and find the new size.
//!
//! What each direction carries on a plain veth pair (found out here, kernel 6.18):
//! - server → client: the engine sends full-size frames on its 1,500-byte end, and the
//!   client end drops (silently, as a black hole does) every frame longer than its MTU +
//!   the Ethernet header + 4 bytes of VLAN slack (`is_skb_forwardable`): UDP payloads up
//!   to `link MTU − 28 + 4` get through.
//! - client → server: a client that probes past 1,200 sends with `IP_PMTUDISC_PROBE`
//!   (RFC 8899 §3: probes go with DF, never fragmented), so a datagram longer than its
//!   link MTU fails at once with `EMSGSIZE`, is counted as dropped and is recovered like a
//!   loss: the client finds `link MTU − 28` on both backends. (With the kernel's default
//!   `IP_PMTUDISC_WANT` it would fragment them, and on the socket backend the server's
//!   kernel would reassemble the fragments, so the search would reach the ceiling in IP
//!   fragments.)
//!
//! Seen here (kernel 6.18): with the 1,400-byte link, client → server 1372 and server →
//! client 1376; after the drop to 1,280, 1252 and 1256, with one black hole at each end.
//!
//! Counts, not timing: each phase runs until the state it waits for is reached, under a
//! generous deadline. The engine's figures come from `xrudp stats` on a thread of its own,
//! so the client never stops polling for them (a run takes a second; a client that waited
//! for it held back its acks, and the RTTs and probe timers grew to a second on both
//! ends). Fresh namespaces; both backends. Run serially as root:
//! `cargo test -p xrudp-tests --test pmtud_e2e -- --test-threads=1`.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use xrudp_client::{ClientConfig, ClientEvent, Connection, Protection};
use xrudp_tests::{Engine, Topology, xrudp_stats};

const PORT: u16 = 7777;
/// The engine's and the client's MTU ceiling.
const CEILING: u16 = 1472;
/// The client end's link MTU at first, and after the drop.
const LINK_MTU: u16 = 1400;
const DROPPED_MTU: u16 = 1280;
/// IPv4 + UDP headers.
const HEADERS: u16 = 28;
/// The VLAN header a veth end accepts beyond its MTU.
const VLAN_SLACK: u16 = 4;
const RELIABLE: u8 = 0;
/// Message sizes in turn: small, one MTU-ish, above 1200 (only fits a larger packet),
/// and fragmented.
const SIZES: [usize; 5] = [64, 1_000, 1_300, 3_000, 200];
/// Messages in flight at most.
const WINDOW: u32 = 8;
const PHASE_DEADLINE: Duration = Duration::from_secs(90);

/// Message `seq`: its number, then a pattern that depends on it.
fn message(seq: u32) -> Vec<u8> {
    let len = SIZES[seq as usize % SIZES.len()];
    let mut m: Vec<u8> = (0..len)
        .map(|i| (seq.wrapping_mul(31) as usize + i * 7) as u8)
        .collect();
    m[..4].copy_from_slice(&seq.to_be_bytes());
    m
}

/// One client streaming reliable-ordered messages through the echo server.
struct Echo {
    conn: Connection,
    next_send: u32,
    next_recv: u32,
}

impl Echo {
    /// Sends and checks echoes until `done` holds or the phase deadline passes (and
    /// fails). `done` is asked every round and must not block (the server's figures come
    /// from a [`ServerWatch`]); when it does not hold yet it says where things stand, for
    /// the failure message.
    fn until(&mut self, what: &str, mut done: impl FnMut(&Connection) -> Result<(), String>) {
        let deadline = Instant::now() + PHASE_DEADLINE;
        loop {
            let state = match done(&self.conn) {
                Ok(()) => return,
                Err(state) => state,
            };
            assert!(
                Instant::now() < deadline,
                "{what}: not reached in {PHASE_DEADLINE:?} ({} echoes; last seen: {state}; \
                 client {:?}, {:?})",
                self.next_recv,
                self.conn.connection_stats(),
                self.conn.stats()
            );
            self.pump(true);
        }
    }

    /// One round: sends up to the window (if `send`), waits for traffic, checks echoes.
    fn pump(&mut self, send: bool) {
        while send && self.next_send - self.next_recv < WINDOW {
            self.conn
                .send(RELIABLE, &message(self.next_send))
                .expect("send");
            self.next_send += 1;
        }
        self.conn.poll().expect("poll");
        self.conn.wait(Duration::from_millis(20)).expect("wait");
        while let Some(ev) = self.conn.next_event() {
            match ev {
                ClientEvent::Message { channel, data } => {
                    assert!(
                        self.next_recv < self.next_send,
                        "an echo nobody asked for after {}",
                        self.next_recv
                    );
                    assert_eq!(channel, RELIABLE);
                    assert!(
                        data == message(self.next_recv),
                        "echo {} is not message {} (duplicate, out of order or corrupt): {:?}",
                        self.next_recv,
                        self.next_recv,
                        &data[..data.len().min(8)]
                    );
                    self.next_recv += 1;
                    self.conn.recycle(data);
                }
                other => panic!("unexpected event {other:?} after {} echoes", self.next_recv),
            }
        }
    }

    /// Stops sending and waits until every message sent has come back.
    fn settle(&mut self) {
        let deadline = Instant::now() + PHASE_DEADLINE;
        while self.next_recv < self.next_send {
            assert!(
                Instant::now() < deadline,
                "{} of {} echoes",
                self.next_recv,
                self.next_send
            );
            self.pump(false);
        }
    }

    fn mtu(&self) -> u16 {
        client_mtu(&self.conn)
    }
}

/// The MTU the client sends with now.
fn client_mtu(c: &Connection) -> u16 {
    c.connection_stats().expect("connected").mtu
}

/// The server's figures for its one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ServerSide {
    /// Its path MTU; 0 until the engine publishes the connection's row (every 100 ms).
    mtu: u16,
    black_holes: u64,
    probes: u64,
    srtt_us: u64,
}

fn server_side(iface: &str) -> ServerSide {
    let json = |extra: &[&str]| -> serde_json::Value {
        let args = [&["--iface", iface, "--json"][..], extra].concat();
        serde_json::from_slice(&xrudp_stats(&args)).expect("xrudp stats --json prints JSON")
    };
    let conns = json(&["--connections"]);
    let rows = conns[0]["connections"].as_array().expect("connections");
    assert!(rows.len() <= 1, "one connection at most: {conns}");
    let field = |name: &str| rows.first().map_or(0, |r| r[name].as_u64().expect(name));
    // Without --watch this takes a second: its rates cover one.
    let report = json(&[]);
    let p = &report[0]["totals"]["protocol"];
    ServerSide {
        mtu: u16::try_from(field("mtu")).expect("an MTU"),
        black_holes: p["pmtu_black_holes"].as_u64().expect("pmtu_black_holes"),
        probes: p["pmtu_probes"].as_u64().expect("pmtu_probes"),
        srtt_us: field("srtt_us"),
    }
}

/// [`server_side`] over and over on a thread of its own. `xrudp stats` takes a second,
/// and a client that stopped polling for it would hold back its acknowledgements, inflate
/// both ends' RTT and probe timers, and slow the very search the test waits for.
struct ServerWatch {
    latest: Arc<Mutex<ServerSide>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ServerWatch {
    fn start(iface: &str) -> Self {
        let latest: Arc<Mutex<ServerSide>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (latest, stop, iface) = (Arc::clone(&latest), Arc::clone(&stop), iface.to_owned());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let s = server_side(&iface);
                    *latest.lock().expect("not poisoned") = s;
                }
            })
        };
        Self {
            latest,
            stop,
            thread: Some(thread),
        }
    }

    /// The figures of the last `xrudp stats` run that finished (all 0 before the first).
    fn latest(&self) -> ServerSide {
        assert!(
            !self
                .thread
                .as_ref()
                .is_some_and(thread::JoinHandle::is_finished),
            "the xrudp stats thread died"
        );
        *self.latest.lock().expect("not poisoned")
    }
}

impl Drop for ServerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
            && !thread::panicking()
        {
            panic!("the xrudp stats thread panicked");
        }
    }
}

/// Sets the link MTU of interface `dev` in namespace `ns`.
fn set_link_mtu(ns: &str, dev: &str, mtu: u16) {
    let mtu_arg = mtu.to_string();
    let out = Topology::exec(ns, &["ip", "link", "set", "dev", dev, "mtu", &mtu_arg]);
    assert!(
        out.status.success(),
        "ip link set mtu {mtu}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn discovers_and_survives_a_drop(backend: &str) {
    let t = Topology::new(1, true);
    set_link_mtu(&t.ns_cli, &t.if_cli, LINK_MTU);
    let _engine = Engine::start(
        &t,
        &[
            "--port",
            &PORT.to_string(),
            "--backend",
            backend,
            "--mtu",
            &CEILING.to_string(),
        ],
    );
    let server: SocketAddr = t.srv_addr(PORT);
    // What each direction carries, before and after the drop (module docs).
    let to_client = |link: u16| link - HEADERS + VLAN_SLACK;
    let to_server = |link: u16| link - HEADERS;
    let (ns, iface, if_cli) = (t.ns_cli.clone(), t.if_srv.clone(), t.if_cli.clone());
    let backend = backend.to_owned();
    Topology::in_ns(&ns.clone(), move || {
        let mut config = ClientConfig::default();
        config.transport.mtu = CEILING.into();
        config.transport.pmtud = true;
        let conn = Connection::connect_blocking(
            server,
            config,
            &Protection::default(),
            Duration::from_secs(30),
        )
        .expect("the client connects");
        let mut e = Echo {
            conn,
            next_send: 0,
            next_recv: 0,
        };
        assert_eq!(e.mtu(), 1200, "a connection starts at the base");

        let watch = ServerWatch::start(&iface);
        // Discovery: both ends settle on what their direction carries.
        e.until("discovery", |c| {
            let (client, server) = (client_mtu(c), watch.latest());
            if client == to_server(LINK_MTU) && server.mtu == to_client(LINK_MTU) {
                Ok(())
            } else {
                Err(format!("client→server {client}, server {server:?}"))
            }
        });
        let server = watch.latest();
        let found_at = e.next_recv;
        eprintln!(
            "{backend}: found client→server {} and server→client {} after {found_at} echoes; \
             probes client {} server {}",
            e.mtu(),
            server.mtu,
            e.conn.stats().pmtu_probes,
            server.probes
        );
        assert_eq!(
            (e.conn.stats().pmtu_black_holes, server.black_holes),
            (0, 0),
            "no black hole before the drop"
        );
        assert!(e.conn.stats().pmtu_probes > 0 && server.probes > 0);

        // The link MTU drops mid-session: larger packets vanish without notice.
        set_link_mtu(&ns, &if_cli, DROPPED_MTU);
        let holes = |c: &Connection| c.stats().pmtu_black_holes;
        e.until("black hole and rediscovery", |c| {
            let server = watch.latest();
            let client_done = holes(c) >= 1 && client_mtu(c) == to_server(DROPPED_MTU);
            if client_done && server.black_holes >= 1 && server.mtu == to_client(DROPPED_MTU) {
                Ok(())
            } else {
                Err(format!(
                    "client→server {} ({} black holes), server {server:?}",
                    client_mtu(c),
                    holes(c)
                ))
            }
        });
        e.settle();
        let server = watch.latest();
        eprintln!(
            "{backend}: after the drop to {DROPPED_MTU}: client→server {} ({} black holes), \
             server→client {} ({} black holes); {} messages echoed, {} after discovery",
            e.mtu(),
            holes(&e.conn),
            server.mtu,
            server.black_holes,
            e.next_recv,
            e.next_recv - found_at
        );
        // Every message came back exactly once and in order (checked echo by echo), none
        // is missing, and the connection is still up.
        assert_eq!(e.next_recv, e.next_send);
        assert!(e.next_recv > found_at, "traffic continued through the drop");
        e.conn.disconnect(0).expect("disconnect");
    });
}

#[test]
fn pmtud_over_veth_xdp() {
    discovers_and_survives_a_drop("xdp");
}

#[test]
fn pmtud_over_veth_socket() {
    discovers_and_survives_a_drop("socket");
}
