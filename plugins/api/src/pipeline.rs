//! The request pipeline: protocol-neutral requests through a tower chain.
//!
//! A protocol plugin turns wire bytes into a [`Request`] — a *batch* of
//! [`Command`]s (one HTTP request is a batch of one; a Redis pipeline read in
//! one go is a batch of many) — and calls the shared [`Pipeline`]. The chain
//! (auth → metrics → raft → local store, order from config) answers one
//! [`Reply`] per command, in order. Batches are the unit of work all the way
//! down: the raft layer proposes the writes of a batch as one log entry and
//! obtains one read index for its reads.

use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tower::util::BoxCloneSyncService;

use crate::command::Command;
use crate::reply::Reply;

/// What a client presented to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// A user name (or none, for a `requirepass`-style password) and password.
    Password {
        /// The user, if the protocol names one.
        user: Option<String>,
        /// The password.
        password: String,
    },
    /// A bearer token.
    Token(String),
}

impl Credentials {
    /// Parses an `Authorization` value (HTTP header, gRPC metadata):
    /// `Bearer <token>` or `Basic <base64(user:password)>`, schemes
    /// case-insensitive. `None` for anything else.
    pub fn from_authorization(value: &str) -> Option<Credentials> {
        use base64::Engine;
        let (scheme, rest) = value.trim().split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return (!rest.is_empty()).then(|| Credentials::Token(rest.to_string()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (user, password) = decoded.split_once(':')?;
            return Some(Credentials::Password { user: Some(user.to_string()), password: password.to_string() });
        }
        None
    }
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadConsistency {
    /// Linearizable: served after a read index confirmed by a quorum (batched).
    #[default]
    Linearizable,
    /// Served from the leader's state without a quorum round.
    Leader,
    /// Served from any node's local state; may be stale.
    Local,
}

impl std::str::FromStr for ReadConsistency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "linearizable" => Ok(Self::Linearizable),
            "leader" => Ok(Self::Leader),
            "local" => Ok(Self::Local),
            other => Err(format!("unknown read consistency {other:?} (linearizable, leader, local)")),
        }
    }
}

/// Per-request facts the middleware needs.
#[derive(Clone, Debug)]
pub struct RequestContext {
    /// Name of the protocol plugin that received the request.
    pub protocol: &'static str,
    /// Credentials presented, if any.
    pub credentials: Option<Arc<Credentials>>,
    /// Read consistency asked by the client; `None` uses the configured default.
    pub consistency: Option<ReadConsistency>,
    /// When the protocol finished parsing the request (for latency metrics).
    pub received: Instant,
}

impl RequestContext {
    /// A context for `protocol` without credentials, received now.
    pub fn new(protocol: &'static str) -> Self {
        RequestContext { protocol, credentials: None, consistency: None, received: Instant::now() }
    }
}

/// A batch of commands from one client.
#[derive(Clone, Debug)]
pub struct Request {
    /// Who sent it, how.
    pub ctx: RequestContext,
    /// The commands, executed in order.
    pub commands: Vec<Command>,
}

impl Request {
    /// A request of one command.
    pub fn single(ctx: RequestContext, command: Command) -> Self {
        Request { ctx, commands: vec![command] }
    }
}

/// The replies, one per command, in order.
#[derive(Clone, Debug, Default)]
pub struct Response {
    /// Replies aligned with [`Request::commands`].
    pub replies: Vec<Reply>,
}

/// Why a whole request failed (as opposed to one command's [`Reply::Error`]).
/// `Serialize` because it travels back from the leader to the node that
/// forwarded a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PipelineError {
    /// No or wrong credentials while auth is on.
    #[error("authentication required")]
    Unauthenticated,
    /// Credentials were presented and are wrong.
    #[error("invalid username-password pair or user is disabled")]
    BadCredentials,
    /// No leader could be reached within the configured wait.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// The server is shutting down.
    #[error("server is shutting down")]
    ShuttingDown,
    /// Anything else; logged by the server.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The erased, cloneable pipeline every protocol receives.
pub type Pipeline = BoxCloneSyncService<Request, Response, PipelineError>;

/// Calls a pipeline once (waits for readiness first).
pub async fn call(pipeline: &Pipeline, request: Request) -> Result<Response, PipelineError> {
    use tower::ServiceExt;
    pipeline.clone().oneshot(request).await
}

/// A pipeline called by reference, without cloning it per call.
///
/// [`call`] clones the pipeline for every request, as tower's shared
/// services are used (`clone().oneshot(..)`), and a clone of a boxed stage
/// clones every stage inside it: a box each. A connection loop or a stage
/// that calls its inner pipeline for every request holds it in a
/// `SharedPipeline` instead, which is an `Arc` to clone, and calls it under
/// a short lock: readiness is polled there, and when the service is ready
/// (the stages of the chain always are) `call` only makes its future under
/// the lock; a service that is not ready is cloned and awaited as [`call`]
/// does. The lock is held only while the future is made, never across an
/// `.await`; a service must not call the same `SharedPipeline` from its
/// `call` (the future it returns may).
#[derive(Clone)]
pub struct SharedPipeline(Arc<parking_lot::Mutex<Pipeline>>);

