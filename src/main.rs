//! The `gerdu` binary; everything lives in the library (`gerdu::app`).

fn main() -> std::process::ExitCode {
    gerdu::app::main(std::env::args_os())
}
