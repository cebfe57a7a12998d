//! The message queues of a busy connection: reliable messages queued or unacknowledged,
//! unreliable ones queued, the frame log of packets in flight, and what the receive side
//! holds. Allocated on first use and dropped when the connection goes quiet.

use std::collections::VecDeque;

use super::channels::Held;
use super::reassembly::Reassembly;
use crate::congestion::delivery::{Estimator, Stamp};

/// A reliable message (or one fragment of one), queued or unacknowledged.
#[derive(Debug)]
pub(super) struct OutMsg {
    pub(super) data: Vec<u8>,
    pub(super) channel: u8,
    pub(super) seq: u16,
    /// (index, count) for a fragment.
    pub(super) frag: Option<(u16, u16)>,
    pub(super) acked: bool,
    pub(super) queued: bool,
    pub(super) sent_once: bool,
}

/// An unreliable message, queued.
#[derive(Debug)]
pub(super) struct Unrel {
    pub(super) data: Vec<u8>,
    pub(super) channel: u8,
    pub(super) seq: u16,
}

/// State that exists only while messages are queued, in flight, or held: allocated on
/// first use and dropped when the connection goes quiet, so an idle connection is small.
#[derive(Debug, Default)]
pub(super) struct Streams {
    pub(super) msgs: VecDeque<OutMsg>,
    /// Internal id of `msgs[0]`.
    pub(super) msg_base: u64,
    /// Id of the first message never sent.
    pub(super) next_unsent: u64,
    pub(super) retransmit: VecDeque<u64>,
    pub(super) unreliable: VecDeque<Unrel>,
    /// Message ids per sent packet, in packet order; `log[0]` has absolute index `log_base`.
    pub(super) log: VecDeque<u64>,
    pub(super) log_base: u64,
    /// Per channel: messages received ahead of the channel's next expected sequence number.
    pub(super) held: Vec<VecDeque<Option<Held>>>,
    pub(super) reasm: Vec<Reassembly>,
    /// Delivery-rate estimation, for a controller that uses it (BBR): it lives with the
    /// streams because only a connection with data in flight has rates to measure, and
    /// an idle connection keeps its 512-byte budget (docs/PROTOCOL.md §10).
    pub(super) delivery: Estimator,
    /// The stamps of the packets on record, by packet number, in sending order.
    pub(super) stamps: VecDeque<(u64, Stamp)>,
}

impl Streams {
    /// The message id logged at absolute index `i`, if still in the log.
    pub(super) fn logged(&self, i: u64) -> Option<u64> {
        let k = usize::try_from(i.checked_sub(self.log_base)?).ok()?;
        self.log.get(k).copied()
    }

    /// The message with id `id`, if still held (not yet trimmed off the front).
    pub(super) fn msg_mut(&mut self, id: u64) -> Option<&mut OutMsg> {
        let k = id.checked_sub(self.msg_base)?;
        self.msgs.get_mut(k as usize)
    }

    /// Whether nothing is queued, logged or held.
    pub(super) fn is_quiet(&self) -> bool {
        self.msgs.is_empty()
            && self.unreliable.is_empty()
            && self.retransmit.is_empty()
            && self.log.is_empty()
            && self.reasm.is_empty()
            && self.held.iter().all(VecDeque::is_empty)
    }

    /// Bytes this holds on the heap.
    pub(super) fn heap_bytes(&self) -> usize {
        self.msgs.capacity() * size_of::<OutMsg>()
            + self.msgs.iter().map(|m| m.data.capacity()).sum::<usize>()
            + self.retransmit.capacity() * 8
            + self.unreliable.capacity() * size_of::<Unrel>()
            + self.log.capacity() * 8
            + self.held.capacity() * size_of::<VecDeque<Option<Held>>>()
            + self
                .held
                .iter()
                .map(|h| h.capacity() * size_of::<Option<Held>>())
                .sum::<usize>()
            + self.reasm.capacity() * size_of::<Reassembly>()
            + self.stamps.capacity() * size_of::<(u64, Stamp)>()
    }
}

/// Queued or unacknowledged reliable messages a new `Streams` has room for.
const MSGS_ROOM: usize = 32;
/// Queued unreliable messages a new `Streams` has room for.
const UNRELIABLE_ROOM: usize = 16;
/// Frame-log entries (message ids of frames in flight) a new `Streams` has room for.
const LOG_ROOM: usize = 64;
/// Retransmission-queue entries a new `Streams` has room for.
const RETRANSMIT_ROOM: usize = 32;
/// Delivery-rate stamps (packets in flight) made room for at the first one, as for the
/// frame log; only connections whose controller uses them have any.
pub(super) const STAMP_ROOM: usize = 64;

/// The streams state, allocated on first use.
pub(super) fn streams_of(streams: &mut Option<Box<Streams>>, channels: usize) -> &mut Streams {
    streams.get_or_insert_with(|| {
        let mut s = Box::<Streams>::default();
        s.held = (0..channels).map(|_| VecDeque::new()).collect();
        // Room for a typical window up front, so the first retransmission or a new peak of
        // messages or frames in flight does not grow these queues on the packet path (the
        // engine's allocation test saw each after a VM stall or a burst): about 2.5 KiB per
        // active connection; an idle one drops them with the rest of `Streams`.
        s.msgs = VecDeque::with_capacity(MSGS_ROOM);
        s.unreliable = VecDeque::with_capacity(UNRELIABLE_ROOM);
        s.log = VecDeque::with_capacity(LOG_ROOM);
        s.retransmit = VecDeque::with_capacity(RETRANSMIT_ROOM);
        s
    })
}
