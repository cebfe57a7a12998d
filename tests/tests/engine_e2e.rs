//! The product end to end, on both backends: RUDP clients (the client library, kernel
//! sockets in the client namespace) against `xrudp attach` in the server namespace.
//! Every test runs once with `--backend xdp` and once with `--backend socket`.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use xrudp::telemetry::Snapshot;
use xrudp_client::FleetId;
use xrudp_proto::{ClientEvent, DisconnectReason, RejectReason};
use xrudp_tests::{
    Clients, Engine, Topology, connect_fleet, drive_until, percentile, protocol_sum, tagged, untag,
};

const PORT: u16 = 7777;
const RELIABLE: u8 = 0;
const UNRELIABLE: u8 = 2;

/// Each client holds a socket: lift the soft descriptor limit to the hard one (raising
/// the hard limit needs CAP_SYS_RESOURCE, which this machine does not grant).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        hard >= 2_000,
        "RLIMIT_NOFILE hard limit {hard} is below the 2,000 sockets these tests open"
    );
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raising the soft RLIMIT_NOFILE");
    }
}

/// What one client thread saw.
#[derive(Debug, Default)]
struct EchoReport {
    connected: usize,
    reliable_ok: usize,
    unreliable_back: usize,
    errors: Vec<String>,
    connect_us: Vec<u64>,
    rtt_us: Vec<u64>,
}

/// `clients` connections in one fleet: each sends `n` reliable-ordered and `n`
/// unreliable messages to the echo app and checks what comes back.
fn echo_clients(server: SocketAddr, clients: usize, n: u32) -> EchoReport {
    let mut r = EchoReport::default();
    let c = connect_fleet(server, clients, Duration::from_secs(60));
    let index = c.index();
    let Clients {
        mut fleet,
        ids,
        connect_times,
        others,
    } = c;
    r.connected = connect_times.len();
    r.connect_us = connect_times.iter().map(|d| d.as_micros() as u64).collect();
    for (id, ev) in others {
        if let ClientEvent::Disconnected { reason } = ev {
            r.errors.push(format!(
                "client {} disconnected while connecting: {reason:?}",
                index[&id]
            ));
        }
    }
    if r.connected < clients {
        r.errors.push(format!(
            "{} of {clients} connected within 60 s",
            r.connected
        ));
        return r;
    }
    // Messages: [client u32][seq u32], sent one round of all clients at a time.
    let mut next_reliable = vec![0u32; clients];
    let mut unreliable_seen: Vec<Vec<bool>> = vec![vec![false; n as usize]; clients];
    let mut sent_at: HashMap<(usize, u32), Instant> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut st = EchoState {
        index: &index,
        next_reliable: &mut next_reliable,
        unreliable_seen: &mut unreliable_seen,
        sent_at: &mut sent_at,
    };
    for seq in 0..n {
        for (c, id) in ids.iter().enumerate() {
            let msg = tagged(c as u32, seq);
            st.sent_at.insert((c, seq), Instant::now());
            if let Err(e) = fleet.send(*id, RELIABLE, &msg) {
                r.errors
                    .push(format!("client {c}: reliable send {seq}: {e}"));
            }
            if let Err(e) = fleet.send(*id, UNRELIABLE, &msg) {
                r.errors
                    .push(format!("client {c}: unreliable send {seq}: {e}"));
            }
        }
        // Pace: let this round out before the next.
        let until = Instant::now() + Duration::from_millis(20);
        drive_until(&mut fleet, until, |id, ev| {
            st.on(&mut r, id, ev);
            false
        });
    }
    let want = clients * n as usize;
    if r.reliable_ok < want {
        let mut ok = r.reliable_ok;
        drive_until(&mut fleet, deadline, |id, ev| {
            st.on(&mut r, id, ev);
            ok = r.reliable_ok;
            ok >= want
        });
    }
    if r.reliable_ok != want {
        r.errors.push(format!(
            "{} of {want} reliable echoes came back",
            r.reliable_ok
        ));
    }
    for id in &ids {
        fleet.disconnect(*id, 0);
    }
    // Let the disconnect notices out.
    let _ = drive_until(
        &mut fleet,
        Instant::now() + Duration::from_millis(500),
        |_, _| false,
    );
    r
}

