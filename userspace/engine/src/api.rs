#![warn(missing_docs)]
//! Embedding the engine in game-server code.
//!
//! ```no_run
//! use xrudp::api::{Event, GameServer, ServerOptions};
//! # fn main() -> anyhow::Result<()> {
//! let server = GameServer::start(&ServerOptions::new("eth0", 7777))?;
//! loop {
//!     while let Some(ev) = server.poll_event() {
//!         match ev {
//!             Event::Message { conn, channel, data } => { let _ = server.send(conn, channel, data); }
//!             Event::Connected { .. } | Event::Disconnected { .. } => {}
//!         }
//!     }
//!     // ... simulate a tick, then fan out the state with server.broadcast(..)
//! #   break;
//! }
//! server.shutdown();
//! # Ok(()) }
//! ```
//!
//! Each engine worker owns its connections (shared-nothing); the game thread talks to
//! every worker through a pair of bounded lock-free queues. Workers never wait for the
//! game: when its event queue is full they leave messages inside the protocol (counted
//! as backpressure, and the senders' receive windows fill), and a full command queue is
//! reported to the caller as [`Backpressure`], with the message handed back.
//! A worker that sleeps (no traffic, no protocol timer due) is woken when the game
//! queues a command or takes an event: the game rings the worker's doorbell, an eventfd
//! the worker sleeps on too, and only while it sleeps, so a busy worker costs the game
//! no syscall.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed},
};

pub use crate::service::{Command, ConnId, Event, Queues, RELAY_JOIN};
use crate::{
    engine::{Backend, Engine, Options, StartError},
    telemetry::{ConnRow, Snapshot},
};

/// How to start an embedded server.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Engine options (interface, port, backend, protocol settings, ...).
    pub engine: Options,
    /// Capacity of each worker's event and command queues.
    pub queue_capacity: usize,
}

impl ServerOptions {
    /// Defaults for serving `port` on `iface` ([`Options::default`]), but on AF_XDP with a
    /// fallback to kernel sockets ([`Backend::Auto`]): a game server should come up on
    /// any host.
    #[must_use]
    pub fn new(iface: &str, port: u16) -> Self {
        Self {
            engine: Options {
                iface: iface.to_owned(),
                ports: vec![port],
                backend: Backend::Auto,
                ..Options::default()
            },
            queue_capacity: 4096,
        }
    }
}

/// The command queue of a connection's worker is full: retry after a tick. The message
/// is handed back untouched.
#[derive(Debug, thiserror::Error)]
#[error("the engine worker's command queue is full (backpressure); retry later")]
pub struct Backpressure(pub Option<Vec<u8>>);

/// A running server embedded in game code.
#[derive(Debug)]
pub struct GameServer {
    engine: Option<Engine>,
    queues: Vec<Arc<Queues>>,
    next: AtomicUsize,
    refused: AtomicUsize,
}

