//! `xrudp attach --agones`: the engine as an Agones game server.
//!
//! Agones (agones.dev) runs game servers as pods on Kubernetes; next to each game server
//! runs an SDK sidecar it talks to over gRPC on `localhost:$AGONES_SDK_GRPC_PORT`. This
//! module drives the official SDK (the `agones` crate) on a thread of its own, in a
//! current-thread tokio runtime. Nothing of it touches the packet path: it reads what
//! the workers publish anyway, once a second, and asks for a drain as `xrudp drain` does.
//!
//! - **Connect** at start, before anything is attached: the SDK retries for
//!   [`CONNECT_FOR`], then the engine stops with one error saying what to do.
//! - **Ready** once the engine serves: the program attached, the sockets bound, the
//!   capabilities given up and every worker's loop seen turning
//!   ([`crate::telemetry::Worker::heartbeat`]).
//! - **Health**: every [`CHECK_EVERY`], one ping if, and only if, every worker's
//!   heartbeat advanced since the previous check. A stuck worker stops the pings (never a
//!   bare timer), and Agones marks the GameServer Unhealthy after its
//!   `health.failureThreshold` missed periods. Idle workers still wake every 100 ms, so
//!   an idle engine keeps pinging.
//! - **Connections**: the open connections go to the GameServer's Counter
//!   [`COUNTER`] (the SDK's Counters API), with the engine's connection slots as its
//!   capacity; the GameServer must declare the counter (deploy/agones/gameserver.yaml).
//! - **Allocated** and **Shutdown**: the GameServer is watched. Allocated is logged and
//!   shown by `xrudp stats`; Shutdown, or SIGTERM (Kubernetes deleting the pod), makes
//!   the engine drain as `xrudp drain` does ([`crate::telemetry::Running::drain`]); when
//!   the drain ends the engine calls the SDK's Shutdown ([`Sidecar::finish`]) and exits 0.
//!
//! The thread gives up its capabilities before it starts the runtime: the SDK needs none.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering::Relaxed},
        mpsc as std_mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::telemetry::Running;

/// The GameServer Counter the open connections are written to; the GameServer declares
/// it under `spec.counters` (deploy/agones/gameserver.yaml).
pub const COUNTER: &str = "connections";

/// How often the workers' heartbeats are checked (a health ping follows if every one
/// advanced) and the connection count refreshed.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long the SDK tries to reach the sidecar at start (the `agones` crate's own bound:
/// it retries every 100 ms for 30 s).
pub const CONNECT_FOR: Duration = Duration::from_secs(30);

/// `--agones-drain-deadline` when not given: `xrudp drain --deadline`'s default.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(60);

/// The longest one call to the sidecar may take (Ready, a counter update, Shutdown).
const CALL_FOR: Duration = Duration::from_secs(5);

/// Ready calls the sidecar may refuse, one second apart, before the engine gives up.
const READY_TRIES: u32 = 5;

/// The SDK's port when `AGONES_SDK_GRPC_PORT` is unset (the `agones` crate's default).
const DEFAULT_PORT: &str = "9357";

/// What `xrudp attach --agones` adds to serving.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long a drain (GameServer Shutdown, or SIGTERM) waits for the sessions to end
    /// before it closes the rest.
    pub drain_deadline: Duration,
    /// Set by SIGTERM: under Agones it drains the engine rather than stopping it.
    pub term: Arc<AtomicBool>,
}

/// Why the SDK could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No sidecar answered within [`CONNECT_FOR`].
    #[error(
        "cannot reach the Agones SDK sidecar at localhost:{port} (tried for {secs} s). \
         --agones runs the engine as an Agones game server: it must run in the pod of a \
         GameServer, whose SDK sidecar listens on AGONES_SDK_GRPC_PORT (docs/DEPLOY.md); \
         outside Agones, run without --agones"
    )]
    Unreachable {
        /// The port tried.
        port: String,
        /// Seconds tried.
        secs: u64,
        /// What the SDK reported.
        #[source]
        source: Box<agones::errors::Error>,
    },
    /// The SDK's thread or runtime could not be started.
    #[error("starting the Agones SDK thread")]
    Thread(#[source] std::io::Error),
}

