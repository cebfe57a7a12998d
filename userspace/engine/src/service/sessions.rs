//! Publishing a worker's live sessions into the XDP session allow-list.
//!
//! The protocol reports every admission, validated migration and close
//! ([`xrudp_proto::SessionChange`]); the worker writes each into the `XRUDP_SESSIONS` map
//! under its receive queue: one `bpf()` syscall per connection event, none per packet.
//! A failed update is counted (`session_updates_failed`) and logged: the map is sized
//! for every connection slot of every queue, so a failure means something is wrong.

use xrudp_common::admit::{Peer, SessionKey};
use xrudp_proto::{Server, SessionChange};

use crate::sys::bpf::SessionMap;

/// One worker's view of the session allow-list.
#[derive(Debug)]
pub(crate) struct Sessions {
    map: SessionMap,
    queue: u32,
    /// Updates the kernel refused.
    pub(crate) failed: u64,
}

impl Sessions {
    /// Publishes into `map` the sessions of the worker on receive queue `queue`.
    pub(crate) fn new(map: SessionMap, queue: u32) -> Self {
        Self {
            map,
            queue,
            failed: 0,
        }
    }

    /// Writes every change the protocol reported since the last call.
    pub(crate) fn sync(&mut self, server: &mut Server) {
        while let Some(change) = server.poll_session() {
            let (conn_id, result) = match change {
                SessionChange::Live {
                    conn_id,
                    addr,
                    may_migrate,
                } => (
                    conn_id,
                    self.map
                        .insert(&self.key(conn_id), &Peer::new(addr, may_migrate)),
                ),
                SessionChange::Gone { conn_id } => (conn_id, self.map.remove(&self.key(conn_id))),
            };
            if let Err(e) = result {
                self.failed += 1;
                tracing::warn!(
                    queue = self.queue,
                    conn = conn_id,
                    error = %e,
                    "updating the XDP session allow-list failed: this session's packets may be dropped in the driver"
                );
            }
        }
    }

    fn key(&self, conn_id: u32) -> SessionKey {
        SessionKey {
            queue: self.queue,
            conn_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use xrudp_common::admit::{SessionKey, SessionSlots};

    /// The XDP program finds a session's entry from the slot bits of its id: they must
    /// be the bits the server issues ids with, at every size.
    #[test]
    fn the_allow_list_reads_the_slot_bits_the_server_writes() {
        for n in [
            1usize,
            2,
            3,
            7,
            8,
            9,
            1000,
            1024,
            1025,
            65_536,
            100_000,
            1 << 24,
        ] {
            let bits = xrudp_proto::slot_bits(n);
            let layout = SessionSlots::new(u32::try_from(n).expect("fits"));
            assert_eq!(u64::from(layout.mask), (1u64 << bits) - 1, "{n} slots");
            // The last slot of generation 5 on queue 2.
            let id = (5u32 << bits) | (n as u32 - 1);
            assert_eq!(
                layout.index(SessionKey {
                    queue: 2,
                    conn_id: id
                }),
                Some(2 * n as u32 + n as u32 - 1),
                "{n} slots"
            );
        }
    }
}
