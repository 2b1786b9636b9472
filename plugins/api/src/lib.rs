//! # gerdu-api — the gerdu plugin SDK
//!
//! Everything a protocol, policy or middleware plugin needs, and nothing of the
//! server core (Cargo forbids the cycle: the core depends on the plugins):
//!
//! ```text
//!  client ─► Protocol ─► Pipeline (stages): auth ─► metrics ─► raft ─► local store ─► Policy
//!            bytes →      Request{ctx, [Command]}                          exec::read / exec::apply
//!            Commands     Response{[Reply]}
//! ```
//!
//! - [`command`] / [`reply`]: the protocol-neutral command model.
//! - [`exec`]: the single implementation of every command's semantics.
//! - [`policy`]: the store trait (map + eviction order + byte accounting).
//! - [`store`]: a sharded store a policy fills in with only its eviction order.
//! - [`image`]: the binary image of a store (raft snapshots, backups).
//! - [`pipeline`]: request/response types and the erased chain of stages (a tower service).
//! - [`plugin`]: plugin traits, registration macros, lookup by name.
//! - [`testkit`]: the conformance kit every policy must pass.

#![warn(missing_docs)]

pub mod clock;
pub mod command;
pub mod cow;
pub mod exec;
pub mod glob;
pub mod image;
pub mod index;
pub mod net;
pub mod pipeline;
pub mod plugin;
pub mod policy;
pub mod reply;
pub mod shared;
pub mod size;
pub mod store;
pub mod testkit;

pub use clock::{Clock, ManualClock, SystemClock};
pub use command::{Command, Condition, Delta, ExpireCondition, Expiry, Key, MetaArith, MetaGet, Op, SetCommand};
pub use pipeline::{
    Call, Credentials, Pipeline, PipelineError, ReadConsistency, Request, RequestContext, Response, Stage,
};
pub use plugin::{
    Admin, AdminError, BackupFile, ClusterView, Config, Extensions, MemberView, Middleware, MiddlewareContext,
    MiddlewarePlugin, NodeStatus, PluginError, PolicyPlugin, Protocol, ProtocolContext, ProtocolPlugin, Running,
};
pub use policy::{Capture, Policy, PolicySettings, PolicyStat, Update};
pub use reply::{CommandError, Item, ItemMeta, ItemRef, ItemValue, Number, Reply, Ttl, Value};

#[doc(hidden)]
pub use inventory;

// Re-exported so plugins use the same versions as the core (and need no
// other dependency than this crate).
pub use bytes;
pub use figment;
pub use futures::future::BoxFuture;
pub use prometheus;
pub use rustls;
pub use tokio;
pub use tokio_util;
pub use tower;

/// One line for a figment error: the key path and what is wrong with it.
pub fn config_error_line(e: &figment::Error) -> String {
    let key = if e.path.is_empty() { String::new() } else { format!("{}: ", e.path.join(".")) };
    // Parser messages come with a multi-line source snippet; keep the words.
    let kind = e.kind.to_string();
    let words: Vec<&str> = kind
        .lines()
        .map(str::trim)
        .filter(|l| {
            let gutter = l.trim_start_matches(|c: char| c.is_ascii_digit()).trim_start();
            !l.is_empty() && !gutter.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect();
    format!("{key}{}", words.join(": "))
}
