//! The server's connection timers: a hashed timing wheel with O(1) schedule, reschedule
//! and cancel, at most one entry per connection.
//!
//! Each connection owns one node of a table preallocated by [`Wheel::new`]; a scheduled
//! node sits in one slot's doubly linked list, linked by table index, so moving a timer
//! unlinks and relinks it without allocating or searching. Two levels bucket deadlines:
//!
//! - the fine level: [`FINE_SLOTS`] slots of one [`TICK`] (1 ms), holding the deadlines of
//!   the current revolution (the aligned span of 4096 ticks that holds the cursor);
//! - the coarse level: [`COARSE_SLOTS`] slots of one fine revolution (4.096 s) each, about
//!   262 s in all. A deadline further out waits in its coarse slot for later rounds.
//!
//! When the cursor enters a revolution, its coarse slot is cascaded: entries of that
//! revolution move to the fine level, so every entry moves down at most once. An
//! occupancy bitmap per level (64 words, and one word) finds the next non-empty slot with
//! a few word scans, and each fine slot keeps its earliest deadline and how many entries
//! share it, so [`Wheel::next_deadline`] and a round with nothing due cost O(1) however
//! many connections share a tick: a slot is walked again only when the last entry holding
//! its minimum leaves without expiring.
//!
//! The wheel only buckets: an entry expires when `now >= deadline`, never earlier, and
//! [`Wheel::next_deadline`] is the exact earliest deadline. Entries that expire in the same
//! call come out ordered by `(deadline, index)`, so ties fire in connection-index order.

use std::time::{Duration, Instant};

/// The wheel's resolution.
pub const TICK: Duration = Duration::from_millis(1);

const FINE_BITS: u32 = 12;
/// Slots of the fine level, one tick each.
pub const FINE_SLOTS: usize = 1 << FINE_BITS;
/// Slots of the coarse level, one fine revolution each.
pub const COARSE_SLOTS: usize = 64;

const FINE_MASK: u64 = FINE_SLOTS as u64 - 1;
const COARSE_MASK: u64 = COARSE_SLOTS as u64 - 1;
const NIL: u32 = u32::MAX;
/// `Node::slot` of a node that is not scheduled.
const UNLINKED: u16 = u16::MAX;

#[derive(Clone, Copy, Debug)]
struct Node {
    /// The deadline, in nanoseconds since the origin (584 years of range; a deadline
    /// before the origin counts as the origin).
    at: u64,
    prev: u32,
    next: u32,
    /// Fine slot (below `FINE_SLOTS`), `FINE_SLOTS` + coarse slot, or `UNLINKED`.
    slot: u16,
}

/// A two-level hashed timing wheel over a fixed set of indices (`0..capacity`).
///
/// Deadlines are kept to the nanosecond as offsets from the origin; one before the origin
/// counts as the origin.
#[derive(Debug)]
pub struct Wheel {
    origin: Instant,
    /// Every tick before this one has been expired.
    cursor: u64,
    nodes: Vec<Node>,
    /// List heads: the fine slots, then the coarse slots.
    heads: Vec<u32>,
    fine: [u64; FINE_SLOTS / 64],
    coarse: u64,
    /// Per fine slot: its earliest deadline and how many entries have it (`EMPTY` when
    /// the slot is empty).
    fine_min: Vec<SlotMin>,
    len: usize,
}

/// A fine slot's earliest deadline and the number of its entries at that deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SlotMin {
    at: u64,
    count: u32,
}

const EMPTY: SlotMin = SlotMin {
    at: u64::MAX,
    count: 0,
};

impl Wheel {
    /// A wheel for indices `0..capacity`, with ticks counted from `origin`. Allocates
    /// everything it will ever use.
    ///
    /// # Panics
    /// If `capacity` is `u32::MAX` or more.
    #[must_use]
    pub fn new(capacity: usize, origin: Instant) -> Self {
        assert!(
            capacity < NIL as usize,
            "wheel capacity {capacity} too large"
        );
        let node = Node {
            at: 0,
            prev: NIL,
            next: NIL,
            slot: UNLINKED,
        };
        Self {
            origin,
            cursor: 0,
            nodes: vec![node; capacity],
            heads: vec![NIL; FINE_SLOTS + COARSE_SLOTS],
            fine: [0; FINE_SLOTS / 64],
            coarse: 0,
            fine_min: vec![EMPTY; FINE_SLOTS],
            len: 0,
        }
    }

