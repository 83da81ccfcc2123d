//! The host's allocator: mimalloc, with a cache of large blocks.
//!
//! mimalloc (thread-local free lists) rather than glibc's malloc: a served
//! request makes and frees a few dozen small objects (hyper's buffers,
//! wasmtime's resource-table entries, headers), and glibc's allocator was
//! ~9% of the server's CPU with warm instances.
//!
//! Tensor math on the CPU allocates and frees buffers of the same few sizes
//! (up to tens of MiB) for every layer of every request. Handed back to the
//! kernel each time, every such buffer costs a `munmap` when freed and a page
//! fault (and a page of zeroes) per 4 KiB when next touched. Here blocks of
//! at least [`MIN_CACHED`] are rounded up to size classes (four per power of
//! two, so at most 25% slack) and, when freed, kept for reuse: up to
//! [`SLOTS`] per class and [`MAX_CACHED`] bytes in all. Everything else goes
//! to mimalloc unchanged: small blocks with at most the usual alignment to
//! `mi_malloc`/`mi_zalloc`, whose fast path is about half as long as the
//! `mi_malloc_aligned` the `mimalloc` crate calls for every block (a served
//! request makes ~60).

use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;

/// Smallest block that is size-classed and cached.
pub const MIN_CACHED: usize = 1 << 20;
/// Free blocks kept per size class.
pub const SLOTS: usize = 4;
/// Most bytes kept in free blocks.
pub const MAX_CACHED: usize = 512 << 20;
/// Alignments the system allocator gives every block anyway.
const PLAIN_ALIGN: usize = 16;
/// Size classes: four per power of two from 2^20 to 2^47 bytes.
const CLASSES: usize = 4 * 28;

/// The free blocks.
struct Free {
    blocks: [[usize; SLOTS]; CLASSES],
    counts: [usize; CLASSES],
    bytes: usize,
}

static FREE: Mutex<Free> = Mutex::new(Free {
    blocks: [[0; SLOTS]; CLASSES],
    counts: [0; CLASSES],
    bytes: 0,
});

fn free_list() -> std::sync::MutexGuard<'static, Free> {
    FREE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The size class of a `size`-byte block: its index and its size, `None`
/// when the block is not cached.
pub fn class(size: usize) -> Option<(usize, usize)> {
    if size < MIN_CACHED {
        return None;
    }
    let k = usize::BITS - 1 - size.leading_zeros();
    let base = 1usize << k;
    let quarter = base / 4;
    let q = (size - base).div_ceil(quarter);
    let (k, q) = if q == 4 { (k + 1, 0) } else { (k, q) };
    let index = (k as usize - 20) * 4 + q;
    (index < CLASSES).then(|| (index, (1usize << k) + q * (1usize << k) / 4))
}

/// The system allocator, with large freed blocks kept for reuse.
pub struct CachingAllocator;

impl CachingAllocator {
    /// A cached block of class `index`, if one is free.
    fn take(index: usize, size: usize) -> Option<*mut u8> {
        let mut free = free_list();
        let n = free.counts[index];
        if n == 0 {
            return None;
        }
        free.counts[index] = n - 1;
        free.bytes -= size;
        Some(free.blocks[index][n - 1] as *mut u8)
    }

    /// Keeps a freed block of class `index`; `false` when there is no room.
    fn keep(index: usize, size: usize, ptr: *mut u8) -> bool {
        let mut free = free_list();
        let n = free.counts[index];
        if n == SLOTS || free.bytes + size > MAX_CACHED {
            return false;
        }
        free.blocks[index][n] = ptr as usize;
        free.counts[index] = n + 1;
        free.bytes += size;
        true
    }

    /// Whether `mi_malloc` gives a block of `layout` its alignment (as
    /// `std`'s system allocator decides for `malloc`).
    fn plain(layout: Layout) -> bool {
        layout.align() <= PLAIN_ALIGN && layout.align() <= layout.size()
    }

    /// The class of a layout whose blocks are cached.
    fn cached(layout: Layout) -> Option<(usize, usize)> {
        if layout.align() > PLAIN_ALIGN {
            return None;
        }
        class(layout.size())
    }
}

