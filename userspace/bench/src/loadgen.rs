//! One load-generator thread: real protocol connections over a batched [`Transport`]
//! ([`super::socket_io::Sockets`] or [`super::xdp_io::Rings`]), an open-loop send
//! schedule round-robin over them, and histograms of round-trip and connect times.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use xrudp_proto::{ClientConfig, ClientEvent, ClientState, DisconnectReason, SendError};

use super::conns::{Conns, Transport};

use super::payload::Stamp;
use super::schedule::Schedule;

/// Highest value the histograms hold, ns (larger values are clamped to it).
pub const HIST_MAX_NS: u64 = 60_000_000_000;

/// A histogram of nanoseconds, 3 significant digits.
///
/// # Panics
///
/// Never: its bounds are constant and valid.
#[must_use]
pub fn histogram() -> Histogram<u64> {
    // INVARIANT: the bounds are constant and valid (1 <= low, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

/// How a thread waits between sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Wait {
    /// Never sleep: poll the sockets in a loop. Sends leave on time and echoes are
    /// timestamped when they arrive; the thread's core is busy the whole run.
    Spin,
    /// Sleep until the next send or an echo (ppoll(2), to the microsecond, with the
    /// thread's timer slack at 1 ns): the thread's core is busy only while it works.
    Sleep,
}

/// What one thread does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The thread's number (carried in every message).
    pub thread: u16,
    /// The server.
    pub server: SocketAddr,
    /// Connections this thread opens.
    pub clients: usize,
    /// Its share of the message rate, messages per second.
    pub rate: u64,
    /// Message size, bytes (at least the stamp).
    pub size: usize,
    /// Channel index to send on.
    pub channel: u8,
    /// How long the schedule runs.
    pub duration: Duration,
    /// How long to wait for the last echoes after the schedule ends.
    pub drain: Duration,
    /// Local addresses to open connections from, round-robin (port 0: ephemeral).
    pub locals: Vec<IpAddr>,
    /// Connections handshaking at once, at most.
    pub connect_window: usize,
    /// Give up on connections not admitted by then.
    pub connect_timeout: Duration,
    /// The core to pin the thread to.
    pub core: Option<usize>,
    /// How to wait.
    pub wait: Wait,
    /// Client configuration.
    pub config: ClientConfig,
    /// Session protection: `None` for `--encryption off`, else open mode with the
    /// server's public key pinned if given.
    pub encryption: Option<Option<[u8; 32]>>,
}

/// Figures the main thread reads while the run goes on.
#[derive(Debug, Default)]
pub struct Progress {
    /// Connections admitted.
    pub connected: AtomicU64,
    /// Messages handed to the protocol.
    pub sent: AtomicU64,
    /// Distinct messages echoed.
    pub echoed: AtomicU64,
}

/// The start line every thread waits for.
#[derive(Debug, Default)]
pub struct Start {
    /// Threads done connecting (successfully or not).
    pub ready: AtomicUsize,
    /// When the schedules start; set once every thread is ready.
    pub t0: OnceLock<Instant>,
}

