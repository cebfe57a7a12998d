//! One data-path loop for every backend and every application.
//!
//! A worker is a [`Port`] — where datagrams come from and go to: an AF_XDP socket and
//! its UMEM ([`xdp::XdpPort`]), or a kernel UDP socket ([`udp::UdpPort`]) — driven by
//! [`run`] for a [`Handler`] — what answers them: the protocol
//! ([`crate::service::Service`]) or a raw app ([`raw::Discard`], [`raw::UdpEcho`]).
//! The loop owns what every data path shares: the order of a round, the publish
//! cadence, the latency histogram, the idle strategy and the shutdown drain; a port
//! owns only its I/O.
//!
//! One round: [`Port::receive`] takes up to [`BATCH`] datagrams, [`Port::deliver`]
//! hands each to the handler, [`Handler::on_round`] runs timers and the application,
//! [`Port::transmit`] sends the replies and what the handler originates. With nothing
//! received and nothing waiting to leave, the worker waits as its [`Idle`] strategy
//! says: sleeps until traffic or the next protocol deadline (`--wait sleep`), busy-polls
//! (`--wait spin`), or keeps checking its rings for a short while after dense traffic
//! before it sleeps (`--wait adaptive`). The handler's next deadline is asked for only
//! when the worker is about to sleep.

use std::{
    net::SocketAddr,
    sync::atomic::{
        AtomicBool,
        Ordering::{Relaxed, SeqCst},
    },
    time::{Duration, Instant},
};

use xrudp_proto::Transmit;

use crate::telemetry::{Counters, Published, Tally, Worker, latency::Recorder};

pub(crate) mod raw;
pub(crate) mod udp;
pub(crate) mod xdp;

/// Datagrams taken per round.
pub(crate) const BATCH: usize = 64;

/// After [`Handler::shutdown`], the rounds every data path still drives before its
/// worker leaves, [`SHUTDOWN_PAUSE`] apart: they let the disconnect notices, and their
/// redundant copies, out.
pub(crate) const SHUTDOWN_ROUNDS: u32 = 4;
/// The pause between two [`SHUTDOWN_ROUNDS`].
pub(crate) const SHUTDOWN_PAUSE: Duration = Duration::from_millis(5);

/// How often the figures that need work to gather (protocol figures, the latency
/// histogram, ring levels) are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// The longest an idle worker sleeps before it looks at `stop` again.
const IDLE_MS: i32 = 100;

/// What a handler does with a received datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Taken (or dropped) by the handler; nothing goes back for it.
    Consumed,
    /// Send the same UDP payload back to its sender (the AF_XDP port turns the frame
    /// around in place).
    Echo,
}

/// Wakes a sleeping worker when its application has queued work for it (the embedding
/// API's commands): the worker says when it sleeps, and ringing costs one write(2) then
/// and nothing otherwise.
#[derive(Debug)]
pub(crate) struct Doorbell {
    fd: crate::sys::EventFd,
    asleep: AtomicBool,
}

impl Doorbell {
    /// A doorbell (an eventfd).
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Self {
            fd: crate::sys::EventFd::new()?,
            asleep: AtomicBool::new(false),
        })
    }

    /// After queuing work for the worker: wakes it if it sleeps.
    pub(crate) fn ring(&self) {
        // SeqCst pairs with `sleeping`: either the worker sees the work queued before
        // it sleeps, or this sees it asleep.
        if self.asleep.load(SeqCst) {
            self.fd.signal();
        }
    }

    /// The worker is about to sleep (it checks for queued work next).
    fn sleeping(&self) {
        self.asleep.store(true, SeqCst);
    }

    /// The worker is awake again.
    fn awake(&self) {
        self.asleep.store(false, SeqCst);
        self.fd.clear();
    }
}

/// What answers the datagrams of one worker.
pub(crate) trait Handler {
    /// Whether the handler looks at datagrams at all: when not, a port counts them and
    /// gives their buffers back without parsing them.
    const INSPECTS: bool = true;
    /// Whether the handler originates datagrams through [`Handler::poll_transmit`]: the
    /// AF_XDP port then learns each sender's link-layer route and keeps UMEM frames
    /// back from the fill ring to build them in.
    const ORIGINATES: bool;