    /// Entries scheduled.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is scheduled.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes held (the node table and the list heads).
    #[must_use]
    pub fn memory(&self) -> usize {
        size_of::<Self>()
            + self.nodes.capacity() * size_of::<Node>()
            + self.heads.capacity() * size_of::<u32>()
            + self.fine_min.capacity() * size_of::<SlotMin>()
    }

    /// Bytes each index costs (its node).
    #[must_use]
    pub const fn node_bytes() -> usize {
        size_of::<Node>()
    }

    /// The deadline scheduled for `index`, if any.
    #[must_use]
    pub fn deadline(&self, index: u32) -> Option<Instant> {
        let n = self.nodes.get(index as usize)?;
        (n.slot != UNLINKED).then(|| self.instant(n.at))
    }

    /// Sets `index`'s timer to `deadline`, replacing any earlier setting. O(1).
    ///
    /// # Panics
    /// If `index` is not below the capacity.
    pub fn schedule(&mut self, index: u32, deadline: Instant) {
        let at = self.nanos(deadline);
        let n = self.nodes[index as usize];
        if n.slot != UNLINKED {
            if n.at == at {
                return;
            }
            self.unlink(index);
        }
        self.link(index, at);
    }

    /// Clears `index`'s timer; returns whether one was set. O(1).
    pub fn cancel(&mut self, index: u32) -> bool {
        if self
            .nodes
            .get(index as usize)
            .is_some_and(|n| n.slot != UNLINKED)
        {
            self.unlink(index);
            true
        } else {
            false
        }
    }