struct EchoState<'a> {
    index: &'a HashMap<FleetId, usize>,
    next_reliable: &'a mut [u32],
    unreliable_seen: &'a mut [Vec<bool>],
    sent_at: &'a mut HashMap<(usize, u32), Instant>,
}

impl EchoState<'_> {
    fn on(&mut self, r: &mut EchoReport, id: FleetId, ev: ClientEvent) {
        let c = self.index[&id];
        match ev {
            ClientEvent::Message { channel, data } => {
                let Some((who, seq)) = untag(&data) else {
                    r.errors
                        .push(format!("client {c}: malformed echo {data:?}"));
                    return;
                };
                if who as usize != c {
                    r.errors
                        .push(format!("client {c}: got client {who}'s message"));
                } else if channel == RELIABLE {
                    if seq != self.next_reliable[c] {
                        r.errors.push(format!(
                            "client {c}: reliable seq {seq}, expected {}",
                            self.next_reliable[c]
                        ));
                    }
                    self.next_reliable[c] = seq + 1;
                    r.reliable_ok += 1;
                    if let Some(t) = self.sent_at.remove(&(c, seq)) {
                        r.rtt_us.push(t.elapsed().as_micros() as u64);
                    }
                } else if channel == UNRELIABLE {
                    match self.unreliable_seen[c].get_mut(seq as usize) {
                        Some(seen @ false) => {
                            *seen = true;
                            r.unreliable_back += 1;
                        }
                        Some(true) => r.errors.push(format!("client {c}: unreliable {seq} twice")),
                        None => r
                            .errors
                            .push(format!("client {c}: unreliable seq {seq} never sent")),
                    }
                }
            }
            ClientEvent::Disconnected { reason } => r
                .errors
                .push(format!("client {c} disconnected: {reason:?}")),
            ClientEvent::Draining { .. } => r.errors.push(format!("client {c}: drain notice")),
            ClientEvent::Connected => {}
        }
    }
}

fn thousand_clients_echo(backend: &str) {
    raise_fd_limit();
    let t = Topology::new(2, true);
    let engine = Engine::start(
        &t,
        &[
            "--port",
            &PORT.to_string(),
            "--app",
            "echo",
            "--backend",
            backend,
        ],
    );
    let server = t.srv_addr(PORT);
    let threads = 4;
    let per = 250;
    let n = 5;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let ns = t.ns_cli.clone();
            std::thread::spawn(move || Topology::in_ns(&ns, move || echo_clients(server, per, n)))
        })
        .collect();
    let reports: Vec<EchoReport> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread"))
        .collect();
    let errors: Vec<&String> = reports.iter().flat_map(|r| &r.errors).collect();
    assert!(
        errors.is_empty(),
        "{backend}: {} problems, first: {:?}\n{}",
        errors.len(),
        &errors[..errors.len().min(10)],
        engine.log_text()
    );
    let connected: usize = reports.iter().map(|r| r.connected).sum();
    let reliable: usize = reports.iter().map(|r| r.reliable_ok).sum();
    let unreliable: usize = reports.iter().map(|r| r.unreliable_back).sum();
    assert_eq!(connected, threads * per);
    assert_eq!(reliable, threads * per * n as usize);
    let mut connect: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.connect_us.iter().copied())
        .collect();
    let mut rtt: Vec<u64> = reports
        .iter()
        .flat_map(|r| r.rtt_us.iter().copied())
        .collect();
    eprintln!(
        "[{backend}] 1000 clients: handshake p50 {} us p99 {} us (from fleet start); echo RTT p50 {} us p99 {} us; unreliable back {unreliable}/{}",
        percentile(&mut connect, 50),
        percentile(&mut connect, 99),
        percentile(&mut rtt, 50),
        percentile(&mut rtt, 99),
        threads * per * n as usize
    );
    let snap = engine.wait_for(Duration::from_secs(20), |s| {
        protocol_sum(s, |f| f.connections) == 0
    });
    assert_eq!(
        protocol_sum(&snap, |f| f.connections),
        0,
        "{backend}: the connection table empties after the disconnects"
    );
    assert_eq!(protocol_sum(&snap, |f| f.accepted), (threads * per) as u64);
    assert!(protocol_sum(&snap, |f| f.messages_in) >= reliable as u64);
}

