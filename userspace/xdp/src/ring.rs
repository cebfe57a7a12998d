//! Frame-pool and ring logic, written once against a seam ([`Rings`]) so it runs on the
//! kernel's AF_XDP rings in production ([`crate::xsk`]) and on plain memory in tests.
//!
//! [`Frames`] owns the frame pool and moves [`Frame`]s between it and the four rings:
//! fill (userspace → kernel, empty frames to receive into), RX (kernel → userspace),
//! TX (userspace → kernel) and completion (kernel → userspace, sent frames back). A
//! frame is neither `Copy` nor `Clone`: once moved into a ring it can only come back out
//! of RX or completion. The pool is a vector with room for every frame, so moving frames
//! never allocates.

/// A ring descriptor: the frame's offset in the UMEM and its packet length.
pub trait Descriptor: Copy + Default + std::fmt::Debug {
    /// Offset of the frame's data in the UMEM.
    fn addr(&self) -> usize;
    /// Packet length in bytes.
    fn len(&self) -> usize;
    /// Whether the packet is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The four AF_XDP rings as the frame logic sees them.
pub trait Rings {
    /// The descriptor type the rings carry.
    type Desc: Descriptor;

    /// Free fill-ring slots, up to `want`.
    fn fill_room(&mut self, want: u32) -> u32;
    /// Puts descriptors on the fill ring (all of them: the caller checked the room).
    ///
    /// # Safety
    /// Every descriptor must be a frame of this ring set's UMEM that userspace owns and
    /// no longer references: from now on the kernel may write into it.
    unsafe fn fill_produce(&mut self, descs: &[Self::Desc]) -> usize;
    /// Wakes the driver if it asked for it (need_wakeup); no-op otherwise.
    fn fill_kick(&mut self);
    /// Takes received descriptors off the RX ring into `out`; returns how many.
    fn rx_consume(&mut self, out: &mut [Self::Desc]) -> usize;
    /// Free TX-ring slots, up to `want`.
    fn tx_room(&mut self, want: u32) -> u32;
    /// Puts descriptors on the TX ring (all of them: the caller checked the room).
    ///
    /// # Safety
    /// As for [`Rings::fill_produce`]: owned frames of this UMEM, not referenced again
    /// until the completion ring returns them.
    unsafe fn tx_produce(&mut self, descs: &[Self::Desc]) -> usize;
    /// Makes the kernel process the TX ring (copy mode needs a `sendto` per batch).
    fn tx_kick(&mut self);
    /// Takes completed descriptors off the completion ring into `out`.
    fn comp_consume(&mut self, out: &mut [Self::Desc]) -> usize;
}

/// A UMEM frame owned by userspace: neither `Copy` nor `Clone`.
#[derive(Debug)]
pub struct Frame<D> {
    pub(crate) desc: D,
}

impl<D: Descriptor> Frame<D> {
    /// Offset of the frame's packet data in the UMEM (unique per frame).
    #[must_use]
    pub fn addr(&self) -> usize {
        self.desc.addr()
    }

    /// Current packet length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.desc.len()
    }

    /// Whether the frame holds no packet bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The frame pool and the batched ring operations over it.
#[derive(Debug)]
pub struct Frames<R: Rings> {
    rings: R,
    /// Frames userspace owns and is not using (capacity: every frame).
    pool: Vec<Frame<R::Desc>>,
    /// Scratch descriptors for batched ring operations (length = ring size).
    scratch: Vec<R::Desc>,
    /// Frames in the UMEM.
    #[expect(
        clippy::struct_field_names,
        reason = "the UMEM's frame count: `frames` is the plain name"
    )]
    frames: u32,
    /// Frames on the TX ring or in the kernel's TX path, not yet completed.
    tx_outstanding: u32,
    /// Highest number of frames ever out of the pool at once.
    high_water: u32,
}