/// The Agones SDK, connected to the sidecar, on its own thread.
#[derive(Debug)]
pub struct Sidecar {
    thread: Option<thread::JoinHandle<()>>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    shared: Arc<Shared>,
}

/// What the SDK thread tells the engine.
#[derive(Debug, Default)]
struct Shared {
    /// The GameServer went to Shutdown.
    shutdown: AtomicBool,
    /// The SDK thread gave up (Ready refused): why.
    failed: Mutex<Option<String>>,
}

/// What the engine tells the SDK thread.
#[derive(Debug)]
enum Command {
    /// The engine serves: become Ready, ping, count, watch. `slots`: the connection
    /// slots (the counter's capacity), `None` for an application without connections.
    Serve {
        running: Arc<Running>,
        slots: Option<u64>,
    },
    /// The engine has stopped: call the SDK's Shutdown and end.
    Finish,
}

impl Sidecar {
    /// Starts the SDK's thread and connects to the sidecar; returns once connected, or
    /// with [`Error::Unreachable`] after [`CONNECT_FOR`].
    pub fn connect() -> Result<Self, Error> {
        let (commands, inbox) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let (connected, outcome) = std_mpsc::sync_channel(1);
        let thread = thread::Builder::new()
            .name("xrudp-agones".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || sdk_thread(inbox, &shared, &connected)
            })
            .map_err(Error::Thread)?;
        match outcome.recv() {
            Ok(Ok(())) => Ok(Self {
                thread: Some(thread),
                commands: Some(commands),
                shared,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(Error::Thread(std::io::Error::other(
                    "the Agones SDK thread ended before connecting",
                )))
            }
        }
    }

    /// The engine is attached and serving: the SDK thread waits for every worker to
    /// turn, marks the GameServer Ready, then pings, counts and watches. `slots`: the
    /// connection slots, for the counter's capacity (`None`: no connections to count).
    pub fn serving(&self, running: Arc<Running>, slots: Option<u64>) {
        if let Some(c) = &self.commands {
            let _ = c.send(Command::Serve { running, slots });
        }
    }

    /// Whether the GameServer has gone to Shutdown (the engine should drain).
    #[must_use]
    pub fn shutdown_requested(&self) -> bool {
        self.shared.shutdown.load(Relaxed)
    }