#[test]
fn thousand_clients_echo_xdp() {
    thousand_clients_echo("xdp");
}

#[test]
fn thousand_clients_echo_socket() {
    thousand_clients_echo("socket");
}

fn relay_rooms(backend: &str) {
    raise_fd_limit();
    let t = Topology::new(2, true);
    let engine = Engine::start(
        &t,
        &[
            "--port",
            &PORT.to_string(),
            "--app",
            "relay",
            "--backend",
            backend,
        ],
    );
    let server = t.srv_addr(PORT);
    let rooms = 6u32;
    let size = 8usize;
    let n = 20u32;
    let control = engine.control_path();
    let members = u64::from(rooms) * size as u64;
    let (fleet, ids, index) = Topology::in_ns(&t.ns_cli.clone(), move || {
        let total = rooms as usize * size;
        let c = connect_fleet(server, total, Duration::from_secs(60));
        assert_eq!(c.connected(), total, "relay clients did not all connect");
        let index = c.index();
        let Clients { mut fleet, ids, .. } = c;
        for (i, id) in ids.iter().enumerate() {
            let mut join = b"JOIN".to_vec();
            join.extend_from_slice(&((i / size) as u32).to_be_bytes());
            fleet.send(*id, RELIABLE, &join).expect("join");
        }
        // Everyone is in a room before anyone talks: keep driving until the engine's
        // figures count every member.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut joined = 0;
        while joined != members && Instant::now() < deadline {
            fleet.drive(Duration::from_millis(10)).expect("drive");
            if let Ok(s) = xrudp::control::query(&control) {
                joined = protocol_sum(&s, |f| f.relay_members);
            }
        }
        assert_eq!(joined, members, "all members joined");
        (fleet, ids, index)
    });
    let errors = Topology::in_ns(&t.ns_cli.clone(), move || {
        let mut fleet = fleet;
        let total = ids.len();
        let mut errors = Vec::new();
        // next[receiver][sender] = next expected seq
        let mut next = vec![vec![0u32; total]; total];
        let mut got = 0usize;
        let want = total * (size - 1) * n as usize;
        for seq in 0..n {
            for (i, id) in ids.iter().enumerate() {
                fleet
                    .send(*id, RELIABLE, &tagged(i as u32, seq))
                    .expect("send");
            }
            let _ = drive_until(
                &mut fleet,
                Instant::now() + Duration::from_millis(10),
                |id, ev| {
                    on_relay(&index, size, &mut next, &mut got, &mut errors, id, ev);
                    false
                },
            );
        }
        drive_until(
            &mut fleet,
            Instant::now() + Duration::from_secs(60),
            |id, ev| {
                on_relay(&index, size, &mut next, &mut got, &mut errors, id, ev);
                got >= want
            },
        );
        if got != want {
            errors.push(format!("{got} of {want} relayed messages arrived"));
        }
        errors
    });
    assert!(
        errors.is_empty(),
        "{backend}: {:?}",
        &errors[..errors.len().min(10)]
    );
    let want_relayed = u64::from(rooms) * (size * (size - 1)) as u64 * u64::from(n);
    let snap = engine.wait_for(Duration::from_secs(5), |s| {
        protocol_sum(s, |f| f.relayed) >= want_relayed
    });
    assert_eq!(
        protocol_sum(&snap, |f| f.relayed),
        u64::from(rooms) * (size * (size - 1)) as u64 * u64::from(n)
    );
}

fn on_relay(
    index: &HashMap<FleetId, usize>,
    size: usize,
    next: &mut [Vec<u32>],
    got: &mut usize,
    errors: &mut Vec<String>,
    id: FleetId,
    ev: ClientEvent,
) {
    let me = index[&id];
    match ev {
        ClientEvent::Message {
            channel: RELIABLE,
            data,
        } => match untag(&data) {
            Some((from, seq)) => {
                let from = from as usize;
                if from / size != me / size || from == me {
                    errors.push(format!(
                        "client {me} got a message from client {from} of another room"
                    ));
                } else if next[me][from] != seq {
                    errors.push(format!(
                        "client {me}: from {from} seq {seq}, expected {}",
                        next[me][from]
                    ));
                } else {
                    next[me][from] = seq + 1;
                    *got += 1;
                }
            }
            None => errors.push(format!("client {me}: malformed {data:?}")),
        },
        ClientEvent::Disconnected { reason } => {
            errors.push(format!("client {me} disconnected: {reason:?}"));
        }
        _ => {}
    }
}

