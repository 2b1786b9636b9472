//! The `gerdu` binary; everything lives in the library (`gerdu::app`).
//!
//! mimalloc is the global allocator: a cache server allocates and frees many
//! small buffers per request, and glibc malloc showed up in the profile.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    gerdu::app::main(std::env::args_os())
}
