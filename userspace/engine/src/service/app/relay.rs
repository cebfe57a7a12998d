//! The relay: clients join rooms (a message [`RELAY_JOIN`] + room id) and every other
//! message is forwarded to the room's other members, on whichever worker they are.

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
};

use crossbeam_queue::ArrayQueue;
use xrudp_proto::ConnHandle;

use super::super::{ConnId, Out, outbox::Payload};

/// A message's first bytes that ask the relay to put the sender in a room:
/// `b"JOIN"` followed by the room id as a big-endian `u32`, on any channel.
pub const RELAY_JOIN: &[u8; 4] = b"JOIN";

/// A message forwarded by the relay to a member served by another worker.
#[derive(Debug)]
pub(crate) struct Forward {
    /// The member's connection within the receiving worker.
    handle: ConnHandle,
    channel: u8,
    /// The message, shared by every member it goes to.
    data: Arc<[u8]>,
}

/// The relay's state shared by all workers: the room directory (changed on join and
/// leave only, read through a per-worker copy refreshed when `version` moves, so a
/// message costs one atomic load and no lock) and one inbox per worker for messages to
/// members it serves.
#[derive(Debug)]
pub(crate) struct RelayShared {
    version: AtomicU64,
    rooms: RwLock<HashMap<u32, Vec<ConnId>>>,
    inboxes: Vec<ArrayQueue<Forward>>,
}

impl RelayShared {
    /// Shared relay state for `workers` workers with inboxes of `capacity` messages.
    pub(crate) fn new(workers: usize, capacity: usize) -> Self {
        Self {
            version: AtomicU64::new(0),
            rooms: RwLock::new(HashMap::new()),
            inboxes: (0..workers)
                .map(|_| ArrayQueue::new(capacity.max(1)))
                .collect(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut HashMap<u32, Vec<ConnId>>)) {
        let mut rooms = self.rooms.write().unwrap_or_else(PoisonError::into_inner);
        f(&mut rooms);
        self.version.fetch_add(1, Ordering::Release);
    }
}

/// One worker's side of the relay.
#[derive(Debug)]
pub(crate) struct Relay {
    shared: Arc<RelayShared>,
    /// This worker's copy of the room directory, and the version it reflects.
    rooms: HashMap<u32, Vec<ConnId>>,
    rooms_version: u64,
    /// Forwards to other workers whose inbox was full, retried every round.
    remote_pending: VecDeque<(u16, Forward)>,
    /// Each connection slot's room.
    room_of: Vec<Option<u32>>,
    /// Messages forwarded to room members.
    pub(crate) relayed: u64,
}

impl Relay {
    /// This worker's relay over `shared`, for `slots` connection slots.
    pub(crate) fn new(shared: Arc<RelayShared>, slots: usize) -> Self {
        Self {
            shared,
            rooms: HashMap::new(),
            rooms_version: u64::MAX,
            remote_pending: VecDeque::new(),
            room_of: vec![None; slots],
            relayed: 0,
        }
    }

    /// Connections of this worker that are in a room.
    pub(crate) fn members(&self) -> u64 {
        self.room_of.iter().flatten().count() as u64
    }

    /// A message from `me`: a join, or a message for the room's other members.
    pub(crate) fn on_message(&mut self, me: ConnId, out: &mut Out<'_>, channel: u8, data: Vec<u8>) {
        if let Some(room) = data
            .strip_prefix(RELAY_JOIN)
            .and_then(|r| <[u8; 4]>::try_from(r).ok())
        {
            self.join(me, u32::from_be_bytes(room));
            out.server.recycle(data);
            return;
        }
        let Some(room) = self.room_of.get(me.handle.index()).copied().flatten() else {
            out.server.recycle(data);
            return;
        };
        self.refresh_rooms();
        let members = self.rooms.get(&room).map_or(0, Vec::len);
        let mut bytes: Option<Arc<[u8]>> = None;
        for i in 0..members {
            let Some(&to) = self.rooms.get(&room).and_then(|m| m.get(i)) else {
                break;
            };
            if to == me {
                continue;
            }
            self.relayed += 1;
            let data = Arc::clone(bytes.get_or_insert_with(|| Arc::from(data.as_slice())));
            if to.worker == me.worker {
                out.send(to.handle, channel, Payload::Shared(data));
            } else {
                self.forward(out, to, channel, data);
            }
        }
        out.server.recycle(data);
    }

    fn forward(&mut self, out: &mut Out<'_>, to: ConnId, channel: u8, data: Arc<[u8]>) {
        let fwd = Forward {
            handle: to.handle,
            channel,
            data,
        };
        // Keep order behind earlier forwards to the same worker that are still waiting.
        if self.remote_pending.iter().any(|(w, _)| *w == to.worker) {
            self.remote_pending.push_back((to.worker, fwd));
            return;
        }
        match self
            .shared
            .inboxes
            .get(usize::from(to.worker))
            .map(|q| q.push(fwd))
        {
            Some(Ok(())) | None => {}
            Some(Err(fwd)) => {
                out.outbox.counts.deferred += 1;
                self.remote_pending.push_back((to.worker, fwd));
            }
        }
    }

    /// Takes messages other workers forwarded to members here, and retries forwards
    /// that found another worker's inbox full.
    pub(crate) fn on_round(&mut self, worker: u16, out: &mut Out<'_>) {
        if let Some(inbox) = self.shared.inboxes.get(usize::from(worker)) {
            let mut n = inbox.len();
            while n > 0 && !out.outbox.is_full() {
                n -= 1;
                let Some(f) = inbox.pop() else { break };
                out.send(f.handle, f.channel, Payload::Shared(f.data));
            }
        }
        let mut tries = self.remote_pending.len();
        let mut blocked: u64 = 0; // bit per worker index (< 64) that stayed full
        while tries > 0 {
            tries -= 1;
            let Some((w, f)) = self.remote_pending.pop_front() else {
                break;
            };
            let bit = 1u64 << (w % 64);
            if blocked & bit != 0 {
                self.remote_pending.push_back((w, f));
                continue;
            }
            match self.shared.inboxes.get(usize::from(w)).map(|q| q.push(f)) {
                Some(Ok(())) | None => {}
                Some(Err(f)) => {
                    blocked |= bit;
                    self.remote_pending.push_back((w, f));
                }
            }
        }
    }

    fn refresh_rooms(&mut self) {
        let v = self.shared.version.load(Ordering::Acquire);
        if v != self.rooms_version {
            let rooms = self
                .shared
                .rooms
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            self.rooms.clone_from(&rooms);
            self.rooms_version = v;
        }
    }

    fn join(&mut self, me: ConnId, room: u32) {
        self.leave(me);
        if let Some(slot) = self.room_of.get_mut(me.handle.index()) {
            *slot = Some(room);
            self.shared
                .update(|rooms| rooms.entry(room).or_default().push(me));
        }
    }

    /// `me` leaves its room, if it is in one (on disconnect, or before joining another).
    pub(crate) fn leave(&mut self, me: ConnId) {
        let Some(room) = self
            .room_of
            .get_mut(me.handle.index())
            .and_then(Option::take)
        else {
            return;
        };
        self.shared.update(|rooms| {
            if let Some(members) = rooms.get_mut(&room) {
                members.retain(|&h| h != me);
                if members.is_empty() {
                    rooms.remove(&room);
                }
            }
        });
    }
}
