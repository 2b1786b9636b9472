//! Server lifecycle: build everything from the merged config, start the
//! protocols, and shut down cleanly.
//!
//! Start order: core config → metrics → policy → TLS → protocol instances
//! (config errors surface before anything binds) → raft node (bootstraps) →
//! pipeline (middleware from config, outermost first, around the local store)
//! → protocols bind and serve.
//!
//! Shutdown (SIGINT/SIGTERM or [`Server::shutdown`]): the shutdown token is
//! cancelled, every protocol stops accepting and finishes in-flight requests,
//! the node leaves the cluster if it has other members (a leader steps down
//! once its removal commits), then the raft node stops.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use gerdu_api::plugin::{find_middleware, find_policy, find_protocol};
use gerdu_api::tokio_util::sync::CancellationToken;
use gerdu_api::{
    Admin, AdminError, Clock, Config, Extensions, MiddlewareContext, NodeStatus, Pipeline, PluginError, Policy,
    PolicySettings, Protocol, ProtocolContext,
};

use crate::config::{ConfigError, CoreConfig};
use crate::metrics::ServerMetrics;
use crate::middleware;
use crate::raft::RaftNode;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration (exit code 2).
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Anything else (exit code 1).
    #[error("{0}")]
    Runtime(String),
}

impl From<PluginError> for StartError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Config(m) => StartError::Config(ConfigError(m)),
            other => StartError::Runtime(other.to_string()),
        }
    }
}

/// Everything that can be checked without binding or starting raft.
pub struct Validated {
    /// The core keys.
    pub core: CoreConfig,
    /// The store.
    pub policy: Arc<dyn Policy>,
    /// TLS for the listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Protocol instances, not yet bound.
    pub protocols: Vec<(&'static str, Box<dyn Protocol>)>,
}

/// Validates the config: core keys, plugin names, every plugin's section,
/// TLS files. This is what `--check` runs.
pub fn validate(figment: &Config) -> Result<Validated, StartError> {
    let core = CoreConfig::from_figment(figment)?;
    let policy_plugin = find_policy(&core.policy).map_err(|e| ConfigError(format!("policy: {e}")))?;
    let policy = (policy_plugin.build)(figment, &PolicySettings { capacity: core.capacity.0, local_eviction: false })?;
    let tls = crate::tls::load(&core.tls)?;
    crate::tls::load_peer(&core.raft.tls)?;
    let mut protocols = Vec::new();
    for name in &core.protocols {
        let plugin = find_protocol(name).map_err(|e| ConfigError(format!("protocols: {e}")))?;
        protocols.push((plugin.name, (plugin.build)(figment)?));
    }
    // Middleware sections: build with no core services; only config errors count here.
    let metrics = prometheus::Registry::new();
    let clock: Arc<dyn Clock> = Arc::new(gerdu_api::SystemClock);
    let extensions = Extensions::default();
    let ctx = MiddlewareContext {
        config: figment,
        metrics: &metrics,
        policy: &policy,
        clock: &clock,
        extensions: &extensions,
    };
    for name in &core.pipeline.middleware {
        let plugin = find_middleware(name).map_err(|e| ConfigError(format!("pipeline.middleware: {e}")))?;
        if let Err(e @ PluginError::Config(_)) = (plugin.build)(&ctx) {
            return Err(e.into());
        }
    }
    Ok(Validated { core, policy, tls, protocols })
}

struct CoreAdmin {
    metrics: Arc<ServerMetrics>,
    policy: Arc<dyn Policy>,
    raft: Arc<RaftNode>,
    clock: Arc<dyn Clock>,
}

impl Admin for CoreAdmin {
    fn metrics_text(&self) -> String {
        self.metrics.refresh(&*self.policy, &self.raft);
        self.metrics.encode()
    }

    fn status(&self) -> NodeStatus {
        self.raft.status()
    }

    fn join(&self, id: String, addr: String) -> BoxFuture<'static, Result<(), AdminError>> {
        let raft = self.raft.clone();
        Box::pin(async move { raft.join(id, addr, String::new()).await.map(|_| ()) })
    }

    fn leave(&self, id: String) -> BoxFuture<'static, Result<(), AdminError>> {
        let raft = self.raft.clone();
        Box::pin(async move { raft.leave(id).await })
    }

    fn cluster(&self) -> BoxFuture<'static, gerdu_api::ClusterView> {
        let raft = self.raft.clone();
        Box::pin(async move { raft.cluster().await })
    }

    fn backup(
        &self,
        consistency: Option<gerdu_api::ReadConsistency>,
    ) -> BoxFuture<'static, Result<gerdu_api::BackupFile, AdminError>> {
        let raft = self.raft.clone();
        let now = self.clock.now_ms();
        Box::pin(async move { raft.backup(consistency.unwrap_or(raft.default_consistency), now).await })
    }
}