// SAFETY: blocks come from mimalloc with the class's size and the layout's
// alignment (at most what mimalloc gives every block), are handed out once
// and are returned to mimalloc with that same layout.
unsafe impl GlobalAlloc for CachingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() < MIN_CACHED && Self::plain(layout) {
            // SAFETY: a size mimalloc serves with (at least) this alignment.
            return unsafe { libmimalloc_sys::mi_malloc(layout.size()).cast() };
        }
        let Some((index, size)) = Self::cached(layout) else {
            // SAFETY: forwarded as is.
            return unsafe { MiMalloc.alloc(layout) };
        };
        if let Some(p) = Self::take(index, size) {
            return p;
        }
        // SAFETY: a valid layout (size ≥ the requested one, same alignment).
        unsafe { MiMalloc.alloc(Layout::from_size_align_unchecked(size, layout.align())) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() < MIN_CACHED && Self::plain(layout) {
            // SAFETY: as in `alloc`.
            return unsafe { libmimalloc_sys::mi_zalloc(layout.size()).cast() };
        }
        let Some((index, size)) = Self::cached(layout) else {
            // SAFETY: forwarded as is.
            return unsafe { MiMalloc.alloc_zeroed(layout) };
        };
        if let Some(p) = Self::take(index, size) {
            // SAFETY: the block holds at least layout.size() bytes.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
            return p;
        }
        // SAFETY: as in `alloc`; fresh system memory comes zeroed.
        unsafe { MiMalloc.alloc_zeroed(Layout::from_size_align_unchecked(size, layout.align())) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() < MIN_CACHED {
            // SAFETY: a block mimalloc allocated (of any alignment).
            return unsafe { libmimalloc_sys::mi_free(ptr.cast()) };
        }
        let Some((index, size)) = Self::cached(layout) else {
            // SAFETY: allocated by mimalloc with this layout.
            return unsafe { MiMalloc.dealloc(ptr, layout) };
        };
        if !Self::keep(index, size, ptr) {
            // SAFETY: allocated by mimalloc with the class's size.
            unsafe {
                MiMalloc.dealloc(ptr, Layout::from_size_align_unchecked(size, layout.align()))
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = Self::cached(layout);
        // SAFETY: the caller guarantees `new_size` with this alignment is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = Self::cached(new_layout);
        match (old, new) {
            // SAFETY: neither block is cached; a plain block stays plain.
            (None, None) if Self::plain(layout) && Self::plain(new_layout) => unsafe {
                libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
            },
            // SAFETY: neither block is cached: the system reallocates.
            (None, None) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            // Same class: the block already has room.
            (Some((a, _)), Some((b, _))) if a == b => ptr,
            _ => {
                // SAFETY: a fresh block of the new layout; both hold
                // min(old, new) bytes; the old block is freed as allocated.
                unsafe {
                    let fresh = self.alloc(new_layout);
                    if !fresh.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, fresh, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    fresh
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_round_up_by_at_most_a_quarter() {
        assert_eq!(class(MIN_CACHED - 1), None);
        assert_eq!(class(1 << 20), Some((0, 1 << 20)));
        assert_eq!(class((1 << 20) + 1), Some((1, (1 << 20) + (1 << 18))));
        assert_eq!(class(2 << 20), Some((4, 2 << 20)));
        assert_eq!(class((2 << 20) - 1), Some((4, 2 << 20)));
        for size in (MIN_CACHED..(1 << 31)).step_by(7_777_777) {
            let (_, c) = class(size).unwrap();
            assert!(c >= size && c - size <= size / 4, "{size} -> {c}");
        }
    }

    #[test]
    fn blocks_are_reused_and_zeroed_on_request() {
        let a = CachingAllocator;
        let layout = Layout::from_size_align((3 << 20) - 100, 4).unwrap();
        // SAFETY: the usual alloc/dealloc pairing on valid layouts.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(7, layout.size());
            a.dealloc(p, layout);
            let q = a.alloc_zeroed(layout);
            assert!(
                std::slice::from_raw_parts(q, layout.size())
                    .iter()
                    .all(|&b| b == 0)
            );
            let r = a.realloc(q, layout, 3 << 20);
            assert_eq!(r, q, "same class: no move");
            let big = a.realloc(r, Layout::from_size_align(3 << 20, 4).unwrap(), 9 << 20);
            assert!(!big.is_null());
            a.dealloc(big, Layout::from_size_align(9 << 20, 4).unwrap());
        }
    }
}
