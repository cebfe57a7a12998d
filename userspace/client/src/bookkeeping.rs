//! Bookkeeping for one thread driving many connections over its own transport: which
//! connections have work, which are queued for event polling, when each wants its timer,
//! how many are in each state, and distinct seeds for their RNGs.
//!
//! [`crate::Fleet`] keeps it over mio sockets, the engine's load generator over batched
//! sockets and AF_XDP rings; both keep their own lists of indices and their own timer
//! heap, and ask a connection's [`Book`] what to put on them.

use std::collections::VecDeque;
use std::time::Instant;

use xrudp_proto::{Client, ClientState};

/// How many connections are in each [`ClientState`], as of their last settle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts([usize; 4]);

impl StateCounts {
    /// Connections in `state`.
    #[must_use]
    pub fn count(&self, state: ClientState) -> usize {
        self.0[slot(state)]
    }

    /// Connections counted, in any state.
    #[must_use]
    #[cfg_attr(
        not(feature = "loadgen"),
        expect(
            dead_code,
            reason = "the load generator's; Fleet counts per state only"
        )
    )]
    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }
}

/// One connection's bookkeeping: its live timer deadline, its state as last counted, and
/// whether it is on its driver's list of connections with work and in its event queue.
#[derive(Debug)]
pub struct Book {
    scheduled: Option<Instant>,
    state: ClientState,
    dirty: bool,
    in_events: bool,
}

impl Book {
    /// A new connection's book, counted in `counts` as connecting and with work to do (its
    /// hello): the caller puts its index on its list of connections with work.
    pub fn new(counts: &mut StateCounts) -> Self {
        let state = ClientState::Connecting;
        counts.0[slot(state)] += 1;
        Self {
            scheduled: None,
            state,
            dirty: true,
            in_events: false,
        }
    }

    /// Stops counting a removed connection in `counts`.
    pub fn forget(&self, counts: &mut StateCounts) {
        counts.0[slot(self.state)] -= 1;
    }

    /// Marks the connection as having work. Returns `true` if it was not marked yet: the
    /// caller then puts its index on its list of connections with work.
    #[must_use]
    pub fn mark(&mut self) -> bool {
        !std::mem::replace(&mut self.dirty, true)
    }

    /// The deadline of the connection's live timer-heap item; heap items with any other
    /// deadline are stale.
    #[must_use]
    pub fn scheduled(&self) -> Option<Instant> {
        self.scheduled
    }

    /// Takes `t`, a deadline surfacing from the timer heap, if it is the live one; returns
    /// whether it was (the connection's timer is then due: mark it).
    pub fn take_due(&mut self, t: Instant) -> bool {
        let due = self.scheduled == Some(t);
        if due {
            self.scheduled = None;
        }
        due
    }

    /// Notes that the connection's events are drained, so that its next settle queues it
    /// for event polling again.
    pub fn events_drained(&mut self) {
        self.in_events = false;
    }

    /// Records a settle of connection `index` (its due timer handled, its output sent):
    /// clears its mark, counts its new state in `counts` and queues it on `events` unless
    /// it is there. Returns a deadline to push on the timer heap when the connection wants
    /// one earlier than its live item; a later one is found when that item surfaces (an
    /// early wakeup is harmless).
    #[must_use]
    pub fn settled(
        &mut self,
        client: &Client,
        index: u32,
        counts: &mut StateCounts,
        events: &mut VecDeque<u32>,
    ) -> Option<Instant> {
        self.dirty = false;
        let state = client.state();
        if state != self.state {
            counts.0[slot(self.state)] -= 1;
            counts.0[slot(state)] += 1;
            self.state = state;
        }
        if !self.in_events {
            self.in_events = true;
            events.push_back(index);
        }
        match client.poll_timeout() {
            Some(want) if self.scheduled.is_none_or(|s| want < s) => {
                self.scheduled = Some(want);
                Some(want)
            }
            _ => None,
        }
    }
}

/// Distinct per-connection RNG seeds drawn from one seed: the `SplitMix64` sequence.
#[derive(Clone, Debug)]
pub struct Seeds(u64);

impl Seeds {
    /// The sequence that starts from `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next seed of the sequence.
    pub fn draw(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn slot(state: ClientState) -> usize {
    match state {
        ClientState::Connecting => 0,
        ClientState::Connected => 1,
        ClientState::Disconnecting => 2,
        ClientState::Disconnected => 3,
    }
}
