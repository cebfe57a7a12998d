//! `xrudp attach --agones` over veth in fresh namespaces, against a STAND-IN for the
//! Agones SDK sidecar. The real sidecar only exists inside a Kubernetes pod of an Agones
//! GameServer, so this test serves the SDK's gRPC API itself: a tonic server built (by
//! tests/build.rs) from the proto files the `agones` crate publishes, the same crate the
//! engine's SDK client comes from. It keeps a GameServer state, records the calls in
//! order, counts health pings and keeps the `connections` counter, as the sidecar's API
//! says it does; it does not model Agones' controllers (the state changes the test
//! makes, Allocated and Shutdown, stand in for them).
//!
//! The SDK connects to `localhost:$AGONES_SDK_GRPC_PORT`, and the engine runs in the
//! server namespace, so the stand-in listens on that namespace's loopback (bound from a
//! thread that entered it). Covered: Ready → health pings (counted) → the open
//! connections of real clients in the counter → Allocated → Shutdown → the engine
//! drains (every client gets the Draining event) → the SDK's Shutdown call → exit 0;
//! a stuck worker (one worker thread stopped through ptrace, the rest of the process
//! running) stops the pings, which resume when it turns again, then SIGTERM drains;
//! an unreachable sidecar is one clear error with nothing attached. Assertions are on
//! calls, counts and states; the timeouts only bound a hung run.

use std::{
    net::SocketAddr,
    pin::Pin,
    process::Command,
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::{
        ptrace,
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};
use xrudp::telemetry::{Agones, Snapshot};
use xrudp_client::ClientEvent;
use xrudp_tests::{Engine, Launch, Topology, connect_fleet, drive_until, xrudp_bin};

/// The SDK's messages and services, generated from the `agones` crate's proto.
#[allow(
    clippy::all,
    clippy::pedantic,
    unreachable_pub,
    dead_code,
    reason = "generated code: which lints fire depends on the proto"
)]
mod sdk {
    tonic::include_proto!("agones.dev.sdk");
    pub mod beta {
        tonic::include_proto!("agones.dev.sdk.beta");
    }
}

use sdk::{Empty, GameServer, KeyValue, beta};

const PORT: u16 = 7777;
const CLIENTS: usize = 10;
const SLOTS_PER_WORKER: u64 = 64;