    /// Why the SDK thread gave up, if it did (the engine then stops with that error).
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.shared
            .failed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The engine has stopped: tells the sidecar (the SDK's Shutdown, so Agones deletes
    /// the GameServer) and ends the SDK's thread.
    pub fn finish(mut self) {
        if let Some(c) = self.commands.take() {
            let _ = c.send(Command::Finish);
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::error!("the Agones SDK thread panicked");
        }
    }
}

impl Drop for Sidecar {
    /// Without [`Sidecar::finish`] (the engine failed to start): ends the thread without
    /// calling Shutdown, so Kubernetes restarts the container.
    fn drop(&mut self) {
        self.commands.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The port the SDK connects to, for messages.
fn port_name() -> String {
    std::env::var("AGONES_SDK_GRPC_PORT")
        .unwrap_or_else(|_| format!("{DEFAULT_PORT} (AGONES_SDK_GRPC_PORT is unset)"))
}

/// The SDK's thread: connect, report, then serve the engine until told to finish.
fn sdk_thread(
    mut inbox: mpsc::UnboundedReceiver<Command>,
    shared: &Arc<Shared>,
    connected: &std_mpsc::SyncSender<Result<(), Error>>,
) {
    // The SDK needs no capability: give this thread's up before the runtime (and any
    // thread it starts, which inherits the sets) exists.
    if let Err(e) = crate::privileges::drop_after_attach(&[]) {
        tracing::debug!(error = %e, "the Agones SDK thread could not give up capabilities");
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = connected.send(Err(Error::Thread(e)));
            return;
        }
    };
    rt.block_on(async move {
        let sdk = match agones::Sdk::new(None, None).await {
            Ok(sdk) => sdk,
            Err(source) => {
                let _ = connected.send(Err(Error::Unreachable {
                    port: port_name(),
                    secs: CONNECT_FOR.as_secs(),
                    source: Box::new(source),
                }));
                return;
            }
        };
        tracing::info!(port = %port_name(), "connected to the Agones SDK sidecar");
        let _ = connected.send(Ok(()));
        let (running, slots) = match inbox.recv().await {
            Some(Command::Serve { running, slots }) => (running, slots),
            Some(Command::Finish) | None => return,
        };
        let mut session = Session {
            sdk,
            running,
            shared: Arc::clone(shared),
        };
        // The session runs until the engine says it has stopped; its watch task ends
        // with the runtime.
        let finish = tokio::select! {
            () = session.run(slots) => matches!(inbox.recv().await, Some(Command::Finish)),
            c = inbox.recv() => matches!(c, Some(Command::Finish)),
        };
        if finish {
            match within(session.sdk.shutdown()).await {
                Ok(()) => tracing::info!("Agones: Shutdown sent to the sidecar"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "Agones: the sidecar did not take Shutdown; Agones will see the \
                     container exit instead"
                ),
            }
        }
    });
}

/// The SDK once the engine serves.
struct Session {
    sdk: agones::Sdk,
    running: Arc<Running>,
    shared: Arc<Shared>,
}

impl Session {
    /// Ready, then the checks every [`CHECK_EVERY`]; returns only if the SDK gives up.
    async fn run(&mut self, slots: Option<u64>) {
        self.wait_turning().await;
        let mut beta = self.sdk.beta().clone();
        let counting = match slots {
            Some(n) => set_up_counter(&mut beta, n).await,
            None => false,
        };
        if let Err(why) = self.ready().await {
            *self
                .shared
                .failed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
            return;
        }
        tokio::spawn(watch(
            self.sdk.clone(),
            Arc::clone(&self.running),
            Arc::clone(&self.shared),
        ));
        let mut health = self.sdk.health_check();
        let mut last = self.running.heartbeats();
        let mut stalled_before: Vec<u32> = Vec::new();
        let mut pings = 0u64;
        let mut reported = None;
        let mut counter_failing = false;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let now = self.running.heartbeats();
            let stalled: Vec<u32> = self
                .running
                .workers
                .iter()
                .zip(now.iter().zip(&last))
                .filter(|(_, (n, l))| n <= l)
                .map(|(w, _)| w.id)
                .collect();
            last = now;
            if stalled.is_empty() {
                match health.try_send(()) {
                    Ok(()) => pings += 1,
                    Err(mpsc::error::TrySendError::Closed(())) => {
                        tracing::warn!(
                            "the health stream to the Agones sidecar ended; reopening it"
                        );
                        health = self.sdk.health_check();
                        if health.try_send(()).is_ok() {
                            pings += 1;
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(())) => {
                        tracing::debug!("the Agones sidecar is not taking health pings");
                    }
                }
            }
            if stalled != stalled_before {
                if stalled.is_empty() {
                    tracing::info!("every worker turns again: Agones health pings resume");
                } else {
                    tracing::warn!(
                        workers = ?stalled,
                        "worker(s) stopped turning their loop: no Agones health ping until they do"
                    );
                }
            }
            self.running.update_agones(|a| {
                a.health_pings = pings;
                a.stalled_workers.clone_from(&stalled);
            });
            stalled_before = stalled;
            if counting {
                let open = self.running.open_connections();
                if reported != Some(open) {
                    let count = i64::try_from(open).unwrap_or(i64::MAX);
                    match within(beta.set_counter_count(COUNTER, count)).await {
                        Ok(()) => {
                            reported = Some(open);
                            counter_failing = false;
                            self.running
                                .update_agones(|a| a.connections_reported = Some(open));
                        }
                        Err(e) if !counter_failing => {
                            counter_failing = true;
                            tracing::warn!(error = %e, open, "Agones: could not update the `connections` counter; retrying every second");
                        }
                        Err(_) => {}
                    }
                }
            }
        }
    }