impl<R: Rings> Frames<R> {
    /// Wraps `rings` with a pool holding the UMEM's frames `descs`; `ring_size` bounds
    /// one batched ring operation.
    pub fn new(rings: R, descs: impl IntoIterator<Item = R::Desc>, ring_size: usize) -> Self {
        let pool: Vec<Frame<R::Desc>> = descs.into_iter().map(|desc| Frame { desc }).collect();
        Self {
            rings,
            frames: pool.len() as u32,
            pool,
            scratch: vec![R::Desc::default(); ring_size],
            tx_outstanding: 0,
            high_water: 0,
        }
    }

    /// The rings, for the operations that need them directly (poll, statistics).
    pub fn rings(&self) -> &R {
        &self.rings
    }

    /// Mutable access to the rings.
    pub fn rings_mut(&mut self) -> &mut R {
        &mut self.rings
    }

    /// Frames in the UMEM.
    #[must_use]
    pub fn frames(&self) -> u32 {
        self.frames
    }

    /// Frames out of the pool (in rings, in the kernel, or held by userspace).
    #[must_use]
    pub fn in_use(&self) -> u32 {
        self.frames - self.pool.len() as u32
    }

    /// Highest [`Frames::in_use`] seen.
    #[must_use]
    pub fn high_water(&self) -> u32 {
        self.high_water
    }

    /// Entries per ring (the bound of one batched ring operation).
    #[must_use]
    pub fn ring_size(&self) -> u32 {
        self.scratch.len() as u32
    }

    /// Frames in the TX path not yet completed.
    #[must_use]
    pub fn tx_outstanding(&self) -> u32 {
        self.tx_outstanding
    }

    /// Moves as many pool frames into the fill ring as it has room for, keeping
    /// `reserve` frames in the pool for transmissions the worker originates. Returns how
    /// many were given to the kernel.
    pub fn refill(&mut self, reserve: usize) -> usize {
        let spare = self.pool.len().saturating_sub(reserve);
        let want = self.rings.fill_room(spare.min(self.scratch.len()) as u32) as usize;
        let n = want.min(spare);
        if n == 0 {
            return 0;
        }
        let start = self.pool.len() - n;
        for (slot, frame) in self.scratch.iter_mut().zip(self.pool.drain(start..)) {
            *slot = frame.desc;
        }
        // SAFETY: the `n` descriptors came out of the pool, so userspace owned them and
        // no `Frame` for them exists any more: nothing can touch them until the kernel
        // hands them back through the RX ring. `fill_room` guaranteed room for all `n`.
        let produced = unsafe { self.rings.fill_produce(&self.scratch[..n]) };
        debug_assert_eq!(produced, n);
        self.note_in_use();
        self.rings.fill_kick();
        n
    }

    /// Takes up to `max` received frames out of the RX ring into `out`.
    pub fn recv(&mut self, out: &mut Vec<Frame<R::Desc>>, max: usize) -> usize {
        let max = max.min(self.scratch.len());
        let n = self.rings.rx_consume(&mut self.scratch[..max]);
        out.extend(self.scratch[..n].iter().map(|&desc| Frame { desc }));
        n
    }

    /// Puts frames on the TX ring (as many as fit) and kicks the kernel. Frames that did
    /// not fit stay in `frames` (front first) for the next call.
    pub fn transmit(&mut self, frames: &mut Vec<Frame<R::Desc>>) -> usize {
        let room = self
            .rings
            .tx_room(frames.len().min(self.scratch.len()) as u32) as usize;
        let n = room.min(frames.len());
        if n > 0 {
            for (slot, frame) in self.scratch.iter_mut().zip(frames.drain(..n)) {
                *slot = frame.desc;
            }
            // SAFETY: the frames were owned by userspace and are consumed here; the
            // kernel returns them through the completion ring. `tx_room` made room.
            let produced = unsafe { self.rings.tx_produce(&self.scratch[..n]) };
            debug_assert_eq!(produced, n);
            self.tx_outstanding += n as u32;
        }
        if self.tx_outstanding > 0 {
            self.rings.tx_kick();
        }
        n
    }

    /// Kicks the kernel's TX processing again while frames are outstanding: copy-mode
    /// transmit sends at most 32 frames per `sendto` (net/xdp/xsk.c, TX_BATCH_SIZE) and
    /// a busy kernel answers EAGAIN, so frames can sit on the TX ring until kicked.
    pub fn kick(&mut self) {
        if self.tx_outstanding > 0 {
            self.rings.tx_kick();
        }
    }

