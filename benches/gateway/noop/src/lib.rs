//! `noop-middleware`: forwards every request, unchanged, to the handler it
//! imports, after reading one header (as a real middleware would). See
//! Cargo.toml for why it is `no_std`.
//!
//! With feature `floor` it is instead the floor of a gateway built as one
//! component: before forwarding it makes the host calls the gateway's work
//! cannot do without — the method and path (routing, scopes, audit), the
//! `Authorization` header (who the caller is), the wall clock and one
//! `wasi:keyvalue` increment (the rate limiter's token) — and nothing else.
#![no_std]

extern crate alloc;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use wasip2::http::types::{IncomingRequest, ResponseOutparam};

/// Heap in the module's static data: no `memory.grow` per request (which
/// would cost an `mprotect` and its TLB shootdown in the host's pool).
const HEAP: usize = 64 * 1024;

/// Read only through the allocator's raw pointers.
#[allow(dead_code)]
#[repr(align(16))]
struct Arena([u8; HEAP]);

/// Bump allocation, reset when a request arrives: nothing a request
/// allocates outlives it, so a reused instance starts each one with the
/// whole arena.
struct Bump {
    arena: UnsafeCell<Arena>,
    next: UnsafeCell<usize>,
}

// SAFETY: a wasm32 instance runs one thread.
unsafe impl Sync for Bump {}

// SAFETY: hands out disjoint, aligned ranges of the arena; null when full.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded; `next` only grows within the arena.
        unsafe {
            let base = self.arena.get() as usize;
            let next = &mut *self.next.get();
            let start = (base + *next + layout.align() - 1) & !(layout.align() - 1);
            let end = start + layout.size();
            if end > base + HEAP {
                return core::ptr::null_mut();
            }
            *next = end - base;
            start as *mut u8
        }
    }

    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}

#[global_allocator]
static ALLOCATOR: Bump = Bump {
    arena: UnsafeCell::new(Arena([0; HEAP])),
    next: UnsafeCell::new(0),
};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

/// The canonical ABI's allocator (wasi-libc provides it to std guests).
#[unsafe(no_mangle)]
unsafe extern "C" fn cabi_realloc(
    old: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    if new_len == 0 {
        return align as *mut u8;
    }
    // SAFETY: a valid layout from the canonical ABI; the old block (if any)
    // holds `old_len` bytes and the new one at least `new_len`.
    unsafe {
        let p = ALLOCATOR.alloc(Layout::from_size_align_unchecked(new_len, align));
        if !old.is_null() && !p.is_null() {
            core::ptr::copy_nonoverlapping(old, p, old_len.min(new_len));
        }
        p
    }
}

mod bindings {
    // One world for both builds: without feature `floor` nothing calls
    // `wasi:keyvalue`, so the component imports only `wasi:http`.
    wit_bindgen::generate!({
        inline: "
            package tensorwasm:noop;
            world floor {
                import wasi:http/incoming-handler@0.2.12;
                import wasi:keyvalue/atomics@0.2.0-draft;
                export wasi:http/incoming-handler@0.2.12;
            }
        ",
        path: ["../../../wit/deps/io", "../../../wit/deps/clocks", "../../../wit/deps/random",
               "../../../wit/deps/filesystem", "../../../wit/deps/sockets", "../../../wit/deps/cli",
               "../../../wit/deps/http", "../../../wit/deps/keyvalue"],
        with: {
            "wasi:http/types@0.2.12": wasip2::http::types,
            "wasi:http/incoming-handler@0.2.12": generate,
            "wasi:io/error@0.2.12": wasip2::io::error,
            "wasi:io/poll@0.2.12": wasip2::io::poll,
            "wasi:io/streams@0.2.12": wasip2::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": wasip2::clocks::monotonic_clock,
            "wasi:keyvalue/store@0.2.0-draft": generate,
            "wasi:keyvalue/atomics@0.2.0-draft": generate,
        },
    });
}

/// The floor's bucket, opened by an instance's first request and kept.
#[cfg(feature = "floor")]
struct Kept(UnsafeCell<Option<bindings::wasi::keyvalue::store::Bucket>>);

// SAFETY: a wasm32 instance runs one thread.
#[cfg(feature = "floor")]
unsafe impl Sync for Kept {}

#[cfg(feature = "floor")]
static BUCKET: Kept = Kept(UnsafeCell::new(None));

/// The gateway's unavoidable host calls (see the module doc).
#[cfg(feature = "floor")]
fn floor(request: &IncomingRequest) {
    use bindings::wasi::keyvalue::{atomics, store};
    core::hint::black_box(request.method());
    core::hint::black_box(request.path_with_query());
    core::hint::black_box(wasip2::clocks::wall_clock::now());
    // SAFETY: single-threaded; no other reference to the slot is live.
    let bucket = unsafe { &mut *BUCKET.0.get() };
    if bucket.is_none() {
        *bucket = store::open("volatile:floor").ok();
    }
    if let Some(bucket) = bucket {
        core::hint::black_box(atomics::increment(bucket, "0", 1).ok());
    }
}

struct Noop;

impl bindings::exports::wasi::http::incoming_handler::Guest for Noop {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        // SAFETY: single-threaded, and no allocation of an earlier request
        // is still in use.
        unsafe { *ALLOCATOR.next.get() = 0 };
        core::hint::black_box(request.headers().get("authorization"));
        #[cfg(feature = "floor")]
        floor(&request);
        bindings::wasi::http::incoming_handler::handle(request, out)
    }
}

bindings::export!(Noop with_types_in bindings);
