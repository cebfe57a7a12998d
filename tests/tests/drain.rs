//! `xrudp drain` over veth in fresh namespaces, with 1,000 clients: every client gets the
//! drain notice with the redirect address; every reliable message a client sent before
//! its notice (they keep sending until it arrives) is echoed back, in order; the engine
//! admits no new client meanwhile, and exits 0 once the last client has left; `xrudp
//! drain` waits for that and exits 0 too. Assertions are on counts and contents; the
//! timeouts only bound a hung run.

use std::{
    net::SocketAddr,
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

use xrudp_client::{ClientConfig, ClientEvent, Fleet, Protection};
use xrudp_proto::{DisconnectReason, RejectReason};
use xrudp_tests::{Engine, Topology, connect_fleet, drive_until, echo_rounds, xrudp_bin};

const PORT: u16 = 7777;
const CLIENTS: usize = 1_000;
const RELIABLE: u8 = 0;

/// What the clients saw.
#[derive(Debug, Default)]
struct Seen {
    connected: usize,
    warmup_sent: u64,
    warmup_echoed: u64,
    /// Messages sent between the drain request and each client's notice.
    sent: u64,
    echoed: u64,
    notices: Vec<Option<SocketAddr>>,
    late_client: Option<ClientEvent>,
    errors: Vec<String>,
}

#[test]
fn a_thousand_clients_get_the_notice_and_lose_nothing_then_the_engine_exits_0() {
    let t = Topology::new(1, true);
    let mut engine = Engine::start(
        &t,
        &["--port", &PORT.to_string(), "--max-connections", "2000"],
    );
    let server = t.srv_addr(PORT);
    let redirect: SocketAddr = format!("{}:{}", t.ip_srv, PORT + 1)
        .parse()
        .expect("an address");
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (drain_tx, drain_rx) = mpsc::channel::<()>();
    let ns_cli = t.ns_cli.clone();
    let clients = std::thread::spawn(move || {
        Topology::in_ns(&ns_cli, move || clients(server, &ready_tx, &drain_rx))
    });
    ready_rx
        .recv_timeout(Duration::from_secs(180))
        .expect("the clients connected and warmed up");
    let drain = Command::new("ip")
        .args(["netns", "exec", &t.ns_srv])
        .arg(xrudp_bin())
        .args(["drain", "--iface", &t.if_srv, "--deadline", "120"])
        .args(["--redirect", &redirect.to_string()])
        .spawn()
        .expect("running xrudp drain");
    let _ = drain_tx.send(());
    let seen = clients.join().expect("the client thread");
    let drain = drain.wait_with_output().expect("xrudp drain");
    let status = engine.wait_exit(Duration::from_secs(60));

    assert!(
        seen.errors.is_empty(),
        "{:?}",
        &seen.errors[..seen.errors.len().min(10)]
    );
    assert_eq!(seen.connected, CLIENTS, "{}", engine.log_text());
    assert_eq!(seen.warmup_echoed, seen.warmup_sent);
    assert_eq!(
        seen.notices.len(),
        CLIENTS,
        "every client got the notice, once"
    );
    assert!(
        seen.notices.iter().all(|r| *r == Some(redirect)),
        "every notice names {redirect}"
    );
    assert!(
        seen.sent >= CLIENTS as u64,
        "each client sent before its notice"
    );
    assert_eq!(
        seen.echoed, seen.sent,
        "no reliable message sent before the notice is lost"
    );
    assert!(
        matches!(
            seen.late_client,
            Some(ClientEvent::Disconnected {
                reason: DisconnectReason::Rejected(RejectReason::ServerFull)
            })
        ),
        "a draining engine admits no one: {:?}",
        seen.late_client
    );
    assert!(drain.status.success(), "xrudp drain: {}", drain.status);
    let status = status.unwrap_or_else(|| panic!("the engine did not exit\n{}", engine.log_text()));
    assert!(
        status.success(),
        "engine exit {status}\n{}",
        engine.log_text()
    );
    assert!(
        engine
            .log_text()
            .contains("drained: the last connection has ended")
    );
    assert_eq!(t.srv_xdp_detached_within(Duration::from_secs(10)), 0);
}

/// The client side, in the client namespace.
fn clients(server: SocketAddr, ready: &mpsc::Sender<()>, drain: &mpsc::Receiver<()>) -> Seen {
    let mut s = Seen::default();
    let mut c = connect_fleet(server, CLIENTS, Duration::from_secs(120));
    s.connected = c.connected();
    let ids = c.ids.clone();
    let index = c.index();
    let fleet = &mut c.fleet;
    // Warm up: five rounds, paced like a game tick.
    let e = echo_rounds(
        fleet,
        &ids,
        RELIABLE,
        5,
        (50, Duration::from_micros(2_500)),
        Duration::from_secs(60),
    );
    (s.warmup_sent, s.warmup_echoed) = (e.sent, e.echoed);
    s.errors.extend(e.errors);
    let _ = ready.send(());
    let _ = drain.recv_timeout(Duration::from_secs(30));
    // Every client keeps sending one reliable message per round until its notice comes.
    let mut notified = vec![false; CLIENTS];
    let mut next = vec![0u32; CLIENTS];
    let mut expect = vec![0u32; CLIENTS];
    let deadline = Instant::now() + Duration::from_secs(90);
    while notified.iter().any(|n| !n) && Instant::now() < deadline {
        for (i, id) in ids.iter().enumerate() {
            if !notified[i] {
                let mut m = [i.to_be_bytes()[7], 0xd0, 0, 0, 0, 0];
                m[2..].copy_from_slice(&next[i].to_be_bytes());
                match fleet.send(*id, RELIABLE, &m) {
                    Ok(()) => {
                        next[i] += 1;
                        s.sent += 1;
                    }
                    Err(e) => s.errors.push(format!("client {i}: send: {e}")),
                }
            }
        }
        drive_until(
            fleet,
            Instant::now() + Duration::from_millis(20),
            |id, ev| {
                on_event(&mut s, index[&id], ev, &mut notified, &mut expect);
                false
            },
        );
    }
    // The rest of the echoes.
    let deadline = Instant::now() + Duration::from_secs(60);
    drive_until(fleet, deadline, |id, ev| {
        on_event(&mut s, index[&id], ev, &mut notified, &mut expect);
        s.echoed >= s.sent
    });
    // A newcomer is refused while the engine drains.
    let mut late = Fleet::new().expect("a fleet");
    let _ = late
        .add(server, ClientConfig::default(), &Protection::default())
        .expect("adding a client");
    drive_until(
        &mut late,
        Instant::now() + Duration::from_secs(30),
        |_, ev| {
            let done = matches!(
                ev,
                ClientEvent::Disconnected { .. } | ClientEvent::Connected
            );
            s.late_client = Some(ev);
            done
        },
    );
    // Everyone leaves, as a game client does when told to; the engine then exits.
    for id in &ids {
        fleet.disconnect(*id, 0);
    }
    drive_until(fleet, Instant::now() + Duration::from_secs(5), |_, _| false);
    s
}

fn on_event(s: &mut Seen, i: usize, ev: ClientEvent, notified: &mut [bool], expect: &mut [u32]) {
    match ev {
        ClientEvent::Draining { redirect } => {
            if notified[i] {
                s.errors.push(format!("client {i}: a second notice"));
            }
            notified[i] = true;
            s.notices.push(redirect);
        }
        ClientEvent::Message { data, .. } => {
            // Warm-up echoes are 4 bytes; the drain phase's are 6, tagged 0xd0.
            if data.len() == 6 && data[1] == 0xd0 {
                let seq = u32::from_be_bytes(data[2..6].try_into().expect("4 bytes"));
                if data[0] != i.to_be_bytes()[7] || seq != expect[i] {
                    s.errors.push(format!(
                        "client {i}: echo {data:?}, expected seq {}",
                        expect[i]
                    ));
                }
                expect[i] = seq + 1;
                s.echoed += 1;
            }
        }
        ClientEvent::Disconnected { reason } => {
            s.errors.push(format!(
                "client {i} disconnected while draining: {reason:?}"
            ));
        }
        ClientEvent::Connected => {}
    }
}
