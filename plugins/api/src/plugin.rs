//! Plugin kinds, their registration, and lookup by name.
//!
//! Every protocol, policy and middleware registers itself statically with
//! [`inventory`] through [`register_protocol!`](crate::register_protocol),
//! [`register_policy!`](crate::register_policy) or
//! [`register_middleware!`](crate::register_middleware). The core never names
//! an implementation; it asks [`find_protocol`] & co. for the names the config
//! selects. An unknown name is an error that lists every registered name.
//!
//! Remember the linker: a plugin crate that the final binary never names is
//! not linked, and its registration silently vanishes. Binaries name each
//! plugin crate once (`use gerdu_policy_lru as _;`).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::pipeline::{Pipeline, ReadConsistency};
use crate::policy::{Policy, PolicySettings};

/// The merged configuration; each plugin extracts its own section.
pub type Config = figment::Figment;

/// Errors a plugin reports while building or starting.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// A config value is invalid; the message names the key.
    #[error("{0}")]
    Config(String),
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Extracts a plugin's own config section (`[name]`), with serde defaults when
/// the section is absent. Errors name the full key (`http.port: ...`).
pub fn section<T: serde::de::DeserializeOwned>(config: &Config, name: &str) -> Result<T, PluginError> {
    config.focus(name).extract().map_err(|e| {
        let line = crate::config_error_line(&e);
        PluginError::Config(if e.path.is_empty() { format!("{name}: {line}") } else { format!("{name}.{line}") })
    })
}

impl From<figment::Error> for PluginError {
    fn from(e: figment::Error) -> Self {
        PluginError::Config(crate::config_error_line(&e))
    }
}

// ---------------------------------------------------------------- protocols

/// Node-level operations a protocol may expose (HTTP `/metrics`, `/join`, ...).
pub trait Admin: Send + Sync + 'static {
    /// The Prometheus text exposition of every metric.
    fn metrics_text(&self) -> String;
    /// This node's view of the cluster.
    fn status(&self) -> NodeStatus;
    /// Adds a node (`POST /join`).
    fn join(&self, id: String, addr: String) -> BoxFuture<'static, Result<(), AdminError>>;
    /// Removes a node (`POST /leave`).
    fn leave(&self, id: String) -> BoxFuture<'static, Result<(), AdminError>>;
    /// The detailed cluster view (`GET /cluster`).
    fn cluster(&self) -> BoxFuture<'static, ClusterView>;
    /// A backup of every item ([`crate::image`], `GET /backup`) at
    /// `consistency` (`None`: the node's default). With `linearizable` or
    /// `leader` only the leader takes it, holding every write acknowledged
    /// before the call; others answer [`AdminError::NotLeader`]. `local` takes
    /// this node's state as applied now.
    fn backup(&self, consistency: Option<ReadConsistency>) -> BoxFuture<'static, Result<BackupFile, AdminError>> {
        let _ = consistency;
        Box::pin(async { Err(AdminError::NotImplemented("backups are not available here".into())) })
    }
}

/// A backup as [`Admin::backup`] takes it: the file is encoded while it is
/// sent, chunk by chunk ([`crate::image::BackupWriter`]).
#[derive(Debug)]
pub struct BackupFile {
    /// The log index whose state it holds.
    pub applied_index: u64,
    /// The file's chunks in order ([`crate::image::decode_backup`] reads
    /// them joined); an `Err` ends it unfinished. Dropping the receiver
    /// stops the encoding.
    pub chunks: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, String>>,
}

/// One member as [`ClusterView`] shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberView {
    /// Node id (`-id`).
    pub id: String,
    /// `voter` or `learner`.
    pub role: String,
    /// Raft (peer) address.
    pub raft_addr: String,
    /// HTTP address, when known.
    pub http_addr: String,
    /// On the leader: the last log index replicated to this member.
    pub matched_index: Option<u64>,
}

/// A node's detailed view of the cluster (`GET /cluster`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterView {
    /// This node's id.
    pub id: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub state: String,
    /// Current term.
    pub term: u64,
    /// The leader, if known, with its addresses.
    pub leader: Option<MemberView>,
    /// Every member.
    pub members: Vec<MemberView>,
    /// Last index in this node's log.
    pub last_log_index: u64,
    /// Last index known committed.
    pub committed_index: u64,
    /// Last index applied to the store.
    pub applied_index: u64,
    /// Last index covered by a snapshot.
    pub snapshot_index: u64,
}

