//! A deterministic model of the network between simulated endpoints (STYLE.md §5).
//!
//! Each direction `(from, to)` is an independent link with its own random stream derived
//! from [`Model::seed`] and the two addresses, its own Gilbert-Elliott state and (by
//! default, see [`Sharing`]) its own bottleneck queue, so traffic one way never changes
//! what happens the other way. The
//! datagrams in flight wait in one heap keyed by `(arrival, id)`; the same seed and the
//! same calls give the same deliveries, bit for bit.
//!
//! A datagram passes these stages in order:
//! 1. MTU: larger than [`Model::mtu`] bytes (or the last of [`Model::mtu_changes`] in
//!    force) is dropped, silently: a black hole, as a path without ICMP feedback is.
//! 2. Bottleneck: with [`Model::bandwidth`], it waits behind its queue's backlog and takes
//!    `len / bandwidth` to serialise; if the backlog plus it exceeds
//!    [`Model::queue_bytes`] it is dropped (drop-tail; an idle link always takes one).
//! 3. Blackhole: dropped if it enters or leaves the bottleneck inside a blackhole window.
//! 4. Loss: random with [`Model::loss`], or per the Gilbert-Elliott chain of
//!    [`Model::burst`] (`loss` in the good state, `loss_in_bad` in the bad one).
//! 5. Delay: `delay` plus a uniform draw in `[0, jitter]`. The link is FIFO: jitter alone
//!    never reorders (`arrival = max(previous arrival, departure + delay + jitter)`).
//! 6. Reorder: with probability [`Model::reorder`] the datagram is held back a further
//!    uniform `(0, max(delay, 1 ms)]` without holding back the ones behind it.
//! 7. Duplication and corruption: with [`Model::duplicate`] a second copy arrives
//!    with it; each copy independently has one random bit flipped with [`Model::corrupt`].

use core::cmp::{Ordering, Reverse};
use core::time::Duration;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::time::Instant;

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The impairments of every direction of the simulated network.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra one-way delay, uniform in `[0, jitter]`; does not reorder by itself.
    pub jitter: Duration,
    /// Probability that a datagram is lost (in the good state when `burst` is set).
    pub loss: f64,
    /// Bursty loss: a Gilbert-Elliott chain stepped once per datagram.
    pub burst: Option<Burst>,
    /// Probability that a datagram is held back so that later ones overtake it.
    pub reorder: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability that a delivered copy has one bit flipped.
    pub corrupt: f64,
    /// Datagrams longer than this many bytes are dropped.
    pub mtu: usize,
    /// Changes of the MTU `(at, mtu)`, measured from the network's start, in time order:
    /// from `at` on the MTU is `mtu` (until the next change).
    pub mtu_changes: Vec<(Duration, usize)>,
    /// Bottleneck rate in bytes per second (UDP payload bytes); `None` = unlimited.
    pub bandwidth: Option<u64>,
    /// Bottleneck queue capacity in bytes (drop-tail); used only with `bandwidth`.
    pub queue_bytes: usize,
    /// Windows `(start, length)`, measured from the network's start, in which every
    /// datagram is dropped.
    pub blackholes: Vec<(Duration, Duration)>,
    /// Seed of every random draw.
    pub seed: u64,
    /// Which directions share one bottleneck queue.
    pub sharing: Sharing,
}

/// Which datagrams share one bottleneck queue of [`Model::bandwidth`] bytes per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Sharing {
    /// Each direction `(from, to)` has its own queue.
    #[default]
    Direction,
    /// Everything one address sends shares a queue: a host's uplink (the server's, when
    /// it fans out to many clients).
    Sender,
    /// Everything sent to one address shares a queue: a host's downlink (the server's,
    /// when many clients send to it; a client's, when several servers send to it).
    Receiver,
}

impl Default for Model {
    /// A perfect link: no delay, loss, reordering, duplication, corruption or limits.
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            reorder: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            mtu: usize::MAX,
            mtu_changes: Vec::new(),
            bandwidth: None,
            queue_bytes: 64 * 1024,
            blackholes: Vec::new(),
            seed: 0,
            sharing: Sharing::Direction,
        }
    }
}

/// A Gilbert-Elliott two-state loss chain, stepped once per datagram before the loss draw.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Burst {
    /// Probability of moving from the good to the bad state.
    pub p_good_to_bad: f64,
    /// Probability of moving from the bad to the good state (1 / mean burst length).
    pub p_bad_to_good: f64,
    /// Loss probability in the bad state.
    pub loss_in_bad: f64,
}

