//! # gerdu — a distributed in-memory key-value cache
//!
//! One process serves HTTP, the Redis protocol, the memcached protocol and
//! gRPC over one data set, replicated with Raft. It is a plugin-pipeline
//! server:
//!
//! ```text
//!  client ──► Protocol plugin ──► Pipeline: auth ─► metrics ─► raft ─► local store ──► Policy plugin
//!  (HTTP,      bytes → Request     (middleware plugins,   writes: proposer      reads: exec::read
//!   RESP,      {ctx, [Command]}     order from config)     (group commit) →
//!   mcd,                                                   openraft log →
//!   gRPC)      ◄── [Reply] ───────────────────────────     state machine: exec::apply ──► Policy
//!                                                          reads: batched read index
//! ```
//!
//! - [`config`] / [`cli`]: figment layers (defaults < `gerdu.toml` < `GERDU_*`
//!   < flags), Go-style flags.
//! - [`server`]: start-up order, protocol lifecycle, graceful shutdown.
//! - [`middleware`]: the built-in `auth`, `metrics` and `raft` middleware.
//! - [`raft`]: openraft glue: types, in-memory log, state machine, proposer,
//!   read index.
//! - [`metrics`]: the server's Prometheus registry.
//! - [`tls`]: rustls config for the listeners.
//!
//! The plugin SDK is the `gerdu-api` crate; built-in plugins are linked by
//! [`plugins`].

#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod config;
pub mod metrics;
pub mod middleware;
pub mod plugins;
pub mod raft;
pub mod server;
pub mod tls;

pub use server::{Server, StartError};
