//! The `gerdu.Gerdu` service: gRPC messages ↔ the command model.
//!
//! Every operation — unary, inside `MultiPut`, or on the `Pipeline` stream —
//! goes through one translation ([`Service::translate`]) and one answer
//! mapping ([`answer`]), so the same request gets the same status whichever
//! way it arrives. A unary call is a pipeline request of one command;
//! `MultiGet`/`MultiDelete` are one multi-key command; `MultiPut` and a
//! stream batch are one request of many commands (one raft entry for their
//! writes).
//!
//! Metadata: `authorization` (`Bearer <token>` or `Basic <base64>`, judged
//! by the auth middleware) and `gerdu-consistency` (`linearizable`,
//! `leader`, `local`) for the reads of one call.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use gerdu_api::clock::Moment;
use gerdu_api::tokio_util::sync::CancellationToken;
use gerdu_api::{
    Admin, Clock, Command, CommandError, Condition, Credentials, Delta, ExpireCondition, Expiry, Item, Number,
    Pipeline, PipelineError, ReadConsistency, Reply, Request, RequestContext, SetCommand,
};
use tonic::{Code, Status};

use crate::pb::{self, operation, operation_result};

const PROTOCOL: &str = "grpc";

/// Most operations of a `Pipeline` stream executed as one batch.
const MAX_STREAM_BATCH: usize = 1024;

/// Size limits checked on every key and value.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest key in bytes.
    pub max_key: usize,
    /// Largest value in bytes.
    pub max_value: usize,
}

/// The service implementation; cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    pipeline: Pipeline,
    admin: Arc<dyn Admin>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    /// Cancelled when the server drains: open `Pipeline` streams end.
    shutdown: CancellationToken,
}

/// What an operation was, to map its reply.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Get,
    Put(Condition),
    Delete,
    Increment,
    Touch,
}

/// One operation: either a command to run or an answer known without running.
enum Step {
    Run(Kind, Command),
    Failed(Status),
}

