//! The xrudp XDP program.
//!
//! For every frame: run the shared classifier (`xrudp_common::steer`), then redirect
//! steered datagrams to the AF_XDP socket bound on the frame's receive queue, pass
//! everything else to the kernel, and drop (counting the reason) steered datagrams that
//! are malformed or cannot be RUDP. A queue with no socket bound falls back to XDP_PASS
//! (the low bits of `bpf_redirect_map`'s flags, kernel ≥ 5.3).
//!
//! With admission control on (`--admission on`, docs/SECURITY.md), a datagram that
//! passed the pre-filter must also be admitted: a handshake (`Hello`, `Response`) takes
//! a token from its source's bucket, and a first hello one more from this CPU's
//! handshake budget; any other packet must name a live session of its queue and come
//! from that session's address, or, for an encrypted session, take a token from its
//! source's bucket as a migration attempt. Everything else is dropped, counted by reason.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_ktime_get_ns,
    macros::{map, xdp},
    maps::{Array, LruPerCpuHashMap, PerCpuArray, XskMap},
    programs::XdpContext,
};
use xrudp_common::{
    admit::{Addr, Rate, Session, SessionKey},
    maps::{self, Config, Counter},
    rudp::PacketType,
    steer::{self, Admit, Bytes, Verdict},
};

/// Declares a map whose name (the static's identifier, which `#[map]` uses) is checked at
/// compile time against the constant in `xrudp_common::maps` that the loader looks it up
/// by: the one definition of each map name.
macro_rules! xdp_map {
    ($name:ident = $konst:path; $ty:ty = $init:expr) => {
        const _: () = assert!(
            maps::same_name(stringify!($name), $konst),
            "a map's identifier must equal its name in xrudp_common::maps"
        );
        #[map]
        static $name: $ty = $init;
    };
}

xdp_map!(XRUDP_XSKS = maps::XSKS; XskMap = XskMap::with_max_entries(maps::MAX_QUEUES, 0));
xdp_map!(XRUDP_PORTS = maps::PORTS; Array<u64> = Array::with_max_entries(maps::PORT_WORDS, 0));
xdp_map!(XRUDP_CONFIG = maps::CONFIG; Array<Config> = Array::with_max_entries(1, 0));
xdp_map!(XRUDP_COUNTERS = maps::COUNTERS; PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0));
xdp_map!(XRUDP_SESSIONS = maps::SESSIONS; Array<Session> = Array::with_max_entries(maps::DEFAULT_SESSIONS, 0));
xdp_map!(XRUDP_SOURCES = maps::SOURCES; LruPerCpuHashMap<Addr, u64> = LruPerCpuHashMap::with_max_entries(maps::SOURCE_ENTRIES, 0));
xdp_map!(XRUDP_HELLO_BUDGET = maps::HELLO_BUDGET; PerCpuArray<u64> = PerCpuArray::with_max_entries(maps::BUDGET_SLOTS, 0));

/// Packet memory seen through `XdpContext`, every read checked against `data_end`.
struct Frame<'a>(&'a XdpContext);

impl Frame<'_> {
    /// `data_end`, read anew for every check: the optimiser cannot then drop a check that
    /// an earlier, larger one implies and read through a pointer the verifier has not
    /// seen checked (it rebuilds pointers from spilled offsets, with no known range).
    #[inline(always)]
    fn end(&self) -> usize {
        // SAFETY: `ctx.ctx` points at the kernel's `xdp_md` for this invocation.
        unsafe { core::ptr::read_volatile(&raw const (*self.0.ctx).data_end) as usize }
    }
}

impl Bytes for Frame<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        let start = self.0.data();
        if start + off + 1 > self.end() {
            return None;
        }
        // SAFETY: the byte at `start + off` lies inside [data, data_end), which the
        // check above proves (and the verifier re-checks).
        Some(unsafe { *((start + off) as *const u8) })
    }

    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        let start = self.0.data();
        if start + off + 2 > self.end() {
            return None;
        }
        // SAFETY: both bytes at `start + off` lie inside [data, data_end) by the check
        // above; the read is unaligned-safe.
        let raw = unsafe { core::ptr::read_unaligned((start + off) as *const [u8; 2]) };
        Some(u16::from_be_bytes(raw))
    }
}

