//! The drive loop over an in-memory port: what every backend inherits from it.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use super::*;

/// A port fed from a script of rounds; it sets `stop` once the script is played.
struct Scripted {
    rounds: VecDeque<Vec<(SocketAddr, Vec<u8>)>>,
    current: Vec<(SocketAddr, Vec<u8>)>,
    replies: Vec<(SocketAddr, Vec<u8>)>,
    sent: Vec<(SocketAddr, Vec<u8>)>,
    waits: Vec<Wait>,
    closed: u32,
    stop: Arc<AtomicBool>,
}

impl Scripted {
    fn new(rounds: Vec<Vec<(SocketAddr, Vec<u8>)>>, stop: &Arc<AtomicBool>) -> Self {
        Self {
            rounds: rounds.into(),
            current: Vec::new(),
            replies: Vec::new(),
            sent: Vec::new(),
            waits: Vec::new(),
            closed: 0,
            stop: Arc::clone(stop),
        }
    }
}

impl Port for Scripted {
    fn receive(&mut self, _t: &mut Tally) -> usize {
        match self.rounds.pop_front() {
            Some(r) => self.current = r,
            None => self.stop.store(true, Relaxed),
        }
        self.current.len()
    }

    fn deliver<H: Handler>(&mut self, now: Instant, handler: &mut H, t: &mut Tally) {
        for (from, data) in self.current.drain(..) {
            t.rx_bytes += data.len() as u64;
            if handler.on_datagram(now, from, &data) == Verdict::Echo {
                self.replies.push((from, data));
            }
        }
    }

    fn transmit<H: Handler>(&mut self, now: Instant, handler: &mut H, t: &mut Tally) {
        let mut buf = [0u8; 64];
        while let Some(tr) = handler.poll_transmit(now, &mut buf) {
            self.replies.push((tr.dst, buf[..tr.len].to_vec()));
        }
        for r in self.replies.drain(..) {
            t.tx_packets += 1;
            t.tx_bytes += r.1.len() as u64;
            self.sent.push(r);
        }
    }

    fn backlogged(&self) -> bool {
        false
    }

    fn wait(&mut self, how: Wait, _bell: Option<std::os::fd::RawFd>) {
        self.waits.push(how);
    }

    fn close(&mut self) {
        self.closed += 1;
    }
}

/// A protocol-like handler: counts what it is asked, says goodbye once on shutdown.
#[derive(Default)]
struct Probe {
    datagrams: u64,
    rounds: u64,
    shutdowns: u32,
    rounds_after_shutdown: u32,
    goodbyes: u32,
    deadline: Option<Instant>,
}

impl Handler for Probe {
    const ORIGINATES: bool = true;

    fn on_datagram(&mut self, _now: Instant, _from: SocketAddr, _payload: &[u8]) -> Verdict {
        self.datagrams += 1;
        Verdict::Consumed
    }

    fn on_round(&mut self, _now: Instant) {
        self.rounds += 1;
        if self.shutdowns > 0 {
            self.rounds_after_shutdown += 1;
        }
    }

    fn poll_transmit(&mut self, _now: Instant, out: &mut [u8]) -> Option<Transmit> {
        if self.shutdowns > 0 && self.goodbyes < self.shutdowns {
            self.goodbyes += 1;
            out[..3].copy_from_slice(b"bye");
            return Some(Transmit {
                dst: addr(9),
                len: 3,
            });
        }
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    fn shutdown(&mut self) {
        self.shutdowns += 1;
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], port))
}

fn script(rounds: usize, per_round: usize) -> Vec<Vec<(SocketAddr, Vec<u8>)>> {
    (0..rounds)
        .map(|r| {
            (0..per_round)
                .map(|i| (addr(1000 + i as u16), format!("r{r}m{i}").into_bytes()))
                .collect()
        })
        .collect()
}