impl Service {
    /// A service over `pipeline`.
    pub fn new(
        pipeline: Pipeline,
        admin: Arc<dyn Admin>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Self {
        Service { inner: Arc::new(Inner { pipeline, admin, clock, limits, shutdown }) }
    }

    fn key(&self, key: String) -> Result<Bytes, Status> {
        if key.is_empty() {
            return Err(Status::invalid_argument("key is empty"));
        }
        if key.len() > self.inner.limits.max_key {
            return Err(Status::resource_exhausted(format!(
                "key of {} bytes is over the limit of {} bytes (grpc.max_key_size)",
                key.len(),
                self.inner.limits.max_key
            )));
        }
        Ok(Bytes::from(key))
    }

    fn keys(&self, keys: Vec<String>) -> Result<Vec<Bytes>, Status> {
        keys.into_iter().map(|k| self.key(k)).collect()
    }

    fn set_command(&self, p: pb::PutRequest) -> Result<(Kind, Command), Status> {
        let key = self.key(p.key)?;
        if p.value.len() > self.inner.limits.max_value {
            return Err(Status::resource_exhausted(format!(
                "value of {} bytes is over the limit of {} bytes (grpc.max_value_size)",
                p.value.len(),
                self.inner.limits.max_value
            )));
        }
        let condition = match pb::Condition::try_from(p.condition) {
            Ok(pb::Condition::Always) => Condition::Always,
            Ok(pb::Condition::IfAbsent) => Condition::IfAbsent,
            Ok(pb::Condition::IfPresent) => Condition::IfPresent,
            Ok(pb::Condition::IfCas) => Condition::IfCas(p.cas),
            Err(_) => return Err(Status::invalid_argument(format!("unknown condition {}", p.condition))),
        };
        if p.cas != 0 && !matches!(condition, Condition::IfCas(_)) {
            return Err(Status::invalid_argument("cas is set but condition is not CONDITION_IF_CAS"));
        }
        let set = SetCommand { flags: p.flags, expiry: ttl(p.ttl_ms), condition, ..SetCommand::new(key, p.value) };
        Ok((Kind::Put(condition), Command::Set(set)))
    }

    /// The command an operation runs.
    fn translate(&self, op: operation::Op) -> Result<(Kind, Command), Status> {
        Ok(match op {
            operation::Op::Get(g) => (Kind::Get, Command::Get { keys: vec![self.key(g.key)?] }),
            operation::Op::Put(p) => return self.set_command(p),
            operation::Op::Delete(d) => (Kind::Delete, Command::Delete { keys: vec![self.key(d.key)?] }),
            operation::Op::Increment(i) => {
                let delta = Delta::Signed(i.delta.unwrap_or(1));
                (Kind::Increment, Command::Incr { key: self.key(i.key)?, delta })
            }
            operation::Op::Touch(t) => {
                let key = self.key(t.key)?;
                (Kind::Touch, Command::Touch { key, expiry: ttl(t.ttl_ms), condition: ExpireCondition::Always })
            }
        })
    }

    fn step(&self, op: Option<operation::Op>) -> Step {
        match op.map(|op| self.translate(op)) {
            Some(Ok((kind, cmd))) => Step::Run(kind, cmd),
            Some(Err(status)) => Step::Failed(status),
            None => Step::Failed(Status::invalid_argument("operation has no op set")),
        }
    }

    async fn run(&self, ctx: RequestContext, commands: Vec<Command>) -> Result<Vec<Reply>, Status> {
        let response = gerdu_api::pipeline::call(&self.inner.pipeline, Request { ctx, commands })
            .await
            .map_err(pipeline_status)?;
        Ok(response.replies)
    }

    async fn one(&self, ctx: RequestContext, command: Command) -> Result<Reply, Status> {
        let mut replies = self.run(ctx, vec![command]).await?;
        replies.pop().ok_or_else(|| Status::internal("the pipeline answered no reply"))
    }

    /// Runs steps as one request; answers one result per step, in order.
    /// Only a failed authentication fails the whole batch.
    async fn run_steps(
        &self,
        ctx: RequestContext,
        steps: Vec<Step>,
    ) -> Result<Vec<Result<operation_result::Result, Status>>, Status> {
        let mut kinds = Vec::with_capacity(steps.len());
        let mut commands = Vec::with_capacity(steps.len());
        let mut failed: Vec<Option<Status>> = Vec::with_capacity(steps.len());
        for step in steps {
            match step {
                Step::Run(kind, cmd) => {
                    kinds.push(kind);
                    commands.push(cmd);
                    failed.push(None);
                }
                Step::Failed(status) => failed.push(Some(status)),
            }
        }
        let replies = match commands.is_empty() {
            true => Ok(Vec::new()),
            false => match gerdu_api::pipeline::call(&self.inner.pipeline, Request { ctx, commands }).await {
                Ok(response) => Ok(response.replies),
                Err(e @ (PipelineError::Unauthenticated | PipelineError::BadCredentials)) => {
                    return Err(pipeline_status(e));
                }
                Err(e) => Err(pipeline_status(e)),
            },
        };
        let now = self.inner.clock.now_ms();
        let mut answers = match &replies {
            Ok(r) => r.iter().zip(&kinds).map(|(reply, kind)| answer(*kind, reply, now)).collect::<Vec<_>>(),
            Err(status) => kinds.iter().map(|_| Err(status.clone())).collect(),
        }
        .into_iter();
        Ok(failed
            .into_iter()
            .map(|f| match f {
                Some(status) => Err(status),
                None => {
                    answers.next().unwrap_or_else(|| Err(Status::internal("the pipeline answered too few replies")))
                }
            })
            .collect())
    }

    async fn unary(&self, ctx: RequestContext, op: operation::Op) -> Result<operation_result::Result, Status> {
        let (kind, command) = self.translate(op)?;
        let reply = self.one(ctx, command).await?;
        answer(kind, &reply, self.inner.clock.now_ms())
    }
}

/// The request context of a call, from its metadata.
fn context<T>(req: &tonic::Request<T>) -> Result<RequestContext, Status> {
    let mut ctx = RequestContext::new(PROTOCOL);
    if let Some(value) = req.metadata().get("authorization") {
        let creds = value.to_str().ok().and_then(Credentials::from_authorization).ok_or_else(|| {
            Status::unauthenticated("authorization: expected \"Bearer <token>\" or \"Basic <base64 user:password>\"")
        })?;
        ctx.credentials = Some(Arc::new(creds));
    }
    if let Some(value) = req.metadata().get("gerdu-consistency") {
        let parsed = value.to_str().map_err(|e| e.to_string()).and_then(|v| v.parse::<ReadConsistency>());
        ctx.consistency = Some(parsed.map_err(|e| Status::invalid_argument(format!("gerdu-consistency: {e}")))?);
    }
    Ok(ctx)
}

fn ttl(ms: u64) -> Expiry {
    if ms == 0 { Expiry::Never } else { Expiry::In(ms) }
}

/// Milliseconds an item has left; -1 when it never expires.
fn ttl_left(item: &Item, now_ms: u64) -> i64 {
    if item.expires_at == 0 { -1 } else { item.expires_at.saturating_sub(now_ms).min(i64::MAX as u64) as i64 }
}

fn get_response(item: &Item, now_ms: u64) -> pb::GetResponse {
    pb::GetResponse { value: item.value.clone(), cas: item.cas, ttl_ms: ttl_left(item, now_ms), flags: item.flags }
}

fn not_found() -> Status {
    Status::not_found("key not found")
}

/// The status of a whole failed request.
fn pipeline_status(e: PipelineError) -> Status {
    match e {
        PipelineError::Unauthenticated | PipelineError::BadCredentials => Status::unauthenticated(e.to_string()),
        PipelineError::Unavailable(_) | PipelineError::ShuttingDown => Status::unavailable(e.to_string()),
        PipelineError::Internal(_) => {
            tracing::error!("grpc: {e}");
            Status::internal(e.to_string())
        }
    }
}

fn command_status(e: &CommandError) -> Status {
    let code = match e {
        CommandError::NotInteger | CommandError::NonNumeric | CommandError::NotFloat => Code::FailedPrecondition,
        CommandError::Overflow | CommandError::NanOrInfinity => Code::OutOfRange,
        CommandError::NoSuchKey => Code::NotFound,
        CommandError::TooLarge => Code::ResourceExhausted,
        CommandError::Refused(_) => Code::FailedPrecondition,
    };
    Status::new(code, e.to_string())
}

/// Maps a reply to the operation's result or status.
fn answer(kind: Kind, reply: &Reply, now_ms: u64) -> Result<operation_result::Result, Status> {
    use operation_result::Result as R;
    if let Reply::Error(e) = reply {
        return Err(command_status(e));
    }
    match (kind, reply) {
        (Kind::Get, Reply::Values(items)) => match items.first() {
            Some(Some(item)) => Ok(R::Get(get_response(item, now_ms))),
            _ => Err(not_found()),
        },
        (Kind::Put(_), Reply::Stored { created, cas, .. }) => {
            Ok(R::Put(pb::PutResponse { created: *created, cas: *cas }))
        }
        (Kind::Put(Condition::IfAbsent), Reply::NotStored { .. }) => Err(Status::already_exists("key exists")),
        (Kind::Put(_), Reply::NotStored { .. } | Reply::NotFound) => Err(not_found()),
        (Kind::Put(_), Reply::Exists) => Err(Status::aborted("cas mismatch: the key was changed")),
        (Kind::Delete, Reply::Count(n)) => {
            if *n > 0 {
                Ok(R::Delete(pb::DeleteResponse { deleted: true }))
            } else {
                Err(not_found())
            }
        }
        (Kind::Increment, Reply::Number(Number::Signed(v))) => Ok(R::Increment(pb::IncrementResponse { value: *v })),
        (Kind::Touch, Reply::Bool(true)) => Ok(R::Touch(pb::TouchResponse {})),
        (Kind::Touch, Reply::Bool(false)) => Err(not_found()),
        (kind, reply) => Err(Status::internal(format!("unexpected reply {reply:?} to {kind:?}"))),
    }
}

fn result_status(r: Result<(), &Status>) -> Option<pb::Status> {
    match r {
        Ok(()) => Some(pb::Status { code: 0, message: String::new() }),
        Err(s) => Some(pb::Status { code: s.code() as i32, message: s.message().to_string() }),
    }
}

macro_rules! unwrap_result {
    ($r:expr, $variant:ident) => {
        match $r {
            operation_result::Result::$variant(v) => Ok(tonic::Response::new(v)),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    };
}

/// State of one `Pipeline` stream.
struct StreamState {
    service: Service,
    ctx: RequestContext,
    inbound: tonic::Streaming<pb::Operation>,
    pending: VecDeque<pb::OperationResult>,
    /// The client finished sending, or the stream failed (`error` holds why).
    ended: bool,
    error: Option<Status>,
}

impl StreamState {
    /// Reads the operations that have arrived (waiting for the first),
    /// executes them as one batch and queues their results. `Err` ends the
    /// stream with that status.
    async fn next_batch(&mut self) -> Result<(), Status> {
        let next = tokio::select! {
            next = self.inbound.next() => next,
            _ = self.service.inner.shutdown.cancelled() => {
                return Err(Status::unavailable(PipelineError::ShuttingDown.to_string()));
            }
        };
        let first = match next {
            Some(Ok(op)) => op,
            Some(Err(status)) => return Err(decode_status(status)),
            None => {
                self.ended = true;
                return Ok(());
            }
        };
        let mut ops = vec![first];
        while ops.len() < MAX_STREAM_BATCH {
            match self.inbound.next().now_or_never() {
                Some(Some(Ok(op))) => ops.push(op),
                Some(Some(Err(status))) => {
                    self.ended = true;
                    self.error = Some(decode_status(status));
                    break;
                }
                Some(None) => {
                    self.ended = true;
                    break;
                }
                None => break,
            }
        }
        let ids: Vec<u64> = ops.iter().map(|op| op.id).collect();
        let steps = ops.into_iter().map(|op| self.service.step(op.op)).collect();
        let ctx = RequestContext { received: Moment::now(), ..self.ctx.clone() };
        let results = self.service.run_steps(ctx, steps).await?;
        self.pending.extend(ids.into_iter().zip(results).map(|(id, r)| match r {
            Ok(result) => pb::OperationResult { id, status: result_status(Ok(())), result: Some(result) },
            Err(status) => pb::OperationResult { id, status: result_status(Err(&status)), result: None },
        }));
        Ok(())
    }
}

/// tonic reports a message over the decoding limit as OUT_OF_RANGE; gerdu's
/// contract (like grpc-go's) is RESOURCE_EXHAUSTED for every size limit.
pub(crate) fn decode_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        Status::resource_exhausted(status.message().to_string())
    } else {
        status
    }
}

