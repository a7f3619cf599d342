//! A counting global allocator: the system allocator, plus three atomic counters.
//!
//! Installed in the `compare` binary, which is both the client (the harness) and, re-executed
//! as `compare serve`, each server; so each side counts its own process's allocations. The
//! harness takes a [`snapshot`] before and after a measured window and divides the difference
//! by the calls made in it. The counters are process-wide, so a window counts everything the
//! process allocated in it: the stack's client or server, and the runtime under it (which is
//! part of what a call costs). The harness's own bookkeeping inside a window is a handful of
//! allocations per window, not per call.
//!
//! It also keeps the bytes allocated and not yet freed (live), from which the harness takes
//! what an open connection holds.
//!
//! Every allocation pays for three relaxed atomic updates, the same for all stacks.

// Implementing `GlobalAlloc` takes `unsafe`; each function only forwards to `System` with the
// caller's own arguments, so the caller's guarantees are exactly what `System` requires.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The system allocator, counting allocations and the bytes they asked for.
pub(crate) struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static LIVE: AtomicI64 = AtomicI64::new(0);

fn count(bytes: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

fn live(change: i64) {
    LIVE.fetch_add(change, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with its own arguments unchanged, so it upholds
// `GlobalAlloc`'s contract exactly as `System` does; the counters touch no allocated memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        live(layout.size() as i64);
        // SAFETY: the caller's `layout` obligations are passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        live(layout.size() as i64);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A reallocation is counted as an allocation of the new size: it is a call into the
        // allocator, and usually a copy.
        count(new_size);
        live(new_size as i64 - layout.size() as i64);
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        live(-(layout.size() as i64));
        // SAFETY: `ptr` was allocated by this allocator, i.e. by `System`, with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AllocSnapshot {
    /// Allocations (and reallocations) so far.
    pub(crate) allocations: u64,
    /// Bytes requested by them.
    pub(crate) bytes: u64,
    /// Bytes allocated and not freed, now (in [`since`](Self::since)'s result: the change).
    pub(crate) live: i64,
}

impl AllocSnapshot {
    /// What was allocated between `earlier` and `self`.
    pub(crate) fn since(self, earlier: AllocSnapshot) -> AllocSnapshot {
        AllocSnapshot {
            allocations: self.allocations.saturating_sub(earlier.allocations),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            live: self.live - earlier.live,
        }
    }
}

/// Reads this process's counters. Allocates nothing.
pub(crate) fn snapshot() -> AllocSnapshot {
    AllocSnapshot {
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        live: LIVE.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_is_counted_with_its_size() {
        let before = snapshot();
        let boxed = std::hint::black_box(Box::new([0u8; 100]));
        let after = snapshot();
        drop(boxed);
        // Other test threads may allocate too: at least ours is there.
        let delta = after.since(before);
        assert!(delta.allocations >= 1);
        assert!(delta.bytes >= 100);
    }
}
