//! Backpressure without loss: sends that found a connection's send buffer full wait
//! here, in order, and are retried every round.

use std::{collections::VecDeque, sync::Arc};

use xrudp_proto::{ConnHandle, SendError, Server};

/// Pending sends held while send buffers are full; beyond this the service stops
/// taking new events (backpressure) until the list drains.
pub(crate) const PENDING_LIMIT: usize = 4096;

/// A message's bytes: owned (recycled into the protocol's pool once sent) or shared
/// by several recipients.
#[derive(Debug)]
pub(crate) enum Payload {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Payload {
    fn bytes(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Shared(a) => a,
        }
    }

    fn recycle(self, server: &mut Server) {
        if let Self::Owned(v) = self {
            server.recycle(v);
        }
    }
}

#[derive(Debug)]
struct Pending {
    handle: ConnHandle,
    channel: u8,
    data: Payload,
}

/// The outcome counts of the sends that went through the outbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SendCounts {
    /// Sends deferred because a connection's send buffer (or another worker's relay
    /// inbox) was full.
    pub deferred: u64,
    /// Messages dropped because their connection had gone (not a loss: nobody to
    /// deliver to).
    pub to_closed: u64,
    /// Messages refused as too large or on a bad channel.
    pub refused: u64,
}

/// One worker's deferred sends.
#[derive(Debug)]
pub(crate) struct Outbox {
    pending: VecDeque<Pending>,
    /// Connections whose deferred sends failed again this round (scratch, reused).
    blocked: Vec<ConnHandle>,
    pub(crate) counts: SendCounts,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Self {
            pending: VecDeque::with_capacity(256),
            blocked: Vec::with_capacity(64),
            counts: SendCounts::default(),
        }
    }

    /// Whether the pending list is at its limit (the service then applies backpressure).
    pub(crate) fn is_full(&self) -> bool {
        self.pending.len() >= PENDING_LIMIT
    }

    /// Sends `data` to `handle` now, or defers it behind the connection's earlier
    /// deferred sends (per-connection order holds).
    pub(crate) fn send(
        &mut self,
        server: &mut Server,
        handle: ConnHandle,
        channel: u8,
        data: Payload,
    ) {
        if self.is_deferred(handle) {
            self.pending.push_back(Pending {
                handle,
                channel,
                data,
            });
            return;
        }
        match server.send(handle, channel, data.bytes()) {
            Ok(()) => data.recycle(server),
            Err(SendError::QueueFull) => {
                self.counts.deferred += 1;
                self.pending.push_back(Pending {
                    handle,
                    channel,
                    data,
                });
            }
            Err(e) => {
                self.count_refused(&e);
                data.recycle(server);
            }
        }
    }

    /// Retries deferred sends in order; once one of a connection's sends fails again,
    /// its later ones wait too, so per-connection order holds.
    pub(crate) fn retry(&mut self, server: &mut Server) {
        self.blocked.clear();
        let mut tries = self.pending.len();
        while tries > 0 {
            tries -= 1;
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if self.blocked.contains(&p.handle) {
                self.pending.push_back(p);
                continue;
            }
            match server.send(p.handle, p.channel, p.data.bytes()) {
                Ok(()) => p.data.recycle(server),
                Err(SendError::QueueFull) => {
                    self.blocked.push(p.handle);
                    self.pending.push_back(p);
                }
                Err(e) => {
                    self.count_refused(&e);
                    p.data.recycle(server);
                }
            }
        }
    }

    /// Whether `handle` has deferred sends: new ones must queue behind them.
    fn is_deferred(&self, handle: ConnHandle) -> bool {
        !self.pending.is_empty() && self.pending.iter().any(|p| p.handle == handle)
    }

    fn count_refused(&mut self, e: &SendError) {
        match e {
            SendError::NotConnected => self.counts.to_closed += 1,
            _ => self.counts.refused += 1,
        }
    }
}