#[test]
fn the_raw_echo_answers_every_datagram_once_in_order_and_counts_it() {
    let stop = Arc::new(AtomicBool::new(false));
    let input = script(5, 7);
    let mut port = Scripted::new(input.clone(), &stop);
    let worker = Worker::new(0, None);
    run(&mut port, &mut raw::UdpEcho, &worker, SLEEP, &stop);
    let expected: Vec<_> = input.into_iter().flatten().collect();
    assert_eq!(port.sent, expected);
    let c = &worker.counters;
    assert_eq!(c.rx_packets.load(Relaxed), 35);
    assert_eq!(c.tx_packets.load(Relaxed), 35);
    assert_eq!(c.rx_bytes.load(Relaxed), c.tx_bytes.load(Relaxed));
    assert_eq!(
        port.closed, 1,
        "the port is closed once, after the last round"
    );
}

#[test]
fn shutdown_is_told_once_and_followed_by_the_drain_rounds() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut port = Scripted::new(script(3, 2), &stop);
    let mut probe = Probe::default();
    let worker = Worker::new(0, None);
    run(&mut port, &mut probe, &worker, SLEEP, &stop);
    assert_eq!(probe.datagrams, 6);
    assert_eq!(probe.shutdowns, 1);
    assert_eq!(probe.rounds_after_shutdown, SHUTDOWN_ROUNDS);
    assert_eq!(
        port.sent,
        vec![(addr(9), b"bye".to_vec())],
        "the goodbye went out"
    );
    assert_eq!(port.closed, 1);
}

const SLEEP: Idle = Idle {
    strategy: WaitStrategy::Sleep,
    spin_ns: 0,
};

#[test]
fn an_idle_worker_sleeps_until_the_nearest_of_deadline_and_limit_or_spins_when_busy_polling() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut port = Scripted::new(Vec::new(), &stop);
    let now = Instant::now();
    let mut probe = Probe::default();
    let quiet = Traffic::new();
    wait(&mut port, &probe, SLEEP, &quiet, now);
    probe.deadline = Some(now + Duration::from_millis(7));
    wait(&mut port, &probe, SLEEP, &quiet, now);
    probe.deadline = Some(now + Duration::from_secs(10));
    wait(&mut port, &probe, SLEEP, &quiet, now);
    probe.deadline = Some(now);
    wait(&mut port, &probe, SLEEP, &quiet, now);
    let spin = Idle::new(WaitStrategy::Spin, Duration::ZERO);
    wait(&mut port, &probe, spin, &quiet, now);
    assert_eq!(
        port.waits,
        [
            Wait::Sleep(IDLE_MS),
            Wait::Sleep(7),
            Wait::Sleep(IDLE_MS),
            // A deadline already due: no sleep at all.
            Wait::Spin,
        ]
    );
}

#[test]
fn adaptive_looks_again_after_dense_traffic_and_sleeps_after_sparse_or_none() {
    let stop = Arc::new(AtomicBool::new(false));
    let mut port = Scripted::new(Vec::new(), &stop);
    let adaptive = Idle::new(WaitStrategy::Adaptive, Duration::from_micros(200));
    let probe = Probe::default();
    let t0 = Instant::now();
    let us = |n| t0 + Duration::from_micros(n);
    // Never any traffic: sleep.
    wait(&mut port, &probe, adaptive, &Traffic::new(), t0);
    // Datagrams every 20 µs: look again within the window, sleep past it.
    let mut dense = Traffic::new();
    for i in 0..16 {
        dense.on_receive(us(20 * i));
    }
    wait(&mut port, &probe, adaptive, &dense, us(300 + 50));
    wait(&mut port, &probe, adaptive, &dense, us(300 + 250));
    // Datagrams a millisecond apart (keepalives): the next is not worth spinning for.
    let mut sparse = Traffic::new();
    for i in 0..16 {
        sparse.on_receive(us(1_000 * i));
    }
    wait(&mut port, &probe, adaptive, &sparse, us(15_000 + 10));
    assert_eq!(
        port.waits,
        [
            Wait::Sleep(IDLE_MS),
            Wait::Peek,
            Wait::Sleep(IDLE_MS),
            Wait::Sleep(IDLE_MS),
        ]
    );
}

/// A port with no traffic whose sleep lasts 10 s unless its doorbell descriptor becomes
/// readable; it records how each sleep ended, and stops the loop after the first sleep or
/// after `rounds` rounds.
struct Sleepy {
    woken: Vec<bool>,
    rounds: u32,
    stop: Arc<AtomicBool>,
}

