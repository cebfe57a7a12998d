//! Engine options that only matter end to end, each exercised in fresh namespaces over a
//! veth pair: `--token-key-file` admits exactly the clients with a connect token sealed
//! under its key for this server, and serves them encrypted with the token's keys; `--backend auto` falls back to kernel sockets when AF_XDP cannot be had;
//! `--busy-poll` serves; `--mode auto` falls back from native to skb when the driver
//! refuses native XDP. Every assertion is on counts and contents (what the engine reports
//! over its control socket, what its log says, what came back), never on timing; the
//! timeouts only bound a hung run.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use xrudp_client::{ClientConfig, ClientEvent, ConnectError, Connection, Protection, RejectReason};
use xrudp_proto::TokenKey;
use xrudp_proto::token::{self, TokenParams};
use xrudp_tests::{Engine, Topology, protocol_sum, tagged, xrudp_bin};

const PORT: u16 = 7777;
const RELIABLE: u8 = 0;
/// Bounds a hung run; this VM stalls for milliseconds, so every wait has seconds of room.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to `server` (protected as `protection` says), sends `n` reliable messages and
/// counts the echoes that came back intact. Call it in the client namespace.
fn echo(server: SocketAddr, protection: &Protection, n: u32) -> Result<u32, ConnectError> {
    let mut c = Connection::connect_blocking(server, ClientConfig::default(), protection, TIMEOUT)?;
    for seq in 0..n {
        c.send(RELIABLE, &tagged(0, seq))
            .expect("8 messages fit the send window");
    }
    let mut back = 0;
    let deadline = Instant::now() + TIMEOUT;
    while back < n && Instant::now() < deadline {
        c.wait(Duration::from_millis(20)).expect("client I/O");
        while let Some(ev) = c.next_event() {
            if let ClientEvent::Message {
                channel: RELIABLE,
                data,
            } = ev
            {
                assert_eq!(data, tagged(0, back), "echo {back} in order and intact");
                back += 1;
            }
        }
    }
    Ok(back)
}

#[test]
fn token_key_file_admits_only_clients_with_a_token_sealed_under_it_for_this_server() {
    let t = Topology::new(1, true);
    let key = TokenKey([7; 32]);
    let file = std::env::temp_dir().join(format!("xrudp-token-key-{}", t.id));
    std::fs::write(&file, key.0).expect("writing the key file");
    let engine = Engine::start(
        &t,
        &[
            "--port",
            &PORT.to_string(),
            "--token-key-file",
            file.to_str().expect("utf-8 path"),
            "--public-addr",
            &t.srv_addr(PORT).to_string(),
        ],
    );
    let server = t.srv_addr(PORT);
    let valid_until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3600;
    let issue = |key: &TokenKey, id: u64, expires: u64, to: SocketAddr| {
        let mut rng = <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(id);
        let params = TokenParams {
            client_id: id,
            expires,
            handshake_timeout: TIMEOUT,
            addresses: vec![to],
            user_data: b"player".to_vec(),
        };
        Protection::Token(Box::new(
            token::issue(key, &params, &mut rng).expect("issued"),
        ))
    };
    let elsewhere: SocketAddr = "192.0.2.1:7777".parse().expect("addr");
    let good = issue(&key, 1, valid_until, server);
    let forged = issue(&TokenKey([8; 32]), 2, valid_until, server);
    let stale = issue(&key, 3, 1, server);
    let foreign = issue(&key, 4, valid_until, elsewhere);
    let (signed, none, forged, stale, foreign) = Topology::in_ns(&t.ns_cli.clone(), move || {
        (
            echo(server, &good, 8),
            echo(server, &Protection::default(), 8),
            echo(server, &forged, 8),
            echo(server, &stale, 8),
            echo(server, &foreign, 8),
        )
    });
    let _ = std::fs::remove_file(&file);
    assert_eq!(signed.expect("a sealed token is admitted"), 8, "and served");
    for (what, got, want) in [
        ("no token", none, RejectReason::SecurityMismatch),
        (
            "a token sealed under another key",
            forged,
            RejectReason::TokenInvalid,
        ),
        ("an expired token", stale, RejectReason::TokenExpired),
        (
            "a token for another server",
            foreign,
            RejectReason::TokenInvalid,
        ),
    ] {
        match got {
            Err(ConnectError::Rejected { reason, .. }) => assert_eq!(reason, want, "{what}"),
            other => panic!("{what}: expected a refusal ({want:?}), got {other:?}"),
        }
    }
    // Protocol figures are published every 100 ms: wait for the refusals to show.
    let refused = |s: &xrudp::telemetry::Snapshot, name: &str| {
        protocol_sum(s, |f| f.rejected.get(name).copied().unwrap_or(0))
    };
    let snap = engine.wait_for(TIMEOUT, |s| {
        ["security_mismatch", "token_invalid", "token_expired"]
            .iter()
            .all(|n| refused(s, n) >= 1)
    });
    for name in ["security_mismatch", "token_invalid", "token_expired"] {
        assert!(
            protocol_sum(&snap, |f| f.rejected.get(name).copied().unwrap_or(0)) >= 1,
            "the engine counts the {name} refusal: {:?}",
            snap.queues[0].protocol
        );
    }
    assert_eq!(
        protocol_sum(&snap, |f| f
            .rejected
            .get("server_full")
            .copied()
            .unwrap_or(0)),
        0
    );
}