impl Burst {
    /// The long-run share of datagrams that see the bad state: `p_gb / (p_gb + p_bg)`.
    #[must_use]
    pub fn bad_share(&self) -> f64 {
        let sum = self.p_good_to_bad + self.p_bad_to_good;
        if sum > 0.0 {
            self.p_good_to_bad / sum
        } else {
            0.0
        }
    }
}

/// Counts of what the network did, in datagrams unless named bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Datagrams handed to [`Network::send`].
    pub sent: u64,
    /// Bytes handed to [`Network::send`].
    pub sent_bytes: u64,
    /// Copies handed out by [`Network::deliver`] (duplicates included).
    pub delivered: u64,
    /// Bytes handed out by [`Network::deliver`].
    pub delivered_bytes: u64,
    /// Dropped by random or bursty loss.
    pub lost: u64,
    /// Dropped because the bottleneck queue was full.
    pub queue_dropped: u64,
    /// Dropped for exceeding the MTU.
    pub mtu_dropped: u64,
    /// Dropped inside a blackhole window.
    pub blackholed: u64,
    /// Extra copies created.
    pub duplicated: u64,
    /// Copies with a flipped bit.
    pub corrupted: u64,
    /// Datagrams held back for reordering.
    pub reordered: u64,
}

impl NetworkStats {
    fn add(&mut self, other: &Self) {
        self.sent += other.sent;
        self.sent_bytes += other.sent_bytes;
        self.delivered += other.delivered;
        self.delivered_bytes += other.delivered_bytes;
        self.lost += other.lost;
        self.queue_dropped += other.queue_dropped;
        self.mtu_dropped += other.mtu_dropped;
        self.blackholed += other.blackholed;
        self.duplicated += other.duplicated;
        self.corrupted += other.corrupted;
        self.reordered += other.reordered;
    }
}

/// The simulated network: datagrams in flight between any addresses, under one [`Model`].
#[derive(Debug)]
pub struct Network {
    model: Model,
    start: Instant,
    links: BTreeMap<(SocketAddr, SocketAddr), Link>,
    /// Bottleneck queues, keyed per [`Sharing`]: `(from, to)`, `(from, from)` or `(to, to)`.
    queues: BTreeMap<(SocketAddr, SocketAddr), Queue>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    next_id: u64,
    /// Delivered datagrams' buffers handed back with [`Network::recycle`], reused by `send`
    /// so that a steady run allocates nothing (the allocation tests count on it).
    spare: Vec<Vec<u8>>,
}

/// Datagram buffers the network keeps for reuse at most.
const MAX_SPARE: usize = 4096;

impl Network {
    /// A network with no traffic yet; blackhole windows count from `start`.
    #[must_use]
    pub fn new(model: Model, start: Instant) -> Self {
        Self {
            model,
            start,
            links: BTreeMap::new(),
            queues: BTreeMap::new(),
            in_flight: BinaryHeap::new(),
            next_id: 0,
            spare: Vec::new(),
        }
    }