impl Port for Sleepy {
    fn receive(&mut self, _t: &mut Tally) -> usize {
        self.rounds = self.rounds.saturating_sub(1);
        if self.rounds == 0 {
            self.stop.store(true, SeqCst);
        }
        0
    }

    fn deliver<H: Handler>(&mut self, _now: Instant, _handler: &mut H, _t: &mut Tally) {}

    fn transmit<H: Handler>(&mut self, _now: Instant, _handler: &mut H, _t: &mut Tally) {}

    fn backlogged(&self) -> bool {
        false
    }

    fn wait(&mut self, how: Wait, bell: Option<std::os::fd::RawFd>) {
        if let (Wait::Sleep(_), Some(fd)) = (how, bell) {
            let readable = crate::sys::poll_readable([fd, fd], 10_000).expect("poll");
            self.woken.push(readable);
            self.stop.store(true, SeqCst);
        }
    }
}

/// An application side that queues work through a doorbell; with `serve` off it never
/// takes it, so the work stays queued.
struct Rung {
    bell: Arc<Doorbell>,
    work: Arc<AtomicBool>,
    serve: bool,
    served: usize,
}

impl Handler for Rung {
    const ORIGINATES: bool = false;

    fn on_datagram(&mut self, _now: Instant, _from: SocketAddr, _payload: &[u8]) -> Verdict {
        Verdict::Consumed
    }

    fn on_round(&mut self, _now: Instant) {
        if self.serve && self.work.swap(false, SeqCst) {
            self.served += 1;
        }
    }

    fn doorbell(&self) -> Option<&Doorbell> {
        Some(&self.bell)
    }

    fn has_work(&self) -> bool {
        self.work.load(SeqCst)
    }
}

/// Work the application queues while the worker sleeps wakes it through the doorbell at
/// once, not at the end of its sleep (the embedded GameServer's replies used to wait for
/// the next protocol timer, ~4 ms); and work queued as it goes to sleep keeps it awake.
#[test]
fn the_doorbell_wakes_a_sleeping_worker_for_queued_work() {
    let stop = Arc::new(AtomicBool::new(false));
    let bell = Arc::new(Doorbell::new().expect("eventfd"));
    let work = Arc::new(AtomicBool::new(false));
    let ringer = {
        let (bell, work) = (Arc::clone(&bell), Arc::clone(&work));
        std::thread::spawn(move || {
            // Wait (up to 60 s) until the worker says it sleeps, then queue and ring.
            for _ in 0..60_000 {
                if bell.asleep.load(SeqCst) {
                    work.store(true, SeqCst);
                    bell.ring();
                    return true;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            false
        })
    };
    let mut port = Sleepy {
        woken: Vec::new(),
        rounds: u32::MAX,
        stop: Arc::clone(&stop),
    };
    let mut app = Rung {
        bell: Arc::clone(&bell),
        work: Arc::clone(&work),
        serve: true,
        served: 0,
    };
    let worker = Worker::new(0, None);
    run(&mut port, &mut app, &worker, SLEEP, &stop);
    assert!(ringer.join().expect("ringer"), "the worker never slept");
    assert_eq!(
        port.woken,
        [true],
        "woken by the doorbell, not by the 10 s timeout"
    );
    assert_eq!(app.served, 1, "the work was served after the wake-up");
    assert!(!bell.asleep.load(SeqCst), "awake after the wake-up");

    // Work queued (and not yet taken) when the worker would sleep: it never sleeps.
    stop.store(false, SeqCst);
    work.store(true, SeqCst);
    let mut port = Sleepy {
        woken: Vec::new(),
        rounds: 3,
        stop: Arc::clone(&stop),
    };
    let mut app = Rung {
        bell: Arc::clone(&bell),
        work,
        serve: false,
        served: 0,
    };
    run(&mut port, &mut app, &worker, SLEEP, &stop);
    assert!(
        port.woken.is_empty(),
        "slept with work queued: {:?}",
        port.woken
    );
    assert!(!bell.asleep.load(SeqCst));
}