/// An XDP program already attached in native mode by another program (this test, through
/// the engine's own loader) is a real reason AF_XDP is unavailable: the engine's native
/// attach is refused, and the kernel will not run a generic program beside a native one.
#[test]
fn backend_auto_falls_back_to_sockets_when_the_interface_has_another_xdp_program() {
    let t = Topology::new(1, true);
    let iface = t.if_srv.clone();
    let held = Topology::in_ns(&t.ns_srv.clone(), move || {
        let mut p = xrudp::loader::Program::load().expect("loading the XDP program");
        // No ports configured: the program passes every frame to the kernel stack.
        let mode = p
            .attach(&iface, xrudp::loader::ModeChoice::Native)
            .expect("native attach on veth");
        assert_eq!(mode, xrudp::loader::Mode::Native);
        p
    });
    assert_ne!(t.srv_xdp_prog(), 0, "the other program is attached");
    let mut engine = Engine::start(&t, &["--port", &PORT.to_string(), "--backend", "auto"]);
    let snap = engine.snapshot();
    assert_eq!(snap.backend, "socket", "auto fell back to kernel sockets");
    let log = engine.log_text();
    assert!(
        log.contains("AF_XDP is unavailable; falling back to kernel UDP sockets"),
        "the engine says why it fell back:\n{log}"
    );
    let server = t.srv_addr(PORT);
    let back = Topology::in_ns(&t.ns_cli.clone(), move || {
        echo(server, &Protection::default(), 8)
    });
    assert_eq!(back.expect("connects over the socket backend"), 8);
    assert!(
        engine
            .signal_and_wait(nix::sys::signal::Signal::SIGTERM)
            .success()
    );
    drop(held);
}

#[test]
fn busy_poll_serves_echo_and_says_so() {
    let t = Topology::new(1, true);
    let mut engine = Engine::start(&t, &["--port", &PORT.to_string(), "--busy-poll"]);
    let snap = engine.snapshot();
    assert_eq!(snap.backend, "xdp");
    assert_eq!(
        snap.wakeup, "busy-poll",
        "the engine reports its wakeup strategy"
    );
    let server = t.srv_addr(PORT);
    let back = Topology::in_ns(&t.ns_cli.clone(), move || {
        echo(server, &Protection::default(), 64)
    });
    assert_eq!(
        back.expect("connects"),
        64,
        "every reliable echo came back under busy polling"
    );
    // Several messages share a datagram, and protocol figures are published every
    // 100 ms: wait for the worker to report the 64 messages it received.
    let snap = engine.wait_for(TIMEOUT, |s| protocol_sum(s, |f| f.messages_in) >= 64);
    assert!(
        snap.queues[0].rx_packets > 0 && protocol_sum(&snap, |f| f.messages_in) >= 64,
        "served from the AF_XDP queue: {:?}",
        snap.queues[0]
    );
    let log = engine.log_text();
    assert!(
        log.contains("busy"),
        "the log says what busy polling could set:\n{log}"
    );
    assert!(
        engine
            .signal_and_wait(nix::sys::signal::Signal::SIGTERM)
            .success()
    );
}

