//! The C ABI (userspace/capi) end to end, on both backends: the C echo client and the C#
//! echo client (built here with the system C compiler and mono-mcs, run in the client
//! namespace) each send 1,000 reliable-ordered messages to the engine and get every one
//! back once, in order, byte-exact, then disconnect with a code that the server sees as
//! the reason. The C misuse program runs against the same server under valgrind and
//! AddressSanitizer with zero reports. The Rust client runs the same load beside them, so
//! the log shows the bindings' overhead (figures: docs/CLIENTS.md).
//!
//! The server is the engine embedded in game code ([`xrudp::api::GameServer`]): its
//! event queue is where a disconnect's reason shows.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use xrudp::api::{Backpressure, Event, GameServer, ServerOptions};
use xrudp::engine::Backend;
use xrudp_client::{ClientConfig, ClientEvent, Connection, DisconnectReason, Protection};
use xrudp_tests::{Topology, percentile, repo_root};

const PORT: u16 = 7777;
const RELIABLE: u8 = 0;
const COUNT: u32 = 1000;
const SIZE: usize = 64;
/// Disconnect codes, one per client, so the server's reasons say whose each is.
const CODE_C: u16 = 42;
const CODE_CSHARP: u16 = 43;
const CODE_RUST: u16 = 44;
const CODE_MISUSE: u16 = 7;
/// The server's and the C clients' MTU ceiling: what a 1,500-byte veth link carries.
const MTU: usize = 1472;

/// The echo game: the engine embedded in a game thread that sends every message back and
/// records every disconnect's reason.
struct EchoGame {
    stop: Arc<AtomicBool>,
    reasons: Arc<Mutex<Vec<DisconnectReason>>>,
    thread: Option<JoinHandle<()>>,
}

impl EchoGame {
    fn start(t: &Topology, backend: Backend) -> Self {
        let iface = t.if_srv.clone();
        let ns = t.ns_srv.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let reasons = Arc::new(Mutex::new(Vec::new()));
        let (stop2, reasons2) = (Arc::clone(&stop), Arc::clone(&reasons));
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            Topology::in_ns(&ns, move || {
                let mut opts = ServerOptions::new(&iface, PORT);
                opts.engine.backend = backend;
                opts.engine.workers = Some(1);
                // The veth link carries 1,472-byte UDP payloads: the C clients' path MTU
                // discovery has room to climb.
                opts.engine.protocol.transport.mtu = MTU;
                let server = GameServer::start(&opts).expect("starting the embedded server");
                ready_tx.send(()).expect("the test waits for readiness");
                while !stop2.load(Relaxed) {
                    let Some(ev) = server.poll_event() else {
                        // Idle: yield rather than sleep, so the echo adds no sleep
                        // granularity to the round trips measured.
                        std::thread::yield_now();
                        continue;
                    };
                    match ev {
                        Event::Message {
                            conn,
                            channel,
                            mut data,
                        } => {
                            while let Err(Backpressure(Some(back))) =
                                server.send(conn, channel, data)
                            {
                                data = back;
                                std::thread::yield_now();
                            }
                        }
                        Event::Disconnected { reason, .. } => {
                            reasons2.lock().expect("reasons").push(reason);
                        }
                        Event::Connected { .. } => {}
                    }
                }
                server.shutdown();
            });
        });
        if ready.recv_timeout(Duration::from_secs(60)).is_err() {
            match thread.join() {
                Err(e) => std::panic::resume_unwind(e),
                Ok(()) => panic!("the game thread ended without starting the server"),
            }
        }
        Self {
            stop,
            reasons,
            thread: Some(thread),
        }
    }

    /// Waits (up to 20 s) until the server has seen a client close with `code`.
    fn saw_peer_close(&self, code: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = self
                .reasons
                .lock()
                .expect("reasons")
                .contains(&DisconnectReason::Peer { code });
            if seen || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn reasons(&self) -> Vec<DisconnectReason> {
        self.reasons.lock().expect("reasons").clone()
    }
}