/// One thread's outcome.
#[derive(Debug)]
pub struct Outcome {
    /// Round-trip times, ns, from scheduled send to echo.
    pub rtt: Histogram<u64>,
    /// Send lag, ns: how long after its scheduled time each message was handed to the
    /// protocol. It is the load thread's own delay, part of every round trip it measures.
    pub send_lag: Histogram<u64>,
    /// Connect times, ns, from the first handshake packet to admission.
    pub connect: Histogram<u64>,
    /// Connections admitted.
    pub connected: u64,
    /// Connections refused, timed out or failed during the handshake.
    pub connect_failed: u64,
    /// The first reason a connection failed to open, if any did.
    pub connect_failure: Option<String>,
    /// Messages in the schedule.
    pub scheduled: u64,
    /// Messages the protocol took.
    pub sent: u64,
    /// Messages refused by a full send queue (backpressure): never sent.
    pub send_refused: u64,
    /// Messages due on a connection that had closed: never sent.
    pub not_connected: u64,
    /// Distinct messages echoed.
    pub echoed: u64,
    /// Echoes of a message already echoed.
    pub duplicates: u64,
    /// Messages that were not this thread's (bad stamp or another thread's).
    pub foreign: u64,
    /// Connections that closed during the run.
    pub closed_during_run: u64,
    /// The first reason a connection closed during the run.
    pub close_reason: Option<String>,
    /// Data packets that carried a retransmission, summed over the connections.
    pub retransmitted_packets: u64,
    /// Datagrams the connections produced.
    pub packets_out: u64,
    /// The transport's I/O errors.
    pub socket_errors: u64,
    /// Datagrams the kernel refused to take (or found no frame or ring room for).
    pub send_dropped: u64,
    /// Received datagrams dropped by the transport (malformed, bad checksum, unknown port).
    pub rx_dropped: u64,
    /// Datagrams sent and received by the transport.
    pub datagrams: u64,
    /// Syscalls the transport made to move them (send, receive and wait calls).
    pub syscalls: u64,
    /// The thread's own CPU time over the schedule and drain, ns.
    pub cpu_ns: u64,
    /// With [`Wait::Spin`] and a pinned thread, the gaps between the thread's loop
    /// iterations over the schedule: it spins on the clock like the probe, so on its core
    /// it is the probe (a `SCHED_IDLE` probe there would only measure this thread).
    pub loop_gaps: Option<super::probe::Gaps>,
}

/// Runs one thread's plan over the transport `transport` makes (in the thread, which
/// then owns it): connect, mark ready, wait for `t0`, send on schedule, drain,
/// disconnect.
///
/// # Panics
///
/// If `plan.size` is below [`super::payload::HEADER_LEN`] (the caller checks it).
pub fn run<T: Transport>(
    plan: &Plan,
    transport: impl FnOnce() -> io::Result<T>,
    start: &Start,
    progress: &Progress,
) -> io::Result<Outcome> {
    let mut ready_guard = ReadyGuard(Some(&start.ready));
    if let Some(core) = plan.core {
        core_affinity::set_for_current(core_affinity::CoreId { id: core });
    }
    // Timed waits end when the next message is due, not up to 50 µs later (the default
    // slack). A refusal only costs that precision.
    let _ = xrudp_xdp::os::set_timer_slack(1);
    let transport = transport()?;
    let mut fleet = Conns::new(
        transport,
        super::conns::random_seed() ^ u64::from(plan.thread),
    );
    let mut out = Outcome::empty();
    let ids = connect_all(plan, &mut fleet, &mut out, progress)?;
    ready_guard.release();
    let t0 = serve_until_t0(plan, &mut fleet, start, &mut out);

    let mut sender = Sender::new(plan, &ids, t0);
    out.scheduled = sender.schedule.total();
    let cpu_before = super::host::thread_cpu_ns();
    let gaps = sender.run(&mut fleet, progress, &mut out);
    // Only a pinned thread's loop speaks for one core.
    if plan.wait == Wait::Spin && plan.core.is_some() {
        out.loop_gaps = Some(super::probe::Gaps {
            source: "load-loop",
            ..gaps.finish(plan.core.is_some())
        });
    }
    out.cpu_ns = super::host::thread_cpu_ns()
        .zip(cpu_before)
        .map_or(0, |(a, b)| a.saturating_sub(b));
    count_packets_and_io(&fleet, &ids, &mut out);
    close_all(&mut fleet, &ids);
    Ok(out)
}

impl Outcome {
    /// Nothing counted yet.
    fn empty() -> Self {
        Self {
            rtt: histogram(),
            send_lag: histogram(),
            connect: histogram(),
            connected: 0,
            connect_failed: 0,
            connect_failure: None,
            scheduled: 0,
            sent: 0,
            send_refused: 0,
            not_connected: 0,
            echoed: 0,
            duplicates: 0,
            foreign: 0,
            closed_during_run: 0,
            close_reason: None,
            retransmitted_packets: 0,
            packets_out: 0,
            socket_errors: 0,
            send_dropped: 0,
            rx_dropped: 0,
            datagrams: 0,
            syscalls: 0,
            cpu_ns: 0,
            loop_gaps: None,
        }
    }
}