    /// One received datagram: its sender and UDP payload.
    fn on_datagram(&mut self, now: Instant, from: SocketAddr, payload: &[u8]) -> Verdict;
    /// Once per round, after the received datagrams: timers and the application.
    fn on_round(&mut self, _now: Instant) {}
    /// Writes the next datagram to send into `out`.
    fn poll_transmit(&mut self, _now: Instant, _out: &mut [u8]) -> Option<Transmit> {
        None
    }
    /// When the handler next needs a round even without traffic.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    /// The worker is stopping: say goodbye (sent during the shutdown rounds).
    fn shutdown(&mut self) {}
    /// Starts draining (`xrudp drain`): admit no one new, tell connected clients to leave
    /// (to `redirect` if given). Raw applications have no clients to tell.
    fn drain(&mut self, _redirect: Option<SocketAddr>) {}
    /// The doorbell the application rings when it queues work, if it can.
    fn doorbell(&self) -> Option<&Doorbell> {
        None
    }
    /// Whether the application has work queued for the worker (then it does not sleep).
    fn has_work(&self) -> bool {
        false
    }
    /// Publishes the handler's own figures.
    fn publish(&self, _to: &Published) {}
}

/// How an idle worker waits for traffic (`--wait`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WaitStrategy {
    /// Sleep until traffic or the next protocol deadline (AF_XDP need_wakeup, or
    /// poll(2) on a kernel socket): near-zero CPU when idle.
    Sleep,
    /// Never sleep: the socket's busy-poll loop drives the NAPI context (a core per
    /// worker spins at 100 %), for the lowest latency.
    Spin,
    /// Keep checking the rings, without a syscall, for up to `--spin-us` after the last
    /// datagram while datagrams arrive closer together than that, then sleep as
    /// `sleep` does: close to `spin`'s latency under load, `sleep`'s CPU when idle.
    Adaptive,
}

impl WaitStrategy {
    /// The name `xrudp stats` shows ("need_wakeup", "busy-poll" or "adaptive").
    #[must_use]
    pub fn wakeup_name(self) -> &'static str {
        match self {
            Self::Sleep => "need_wakeup",
            Self::Spin => "busy-poll",
            Self::Adaptive => "adaptive",
        }
    }

    /// Whether the sockets busy-poll (need_wakeup off, busy-poll options on).
    #[must_use]
    pub fn busy_poll(self) -> bool {
        self == Self::Spin
    }
}

/// How an idle worker waits, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Poll once without sleeping (`--wait spin`: the syscall drives busy polling).
    Spin,
    /// Look again without a syscall (`--wait adaptive`, within its spin window).
    Peek,
    /// Sleep until traffic arrives or this many milliseconds pass.
    Sleep(i32),
}

/// A worker's idle strategy: [`WaitStrategy`] with its spin window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Idle {
    strategy: WaitStrategy,
    /// With [`WaitStrategy::Adaptive`]: how long after the last datagram to keep looking.
    spin_ns: u64,
}

impl Idle {
    pub(crate) fn new(strategy: WaitStrategy, spin: Duration) -> Self {
        Self {
            strategy,
            spin_ns: u64::try_from(spin.as_nanos()).unwrap_or(u64::MAX),
        }
    }
}

/// What the adaptive strategy knows of the traffic: when datagrams last came, and how
/// far apart receiving rounds have been lately (a moving average, 1/8 per round).
#[derive(Clone, Copy, Debug)]
struct Traffic {
    last: Option<Instant>,
    gap_ns: u64,
}

impl Traffic {
    fn new() -> Self {
        Self {
            last: None,
            gap_ns: u64::MAX,
        }
    }

    fn on_receive(&mut self, now: Instant) {
        if let Some(last) = self.last {
            let gap =
                u64::try_from(now.saturating_duration_since(last).as_nanos()).unwrap_or(u64::MAX);
            self.gap_ns = if self.gap_ns == u64::MAX {
                gap
            } else {
                self.gap_ns - self.gap_ns / 8 + gap / 8
            };
        }
        self.last = Some(now);
    }

    /// Whether to keep looking rather than sleep: datagrams came within the window and
    /// lately arrive closer together than it, so the next one is likely inside it.
    fn spin(&self, now: Instant, window_ns: u64) -> bool {
        self.last.is_some_and(|last| {
            let since =
                u64::try_from(now.saturating_duration_since(last).as_nanos()).unwrap_or(u64::MAX);
            since < window_ns && self.gap_ns < window_ns
        })
    }
}

