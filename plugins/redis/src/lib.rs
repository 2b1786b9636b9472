//! # gerdu-protocol-redis — the Redis protocol plugin
//!
//! `-protocols redis` (port `redis.port`, `-redisport`, default 6379) serves
//! RESP2 and RESP3 (switched by `HELLO`), inline commands, and pipelining, so
//! redis-cli, redis-benchmark and client libraries work unchanged for the
//! commands gerdu has (see [`table`]): connection, server, string and
//! keyspace commands. Anything else gets Redis' unknown-command error.
//!
//! Layers, as in mini-redis: bytes → [`codec`] (requests, replies) →
//! [`conn`] (batches of pipelined requests) → [`commands`] (Redis command →
//! command model → RESP reply) → the shared pipeline.
//!
//! Limits (`[redis]`): `max_clients` (further connections get
//! `-ERR max number of clients reached`), `timeout` (idle seconds, 0 = never),
//! `max_bulk` (`proto-max-bulk-len`), `max_args`, `query_buffer_limit`.
//! Protocol errors get Redis' texts and close the connection, as Redis does.
//! With `[tls]` configured the port speaks TLS (set `redis.tls = false` to
//! keep it plain).

#![warn(missing_docs)]

pub mod codec;
pub mod commands;
pub mod conn;
pub mod table;

use std::sync::Arc;

use futures::future::BoxFuture;
use gerdu_api::net::{self, ServeOptions};
use gerdu_api::size::ByteSize;
use gerdu_api::{Config, PluginError, Protocol, ProtocolContext, ProtocolPlugin, Running, register_protocol};
use serde::{Deserialize, Serialize};

/// The Redis version gerdu reports (`INFO`, `HELLO`): the command set and
/// replies follow Redis 7.2.
pub const REDIS_VERSION: &str = "7.2.4";

/// `[redis]` section.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Port (`-redisport`).
    pub port: u16,
    /// Most concurrent clients (Redis `maxclients`).
    pub max_clients: usize,
    /// Close clients idle this many seconds; 0 = never (Redis `timeout`).
    pub timeout: u64,
    /// Longest bulk argument (Redis `proto-max-bulk-len`).
    pub max_bulk: ByteSize,
    /// Most arguments in one request.
    pub max_args: usize,
    /// Most unparsed input buffered per client (Redis `client-query-buffer-limit`).
    pub query_buffer_limit: ByteSize,
    /// Speak TLS when `[tls]` is configured.
    pub tls: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            port: 6379,
            max_clients: 10_000,
            timeout: 0,
            max_bulk: ByteSize(512 << 20),
            max_args: 1024 * 1024,
            query_buffer_limit: ByteSize(1 << 30),
            tls: true,
        }
    }
}

struct Redis {
    host: String,
    config: RedisConfig,
    auth_required: bool,
    capacity: u64,
    policy: String,
}

impl Protocol for Redis {
    fn start(self: Box<Self>, ctx: ProtocolContext) -> BoxFuture<'static, Result<Running, PluginError>> {
        Box::pin(async move {
            let (listener, local_addr) = net::bind("redis", &self.host, self.config.port).await?;
            let tls = ctx.tls.as_ref().filter(|_| self.config.tls).map(|base| net::acceptor(base, &[]));
            let shared = Arc::new(conn::Shared::new(
                ctx.pipeline.clone(),
                ctx.admin.clone(),
                self.config.clone(),
                self.auth_required,
                self.capacity,
                self.policy.clone(),
                local_addr,
                tls.is_some(),
                ctx.metrics.clone(),
            ));
            let shutdown = ctx.shutdown.clone();
            let opts =
                ServeOptions { name: "redis", tls, max_connections: self.config.max_clients, shutdown: ctx.shutdown };
            let rejected = shared.clone();
            let served = net::serve(
                listener,
                opts,
                move |stream, peer| conn::serve(stream, peer, shared.clone(), shutdown.clone()),
                move |stream| {
                    rejected.rejected_connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    net::refuse(stream, b"-ERR max number of clients reached\r\n")
                },
            );
            Ok(Running { local_addr, served: Box::pin(served) })
        })
    }
}

fn build(config: &Config) -> Result<Box<dyn Protocol>, PluginError> {
    let redis: RedisConfig = gerdu_api::plugin::section(config, "redis")?;
    if redis.max_clients == 0 {
        return Err(PluginError::Config("redis.max_clients: must be at least 1".into()));
    }
    Ok(Box::new(Redis {
        host: config.extract_inner("host").unwrap_or_else(|_| "127.0.0.1".into()),
        auth_required: config.extract_inner("auth.enabled").unwrap_or(false),
        capacity: config.extract_inner::<ByteSize>("capacity").map(|b| b.0).unwrap_or(0),
        policy: config.extract_inner("policy").unwrap_or_else(|_| "lru".into()),
        config: redis,
    }))
}

register_protocol!(ProtocolPlugin {
    name: "redis",
    description: "Redis protocol (RESP2/RESP3): strings, keyspace, server and connection commands",
    build,
});