#[test]
fn relay_rooms_xdp() {
    relay_rooms("xdp");
}

#[test]
fn relay_rooms_socket() {
    relay_rooms("socket");
}

fn idle_timeout_and_max_connections(backend: &str) {
    let t = Topology::new(1, true);
    let engine = Engine::start(
        &t,
        &[
            "--port",
            &PORT.to_string(),
            "--backend",
            backend,
            "--workers",
            "1",
            "--max-connections",
            "4",
            "--idle-timeout",
            "1",
        ],
    );
    let server = t.srv_addr(PORT);
    // Six clients for four slots: four connect, two are refused as server full.
    let (connected, full) = Topology::in_ns(&t.ns_cli.clone(), move || {
        let c = connect_fleet(server, 6, Duration::from_secs(30));
        let full = c
            .others
            .iter()
            .filter(|(_, ev)| {
                matches!(
                    ev,
                    ClientEvent::Disconnected {
                        reason: DisconnectReason::Rejected(RejectReason::ServerFull),
                    }
                )
            })
            .count();
        // Vanish without a goodbye: the fleet (and its sockets) is dropped here.
        (c.connected(), full)
    });
    assert_eq!(
        (connected, full),
        (4, 2),
        "{backend}: 4 admitted, 2 refused as full"
    );
    let full_of =
        |s: &Snapshot| protocol_sum(s, |f| f.rejected.get("server_full").copied().unwrap_or(0));
    let snap = engine.wait_for(Duration::from_secs(10), |s| full_of(s) == 2);
    assert_eq!(
        full_of(&snap),
        2,
        "{backend}: both refusals counted as server_full"
    );
    // The vanished clients time out and free their slots...
    let snap = engine.wait_for(Duration::from_secs(30), |s| {
        protocol_sum(s, |f| f.timed_out) >= 4 && protocol_sum(s, |f| f.connections) == 0
    });
    assert_eq!(
        protocol_sum(&snap, |f| f.connections),
        0,
        "{backend}: idle clients timed out"
    );
    assert_eq!(protocol_sum(&snap, |f| f.timed_out), 4);
    // ...which new clients reuse.
    let again = Topology::in_ns(&t.ns_cli.clone(), move || {
        connect_fleet(server, 4, Duration::from_secs(30)).connected()
    });
    assert_eq!(again, 4, "{backend}: freed slots are reused");
}

#[test]
fn idle_timeout_and_max_connections_xdp() {
    idle_timeout_and_max_connections("xdp");
}

#[test]
fn idle_timeout_and_max_connections_socket() {
    idle_timeout_and_max_connections("socket");
}