impl GameServer {
    /// Starts the engine with one event/command queue pair per worker.
    pub fn start(options: &ServerOptions) -> Result<Self, StartError> {
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, queues) = Engine::start(&options.engine, Some(options.queue_capacity), stop)?;
        Ok(Self {
            engine: Some(engine),
            queues,
            next: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
        })
    }

    /// The next event from any worker (round-robin), or `None` if none is waiting.
    pub fn poll_event(&self) -> Option<Event> {
        let n = self.queues.len();
        let start = self.next.fetch_add(1, Relaxed);
        (0..n).find_map(|i| {
            let q = &self.queues[(start + i) % n];
            let ev = q.events.pop()?;
            // Room for an event the worker may be holding: let it deliver now.
            q.doorbell.ring();
            Some(ev)
        })
    }

    /// Sends `data` to one connection.
    pub fn send(&self, conn: ConnId, channel: u8, data: Vec<u8>) -> Result<(), Backpressure> {
        let q = self.worker(conn)?;
        push(
            q,
            Command::Send {
                handle: conn.handle,
                channel,
                data,
            },
        )
        .map_err(|c| {
            self.refused.fetch_add(1, Relaxed);
            match c {
                Command::Send { data, .. } => Backpressure(Some(data)),
                _ => Backpressure(None),
            }
        })
    }

    /// Sends the same bytes to many connections (a state update's fan-out): one shared
    /// copy, one command per worker involved.
    pub fn broadcast(
        &self,
        conns: &[ConnId],
        channel: u8,
        data: &[u8],
    ) -> Result<(), Backpressure> {
        let data: Arc<[u8]> = Arc::from(data);
        for (w, q) in self.queues.iter().enumerate() {
            let handles: Arc<[_]> = conns
                .iter()
                .filter(|c| usize::from(c.worker) == w)
                .map(|c| c.handle)
                .collect();
            if handles.is_empty() {
                continue;
            }
            if push(
                q,
                Command::Broadcast {
                    handles,
                    channel,
                    data: Arc::clone(&data),
                },
            )
            .is_err()
            {
                self.refused.fetch_add(1, Relaxed);
                return Err(Backpressure(None));
            }
        }
        Ok(())
    }

    /// Closes a connection; the client sees `code`.
    pub fn disconnect(&self, conn: ConnId, code: u16) -> Result<(), Backpressure> {
        let q = self.worker(conn)?;
        push(
            q,
            Command::Disconnect {
                handle: conn.handle,
                code,
            },
        )
        .map_err(|_| {
            self.refused.fetch_add(1, Relaxed);
            Backpressure(None)
        })
    }

    /// Commands refused so far because a worker's queue was full.
    #[must_use]
    pub fn refused_commands(&self) -> usize {
        self.refused.load(Relaxed)
    }

    /// The engine's figures, as `xrudp stats` shows them.
    #[must_use]
    pub fn stats(&self) -> Option<Snapshot> {
        self.engine.as_ref().map(|e| e.running().snapshot())
    }

    /// Every connection's quality, as the workers last published it (at most 100 ms
    /// ago): smoothed/min RTT, RTT variance, jitter, packets sent, lost and retransmitted
    /// since it connected, congestion window, bytes in flight and send-queue depth —
    /// what a game shows as ping and connection quality, or uses to find the player who
    /// suffers. Allocates; call it a few times a second, not per tick.
    #[must_use]
    pub fn connections(&self) -> Vec<(ConnId, ConnRow)> {
        self.engine.as_ref().map_or_else(Vec::new, |e| {
            e.running()
                .connections()
                .connections
                .into_iter()
                .map(|r| (conn_id(&r), r))
                .collect()
        })
    }

    /// One connection's quality (see [`GameServer::connections`]); `None` once it is
    /// gone, or before the worker has published it (within 100 ms of `Connected`).
    #[must_use]
    pub fn connection(&self, conn: ConnId) -> Option<ConnRow> {
        let e = self.engine.as_ref()?;
        e.running()
            .connections()
            .connections
            .into_iter()
            .find(|r| conn_id(r) == conn)
    }

    /// Stops the engine: clients get a shutdown notice, the XDP program is detached.
    pub fn shutdown(mut self) {
        if let Some(e) = self.engine.take() {
            e.stop();
        }
    }

    fn worker(&self, conn: ConnId) -> Result<&Arc<Queues>, Backpressure> {
        self.queues
            .get(usize::from(conn.worker))
            .ok_or(Backpressure(None))
    }
}

/// The embedding API's name for the connection a row describes.
fn conn_id(r: &ConnRow) -> ConnId {
    ConnId {
        worker: r.queue,
        handle: xrudp_proto::ConnHandle::from_parts(r.slot, r.generation),
    }
}

/// Queues `cmd` for the worker and rings its doorbell, so a sleeping worker serves it
/// now rather than at its next protocol timer; hands `cmd` back when the queue is full.
fn push(q: &Queues, cmd: Command) -> Result<(), Command> {
    q.commands.push(cmd)?;
    q.doorbell.ring();
    Ok(())
}