    /// Puts a datagram from `from` to `to` on the network at `now`.
    pub fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: &[u8]) {
        let model = &self.model;
        let link = self
            .links
            .entry((from, to))
            .or_insert_with(|| Link::new(model.seed, from, to));
        link.stats.sent += 1;
        link.stats.sent_bytes += data.len() as u64;

        // 1. MTU.
        let since = now.saturating_duration_since(self.start);
        let mtu = model
            .mtu_changes
            .iter()
            .take_while(|&&(at, _)| at <= since)
            .last()
            .map_or(model.mtu, |&(_, m)| m);
        if data.len() > mtu {
            link.stats.mtu_dropped += 1;
            return;
        }
        // 2. Bottleneck queue, drop-tail.
        let departure = if let Some(rate) = model.bandwidth {
            let key = match model.sharing {
                Sharing::Direction => (from, to),
                Sharing::Sender => (from, from),
                Sharing::Receiver => (to, to),
            };
            let queue = self.queues.entry(key).or_default();
            let Some(departure) = queue.enqueue(now, data.len(), rate, model.queue_bytes) else {
                link.stats.queue_dropped += 1;
                return;
            };
            departure
        } else {
            now
        };
        // 3. Blackholes.
        if blackholed(&model.blackholes, self.start, now)
            || blackholed(&model.blackholes, self.start, departure)
        {
            link.stats.blackholed += 1;
            return;
        }
        // 4. Loss, random or Gilbert-Elliott.
        let loss = link.loss_rate(model);
        if link.chance(loss) {
            link.stats.lost += 1;
            return;
        }
        // 5. Delay and jitter on a FIFO link; 6. reordering.
        let arrival = link.arrival(model, departure);
        // 7. Duplication, then corruption of each copy.
        let copies = if link.chance(model.duplicate) {
            link.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            // Spare buffers all hold an MTU (up to 64 KiB), so reusing one does not grow it.
            let mut payload = self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(model.mtu.min(1 << 16).max(data.len())));
            payload.clear();
            payload.extend_from_slice(data);
            if !payload.is_empty() && link.chance(model.corrupt) {
                let bit = link.below(payload.len() as u64 * 8);
                payload[(bit / 8) as usize] ^= 1 << (bit % 8);
                link.stats.corrupted += 1;
            }
            let id = self.next_id;
            self.next_id += 1;
            self.in_flight.push(Reverse(InFlight {
                arrival,
                id,
                from,
                to,
                data: payload,
            }));
        }
    }

    /// When the next datagram in flight arrives, if any is.
    #[must_use]
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.peek().map(|Reverse(d)| d.arrival)
    }

    /// The next datagram that has arrived by `now`, as `(from, to, data)`; hand `data` back
    /// with [`Network::recycle`] to have it reused.
    pub fn deliver(&mut self, now: Instant) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        if self.next_arrival()? > now {
            return None;
        }
        let Reverse(d) = self.in_flight.pop()?;
        if let Some(link) = self.links.get_mut(&(d.from, d.to)) {
            link.stats.delivered += 1;
            link.stats.delivered_bytes += d.data.len() as u64;
        }
        Some((d.from, d.to, d.data))
    }

    /// Hands back a delivered datagram's buffer for reuse.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < MAX_SPARE {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Totals over every direction.
    #[must_use]
    pub fn stats(&self) -> NetworkStats {
        let mut total = NetworkStats::default();
        for link in self.links.values() {
            total.add(&link.stats);
        }
        total
    }

    /// The counts of one direction (all zero if it never carried anything).
    #[must_use]
    pub fn link_stats(&self, from: SocketAddr, to: SocketAddr) -> NetworkStats {
        self.links
            .get(&(from, to))
            .map(|l| l.stats)
            .unwrap_or_default()
    }

    /// How many datagrams are in flight.
    #[must_use]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The model in force.
    #[must_use]
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model, to change impairments mid-run (e.g. a bandwidth drop); the change
    /// applies to datagrams sent afterwards.
    pub fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }
}

/// One direction of the network.
#[derive(Debug)]
struct Link {
    rng: ChaCha8Rng,
    /// Gilbert-Elliott state: true in the bad state.
    bad: bool,
    /// Arrival of the latest datagram that kept its place (the FIFO bound).
    last_arrival: Option<Instant>,
    stats: NetworkStats,
}

/// A drop-tail bottleneck queue, as the time its backlog will have been serialised.
#[derive(Debug, Default)]
struct Queue {
    /// When the bottleneck finishes serialising what it holds.
    busy_until: Option<Instant>,
}

impl Queue {
    /// Admits `len` bytes to the bottleneck at `now`; the departure time, or `None` if
    /// the queue is full.
    fn enqueue(
        &mut self,
        now: Instant,
        len: usize,
        rate: u64,
        queue_bytes: usize,
    ) -> Option<Instant> {
        let rate = u128::from(rate.max(1));
        let busy = self.busy_until.map_or(now, |b| b.max(now));
        let backlog_nanos = (busy - now).as_nanos();
        if backlog_nanos > 0 {
            let backlog = (backlog_nanos * rate).div_ceil(1_000_000_000);
            if backlog + len as u128 > queue_bytes as u128 {
                return None;
            }
        }
        let serialise = (len as u128 * 1_000_000_000).div_ceil(rate);
        let departure = busy + Duration::from_nanos(u64::try_from(serialise).unwrap_or(u64::MAX));
        self.busy_until = Some(departure);
        Some(departure)
    }
}