    /// Waits until every worker has published at least once (its loop turns).
    async fn wait_turning(&self) {
        let started = Instant::now();
        let mut warned = false;
        loop {
            let idle: Vec<u32> = self
                .running
                .workers
                .iter()
                .filter(|w| w.heartbeat.load(Relaxed) == 0)
                .map(|w| w.id)
                .collect();
            if idle.is_empty() {
                return;
            }
            if !warned && started.elapsed() > Duration::from_secs(5) {
                warned = true;
                tracing::warn!(
                    workers = ?idle,
                    "not Ready for Agones yet: worker(s) have not turned their loop once in 5 s"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Marks the GameServer Ready, retrying [`READY_TRIES`] times a second apart.
    async fn ready(&mut self) -> Result<(), String> {
        let mut tries = 0;
        loop {
            tries += 1;
            match within(self.sdk.ready()).await {
                Ok(()) => break,
                Err(e) if tries >= READY_TRIES => {
                    return Err(format!(
                        "the Agones sidecar refused Ready {tries} times ({e}); look at the \
                         sidecar's log (`kubectl logs POD -c agones-gameserver-sidecar`)"
                    ));
                }
                Err(e) => {
                    tracing::warn!(error = %e, tries, "Agones: Ready failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        self.running.update_agones(|a| a.ready = true);
        tracing::info!(workers = self.running.workers.len(), "Agones: Ready");
        Ok(())
    }
}

/// Sets the counter's capacity to the connection slots and its count to 0; false (and
/// one warning) when the GameServer does not declare it.
async fn set_up_counter(beta: &mut agones::beta::Beta, slots: u64) -> bool {
    let capacity = i64::try_from(slots).unwrap_or(i64::MAX);
    let set = async {
        within(beta.set_counter_capacity(COUNTER, capacity)).await?;
        within(beta.set_counter_count(COUNTER, 0)).await
    };
    match set.await {
        Ok(()) => {
            tracing::info!(
                counter = COUNTER,
                capacity,
                "Agones: publishing open connections"
            );
            true
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "Agones: the GameServer has no `{COUNTER}` counter, so open connections are \
                 not published; declare it under spec.counters (deploy/agones/gameserver.yaml)"
            );
            false
        }
    }
}

/// Watches the GameServer for ever (re-watching a second after the stream ends): logs
/// its state changes, shows them in the figures, and flags Shutdown to the engine.
async fn watch(mut sdk: agones::Sdk, running: Arc<Running>, shared: Arc<Shared>) {
    let mut state = String::new();
    let mut failing = false;
    loop {
        match sdk.watch_gameserver().await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(gs)) => {
                        failing = false;
                        let now = gs.status.map(|s| s.state).unwrap_or_default();
                        if now != state {
                            on_state(&now, &running, &shared);
                            state = now;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "Agones: watching the GameServer failed; watching again");
                        }
                        failing = true;
                        break;
                    }
                }
            },
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "Agones: cannot watch the GameServer; retrying every second");
                }
                failing = true;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A new GameServer state.
fn on_state(state: &str, running: &Running, shared: &Shared) {
    match state {
        "Allocated" => tracing::info!(state, "Agones: the GameServer is Allocated"),
        "Shutdown" => {
            tracing::info!(state, "Agones: the GameServer is shutting down: draining");
            shared.shutdown.store(true, Relaxed);
        }
        _ => tracing::info!(state, "Agones: GameServer state"),
    }
    running.update_agones(|a| state.clone_into(&mut a.state));
}

/// One call to the sidecar, bounded by [`CALL_FOR`].
async fn within<T>(call: impl Future<Output = agones::errors::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(CALL_FOR, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(sdk_error(&e)),
        Err(_) => Err(format!("no answer within {} s", CALL_FOR.as_secs())),
    }
}

/// An SDK error with its cause (the crate's messages alone say only "rpc failure").
fn sdk_error(e: &agones::errors::Error) -> String {
    match e {
        agones::errors::Error::Rpc(status) => {
            format!("{:?}: {}", status.code(), status.message())
        }
        other => {
            let mut s = other.to_string();
            let mut cause = std::error::Error::source(other);
            while let Some(c) = cause {
                s.push_str(": ");
                s.push_str(&c.to_string());
                cause = c.source();
            }
            s
        }
    }
}