#[test]
fn ready_pings_counts_allocated_then_shutdown_drains_and_exits_0() {
    let t = Topology::new(2, true);
    let sidecar = StandIn::start(&t.ns_srv);
    let started = Instant::now();
    let mut engine = start_engine(&t, &sidecar, &[]);

    // Ready, after the counter's capacity: every connection slot of both workers.
    let seen = sidecar.wait_for(Duration::from_secs(30), |s| s.has("Ready"));
    let ready_after = started.elapsed();
    assert_eq!(
        seen.calls[..3],
        [
            format!("capacity={}", 2 * SLOTS_PER_WORKER),
            "count=0".to_owned(),
            "Ready".to_owned()
        ],
        "{}",
        engine.log_text()
    );
    let s = agones_of(&engine.snapshot());
    assert!(s.ready, "{s:?}");

    // Health pings: one per check while every worker turns, never more.
    let seen = sidecar.wait_for(Duration::from_secs(30), |s| s.pings >= 3);
    let after = started.elapsed();
    assert!(seen.pings >= 3, "{seen:?}\n{}", engine.log_text());
    let s = agones_of(&engine.snapshot());
    assert!(
        s.health_pings >= seen.pings,
        "the engine sent {} pings, the sidecar got {}",
        s.health_pings,
        seen.pings
    );
    assert!(
        seen.pings <= after.as_secs() + 1,
        "at most one ping a second: {} in {after:?}",
        seen.pings
    );
    assert!(s.stalled_workers.is_empty(), "{s:?}");

    // Real clients connect: the counter follows.
    let server = t.srv_addr(PORT);
    let (connected_tx, connected_rx) = mpsc::channel();
    let ns_cli = t.ns_cli.clone();
    let clients = thread::spawn(move || {
        Topology::in_ns(&ns_cli, move || {
            clients_until_drained(server, &connected_tx)
        })
    });
    let connected = connected_rx
        .recv_timeout(Duration::from_secs(90))
        .expect("the clients connected");
    assert_eq!(connected, CLIENTS, "{}", engine.log_text());
    let (want, slots) = (
        i64::try_from(CLIENTS).expect("fits"),
        i64::try_from(2 * SLOTS_PER_WORKER).expect("fits"),
    );
    let seen = sidecar.wait_for(Duration::from_secs(30), |s| s.count == want);
    assert_eq!(seen.count, want, "{seen:?}\n{}", engine.log_text());
    assert_eq!(seen.capacity, slots);
    let s = agones_of(&engine.snapshot());
    assert_eq!(s.connections_reported, Some(CLIENTS as u64), "{s:?}");

    // Allocated: logged and shown.
    sidecar.set_state("Allocated");
    let snap = engine.wait_for(Duration::from_secs(30), |s| {
        s.agones.as_ref().is_some_and(|a| a.state == "Allocated")
    });
    assert_eq!(agones_of(&snap).state, "Allocated", "{}", engine.log_text());
    assert!(
        engine
            .log_text()
            .contains("Agones: the GameServer is Allocated")
    );

    // Shutdown: the engine drains, its clients are told and leave, it calls Shutdown
    // and exits 0.
    sidecar.set_state("Shutdown");
    let drained = clients.join().expect("the client thread");
    let status = engine.wait_exit(Duration::from_secs(90));
    let log = engine.log_text();
    assert!(drained.errors.is_empty(), "{:?}\n{log}", drained.errors);
    assert_eq!(
        drained.notices,
        vec![None; CLIENTS],
        "every client got the Draining event (no redirect)\n{log}"
    );
    let status = status.unwrap_or_else(|| panic!("the engine did not exit\n{log}"));
    assert!(status.success(), "engine exit {status}\n{log}");
    assert!(log.contains("reason=\"GameServer Shutdown\""), "{log}");
    assert!(
        log.contains("drained: the last connection has ended"),
        "{log}"
    );
    let seen = sidecar.seen();
    assert_eq!(
        seen.calls.iter().filter(|c| *c == "Shutdown").count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        seen.calls.last().map(String::as_str),
        Some("Shutdown"),
        "{seen:?}"
    );
    assert_eq!(t.srv_xdp_detached_within(Duration::from_secs(10)), 0);
    eprintln!(
        "agones: Ready {:.2} s after the engine was started; {} pings; calls {:?}",
        ready_after.as_secs_f64(),
        seen.pings,
        seen.calls
    );
}

#[test]
fn a_stuck_worker_stops_the_pings_and_sigterm_drains() {
    let t = Topology::new(2, true);
    let sidecar = StandIn::start(&t.ns_srv);
    let mut engine = start_engine(&t, &sidecar, &[]);
    let seen = sidecar.wait_for(Duration::from_secs(30), |s| s.pings >= 2);
    assert!(seen.pings >= 2, "{seen:?}\n{}", engine.log_text());

    // Stop worker 1's thread alone: the process, its control socket, worker 0 and the
    // SDK thread go on.
    let tid = thread_named(engine.pid(), "xrudp-q1");
    let stuck = Stuck::new(tid);
    let snap = engine.wait_for(Duration::from_secs(30), |s| {
        s.agones.as_ref().is_some_and(|a| a.stalled_workers == [1])
    });
    let before = agones_of(&snap);
    assert_eq!(before.stalled_workers, [1], "{}", engine.log_text());
    let pings_before = sidecar.seen().pings;
    // Five of the engine's checks (one a second), all of them without a ping.
    thread::sleep(Duration::from_secs(5));
    let during = agones_of(&engine.snapshot());
    assert_eq!(during.stalled_workers, [1], "{during:?}");
    assert_eq!(
        during.health_pings, before.health_pings,
        "no ping while a worker is stuck"
    );
    assert_eq!(sidecar.seen().pings, pings_before);
    assert!(
        engine.wait_exit(Duration::ZERO).is_none(),
        "the engine lives"
    );
    assert!(
        engine.log_text().contains("worker(s) stopped turning"),
        "{}",
        engine.log_text()
    );

    // It turns again: the pings resume.
    drop(stuck);
    let seen = sidecar.wait_for(Duration::from_secs(30), |s| s.pings > pings_before);
    assert!(seen.pings > pings_before, "{}", engine.log_text());
    let after = agones_of(&engine.snapshot());
    assert!(after.stalled_workers.is_empty(), "{after:?}");

    // SIGTERM under Agones drains (no client: at once), calls Shutdown, exits 0.
    engine.signal(nix::sys::signal::Signal::SIGTERM);
    let status = engine.wait_exit(Duration::from_secs(30));
    let log = engine.log_text();
    let status = status.unwrap_or_else(|| panic!("the engine did not exit\n{log}"));
    assert!(status.success(), "engine exit {status}\n{log}");
    assert!(log.contains("reason=\"SIGTERM\""), "{log}");
    let seen = sidecar.seen();
    assert_eq!(
        seen.calls.last().map(String::as_str),
        Some("Shutdown"),
        "{seen:?}"
    );
}