    /// Reaps the completion ring, returning sent frames to the pool.
    pub fn complete(&mut self) -> usize {
        let n = self.rings.comp_consume(&mut self.scratch);
        self.pool
            .extend(self.scratch[..n].iter().map(|&desc| Frame { desc }));
        self.tx_outstanding = self.tx_outstanding.saturating_sub(n as u32);
        n
    }

    /// Returns a frame to the pool.
    pub fn release(&mut self, frame: Frame<R::Desc>) {
        self.pool.push(frame);
    }

    /// Takes a free frame from the pool, to originate a packet.
    pub fn alloc(&mut self) -> Option<Frame<R::Desc>> {
        let f = self.pool.pop();
        self.note_in_use();
        f
    }

    fn note_in_use(&mut self) {
        self.high_water = self.high_water.max(self.in_use());
    }
}

#[cfg(test)]
mod tests {
    //! The frame logic on plain memory: four single-producer/single-consumer rings with
    //! free-running 32-bit cursors, as the kernel's AF_XDP rings work
    //! (include/uapi/linux/if_xdp.h, net/xdp/xsk_queue.h), and a model kernel that fills
    //! RX from the fill ring and completes TX — drops counted as the kernel counts them.
    use std::collections::BTreeSet;

    use super::*;

    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    struct Desc {
        addr: usize,
        len: usize,
    }

    impl Descriptor for Desc {
        fn addr(&self) -> usize {
            self.addr
        }
        fn len(&self) -> usize {
            self.len
        }
    }

    /// An SPSC ring: `prod - cons` entries are full; cursors wrap at 2^32.
    #[derive(Debug)]
    struct Ring {
        slots: Vec<Desc>,
        prod: u32,
        cons: u32,
    }

    impl Ring {
        fn new(size: usize, start: u32) -> Self {
            assert!(size.is_power_of_two());
            Self {
                slots: vec![Desc::default(); size],
                prod: start,
                cons: start,
            }
        }
        fn mask(&self) -> u32 {
            self.slots.len() as u32 - 1
        }
        fn used(&self) -> u32 {
            self.prod.wrapping_sub(self.cons)
        }
        fn free(&self) -> u32 {
            self.slots.len() as u32 - self.used()
        }
        fn push(&mut self, d: Desc) -> bool {
            if self.free() == 0 {
                return false;
            }
            let i = (self.prod & self.mask()) as usize;
            self.slots[i] = d;
            self.prod = self.prod.wrapping_add(1);
            true
        }
        fn peek(&self) -> Option<Desc> {
            (self.used() > 0).then(|| self.slots[(self.cons & self.mask()) as usize])
        }
        fn pop(&mut self) -> Option<Desc> {
            let d = self.peek()?;
            self.cons = self.cons.wrapping_add(1);
            Some(d)
        }
    }

    #[derive(Debug, Default)]
    struct Stats {
        rx_ring_full: u64,
        fill_empty: u64,
        fill_kicks: u64,
        tx_kicks: u64,
    }

    #[derive(Debug)]
    struct Model {
        fill: Ring,
        rx: Ring,
        tx: Ring,
        comp: Ring,
        stats: Stats,
    }

    impl Model {
        fn new(size: usize, start: u32) -> Self {
            Self {
                fill: Ring::new(size, start),
                rx: Ring::new(size, start),
                tx: Ring::new(size, start),
                comp: Ring::new(size, start),
                stats: Stats::default(),
            }
        }

        /// The kernel receives a packet of `len` bytes: into the next fill frame, onto RX.
        /// Like xsk_rcv, the fill entry is only consumed when RX has room.
        fn deliver(&mut self, len: usize) -> bool {
            let Some(mut d) = self.fill.peek() else {
                self.stats.fill_empty += 1;
                return false;
            };
            if self.rx.free() == 0 {
                self.stats.rx_ring_full += 1;
                return false;
            }
            self.fill.pop();
            d.len = len;
            assert!(self.rx.push(d));
            true
        }