/// Keeps the connections served until every thread is ready and the main thread sets
/// the schedule's start; returns it.
fn serve_until_t0<T: Transport>(
    plan: &Plan,
    fleet: &mut Conns<T>,
    start: &Start,
    out: &mut Outcome,
) -> Instant {
    loop {
        if let Some(&t0) = start.t0.get() {
            return t0;
        }
        fleet.drive(Duration::from_millis(1));
        while let Some((id, event)) = fleet.poll_event() {
            note_event(fleet, id, event, None, plan, out);
        }
    }
}

/// One thread's open-loop schedule, from `t0` to the end of the drain: what falls due,
/// where it goes, and which echoes came back.
struct Sender<'a> {
    plan: &'a Plan,
    /// The admitted connections, sent to round-robin.
    ids: &'a [usize],
    schedule: Schedule,
    t0: Instant,
    /// The end of the schedule.
    end: Instant,
    /// The end of the wait for the last echoes.
    drain_end: Instant,
    /// One bit per scheduled message: echoed already.
    seen: Vec<u64>,
    /// The message being built.
    buf: Vec<u8>,
    /// The next message due.
    next: u64,
    /// Where it goes: an index into `ids`.
    rr: usize,
}

impl<'a> Sender<'a> {
    /// No connections (`ids` empty) schedule nothing.
    fn new(plan: &'a Plan, ids: &'a [usize], t0: Instant) -> Self {
        let schedule = Schedule::new(
            if ids.is_empty() { 0 } else { plan.rate },
            nanos(plan.duration),
        );
        let seen = vec![0u64; usize::try_from(schedule.total().div_ceil(64)).unwrap_or(0)];
        let end = t0 + plan.duration;
        Self {
            plan,
            ids,
            schedule,
            t0,
            end,
            drain_end: end + plan.drain,
            seen,
            buf: vec![0u8; plan.size],
            next: 0,
            rr: 0,
        }
    }

    /// Sends what falls due and accounts the echoes until the schedule is sent and every
    /// echo is in (or the drain is over); returns the loop's gaps over the schedule.
    fn run<T: Transport>(
        &mut self,
        fleet: &mut Conns<T>,
        progress: &Progress,
        out: &mut Outcome,
    ) -> super::probe::Recorder {
        let mut gaps = super::probe::Recorder::new(self.plan.core.unwrap_or(usize::MAX));
        loop {
            let now = Instant::now();
            if now >= self.t0 && now < self.end {
                gaps.tick(now);
            }
            if now >= self.t0 {
                self.send_due(fleet, now, out);
            }
            let done_sending = self.next >= self.schedule.total() && now >= self.end;
            if done_sending && (out.echoed >= out.sent || now >= self.drain_end) {
                break;
            }
            fleet.drive(self.wait(now, done_sending));
            while let Some((id, event)) = fleet.poll_event() {
                let run = Some((self.t0, &mut self.seen));
                note_event(fleet, id, event, run, self.plan, out);
            }
            progress.sent.store(out.sent, Ordering::Relaxed);
            progress.echoed.store(out.echoed, Ordering::Relaxed);
        }
        gaps
    }

