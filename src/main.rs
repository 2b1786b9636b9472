//! The `gerdu` binary; everything lives in the library (`gerdu::app`).
//!
//! mimalloc is the global allocator ([`Mimalloc`]): a cache server allocates and frees many
//! small buffers per request, and glibc malloc showed up in the profile.
//!
//! mimalloc returns freed memory to the OS 10 ms after a page empties. Under
//! a steady write load (values replaced, log entries purged after each
//! snapshot) that means the same pages are given back and faulted in again
//! all the time: the kernel's page zeroing was a third of the CPU of an HTTP
//! PUT benchmark. gerdu waits a second instead, so memory still goes back
//! when the load stops. `MIMALLOC_PURGE_DELAY` in the environment overrides it.
//! mimalloc purges only when it is called, though, so once an idle server
//! has emptied its raft log it asks mimalloc to collect at once
//! (`gerdu::app::release_memory`): otherwise what the log held could stay
//! resident for as long as no request comes.
//!
//! Transparent huge pages are off for the process, as Redis turns them off
//! for itself (`disable-thp yes`): mimalloc asks for them on its arenas, and
//! a 2 MiB page is resident whole however little of it is used. With them a
//! million small items took 8% more resident memory than without (and an idle
//! server 17 MB instead of 12). `MIMALLOC_ALLOW_THP=1` in the environment
//! keeps them.

#[global_allocator]
static GLOBAL: Mimalloc = Mimalloc;

/// mimalloc as the global allocator, through its plain entry points for the
/// alignments every block has anyway (the `mimalloc` crate's `MiMalloc`
/// calls the `_aligned` ones for every allocation: 51 instructions a call in
/// callgrind against about half that for `mi_malloc`, several times per
/// request).
struct Mimalloc;

/// Every mimalloc block is aligned to a word, whatever its size class (a
/// 24-byte block is not 16-aligned): larger alignments take the aligned calls.
const MI_WORD: usize = std::mem::size_of::<usize>();

// SAFETY: each call forwards to mimalloc, which returns blocks of at least
// the size asked, aligned to a word by every entry point and to `align` by
// the `_aligned` ones (used whenever `align` exceeds a word), or null; a
// block from any of them may be freed with `mi_free` and resized with
// `mi_realloc`/`mi_realloc_aligned`, which keep its contents.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_malloc, mi_malloc_aligned};
        // SAFETY: as the impl's note.
        unsafe {
            if layout.align() <= MI_WORD {
                mi_malloc(layout.size()).cast()
            } else {
                mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        use libmimalloc_sys::{mi_zalloc, mi_zalloc_aligned};
        // SAFETY: as the impl's note.
        unsafe {
            if layout.align() <= MI_WORD {
                mi_zalloc(layout.size()).cast()
            } else {
                mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { libmimalloc_sys::mi_free(ptr.cast()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        use libmimalloc_sys::{mi_realloc, mi_realloc_aligned};
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's
        // contract); the alignment kept is the one it was allocated with.
        unsafe {
            if layout.align() <= MI_WORD {
                mi_realloc(ptr.cast(), new_size).cast()
            } else {
                mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
            }
        }
    }
}

/// mimalloc's `mi_option_purge_delay` (not among the crate's named constants).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Milliseconds an emptied page stays committed before it goes back to the OS.
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// mimalloc's `mi_option_allow_thp` (v2 numbering, as `MI_OPTION_PURGE_DELAY`).
const MI_OPTION_ALLOW_THP: libmimalloc_sys::mi_option_t = 37;

#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; no pointers, valid at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

/// Runs before `main` (an `.init_array` entry, after mimalloc's own
/// initialiser, before the first Rust allocation reserves mimalloc's
/// arena): with THP already off, no page of the arena is ever a huge one.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[unsafe(link_section = ".init_array")]
static DISABLE_THP: extern "C" fn() = disable_thp;

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
extern "C" fn disable_thp() {
    // No allocation here (std::env would allocate, and reserve the arena).
    // SAFETY: getenv with a NUL-terminated literal, before any thread exists.
    if unsafe { libc::getenv(c"MIMALLOC_ALLOW_THP".as_ptr()) }.is_null() {
        // SAFETY: an integer option (see `tune_allocator`).
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ALLOW_THP, 0) }
        // SAFETY: prctl with integer arguments only; failure just leaves THP as it was.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

/// Frees what mimalloc holds for later: emptied pages whose purge delay
/// is not over, and abandoned segments.
#[allow(unsafe_code)]
fn collect_freed() {
    // SAFETY: no arguments besides a flag; callable from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    gerdu::app::on_release_memory(collect_freed);
    gerdu::app::main(std::env::args_os())
}