#[test]
fn an_unreachable_sidecar_is_one_clear_error_and_nothing_attached() {
    let t = Topology::new(1, false);
    // A port nothing listens on, in the server namespace.
    let port = Topology::in_ns(&t.ns_srv, || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port")
    });
    let env = format!("AGONES_SDK_GRPC_PORT={port}");
    let started = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", &t.ns_srv, "env", &env])
        .arg(xrudp_bin())
        .args(["attach", "--iface", &t.if_srv, "--port", "7777", "--agones"])
        .output()
        .expect("running xrudp attach");
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the Agones SDK sidecar at localhost:{port}"
        )) && err.contains("run without --agones"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(
        took >= xrudp::agones::CONNECT_FOR,
        "it retried for {:?} first, not {took:?}",
        xrudp::agones::CONNECT_FOR
    );
    assert_eq!(t.srv_xdp_prog(), 0, "nothing attached");
}

/// `xrudp attach --agones` in the server namespace, its SDK pointed at `sidecar`.
fn start_engine(t: &Topology, sidecar: &StandIn, extra: &[&str]) -> Engine {
    let env = format!("AGONES_SDK_GRPC_PORT={}", sidecar.port);
    let wrapper = ["env", env.as_str()];
    let slots = SLOTS_PER_WORKER.to_string();
    let mut args = vec!["--port", "7777", "--agones", "--max-connections", &slots];
    args.extend_from_slice(extra);
    Engine::try_start_as(
        t,
        &Launch {
            wrapper: &wrapper,
            run_dir: None,
        },
        &args,
    )
    .unwrap_or_else(|(e, log)| panic!("engine did not start: {e}\n{log}"))
}

fn agones_of(s: &Snapshot) -> Agones {
    s.agones
        .clone()
        .expect("an --agones engine shows its Agones status")
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Drained {
    notices: Vec<Option<SocketAddr>>,
    errors: Vec<String>,
}

/// Connects the clients, reports how many connected, keeps them alive until each has
/// been told to leave (Draining), then leaves, as a game client does.
fn clients_until_drained(server: SocketAddr, connected: &mpsc::Sender<usize>) -> Drained {
    let mut d = Drained::default();
    let mut c = connect_fleet(server, CLIENTS, Duration::from_secs(60));
    let _ = connected.send(c.connected());
    d.errors
        .extend(c.others.iter().map(|(_, ev)| format!("connecting: {ev:?}")));
    let deadline = Instant::now() + Duration::from_secs(180);
    drive_until(&mut c.fleet, deadline, |_, ev| {
        match ev {
            ClientEvent::Draining { redirect } => d.notices.push(redirect),
            other => d.errors.push(format!("before the notice: {other:?}")),
        }
        d.notices.len() >= CLIENTS
    });
    for id in &c.ids {
        c.fleet.disconnect(*id, 0);
    }
    drive_until(
        &mut c.fleet,
        Instant::now() + Duration::from_secs(3),
        |_, _| false,
    );
    d
}

/// The thread id of the engine's thread named `name` (`/proc/PID/task/TID/comm`).
fn thread_named(pid: u32, name: &str) -> i32 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the engine's tasks");
    tasks
        .filter_map(Result::ok)
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .and_then(|t| t.file_name().to_str()?.parse().ok())
        .unwrap_or_else(|| panic!("the engine has no thread named {name}"))
}

/// One thread of another process held in a ptrace stop (PTRACE_SEIZE, then
/// PTRACE_INTERRUPT: only that thread stops, no signal reaches the process); it runs
/// again when this is dropped. SIGSTOP would not do: it stops every thread.
struct Stuck(Pid);

