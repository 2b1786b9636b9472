//! The built-in middleware plugins, registered like any other plugin:
//! [`auth`], [`metrics`] and [`raft`]. The chain is assembled from
//! `pipeline.middleware` (outermost first) around the [local store
//! executor](local). Each stage is a [`gerdu_api::Pipeline::from_fn`] that
//! answers at once when it need not wait ([`gerdu_api::Call::Ready`]), so a
//! read on a leader passes the whole chain without an allocation.

pub mod auth;
pub mod local;
pub mod metrics;
pub mod raft;