impl Link {
    /// The loss probability for the next datagram: the model's, or under Gilbert-Elliott
    /// burst loss the current state's, after the state's chance to flip.
    fn loss_rate(&mut self, model: &Model) -> f64 {
        match model.burst {
            None => model.loss,
            Some(burst) => {
                let flip = if self.bad {
                    burst.p_bad_to_good
                } else {
                    burst.p_good_to_bad
                };
                if self.chance(flip) {
                    self.bad = !self.bad;
                }
                if self.bad {
                    burst.loss_in_bad
                } else {
                    model.loss
                }
            }
        }
    }

    /// When a datagram leaving at `departure` arrives: delay and jitter on a FIFO link,
    /// or, if reordered, held back past its place without holding back later datagrams.
    fn arrival(&mut self, model: &Model, departure: Instant) -> Instant {
        let jitter = self.up_to(model.jitter);
        let mut arrival = departure + model.delay + jitter;
        if self.chance(model.reorder) {
            let hold = model.delay.max(Duration::from_millis(1));
            let extra =
                self.up_to(hold.saturating_sub(Duration::from_nanos(1))) + Duration::from_nanos(1);
            arrival = self.last_arrival.map_or(arrival, |last| last.max(arrival)) + extra;
            self.stats.reordered += 1;
        } else {
            if let Some(last) = self.last_arrival {
                arrival = arrival.max(last);
            }
            self.last_arrival = Some(arrival);
        }
        arrival
    }

    fn new(seed: u64, from: SocketAddr, to: SocketAddr) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(link_seed(seed, from, to)),
            bad: false,
            last_arrival: None,
            stats: NetworkStats::default(),
        }
    }

    /// True with probability `p` (never for p <= 0, always for p >= 1).
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        unit(self.rng.next_u64()) < p
    }

    /// Uniform in `[0, n)`; 0 for n = 0.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.rng.next_u64() % n }
    }

    /// A uniform duration in `[0, max]`, to the nanosecond.
    fn up_to(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX - 1);
        Duration::from_nanos(self.below(nanos + 1))
    }
}

/// A datagram in flight, ordered by `(arrival, id)`.
#[derive(Debug)]
struct InFlight {
    arrival: Instant,
    id: u64,
    from: SocketAddr,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.arrival, self.id) == (other.arrival, other.id)
    }
}

impl Eq for InFlight {}

impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.arrival, self.id).cmp(&(other.arrival, other.id))
    }
}

/// Whether `at` falls inside one of the `(start, length)` windows counted from `origin`.
fn blackholed(windows: &[(Duration, Duration)], origin: Instant, at: Instant) -> bool {
    let Some(offset) = at.checked_duration_since(origin) else {
        return false;
    };
    windows
        .iter()
        .any(|&(start, length)| offset >= start && offset < start.saturating_add(length))
}

/// A per-direction seed: the model's seed mixed with both addresses (`SplitMix64` steps).
fn link_seed(seed: u64, from: SocketAddr, to: SocketAddr) -> u64 {
    let mut h = splitmix(seed);
    for addr in [from, to] {
        let (ip, tag) = match addr {
            SocketAddr::V4(a) => (u128::from(a.ip().to_bits()), 4u64),
            SocketAddr::V6(a) => (a.ip().to_bits(), 6u64),
        };
        h = splitmix(h ^ tag);
        h = splitmix(h ^ (ip as u64));
        h = splitmix(h ^ ((ip >> 64) as u64));
        h = splitmix(h ^ u64::from(addr.port()));
    }
    h
}

