//! Game code embedding the engine ([`crate::api`]): events out and commands in over
//! one pair of bounded lock-free queues per worker.

use std::{net::SocketAddr, sync::Arc};

use crossbeam_queue::ArrayQueue;
use xrudp_proto::{ConnHandle, DisconnectReason};

use super::super::{ConnId, Out, outbox::Payload};
use crate::drive::Doorbell;

/// Commands taken from the application per round, so one burst cannot starve RX.
const COMMANDS_PER_ROUND: usize = 1024;

/// An event for embedding game code.
#[derive(Debug)]
pub enum Event {
    /// A client was admitted.
    Connected {
        /// The connection.
        conn: ConnId,
        /// The client's address.
        addr: SocketAddr,
        /// The connect token's client id, when tokens are required.
        client_id: Option<u64>,
    },
    /// A message arrived.
    Message {
        /// The connection.
        conn: ConnId,
        /// The channel.
        channel: u8,
        /// The message.
        data: Vec<u8>,
    },
    /// A connection ended.
    Disconnected {
        /// The connection.
        conn: ConnId,
        /// Why.
        reason: DisconnectReason,
    },
}

/// A command from embedding game code.
#[derive(Debug)]
pub enum Command {
    /// Send `data` to one connection.
    Send {
        /// The connection's handle within this worker.
        handle: ConnHandle,
        /// The channel.
        channel: u8,
        /// The message.
        data: Vec<u8>,
    },
    /// Send the same bytes to several connections of this worker (a state update's fan-out).
    Broadcast {
        /// The connections.
        handles: Arc<[ConnHandle]>,
        /// The channel.
        channel: u8,
        /// The message, shared.
        data: Arc<[u8]>,
    },
    /// Close a connection with an application code.
    Disconnect {
        /// The connection.
        handle: ConnHandle,
        /// The code the client sees.
        code: u16,
    },
}

/// The queues between one worker and embedding game code.
#[derive(Debug)]
pub struct Queues {
    /// Worker → application.
    pub events: ArrayQueue<Event>,
    /// Application → worker.
    pub commands: ArrayQueue<Command>,
    /// Rung after pushing a command or taking an event, so a sleeping worker serves it
    /// now rather than at its next protocol timer.
    pub(crate) doorbell: Doorbell,
}

impl Queues {
    /// Queues of `capacity` entries each, and their doorbell (an eventfd).
    pub fn new(capacity: usize) -> std::io::Result<Self> {
        Ok(Self {
            events: ArrayQueue::new(capacity.max(1)),
            commands: ArrayQueue::new(capacity.max(1)),
            doorbell: Doorbell::new()?,
        })
    }
}

/// One worker's side of the embedding queues.
#[derive(Debug)]
pub(crate) struct Embedded {
    queues: Arc<Queues>,
    /// An event taken from the protocol that the event queue had no room for.
    held: Option<Event>,
}

impl Embedded {
    pub(crate) fn new(queues: Arc<Queues>) -> Self {
        Self { queues, held: None }
    }

    /// The game's doorbell.
    pub(crate) fn doorbell(&self) -> &Doorbell {
        &self.queues.doorbell
    }

    /// Whether the game queued commands, or took events while one waits for room.
    pub(crate) fn has_work(&self) -> bool {
        !self.queues.commands.is_empty() || (self.held.is_some() && !self.queues.events.is_full())
    }

    /// Applies up to [`COMMANDS_PER_ROUND`] commands from the game.
    pub(crate) fn on_round(&mut self, out: &mut Out<'_>) {
        for _ in 0..COMMANDS_PER_ROUND {
            let Some(cmd) = self.queues.commands.pop() else {
                break;
            };
            match cmd {
                Command::Send {
                    handle,
                    channel,
                    data,
                } => out.send(handle, channel, Payload::Owned(data)),
                Command::Broadcast {
                    handles,
                    channel,
                    data,
                } => {
                    for &h in handles.iter() {
                        out.send(h, channel, Payload::Shared(Arc::clone(&data)));
                    }
                }
                Command::Disconnect { handle, code } => out.server.disconnect(handle, code),
            }
        }
    }

    /// Holds `ev` for the game (pushed by [`Embedded::deliver_held`]).
    pub(crate) fn hold(&mut self, ev: Event) {
        self.held = Some(ev);
    }

    /// Pushes the held event to the game; `false` if its queue is still full.
    pub(crate) fn deliver_held(&mut self) -> bool {
        let Some(ev) = self.held.take() else {
            return true;
        };
        match self.queues.events.push(ev) {
            Ok(()) => true,
            Err(ev) => {
                self.held = Some(ev);
                false
            }
        }
    }
}
