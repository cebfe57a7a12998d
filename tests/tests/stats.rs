//! `xrudp stats` and the Prometheus endpoint against a real engine in the veth
//! topology: the figures equal the traffic the test made, rates are non-zero while it
//! flows and zero after, `--json` validates against docs/stats.schema.json, a scrape
//! parses with a Prometheus text-format parser and carries the same totals, and with no
//! engine `xrudp stats` fails with a clear message. Run serially as root:
//! `cargo test -p xrudp-tests --test stats -- --test-threads=1`.
#![expect(
    clippy::float_cmp,
    reason = "rates of unchanged counters are exactly 0.0, and exposition values of integer counters are exact"
)]

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use xrudp::{stats::Report, telemetry::Snapshot};
use xrudp_tests::{
    Clients, Engine, Topology, connect_fleet, drive_until, echo_rounds, repo_root, xrudp_bin,
    xrudp_stats,
};

const PORT: u16 = 7777;
const METRICS: &str = "127.0.0.1:9187";
const CLIENTS: usize = 8;
const ROUNDS: u32 = 150;
const RELIABLE: u8 = 0;

/// What the client side did.
#[derive(Debug, Default)]
struct Traffic {
    connected: usize,
    sent: u64,
    echoed: u64,
    errors: Vec<String>,
}

/// `CLIENTS` connections each send `ROUNDS` reliable messages (one round every 20 ms),
/// wait for every echo, then disconnect.
fn traffic(server: SocketAddr) -> Traffic {
    let mut s = Traffic::default();
    let Clients {
        mut fleet,
        ids,
        connect_times,
        others,
    } = connect_fleet(server, CLIENTS, Duration::from_secs(30));
    s.connected = connect_times.len();
    for (_, other) in others {
        s.errors.push(format!("while connecting: {other:?}"));
    }
    if s.connected < CLIENTS {
        s.errors
            .push(format!("{} of {CLIENTS} connected", s.connected));
        return s;
    }
    let e = echo_rounds(
        &mut fleet,
        &ids,
        RELIABLE,
        ROUNDS,
        (CLIENTS, Duration::from_millis(20)),
        Duration::from_secs(30),
    );
    (s.sent, s.echoed) = (e.sent, e.echoed);
    s.errors.extend(e.errors);
    for id in &ids {
        fleet.disconnect(*id, 0);
    }
    let until = Instant::now() + Duration::from_millis(500);
    drive_until(&mut fleet, until, |_, _| false);
    s
}

/// Rates between two snapshots taken `gap` apart.
fn report(engine: &Engine, gap: Duration) -> Report {
    let a = engine.snapshot();
    std::thread::sleep(gap);
    let b = engine.snapshot();
    Report::new("test", Some(&a), b)
}

fn scrape(ns: &str) -> String {
    Topology::in_ns(ns, || {
        let addr: SocketAddr = METRICS.parse().expect("address");
        let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut resp = String::new();
        c.read_to_string(&mut resp).expect("response");
        resp
    })
}