/// A node's view of itself and the cluster.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeStatus {
    /// The node's id (`-id`).
    pub id: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    /// The leader's id, if known.
    pub leader: Option<String>,
    /// Current term.
    pub term: u64,
    /// Last applied log index.
    pub applied_index: u64,
    /// Members' ids and raft addresses.
    pub members: Vec<(String, String)>,
}

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Not available in this build or mode.
    #[error("{0}")]
    NotImplemented(String),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The request conflicts with the membership (an id or address taken).
    #[error("{0}")]
    Conflict(String),
    /// No such node.
    #[error("{0}")]
    NotFound(String),
    /// No leader, or the cluster cannot decide now.
    #[error("{0}")]
    Unavailable(String),
    /// Only the leader does this; its HTTP address, when known.
    #[error("this node is not the leader{}", .0.as_ref().map(|a| format!(" (the leader serves HTTP on {a})")).unwrap_or_default())]
    NotLeader(Option<String>),
}

/// What a protocol gets from the server when it starts.
#[derive(Clone)]
pub struct ProtocolContext {
    /// The request pipeline.
    pub pipeline: Pipeline,
    /// Node operations.
    pub admin: Arc<dyn Admin>,
    /// TLS server config when `-cert`/`-key` (or `[tls]`) are set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Cancelled when the server shuts down: stop accepting, drain, return.
    pub shutdown: CancellationToken,
    /// The server's metrics registry.
    pub metrics: prometheus::Registry,
    /// The server's clock (injected in tests), for answers that report time
    /// left or elapsed (memcached `t`, `l`).
    pub clock: Arc<dyn Clock>,
}

/// The value of counter `name` in `registry` (0 when it is absent), for
/// protocols that report server counters in their own stats (`INFO`,
/// memcached `stats`).
pub fn counter_value(registry: &prometheus::Registry, name: &str) -> u64 {
    registry
        .gather()
        .iter()
        .find(|f| f.name() == name)
        .and_then(|f| f.get_metric().first().map(|m| m.get_counter().get_value() as u64))
        .unwrap_or(0)
}

/// A protocol that is listening.
pub struct Running {
    /// The bound address (port 0 resolved).
    pub local_addr: SocketAddr,
    /// Serves until shutdown is cancelled and in-flight requests finished.
    pub served: BoxFuture<'static, ()>,
}

/// A protocol plugin: binds its listener and serves the pipeline.
pub trait Protocol: Send + 'static {
    /// Binds and returns the serving future.
    fn start(self: Box<Self>, ctx: ProtocolContext) -> BoxFuture<'static, Result<Running, PluginError>>;
}

/// Builds a protocol from the merged config (it reads its own section).
pub type BuildProtocol = fn(&Config) -> Result<Box<dyn Protocol>, PluginError>;

/// Registration of a protocol plugin.
pub struct ProtocolPlugin {
    /// Name used in config (`protocols = ["redis"]`).
    pub name: &'static str,
    /// One line for `--list-plugins`.
    pub description: &'static str,
    /// Builds the protocol from the merged config (it reads its own section).
    pub build: BuildProtocol,
}
inventory::collect!(ProtocolPlugin);

// ----------------------------------------------------------------- policies

/// Builds a policy from the merged config and the core's settings.
pub type BuildPolicy = fn(&Config, &PolicySettings) -> Result<Arc<dyn Policy>, PluginError>;

/// Registration of a policy plugin.
pub struct PolicyPlugin {
    /// Name used in config (`policy = "lru"`, `-type lru`).
    pub name: &'static str,
    /// One line for `--list-plugins`.
    pub description: &'static str,
    /// Builds the store.
    pub build: BuildPolicy,
}
inventory::collect!(PolicyPlugin);

// --------------------------------------------------------------- middleware

/// Typed services the core offers middleware (the raft node, the clock, ...).
#[derive(Default)]
pub struct Extensions(HashMap<TypeId, Box<dyn Any + Send + Sync>>);

impl Extensions {
    /// Adds or replaces the value of type `T`.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Box::new(value));
    }
    /// The value of type `T`, if present.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>()).and_then(|b| b.downcast_ref())
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Extensions({} values)", self.0.len())
    }
}