/// `xrudp attach --config FILE`: the file's settings reach the running engine (the
/// topology's `--iface` flag beside it), and `--check` validates a file without
/// attaching: a good one exits 0, a misspelt key exits 2 naming the key.
#[test]
fn a_config_file_configures_the_engine_and_check_validates_it() {
    let dir = std::env::temp_dir().join(format!("xrudp-config-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!("port = [{PORT}]\nwait = \"adaptive\"\nmax-connections = 64\n"),
    )
    .expect("writing the config");
    let t = Topology::new(1, true);
    let mut engine = Engine::start(&t, &["--config", good.to_str().expect("UTF-8")]);
    let snap = engine.snapshot();
    assert_eq!(snap.ports, [PORT]);
    assert_eq!(
        snap.wakeup, "adaptive",
        "the file's wait = \"adaptive\" is in force"
    );
    let server = t.srv_addr(PORT);
    let back = Topology::in_ns(&t.ns_cli.clone(), move || {
        echo(server, &Protection::default(), 16)
    });
    assert_eq!(back.expect("connects"), 16);
    assert!(
        engine
            .signal_and_wait(nix::sys::signal::Signal::SIGTERM)
            .success()
    );

    let check = |file: &std::path::Path| {
        std::process::Command::new(xrudp_bin())
            .args(["attach", "--iface", "eth0", "--check", "--config"])
            .arg(file)
            .output()
            .expect("running xrudp attach --check")
    };
    let out = check(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid"));
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "port = 7777\nbusy-pol = true\n").expect("writing the config");
    let out = check(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown key `busy-pol`") && err.contains("bad.toml"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn adaptive_wait_serves_echo_on_both_backends_and_says_so() {
    for backend in ["xdp", "socket"] {
        let t = Topology::new(1, true);
        let mut engine = Engine::start(
            &t,
            &[
                "--port",
                &PORT.to_string(),
                "--backend",
                backend,
                "--wait",
                "adaptive",
                "--spin-us",
                "500",
            ],
        );
        let snap = engine.snapshot();
        assert_eq!(snap.backend, backend);
        assert_eq!(
            snap.wakeup, "adaptive",
            "{backend}: the strategy is reported"
        );
        let server = t.srv_addr(PORT);
        let back = Topology::in_ns(&t.ns_cli.clone(), move || {
            echo(server, &Protection::default(), 200)
        });
        assert_eq!(
            back.expect("connects"),
            200,
            "{backend}: every reliable echo came back"
        );
        let snap = engine.wait_for(TIMEOUT, |s| protocol_sum(s, |f| f.messages_in) >= 200);
        assert!(
            protocol_sum(&snap, |f| f.messages_in) >= 200,
            "{backend}: counted"
        );
        assert!(
            engine
                .signal_and_wait(nix::sys::signal::Signal::SIGTERM)
                .success()
        );
    }
}

#[test]
fn wait_and_busy_poll_together_are_refused() {
    let out = std::process::Command::new(xrudp_tests::xrudp_bin())
        .args(["attach", "--iface", "lo", "--wait", "sleep", "--busy-poll"])
        .output()
        .expect("runs xrudp");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--busy-poll"), "names the conflict: {err}");
}

/// veth refuses a native XDP program (one without multi-buffer support) while its peer's
/// MTU is larger than a page minus the headroom ("Peer MTU is too large to set XDP",
/// ERANGE, drivers/net/veth.c): a jumbo MTU on the client end is a real driver refusal.
#[test]
fn mode_auto_falls_back_to_skb_when_the_driver_refuses_native() {
    let t = Topology::new(1, true);
    let out = Topology::exec(
        &t.ns_cli,
        &["ip", "link", "set", "dev", &t.if_cli, "mtu", "9000"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut engine = Engine::start(&t, &["--port", &PORT.to_string(), "--mode", "auto"]);
    let snap = engine.snapshot();
    assert_eq!(snap.backend, "xdp");
    assert_eq!(snap.xdp_mode, "skb", "native was refused, skb taken");
    let log = engine.log_text();
    assert!(
        log.contains("native XDP attach failed; falling back to skb mode"),
        "the engine logs the fallback:\n{log}"
    );
    let server = t.srv_addr(PORT);
    let back = Topology::in_ns(&t.ns_cli.clone(), move || {
        echo(server, &Protection::default(), 16)
    });
    assert_eq!(back.expect("connects in skb mode"), 16);
    let snap = engine.wait_for(TIMEOUT, |s| protocol_sum(s, |f| f.messages_in) >= 16);
    assert!(
        snap.queues[0].rx_packets > 0 && protocol_sum(&snap, |f| f.messages_in) >= 16,
        "served through AF_XDP in skb mode: {:?}",
        snap.queues[0]
    );
    assert!(
        engine
            .signal_and_wait(nix::sys::signal::Signal::SIGTERM)
            .success()
    );

    // And `--mode native` on the same interface fails with the errno-based hint.
    let err = Engine::try_start(&t, &["--port", &PORT.to_string(), "--mode", "native"])
        .expect_err("native attach must be refused");
    assert!(
        err.1.contains("--mode skb"),
        "the error says what to do:\n{}",
        err.1
    );
}
