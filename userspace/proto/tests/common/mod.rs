//! A counting global allocator for the protocol's allocation tests (`alloc.rs`,
//! `prefill.rs`): a test binary installs [`Counting`] and runs the code to measure in
//! [`count`], which counts the allocations (alloc, zeroed alloc, realloc) the calling
//! thread makes that a filter accepts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Forwards to the system allocator; counts what [`count`] asks for.
pub(crate) struct Counting;

/// Which allocations [`count`] counts, by their (new) layout.
pub(crate) type Filter = fn(Layout) -> bool;

thread_local! {
    // Const thread-locals with no destructor: reading them allocates nothing.
    static FILTER: Cell<Option<Filter>> = const { Cell::new(None) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note(layout: Layout) {
    if FILTER.with(Cell::get).is_some_and(|accept| accept(layout)) {
        counted();
    }
}

/// One counted allocation (a function of its own, for a debugger's breakpoint).
#[inline(never)]
fn counted() {
    COUNT.with(|c| c.set(c.get() + 1));
}

/// Runs `f`, counting the allocations this thread makes whose layout `filter` accepts;
/// returns `f`'s result and the count. Only counts where [`Counting`] is the binary's
/// global allocator.
pub(crate) fn count<R>(filter: Filter, f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(0));
    FILTER.with(|c| c.set(Some(filter)));
    let r = f();
    FILTER.with(|c| c.set(None));
    (r, COUNT.with(Cell::get))
}

// SAFETY: every method forwards to the system allocator unchanged; counting touches only
// const thread-locals.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size` is a valid size for `layout`'s alignment.
        note(unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) });
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}