#[tonic::async_trait]
impl pb::gerdu_server::Gerdu for Service {
    async fn put(&self, request: tonic::Request<pb::PutRequest>) -> Result<tonic::Response<pb::PutResponse>, Status> {
        let ctx = context(&request)?;
        unwrap_result!(self.unary(ctx, operation::Op::Put(request.into_inner())).await?, Put)
    }

    async fn get(&self, request: tonic::Request<pb::GetRequest>) -> Result<tonic::Response<pb::GetResponse>, Status> {
        let ctx = context(&request)?;
        unwrap_result!(self.unary(ctx, operation::Op::Get(request.into_inner())).await?, Get)
    }

    async fn delete(
        &self,
        request: tonic::Request<pb::DeleteRequest>,
    ) -> Result<tonic::Response<pb::DeleteResponse>, Status> {
        let ctx = context(&request)?;
        unwrap_result!(self.unary(ctx, operation::Op::Delete(request.into_inner())).await?, Delete)
    }

    async fn multi_get(
        &self,
        request: tonic::Request<pb::MultiGetRequest>,
    ) -> Result<tonic::Response<pb::MultiGetResponse>, Status> {
        let ctx = context(&request)?;
        let names = request.into_inner().keys;
        if names.is_empty() {
            return Ok(tonic::Response::new(pb::MultiGetResponse { entries: Vec::new() }));
        }
        let keys = self.keys(names.clone())?;
        let reply = self.one(ctx, Command::Get { keys }).await?;
        let Reply::Values(items) = reply else {
            return Err(match reply {
                Reply::Error(e) => command_status(&e),
                other => Status::internal(format!("unexpected reply {other:?} to MultiGet")),
            });
        };
        let now = self.inner.clock.now_ms();
        let entries = names
            .into_iter()
            .zip(items)
            .map(|(key, item)| match item {
                Some(item) => {
                    let g = get_response(&item, now);
                    pb::Entry { key, found: true, value: g.value, cas: g.cas, ttl_ms: g.ttl_ms, flags: g.flags }
                }
                None => pb::Entry { key, ..Default::default() },
            })
            .collect();
        Ok(tonic::Response::new(pb::MultiGetResponse { entries }))
    }