    /// Sends every message due by `now`, round-robin over the connections.
    fn send_due<T: Transport>(&mut self, fleet: &mut Conns<T>, now: Instant, out: &mut Outcome) {
        let elapsed = nanos(now - self.t0);
        let due = self.schedule.due(elapsed);
        while self.next < due {
            let stamp = Stamp {
                thread: self.plan.thread,
                seq: self.next,
                scheduled_ns: self.schedule.scheduled_ns(self.next),
            };
            out.send_lag
                .saturating_record(elapsed.saturating_sub(stamp.scheduled_ns).max(1));
            // INVARIANT: `buf` holds at least a stamp (checked when the plan was made).
            stamp.encode(&mut self.buf).expect("message holds a stamp");
            let id = self.ids[self.rr];
            self.rr = if self.rr + 1 == self.ids.len() {
                0
            } else {
                self.rr + 1
            };
            match fleet.send(id, self.plan.channel, &self.buf) {
                Ok(()) => out.sent += 1,
                Err(SendError::QueueFull) => out.send_refused += 1,
                Err(_) => out.not_connected += 1,
            }
            self.next += 1;
        }
    }

    /// How long to wait for input at `now`: not at all when spinning; when sleeping,
    /// until the next message is due, or (10 ms at most) until the schedule or drain ends.
    fn wait(&self, now: Instant, done_sending: bool) -> Duration {
        match self.plan.wait {
            Wait::Spin => Duration::ZERO,
            Wait::Sleep if self.next < self.schedule.total() => {
                let at = self.t0 + Duration::from_nanos(self.schedule.scheduled_ns(self.next));
                at.saturating_duration_since(now)
            }
            Wait::Sleep => (if done_sending {
                self.drain_end
            } else {
                self.end
            })
            .saturating_duration_since(now)
            .min(Duration::from_millis(10)),
        }
    }
}

/// Adds the connections' packet counters and the transport's I/O counters to `out`.
fn count_packets_and_io<T: Transport>(fleet: &Conns<T>, ids: &[usize], out: &mut Outcome) {
    for &id in ids {
        if let Some(c) = fleet.counters(id) {
            out.retransmitted_packets += c.retransmitted_packets;
            out.packets_out += c.packets_out;
        }
    }
    let io = fleet.io();
    out.socket_errors = io.errors;
    out.send_dropped = io.send_dropped;
    out.rx_dropped = io.rx_dropped;
    out.datagrams = io.sent + io.received;
    out.syscalls = io.send_calls + io.recv_calls;
}

/// Closes gracefully so the server frees the slots before the next run (waiting 500 ms
/// at most for the closes to complete).
fn close_all<T: Transport>(fleet: &mut Conns<T>, ids: &[usize]) {
    for &id in ids {
        fleet.disconnect(id, 0);
    }
    let close_end = Instant::now() + Duration::from_millis(500);
    while fleet.count(ClientState::Disconnected) < fleet.len() && Instant::now() < close_end {
        fleet.drive(Duration::from_millis(5));
        while fleet.poll_event().is_some() {}
    }
}

