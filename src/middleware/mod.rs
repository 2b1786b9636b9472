//! The built-in middleware plugins, registered like any other plugin:
//! [`auth`], [`metrics`] and [`raft`]. The chain is assembled from
//! `pipeline.middleware` (outermost first) around the [local store
//! executor](local).

pub mod auth;
pub mod local;
pub mod metrics;
pub mod raft;

use futures::future::BoxFuture;
use gerdu_api::tower::util::BoxCloneSyncService;
use gerdu_api::{Pipeline, PipelineError, Request, Response};

/// Wraps an async function as a [`Pipeline`] stage.
pub fn stage<F>(f: F) -> Pipeline
where
    F: Fn(Request) -> BoxFuture<'static, Result<Response, PipelineError>> + Clone + Send + Sync + 'static,
{
    BoxCloneSyncService::new(gerdu_api::tower::service_fn(f))
}
