//! The `gerdu` command: parse flags, merge config, run until a signal.
//!
//! Exit codes: 0 after a clean shutdown (or `--check`, `--print-config`,
//! `--list-plugins`), 2 for a bad flag or config (one line on stderr naming
//! the flag or key), 1 for a runtime failure such as a port already in use.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use gerdu_api::plugin::{Kind, registered};

use crate::cli::Cli;
use crate::config::{self, CoreConfig};
use crate::server::{self, Server, StartError};

/// How the binary's allocator gives freed memory back to the OS at once
/// (set by `main`; unset, as in tests, nothing happens).
static RELEASE_MEMORY: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets what [`release_memory`] does: the binary's allocator collecting
/// what it holds freed (mimalloc otherwise hands pages back only on its
/// next allocations, which an idle server does not make).
pub fn on_release_memory(release: fn()) {
    let _ = RELEASE_MEMORY.set(release);
}

/// Gives freed memory back to the OS now, if the binary said how; called
/// when the server goes idle after freeing much (its log emptied).
pub fn release_memory() {
    if let Some(release) = RELEASE_MEMORY.get() {
        release();
    }
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("gerdu: {msg}");
    ExitCode::from(code)
}

/// Runs the command line; returns the process exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = match Cli::parse_args(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            return fail(2, first);
        }
    };
    if cli.list_plugins {
        for kind in [Kind::Protocol, Kind::Policy, Kind::Middleware] {
            println!("{kind}:");
            for (name, desc) in registered(kind) {
                println!("  {name:<10} {desc}");
            }
        }
        return ExitCode::SUCCESS;
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let env_config = std::env::var("GERDU_CONFIG").ok();
    let file = match config::config_file(cli.config.as_deref(), env_config.as_deref()) {
        Ok(f) => f,
        Err(e) => return fail(2, e),
    };
    let figment = config::figment(file.as_deref(), &env, cli.overrides());
    if cli.print_config {
        return match CoreConfig::from_figment(&figment).and_then(|_| config::to_toml(&figment)) {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(2, e),
        };
    }
    if cli.check {
        return match server::validate(&figment) {
            Ok(v) => {
                println!("configuration ok (policy {}, protocols {})", v.core.policy, v.core.protocols.join(","));
                ExitCode::SUCCESS
            }
            Err(StartError::Config(e)) => fail(2, e),
            Err(e) => fail(1, e),
        };
    }
    let core = match CoreConfig::from_figment(&figment) {
        Ok(c) => c,
        Err(e) => return fail(2, e),
    };
    init_logging(&core);
    let runtime = match runtime_builder(core.worker_threads()).enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(1, format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let server = match Server::start(&figment, Arc::new(gerdu_api::SystemClock)).await {
            Ok(s) => s,
            Err(StartError::Config(e)) => return fail(2, e),
            Err(e) => return fail(1, e),
        };
        let addrs: Vec<String> = server.addrs().iter().map(|(n, a)| format!("{n}={a}")).collect();
        tracing::info!(id = %core.id, policy = %core.policy, capacity = %core.capacity, "gerdu started: {}", addrs.join(" "));
        wait_for_signal().await;
        tracing::info!("shutting down: draining connections");
        server.shutdown().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// One worker: tokio's current-thread scheduler, an event loop like Redis'
/// (no work-stealing queues or cross-thread wake-ups). More: the multi-thread
/// scheduler with that many workers. Blocking work (snapshot encoding, log
/// purges) runs on tokio's blocking pool either way.
fn runtime_builder(workers: usize) -> tokio::runtime::Builder {
    if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    }
}

fn init_logging(core: &CoreConfig) {
    use std::io::IsTerminal;
    use tracing_subscriber::util::SubscriberInitExt;
    let custom = std::env::var("GERDU_LOG_FILTER").ok();
    let ansi = std::io::stderr().is_terminal();
    let _ = log_subscriber(core.log.directive(), custom.as_deref(), ansi, std::io::stderr).try_init();
}

/// What [`init_logging`] installs: events at `level` (a directive such as
/// `info`), or as `custom` (`GERDU_LOG_FILTER`, a tracing filter) says,
/// written to `writer`.
fn log_subscriber<W>(level: &str, custom: Option<&str>, ansi: bool, writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    // openraft logs every election and snapshot at info, and benign races of
    // membership changes and elections at warn; gerdu logs the role changes
    // and membership itself. Keep openraft at error unless debugging. Its
    // change_membership logs at error every failure it also returns, the
    // benign "already undergoing a configuration change" of two joins at
    // once included; gerdu retries those and reports the rest, so that
    // module is left out. Its replication streams log every failed RPC at
    // error, twice a second for as long as a peer is down; gerdu's peer
    // network logs a peer going and coming back once each, so they are
    // left out too.
    let debugging = matches!(level, "debug" | "trace");
    let default = if debugging {
        level.to_string()
    } else {
        format!("{level},openraft=error,openraft::raft::impl_raft_blocking_write=off,openraft::replication=off")
    };
    let filter = custom.and_then(|c| EnvFilter::try_new(c).ok()).unwrap_or_else(|| EnvFilter::new(default));
    // openraft's core logs at error every failed message to one peer of a
    // vote round or of a read-index round (its events that name a `target`
    // peer and an `error`): with a peer down, once per linearizable read
    // round, thousands a second. The peer network logs a peer going and
    // coming back instead; these are kept only when debugging.
    let quiet = custom.is_none() && !debugging;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    // With the level filter's hint: without one, every disabled span and
    // event of openraft's hot path would be looked at (callgrind: a SET
    // at `-P 1` went from 7,561 to 11,989 instructions).
    // (The function keeps to the hint too, as a hint must be true.)
    let hint = Layer::<tracing_subscriber::Registry>::max_level_hint(&filter);
    let mut peer_failures = tracing_subscriber::filter::filter_fn(move |meta| {
        hint.is_none_or(|h| meta.level() <= &h) && !(quiet && openraft_peer_failure(meta))
    });
    if let Some(hint) = hint {
        peer_failures = peer_failures.with_max_level_hint(hint);
    }
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(writer).with_filter(peer_failures);
    tracing_subscriber::registry().with(filter).with(fmt)
}

/// One of openraft's core events about a message to one peer that failed
/// (see `init_logging`).
fn openraft_peer_failure(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_event()
        && meta.target() == "openraft::core::raft_core"
        && *meta.level() == tracing::Level::ERROR
        && meta.fields().field("target").is_some()
        && meta.fields().field("error").is_some()
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::log_subscriber;

    /// A log writer that keeps what it is given.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    /// The events of a node with a peer down, as logged at `level` (or by
    /// the `custom` filter).
    fn logged(level: &str, custom: Option<&str>) -> String {
        let out = Captured::default();
        tracing::subscriber::with_default(log_subscriber(level, custom, false, out.clone()), || {
            // As openraft's core reports a vote or read-index message lost.
            tracing::error!(target: "openraft::core::raft_core", target = 2u64, error = "refused", "peer failure");
            tracing::error!(target: "openraft::replication", error = "refused", "replication failure");
            tracing::info!(target: "openraft::core::raft_core", "openraft election");
            tracing::error!(target: "openraft::core::raft_core", "openraft core error");
            tracing::warn!(target: "gerdu::raft::network", "peer unreachable");
            tracing::info!(target: "gerdu::app", "gerdu info");
            tracing::debug!(target: "gerdu::app", "gerdu debug");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn openraft_peer_noise_is_left_out_unless_debugging_or_filtered_by_hand() {
        let info = logged("info", None);
        for kept in ["openraft core error", "peer unreachable", "gerdu info"] {
            assert!(info.contains(kept), "{kept} should be logged at info: {info}");
        }
        for left in ["peer failure", "replication failure", "openraft election", "gerdu debug"] {
            assert!(!info.contains(left), "{left} should not be logged at info: {info}");
        }
        let debug = logged("debug", None);
        for kept in ["peer failure", "replication failure", "openraft election", "gerdu debug", "peer unreachable"] {
            assert!(debug.contains(kept), "{kept} should be logged when debugging: {debug}");
        }
        // GERDU_LOG_FILTER says what is logged, openraft's peer events too.
        let custom = logged("info", Some("info,openraft=error"));
        for kept in ["peer failure", "replication failure", "openraft core error", "gerdu info"] {
            assert!(custom.contains(kept), "{kept} should be logged by the filter: {custom}");
        }
        assert!(!custom.contains("openraft election") && !custom.contains("gerdu debug"), "{custom}");
    }
}