/// Game code embedding the engine stops polling for a while: the workers keep serving
/// (the handshake and protocol keep running), report backpressure, and once the game
/// catches up every reliable message is delivered exactly once, in order.
fn app_falls_behind(backend: xrudp::engine::Backend) {
    use std::sync::{Arc, atomic::AtomicBool};
    let t = Topology::new(1, true);
    let iface = t.if_srv.clone();
    let ns = t.ns_srv.clone();
    let go = Arc::new(AtomicBool::new(false));
    let go2 = Arc::clone(&go);
    let done = Arc::new(AtomicBool::new(false));
    let done2 = Arc::clone(&done);
    let clients = 20usize;
    let n = 200u32;
    let want = clients * n as usize;
    // The game thread: starts the server in the server namespace, sleeps until told,
    // then drains everything and echoes it back.
    // Readiness: the game thread says when `GameServer::start` has returned (its sockets
    // are bound and, on AF_XDP, the program attached), instead of a fixed sleep.
    let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
    let game = std::thread::spawn(move || {
        Topology::in_ns(&ns, move || {
            let mut opts = xrudp::api::ServerOptions::new(&iface, PORT);
            opts.engine.backend = backend;
            opts.engine.workers = Some(1);
            opts.queue_capacity = 8;
            let server =
                xrudp::api::GameServer::start(&opts).expect("starting the embedded server");
            ready_tx.send(()).expect("the test waits for readiness");
            while !go2.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
            }
            // Every client is connected and waiting: each has a quality row, and each
            // row's ConnId finds the same connection again.
            let rows = server.connections();
            let found: Vec<_> = rows
                .iter()
                .map(|(id, r)| {
                    server
                        .connection(*id)
                        .map(|again| (r.conn_id, again.conn_id, r.peer, again.peer))
                })
                .collect();
            let mut next: HashMap<u32, u32> = HashMap::new();
            let mut got = 0usize;
            let mut errors = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            while got < want && Instant::now() < deadline {
                let Some(ev) = server.poll_event() else {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                };
                if let xrudp::api::Event::Message {
                    conn,
                    channel: RELIABLE,
                    data,
                } = ev
                {
                    let Some((who, seq)) = untag(&data) else {
                        continue;
                    };
                    let e = next.entry(who).or_insert(0);
                    if *e != seq {
                        errors.push(format!("client {who}: seq {seq}, expected {e}"));
                    }
                    *e = seq + 1;
                    got += 1;
                    let mut data = data;
                    while let Err(xrudp::api::Backpressure(back)) =
                        server.send(conn, RELIABLE, data)
                    {
                        data = back.expect("the message comes back");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
            // Keep serving until the clients have every echo (or give up).
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done2.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let stats = server.stats().expect("stats");
            server.shutdown();
            (got, errors, stats, rows.len(), found)
        })
    });
    if ready.recv_timeout(Duration::from_secs(60)).is_err() {
        assert!(
            game.is_finished(),
            "GameServer::start did not return within 60 s"
        );
        // The game thread panicked (start failed): show why.
        match game.join() {
            Err(e) => std::panic::resume_unwind(e),
            Ok(_) => panic!("the game thread ended without starting the server"),
        }
    }
    let server = t.srv_addr(PORT);
    let echoed = Topology::in_ns(&t.ns_cli.clone(), move || {
        let c = connect_fleet(server, clients, Duration::from_secs(30));
        assert_eq!(
            c.connected(),
            clients,
            "clients connect while the game thread sleeps"
        );
        let Clients { mut fleet, ids, .. } = c;
        for seq in 0..n {
            for (i, id) in ids.iter().enumerate() {
                fleet
                    .send(*id, RELIABLE, &tagged(i as u32, seq))
                    .expect("send");
            }
            drive_until(
                &mut fleet,
                Instant::now() + Duration::from_millis(2),
                |_, _| false,
            );
        }
        // Keep the connections alive while the game sleeps, then let it catch up.
        drive_until(
            &mut fleet,
            Instant::now() + Duration::from_secs(1),
            |_, _| false,
        );
        go.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut back = 0;
        drive_until(
            &mut fleet,
            Instant::now() + Duration::from_secs(60),
            |_, ev| {
                back += usize::from(matches!(ev, ClientEvent::Message { .. }));
                back == want
            },
        );
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        back
    });
    let (got, errors, stats, rows, found) = game.join().expect("game thread");
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        rows, clients,
        "GameServer::connections has a row per client"
    );
    let ids: std::collections::HashSet<u32> = found.iter().flatten().map(|f| f.0).collect();
    assert_eq!(ids.len(), clients, "distinct connection ids");
    for f in &found {
        let (id, again, peer, peer_again) = f.expect("GameServer::connection finds each row");
        assert_eq!((id, peer), (again, peer_again));
    }
    assert_eq!(got, want, "the game received every reliable message");
    assert_eq!(echoed, want, "every echo reached its client");
    let backpressure = protocol_sum(&stats, |f| f.backpressure_rounds);
    assert!(
        backpressure > 0,
        "backpressure was reported while the game slept"
    );
}

#[test]
fn app_falls_behind_xdp() {
    app_falls_behind(xrudp::engine::Backend::Xdp);
}

#[test]
fn app_falls_behind_socket() {
    app_falls_behind(xrudp::engine::Backend::Socket);
}