        /// The kernel sends up to `n` TX frames, completing them while the completion
        /// ring has room.
        fn send(&mut self, n: usize) -> usize {
            let mut done = 0;
            while done < n && self.comp.free() > 0 {
                let Some(d) = self.tx.pop() else { break };
                assert!(self.comp.push(d));
                done += 1;
            }
            done
        }
    }

    impl Rings for Model {
        type Desc = Desc;
        fn fill_room(&mut self, want: u32) -> u32 {
            self.fill.free().min(want)
        }
        unsafe fn fill_produce(&mut self, descs: &[Desc]) -> usize {
            descs.iter().take_while(|&&d| self.fill.push(d)).count()
        }
        fn fill_kick(&mut self) {
            self.stats.fill_kicks += 1;
        }
        fn rx_consume(&mut self, out: &mut [Desc]) -> usize {
            out.iter_mut()
                .map_while(|slot| self.rx.pop().map(|d| *slot = d))
                .count()
        }
        fn tx_room(&mut self, want: u32) -> u32 {
            self.tx.free().min(want)
        }
        unsafe fn tx_produce(&mut self, descs: &[Desc]) -> usize {
            descs.iter().take_while(|&&d| self.tx.push(d)).count()
        }
        fn tx_kick(&mut self) {
            self.stats.tx_kicks += 1;
        }
        fn comp_consume(&mut self, out: &mut [Desc]) -> usize {
            out.iter_mut()
                .map_while(|slot| self.comp.pop().map(|d| *slot = d))
                .count()
        }
    }

    const FRAME: usize = 2048;

    fn frames(n: usize, ring: usize, start: u32) -> Frames<Model> {
        Frames::new(
            Model::new(ring, start),
            (0..n).map(|i| Desc {
                addr: i * FRAME,
                len: 0,
            }),
            ring,
        )
    }

    /// Every frame is in exactly one place: pool, a ring, or `held`.
    fn assert_conserved(f: &Frames<Model>, held: &[Frame<Desc>]) {
        let m = &f.rings;
        let mut all = BTreeSet::new();
        let mut add = |a: usize| assert!(all.insert(a), "frame {a} is in two places");
        f.pool.iter().for_each(|x| add(x.addr()));
        for x in held {
            add(x.addr());
        }
        for r in [&m.fill, &m.rx, &m.tx, &m.comp] {
            for k in 0..r.used() {
                add(r.slots[(r.cons.wrapping_add(k) & r.mask()) as usize].addr);
            }
        }
        assert_eq!(all.len(), f.frames() as usize, "a frame went missing");
    }

    #[test]
    fn refill_fills_the_ring_and_keeps_the_reserve() {
        let mut f = frames(100, 64, 0);
        assert_eq!(f.refill(10), 64, "ring size bounds a refill");
        assert_eq!(f.refill(10), 0, "the fill ring is full");
        assert_eq!(f.in_use(), 64);
        let mut f = frames(50, 64, 0);
        assert_eq!(f.refill(10), 40, "the reserve stays in the pool");
        let held = f.alloc().expect("a frame is left");
        assert_eq!(f.high_water(), 41);
        assert_conserved(&f, &[held]);
    }

    #[test]
    fn fill_empty_drops_until_refilled() {
        let mut f = frames(8, 8, 0);
        let mut held = Vec::new();
        // Nothing on the fill ring yet: the kernel has nowhere to put a packet.
        assert!(!f.rings.deliver(60));
        assert_eq!(f.rings.stats.fill_empty, 1);
        f.refill(0);
        for _ in 0..8 {
            assert!(f.rings.deliver(60));
        }
        assert!(!f.rings.deliver(60), "every frame is on RX");
        assert_eq!(f.rings.stats.fill_empty, 2);
        assert_eq!(f.recv(&mut held, 64), 8);
        assert!(held.iter().all(|x| x.len() == 60));
        assert_eq!(
            f.refill(0),
            0,
            "the pool is empty while userspace holds every frame"
        );
        assert_conserved(&f, &held);
        held.drain(..).for_each(|x| f.release(x));
        assert_eq!(f.refill(0), 8);
        assert!(f.rings.deliver(1));
    }

