//! Connection migration over veth, on both backends: a client (`xrudp_client::Connection`,
//! in the client namespace) streams reliable ordered messages to the echo app with
//! encryption on, and halfway through moves to a new UDP socket on a new source port
//! (`Connection::rebind`), as a NAT rebinding does. The session survives: every echo
//! arrives exactly once, in order, byte-exact; the engine admitted one connection, sent
//! at least one PATH_CHALLENGE to the new address and migrated the session once. The
//! topology has one queue, so the new port reaches the same worker (with several queues,
//! RSS may steer it to another: docs/PROTOCOL.md §5.4).

use std::time::{Duration, Instant};

use xrudp_client::{ClientConfig, ClientEvent, Connection, Protection, SendError};
use xrudp_tests::{Engine, Topology, protocol_sum, tagged};

const PORT: u16 = 7777;
const RELIABLE: u8 = 0;
const MESSAGES: u32 = 1000;
/// Bounds a hung run; this VM stalls for milliseconds, so every wait has seconds of room.
const TIMEOUT: Duration = Duration::from_secs(60);

fn a_rebound_client_keeps_its_session(backend: &str) {
    let t = Topology::new(1, true);
    let engine = Engine::start(&t, &["--port", &PORT.to_string(), "--backend", backend]);
    let server = t.srv_addr(PORT);
    let (got, ports) = Topology::in_ns(&t.ns_cli.clone(), move || {
        let mut c = Connection::connect_blocking(
            server,
            ClientConfig::default(),
            &Protection::default(),
            TIMEOUT,
        )
        .expect("connects");
        let before = c.local_addr().expect("local address").port();
        let mut after = None;
        let (mut sent, mut got) = (0, Vec::new());
        let deadline = Instant::now() + TIMEOUT;
        while got.len() < MESSAGES as usize && Instant::now() < deadline {
            while sent < MESSAGES && (after.is_some() || sent < MESSAGES / 2) {
                match c.send(RELIABLE, &tagged(0, sent)) {
                    Ok(()) => sent += 1,
                    Err(SendError::QueueFull) => break,
                    Err(e) => panic!("send: {e}"),
                }
            }
            if after.is_none() && sent == MESSAGES / 2 {
                after = Some(c.rebind().expect("rebind").port());
            }
            c.wait(Duration::from_millis(20)).expect("client I/O");
            while let Some(ev) = c.next_event() {
                match ev {
                    ClientEvent::Message { data, .. } => got.push(data),
                    ev => panic!("unexpected {ev:?}"),
                }
            }
        }
        (got, (before, after))
    });
    let want: Vec<_> = (0..MESSAGES).map(|i| tagged(0, i)).collect();
    assert_eq!(got.len(), want.len(), "every echo within {TIMEOUT:?}");
    assert_eq!(
        got, want,
        "each echo exactly once, in order, across the move"
    );
    let (before, after) = ports;
    assert_ne!(Some(before), after, "the client moved to a new source port");
    let snap = engine.wait_for(TIMEOUT, |s| protocol_sum(s, |f| f.migrated) >= 1);
    assert_eq!(protocol_sum(&snap, |f| f.migrated), 1, "migrated once");
    assert!(protocol_sum(&snap, |f| f.path_challenges) >= 1);
    assert_eq!(
        protocol_sum(&snap, |f| f.accepted),
        1,
        "the same session, not a reconnect"
    );
    assert_eq!(protocol_sum(&snap, |f| f.auth_failed), 0);
}

#[test]
fn a_rebound_client_keeps_its_session_xdp() {
    a_rebound_client_keeps_its_session("xdp");
}

#[test]
fn a_rebound_client_keeps_its_session_socket() {
    a_rebound_client_keeps_its_session("socket");
}