    async fn multi_put(
        &self,
        request: tonic::Request<pb::MultiPutRequest>,
    ) -> Result<tonic::Response<pb::MultiPutResponse>, Status> {
        let ctx = context(&request)?;
        let steps = request.into_inner().items.into_iter().map(|p| self.step(Some(operation::Op::Put(p)))).collect();
        let results = self
            .run_steps(ctx, steps)
            .await?
            .into_iter()
            .map(|r| match r {
                Ok(operation_result::Result::Put(p)) => {
                    pb::PutResult { status: result_status(Ok(())), created: p.created, cas: p.cas }
                }
                Ok(other) => {
                    let status = Status::internal(format!("unexpected result {other:?}"));
                    pb::PutResult { status: result_status(Err(&status)), ..Default::default() }
                }
                Err(status) => pb::PutResult { status: result_status(Err(&status)), ..Default::default() },
            })
            .collect();
        Ok(tonic::Response::new(pb::MultiPutResponse { results }))
    }

    async fn multi_delete(
        &self,
        request: tonic::Request<pb::MultiDeleteRequest>,
    ) -> Result<tonic::Response<pb::MultiDeleteResponse>, Status> {
        let ctx = context(&request)?;
        let keys = self.keys(request.into_inner().keys)?;
        if keys.is_empty() {
            return Ok(tonic::Response::new(pb::MultiDeleteResponse { deleted: 0 }));
        }
        match self.one(ctx, Command::Delete { keys }).await? {
            Reply::Count(n) => Ok(tonic::Response::new(pb::MultiDeleteResponse { deleted: n })),
            Reply::Error(e) => Err(command_status(&e)),
            other => Err(Status::internal(format!("unexpected reply {other:?} to MultiDelete"))),
        }
    }

