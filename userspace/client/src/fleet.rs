//! Many connections driven by one thread: one socket each, registered with one `mio::Poll`,
//! and one timer heap, so a [`Fleet::drive`] costs O(connections with work), not O(all).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::protection::Protection;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use xrudp_proto::{Client, ClientConfig, ClientEvent, ClientState, ConnStats, Counters, SendError};

use crate::bookkeeping::{Book, Seeds, StateCounts};
use crate::sock::{self, IoStats, RECV_BUFFER_LEN, Recv, SEND_BUFFER_LEN};

/// Datagrams read from one socket per [`Fleet::drive`] at most; a socket with more is
/// carried over to the next call (nothing is lost: the rest wait in the socket).
pub const RECV_BUDGET: usize = 256;

/// Free message buffers each connection of a [`Fleet`] preallocates in each pool class up
/// to 2 KiB (`Client::prefill_pool`): about 6.6 KiB each, fewer than a [`crate::Connection`]
/// takes, because a fleet holds thousands; a load generator's first messages (one or two
/// in flight per class) allocate none.
pub const FLEET_POOL_PREFILL: usize = 2;

/// Stale timer-heap items tolerated beyond two per connection before the heap is compacted
/// (none in unit tests, so that compaction runs under their traffic).
const COMPACT_SLACK: usize = if cfg!(test) { 0 } else { 1024 };

/// Readiness events taken from the poller per [`Fleet::drive`] at most.
const EVENTS_CAPACITY: usize = 1024;

/// Identifies a connection of a [`Fleet`]; stale once the connection is removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FleetId {
    index: u32,
    generation: u32,
}

impl FleetId {
    /// The dense slot index (below the largest number of connections held at once), handy
    /// for the caller's own tables.
    #[must_use]
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// Totals of a fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetStats {
    /// Datagram counters summed over every connection, past and present.
    pub io: IoStats,
    /// I/O errors on a connection's socket other than the ICMP reports counted in `io`;
    /// counted, not returned, so one bad socket does not stop the rest.
    pub socket_errors: u64,
    /// Protocol timers fired.
    pub timers_fired: u64,
    /// Connections given attention by a drive (read, timer, transmit, events): the work
    /// done, which grows with the connections that had something to do, not with all.
    pub settled: u64,
    /// Connections added.
    pub added: u64,
    /// Connections removed.
    pub removed: u64,
}

#[derive(Debug)]
struct Entry {
    socket: UdpSocket,
    client: Client,
    server: SocketAddr,
    book: Book,
    backlogged: bool,
}

#[derive(Debug, Default)]
struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// Many client connections driven by the thread that calls [`Fleet::drive`].
///
/// Per call: add connections, [`Fleet::send`] on them, [`Fleet::drive`], then take events with
/// [`Fleet::poll_event`] until `None`. Each connection has its own connected UDP socket, so
/// the fleet needs one file descriptor per connection (raise `ulimit -n`) and one ephemeral
/// port per connection and local address (about 28,000 on Linux; use [`Fleet::add_from`]
/// with more local addresses, e.g. 127.0.0.2, .3, ... on loopback).
#[derive(Debug)]
pub struct Fleet {
    poll: Poll,
    events: Events,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// (deadline, index, generation); items whose deadline is no longer the entry's
    /// `book.scheduled()` are stale and skipped when they surface.
    timers: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    dirty: Vec<u32>,
    backlog: Vec<u32>,
    scratch: Vec<u32>,
    event_queue: VecDeque<u32>,
    rx: Box<[u8]>,
    tx: Box<[u8]>,
    states: StateCounts,
    stats: FleetStats,
    seeds: Seeds,
    /// Heap compactions done (for tests).
    compactions: u64,
}

