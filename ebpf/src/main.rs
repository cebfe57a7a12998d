//! The xrudp XDP program.
//!
//! For every frame: run the shared classifier (`xrudp_common::steer`), then redirect
//! steered datagrams to the AF_XDP socket bound on the frame's receive queue, pass
//! everything else to the kernel, and drop (counting the reason) steered datagrams that
//! are malformed or cannot be RUDP. A queue with no socket bound falls back to XDP_PASS
//! (the low bits of `bpf_redirect_map`'s flags, kernel ≥ 5.3).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, PerCpuArray, XskMap},
    programs::XdpContext,
};
use xrudp_common::{
    maps::{self, Config, Counter},
    steer::{self, Bytes, Verdict},
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

/// Packet memory seen through `XdpContext`, every read checked against `data_end`.
struct Frame<'a>(&'a XdpContext);

impl Bytes for Frame<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }

    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        let start = self.0.data();
        if start + off + 1 > self.0.data_end() {
            return None;
        }
        // SAFETY: the byte at `start + off` lies inside [data, data_end), which the
        // check above proves (and the verifier re-checks).
        Some(unsafe { *((start + off) as *const u8) })
    }

    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        let start = self.0.data();
        if start + off + 2 > self.0.data_end() {
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

#[xdp]
pub fn xrudp(ctx: XdpContext) -> u32 {
    count(Counter::Seen);
    let rudp_filter = XRUDP_CONFIG.get(0).is_some_and(Config::rudp_filter);
    match steer::classify(&Frame(&ctx), steered, rudp_filter) {
        Verdict::Pass => {
            count(Counter::Passed);
            xdp_action::XDP_PASS
        }
        Verdict::Drop(reason) => {
            count(reason);
            xdp_action::XDP_DROP
        }
        Verdict::Steer => {
            // SAFETY: `ctx.ctx` points at the kernel's `xdp_md` for this invocation.
            let queue = unsafe { (*ctx.ctx).rx_queue_index };
            match XRUDP_XSKS.redirect(queue, u64::from(xdp_action::XDP_PASS)) {
                Ok(action) if action == xdp_action::XDP_REDIRECT => {
                    count(Counter::Redirected);
                    action
                }
                _ => {
                    count(Counter::PassedNoSocket);
                    xdp_action::XDP_PASS
                }
            }
        }
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