    #[test]
    fn rx_ring_full_drops_without_consuming_fill() {
        let mut f = frames(32, 8, 0);
        f.refill(0);
        for _ in 0..8 {
            assert!(f.rings.deliver(100));
        }
        assert_eq!(f.rings.fill.used(), 0);
        f.refill(0);
        assert!(!f.rings.deliver(100), "RX full: dropped");
        assert_eq!(f.rings.stats.rx_ring_full, 1);
        assert_eq!(
            f.rings.fill.used(),
            8,
            "the fill entry stays for the next packet"
        );
        let mut held = Vec::new();
        assert_eq!(f.recv(&mut held, 3), 3, "max bounds a receive");
        assert!(f.rings.deliver(100));
        assert_conserved(&f, &held);
    }

    #[test]
    fn tx_ring_full_keeps_the_rest_for_later() {
        let mut f = frames(32, 8, 0);
        let mut out: Vec<_> = (0..12).map(|_| f.alloc().expect("frame")).collect();
        let first = out[0].addr();
        assert_eq!(f.transmit(&mut out), 8, "the TX ring takes 8");
        assert_eq!(out.len(), 4, "4 wait");
        assert_eq!(f.transmit(&mut out), 0, "still full");
        assert_eq!(f.tx_outstanding(), 8);
        assert!(
            f.rings.stats.tx_kicks >= 2,
            "kicked while frames are outstanding"
        );
        assert_eq!(
            f.rings.tx.peek().map(|d| d.addr),
            Some(first),
            "front first"
        );
        assert_eq!(f.rings.send(8), 8);
        assert_eq!(f.complete(), 8);
        assert_eq!(f.tx_outstanding(), 0);
        assert_eq!(f.transmit(&mut out), 4);
        assert!(out.is_empty());
        assert_conserved(&f, &[]);
    }

    #[test]
    fn completion_ring_full_stalls_tx_until_reaped() {
        let mut f = frames(32, 8, 0);
        let mut out: Vec<_> = (0..8).map(|_| f.alloc().expect("frame")).collect();
        f.transmit(&mut out);
        assert_eq!(f.rings.send(8), 8);
        let mut more: Vec<_> = (0..8).map(|_| f.alloc().expect("frame")).collect();
        f.transmit(&mut more);
        assert_eq!(
            f.rings.send(8),
            0,
            "completion ring full: the kernel stalls"
        );
        assert_eq!(f.complete(), 8);
        assert_eq!(f.rings.send(8), 8);
        assert_eq!(f.complete(), 8);
        assert_eq!(f.in_use(), 0);
    }

    /// An echo loop over many ring laps with cursors starting just below 2^32: every
    /// cursor wraps, and every frame stays accounted for.
    #[test]
    fn echo_loop_wraps_the_cursors() {
        // Miri interprets every step: fewer laps there still wrap every cursor.
        const ROUNDS: u32 = if cfg!(miri) { 40 } else { 5_000 };
        for start in [0, u32::MAX - 5, u32::MAX - 64, u32::MAX] {
            let mut f = frames(64, 16, start);
            let mut batch = Vec::with_capacity(16);
            let mut rng = 0x9e37_79b9_u32;
            let mut echoed = 0u64;
            for round in 0..ROUNDS {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                f.complete();
                f.refill(0);
                for k in 0..rng % 20 {
                    f.rings.deliver(1 + (round + k) as usize % 1500);
                }
                let room = 16 - batch.len();
                f.recv(&mut batch, room);
                echoed += batch.len() as u64;
                f.transmit(&mut batch);
                f.rings.send((rng >> 8) as usize % 24);
                assert_conserved(&f, &batch);
                assert!(batch.capacity() == 16, "no growth");
            }
            assert!(f.rings.fill.prod.wrapping_sub(start) > 0);
            assert!(
                echoed > 2 * u64::from(ROUNDS),
                "the loop moved traffic ({echoed})"
            );
            if start > u32::MAX - 100 {
                assert!(f.rings.rx.prod < start, "the RX producer cursor wrapped");
            }
        }
    }
}
