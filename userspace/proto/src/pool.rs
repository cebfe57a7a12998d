//! Size-class pools of byte buffers, so that steady-state message traffic allocates
//! nothing: queued, held and delivered messages take their buffers from here, and the
//! application hands delivered buffers back (`Server::recycle`, `Client::recycle`).
//!
//! A request for `len` bytes takes a buffer of the smallest class in [`CLASSES`] that
//! holds it (64 B, 256 B, 1 KiB, 2 KiB, 4 KiB, 16 KiB, 64 KiB, 256 KiB), so a small message
//! does not pin a 4 KiB buffer, an MTU-sized fragment takes 2 KiB, and reassembled messages up to 256 KiB (the default
//! `max_message_size`) are reused too; a larger request is allocated to size and not kept.
//! A returned buffer joins the largest class its capacity covers. Each class keeps at most
//! [`CLASS_BUDGET`] bytes of free buffers (counted by capacity) and drops the rest, so a
//! pool holds at most 8 MiB however bursty the traffic was.
//!
//! Reassembly also needs a list of parts per fragmented message; those lists are pooled
//! here too ([`MAX_PART_LISTS`]).

/// Buffer capacities, smallest first.
pub const CLASSES: [usize; 8] = [64, 256, 1024, 2048, 4096, 16 << 10, 64 << 10, 256 << 10];

/// Bytes of free buffers kept per class at most.
pub const CLASS_BUDGET: usize = 1 << 20;

/// Room each class's free list starts with (8 × 64 × 24 B = 12 KiB), so that moderate
/// traffic never grows a free list: the lists grow only past 64 free buffers in a class.
pub const INITIAL_ROOM: usize = 64;

/// Reassembly part lists kept at most.
pub const MAX_PART_LISTS: usize = 64;

/// A reassembly's parts: fragment index and bytes.
pub(crate) type Parts = Vec<(u16, Vec<u8>)>;

/// Free lists of cleared `Vec<u8>`s by size class.
#[derive(Debug)]
pub struct BufPool {
    free: [Vec<Vec<u8>>; CLASSES.len()],
    /// Bytes (capacity) free per class.
    bytes: [usize; CLASSES.len()],
    parts: Vec<Parts>,
}

impl Default for BufPool {
    fn default() -> Self {
        Self {
            free: std::array::from_fn(|_| Vec::with_capacity(INITIAL_ROOM)),
            bytes: [0; CLASSES.len()],
            parts: Vec::new(),
        }
    }
}

impl BufPool {
    /// An empty buffer with room for `len` bytes: a free one of the smallest class that
    /// holds `len`, else a new one of that class's size (or of `len` beyond the classes).
    pub fn get(&mut self, len: usize) -> Vec<u8> {
        let Some(c) = CLASSES.iter().position(|&size| size >= len) else {
            return Vec::with_capacity(len);
        };
        match self.free[c].pop() {
            Some(buf) => {
                self.bytes[c] -= buf.capacity();
                buf
            }
            None => Vec::with_capacity(CLASSES[c]),
        }
    }

    /// Returns a buffer to the pool: it joins the largest class its capacity covers, or is
    /// dropped if it is below the smallest class or its class is at its byte budget.
    pub fn put(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        let Some(c) = CLASSES.iter().rposition(|&size| size <= cap) else {
            return;
        };
        if self.bytes[c] + cap > CLASS_BUDGET {
            return;
        }
        buf.clear();
        self.bytes[c] += cap;
        self.free[c].push(buf);
    }

    /// Allocates `per_class` free buffers in every class of at most `max_size` bytes
    /// (within each class's budget), so that bursts after startup find buffers ready.
    pub fn prefill(&mut self, per_class: usize, max_size: usize) {
        for (c, &size) in CLASSES.iter().enumerate() {
            if size > max_size {
                break;
            }
            let n = per_class.min((CLASS_BUDGET - self.bytes[c]) / size);
            self.free[c].reserve(n);
            for _ in 0..n {
                self.free[c].push(Vec::with_capacity(size));
            }
            self.bytes[c] += n * size;
        }
    }