    /// The earliest deadline scheduled (exact, not rounded to a tick).
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        // Fine entries all lie between the cursor and the end of its revolution.
        if let Some(slot) = self.next_fine((self.cursor & FINE_MASK) as usize, FINE_SLOTS - 1) {
            let m = self.fine_min[slot];
            debug_assert_eq!(
                Some(m.at),
                self.min_in(slot, |_| true),
                "slot {slot} minimum"
            );
            return Some(self.instant(m.at));
        }
        // Then the first coarse slot, in revolution order, holding an entry of the round
        // it stands for; an entry of a later round is later than all of those.
        let block = self.cursor >> FINE_BITS;
        let first = (block + 1) & COARSE_MASK;
        let mut bits = self.coarse.rotate_right(first as u32);
        while bits != 0 {
            let k = u64::from(bits.trailing_zeros());
            bits &= bits - 1;
            let b = block + 1 + k;
            let slot = FINE_SLOTS + (b & COARSE_MASK) as usize;
            if let Some(at) = self.min_in(slot, |t| t >> FINE_BITS == b) {
                return Some(self.instant(at));
            }
        }
        // Only later rounds remain (over 262 s away): the minimum of them all.
        (FINE_SLOTS..FINE_SLOTS + COARSE_SLOTS)
            .filter_map(|s| self.min_in(s, |_| true))
            .min()
            .map(|at| self.instant(at))
    }

    /// Removes every entry with `deadline <= now` and appends its index to `due`, ordered
    /// by `(deadline, index)`. Allocates nothing when `due` has spare capacity for
    /// [`Wheel::len`] indices. Costs O(expired entries + non-empty slots passed).
    pub fn expire(&mut self, now: Instant, due: &mut Vec<u32>) {
        let start = due.len();
        let now = self.nanos(now);
        let now_tick = tick(now);
        if self.len == 0 {
            self.cursor = self.cursor.max(now_tick);
            return;
        }
        let target = now_tick.max(self.cursor);
        loop {
            let revolution_end = self.cursor | FINE_MASK;
            let upto = (target.min(revolution_end) & FINE_MASK) as usize;
            let mut from = (self.cursor & FINE_MASK) as usize;
            while let Some(slot) = self.next_fine(from, upto) {
                self.drain(slot, now, due);
                from = slot + 1;
                if from > upto {
                    break;
                }
            }
            if target <= revolution_end {
                self.cursor = target;
                break;
            }
            // Every fine entry was due (its tick is before `target`, now's tick).
            debug_assert!(self.fine.iter().all(|&w| w == 0), "fine level drained");
            let old = self.cursor >> FINE_BITS;
            let new = target >> FINE_BITS;
            self.cursor = new << FINE_BITS;
            // Cascade the coarse slots of revolutions old+1..=new (all of them after a
            // long jump): earlier revolutions are due, the new one moves to the fine level.
            let passed = (new - old).min(COARSE_SLOTS as u64);
            for k in 0..passed {
                let slot = FINE_SLOTS + ((new - k) & COARSE_MASK) as usize;
                self.cascade(slot, new, due);
            }
        }
        due[start..].sort_unstable_by_key(|&i| (self.nodes[i as usize].at, i));
    }

    fn nanos(&self, t: Instant) -> u64 {
        let ns = t.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    fn instant(&self, at: u64) -> Instant {
        self.origin + Duration::from_nanos(at)
    }

    fn link(&mut self, index: u32, at: u64) {
        // A deadline already past goes in the cursor's slot.
        let tick = tick(at).max(self.cursor);
        let slot = if tick >> FINE_BITS == self.cursor >> FINE_BITS {
            (tick & FINE_MASK) as usize
        } else {
            FINE_SLOTS + ((tick >> FINE_BITS) & COARSE_MASK) as usize
        };
        let head = self.heads[slot];
        if head != NIL {
            self.nodes[head as usize].prev = index;
        }
        self.nodes[index as usize] = Node {
            at,
            prev: NIL,
            next: head,
            slot: slot as u16,
        };
        self.heads[slot] = index;
        self.set_occupied(slot, true);
        if let Some(m) = self.fine_min.get_mut(slot) {
            if at < m.at {
                *m = SlotMin { at, count: 1 };
            } else if at == m.at {
                m.count += 1;
            }
        }
        self.len += 1;
    }

    /// Takes `index` out of its slot and keeps the slot's minimum exact: when the last
    /// entry at the minimum leaves, the slot is walked once for the new one.
    fn unlink(&mut self, index: u32) {
        let n = self.nodes[index as usize];
        let slot = usize::from(n.slot);
        self.detach(index);
        if self.forget_min(slot, n.at) {
            self.refresh_min(slot);
        }
    }

    /// Accounts for an entry at `at` leaving `slot`; returns whether the slot's minimum
    /// must be recomputed (its last entry at the minimum left and others remain).
    fn forget_min(&mut self, slot: usize, at: u64) -> bool {
        let empty = self.heads.get(slot).is_none_or(|&h| h == NIL);
        let Some(m) = self.fine_min.get_mut(slot) else {
            return false;
        };
        if empty {
            *m = EMPTY;
            return false;
        }
        if at == m.at {
            m.count -= 1;
            return m.count == 0;
        }
        false
    }

    /// Recomputes a fine slot's minimum and its count by walking the slot.
    fn refresh_min(&mut self, slot: usize) {
        let mut m = EMPTY;
        let mut i = self.heads[slot];
        while i != NIL {
            let n = &self.nodes[i as usize];
            if n.at < m.at {
                m = SlotMin { at: n.at, count: 1 };
            } else if n.at == m.at {
                m.count += 1;
            }
            i = n.next;
        }
        self.fine_min[slot] = m;
    }

    /// Takes `index` out of its slot's list; the slot's minimum is the caller's concern.
    fn detach(&mut self, index: u32) {
        let n = self.nodes[index as usize];
        let slot = usize::from(n.slot);
        if n.prev == NIL {
            self.heads[slot] = n.next;
            if n.next == NIL {
                self.set_occupied(slot, false);
            }
        } else {
            self.nodes[n.prev as usize].next = n.next;
        }
        if n.next != NIL {
            self.nodes[n.next as usize].prev = n.prev;
        }
        let n = &mut self.nodes[index as usize];
        n.slot = UNLINKED;
        n.prev = NIL;
        n.next = NIL;
        self.len -= 1;
    }

    fn set_occupied(&mut self, slot: usize, on: bool) {
        let (word, bit) = if slot < FINE_SLOTS {
            (&mut self.fine[slot / 64], slot % 64)
        } else {
            (&mut self.coarse, slot - FINE_SLOTS)
        };
        if on {
            *word |= 1 << bit;
        } else {
            *word &= !(1 << bit);
        }
    }

    /// The first occupied fine slot in `from..=to`.
    fn next_fine(&self, from: usize, to: usize) -> Option<usize> {
        if from > to {
            return None;
        }
        let mut w = from / 64;
        let mut bits = self.fine[w] & (!0u64 << (from % 64));
        loop {
            if bits != 0 {
                let slot = w * 64 + bits.trailing_zeros() as usize;
                return (slot <= to).then_some(slot);
            }
            w += 1;
            if w > to / 64 {
                return None;
            }
            bits = self.fine[w];
        }
    }

    /// The earliest deadline in `slot` among entries whose tick passes `keep`.
    fn min_in(&self, slot: usize, keep: impl Fn(u64) -> bool) -> Option<u64> {
        let mut i = self.heads[slot];
        let mut min: Option<u64> = None;
        while i != NIL {
            let n = &self.nodes[i as usize];
            if keep(tick(n.at)) && min.is_none_or(|m| n.at < m) {
                min = Some(n.at);
            }
            i = n.next;
        }
        min
    }

    /// Moves the due entries of a fine slot to `due`. A slot whose minimum is not due
    /// is not walked; one that is, is walked once and its minimum recomputed once.
    fn drain(&mut self, slot: usize, now: u64, due: &mut Vec<u32>) {
        if self.fine_min[slot].at > now {
            return;
        }
        let mut i = self.heads[slot];
        while i != NIL {
            let n = self.nodes[i as usize];
            if n.at <= now {
                self.detach(i);
                due.push(i);
            }
            i = n.next;
        }
        self.refresh_min(slot);
    }

    /// Sorts a coarse slot's entries as the cursor enters revolution `block`: earlier ones
    /// are due, those of `block` move to the fine level, later rounds stay.
    fn cascade(&mut self, slot: usize, block: u64, due: &mut Vec<u32>) {
        let mut i = self.heads[slot];
        while i != NIL {
            let n = self.nodes[i as usize];
            let b = tick(n.at) >> FINE_BITS;
            if b < block {
                self.unlink(i);
                due.push(i);
            } else if b == block {
                self.unlink(i);
                self.link(i, n.at);
            }
            i = n.next;
        }
    }
}