enum Started {
    Running(futures::future::BoxFuture<'static, Result<Response, PipelineError>>),
    Failed(PipelineError),
    NotReady(Pipeline, Request),
}

impl SharedPipeline {
    /// Shares `pipeline`.
    pub fn new(pipeline: Pipeline) -> Self {
        SharedPipeline(Arc::new(parking_lot::Mutex::new(pipeline)))
    }

    fn start(&self, request: Request) -> Started {
        use tower::Service;
        let mut pipeline = self.0.lock();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match pipeline.poll_ready(&mut cx) {
            std::task::Poll::Ready(Ok(())) => Started::Running(pipeline.call(request)),
            std::task::Poll::Ready(Err(e)) => Started::Failed(e),
            std::task::Poll::Pending => Started::NotReady(pipeline.clone(), request),
        }
    }

    /// Calls the pipeline once.
    pub async fn call(&self, request: Request) -> Result<Response, PipelineError> {
        match self.start(request) {
            Started::Running(future) => future.await,
            Started::Failed(e) => Err(e),
            Started::NotReady(pipeline, request) => {
                use tower::ServiceExt;
                pipeline.oneshot(request).await
            }
        }
    }
}

/// Asks the pipeline whether `credentials` are accepted, with an empty
/// request (the auth middleware judges it; nothing else runs). Protocols call
/// this for their login commands (`AUTH`, memcached's ascii auth).
pub async fn check_credentials(
    pipeline: &Pipeline,
    mut ctx: RequestContext,
    credentials: Arc<Credentials>,
) -> Result<(), PipelineError> {
    ctx.credentials = Some(credentials);
    ctx.consistency = Some(ReadConsistency::Local);
    call(pipeline, Request { ctx, commands: Vec::new() }).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that is not ready at its first poll, then is; or that
    /// fails its readiness.
    #[derive(Clone)]
    struct Reluctant {
        polls: Arc<std::sync::atomic::AtomicUsize>,
        fail: bool,
    }

    impl tower::Service<Request> for Reluctant {
        type Response = Response;
        type Error = PipelineError;
        type Future = futures::future::BoxFuture<'static, Result<Response, PipelineError>>;

        fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), PipelineError>> {
            use std::sync::atomic::Ordering;
            if self.fail {
                return std::task::Poll::Ready(Err(PipelineError::ShuttingDown));
            }
            if self.polls.fetch_add(1, Ordering::SeqCst) == 0 {
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: Request) -> Self::Future {
            Box::pin(async move { Ok(Response { replies: vec![Reply::Count(req.commands.len() as u64)] }) })
        }
    }

    #[tokio::test]
    async fn shared_pipeline_waits_for_readiness_and_reports_its_errors() {
        use std::sync::atomic::Ordering;
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let shared = SharedPipeline::new(BoxCloneSyncService::new(Reluctant { polls: polls.clone(), fail: false }));
        let request = || Request { ctx: RequestContext::new("test"), commands: vec![Command::Size, Command::Size] };
        // Not ready at first: answered through a clone that waited.
        let first = shared.call(request()).await.expect("answered");
        assert_eq!(first.replies, vec![Reply::Count(2)]);
        assert_eq!(polls.load(Ordering::SeqCst), 2, "polled again after pending");
        // Ready now: answered in place.
        assert_eq!(shared.call(request()).await.expect("answered").replies, vec![Reply::Count(2)]);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        let failing = SharedPipeline::new(BoxCloneSyncService::new(Reluctant { polls, fail: true }));
        assert_eq!(failing.call(request()).await.unwrap_err(), PipelineError::ShuttingDown);
    }

    #[test]
    fn authorization_values() {
        assert_eq!(Credentials::from_authorization("Bearer abc"), Some(Credentials::Token("abc".into())));
        assert_eq!(Credentials::from_authorization("bearer  abc "), Some(Credentials::Token("abc".into())));
        // base64("alice:won:der") — the password may hold colons.
        assert_eq!(
            Credentials::from_authorization("Basic YWxpY2U6d29uOmRlcg=="),
            Some(Credentials::Password { user: Some("alice".into()), password: "won:der".into() })
        );
        assert_eq!(Credentials::from_authorization("Bearer "), None);
        assert_eq!(Credentials::from_authorization("Basic !!!"), None);
        assert_eq!(Credentials::from_authorization("Digest x"), None);
        assert_eq!(Credentials::from_authorization("token"), None);
    }
}
