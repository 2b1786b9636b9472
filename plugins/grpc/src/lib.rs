//! # gerdu-protocol-grpc — the gRPC protocol plugin
//!
//! `-protocols grpc` (port `grpc.port`, `-grpcport`, default 8081) serves
//! `proto/gerdu.proto` with tonic:
//!
//! - the Go Gerdu's API unchanged: `Put` (`created` true for a new key),
//!   `Get` and `Delete` (a missing key fails with `NOT_FOUND`);
//! - additions: TTL, flags and conditions (`IF_ABSENT`, `IF_PRESENT`,
//!   `IF_CAS`) on `Put`, which answers the new cas; `Get` answers cas, flags
//!   and the TTL left; `MultiGet`, `MultiPut`, `MultiDelete`, `Increment`,
//!   `Touch`; the bidirectional `Pipeline` stream (many operations in flight
//!   on one stream, executed in batches); `ClusterStatus`;
//! - `grpc.health.v1.Health` (`""` and `gerdu.Gerdu` are `SERVING` until
//!   shutdown starts, then `NOT_SERVING`) and server reflection v1 and
//!   v1alpha, so grpcurl and health probes work without the proto file.
//!
//! The status codes are listed at the top of `proto/gerdu.proto` and in
//! [`service`]. Layers: bytes → hyper HTTP/2 ([`server`], which routes by
//! path) → tonic's generated `GerduServer` → [`service`] (gRPC messages ↔
//! command model) → the shared pipeline.
//!
//! Limits (`[grpc]`): `max_connections` (further connections are closed at
//! once), `max_key_size` and `max_value_size` (`RESOURCE_EXHAUSTED`), and
//! `max_message_size`, the largest request message (a `MultiPut` carries
//! many values; also `RESOURCE_EXHAUSTED`). With `[tls]` configured the port
//! speaks TLS with ALPN `h2` (set `grpc.tls = false` to keep it plain). With
//! `auth.enabled`, calls carry `authorization: Bearer <token>` or
//! `Basic <base64 user:password>` metadata; the health and reflection
//! services stay open, like HTTP's `/health`.

#![warn(missing_docs)]

pub mod server;
pub mod service;

/// Code generated from `proto/gerdu.proto` (messages, client, server).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("gerdu");

    /// The encoded descriptor set of `gerdu.proto`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("gerdu_descriptor");
}

use std::sync::Arc;

use futures::future::BoxFuture;
use gerdu_api::net::{self, ServeOptions};
use gerdu_api::size::ByteSize;
use gerdu_api::{Config, PluginError, Protocol, ProtocolContext, ProtocolPlugin, Running, register_protocol};
use serde::{Deserialize, Serialize};

/// `[grpc]` section.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    /// Port (`-grpcport`).
    pub port: u16,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Longest key.
    pub max_key_size: ByteSize,
    /// Largest value.
    pub max_value_size: ByteSize,
    /// Largest request message (tonic's decoding limit).
    pub max_message_size: ByteSize,
    /// Speak TLS when `[tls]` is configured.
    pub tls: bool,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            port: 8081,
            max_connections: 10_000,
            max_key_size: ByteSize(64 << 10),
            max_value_size: ByteSize(16 << 20),
            max_message_size: ByteSize(64 << 20),
            tls: true,
        }
    }
}

struct Grpc {
    host: String,
    config: GrpcConfig,
}

impl Protocol for Grpc {
    fn start(self: Box<Self>, ctx: ProtocolContext) -> BoxFuture<'static, Result<Running, PluginError>> {
        Box::pin(async move {
            let (listener, local_addr) = net::bind("grpc", &self.host, self.config.port).await?;
            let tls = ctx.tls.as_ref().filter(|_| self.config.tls).map(|base| net::acceptor(base, &[b"h2"]));
            let limits = service::Limits {
                max_key: self.config.max_key_size.0 as usize,
                max_value: self.config.max_value_size.0 as usize,
            };
            let service = service::Service::new(
                ctx.pipeline.clone(),
                ctx.admin.clone(),
                ctx.clock.clone(),
                limits,
                ctx.shutdown.clone(),
            );
            let gerdu = pb::gerdu_server::GerduServer::new(service)
                .max_decoding_message_size(self.config.max_message_size.0 as usize);
            let (reporter, health) = tonic_health::server::health_reporter();
            reporter.set_serving::<pb::gerdu_server::GerduServer<service::Service>>().await;
            let reflection = || {
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            };
            let reflection_err =
                |e: tonic_reflection::server::Error| PluginError::Other(format!("grpc reflection: {e}"));
            let routes = server::Routes {
                gerdu,
                health,
                reflection_v1: reflection().build_v1().map_err(reflection_err)?,
                reflection_v1alpha: reflection().build_v1alpha().map_err(reflection_err)?,
            };
            let router = server::Router(Arc::new(routes));

            // Health turns NOT_SERVING as soon as the drain starts.
            let draining = ctx.shutdown.clone();
            tokio::spawn(async move {
                draining.cancelled().await;
                reporter.set_not_serving::<pb::gerdu_server::GerduServer<service::Service>>().await;
                reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            });

            let shutdown = ctx.shutdown.clone();
            let opts = ServeOptions {
                name: "grpc",
                tls,
                max_connections: self.config.max_connections,
                shutdown: ctx.shutdown,
            };
            let served = net::serve(
                listener,
                opts,
                move |stream, peer| server::serve_conn(stream, peer, router.clone(), shutdown.clone()),
                |_stream| async {},
            );
            Ok(Running { local_addr, served: Box::pin(served) })
        })
    }
}

fn build(config: &Config) -> Result<Box<dyn Protocol>, PluginError> {
    let grpc: GrpcConfig = gerdu_api::plugin::section(config, "grpc")?;
    if grpc.max_connections == 0 {
        return Err(PluginError::Config("grpc.max_connections: must be at least 1".into()));
    }
    if grpc.max_key_size.0 == 0 {
        return Err(PluginError::Config("grpc.max_key_size: must be at least 1 byte".into()));
    }
    if grpc.max_message_size.0 < grpc.max_value_size.0 || grpc.max_message_size.0 > u32::MAX as u64 {
        return Err(PluginError::Config(
            "grpc.max_message_size: must be at least grpc.max_value_size and below 4GB".into(),
        ));
    }
    Ok(Box::new(Grpc { host: config.extract_inner("host").unwrap_or_else(|_| "127.0.0.1".into()), config: grpc }))
}

register_protocol!(ProtocolPlugin {
    name: "grpc",
    description: "gRPC: the Go Gerdu API plus TTL, cas, batches, streaming, health and reflection",
    build,
});
