//! The load thread's connections: many [`xrudp_proto::Client`]s over one [`Transport`],
//! with one timer heap, so a [`Conns::drive`] costs O(connections with work).
//!
//! The transport moves datagrams in batches: it receives everything waiting (many
//! datagrams per syscall or ring pass), the connections that got input or whose timers
//! fired are settled, each writing what it has to send into the transport, and the round
//! ends with one flush of the transport (one `sendmmsg` per socket, or one TX ring kick).
//! Connection ids are dense indices, never reused within a run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use xrudp_client::bookkeeping::{Book, Seeds, StateCounts};
use xrudp_proto::{Client, ClientConfig, ClientEvent, ClientState, Counters, SendError};

/// Datagram counters of a transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Datagrams received and handed to a connection.
    pub received: u64,
    /// Datagrams dropped on the way out (no buffer or ring room, or refused).
    pub send_dropped: u64,
    /// Received datagrams dropped: malformed, bad checksum, or for no connection.
    pub rx_dropped: u64,
    /// I/O errors other than the ones counted above.
    pub errors: u64,
    /// Syscalls made to send (`sendmmsg`, or TX kicks).
    pub send_calls: u64,
    /// Syscalls made to receive (`recvmmsg`); waiting (`epoll_wait`, `poll`) is not
    /// counted, so that a spinning loop's idle polls do not hide the batching.
    pub recv_calls: u64,
}

/// Moves the connections' datagrams: kernel sockets or AF_XDP rings.
pub trait Transport {
    /// Opens connection `index`'s endpoint toward `server` from address `local`.
    fn open(&mut self, index: usize, local: IpAddr, server: SocketAddr) -> io::Result<()>;
    /// Closes connection `index`'s endpoint.
    fn close(&mut self, index: usize);
    /// Waits up to `wait` for input (returns early when some arrives).
    fn wait(&mut self, wait: Duration);
    /// Hands every waiting datagram (up to a budget) to `deliver(index, from, bytes)`.
    /// Returns whether more may be waiting (the budget ran out).
    fn receive(&mut self, deliver: &mut dyn FnMut(usize, SocketAddr, &[u8])) -> bool;
    /// Takes what connection `index` has to send now. Returns `false` if it had to stop
    /// for want of room: the connection still has output and is visited next round.
    fn flush(&mut self, index: usize, client: &mut Client, now: Instant) -> bool;
    /// Ends a round: pushes whatever is still queued to the kernel.
    fn end_round(&mut self);
    /// The counters so far.
    fn counters(&self) -> IoCounters;
}

#[derive(Debug)]
struct Entry {
    client: Client,
    book: Book,
}

/// Many connections driven by the thread that calls [`Conns::drive`].
#[derive(Debug)]
pub struct Conns<T> {
    transport: T,
    entries: Vec<Option<Entry>>,
    timers: BinaryHeap<Reverse<(Instant, u32)>>,
    dirty: Vec<u32>,
    retry: Vec<u32>,
    events: VecDeque<u32>,
    states: StateCounts,
    rx_pending: bool,
    seeds: Seeds,
}

impl<T: Transport> Conns<T> {
    /// No connections yet, over `transport`; `seed` seeds the connections' RNGs.
    pub fn new(transport: T, seed: u64) -> Self {
        Self {
            transport,
            entries: Vec::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            retry: Vec::new(),
            events: VecDeque::new(),
            states: StateCounts::default(),
            rx_pending: false,
            seeds: Seeds::new(seed),
        }
    }

    /// Starts connecting to `server` from `local`; the first handshake packet goes out
    /// at the next [`Conns::drive`]. Returns the connection's index.
    pub fn add(
        &mut self,
        local: IpAddr,
        server: SocketAddr,
        config: ClientConfig,
        security: xrudp_proto::session::Security,
    ) -> io::Result<usize> {
        let index = self.entries.len();
        let idx32 = u32::try_from(index)
            .map_err(|_| io::Error::other("more than 2^32 connections in one thread"))?;
        let client = Client::new(config, server, self.seeds.draw(), Instant::now(), security)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.transport.open(index, local, server)?;
        self.entries.push(Some(Entry {
            client,
            book: Book::new(&mut self.states),
        }));
        self.dirty.push(idx32);
        Ok(index)
    }

    /// Queues a message on connection `index`; it goes out at the next drive.
    pub fn send(&mut self, index: usize, channel: u8, data: &[u8]) -> Result<(), SendError> {
        let e = self
            .entries
            .get_mut(index)
            .and_then(Option::as_mut)
            .ok_or(SendError::NotConnected)?;
        e.client.send(channel, data)?;
        mark(e, &mut self.dirty, index);
        Ok(())
    }