/// Opens the plan's connections, at most `connect_window` handshaking at once; returns
/// the admitted ones.
fn connect_all<T: Transport>(
    plan: &Plan,
    fleet: &mut Conns<T>,
    out: &mut Outcome,
    progress: &Progress,
) -> io::Result<Vec<usize>> {
    let mut ids = Vec::with_capacity(plan.clients);
    let mut added_at: Vec<Instant> = Vec::with_capacity(plan.clients);
    let mut admitted: Vec<bool> = Vec::with_capacity(plan.clients);
    let mut added = 0usize;
    let mut handshaking = 0usize;
    let deadline = Instant::now() + plan.connect_timeout;
    let window = plan.connect_window.max(1);
    let mut keys = {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| io::Error::other(format!("the OS random number generator failed: {e}")))?;
        <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(seed)
    };
    while ids.len() + (out.connect_failed as usize) < plan.clients {
        while added < plan.clients && handshaking < window {
            let local = plan.locals[added % plan.locals.len()];
            let security = match plan.encryption {
                None => xrudp_proto::session::Security::Off,
                Some(server_key) => {
                    let mut ephemeral = [0u8; 32];
                    rand_core::RngCore::fill_bytes(&mut keys, &mut ephemeral);
                    xrudp_proto::session::Security::Open {
                        ephemeral,
                        server_key,
                    }
                }
            };
            let id = fleet.add(local, plan.server, plan.config.clone(), security)?;
            if added_at.len() <= id {
                added_at.resize(id + 1, Instant::now());
                admitted.resize(id + 1, false);
            }
            added_at[id] = Instant::now();
            added += 1;
            handshaking += 1;
        }
        if Instant::now() >= deadline {
            let left = plan.clients - ids.len() - out.connect_failed as usize;
            out.connect_failed += left as u64;
            out.connect_failure.get_or_insert_with(|| {
                format!("{left} not admitted within {:?}", plan.connect_timeout)
            });
            // Stop the stragglers so they send nothing more.
            let live: Vec<usize> = fleet.live().filter(|&id| !admitted[id]).collect();
            for id in live {
                fleet.remove(id);
            }
            break;
        }
        fleet.drive(Duration::from_millis(1));
        let now = Instant::now();
        while let Some((id, event)) = fleet.poll_event() {
            match event {
                ClientEvent::Connected => {
                    let took = now.saturating_duration_since(added_at[id]);
                    out.connect.saturating_record(nanos(took).max(1));
                    ids.push(id);
                    admitted[id] = true;
                    handshaking -= 1;
                    progress.connected.fetch_add(1, Ordering::Relaxed);
                }
                ClientEvent::Disconnected { reason } => {
                    if admitted[id] {
                        // Its slot may be reused by a later connection.
                        admitted[id] = false;
                        ids.retain(|&x| x != id);
                        out.closed_during_run += 1;
                        out.close_reason.get_or_insert_with(|| describe(reason));
                    } else {
                        handshaking -= 1;
                        out.connect_failed += 1;
                        out.connect_failure.get_or_insert_with(|| describe(reason));
                    }
                    fleet.remove(id);
                }
                ClientEvent::Message { data, .. } => fleet.recycle(id, data),
                // A draining server goes on serving its connections: keep measuring.
                ClientEvent::Draining { .. } => {}
            }
        }
    }
    out.connected = ids.len() as u64;
    Ok(ids)
}

/// Accounts one event after the connect phase; `run` carries `(t0, seen bits)` once the
/// schedule has started.
fn note_event<T: Transport>(
    fleet: &mut Conns<T>,
    id: usize,
    event: ClientEvent,
    run: Option<(Instant, &mut Vec<u64>)>,
    plan: &Plan,
    out: &mut Outcome,
) {
    match event {
        ClientEvent::Message { data, .. } => {
            match (Stamp::decode(&data), run) {
                (Some(s), Some((t0, seen))) if s.thread == plan.thread => {
                    let word = usize::try_from(s.seq / 64).unwrap_or(usize::MAX);
                    let bit = 1u64 << (s.seq % 64);
                    match seen.get_mut(word) {
                        Some(w) if *w & bit != 0 => out.duplicates += 1,
                        Some(w) => {
                            *w |= bit;
                            out.echoed += 1;
                            let now = nanos(Instant::now().saturating_duration_since(t0));
                            out.rtt
                                .saturating_record(now.saturating_sub(s.scheduled_ns).max(1));
                        }
                        None => out.foreign += 1,
                    }
                }
                _ => out.foreign += 1,
            }
            fleet.recycle(id, data);
        }
        ClientEvent::Disconnected { reason } => {
            out.closed_during_run += 1;
            out.close_reason.get_or_insert_with(|| describe(reason));
        }
        ClientEvent::Connected | ClientEvent::Draining { .. } => {}
    }
}

fn describe(reason: DisconnectReason) -> String {
    format!("{reason:?}")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Marks the thread ready when dropped, so a thread that fails while connecting does not
/// leave the others waiting for it.
struct ReadyGuard<'a>(Option<&'a AtomicUsize>);

impl ReadyGuard<'_> {
    fn release(&mut self) {
        if let Some(r) = self.0.take() {
            r.fetch_add(1, Ordering::Release);
        }
    }
}

impl Drop for ReadyGuard<'_> {
    fn drop(&mut self) {
        self.release();
    }
}