/// A running server.
pub struct Server {
    addrs: Vec<(&'static str, SocketAddr)>,
    shutdown: CancellationToken,
    served: Vec<tokio::task::JoinHandle<()>>,
    raft: Arc<RaftNode>,
    policy: Arc<dyn Policy>,
    metrics: Arc<ServerMetrics>,
    pipeline: Pipeline,
}

impl Server {
    /// Builds and starts everything. `clock` is injectable for tests.
    pub async fn start(figment: &Config, clock: Arc<dyn Clock>) -> Result<Server, StartError> {
        let Validated { core, policy, tls, protocols } = validate(figment)?;
        let names: Vec<&'static str> = protocols.iter().map(|(name, _)| *name).collect();
        let metrics = Arc::new(ServerMetrics::with_protocols(&names));
        let http_port: u16 = figment.extract_inner("http.port").unwrap_or(8080);
        let raft = RaftNode::start(
            &core,
            format!("{}:{http_port}", core.host),
            policy.clone(),
            metrics.clone(),
            clock.clone(),
        )
        .await
        .map_err(|e| match e {
            crate::raft::RaftStartError::Unsupported(m) | crate::raft::RaftStartError::Config(m) => {
                StartError::Config(ConfigError(m))
            }
            other => StartError::Runtime(other.to_string()),
        })?;

        let mut extensions = Extensions::default();
        extensions.insert(raft.clone());
        extensions.insert(metrics.clone());
        let mut pipeline = middleware::local::executor(policy.clone(), clock.clone());
        {
            let ctx = MiddlewareContext {
                config: figment,
                metrics: &metrics.registry,
                policy: &policy,
                clock: &clock,
                extensions: &extensions,
            };
            for name in core.pipeline.middleware.iter().rev() {
                let plugin = find_middleware(name).map_err(|e| ConfigError(e.to_string()))?;
                pipeline = (plugin.build)(&ctx)?.layer(pipeline);
            }
        }

        let shutdown = CancellationToken::new();
        let admin: Arc<dyn Admin> = Arc::new(CoreAdmin {
            metrics: metrics.clone(),
            policy: policy.clone(),
            raft: raft.clone(),
            clock: clock.clone(),
        });
        let mut addrs = Vec::new();
        let mut served = Vec::new();
        for (name, protocol) in protocols {
            let ctx = ProtocolContext {
                pipeline: pipeline.clone(),
                admin: admin.clone(),
                tls: tls.clone(),
                shutdown: shutdown.child_token(),
                metrics: metrics.registry.clone(),
                clock: clock.clone(),
            };
            let running = match protocol.start(ctx).await {
                Ok(r) => r,
                Err(e) => {
                    shutdown.cancel();
                    for s in served {
                        let _ = s.await;
                    }
                    raft.shutdown().await;
                    return Err(e.into());
                }
            };
            tracing::info!(protocol = name, addr = %running.local_addr, tls = tls.is_some(), "listening");
            addrs.push((name, running.local_addr));
            served.push(tokio::spawn(running.served));
        }
        Ok(Server { addrs, shutdown, served, raft, policy, metrics, pipeline })
    }

    /// The bound address of a protocol.
    pub fn addr(&self, protocol: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| *n == protocol).map(|(_, a)| *a)
    }

    /// Every protocol's bound address.
    pub fn addrs(&self) -> &[(&'static str, SocketAddr)] {
        &self.addrs
    }

    /// The request pipeline (for embedding and tests).
    pub fn pipeline(&self) -> Pipeline {
        self.pipeline.clone()
    }

    /// The raft node.
    pub fn raft(&self) -> &Arc<RaftNode> {
        &self.raft
    }

    /// The store.
    pub fn policy(&self) -> &Arc<dyn Policy> {
        &self.policy
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<ServerMetrics> {
        &self.metrics
    }

    /// Stops accepting, drains in-flight requests, leaves the cluster (if
    /// there are other members), stops raft.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for s in self.served {
            let _ = s.await;
        }
        self.raft.leave_cluster().await;
        self.raft.shutdown().await;
    }

    /// Stops without leaving the cluster, as a crash would (for tests of
    /// failures): listeners close, raft stops answering its peers.
    pub async fn kill(self) {
        self.shutdown.cancel();
        for s in self.served {
            let _ = s.await;
        }
        self.raft.shutdown().await;
    }
}