#[inline(always)]
fn count(c: Counter) {
    if let Some(slot) = XRUDP_COUNTERS.get_ptr_mut(c as u32) {
        // SAFETY: per-CPU slot, only this CPU's program instance touches it, and XDP
        // programs run with preemption disabled.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
fn steered(port: u16) -> bool {
    let (word, bit) = maps::port_slot(port);
    XRUDP_PORTS.get(word).is_some_and(|w| *w & bit != 0)
}

/// Takes a token from the bucket of `source` (IPv6 by /64); a source not seen before (or
/// evicted) starts with a full bucket.
#[inline(always)]
fn source_allows(rate: &Rate, source: Addr, now: u64) -> bool {
    if rate.unlimited() {
        return true;
    }
    let key = source.source();
    match XRUDP_SOURCES.get_ptr_mut(key) {
        Some(tat) => {
            // SAFETY: a per-CPU value: only this CPU's program instance touches it, and
            // XDP programs run with preemption disabled.
            let state = unsafe { &mut *tat };
            match rate.take(*state, now) {
                Some(next) => {
                    *state = next;
                    true
                }
                None => false,
            }
        }
        None => {
            // A full LRU map evicts its least recently used source; an insert that still
            // fails only forgets this source's state, so the packet is let through.
            let _ = XRUDP_SOURCES.insert(key, rate.take(0, now).unwrap_or(now), 0);
            true
        }
    }
}

/// Takes a token from one of this CPU's budgets (slot [`maps::BUDGET_HELLO`] or
/// [`maps::BUDGET_MIGRATION`]).
#[inline(always)]
fn budget_allows(slot: u32, rate: &Rate, now: u64) -> bool {
    if rate.unlimited() {
        return true;
    }
    let Some(tat) = XRUDP_HELLO_BUDGET.get_ptr_mut(slot) else {
        return true;
    };
    // SAFETY: a per-CPU slot, as in `count`.
    let state = unsafe { &mut *tat };
    match rate.take(*state, now) {
        Some(next) => {
            *state = next;
            true
        }
        None => false,
    }
}

/// Admission control for a datagram that passed the pre-filter.
#[inline(always)]
fn admit(a: &Admit, queue: u32, cfg: &Config) -> Verdict {
    // SAFETY: a helper without arguments or side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    if a.handshake() {
        if !source_allows(&cfg.source, a.source, now) {
            return Verdict::Drop(Counter::DropRateLimited);
        }
        if a.kind == PacketType::Hello as u8 && !budget_allows(maps::BUDGET_HELLO, &cfg.hello, now)
        {
            return Verdict::Drop(Counter::DropHelloBudget);
        }
        return Verdict::Steer;
    }
    let key = SessionKey {
        queue,
        conn_id: a.conn_id,
    };
    // The id names its slot: one array read, no hashing (maps::SESSIONS).
    let Some(entry) = cfg
        .sessions
        .index(key)
        .and_then(|i| XRUDP_SESSIONS.get_ptr(i))
    else {
        return Verdict::Drop(Counter::DropUnknownSession);
    };
    // SAFETY: the pointer is the kernel's array element, valid for the program's run.
    // A worker rewriting the slot at this moment (a session opening, moving or closing)
    // can at worst make this one verdict stale, as a hash map update could: the server
    // checks every packet it is handed anyway.
    let entry = unsafe { core::ptr::read_volatile(entry) };
    if entry.conn_id != a.conn_id || a.conn_id == 0 {
        return Verdict::Drop(Counter::DropUnknownSession);
    }
    let peer = entry.peer;
    if a.from_peer(&peer) {
        return Verdict::Steer;
    }
    if !peer.may_migrate() {
        return Verdict::Drop(Counter::DropWrongAddress);
    }
    if !source_allows(&cfg.source, a.source, now) {
        return Verdict::Drop(Counter::DropRateLimited);
    }
    // Spoofed packets carrying guessed live ids come from ever new sources, each with a
    // full bucket: the per-source limit alone lets them all through.
    if !budget_allows(maps::BUDGET_MIGRATION, &cfg.migration, now) {
        return Verdict::Drop(Counter::DropMigrationBudget);
    }
    count(Counter::MigrationAttempts);
    Verdict::Steer
}

#[xdp]
pub fn xrudp(ctx: XdpContext) -> u32 {
    count(Counter::Seen);
    let cfg = XRUDP_CONFIG.get(0).copied().unwrap_or_default();
    // SAFETY: `ctx.ctx` points at the kernel's `xdp_md` for this invocation.
    let queue = unsafe { (*ctx.ctx).rx_queue_index };
    let admission = cfg.admission().then_some(|a: &Admit| admit(a, queue, &cfg));
    match steer::classify_admit(&Frame(&ctx), steered, cfg.rudp_filter(), admission) {
        Verdict::Pass => {
            count(Counter::Passed);
            xdp_action::XDP_PASS
        }
        Verdict::Drop(reason) => {
            count(reason);
            xdp_action::XDP_DROP
        }
        Verdict::Steer => match XRUDP_XSKS.redirect(queue, u64::from(xdp_action::XDP_PASS)) {
            Ok(action) if action == xdp_action::XDP_REDIRECT => {
                count(Counter::Redirected);
                action
            }
            _ => {
                count(Counter::PassedNoSocket);
                xdp_action::XDP_PASS
            }
        },
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
