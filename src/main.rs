//! The `gerdu` binary; everything lives in the library (`gerdu::app`).
//!
//! mimalloc is the global allocator: a cache server allocates and frees many
//! small buffers per request, and glibc malloc showed up in the profile.
//!
//! mimalloc returns freed memory to the OS 10 ms after a page empties. Under
//! a steady write load (values replaced, log entries purged after each
//! snapshot) that means the same pages are given back and faulted in again
//! all the time: the kernel's page zeroing was a third of the CPU of an HTTP
//! PUT benchmark. gerdu waits a second instead, so memory still goes back
//! when the load stops. `MIMALLOC_PURGE_DELAY` in the environment overrides it.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (not among the crate's named constants).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Milliseconds an emptied page stays committed before it goes back to the OS.
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

#[allow(unsafe_code)]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option; no pointers, valid at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    gerdu::app::main(std::env::args_os())
}