impl Stuck {
    fn new(tid: i32) -> Self {
        let pid = Pid::from_raw(tid);
        ptrace::seize(pid, ptrace::Options::empty()).expect("PTRACE_SEIZE of the worker");
        ptrace::interrupt(pid).expect("PTRACE_INTERRUPT of the worker");
        let status = waitpid(pid, Some(WaitPidFlag::__WALL)).expect("waiting for the stop");
        assert!(
            matches!(
                status,
                WaitStatus::PtraceEvent(..) | WaitStatus::Stopped(..)
            ),
            "the worker did not stop: {status:?}"
        );
        Self(pid)
    }
}

impl Drop for Stuck {
    fn drop(&mut self) {
        let _ = ptrace::detach(self.0, None);
    }
}

/// What the stand-in sidecar saw.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// SDK calls in order: "Ready", "Shutdown", "Allocate", "capacity=N", "count=N".
    calls: Vec<String>,
    /// Health pings (messages on the Health streams).
    pings: u64,
    /// The `connections` counter.
    count: i64,
    capacity: i64,
}

impl Seen {
    fn has(&self, call: &str) -> bool {
        self.calls.iter().any(|c| c == call)
    }
}

/// The stand-in sidecar, serving on the loopback of a namespace from its own thread.
struct StandIn {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    state: Arc<watch::Sender<GameServer>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl StandIn {
    fn start(ns: &str) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (state, _) = watch::channel(game_server("Scheduled"));
        let state = Arc::new(state);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = mpsc::channel();
        let path = format!("/var/run/netns/{ns}");
        let service = Sidecar {
            seen: Arc::clone(&seen),
            state: Arc::clone(&state),
        };
        let thread =
            thread::spawn(move || {
                let file = std::fs::File::open(&path).expect("the namespace");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                rt.block_on(async move {
                    let v4 = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("binding the stand-in on 127.0.0.1");
                    let port = v4.local_addr().expect("its address").port();
                    // `localhost` may resolve to ::1 first: answer there too, if it exists.
                    if let Ok(v6) = tokio::net::TcpListener::bind(("::1", port)).await {
                        tokio::spawn(router(service.clone()).serve_with_incoming(
                            tokio_stream::wrappers::TcpListenerStream::new(v6),
                        ));
                    }
                    let _ = port_tx.send(port);
                    let _ = router(service)
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::TcpListenerStream::new(v4),
                            async {
                                let _ = stopped.await;
                            },
                        )
                        .await;
                });
            });
        let port = port_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the stand-in sidecar listens");
        Self {
            port,
            seen,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn seen(&self) -> Seen {
        self.seen.lock().expect("seen").clone()
    }

    /// Polls until `done` holds or `timeout` passes; returns the last state seen.
    fn wait_for(&self, timeout: Duration, done: impl Fn(&Seen) -> bool) -> Seen {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.seen();
            if done(&s) || Instant::now() > deadline {
                return s;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// What Agones' controllers would do: a new GameServer state, sent to watchers.
    fn set_state(&self, state: &str) {
        set_state(&self.state, state);
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn router(s: Sidecar) -> tonic::transport::server::Router {
    tonic::transport::Server::builder()
        .add_service(sdk::sdk_server::SdkServer::new(s.clone()))
        .add_service(beta::sdk_server::SdkServer::new(s))
}

fn game_server(state: &str) -> GameServer {
    GameServer {
        object_meta: Some(sdk::game_server::ObjectMeta {
            name: "xrudp-test".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        status: Some(sdk::game_server::Status {
            state: state.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn set_state(tx: &watch::Sender<GameServer>, state: &str) {
    tx.send_modify(|gs| {
        if let Some(s) = gs.status.as_mut() {
            s.state = state.into();
        }
    });
}

/// The stand-in's gRPC services (the SDK's and the beta SDK's Counters).
#[derive(Clone)]
struct Sidecar {
    seen: Arc<Mutex<Seen>>,
    state: Arc<watch::Sender<GameServer>>,
}

impl Sidecar {
    fn record(&self, call: impl Into<String>) {
        self.seen.lock().expect("seen").calls.push(call.into());
    }
}

type Watch = Pin<Box<dyn tokio_stream::Stream<Item = Result<GameServer, Status>> + Send>>;

#[tonic::async_trait]
impl sdk::sdk_server::Sdk for Sidecar {
    async fn ready(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.record("Ready");
        set_state(&self.state, "Ready");
        Ok(Response::new(Empty {}))
    }

    async fn allocate(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.record("Allocate");
        set_state(&self.state, "Allocated");
        Ok(Response::new(Empty {}))
    }

    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.record("Shutdown");
        set_state(&self.state, "Shutdown");
        Ok(Response::new(Empty {}))
    }

    async fn health(&self, r: Request<Streaming<Empty>>) -> Result<Response<Empty>, Status> {
        let mut pings = r.into_inner();
        while pings.message().await?.is_some() {
            self.seen.lock().expect("seen").pings += 1;
        }
        Ok(Response::new(Empty {}))
    }

    async fn get_game_server(&self, _: Request<Empty>) -> Result<Response<GameServer>, Status> {
        Ok(Response::new(self.state.borrow().clone()))
    }

    type WatchGameServerStream = Watch;

    async fn watch_game_server(&self, _: Request<Empty>) -> Result<Response<Watch>, Status> {
        use tokio_stream::StreamExt as _;
        let updates = tokio_stream::wrappers::WatchStream::new(self.state.subscribe());
        Ok(Response::new(Box::pin(updates.map(Ok))))
    }

    async fn set_label(&self, r: Request<KeyValue>) -> Result<Response<Empty>, Status> {
        self.record(format!("label {}", r.into_inner().key));
        Ok(Response::new(Empty {}))
    }

    async fn set_annotation(&self, r: Request<KeyValue>) -> Result<Response<Empty>, Status> {
        self.record(format!("annotation {}", r.into_inner().key));
        Ok(Response::new(Empty {}))
    }

    async fn reserve(&self, _: Request<sdk::Duration>) -> Result<Response<Empty>, Status> {
        self.record("Reserve");
        Ok(Response::new(Empty {}))
    }
}

#[tonic::async_trait]
impl beta::sdk_server::Sdk for Sidecar {
    async fn get_counter(
        &self,
        r: Request<beta::GetCounterRequest>,
    ) -> Result<Response<beta::Counter>, Status> {
        let name = r.into_inner().name;
        let s = self.seen.lock().expect("seen");
        if name != "connections" {
            return Err(Status::not_found(format!("counter {name} not found")));
        }
        Ok(Response::new(beta::Counter {
            name,
            count: s.count,
            capacity: s.capacity,
        }))
    }

    async fn update_counter(
        &self,
        r: Request<beta::UpdateCounterRequest>,
    ) -> Result<Response<beta::Counter>, Status> {
        let u = r
            .into_inner()
            .counter_update_request
            .ok_or_else(|| Status::invalid_argument("no update"))?;
        if u.name != "connections" {
            return Err(Status::not_found(format!("counter {} not found", u.name)));
        }
        let mut s = self.seen.lock().expect("seen");
        // As the sidecar does: a capacity, a count (at most the capacity), or a change.
        if let Some(c) = u.capacity {
            s.capacity = c;
            s.calls.push(format!("capacity={c}"));
        }
        if let Some(n) = u.count {
            if n > s.capacity || n < 0 {
                return Err(Status::out_of_range(format!(
                    "count {n} outside 0..={}",
                    s.capacity
                )));
            }
            s.count = n;
            s.calls.push(format!("count={n}"));
        }
        if u.count_diff != 0 {
            s.count = (s.count + u.count_diff).clamp(0, s.capacity);
            s.calls.push(format!("diff={}", u.count_diff));
        }
        Ok(Response::new(beta::Counter {
            name: u.name,
            count: s.count,
            capacity: s.capacity,
        }))
    }

    async fn get_list(
        &self,
        _: Request<beta::GetListRequest>,
    ) -> Result<Response<beta::List>, Status> {
        Err(Status::unimplemented("the stand-in keeps no lists"))
    }

    async fn update_list(
        &self,
        _: Request<beta::UpdateListRequest>,
    ) -> Result<Response<beta::List>, Status> {
        Err(Status::unimplemented("the stand-in keeps no lists"))
    }

    async fn add_list_value(
        &self,
        _: Request<beta::AddListValueRequest>,
    ) -> Result<Response<beta::List>, Status> {
        Err(Status::unimplemented("the stand-in keeps no lists"))
    }

    async fn remove_list_value(
        &self,
        _: Request<beta::RemoveListValueRequest>,
    ) -> Result<Response<beta::List>, Status> {
        Err(Status::unimplemented("the stand-in keeps no lists"))
    }
}
