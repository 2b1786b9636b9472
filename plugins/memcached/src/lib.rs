//! # gerdu-protocol-memcached — the memcached protocol plugin
//!
//! `-protocols mcd` (port `mcd.port`, `-mcdport`, default 11211) speaks the
//! memcached 1.6 text protocol, so memcached clients work unchanged:
//!
//! - storage and retrieval: `get gets gat gats set add replace append prepend
//!   cas delete incr decr touch flush_all`, with `noreply` wherever memcached
//!   takes it (see [`text`]);
//! - meta commands `mg ms md ma mn me` with their flags (see [`meta`]);
//! - `version`, `verbosity`, `stats` (general, `settings`, `items`, `reset`),
//!   `quit`.
//!
//! Layers, as in mini-redis: bytes → [`codec`] (requests) → [`conn`]
//! (batches of pipelined requests) → [`text`] / [`meta`] (memcached request →
//! command model → reply lines) → the shared pipeline.
//!
//! The cas unique of an item is the sequence number of its last write in the
//! replicated log (a counter of applied writes, identical on every replica):
//! it changes on every write, and two writes batched into one raft entry
//! still get different values. A touch keeps the cas, as in memcached.
//!
//! Limits (`[mcd]`): `max_connections` (memcached `-c`; further connections
//! get `SERVER_ERROR Too many open connections`), `max_item_size` (`-I`; a
//! larger value gets `SERVER_ERROR object too large for cache`, its data is
//! discarded and the connection stays usable), `max_line` (a longer command
//! line closes the connection), `idle_timeout` (seconds, 0 = never). Keys
//! longer than 250 bytes or with control characters get
//! `CLIENT_ERROR bad command line format`. With `[tls]` configured the port
//! speaks TLS (set `mcd.tls = false` to keep it plain). With `auth.enabled`,
//! clients authenticate the memcached ascii way (see [`conn`]).

#![warn(missing_docs)]

pub mod codec;
pub mod conn;
pub mod meta;
pub mod stats;
pub mod text;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use futures::future::BoxFuture;
use gerdu_api::net::{self, ServeOptions};
use gerdu_api::size::ByteSize;
use gerdu_api::{Config, PluginError, Protocol, ProtocolContext, ProtocolPlugin, Running, register_protocol};
use serde::{Deserialize, Serialize};

/// The memcached version gerdu reports (`version`, `stats`): the commands
/// and replies follow memcached 1.6.
pub const VERSION: &str = "1.6.21";

/// `[mcd]` section.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct McdConfig {
    /// Port (`-mcdport`).
    pub port: u16,
    /// Most concurrent connections (memcached `-c`).
    pub max_connections: usize,
    /// Largest value (memcached `-I`).
    pub max_item_size: ByteSize,
    /// Longest command line.
    pub max_line: ByteSize,
    /// Close connections idle this many seconds; 0 = never (memcached `idle_timeout`).
    pub idle_timeout: u64,
    /// Speak TLS when `[tls]` is configured.
    pub tls: bool,
}

impl Default for McdConfig {
    fn default() -> Self {
        McdConfig {
            port: 11211,
            max_connections: 1024,
            max_item_size: ByteSize(1 << 20),
            max_line: ByteSize(64 << 10),
            idle_timeout: 0,
            tls: true,
        }
    }
}

struct Mcd {
    host: String,
    config: McdConfig,
    auth_required: bool,
    policy: String,
    threads: usize,
}

impl Protocol for Mcd {
    fn start(self: Box<Self>, ctx: ProtocolContext) -> BoxFuture<'static, Result<Running, PluginError>> {
        Box::pin(async move {
            let (listener, local_addr) = net::bind("mcd", &self.host, self.config.port).await?;
            let tls = ctx.tls.as_ref().filter(|_| self.config.tls).map(|base| net::acceptor(base, &[]));
            let limits = codec::Limits {
                max_item: self.config.max_item_size.0 as usize,
                max_line: self.config.max_line.0 as usize,
            };
            let shared = Arc::new(conn::Shared {
                pipeline: ctx.pipeline.clone(),
                limits,
                auth_required: self.auth_required,
                policy: self.policy.clone(),
                threads: self.threads,
                local_addr,
                tls: tls.is_some(),
                clock: ctx.clock.clone(),
                metrics: ctx.metrics.clone(),
                started: Instant::now(),
                counters: Default::default(),
                curr_connections: AtomicU64::new(0),
                total_connections: AtomicU64::new(0),
                rejected_connections: AtomicU64::new(0),
                config: self.config.clone(),
            });
            let shutdown = ctx.shutdown.clone();
            let opts =
                ServeOptions { name: "mcd", tls, max_connections: self.config.max_connections, shutdown: ctx.shutdown };
            let rejected = shared.clone();
            let served = net::serve(
                listener,
                opts,
                move |stream, peer| conn::serve(stream, peer, shared.clone(), shutdown.clone()),
                move |stream| {
                    rejected.rejected_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    net::refuse(stream, b"SERVER_ERROR Too many open connections\r\n")
                },
            );
            Ok(Running { local_addr, served: Box::pin(served) })
        })
    }
}

fn build(config: &Config) -> Result<Box<dyn Protocol>, PluginError> {
    let mcd: McdConfig = gerdu_api::plugin::section(config, "mcd")?;
    if mcd.max_connections == 0 {
        return Err(PluginError::Config("mcd.max_connections: must be at least 1".into()));
    }
    if mcd.max_item_size.0 == 0 || mcd.max_item_size.0 > 1 << 30 {
        return Err(PluginError::Config("mcd.max_item_size: must be between 1 byte and 1GB".into()));
    }
    Ok(Box::new(Mcd {
        host: config.extract_inner("host").unwrap_or_else(|_| "127.0.0.1".into()),
        auth_required: config.extract_inner("auth.enabled").unwrap_or(false),
        policy: config.extract_inner("policy").unwrap_or_else(|_| "lru".into()),
        threads: config.extract_inner("threads").unwrap_or(1),
        config: mcd,
    }))
}

register_protocol!(ProtocolPlugin {
    name: "mcd",
    description: "memcached text protocol: storage, retrieval, meta commands, cas, noreply, stats",
    build,
});