    /// Closes connection `index` gracefully; a `Disconnected` event follows.
    pub fn disconnect(&mut self, index: usize, code: u16) {
        if let Some(e) = self.entries.get_mut(index).and_then(Option::as_mut) {
            e.client.disconnect(code);
            mark(e, &mut self.dirty, index);
        }
    }

    /// Drops connection `index` at once, sending nothing.
    pub fn remove(&mut self, index: usize) {
        if let Some(e) = self.entries.get_mut(index).and_then(Option::take) {
            e.book.forget(&mut self.states);
            self.transport.close(index);
        }
    }

    /// Waits up to `max_wait` for input or the next timer, then receives, fires due
    /// timers and sends what every connection with work has.
    pub fn drive(&mut self, max_wait: Duration) {
        let now = Instant::now();
        let wait = if self.dirty.is_empty() && self.retry.is_empty() && !self.rx_pending {
            self.timers.peek().map_or(max_wait, |r| {
                max_wait.min(r.0.0.saturating_duration_since(now))
            })
        } else {
            Duration::ZERO
        };
        self.transport.wait(wait);
        let now = Instant::now();
        let entries = &mut self.entries;
        let dirty = &mut self.dirty;
        self.rx_pending = self.transport.receive(&mut |index, from, data| {
            if let Some(e) = entries.get_mut(index).and_then(Option::as_mut) {
                e.client.handle_datagram(now, from, data);
                mark(e, dirty, index);
            }
        });
        while let Some(&Reverse((t, index))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            if let Some(e) = self.entries[index as usize].as_mut()
                && e.book.take_due(t)
            {
                mark(e, &mut self.dirty, index as usize);
            }
        }
        for index in std::mem::take(&mut self.retry) {
            if let Some(e) = self.entries[index as usize].as_mut() {
                mark(e, &mut self.dirty, index as usize);
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        for &index in &dirty {
            self.settle(index, now);
        }
        dirty.clear();
        self.dirty = dirty;
        self.transport.end_round();
        if self.timers.len() > 2 * self.entries.len() + 1024 {
            let entries = &self.entries;
            self.timers.retain(|&Reverse((t, i))| {
                entries[i as usize]
                    .as_ref()
                    .is_some_and(|e| e.book.scheduled() == Some(t))
            });
        }
    }

    /// The next event of any connection.
    pub fn poll_event(&mut self) -> Option<(usize, ClientEvent)> {
        while let Some(&index) = self.events.front() {
            let i = index as usize;
            if let Some(e) = self.entries[i].as_mut() {
                if let Some(event) = e.client.poll_event() {
                    if matches!(event, ClientEvent::Message { .. }) {
                        // Consuming a message frees receive buffer: let the next drive
                        // send whatever that allows.
                        mark(e, &mut self.dirty, i);
                    }
                    return Some((i, event));
                }
                e.book.events_drained();
            }
            self.events.pop_front();
        }
        None
    }

    /// Hands a delivered message's buffer back for reuse by connection `index`.
    pub fn recycle(&mut self, index: usize, buf: Vec<u8>) {
        if let Some(e) = self.entries.get_mut(index).and_then(Option::as_mut) {
            e.client.recycle(buf);
        }
    }

    /// Connections in `state` as of the last drive.
    #[must_use]
    pub fn count(&self, state: ClientState) -> usize {
        self.states.count(state)
    }

    /// Connections held (not removed).
    #[must_use]
    pub fn len(&self) -> usize {
        self.states.total()
    }

    /// Whether no connection is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The indices of the connections held.
    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|_| i))
    }

    /// A connection's protocol counters.
    #[must_use]
    pub fn counters(&self, index: usize) -> Option<&Counters> {
        self.entries
            .get(index)
            .and_then(Option::as_ref)
            .map(|e| e.client.stats())
    }

    /// The transport's counters.
    #[must_use]
    pub fn io(&self) -> IoCounters {
        self.transport.counters()
    }

    fn settle(&mut self, index: u32, now: Instant) {
        let i = index as usize;
        let Some(e) = self.entries[i].as_mut() else {
            return;
        };
        if e.client.poll_timeout().is_some_and(|t| t <= now) {
            e.client.handle_timeout(now);
        }
        if !self.transport.flush(i, &mut e.client, now) {
            self.retry.push(index);
        }
        if let Some(want) = e
            .book
            .settled(&e.client, index, &mut self.states, &mut self.events)
        {
            self.timers.push(Reverse((want, index)));
        }
    }
}

/// A seed from the standard library's randomly keyed hasher (seeded from the OS), so
/// connections of different runs and threads differ without another dependency.
#[must_use]
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(u64::from(std::process::id()));
    h.finish()
}

fn mark(e: &mut Entry, dirty: &mut Vec<u32>, index: usize) {
    if e.book.mark() {
        // Indices fit u32: `add` refuses more.
        dirty.push(index as u32);
    }
}