/// The tick of a deadline in nanoseconds since the origin.
fn tick(at: u64) -> u64 {
    at / 1_000_000
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn expired(w: &mut Wheel, now: Instant) -> Vec<u32> {
        let mut due = Vec::with_capacity(w.len());
        w.expire(now, &mut due);
        due
    }

    /// A driver's loop under steady traffic that runs the timers every round: every
    /// entry is pushed back before it is due, so nothing expires, and `expire` runs
    /// anyway. It must keep the cursor at `now` across revolutions, so that deadlines
    /// keep landing in the fine level, where the next deadline is read in O(1); a cursor
    /// left behind sends them all to one coarse slot, which `next_deadline` walks
    /// (`Server::poll_timeout`).
    #[test]
    fn expire_with_nothing_due_keeps_the_cursor_at_now_across_revolutions() {
        let origin = Instant::now();
        let mut w = Wheel::new(500, origin);
        let mut due = Vec::with_capacity(500);
        // 20 s in 1 ms rounds (almost five revolutions); each round pushes 50 entries'
        // deadlines 25–74 ms out, so every entry is rescheduled every 10 ms.
        for round in 0..20_000u64 {
            let now = origin + ms(round);
            for k in 0..50 {
                let i = ((round * 50 + k) % 500) as u32;
                w.schedule(i, now + ms(25 + k));
            }
            w.expire(now, &mut due);
            assert!(due.is_empty(), "round {round}: {due:?} expired");
            assert_eq!(w.cursor, round, "round {round}: cursor");
            let linked = || w.nodes.iter().filter(|n| n.slot != UNLINKED);
            let coarse = linked()
                .filter(|n| usize::from(n.slot) >= FINE_SLOTS)
                .count();
            let beyond = linked()
                .filter(|n| tick(n.at) >> FINE_BITS != round >> FINE_BITS)
                .count();
            assert_eq!(
                coarse, beyond,
                "round {round}: only next-revolution deadlines are coarse"
            );
        }
    }

    #[test]
    fn fires_at_the_exact_deadline_never_early() {
        let t0 = Instant::now();
        let mut w = Wheel::new(4, t0);
        let d = t0 + Duration::from_micros(2_500);
        w.schedule(1, d);
        assert_eq!(w.next_deadline(), Some(d));
        assert!(
            expired(
                &mut w,
                d.checked_sub(Duration::from_nanos(1)).expect("after t0")
            )
            .is_empty()
        );
        assert_eq!(w.next_deadline(), Some(d), "still scheduled in its tick");
        assert_eq!(expired(&mut w, d), vec![1]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn reschedule_and_cancel_replace_the_one_entry() {
        let t0 = Instant::now();
        let mut w = Wheel::new(4, t0);
        w.schedule(2, t0 + ms(50));
        w.schedule(2, t0 + ms(10));
        w.schedule(2, t0 + ms(30));
        assert_eq!(w.len(), 1);
        assert_eq!(w.deadline(2), Some(t0 + ms(30)));
        assert!(expired(&mut w, t0 + ms(20)).is_empty());
        assert!(w.cancel(2));
        assert!(!w.cancel(2));
        assert!(expired(&mut w, t0 + ms(100)).is_empty());
        assert_eq!(w.deadline(2), None);
    }

    #[test]
    fn ties_fire_in_index_order_and_deadlines_in_time_order() {
        let t0 = Instant::now();
        let mut w = Wheel::new(8, t0);
        let d = t0 + ms(7);
        for i in [5, 0, 7, 3] {
            w.schedule(i, d);
        }
        w.schedule(
            6,
            d.checked_sub(Duration::from_micros(300)).expect("after t0"),
        );
        w.schedule(1, t0 + ms(5_000)); // the next revolution
        assert_eq!(expired(&mut w, t0 + ms(6_000)), vec![6, 0, 3, 5, 7, 1]);
    }

    #[test]
    fn far_deadlines_wait_for_their_round() {
        let t0 = Instant::now();
        let mut w = Wheel::new(4, t0);
        let far = t0 + Duration::from_secs(1_000); // several coarse revolutions out
        w.schedule(0, far);
        w.schedule(1, t0 + Duration::from_secs(300));
        assert_eq!(w.next_deadline(), Some(t0 + Duration::from_secs(300)));
        let mut now = t0;
        let mut fired = Vec::new();
        while now + ms(997) < far {
            now += ms(997);
            fired.extend(expired(&mut w, now));
            let next = if fired.is_empty() {
                Duration::from_secs(300)
            } else {
                Duration::from_secs(1_000)
            };
            assert_eq!(w.next_deadline(), Some(t0 + next), "at {:?}", now - t0);
        }
        assert_eq!(fired, vec![1]);
        assert_eq!(expired(&mut w, far), vec![0]);
    }

    #[test]
    fn past_deadlines_fire_at_the_next_call() {
        let t0 = Instant::now();
        let mut w = Wheel::new(2, t0);
        assert!(expired(&mut w, t0 + ms(100)).is_empty());
        w.schedule(0, t0 + ms(40));
        assert_eq!(w.next_deadline(), Some(t0 + ms(40)));
        assert_eq!(expired(&mut w, t0 + ms(100)), vec![0]);
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        Schedule(u32, u64),
        Cancel(u32),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Offsets and steps in microseconds, from sub-tick to beyond the coarse horizon.
        let span = prop_oneof![0u64..3_000, 0u64..10_000_000, 0u64..700_000_000];
        prop_oneof![
            4 => (0u32..16, span.clone()).prop_map(|(i, d)| Op::Schedule(i, d)),
            1 => (0u32..16).prop_map(Op::Cancel),
            3 => span.prop_map(Op::Advance),
        ]
    }

    /// Crowded ticks: many indices, deadlines on a 250 µs grid a few ticks out, so slots
    /// hold several entries and ties at their minimum (what a tick-rate game server's
    /// connections look like to the wheel).
    fn crowded_op() -> impl Strategy<Value = Op> {
        let grid = (0u64..16).prop_map(|k| k * 250);
        prop_oneof![
            6 => (0u32..16, grid.clone()).prop_map(|(i, d)| Op::Schedule(i, d)),
            2 => (0u32..16).prop_map(Op::Cancel),
            2 => grid.prop_map(Op::Advance),
        ]
    }

    #[test]
    fn a_crowded_slot_keeps_its_minimum_through_cancels() {
        let t0 = Instant::now();
        let mut w = Wheel::new(8, t0);
        let base = t0 + ms(3);
        for i in 0..8u32 {
            // 0 and 1 share the minimum; the rest come later in the same tick.
            let us = [0, 0, 100, 200, 300, 400, 500, 600][i as usize];
            w.schedule(i, base + Duration::from_micros(us));
        }
        assert_eq!(w.next_deadline(), Some(base));
        assert!(w.cancel(0));
        assert_eq!(w.next_deadline(), Some(base), "1 still holds the minimum");
        w.schedule(1, base + ms(10));
        assert_eq!(w.next_deadline(), Some(base + Duration::from_micros(100)));
        // Partly due: the slot keeps the rest and its new minimum.
        assert_eq!(
            expired(&mut w, base + Duration::from_micros(250)),
            vec![2, 3]
        );
        assert_eq!(w.next_deadline(), Some(base + Duration::from_micros(300)));
        assert_eq!(expired(&mut w, base + ms(1)), vec![4, 5, 6, 7]);
        assert_eq!(w.next_deadline(), Some(base + ms(10)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The wheel against a `BTreeSet` of `(deadline, index)`.
        #[test]
        fn matches_a_sorted_map(ops in proptest::collection::vec(op(), 1..200)) {
            check_against_model(&ops)?;
        }

        /// The same, with crowded slots and ties.
        #[test]
        fn matches_a_sorted_map_when_crowded(ops in proptest::collection::vec(crowded_op(), 1..300)) {
            check_against_model(&ops)?;
        }
    }

    fn check_against_model(ops: &[Op]) -> Result<(), TestCaseError> {
        let t0 = Instant::now();
        let mut w = Wheel::new(16, t0);
        let mut model: BTreeSet<(Instant, u32)> = BTreeSet::new();
        let mut at: HashMap<u32, Instant> = HashMap::new();
        // Deadlines may lie behind `now`, never before the wheel's origin.
        let mut now = t0 + ms(1);
        for op in ops.iter().copied() {
            match op {
                Op::Schedule(i, us) => {
                    // Deadlines from a little in the past to far in the future.
                    let d = (now + Duration::from_micros(us))
                        .checked_sub(Duration::from_micros(500))
                        .expect("after t0");
                    w.schedule(i, d);
                    if let Some(old) = at.insert(i, d) {
                        model.remove(&(old, i));
                    }
                    model.insert((d, i));
                }
                Op::Cancel(i) => {
                    let was = at.remove(&i);
                    if let Some(old) = was {
                        model.remove(&(old, i));
                    }
                    prop_assert_eq!(w.cancel(i), was.is_some());
                }
                Op::Advance(us) => {
                    now += Duration::from_micros(us);
                    let got = expired(&mut w, now);
                    let mut want = Vec::new();
                    while let Some(&(d, i)) = model.first() {
                        if d > now {
                            break;
                        }
                        model.pop_first();
                        at.remove(&i);
                        want.push(i);
                    }
                    prop_assert_eq!(got, want);
                }
            }
            prop_assert_eq!(w.len(), model.len());
            prop_assert_eq!(w.next_deadline(), model.first().map(|k| k.0));
            for i in 0..16 {
                prop_assert_eq!(w.deadline(i), at.get(&i).copied());
            }
        }
        Ok(())
    }
}