impl Fleet {
    /// An empty fleet; seeds its connections from one draw of the OS RNG.
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS_CAPACITY),
            slots: Vec::new(),
            free: Vec::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            backlog: Vec::new(),
            scratch: Vec::new(),
            event_queue: VecDeque::new(),
            rx: vec![0; RECV_BUFFER_LEN].into_boxed_slice(),
            tx: vec![0; SEND_BUFFER_LEN].into_boxed_slice(),
            states: StateCounts::default(),
            stats: FleetStats::default(),
            seeds: Seeds::new(sock::os_seed()?),
            compactions: 0,
        })
    }

    /// Starts connecting to `server` from an ephemeral port of its address family. The
    /// first handshake packet goes out at the next [`Fleet::drive`].
    pub fn add(
        &mut self,
        server: SocketAddr,
        config: ClientConfig,
        protection: &Protection,
    ) -> io::Result<FleetId> {
        self.add_from(sock::any_local(server), server, config, protection)
    }

    /// Like [`Fleet::add`], from a chosen local address (port 0 for an ephemeral one).
    pub fn add_from(
        &mut self,
        local: SocketAddr,
        server: SocketAddr,
        config: ClientConfig,
        protection: &Protection,
    ) -> io::Result<FleetId> {
        let seed = self.seeds.draw();
        let config = sock::for_this_platform(config);
        let probe_mtu = sock::probes_path_mtu(&config);
        let mut client = Client::new(config, server, seed, Instant::now(), protection.security()?)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        client.prefill_pool(FLEET_POOL_PREFILL);
        let mut socket = UdpSocket::bind(local).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "binding a UDP socket on {local} for connection {} of the fleet: {e}; each \
                     connection holds a socket (raise `ulimit -n`) and an ephemeral port (use \
                     more local addresses past ~28k per address)",
                    self.len() + 1
                ),
            )
        })?;
        sock::prepare(&socket, server, probe_mtu)?;
        socket.connect(server)?;
        let index = if let Some(i) = self.free.pop() {
            i
        } else {
            let i = u32::try_from(self.slots.len())
                .map_err(|_| io::Error::other("more than 2^32 connections in one fleet"))?;
            self.slots.push(Slot::default());
            i
        };
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut socket, Token(index as usize), Interest::READABLE)
        {
            self.free.push(index);
            return Err(e);
        }
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.entry = Some(Entry {
            socket,
            client,
            server,
            book: Book::new(&mut self.states),
            backlogged: false,
        });
        self.dirty.push(index);
        self.stats.added += 1;
        Ok(FleetId {
            index,
            generation: slot.generation,
        })
    }

    /// Queues a message; it goes out at the next [`Fleet::drive`]. [`SendError::QueueFull`]
    /// is backpressure: drive and retry, or drop the message.
    pub fn send(&mut self, id: FleetId, channel: u8, data: &[u8]) -> Result<(), SendError> {
        let index = id.index;
        let entry = self.entry_mut(id).ok_or(SendError::NotConnected)?;
        entry.client.send(channel, data)?;
        if entry.book.mark() {
            self.dirty.push(index);
        }
        Ok(())
    }

    /// Closes a connection gracefully with an application `code`; the `Disconnect` copies
    /// go out at the next [`Fleet::drive`], then a `Disconnected` event follows.
    pub fn disconnect(&mut self, id: FleetId, code: u16) {
        let index = id.index;
        if let Some(entry) = self.entry_mut(id) {
            entry.client.disconnect(code);
            if entry.book.mark() {
                self.dirty.push(index);
            }
        }
    }

    /// Drops a connection at once, sending nothing, and frees its socket and slot (its
    /// queued events are discarded). Returns whether `id` was live.
    pub fn remove(&mut self, id: FleetId) -> bool {
        let Some(slot) = self.slots.get_mut(id.index()) else {
            return false;
        };
        if slot.generation != id.generation {
            return false;
        }
        let Some(mut entry) = slot.entry.take() else {
            return false;
        };
        // Deregistering fails only for a socket never registered; dropping it closes it.
        let _ = self.poll.registry().deregister(&mut entry.socket);
        entry.book.forget(&mut self.states);
        self.free.push(id.index);
        self.stats.removed += 1;
        true
    }

    /// Waits up to `max_wait` for sockets to become readable or the next protocol timer,
    /// then reads every readable socket, fires due timers and sends what is ready on every
    /// connection that had work. Returns at once if work is already pending.
    pub fn drive(&mut self, max_wait: Duration) -> io::Result<()> {
        let now = Instant::now();
        let wait = if self.dirty.is_empty() && self.backlog.is_empty() {
            self.timers.peek().map_or(max_wait, |r| {
                max_wait.min(r.0.0.saturating_duration_since(now))
            })
        } else {
            Duration::ZERO
        };
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();

        // Readable sockets: those carried over first, then the new ones. mio is
        // edge-triggered, so each is read until `WouldBlock` or its budget runs out, and a
        // socket whose budget ran out is carried over.
        std::mem::swap(&mut self.scratch, &mut self.backlog);
        for &index in &self.scratch {
            if let Some(entry) = self.slots[index as usize].entry.as_mut() {
                entry.backlogged = false;
            }
        }
        self.scratch.extend(
            self.events
                .iter()
                .filter(|e| e.is_readable() || e.is_error())
                .map(|e| e.token().0 as u32),
        );
        for k in 0..self.scratch.len() {
            let index = self.scratch[k];
            self.read(index, now);
        }
        self.scratch.clear();

        // Due timers.
        while let Some(&Reverse((t, index, generation))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let slot = &mut self.slots[index as usize];
            let Some(entry) = slot.entry.as_mut() else {
                continue;
            };
            if slot.generation == generation && entry.book.take_due(t) && entry.book.mark() {
                self.dirty.push(index);
            }
        }

        // Every connection with work: timers, transmit, events, next deadline.
        for k in 0..self.dirty.len() {
            let index = self.dirty[k];
            self.settle(index, now);
        }
        self.dirty.clear();

        // Stale heap items pile up when deadlines move earlier; drop them now and then.
        if self.timers.len() > 2 * self.len() + COMPACT_SLACK {
            self.compactions += 1;
            let slots = &self.slots;
            self.timers.retain(|&Reverse((t, i, g))| {
                let s = &slots[i as usize];
                s.generation == g
                    && s.entry
                        .as_ref()
                        .is_some_and(|e| e.book.scheduled() == Some(t))
            });
        }
        Ok(())
    }

    /// The next event of any connection.
    pub fn poll_event(&mut self) -> Option<(FleetId, ClientEvent)> {
        while let Some(&index) = self.event_queue.front() {
            let slot = &mut self.slots[index as usize];
            if let Some(entry) = slot.entry.as_mut() {
                if let Some(event) = entry.client.poll_event() {
                    // Consuming a message frees receive buffer: let the next drive send
                    // whatever that allows.
                    if matches!(event, ClientEvent::Message { .. }) && entry.book.mark() {
                        self.dirty.push(index);
                    }
                    let id = FleetId {
                        index,
                        generation: slot.generation,
                    };
                    return Some((id, event));
                }
                entry.book.events_drained();
            }
            self.event_queue.pop_front();
        }
        None
    }

    /// Hands a delivered message's buffer back for reuse by `id` (dropped if `id` is stale).
    pub fn recycle(&mut self, id: FleetId, buf: Vec<u8>) {
        if let Some(entry) = self.entry_mut(id) {
            entry.client.recycle(buf);
        }
    }

    /// A connection's state, as of now (`None` if `id` is stale).
    #[must_use]
    pub fn state(&self, id: FleetId) -> Option<ClientState> {
        self.entry(id).map(|e| e.client.state())
    }

    /// Connections in `state`, as of the last [`Fleet::drive`]. O(1).
    #[must_use]
    pub fn count(&self, state: ClientState) -> usize {
        self.states.count(state)
    }

    /// Connections held (in any state, until removed).
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Whether the fleet holds no connection.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live connections' ids, in slot order.
    pub fn ids(&self) -> impl Iterator<Item = FleetId> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.entry.as_ref().map(|_| FleetId {
                index: i as u32,
                generation: s.generation,
            })
        })
    }

    /// The fleet's totals.
    #[must_use]
    pub fn stats(&self) -> FleetStats {
        self.stats
    }

    /// A connection's protocol counters.
    #[must_use]
    pub fn connection_counters(&self, id: FleetId) -> Option<&Counters> {
        self.entry(id).map(|e| e.client.stats())
    }

    /// A connection's RTT, window and buffer figures, once connected.
    #[must_use]
    pub fn connection_stats(&self, id: FleetId) -> Option<ConnStats> {
        self.entry(id)?.client.connection_stats()
    }

    /// A connection's smoothed round-trip time, once connected.
    #[must_use]
    pub fn rtt(&self, id: FleetId) -> Option<Duration> {
        self.connection_stats(id).map(|s| s.rtt)
    }

    /// Whether a connection has nothing queued, in flight or unacknowledged (or is over).
    #[must_use]
    pub fn is_quiet(&self, id: FleetId) -> bool {
        self.entry(id).is_some_and(|e| e.client.is_quiet())
    }

    /// A connection's local socket address.
    pub fn local_addr(&self, id: FleetId) -> io::Result<SocketAddr> {
        self.entry(id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "stale FleetId"))?
            .socket
            .local_addr()
    }

    fn entry(&self, id: FleetId) -> Option<&Entry> {
        let slot = self.slots.get(id.index())?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_ref()
    }

    fn entry_mut(&mut self, id: FleetId) -> Option<&mut Entry> {
        let slot = self.slots.get_mut(id.index())?;
        if slot.generation != id.generation {
            return None;
        }
        slot.entry.as_mut()
    }

    /// Reads one socket until `WouldBlock` or its budget, feeding the protocol.
    fn read(&mut self, index: u32, now: Instant) {
        let Some(entry) = self.slots[index as usize].entry.as_mut() else {
            return;
        };
        let mut drained = false;
        for _ in 0..RECV_BUDGET {
            match sock::recv(&entry.socket, &mut self.rx, &mut self.stats.io) {
                Ok(Recv::Datagram(n)) => {
                    entry
                        .client
                        .handle_datagram(now, entry.server, &self.rx[..n]);
                }
                Ok(Recv::Skipped) => {}
                Ok(Recv::Empty) => {
                    drained = true;
                    break;
                }
                Err(_) => {
                    self.stats.socket_errors += 1;
                    drained = true;
                    break;
                }
            }
        }
        if !drained && !entry.backlogged {
            entry.backlogged = true;
            self.backlog.push(index);
        }
        if entry.book.mark() {
            self.dirty.push(index);
        }
    }

    /// Fires a connection's due timer, sends what it has, queues it for events and
    /// schedules its next deadline.
    fn settle(&mut self, index: u32, now: Instant) {
        let slot = &mut self.slots[index as usize];
        let generation = slot.generation;
        let Some(entry) = slot.entry.as_mut() else {
            return;
        };
        self.stats.settled += 1;
        if entry.client.poll_timeout().is_some_and(|t| t <= now) {
            entry.client.handle_timeout(now);
            self.stats.timers_fired += 1;
        }
        if sock::flush(
            &mut entry.client,
            &entry.socket,
            &mut self.tx,
            now,
            &mut self.stats.io,
        )
        .is_err()
        {
            self.stats.socket_errors += 1;
        }
        if let Some(want) = entry.book.settled(
            &entry.client,
            index,
            &mut self.states,
            &mut self.event_queue,
        ) {
            self.timers.push(Reverse((want, index, generation)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::EchoServer;
    use xrudp_proto::ServerConfig;

    #[test]
    fn timer_heap_stays_compact_and_correct_under_traffic() {
        const CLIENTS: usize = 20;
        const N: u32 = 100;
        let server = EchoServer::start(ServerConfig::default()).unwrap();
        let mut fleet = Fleet::new().unwrap();
        let ids: Vec<_> = (0..CLIENTS)
            .map(|_| {
                fleet
                    .add(
                        server.addr(),
                        ClientConfig::default(),
                        &Protection::default(),
                    )
                    .unwrap()
            })
            .collect();
        let mut sent = [0u32; CLIENTS];
        let mut got = [0u32; CLIENTS];
        let start = Instant::now();
        let mut max_heap = 0;
        let mut round = 0u32;
        while got.iter().sum::<u32>() < CLIENTS as u32 * N
            && start.elapsed() < Duration::from_mins(1)
        {
            // Whether traffic leaves stale items behind depends on how deadlines move,
            // which depends on timing; every tenth round adds stale items of its own (an
            // hour out, matching no schedule) so that compaction surely runs, under
            // traffic, and must keep every live deadline.
            if round.is_multiple_of(10) {
                let later = Instant::now() + Duration::from_hours(1);
                for &id in &ids {
                    for _ in 0..3 {
                        fleet.timers.push(Reverse((later, id.index, id.generation)));
                    }
                }
            }
            round += 1;
            for (i, &id) in ids.iter().enumerate() {
                // One message per connection per drive: many small deadline changes.
                if sent[i] < N && fleet.send(id, 0, &sent[i].to_be_bytes()).is_ok() {
                    sent[i] += 1;
                }
            }
            fleet.drive(Duration::from_millis(5)).unwrap();
            max_heap = max_heap.max(fleet.timers.len());
            assert!(fleet.timers.len() <= 2 * fleet.len());
            while let Some((id, e)) = fleet.poll_event() {
                if let ClientEvent::Message { data, .. } = e {
                    let i = id.index();
                    assert_eq!(data, got[i].to_be_bytes());
                    got[i] += 1;
                }
            }
            // Every live deadline is in the heap: nothing was compacted away.
            for &id in &ids {
                let e = fleet.entry(id).unwrap();
                if let Some(t) = e.book.scheduled() {
                    assert!(
                        fleet
                            .timers
                            .iter()
                            .any(|r| r.0 == (t, id.index, id.generation))
                    );
                }
            }
        }
        assert_eq!(got, [N; CLIENTS]);
        assert!(max_heap > 0);
        assert!(fleet.compactions > 0, "the test exercised compaction");
    }
}
