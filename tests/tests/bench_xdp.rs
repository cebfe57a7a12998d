//! `xrudp bench` end to end on both load backends: the engine (echo app) in the server
//! namespace, the load generator in the client namespace, a bounded number of messages
//! on the reliable channel. Every message must come back (the protocol retransmits what
//! the link drops; the drain waits as long as it takes, up to 60 s, and ends as soon as
//! the last echo is in), and the JSON must account for all of them.
//!
//! `--backend xdp` attaches the engine's XDP program to the client end of the veth and
//! drives the connections through AF_XDP (one socket per queue, one port per connection);
//! `--backend socket` runs the batched (recvmmsg/sendmmsg) kernel-socket path.

use std::process::Command;

use serde_json::Value;
use xrudp_tests::{Engine, Topology, xrudp_bin};

const PORT: &str = "7777";
const CLIENTS: u64 = 40;
const RATE: u64 = 2_000;
const SECS: u64 = 2;

/// Runs `xrudp bench` in the client namespace with `extra` arguments; returns its JSON.
fn bench(t: &Topology, extra: &[&str]) -> Value {
    let server = format!("{}:{PORT}", t.ip_srv);
    let out = Command::new("ip")
        .args(["netns", "exec", &t.ns_cli])
        .arg(xrudp_bin())
        .args([
            "bench",
            "--server",
            &server,
            "--json",
            "--no-probe",
            "--wait",
            "sleep",
        ])
        .args([
            "--clients",
            &CLIENTS.to_string(),
            "--rate",
            &RATE.to_string(),
        ])
        .args([
            "--duration",
            &SECS.to_string(),
            "--drain",
            "60",
            "--size",
            "64",
        ])
        .args(extra)
        .output()
        .expect("running xrudp bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "xrudp bench failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("xrudp bench printed no JSON object ({e}):\n{stdout}\n--- stderr ---\n{stderr}")
    })
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_u64()
        .unwrap_or_else(|| panic!("{} is not a count in {v}", path.join(".")))
}

fn f(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for k in path {
        x = &x[*k];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

/// Every scheduled message echoed exactly once, nothing lost or foreign, and figures
/// consistent with each other.
fn assert_complete(r: &Value, backend: &str) {
    let scheduled = RATE * SECS;
    assert_eq!(r["settings"]["backend"], backend, "{r}");
    assert_eq!(u(r, &["connected"]), CLIENTS, "{r}");
    assert_eq!(u(r, &["connect_failed"]), 0, "{r}");
    assert_eq!(u(r, &["closed_during_run"]), 0, "{r}");
    assert_eq!(u(r, &["messages", "scheduled"]), scheduled, "{r}");
    assert_eq!(u(r, &["messages", "sent"]), scheduled, "{r}");
    assert_eq!(u(r, &["messages", "echoed"]), scheduled, "{r}");
    assert_eq!(u(r, &["messages", "lost"]), 0, "{r}");
    assert_eq!(u(r, &["messages", "foreign"]), 0, "{r}");
    assert_eq!(u(r, &["messages", "duplicates"]), 0, "{r}");
    assert_eq!(u(r, &["rx_dropped"]), 0, "{r}");
    assert_eq!(u(r, &["socket_errors"]), 0, "{r}");
    // The histogram holds one round trip per echoed message, in order of size.
    assert_eq!(u(r, &["rtt_us", "count"]), scheduled, "{r}");
    let (p50, p90, max) = (
        f(r, &["rtt_us", "p50"]),
        f(r, &["rtt_us", "p90"]),
        f(r, &["rtt_us", "max"]),
    );
    assert!(0.0 < p50 && p50 <= p90 && p90 <= max, "{r}");
    // Messages and packets moved: at least one datagram per message each way.
    assert!(u(r, &["packets_out"]) >= scheduled, "{r}");
    assert!(f(r, &["loadgen_syscalls_per_datagram"]) > 0.0, "{r}");
}

#[test]
fn bench_xdp_backend_echoes_every_message() {
    let t = Topology::new(1, true);
    let _engine = Engine::start(&t, &["--port", PORT, "--app", "echo"]);
    let r = bench(&t, &["--backend", "xdp", "--iface", &t.if_cli]);
    assert_complete(&r, "xdp");
    // The XDP program left the client interface with the bench.
    let iface = t.if_cli.clone();
    let prog = Topology::in_ns(&t.ns_cli, move || {
        let idx = xrudp::sys::if_index(&iface).expect("client interface exists");
        xrudp::sys::bpf::xdp_query(idx)
            .expect("bpf_xdp_query")
            .prog_id
    });
    assert_eq!(
        prog, 0,
        "the bench left an XDP program on the client interface"
    );
}

#[test]
fn bench_xdp_backend_on_two_queues() {
    let t = Topology::new(2, true);
    let _engine = Engine::start(&t, &["--port", PORT, "--app", "echo"]);
    let r = bench(
        &t,
        &["--backend", "xdp", "--iface", &t.if_cli, "--threads", "2"],
    );
    assert_complete(&r, "xdp");
    assert_eq!(u(&r, &["settings", "threads"]), 2, "{r}");
}

#[test]
fn bench_socket_backend_echoes_every_message() {
    let t = Topology::new(1, true);
    let _engine = Engine::start(&t, &["--port", PORT, "--app", "echo"]);
    let r = bench(&t, &["--backend", "socket"]);
    assert_complete(&r, "socket");
}

#[test]
fn bench_xdp_backend_says_what_is_missing() {
    let t = Topology::new(1, true);
    let v4 = format!("{}:{PORT}", t.ip_srv);
    let run = |server: &str, extra: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &t.ns_cli])
            .arg(xrudp_bin())
            .args(["bench", "--server", server, "--duration", "1", "--no-probe"])
            .args(extra)
            .output()
            .expect("running xrudp bench");
        assert!(!out.status.success(), "bench {extra:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&v4, &["--backend", "xdp"]);
    assert!(e.contains("needs --iface"), "{e}");
    let e = run(&v4, &["--backend", "xdp", "--iface", "nosuchif0"]);
    assert!(e.contains("no such interface"), "{e}");
    let e = run(
        &v4,
        &[
            "--backend",
            "xdp",
            "--iface",
            &t.if_cli,
            "--threads",
            "2",
            "--clients",
            "2",
        ],
    );
    assert!(e.contains("active queue"), "{e}");
    let e = run(
        &format!("[{}]:{PORT}", t.ip6_srv),
        &["--backend", "xdp", "--iface", &t.if_cli],
    );
    assert!(e.contains("IPv4"), "{e}");
}

#[test]
fn bench_xdp_backend_against_the_socket_server() {
    // The server's veth end keeps TX checksum offload: its kernel's echoes reach the
    // client's XDP program with partial UDP checksums, hence the flag.
    let t = Topology::new(1, true);
    let _engine = Engine::start(
        &t,
        &[
            "--port",
            PORT,
            "--app",
            "echo",
            "--backend",
            "socket",
            "--workers",
            "1",
        ],
    );
    let r = bench(
        &t,
        &[
            "--backend",
            "xdp",
            "--iface",
            &t.if_cli,
            "--no-udp-checksum-check",
        ],
    );
    assert_complete(&r, "xdp");
}