    /// Buffers currently free, all classes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.free.iter().map(Vec::len).sum()
    }

    /// Whether no buffer is free.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.free.iter().all(Vec::is_empty)
    }

    /// Buffers free in each class, in the order of [`CLASSES`].
    #[must_use]
    pub fn class_lens(&self) -> [usize; CLASSES.len()] {
        let mut n = [0; CLASSES.len()];
        for (n, f) in n.iter_mut().zip(&self.free) {
            *n = f.len();
        }
        n
    }

    /// Bytes of free buffers held, all classes.
    #[must_use]
    pub fn free_bytes(&self) -> usize {
        self.bytes.iter().sum()
    }

    /// An empty part list with room for `count` parts.
    pub(crate) fn parts(&mut self, count: usize) -> Parts {
        let mut p = self.parts.pop().unwrap_or_default();
        p.reserve(count);
        p
    }

    /// Returns a part list (its buffers must have been taken out).
    pub(crate) fn put_parts(&mut self, mut p: Parts) {
        for (_, b) in p.drain(..) {
            self.put(b);
        }
        if p.capacity() > 0 && self.parts.len() < MAX_PART_LISTS {
            self.parts.push(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_take_the_smallest_class_that_holds_them() {
        let mut pool = BufPool::default();
        assert_eq!(pool.get(0).capacity(), 64);
        assert_eq!(pool.get(64).capacity(), 64);
        assert_eq!(pool.get(65).capacity(), 256);
        assert_eq!(pool.get(4096).capacity(), 4096);
        assert_eq!(pool.get(200_000).capacity(), 256 << 10);
        assert_eq!(pool.get(300_000).capacity(), 300_000);
    }

    #[test]
    fn returned_buffers_are_reused_by_class() {
        let mut pool = BufPool::default();
        let small = pool.get(10);
        let big = pool.get(3000);
        let (ps, pb) = (small.as_ptr(), big.as_ptr());
        pool.put(small);
        pool.put(big);
        assert_eq!(pool.class_lens(), [1, 0, 0, 0, 1, 0, 0, 0]);
        // A 100-byte request does not take the 64-byte buffer, nor the 4 KiB one, and a
        // 2000-byte one takes a 2 KiB buffer.
        assert_eq!(pool.get(100).capacity(), 256);
        assert_eq!(pool.get(2000).capacity(), 2048);
        let b = pool.get(3500);
        assert_eq!(b.as_ptr(), pb);
        assert!(b.is_empty());
        let s = pool.get(1);
        assert_eq!(s.as_ptr(), ps);
        assert!(pool.is_empty());
    }

    #[test]
    fn prefill_fills_the_small_classes_within_budget() {
        let mut pool = BufPool::default();
        pool.prefill(100, 2048);
        assert_eq!(pool.class_lens(), [100, 100, 100, 100, 0, 0, 0, 0]);
        assert_eq!(pool.free_bytes(), 100 * (64 + 256 + 1024 + 2048));
        pool.prefill(1_000, 4096);
        assert_eq!(pool.class_lens()[4], CLASS_BUDGET / 4096);
        assert_eq!(pool.get(1500).capacity(), 2048);
    }

    #[test]
    fn foreign_capacities_join_the_class_they_cover() {
        let mut pool = BufPool::default();
        pool.put(Vec::with_capacity(1000)); // covers 256, not 1024
        pool.put(Vec::with_capacity(10)); // below every class: dropped
        pool.put(Vec::new());
        assert_eq!(pool.class_lens(), [0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(pool.free_bytes(), 1000);
        assert!(pool.get(256).capacity() >= 256);
    }

    #[test]
    fn each_class_keeps_at_most_its_budget() {
        let mut pool = BufPool::default();
        for _ in 0..10 {
            pool.put(Vec::with_capacity(256 << 10));
        }
        assert_eq!(pool.class_lens()[7], CLASS_BUDGET / (256 << 10));
        for _ in 0..20_000 {
            pool.put(Vec::with_capacity(64));
        }
        assert_eq!(pool.class_lens()[0], CLASS_BUDGET / 64);
        pool.put(Vec::with_capacity(8 << 20)); // larger than a class's budget
        assert_eq!(pool.class_lens()[7], CLASS_BUDGET / (256 << 10));
        assert!(pool.free_bytes() <= CLASSES.len() * CLASS_BUDGET);
    }

    #[test]
    fn part_lists_are_reused_and_their_buffers_returned() {
        let mut pool = BufPool::default();
        let mut p = pool.parts(8);
        let ptr = p.as_ptr();
        p.push((0, pool.get(100)));
        pool.put_parts(p);
        assert_eq!(pool.class_lens()[1], 1);
        let p = pool.parts(4);
        assert_eq!(p.as_ptr(), ptr);
        assert!(p.is_empty() && p.capacity() >= 8);
    }
}