    async fn increment(
        &self,
        request: tonic::Request<pb::IncrementRequest>,
    ) -> Result<tonic::Response<pb::IncrementResponse>, Status> {
        let ctx = context(&request)?;
        unwrap_result!(self.unary(ctx, operation::Op::Increment(request.into_inner())).await?, Increment)
    }

    async fn touch(
        &self,
        request: tonic::Request<pb::TouchRequest>,
    ) -> Result<tonic::Response<pb::TouchResponse>, Status> {
        let ctx = context(&request)?;
        unwrap_result!(self.unary(ctx, operation::Op::Touch(request.into_inner())).await?, Touch)
    }

    type PipelineStream = BoxStream<'static, Result<pb::OperationResult, Status>>;

    async fn pipeline(
        &self,
        request: tonic::Request<tonic::Streaming<pb::Operation>>,
    ) -> Result<tonic::Response<Self::PipelineStream>, Status> {
        let ctx = context(&request)?;
        let state = StreamState {
            service: self.clone(),
            ctx,
            inbound: request.into_inner(),
            pending: VecDeque::new(),
            ended: false,
            error: None,
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(result) = st.pending.pop_front() {
                    return Some((Ok(result), st));
                }
                if let Some(status) = st.error.take() {
                    return Some((Err(status), st));
                }
                if st.ended {
                    return None;
                }
                if let Err(status) = st.next_batch().await {
                    st.ended = true;
                    return Some((Err(status), st));
                }
            }
        });
        Ok(tonic::Response::new(stream.boxed()))
    }

    async fn cluster_status(
        &self,
        request: tonic::Request<pb::ClusterStatusRequest>,
    ) -> Result<tonic::Response<pb::ClusterStatusResponse>, Status> {
        // Auth applies as for data: the pipeline judges an empty request.
        let ctx = RequestContext { consistency: Some(ReadConsistency::Local), ..context(&request)? };
        self.run(ctx, Vec::new()).await?;
        let s = self.inner.admin.status();
        Ok(tonic::Response::new(pb::ClusterStatusResponse {
            id: s.id,
            role: s.role,
            leader: s.leader.unwrap_or_default(),
            term: s.term,
            applied_index: s.applied_index,
            members: s.members.into_iter().map(|(id, addr)| pb::Member { id, addr }).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use gerdu_api::{AdminError, NodeStatus, SystemClock};
    use pb::gerdu_server::Gerdu;

    use super::*;

    struct NoAdmin;

    impl Admin for NoAdmin {
        fn metrics_text(&self) -> String {
            String::new()
        }
        fn status(&self) -> NodeStatus {
            NodeStatus {
                id: "n".into(),
                role: "candidate".into(),
                leader: None,
                term: 1,
                applied_index: 0,
                members: Vec::new(),
            }
        }
        fn join(&self, _: String, _: String) -> futures::future::BoxFuture<'static, Result<(), AdminError>> {
            Box::pin(async { Err(AdminError::NotImplemented("no".into())) })
        }
        fn leave(&self, _: String) -> futures::future::BoxFuture<'static, Result<(), AdminError>> {
            Box::pin(async { Err(AdminError::NotImplemented("no".into())) })
        }
        fn cluster(&self) -> futures::future::BoxFuture<'static, gerdu_api::ClusterView> {
            unimplemented!("not used by these tests")
        }
    }

    /// A service whose pipeline fails every request with `error`.
    fn failing(error: PipelineError) -> Service {
        let pipeline = Pipeline::from_fn(move |_req: Request| gerdu_api::Call::ready(Err(error.clone())));
        let limits = Limits { max_key: 100, max_value: 100 };
        Service::new(pipeline, Arc::new(NoAdmin), Arc::new(SystemClock), limits, CancellationToken::new())
    }

    #[tokio::test]
    async fn whole_request_failures_map_to_their_codes() {
        let cases = [
            (PipelineError::Unavailable("no leader within 5000 ms".into()), Code::Unavailable),
            (PipelineError::ShuttingDown, Code::Unavailable),
            (PipelineError::Unauthenticated, Code::Unauthenticated),
            (PipelineError::BadCredentials, Code::Unauthenticated),
            (PipelineError::Internal("boom".into()), Code::Internal),
        ];
        for (error, code) in cases {
            let service = failing(error.clone());
            let get = service.get(tonic::Request::new(pb::GetRequest { key: "k".into() })).await.unwrap_err();
            assert_eq!(get.code(), code, "{error:?}");
            let put = pb::PutRequest { key: "k".into(), ..Default::default() };
            let multi = service.multi_put(tonic::Request::new(pb::MultiPutRequest { items: vec![put] })).await;
            match code {
                // Only authentication fails a whole batch; otherwise each item carries the status.
                Code::Unauthenticated => assert_eq!(multi.unwrap_err().code(), code),
                _ => {
                    let results = multi.unwrap().into_inner().results;
                    assert_eq!(results[0].status.as_ref().unwrap().code, code as i32, "{error:?}");
                }
            }
        }
    }
}