/// The top 53 bits of `bits` as a uniform `f64` in `[0, 1)`.
#[expect(
    clippy::cast_precision_loss,
    reason = "53-bit integers are exact in an f64"
)]
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The `SplitMix64` output function: a bijective 64-bit mix.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
#[expect(
    clippy::unchecked_time_subtraction,
    reason = "test arrivals come after the send times subtracted"
)]
#[expect(clippy::cast_precision_loss, reason = "test counts are far below 2^52")]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A datagram carrying its sequence number.
    fn datagram(seq: u32, len: usize) -> Vec<u8> {
        let mut d = vec![0u8; len.max(4)];
        d[..4].copy_from_slice(&seq.to_be_bytes());
        d
    }

    fn seq_of(d: &[u8]) -> u32 {
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    /// Sends `n` datagrams of `len` bytes from port 1 to port 2, one every `gap`, and
    /// delivers everything; returns `(arrival, seq)` in delivery order.
    fn run(
        model: Model,
        n: u32,
        len: usize,
        gap: Duration,
    ) -> (Vec<(Duration, u32)>, NetworkStats) {
        let t0 = Instant::now();
        let mut net = Network::new(model, t0);
        let mut out = Vec::new();
        let mut now = t0;
        let collect = |net: &mut Network, until: Instant, out: &mut Vec<(Duration, u32)>| {
            while let Some(at) = net.next_arrival().filter(|&at| at <= until) {
                let (from, to, d) = net.deliver(at).expect("arrived");
                assert_eq!((from, to), (addr(1), addr(2)));
                out.push((at - t0, seq_of(&d)));
            }
        };
        for seq in 0..n {
            collect(&mut net, now, &mut out);
            net.send(now, addr(1), addr(2), &datagram(seq, len));
            now += gap;
        }
        collect(&mut net, now + Duration::from_hours(1), &mut out);
        assert_eq!(net.in_flight(), 0);
        (out, net.stats())
    }

    #[test]
    fn perfect_link_delivers_everything_in_order_after_the_delay() {
        let model = Model {
            delay: ms(30),
            ..Model::default()
        };
        let (out, stats) = run(model, 100, 100, ms(1));
        assert_eq!(out.len(), 100);
        for (i, &(at, seq)) in out.iter().enumerate() {
            assert_eq!(seq, i as u32);
            assert_eq!(at, ms(30 + i as u64));
        }
        assert_eq!(
            (stats.sent, stats.delivered, stats.delivered_bytes),
            (100, 100, 10_000)
        );
    }

    #[test]
    fn deliver_waits_for_arrival() {
        let t0 = Instant::now();
        let mut net = Network::new(
            Model {
                delay: ms(10),
                ..Model::default()
            },
            t0,
        );
        net.send(t0, addr(1), addr(2), b"hello");
        assert_eq!(net.next_arrival(), Some(t0 + ms(10)));
        assert!(net.deliver(t0 + ms(9)).is_none());
        assert_eq!(
            net.deliver(t0 + ms(10)),
            Some((addr(1), addr(2), b"hello".to_vec()))
        );
        assert!(net.deliver(t0 + ms(10)).is_none());
        assert_eq!(net.next_arrival(), None);
    }

    #[test]
    fn random_loss_rate_matches_the_model() {
        let model = Model {
            loss: 0.05,
            seed: 7,
            ..Model::default()
        };
        let (out, stats) = run(model, 100_000, 20, Duration::from_micros(10));
        // 5 % of 100 000 is 5 000; the binomial standard deviation is 69.
        assert!((4_800..=5_200).contains(&stats.lost), "lost {}", stats.lost);
        assert_eq!(out.len() as u64 + stats.lost, 100_000);
        // Deterministic: this seed loses exactly this many, run after run (ChaCha8's
        // stream is stable across rand_chacha releases).
        assert_eq!(stats.lost, 4_931);
    }

    #[test]
    fn gilbert_elliott_loss_comes_in_bursts() {
        let burst = Burst {
            p_good_to_bad: 0.01,
            p_bad_to_good: 0.25,
            loss_in_bad: 1.0,
        };
        let model = Model {
            burst: Some(burst),
            seed: 3,
            ..Model::default()
        };
        let (out, stats) = run(model, 200_000, 20, Duration::from_micros(10));
        // Long-run loss = bad share = 0.01 / 0.26 = 3.85 %.
        let rate = stats.lost as f64 / 200_000.0;
        assert!((rate - burst.bad_share()).abs() < 0.004, "loss rate {rate}");
        // Mean burst length = 1 / p_bad_to_good = 4 datagrams.
        let mut bursts = 0u64;
        let mut expected = 0u32;
        for &(_, seq) in &out {
            if seq != expected {
                bursts += 1;
            }
            expected = seq + 1;
        }
        let mean = stats.lost as f64 / bursts as f64;
        assert!((3.6..=4.4).contains(&mean), "mean burst {mean}");
    }

    #[test]
    fn jitter_alone_keeps_order() {
        let model = Model {
            delay: ms(50),
            jitter: ms(30),
            seed: 11,
            ..Model::default()
        };
        let (out, stats) = run(model, 5_000, 100, Duration::from_micros(500));
        assert_eq!(out.len(), 5_000);
        assert!(out.windows(2).all(|w| w[0].1 < w[1].1 && w[0].0 <= w[1].0));
        // The delays really vary within [50, 80] ms (plus FIFO waiting).
        let delays: Vec<Duration> = out
            .iter()
            .map(|&(at, seq)| at - Duration::from_micros(500) * seq)
            .collect();
        assert!(delays.iter().all(|&d| d >= ms(50) && d <= ms(80)));
        assert!(delays.iter().any(|&d| d > ms(75)));
        assert_eq!(stats.reordered, 0);
    }

    #[test]
    fn reorder_lets_later_datagrams_overtake() {
        let model = Model {
            delay: ms(20),
            jitter: ms(5),
            reorder: 0.1,
            seed: 5,
            ..Model::default()
        };
        let (out, stats) = run(model, 10_000, 100, Duration::from_micros(500));
        assert_eq!(out.len(), 10_000);
        assert!(
            (900..=1_100).contains(&stats.reordered),
            "reordered {}",
            stats.reordered
        );
        let inversions = out.windows(2).filter(|w| w[1].1 < w[0].1).count() as u64;
        assert!(inversions > 800, "inversions {inversions}");
    }

    #[test]
    fn duplication_and_corruption() {
        let model = Model {
            duplicate: 0.1,
            corrupt: 0.1,
            seed: 9,
            ..Model::default()
        };
        let t0 = Instant::now();
        let mut net = Network::new(model, t0);
        let original = [0x5Au8; 64];
        for _ in 0..10_000 {
            net.send(t0, addr(1), addr(2), &original);
        }
        let mut copies = 0u64;
        let mut flipped = 0u64;
        while let Some((_, _, d)) = net.deliver(t0) {
            copies += 1;
            let bits: u32 = d
                .iter()
                .zip(original)
                .map(|(a, b)| (a ^ b).count_ones())
                .sum();
            assert!(bits <= 1, "exactly one bit flips");
            flipped += u64::from(bits);
        }
        let stats = net.stats();
        assert_eq!(copies, 10_000 + stats.duplicated);
        assert_eq!(flipped, stats.corrupted);
        assert!(
            (900..=1_100).contains(&stats.duplicated),
            "duplicated {}",
            stats.duplicated
        );
        assert!(
            (950..=1_250).contains(&stats.corrupted),
            "corrupted {}",
            stats.corrupted
        );
    }

    #[test]
    fn mtu_changes_apply_from_their_time() {
        let t0 = Instant::now();
        let mut net = Network::new(
            Model {
                mtu: 1_400,
                mtu_changes: vec![(ms(10), 1_280), (ms(20), 1_400)],
                ..Model::default()
            },
            t0,
        );
        for (at, expect_dropped) in [(0, 0), (10, 1), (15, 2), (20, 2)] {
            net.send(t0 + ms(at), addr(1), addr(2), &[0; 1_300]);
            assert_eq!(net.stats().mtu_dropped, expect_dropped, "at {at} ms");
        }
    }

    #[test]
    fn mtu_drops_larger_datagrams() {
        let t0 = Instant::now();
        let mut net = Network::new(
            Model {
                mtu: 1_200,
                ..Model::default()
            },
            t0,
        );
        net.send(t0, addr(1), addr(2), &[0; 1_200]);
        net.send(t0, addr(1), addr(2), &[0; 1_201]);
        assert_eq!(net.deliver(t0).map(|d| d.2.len()), Some(1_200));
        assert!(net.deliver(t0).is_none());
        assert_eq!(net.stats().mtu_dropped, 1);
    }

    #[test]
    fn bottleneck_delivers_its_rate_and_bounds_the_queue() {
        // Offer 2 MB/s for 10 s to a 1 MB/s bottleneck with a 50 kB queue.
        let rate = 1_000_000;
        let model = Model {
            delay: ms(10),
            bandwidth: Some(rate),
            queue_bytes: 50_000,
            ..Model::default()
        };
        let (out, stats) = run(model, 20_000, 1_000, ms(1) / 2);
        // Arrivals in the 1..10 s window carry the bottleneck rate.
        let in_window = out
            .iter()
            .filter(|(at, _)| *at >= ms(1_000) && *at < ms(10_000))
            .count() as u64;
        let bytes_per_sec = in_window * 1_000 / 9;
        assert!(
            (990_000..=1_000_000).contains(&bytes_per_sec),
            "{bytes_per_sec} B/s"
        );
        // Half the offered load is dropped at the queue, and queueing delay never exceeds
        // queue / rate = 50 ms (+1 ms of serialisation).
        assert!(
            (9_900..=10_100).contains(&stats.queue_dropped),
            "dropped {}",
            stats.queue_dropped
        );
        for &(at, seq) in &out {
            let delay = at - ms(1) / 2 * seq;
            assert!(delay <= ms(10 + 51), "seq {seq} took {delay:?}");
        }
        assert!(out.windows(2).all(|w| w[0].1 < w[1].1));
    }

    #[test]
    fn blackhole_window_drops_everything_inside() {
        let model = Model {
            delay: ms(5),
            blackholes: vec![(ms(100), ms(50))],
            ..Model::default()
        };
        let (out, stats) = run(model, 300, 10, ms(1));
        assert_eq!(stats.blackholed, 50);
        assert!(out.iter().all(|&(_, seq)| !(100..150).contains(&seq)));
        assert_eq!(out.len(), 250);
    }

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let model = |seed| Model {
            delay: ms(20),
            jitter: ms(10),
            loss: 0.02,
            burst: Some(Burst {
                p_good_to_bad: 0.01,
                p_bad_to_good: 0.3,
                loss_in_bad: 0.5,
            }),
            reorder: 0.02,
            duplicate: 0.01,
            corrupt: 0.01,
            bandwidth: Some(500_000),
            queue_bytes: 20_000,
            seed,
            ..Model::default()
        };
        let a = run(model(42), 5_000, 300, ms(1));
        let b = run(model(42), 5_000, 300, ms(1));
        let c = run(model(43), 5_000, 300, ms(1));
        assert_eq!(a, b);
        assert_ne!(a.0, c.0);
    }

    #[test]
    fn sharing_puts_directions_behind_one_queue() {
        // Two directions each offering 1 MB/s for 5 s to 1 MB/s bottlenecks: with a queue
        // per direction each gets 1 MB/s; behind a shared uplink or downlink they split one.
        let delivered = |sharing: Sharing, pairs: [(u16, u16); 2]| {
            let model = Model {
                bandwidth: Some(1_000_000),
                queue_bytes: 20_000,
                sharing,
                ..Model::default()
            };
            let t0 = Instant::now();
            let mut net = Network::new(model, t0);
            for i in 0..5_000u64 {
                let now = t0 + ms(i);
                while net.deliver(now).is_some() {}
                for (from, to) in pairs {
                    net.send(now, addr(from), addr(to), &[0; 1_000]);
                }
            }
            pairs.map(|(from, to)| net.link_stats(addr(from), addr(to)).delivered)
        };
        let fan_in = [(1, 9), (2, 9)];
        let fan_out = [(9, 1), (9, 2)];
        for (sharing, pairs) in [(Sharing::Direction, fan_in), (Sharing::Direction, fan_out)] {
            let [a, b] = delivered(sharing, pairs);
            assert!(a >= 4_950 && b >= 4_950, "{sharing:?}: {a} + {b}");
        }
        for (sharing, pairs) in [(Sharing::Receiver, fan_in), (Sharing::Sender, fan_out)] {
            let [a, b] = delivered(sharing, pairs);
            assert!((4_950..=5_020).contains(&(a + b)), "{sharing:?}: {a} + {b}");
            // (How they split it is drop-tail's business: in lockstep, as here, the first
            // sender of each millisecond takes nearly all of it.)
        }
        // A shared downlink does not throttle the other way.
        let [a, b] = delivered(Sharing::Receiver, [(1, 9), (9, 2)]);
        assert!(a >= 4_950 && b >= 4_950);
    }

    #[test]
    fn directions_are_independent() {
        // What happens from 2 to 1 does not depend on traffic from 1 to 2.
        let model = Model {
            loss: 0.2,
            jitter: ms(5),
            bandwidth: Some(100_000),
            queue_bytes: 5_000,
            seed: 1,
            ..Model::default()
        };
        let trace = |with_reverse: bool| {
            let t0 = Instant::now();
            let mut net = Network::new(model.clone(), t0);
            let mut got = Vec::new();
            for seq in 0..2_000u32 {
                let now = t0 + ms(u64::from(seq));
                if with_reverse {
                    net.send(now, addr(1), addr(2), &datagram(seq, 1_000));
                }
                net.send(now, addr(2), addr(1), &datagram(seq, 100));
            }
            while let Some(at) = net.next_arrival() {
                let (from, _, d) = net.deliver(at).expect("arrived");
                if from == addr(2) {
                    got.push((at - t0, seq_of(&d)));
                }
            }
            got
        };
        assert_eq!(trace(false), trace(true));
    }
}