/// Where a worker's datagrams come from and go to.
pub(crate) trait Port {
    /// Housekeeping (sent frames back, receive buffers topped up, replies that waited
    /// for room sent), then takes up to [`BATCH`] received datagrams; returns how many.
    fn receive(&mut self, t: &mut Tally) -> usize;
    /// Hands the datagrams [`Port::receive`] took to `handler`, in order, and queues the
    /// replies it asks for.
    fn deliver<H: Handler>(&mut self, now: Instant, handler: &mut H, t: &mut Tally);
    /// Sends the queued replies and what `handler` originates.
    fn transmit<H: Handler>(&mut self, now: Instant, handler: &mut H, t: &mut Tally);
    /// Whether datagrams still wait for room on the way out (the worker does not sleep).
    fn backlogged(&self) -> bool;
    /// The longest the port lets the worker sleep now.
    fn max_sleep_ms(&self) -> i32 {
        IDLE_MS
    }
    /// Waits for traffic (and, with `bell`, until that descriptor is readable).
    fn wait(&mut self, how: Wait, bell: Option<std::os::fd::RawFd>);
    /// Called once, after the first datagrams arrived.
    fn on_first_traffic(&mut self, _worker: &Worker) {}
    /// Publishes the port's levels: every round (cheap ones), and with `periodic` the
    /// ones read from the kernel's rings.
    fn publish_levels(&mut self, _c: &Counters, _periodic: bool) {}
    /// Gives back what the port holds (frames the kernel may still read) before it closes.
    fn close(&mut self) {}
}

/// Drives `port` for `handler` until `stop` is set, then for [`SHUTDOWN_ROUNDS`] more
/// rounds after telling the handler; publishes into `worker`.
pub(crate) fn run<P: Port, H: Handler>(
    port: &mut P,
    handler: &mut H,
    worker: &Worker,
    idle: Idle,
    stop: &AtomicBool,
) {
    let c = &worker.counters;
    // The first publication allocates once (reject-reason names, room for every slot):
    // make it before serving, not under traffic.
    handler.publish(&worker.published);
    let mut latency = Recorder::default();
    let mut last_publish = Instant::now();
    let mut first_traffic = true;
    let mut stopping_rounds = 0u32;
    let mut draining = false;
    let mut heartbeat = 0u64;
    let mut traffic = Traffic::new();
    loop {
        let stopping = stop.load(Relaxed);
        let mut t = Tally::default();
        let n = port.receive(&mut t);
        if n > 0 && first_traffic {
            first_traffic = false;
            port.on_first_traffic(worker);
        }
        let now = Instant::now();
        if n > 0 {
            traffic.on_receive(now);
        }
        t.rx_packets = n as u64;
        port.deliver(now, handler, &mut t);
        if stopping && stopping_rounds == 0 {
            handler.shutdown();
        }
        handler.on_round(now);
        port.transmit(now, handler, &mut t);
        if n > 0 {
            // Receive to transmit for this batch, counted once per datagram (docs/STATS.md).
            latency.record(now.elapsed(), n as u64);
        }
        t.publish(c);
        let periodic = now.duration_since(last_publish) >= PUBLISH_EVERY;
        port.publish_levels(c, periodic);
        if periodic {
            if !draining && let Some(redirect) = worker.drain.get() {
                draining = true;
                handler.drain(*redirect);
            }
            handler.publish(&worker.published);
            latency.flush(&c.latency);
            last_publish = now;
            // Proof that this loop turns (the `--agones` health pings): one store per
            // publication, not per datagram.
            heartbeat += 1;
            worker.heartbeat.store(heartbeat, Relaxed);
        }
        if stopping {
            stopping_rounds += 1;
            if stopping_rounds >= SHUTDOWN_ROUNDS {
                handler.publish(&worker.published);
                break;
            }
            std::thread::sleep(SHUTDOWN_PAUSE);
            continue;
        }
        if n == 0 && !port.backlogged() {
            wait(port, handler, idle, &traffic, now);
        }
    }
    port.close();
}

/// Nothing arrived and nothing waits to leave: spin once, look again, or sleep until
/// traffic, the handler's next deadline or the port's limit, whichever comes first.
fn wait<P: Port, H: Handler>(
    port: &mut P,
    handler: &H,
    idle: Idle,
    traffic: &Traffic,
    now: Instant,
) {
    match idle.strategy {
        WaitStrategy::Spin => {
            port.wait(Wait::Spin, None);
            return;
        }
        WaitStrategy::Adaptive if traffic.spin(now, idle.spin_ns) => {
            port.wait(Wait::Peek, None);
            return;
        }
        WaitStrategy::Adaptive | WaitStrategy::Sleep => {}
    }
    let deadline = handler.poll_timeout().map_or(IDLE_MS, |d| {
        i32::try_from(d.saturating_duration_since(now).as_millis()).unwrap_or(IDLE_MS)
    });
    let ms = deadline.min(IDLE_MS).min(port.max_sleep_ms());
    if ms <= 0 {
        return;
    }
    let bell = handler.doorbell();
    if let Some(b) = bell {
        b.sleeping();
        // Work queued before the flag was up would ring no one: look once more.
        if handler.has_work() {
            b.awake();
            return;
        }
    }
    port.wait(Wait::Sleep(ms), bell.map(|b| b.fd.raw()));
    if let Some(b) = bell {
        b.awake();
    }
}

#[cfg(test)]
mod tests;
