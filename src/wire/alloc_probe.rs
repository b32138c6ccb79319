//! Test-only: a global allocator that measures, on the calling thread, the peak heap
//! bytes live while a closure runs, so that the decoders' property tests can assert that
//! hostile input never makes them allocate more than a fixed multiple of its length (a
//! length or count read from the input is checked against the bytes left before
//! anything is allocated for it: `wire::Reader`).
//!
//! Invariant: outside [`peak_bytes`] nothing is counted; inside, only the calling
//! thread's allocations are (other tests run on other threads).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Every allocation of the test binary goes through here; it forwards to the system
/// allocator and counts when the thread asked to.
struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    /// Bytes allocated minus bytes freed since the measurement started (frees of
    /// older allocations make it negative).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = MEASURING.try_with(|measuring| {
        if measuring.get() {
            let live = LIVE.with(|live| {
                live.set(live.get() + delta);
                live.get()
            });
            PEAK.with(|peak| peak.set(peak.get().max(live)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the counting touches only
// thread-local cells of plain integers (no allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            note(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        new
    }
}

/// The most heap bytes a decoder may allocate per input byte. The formats' largest
/// in-memory blow-up is a one-byte `OpResult::Done` of a transaction result, held in a
/// 24-byte `OpResult`; a vector grown by doubling (the RESP argument list) may hold
/// twice what it needs. A length or count believed without checking it against the
/// input exceeds any such bound by orders of magnitude.
pub(crate) const BYTES_PER_INPUT_BYTE_MAX: usize = 32;

/// Runs `f` and returns its result with the peak heap bytes live on this thread while
/// it ran (its result included, as it is live when `f` returns).
pub(crate) fn peak_bytes<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LIVE.with(|live| live.set(0));
    PEAK.with(|peak| peak.set(0));
    MEASURING.with(|measuring| measuring.set(true));
    let result = f();
    MEASURING.with(|measuring| measuring.set(false));
    let peak = PEAK.with(Cell::get);
    (result, peak.max(0) as usize)
}

/// Asserts that decoding `input` with `decode` allocated at most `factor` bytes per
/// input byte plus `slack`, and returns what it decoded.
///
/// # Panics
/// When the bound is exceeded (the test fails, naming the sizes).
pub(crate) fn assert_bounded<T>(
    input: &[u8],
    factor: usize,
    slack: usize,
    decode: impl FnOnce(&[u8]) -> T,
) -> T {
    let (result, peak) = peak_bytes(|| decode(input));
    let bound = factor * input.len() + slack;
    assert!(
        peak <= bound,
        "decoding {} bytes allocated {peak} bytes at peak (bound {bound})",
        input.len()
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_what_the_closure_allocates_and_nothing_else() {
        let before = vec![0u8; 4096];
        let (kept, peak) = peak_bytes(|| {
            drop(vec![0u8; 10_000]);
            vec![0u8; 100]
        });
        assert!((10_000..10_200).contains(&peak), "peak {peak}");
        let (_, freeing_only) = peak_bytes(|| drop(before));
        assert_eq!(freeing_only, 0);
        assert_eq!(kept.len(), 100);
    }
}