/// Sum of a metric's samples (counters and gauges), over every label set.
fn metric_sum(scrape: &prometheus_parse::Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

fn stats_json(iface: &str) -> serde_json::Value {
    serde_json::from_slice(&xrudp_stats(&["--iface", iface, "--json"]))
        .expect("xrudp stats --json prints JSON")
}

#[expect(
    clippy::many_single_char_names,
    reason = "t(opology), r(eport), p(rotocol): short names for the figures under test"
)]
fn counters_match_traffic(backend: &str) {
    let t = Topology::new(1, true);
    let engine = Engine::start(
        &t,
        &[
            "--port",
            &PORT.to_string(),
            "--backend",
            backend,
            "--metrics-addr",
            METRICS,
        ],
    );
    let server = t.srv_addr(PORT);
    let ns = t.ns_cli.clone();
    let clients = std::thread::spawn(move || Topology::in_ns(&ns, move || traffic(server)));

    // While the traffic flows, rates computed from two snapshots are non-zero.
    let mut busy = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while busy.is_none() && Instant::now() < deadline && !clients.is_finished() {
        let r = report(&engine, Duration::from_millis(500));
        if r.rates
            .as_ref()
            .is_some_and(|x| x.messages_in > 0.0 && x.rx_packets > 0.0 && x.tx_packets > 0.0)
        {
            busy = Some(r);
        }
    }
    let sent = clients.join().expect("client thread");
    assert!(
        sent.errors.is_empty(),
        "{:?}\n{}",
        sent.errors,
        engine.log_text()
    );
    let want = CLIENTS as u64 * u64::from(ROUNDS);
    assert_eq!(sent.sent, want);
    assert_eq!(sent.echoed, want, "every echo came back");
    let busy = busy.expect("rates were non-zero while traffic flowed");
    assert!(
        busy.rates
            .as_ref()
            .is_some_and(|r| r.rx_bytes > 0.0 && r.messages_out > 0.0)
    );

    // After the disconnects: no connection, and rates fall to zero.
    let deadline = Instant::now() + Duration::from_secs(30);
    let idle = loop {
        let r = report(&engine, Duration::from_millis(600));
        let p = r.totals.protocol.clone().expect("protocol figures");
        let rates = r.rates.clone().expect("rates");
        if (p.connections == 0
            && rates.rx_packets == 0.0
            && rates.tx_packets == 0.0
            && rates.messages_in == 0.0
            && rates.messages_out == 0.0)
            || Instant::now() > deadline
        {
            break r;
        }
    };
    let rates = idle.rates.as_ref().expect("rates");
    assert_eq!(rates.rx_packets, 0.0, "{rates:?}");
    assert_eq!(rates.tx_packets, 0.0, "{rates:?}");
    assert_eq!(rates.messages_in, 0.0, "{rates:?}");
    assert_eq!(rates.messages_out, 0.0, "{rates:?}");
    let p = idle.totals.protocol.clone().expect("protocol figures");
    assert_eq!(p.connections, 0);
    assert_eq!(p.accepted, CLIENTS as u64);
    assert_eq!(
        p.messages_in, want,
        "messages in == messages the clients sent"
    );
    assert_eq!(p.messages_out, want, "messages out == echoes");
    assert_eq!(p.rejected_total, 0);
    assert!(idle.totals.rx_packets >= p.packets_in && p.packets_in >= want);
    assert!(idle.totals.tx_packets >= want && p.packets_out >= want);
    assert!(idle.totals.rx_bytes > 0 && idle.totals.tx_bytes > 0);
    let lat = idle.totals.latency.clone().expect("latency recorded");
    assert!(lat.count >= p.packets_in.min(idle.totals.rx_packets));
    assert!(lat.p50_ns > 0 && lat.p50_ns <= lat.p99_ns && lat.p99_ns <= lat.p999_ns);
    assert!(idle.snapshot.rss_bytes.is_some_and(|b| b > 0));
    assert!(!idle.snapshot.simd_level.is_empty());
    if backend == "xdp" {
        assert!(idle.totals.xdp_statistics.is_some());
        assert!(idle.totals.fill_ring_level.is_some_and(|l| l > 0));
        assert!(
            idle.snapshot
                .xdp_counter("redirected")
                .is_some_and(|v| v >= idle.totals.rx_packets)
        );
    }
    let quiet: Snapshot = idle.snapshot.clone();

    // `xrudp stats --json` from the root namespace validates against the schema and
    // carries the same totals.
    let doc = stats_json(&t.if_srv);
    let schema_text =
        std::fs::read_to_string(repo_root().join("docs/stats.schema.json")).expect("schema file");
    let schema: serde_json::Value = serde_json::from_str(&schema_text).expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let problems: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
    assert!(problems.is_empty(), "schema violations: {problems:?}");
    let reports: Vec<Report> = serde_json::from_value(doc).expect("the document is Reports");
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    let rp = r.totals.protocol.as_ref().expect("protocol totals");
    assert_eq!(rp.messages_in, want);
    assert_eq!(rp.accepted, CLIENTS as u64);
    assert_eq!(
        r.totals.rx_packets,
        quiet.queues.iter().map(|q| q.rx_packets).sum::<u64>()
    );
    assert_eq!(r.rates.as_ref().map(|x| x.messages_in), Some(0.0));

    // `--watch` with --json prints one valid document per line, each with rates.
    let mut watch = Command::new(xrudp_bin())
        .args(["stats", "--iface", &t.if_srv, "--json", "--watch", "0.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("running xrudp stats --watch");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(
        watch.stdout.take().expect("piped stdout"),
    ));
    for _ in 0..3 {
        let line = lines.next().expect("a line per refresh").expect("readable");
        let doc: serde_json::Value =
            serde_json::from_str(&line).expect("one JSON document per line");
        let problems: Vec<String> = validator.iter_errors(&doc).map(|e| e.to_string()).collect();
        assert!(
            problems.is_empty(),
            "--watch schema violations: {problems:?}"
        );
        let reports: Vec<Report> = serde_json::from_value(doc).expect("Reports");
        assert!(reports[0].rates.is_some(), "every refresh has rates");
    }
    let _ = watch.kill();
    let _ = watch.wait();

    // The Prometheus scrape parses and carries the same totals.
    let resp = scrape(&t.ns_srv);
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("exposition parses");
    let totals = &r.totals;
    assert_eq!(
        metric_sum(&parsed, "xrudp_messages_received_total"),
        want as f64
    );
    assert_eq!(
        metric_sum(&parsed, "xrudp_messages_sent_total"),
        want as f64
    );
    assert_eq!(
        metric_sum(&parsed, "xrudp_connections_accepted_total"),
        CLIENTS as f64
    );
    assert_eq!(metric_sum(&parsed, "xrudp_connections"), 0.0);
    assert_eq!(
        metric_sum(&parsed, "xrudp_rx_packets_total"),
        totals.rx_packets as f64
    );
    assert_eq!(
        metric_sum(&parsed, "xrudp_tx_packets_total"),
        totals.tx_packets as f64
    );
    assert_eq!(
        metric_sum(&parsed, "xrudp_rx_bytes_total"),
        totals.rx_bytes as f64
    );
    let hist = parsed
        .samples
        .iter()
        .find_map(|s| match (&s.metric[..], &s.value) {
            ("xrudp_processing_latency_seconds", prometheus_parse::Value::Histogram(h)) => {
                Some(h.clone())
            }
            _ => None,
        })
        .expect("the latency histogram is exposed");
    let inf = hist.last().map(|b| b.count).unwrap_or_default();
    assert_eq!(
        inf, lat.count as f64,
        "histogram +Inf bucket == packets recorded"
    );
    assert!(
        hist.windows(2).all(|w| w[0].count <= w[1].count),
        "cumulative buckets"
    );
    let not_found = Topology::in_ns(&t.ns_srv, || {
        let mut c = TcpStream::connect(METRICS).expect("connect");
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("request");
        let mut s = String::new();
        c.read_to_string(&mut s).expect("response");
        s
    });
    assert!(not_found.starts_with("HTTP/1.1 404"), "{not_found}");
}

#[test]
fn counters_match_traffic_xdp() {
    counters_match_traffic("xdp");
}

#[test]
fn counters_match_traffic_socket() {
    counters_match_traffic("socket");
}

#[test]
fn stats_without_an_engine_fails_clearly() {
    let dir = std::env::temp_dir().join(format!("xrudp-stats-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    for args in [
        &["stats"][..],
        &["stats", "--json"],
        &["stats", "--iface", "nothere0"],
    ] {
        let out = Command::new(xrudp_bin())
            .args(args)
            .env("XRUDP_RUN_DIR", &dir)
            .output()
            .expect("running xrudp stats");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded with no engine");
        assert!(err.contains("no running xrudp engine"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
