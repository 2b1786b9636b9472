//! gerdu with every built-in plugin plus the example line protocol.
use gerdu_example_line as _; // linking the crate is what registers the plugin

fn main() -> std::process::ExitCode {
    gerdu::app::main(std::env::args_os())
}