impl Drop for EchoGame {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The examples, built once per test process from the committed header and the library
/// that `cargo build` put beside this test executable.
#[derive(Debug)]
struct Examples {
    lib_dir: PathBuf,
    echo_client: PathBuf,
    misuse: PathBuf,
    misuse_asan: PathBuf,
    csharp: PathBuf,
}

fn examples() -> &'static Examples {
    static BUILT: OnceLock<Examples> = OnceLock::new();
    BUILT.get_or_init(|| {
        // target/<profile>/deps/<test-exe> → target/<profile>/libxrudp_c.so
        let exe = std::env::current_exe().expect("test executable path");
        let lib_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>")
            .to_path_buf();
        assert!(
            lib_dir.join("libxrudp_c.so").is_file(),
            "{} is missing: build it first (`cargo build -p xrudp-capi`; scripts/test.sh does)",
            lib_dir.join("libxrudp_c.so").display()
        );
        let capi = repo_root().join("userspace/capi");
        let out = std::env::temp_dir().join(format!("xrudp-c-clients-{}", std::process::id()));
        std::fs::create_dir_all(&out).expect("creating the build directory");
        let cc = |src: &str, exe: &Path, extra: &[&str]| {
            run(Command::new("cc")
                .args(["-std=c11", "-g", "-Wall", "-Wextra", "-Werror"])
                .args(extra)
                .arg("-I")
                .arg(capi.join("include"))
                .arg(capi.join("examples/c").join(src))
                .arg("-L")
                .arg(&lib_dir)
                .arg("-lxrudp_c")
                .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
                .arg("-o")
                .arg(exe));
        };
        let e = Examples {
            echo_client: out.join("echo_client"),
            misuse: out.join("misuse"),
            misuse_asan: out.join("misuse_asan"),
            csharp: out.join("EchoClient.exe"),
            lib_dir: lib_dir.clone(),
        };
        cc("echo_client.c", &e.echo_client, &[]);
        cc("misuse.c", &e.misuse, &[]);
        cc(
            "misuse.c",
            &e.misuse_asan,
            &["-fsanitize=address,undefined", "-fno-omit-frame-pointer"],
        );
        run(Command::new("mcs")
            .arg("-warnaserror")
            .arg(format!("-out:{}", e.csharp.display()))
            .arg(capi.join("csharp/Xrudp.cs"))
            .arg(capi.join("csharp/EchoClient.cs")));
        e
    })
}

