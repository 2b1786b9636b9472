//! The request pipeline: protocol-neutral requests through a chain of stages.
//!
//! A protocol plugin turns wire bytes into a [`Request`] — a *batch* of
//! [`Command`]s (one HTTP request is a batch of one; a Redis pipeline read in
//! one go is a batch of many) — and calls the shared [`Pipeline`]. The chain
//! (auth → metrics → raft → local store, order from config) answers one
//! [`Reply`] per command, in order. Batches are the unit of work all the way
//! down: the raft layer proposes the writes of a batch as one log entry and
//! obtains one read index for its reads.
//!
//! Each stage is a [`Stage`] erased behind an `Arc` ([`Pipeline`]), called
//! by reference; its answer is a [`Call`]: ready at once when the stage did
//! not have to wait, else a boxed future. A read on a leader is answered by
//! the store synchronously and every stage around it passes the ready answer
//! on, so it costs no allocation or task switch on its way through the
//! chain; only the stages that wait (a proposal, a read index, a forward)
//! allocate their future. A `Pipeline` is also a [`tower::Service`], and
//! [`Pipeline::from_service`] makes any tower service a stage.

use std::future::Future;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::clock::Moment;
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
    /// When the protocol received the request (for latency metrics): the
    /// end of the read that brought it in.
    pub received: Moment,
}

impl RequestContext {
    /// A context for `protocol` without credentials, received now.
    pub fn new(protocol: &'static str) -> Self {
        Self::received_at(protocol, Moment::now())
    }

    /// A context for `protocol` without credentials, received at `received`
    /// (a connection reads the clock once per read, not once per request).
    pub fn received_at(protocol: &'static str, received: Moment) -> Self {
        RequestContext { protocol, credentials: None, consistency: None, received }
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

    /// Takes a connection's gathered commands for a request, leaving an
    /// empty vector with room for as many: a pipelining client's next
    /// request (usually as long) then costs one allocation, not one per
    /// doubling (three for 16 commands).
    pub fn take_commands(gathered: &mut Vec<Command>) -> Vec<Command> {
        let n = gathered.len();
        std::mem::replace(gathered, Vec::with_capacity(n))
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

/// A boxed future of a stage's answer.
pub type BoxedCall = futures::future::BoxFuture<'static, Result<Response, PipelineError>>;

/// What calling a stage gives back: the answer at once, or a future of it.
///
/// A stage that can answer without waiting (the local store's reads, a read
/// on a sole voter, a refused login) returns [`Call::Ready`], and so do the
/// stages around it that only look at the answer: a read then costs no
/// allocation or task switch between the protocol and the store. A stage
/// that must wait (a write's proposal, a read index, a forward to the
/// leader) returns [`Call::Waiting`]. Either way the `Call` is a future;
/// awaiting it gives the answer.
#[must_use = "a Call does nothing unless its answer is awaited or taken"]
pub enum Call {
    /// The answer (taken once, by the first poll or [`Call::now`]).
    Ready(Option<Result<Response, PipelineError>>),
    /// The answer, later.
    Waiting(BoxedCall),
}

impl Call {
    /// An answer now.
    pub fn ready(result: Result<Response, PipelineError>) -> Self {
        Call::Ready(Some(result))
    }

    /// An answer later.
    pub fn waiting(future: impl Future<Output = Result<Response, PipelineError>> + Send + 'static) -> Self {
        Call::Waiting(Box::pin(future))
    }

    /// The answer if it is here, else the call back to wait for.
    pub fn now(self) -> Result<Result<Response, PipelineError>, Call> {
        match self {
            Call::Ready(Some(result)) => Ok(result),
            other => Err(other),
        }
    }
}

impl Future for Call {
    type Output = Result<Response, PipelineError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match self.get_mut() {
            Call::Ready(result) => std::task::Poll::Ready(result.take().expect("a Call polled after its answer")),
            Call::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

/// One stage of the pipeline, erased: answers a request, now or later.
///
/// Implemented for every `Fn(Request) -> Call`; a middleware builds its
/// stage with [`Pipeline::from_fn`] around the inner [`Pipeline`].
pub trait Stage: Send + Sync + 'static {
    /// Answers `request` (the replies in order, or why the whole request failed).
    fn call(&self, request: Request) -> Call;
}

impl<F> Stage for F
where
    F: Fn(Request) -> Call + Send + Sync + 'static,
{
    fn call(&self, request: Request) -> Call {
        self(request)
    }
}

/// The erased, cloneable pipeline every protocol receives: the chain of
/// stages, called by reference (a clone is an `Arc`).
///
/// It is a [`tower::Service`] (always ready), so tower layers and utilities
/// apply to it, and any tower service becomes a stage with
/// [`Pipeline::from_service`].
#[derive(Clone)]
pub struct Pipeline(Arc<dyn Stage>);

impl Pipeline {
    /// A pipeline of one stage.
    pub fn new(stage: impl Stage) -> Self {
        Pipeline(Arc::new(stage))
    }

    /// A stage from a function of the request.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(Request) -> Call + Send + Sync + 'static,
    {
        Pipeline::new(f)
    }

    /// A stage from any tower service: each request is served by a clone
    /// of it once it is ready (`clone().oneshot(..)`, as tower's shared
    /// services are used).
    pub fn from_service<S>(service: S) -> Self
    where
        S: tower::Service<Request, Response = Response, Error = PipelineError> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        use tower::ServiceExt;
        Pipeline::from_fn(move |request| Call::waiting(service.clone().oneshot(request)))
    }

    /// Calls the pipeline once.
    pub fn call(&self, request: Request) -> Call {
        self.0.call(request)
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pipeline")
    }
}

impl tower::Service<Request> for Pipeline {
    type Response = Response;
    type Error = PipelineError;
    type Future = Call;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), PipelineError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Call {
        Stage::call(&*self.0, request)
    }
}

/// Calls a pipeline once.
pub async fn call(pipeline: &Pipeline, request: Request) -> Result<Response, PipelineError> {
    pipeline.call(request).await
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
    async fn a_tower_service_stage_waits_for_readiness_and_reports_its_errors() {
        use std::sync::atomic::Ordering;
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pipeline = Pipeline::from_service(Reluctant { polls: polls.clone(), fail: false });
        let request = || Request { ctx: RequestContext::new("test"), commands: vec![Command::Size, Command::Size] };
        // Not ready at first: answered once it was.
        let first = pipeline.call(request()).await.expect("answered");
        assert_eq!(first.replies, vec![Reply::Count(2)]);
        assert_eq!(polls.load(Ordering::SeqCst), 2, "polled again after pending");
        assert_eq!(pipeline.call(request()).await.expect("answered").replies, vec![Reply::Count(2)]);
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        let failing = Pipeline::from_service(Reluctant { polls, fail: true });
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
