//! The protocol applications: what a worker does with the protocol's events.

use xrudp_proto::ServerEvent;

use super::{ConnId, Out, outbox::Payload};

pub(crate) mod embedded;
pub(crate) mod relay;

pub use embedded::{Command, Event, Queues};
pub use relay::RELAY_JOIN;

/// A worker's protocol application; each variant owns its state.
#[derive(Debug)]
pub(crate) enum App {
    /// Every message goes back to its sender on the same channel.
    Echo,
    /// Clients join rooms; every message is forwarded to the room's other members.
    Relay(relay::Relay),
    /// Game code, through [`crate::api`].
    Embedded(embedded::Embedded),
}

impl App {
    /// Work of the round that does not come from the protocol: messages relayed from
    /// other workers, commands from the game.
    pub(super) fn on_round(&mut self, worker: u16, out: &mut Out<'_>) {
        match self {
            Self::Echo => {}
            Self::Relay(r) => r.on_round(worker, out),
            Self::Embedded(e) => e.on_round(out),
        }
    }

    /// Whether the application can take another event (the game's event queue has
    /// room for the one it holds).
    /// The game's doorbell (embedded only).
    pub(super) fn doorbell(&self) -> Option<&crate::drive::Doorbell> {
        match self {
            Self::Embedded(e) => Some(e.doorbell()),
            _ => None,
        }
    }

    /// Whether the game queued work for the worker (embedded only).
    pub(super) fn has_work(&self) -> bool {
        match self {
            Self::Embedded(e) => e.has_work(),
            _ => false,
        }
    }

    pub(super) fn ready(&mut self) -> bool {
        match self {
            Self::Echo | Self::Relay(_) => true,
            Self::Embedded(e) => e.deliver_held(),
        }
    }

    /// One event of the protocol, for a connection of worker `worker`.
    pub(super) fn on_event(&mut self, worker: u16, ev: ServerEvent, out: &mut Out<'_>) {
        let conn = |handle| ConnId { worker, handle };
        match (self, ev) {
            (
                Self::Echo,
                ServerEvent::Message {
                    handle,
                    channel,
                    data,
                },
            ) => out.send(handle, channel, Payload::Owned(data)),
            (
                Self::Relay(r),
                ServerEvent::Message {
                    handle,
                    channel,
                    data,
                },
            ) => r.on_message(conn(handle), out, channel, data),
            (Self::Relay(r), ServerEvent::Disconnected { handle, .. }) => r.leave(conn(handle)),
            (Self::Embedded(e), ev) => e.hold(match ev {
                ServerEvent::Message {
                    handle,
                    channel,
                    data,
                } => Event::Message {
                    conn: conn(handle),
                    channel,
                    data,
                },
                ServerEvent::Connected {
                    handle,
                    addr,
                    client_id,
                    ..
                } => Event::Connected {
                    conn: conn(handle),
                    addr,
                    client_id,
                },
                ServerEvent::Disconnected { handle, reason } => Event::Disconnected {
                    conn: conn(handle),
                    reason,
                },
            }),
            (Self::Echo | Self::Relay(_), _) => {}
        }
    }

    /// Connections of this worker in a relay room.
    pub(super) fn relay_members(&self) -> u64 {
        match self {
            Self::Relay(r) => r.members(),
            _ => 0,
        }
    }

    /// Messages the relay forwarded.
    pub(super) fn relayed(&self) -> u64 {
        match self {
            Self::Relay(r) => r.relayed,
            _ => 0,
        }
    }
}