/// Runs a command to completion; fails the test, with its output, unless it succeeds.
/// A missing tool fails too, naming the package (scripts/setup.sh installs them all).
fn run(cmd: &mut Command) -> Output {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "running {name}: {e} (scripts/setup.sh installs gcc, mono-mcs, mono-runtime, valgrind)"
        )
    });
    assert!(
        out.status.success(),
        "{name} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `args` in the client namespace and returns its stdout (it must succeed).
fn in_client_ns(t: &Topology, e: &Examples, args: &[&str]) -> String {
    let out = run(Command::new("ip")
        .args(["netns", "exec", &t.ns_cli])
        .args(args)
        .env("LD_LIBRARY_PATH", &e.lib_dir));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `ok count=...` line of an echo client; fails the test unless it reports `COUNT`,
/// a path MTU of `mtu` and, when `probed`, path MTU probes (none otherwise).
fn echo_line(who: &str, stdout: &str, mtu: usize, probed: bool) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ok "))
        .unwrap_or_else(|| panic!("{who} printed no result line:\n{stdout}"));
    assert!(
        line.starts_with(&format!("ok count={COUNT} ")),
        "{who}: {line}"
    );
    // The quality fields came through the C struct: a connected client has an RTT
    // sample, whose minimum on this veth link is far below a second.
    let min_rtt = field(line, "min_rtt_us").unwrap_or_else(|| panic!("{who}: {line}"));
    assert!((1..1_000_000).contains(&min_rtt), "{who}: {line}");
    assert!(field(line, "jitter_us").is_some(), "{who}: {line}");
    // The path MTU came through too: found by probing (the knob on) or agreed at once.
    assert_eq!(field(line, "mtu"), Some(mtu as u64), "{who}: {line}");
    let sent = field(line, "pmtu_probes").unwrap_or_else(|| panic!("{who}: {line}"));
    assert_eq!(sent > 0, probed, "{who}: {line}");
    line.to_owned()
}

/// The number after `name=` in a result line.
fn field(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The same load from the Rust client (what the C ABI wraps), in the client namespace:
/// one message in flight, 1,000 round trips. Returns its result line.
fn rust_echo(t: &Topology, server: SocketAddr) -> String {
    Topology::in_ns(&t.ns_cli.clone(), move || {
        let mut conn = Connection::connect_blocking(
            server,
            ClientConfig::default(),
            &Protection::default(),
            Duration::from_secs(30),
        )
        .expect("the Rust client connects");
        let mut rtt = Vec::with_capacity(COUNT as usize);
        let start = Instant::now();
        let deadline = start + Duration::from_secs(60);
        for seq in 0..COUNT {
            let mut msg = vec![0u8; SIZE];
            for (i, b) in msg.iter_mut().enumerate() {
                *b = (seq.wrapping_mul(31) as usize + i * 7) as u8;
            }
            msg[..4].copy_from_slice(&seq.to_be_bytes());
            let sent = Instant::now();
            conn.send(RELIABLE, &msg).expect("send");
            conn.poll().expect("poll");
            loop {
                assert!(Instant::now() < deadline, "Rust client: echo {seq} late");
                conn.wait(Duration::from_millis(100)).expect("wait");
                match conn.next_event() {
                    Some(ClientEvent::Message { data, .. }) => {
                        assert_eq!(data, msg, "Rust client: echo {seq} differs");
                        rtt.push(sent.elapsed().as_micros() as u64);
                        conn.recycle(data);
                        break;
                    }
                    Some(other) => panic!("Rust client: {other:?} before echo {seq}"),
                    None => {}
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        conn.disconnect(CODE_RUST).expect("disconnect");
        format!(
            "ok count={COUNT} round_trips_per_s={:.0} rtt_p50_us={} rtt_p90_us={}",
            f64::from(COUNT) / secs,
            percentile(&mut rtt, 50),
            percentile(&mut rtt, 90)
        )
    })
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn c_and_csharp_clients(backend: Backend) {
    let e = examples();
    let t = Topology::new(1, true);
    let game = EchoGame::start(&t, backend);
    let server = t.srv_addr(PORT).to_string();
    let echo_args = |exe: &Path, code: u16| -> Vec<String> {
        let mut v = vec![exe.display().to_string()];
        v.extend(
            [
                server.as_str(),
                "--count",
                &COUNT.to_string(),
                "--size",
                &SIZE.to_string(),
                "--window",
                "1",
                "--code",
                &code.to_string(),
            ]
            .map(str::to_owned),
        );
        v
    };

    // The C example.
    // With path MTU discovery (the default) up to the link's 1,472 bytes.
    let mut c_args = echo_args(&e.echo_client, CODE_C);
    c_args.extend(["--mtu".to_owned(), MTU.to_string()]);
    let c_result = echo_line(
        "C echo_client",
        &in_client_ns(&t, e, &strs(&c_args)),
        MTU,
        true,
    );
    assert!(
        game.saw_peer_close(CODE_C),
        "{backend:?}: the server did not see the C client's disconnect with code {CODE_C}: {:?}",
        game.reasons()
    );

    // The C# example (mono).
    // With path MTU discovery off: 1,472 bytes from the start, no probes.
    let mut csharp_args = echo_args(&e.csharp, CODE_CSHARP);
    csharp_args.insert(0, "mono".to_owned());
    csharp_args.extend(["--mtu", &MTU.to_string(), "--pmtud", "off"].map(str::to_owned));
    let csharp_result = echo_line(
        "C# EchoClient",
        &in_client_ns(&t, e, &strs(&csharp_args)),
        MTU,
        false,
    );
    assert!(
        game.saw_peer_close(CODE_CSHARP),
        "{backend:?}: the server did not see the C# client's disconnect with code {CODE_CSHARP}: {:?}",
        game.reasons()
    );

    // The Rust client at the same load, for comparison.
    let rust_result = rust_echo(&t, t.srv_addr(PORT));
    assert!(game.saw_peer_close(CODE_RUST), "{:?}", game.reasons());

    // Misuse: every abuse returns an error code; valgrind and ASan report nothing.
    let out = in_client_ns(
        &t,
        e,
        &[
            "valgrind",
            "-q",
            "--error-exitcode=99",
            "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect",
            &e.misuse.display().to_string(),
            &server,
        ],
    );
    assert!(
        out.starts_with("ok checks="),
        "misuse under valgrind: {out}"
    );
    let out = in_client_ns(&t, e, &[&e.misuse_asan.display().to_string(), &server]);
    assert!(out.starts_with("ok checks="), "misuse under ASan: {out}");
    assert!(game.saw_peer_close(CODE_MISUSE), "{:?}", game.reasons());

    eprintln!(
        "[{backend:?}] {COUNT} round trips of {SIZE} B, one in flight:\n  C:    {c_result}\n  C#:   {csharp_result}\n  Rust: {rust_result}"
    );
}

#[test]
fn c_and_csharp_clients_xdp() {
    c_and_csharp_clients(Backend::Xdp);
}

#[test]
fn c_and_csharp_clients_socket() {
    c_and_csharp_clients(Backend::Socket);
}
