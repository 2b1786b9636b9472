//! Request routing and the mapping between HTTP and the command model.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use gerdu_api::clock::Moment;
use gerdu_api::{
    Admin, AdminError, Call, Clock, Command, Condition, Credentials, Expiry, Pipeline, PipelineError, ReadConsistency,
    Reply, Request, RequestContext, Response, SetCommand,
};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;

use crate::HttpConfig;

/// A whole body, or one sent as it is produced (a backup).
type Body = Either<Full<Bytes>, StreamBody<BoxStream<'static, Result<Frame<Bytes>, std::io::Error>>>>;
type Resp = hyper::Response<Body>;

fn full(body: Bytes) -> Body {
    Either::Left(Full::new(body))
}

const PROTOCOL: &str = "http";

pub(crate) struct State {
    pipeline: Pipeline,
    admin: Arc<dyn Admin>,
    config: Arc<HttpConfig>,
    clock: Arc<dyn Clock>,
    /// `http` or `https`: for redirects to the leader.
    scheme: &'static str,
}

impl State {
    pub(crate) fn new(
        pipeline: Pipeline,
        admin: Arc<dyn Admin>,
        config: Arc<HttpConfig>,
        clock: Arc<dyn Clock>,
        scheme: &'static str,
    ) -> Self {
        State { pipeline, admin, config, clock, scheme }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    let mut r = hyper::Response::new(full(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn json(body: impl Into<Bytes>) -> Resp {
    let mut r = hyper::Response::new(full(body.into()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn empty(status: StatusCode) -> Resp {
    let mut r = hyper::Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

fn method_not_allowed(allow: &'static str) -> Resp {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn pipeline_error(e: PipelineError) -> Resp {
    match e {
        PipelineError::Unauthenticated | PipelineError::BadCredentials => {
            let mut r = text(StatusCode::UNAUTHORIZED, format!("{e}\n"));
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"gerdu\""));
            r.headers_mut().append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"gerdu\""));
            r
        }
        PipelineError::Unavailable(_) | PipelineError::ShuttingDown => {
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
        PipelineError::Internal(_) => {
            tracing::error!("http: {e}");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
    }
}

/// Credentials from `Authorization: Bearer t` or `Basic base64(user:pass)`.
fn credentials(req: &hyper::Request<Incoming>) -> Option<Arc<Credentials>> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    Credentials::from_authorization(value).map(Arc::new)
}

fn consistency(req: &hyper::Request<Incoming>) -> Result<Option<ReadConsistency>, String> {
    match req.headers().get("gerdu-consistency") {
        None => Ok(None),
        Some(v) => v.to_str().map_err(|e| e.to_string())?.parse().map(Some),
    }
}

/// Parses a TTL: plain seconds (`30`, `1.5`) or with a unit (`ms`, `s`, `m`, `h`, `d`).
pub(crate) fn parse_ttl(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let ms_per = match unit {
        "ms" => 1.0,
        "" | "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    };
    let ms = n * ms_per;
    (ms.is_finite() && ms >= 0.0 && ms < u64::MAX as f64).then_some(ms as u64)
}

fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

async fn run(state: &State, ctx: RequestContext, command: Command) -> Result<Reply, Resp> {
    let mut resp =
        gerdu_api::pipeline::call(&state.pipeline, Request::single(ctx, command)).await.map_err(pipeline_error)?;
    resp.replies.pop().ok_or_else(|| text(StatusCode::INTERNAL_SERVER_ERROR, "no reply\n"))
}

fn unexpected(reply: Reply) -> Resp {
    match reply {
        Reply::Error(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
        other => {
            tracing::error!("http: unexpected reply {other:?}");
            text(StatusCode::INTERNAL_SERVER_ERROR, "unexpected reply\n")
        }
    }
}

async fn read_body(state: &State, body: Incoming, content_length: Option<u64>) -> Result<Bytes, Resp> {
    read_limited(body, content_length, state.config.max_body.0, "max_body").await
}

fn content_length(req: &hyper::Request<Incoming>) -> Option<u64> {
    req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
}

async fn read_limited(body: Incoming, content_length: Option<u64>, max: u64, limit: &str) -> Result<Bytes, Resp> {
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than http.{limit} ({max} bytes)\n"));
    if content_length.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    match Limited::new(body, max as usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(text(StatusCode::BAD_REQUEST, format!("cannot read body: {e}\n"))),
    }
}

/// The answer to a request: made at once, the pipeline's call to wait for
/// (with how to render its reply), or a future for the rest. It is the
/// future hyper holds per request (in the connection's state, or moved
/// into a task per HTTP/2 stream), so it is kept small: a `/cache/` read
/// that the pipeline answers at once, as a leader does, is made before
/// hyper first polls it, and the rare routes' large futures are boxed.
pub(crate) enum Answer {
    /// Made; taken by the first poll.
    Now(Option<Resp>),
    /// The pipeline's answer to a one-command request, then `render(reply)`.
    Call { call: Call, render: Render },
    /// Anything else (a body to read first, an admin route).
    Later(Pin<Box<dyn Future<Output = Resp> + Send>>),
}

impl Future for Answer {
    type Output = Result<Resp, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Answer::Now(resp) => Poll::Ready(Ok(resp.take().expect("an answer is polled after it completed"))),
            Answer::Call { call, render } => Pin::new(call).poll(cx).map(|result| Ok(rendered(result, *render))),
            Answer::Later(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

/// How a one-command request's reply becomes its HTTP answer.
type Render = fn(Reply) -> Resp;

/// A one-command request's HTTP answer.
fn rendered(result: Result<Response, PipelineError>, render: Render) -> Resp {
    match result.map(|mut r| r.replies.pop()) {
        Ok(Some(reply)) => render(reply),
        Ok(None) => text(StatusCode::INTERNAL_SERVER_ERROR, "no reply\n"),
        Err(e) => pipeline_error(e),
    }
}

/// Sends one command through the pipeline: answered at once if the
/// pipeline did, else the call to wait for.
fn call(state: &State, ctx: RequestContext, command: Command, render: Render) -> Answer {
    match state.pipeline.call(Request::single(ctx, command)).now() {
        Ok(result) => Answer::Now(Some(rendered(result, render))),
        Err(call) => Answer::Call { call, render },
    }
}

fn render_get(reply: Reply) -> Resp {
    found(reply, false)
}

/// A HEAD's answer: a GET's, with the value's length and without the value.
fn render_head(reply: Reply) -> Resp {
    found(reply, true)
}

/// A GET's answer (`head`: a HEAD's).
fn found(reply: Reply, head: bool) -> Resp {
    match reply {
        Reply::Values(mut v) => match v.pop().flatten() {
            Some(item) => {
                let len = item.value.len();
                let mut r = hyper::Response::new(full(if head { Bytes::new() } else { item.value }));
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
                h.insert(header::ETAG, HeaderValue::from_str(&format!("\"{}\"", item.cas)).expect("etag"));
                if head {
                    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
                }
                r
            }
            None => empty(StatusCode::NOT_FOUND),
        },
        other => unexpected(other),
    }
}

fn render_set(reply: Reply) -> Resp {
    match reply {
        Reply::Stored { created: true, .. } => empty(StatusCode::CREATED),
        Reply::Stored { created: false, .. } => empty(StatusCode::NO_CONTENT),
        Reply::NotStored { .. } => empty(StatusCode::PRECONDITION_FAILED),
        other => unexpected(other),
    }
}

fn render_delete(reply: Reply) -> Resp {
    match reply {
        Reply::Count(0) => empty(StatusCode::NOT_FOUND),
        Reply::Count(_) => empty(StatusCode::OK),
        other => unexpected(other),
    }
}

/// `/cache/{key}`: GET, HEAD, PUT (the body is the value; `?ttl=`,
/// `If-None-Match: *`) and DELETE.
fn cache(state: &Arc<State>, req: hyper::Request<Incoming>) -> Answer {
    let raw_key = &req.uri().path()["/cache/".len()..];
    let key: Vec<u8> = percent_encoding::percent_decode_str(raw_key).collect();
    if key.is_empty() {
        return Answer::Now(Some(text(StatusCode::BAD_REQUEST, "empty key\n")));
    }
    if key.len() > state.config.max_key {
        let e = format!("key longer than http.max_key ({})\n", state.config.max_key);
        return Answer::Now(Some(text(StatusCode::URI_TOO_LONG, e)));
    }
    let key = Bytes::from(key);
    let mut ctx = RequestContext::new(PROTOCOL);
    ctx.credentials = credentials(&req);
    ctx.consistency = match consistency(&req) {
        Ok(c) => c,
        Err(e) => return Answer::Now(Some(text(StatusCode::BAD_REQUEST, format!("gerdu-consistency: {e}\n")))),
    };
    match *req.method() {
        Method::GET | Method::HEAD => {
            ctx.received = Moment::now();
            let render = if req.method() == Method::HEAD { render_head } else { render_get };
            call(state, ctx, Command::Get { keys: vec![key] }, render)
        }
        Method::PUT => {
            let mut set = SetCommand::new(key, Bytes::new());
            if let Some(ttl) = query_param(req.uri().query(), "ttl") {
                let Some(ms) = parse_ttl(ttl) else {
                    let e = format!("invalid ttl {ttl:?} (e.g. 30, 500ms, 5m)\n");
                    return Answer::Now(Some(text(StatusCode::BAD_REQUEST, e)));
                };
                set.expiry = if ms == 0 { Expiry::Never } else { Expiry::In(ms) };
            }
            if req.headers().get(header::IF_NONE_MATCH).is_some_and(|v| v == "*") {
                set.condition = Condition::IfAbsent;
            }
            let length = content_length(&req);
            let state = state.clone();
            Answer::Later(Box::pin(async move {
                set.value = match read_body(&state, req.into_body(), length).await {
                    Ok(value) => value,
                    Err(resp) => return resp,
                };
                ctx.received = Moment::now();
                let result = state.pipeline.call(Request::single(ctx, Command::Set(set))).await;
                rendered(result, render_set)
            }))
        }
        Method::DELETE => {
            ctx.received = Moment::now();
            call(state, ctx, Command::Delete { keys: vec![key] }, render_delete)
        }
        _ => Answer::Now(Some(method_not_allowed("GET, HEAD, PUT, DELETE"))),
    }
}

fn admin_error(e: AdminError) -> Resp {
    match e {
        AdminError::NotImplemented(m) => text(StatusCode::NOT_IMPLEMENTED, format!("{m}\n")),
        AdminError::BadRequest(m) => text(StatusCode::BAD_REQUEST, format!("{m}\n")),
        AdminError::Conflict(m) => text(StatusCode::CONFLICT, format!("{m}\n")),
        AdminError::NotFound(m) => text(StatusCode::NOT_FOUND, format!("{m}\n")),
        AdminError::Unavailable(m) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{m}\n")),
        e @ AdminError::NotLeader(_) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

/// Membership changes are as protected as writes: run the credentials through the pipeline.
async fn authorize(state: &State, req: &hyper::Request<Incoming>) -> Result<(), Resp> {
    let mut ctx = RequestContext::new(PROTOCOL);
    ctx.credentials = credentials(req);
    ctx.consistency = Some(ReadConsistency::Local);
    gerdu_api::pipeline::call(&state.pipeline, Request { ctx, commands: Vec::new() }).await.map_err(pipeline_error)?;
    Ok(())
}

#[derive(serde::Deserialize)]
struct JoinBody {
    id: String,
    addr: String,
}

async fn join(state: &State, req: hyper::Request<Incoming>) -> Result<Resp, Resp> {
    authorize(state, &req).await?;
    let body = read_body(state, req.into_body(), None).await?;
    let j: JoinBody = serde_json::from_slice(&body)
        .map_err(|e| text(StatusCode::BAD_REQUEST, format!("expected {{\"id\":..,\"addr\":..}}: {e}\n")))?;
    state.admin.join(j.id, j.addr).await.map_err(admin_error)?;
    Ok(empty(StatusCode::OK))
}

async fn leave(state: &State, req: hyper::Request<Incoming>) -> Result<Resp, Resp> {
    authorize(state, &req).await?;
    let body = read_body(state, req.into_body(), None).await?;
    let id = String::from_utf8_lossy(&body).trim().to_string();
    if id.is_empty() {
        return Err(text(StatusCode::BAD_REQUEST, "expected the node id as the body\n"));
    }
    state.admin.leave(id).await.map_err(admin_error)?;
    Ok(empty(StatusCode::OK))
}

/// `GET /backup`: the leader's (or with `Gerdu-Consistency: local`, this
/// node's) data as a backup file. A follower redirects to the leader (307).
async fn backup(state: &State, req: hyper::Request<Incoming>) -> Result<Resp, Resp> {
    authorize(state, &req).await?;
    let consistency =
        consistency(&req).map_err(|e| text(StatusCode::BAD_REQUEST, format!("gerdu-consistency: {e}\n")))?;
    let file = match state.admin.backup(consistency).await {
        Ok(file) => file,
        Err(AdminError::NotLeader(Some(leader))) => {
            let mut r = text(StatusCode::TEMPORARY_REDIRECT, format!("the leader takes backups: {leader}\n"));
            let location = format!("{}://{leader}/backup", state.scheme);
            r.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(&location).map_err(|e| {
                    text(StatusCode::INTERNAL_SERVER_ERROR, format!("leader address {leader:?}: {e}\n"))
                })?,
            );
            return Ok(r);
        }
        Err(e) => return Err(admin_error(e)),
    };
    // Chunks as the encoder hands them over; an encoding error aborts the
    // response, so the client never takes a cut file for a whole one.
    let chunks = futures::stream::unfold(file.chunks, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((chunk.map(Frame::data).map_err(std::io::Error::other), rx))
    });
    let mut r = hyper::Response::new(Either::Right(StreamBody::new(chunks.boxed())));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_str(&format!("attachment; filename=\"gerdu-{}.backup\"", file.applied_index)).expect("ascii"),
    );
    h.insert("gerdu-applied-index", HeaderValue::from(file.applied_index));
    Ok(r)
}

/// Writes per restore request: one raft entry each.
const RESTORE_BATCH_ITEMS: usize = 1024;
const RESTORE_BATCH_BYTES: usize = 1 << 20;
/// Restore requests in flight at once.
const RESTORE_IN_FLIGHT: usize = 4;

/// `POST /restore` with a backup file (or a `-storage` snapshot file) as the
/// body: writes every item not yet expired, with its flags and deadline,
/// through the pipeline (so auth, metrics and raft see ordinary writes).
/// Keys not in the file are left as they are. Answers JSON counts.
async fn restore(state: &State, req: hyper::Request<Incoming>) -> Result<Resp, Resp> {
    // Refused before a large body is read; each write is checked again.
    authorize(state, &req).await?;
    let credentials = credentials(&req);
    let length = content_length(&req);
    let body = read_limited(req.into_body(), length, state.config.max_restore.0, "max_restore").await?;
    let backup = gerdu_api::image::decode_backup(body)
        .map_err(|e| text(StatusCode::BAD_REQUEST, format!("not a usable backup: {e}\n")))?;
    let now = state.clock.now_ms();
    let mut batches = Vec::new();
    let (mut batch, mut bytes, mut expired) = (Vec::new(), 0, 0u64);
    for (key, item) in backup.items {
        if item.expires_at != 0 && item.expires_at <= now {
            expired += 1;
            continue;
        }
        bytes += key.len() + item.value.len();
        let mut set = SetCommand::new(key, item.value);
        set.flags = item.flags;
        set.expiry = if item.expires_at == 0 { Expiry::Never } else { Expiry::At(item.expires_at) };
        batch.push(set);
        if batch.len() == RESTORE_BATCH_ITEMS || bytes >= RESTORE_BATCH_BYTES {
            batches.push(std::mem::take(&mut batch));
            bytes = 0;
        }
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    let write = |items: Vec<SetCommand>| {
        let mut ctx = RequestContext::new(PROTOCOL);
        ctx.credentials = credentials.clone();
        let n = items.len() as u64;
        let command = Command::SetMany { items, only_if_none_exist: false };
        async move {
            match run(state, ctx, command).await? {
                Reply::Error(e) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, format!("restore: {e}\n"))),
                _ => Ok(n),
            }
        }
    };
    // Distinct keys: the batches may land in any order.
    let mut writes = futures::stream::iter(batches.into_iter().map(write)).buffer_unordered(RESTORE_IN_FLIGHT);
    let mut restored = 0u64;
    while let Some(n) = writes.next().await {
        restored += n?;
    }
    let body = serde_json::json!({ "restored": restored, "expired": expired, "from_index": backup.applied_index });
    Ok(json(format!("{body}\n")))
}

/// Answers one request.
pub(crate) fn handle(state: Arc<State>, req: hyper::Request<Incoming>) -> Answer {
    if req.uri().path().starts_with("/cache/") {
        cache(&state, req)
    } else {
        Answer::Later(Box::pin(async move { other(&state, req).await.unwrap_or_else(|r| r) }))
    }
}

/// Every route but `/cache/{key}`.
async fn other(state: &State, req: hyper::Request<Incoming>) -> Result<Resp, Resp> {
    match req.uri().path() {
        "/metrics" => match *req.method() {
            Method::GET => {
                let mut r = text(StatusCode::OK, state.admin.metrics_text());
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
                Ok(r)
            }
            _ => Ok(method_not_allowed("GET")),
        },
        "/health" => match *req.method() {
            Method::GET => Ok(json(serde_json::to_vec(&state.admin.status()).unwrap_or_default())),
            _ => Ok(method_not_allowed("GET")),
        },
        "/cluster" => match *req.method() {
            Method::GET => Ok(json(serde_json::to_vec_pretty(&state.admin.cluster().await).unwrap_or_default())),
            _ => Ok(method_not_allowed("GET")),
        },
        "/join" => match *req.method() {
            Method::POST => join(state, req).await,
            _ => Ok(method_not_allowed("POST")),
        },
        "/leave" => match *req.method() {
            Method::POST => leave(state, req).await,
            _ => Ok(method_not_allowed("POST")),
        },
        "/backup" => match *req.method() {
            Method::GET => backup(state, req).await,
            _ => Ok(method_not_allowed("GET")),
        },
        "/restore" => match *req.method() {
            Method::POST => restore(state, req).await,
            _ => Ok(method_not_allowed("POST")),
        },
        _ => Ok(text(
            StatusCode::NOT_FOUND,
            "not found: use /cache/{key}, /metrics, /health, /cluster, /join, /leave, /backup, /restore\n",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("30"), Some(30_000));
        assert_eq!(parse_ttl("1.5"), Some(1_500));
        assert_eq!(parse_ttl("500ms"), Some(500));
        assert_eq!(parse_ttl("5m"), Some(300_000));
        assert_eq!(parse_ttl("2h"), Some(7_200_000));
        assert_eq!(parse_ttl("1d"), Some(86_400_000));
        assert_eq!(parse_ttl("x"), None);
        assert_eq!(parse_ttl("5y"), None);
        assert_eq!(parse_ttl("-1"), None);
    }

    /// hyper copies the future of every request (into the connection's
    /// state, or into a task per HTTP/2 stream): keep it small.
    #[test]
    fn a_request_future_is_small() {
        fn size<F>(_: fn(Arc<State>, hyper::Request<Incoming>) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let n = size(handle);
        assert!(n <= 256, "handle's future is {n} bytes");
    }

    #[test]
    fn query_params() {
        assert_eq!(query_param(Some("a=1&ttl=30"), "ttl"), Some("30"));
        assert_eq!(query_param(Some("ttl"), "ttl"), Some(""));
        assert_eq!(query_param(None, "ttl"), None);
    }
}