/// What a middleware gets when it is built.
pub struct MiddlewareContext<'a> {
    /// The merged config.
    pub config: &'a Config,
    /// The server's metrics registry.
    pub metrics: &'a prometheus::Registry,
    /// The store.
    pub policy: &'a Arc<dyn Policy>,
    /// Wall clock.
    pub clock: &'a Arc<dyn Clock>,
    /// Core services by type.
    pub extensions: &'a Extensions,
}

/// A pipeline stage: wraps the inner pipeline.
///
/// A middleware returns a stage around `inner`, usually
/// `Pipeline::from_fn(move |req| ...)`. Its answer is a [`crate::Call`]: the
/// inner call's when the stage adds nothing (`inner.call(req)`), a ready
/// one when it can answer without waiting (`Call::ready`), or a future when
/// it must wait (`Call::waiting(async move { .. })`). A stage that only looks
/// at the answer takes it with [`crate::Call::now`] when it is ready and stays
/// ready, so that reads keep passing the chain without an allocation.
pub trait Middleware: Send + Sync + 'static {
    /// Wraps `inner`.
    fn layer(&self, inner: Pipeline) -> Pipeline;
}

/// Builds a middleware.
pub type BuildMiddleware = fn(&MiddlewareContext<'_>) -> Result<Box<dyn Middleware>, PluginError>;

/// Registration of a middleware plugin.
pub struct MiddlewarePlugin {
    /// Name used in `pipeline.middleware`.
    pub name: &'static str,
    /// One line for `--list-plugins`.
    pub description: &'static str,
    /// Builds the middleware.
    pub build: BuildMiddleware,
}
inventory::collect!(MiddlewarePlugin);

// ------------------------------------------------------------------- lookup

/// A plugin kind, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Protocols.
    Protocol,
    /// Policies.
    Policy,
    /// Middleware.
    Middleware,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Protocol => "protocol",
            Kind::Policy => "policy",
            Kind::Middleware => "middleware",
        })
    }
}

/// A name that no plugin registered.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} {name:?}; registered: {}", .valid.join(", "))]
pub struct UnknownPlugin {
    /// The kind looked up.
    pub kind: Kind,
    /// The name asked for.
    pub name: String,
    /// Every registered name of that kind, sorted.
    pub valid: Vec<&'static str>,
}

/// Registered (name, description) pairs of a kind, sorted by name.
pub fn registered(kind: Kind) -> Vec<(&'static str, &'static str)> {
    let mut v: Vec<_> = match kind {
        Kind::Protocol => inventory::iter::<ProtocolPlugin>.into_iter().map(|p| (p.name, p.description)).collect(),
        Kind::Policy => inventory::iter::<PolicyPlugin>.into_iter().map(|p| (p.name, p.description)).collect(),
        Kind::Middleware => inventory::iter::<MiddlewarePlugin>.into_iter().map(|p| (p.name, p.description)).collect(),
    };
    v.sort();
    v
}

fn unknown(kind: Kind, name: &str) -> UnknownPlugin {
    UnknownPlugin { kind, name: name.to_string(), valid: registered(kind).into_iter().map(|(n, _)| n).collect() }
}

/// The protocol registered as `name`.
pub fn find_protocol(name: &str) -> Result<&'static ProtocolPlugin, UnknownPlugin> {
    inventory::iter::<ProtocolPlugin>.into_iter().find(|p| p.name == name).ok_or_else(|| unknown(Kind::Protocol, name))
}

/// The policy registered as `name`.
pub fn find_policy(name: &str) -> Result<&'static PolicyPlugin, UnknownPlugin> {
    inventory::iter::<PolicyPlugin>.into_iter().find(|p| p.name == name).ok_or_else(|| unknown(Kind::Policy, name))
}

/// The middleware registered as `name`.
pub fn find_middleware(name: &str) -> Result<&'static MiddlewarePlugin, UnknownPlugin> {
    inventory::iter::<MiddlewarePlugin>
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| unknown(Kind::Middleware, name))
}

/// Registers a [`ProtocolPlugin`].
#[macro_export]
macro_rules! register_protocol {
    ($plugin:expr) => {
        $crate::inventory::submit! { $plugin }
    };
}

/// Registers a [`PolicyPlugin`].
#[macro_export]
macro_rules! register_policy {
    ($plugin:expr) => {
        $crate::inventory::submit! { $plugin }
    };
}

/// Registers a [`MiddlewarePlugin`].
#[macro_export]
macro_rules! register_middleware {
    ($plugin:expr) => {
        $crate::inventory::submit! { $plugin }
    };
}
