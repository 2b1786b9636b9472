//! One client connection: read, parse every complete request, answer them in
//! order with one write.
//!
//! All requests found in one read form a batch: those answered locally
//! (`version`, `mn`, errors) are rendered at once; the others' commands go to
//! the pipeline together as one [`Request`], so 16 pipelined `set`s are one
//! raft proposal and 16 `get`s share one read index. `noreply` requests are
//! executed and their answers dropped.
//!
//! When `auth.enabled` is on, a connection must first authenticate the
//! memcached ascii way: a `set` of any key whose data is `user password`
//! (`STORED` on success, `CLIENT_ERROR authentication failure` otherwise);
//! every other command gets `CLIENT_ERROR unauthenticated`.
//!
//! The connection closes on `quit`, an overlong line, shutdown (after the
//! batch in flight) or after `mcd.idle_timeout` idle seconds (0 = never).

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gerdu_api::net::Stream;
use gerdu_api::tokio_util::sync::CancellationToken;
use gerdu_api::{Clock, Command, Credentials, Pipeline, PipelineError, Reply, Request, RequestContext};
use tokio::io::AsyncWriteExt;

use crate::McdConfig;
use crate::codec::{self, Frame, Limits, Meta, Req, StoreOp};
use crate::meta;
use crate::stats::{Counters, Local, Stat};
use crate::text::{self, TextRender, line};

/// Most requests answered by one pipeline call; longer pipelines are split.
const MAX_BATCH: usize = 1024;

/// State shared by all connections of the listener.
pub struct Shared {
    /// The request pipeline.
    pub pipeline: Pipeline,
    /// `[mcd]`.
    pub config: McdConfig,
    /// Parser limits.
    pub limits: Limits,
    /// `auth.enabled`.
    pub auth_required: bool,
    /// Policy name (`stats settings`).
    pub policy: String,
    /// Runtime threads (`stats`).
    pub threads: usize,
    /// Listening address.
    pub local_addr: SocketAddr,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    /// The server's clock.
    pub clock: Arc<dyn Clock>,
    /// The server's metrics (evictions for `stats`).
    pub metrics: gerdu_api::prometheus::Registry,
    /// When the listener started.
    pub started: Instant,
    /// Command counters.
    pub counters: Counters,
    /// Open connections.
    pub curr_connections: AtomicU64,
    /// Connections accepted.
    pub total_connections: AtomicU64,
    /// Connections refused at `max_connections`.
    pub rejected_connections: AtomicU64,
}

/// How to answer a request sent to the pipeline.
#[derive(Debug)]
pub enum Render {
    /// A classic command.
    Text(TextRender),
    /// A meta command (the request, its data block dropped; boxed, so that
    /// the step of every other request stays small).
    Meta(Box<Meta>),
    /// `stats [group]`.
    Stats(Option<Bytes>),
}

enum Step {
    Local(Range<usize>),
    Remote { index: usize, render: Render, noreply: bool },
}

/// A connection's state.
struct Conn {
    shared: Arc<Shared>,
    credentials: Option<Arc<Credentials>>,
    authenticated: bool,
    /// Data-block bytes still to discard (a value that was refused).
    swallow: usize,
    stats: Local,
    steps: Vec<Step>,
    /// Meta commands among `steps` (only they may need a second call).
    metas: usize,
    commands: Vec<Command>,
    local: BytesMut,
}

impl Conn {
    fn context(&self) -> RequestContext {
        let mut ctx = RequestContext::new("mcd");
        ctx.credentials = self.credentials.clone();
        ctx
    }

    fn local(&mut self, text: &str) {
        let start = self.local.len();
        line(&mut self.local, text);
        self.steps.push(Step::Local(start..self.local.len()));
    }

    fn remote(&mut self, command: Command, render: Render, noreply: bool) {
        self.steps.push(Step::Remote { index: self.commands.len(), render, noreply });
        self.commands.push(command);
    }
}

fn pipeline_error_text(e: &PipelineError) -> String {
    match e {
        PipelineError::Unauthenticated => "CLIENT_ERROR unauthenticated".into(),
        PipelineError::BadCredentials => "CLIENT_ERROR authentication failure".into(),
        PipelineError::Unavailable(m) => format!("SERVER_ERROR unavailable: {m}"),
        PipelineError::ShuttingDown => "SERVER_ERROR shutting down".into(),
        PipelineError::Internal(m) => format!("SERVER_ERROR {m}"),
    }
}

async fn call(conn: &Conn, commands: Vec<Command>) -> Result<Vec<Reply>, PipelineError> {
    let request = Request { ctx: conn.context(), commands };
    conn.shared.pipeline.call(request).await.map(|r| r.replies)
}

/// Answers every step of the batch into `out`, calling the pipeline once
/// (twice when a plain `mg` met a stale item and must claim its token).
async fn execute(conn: &mut Conn, out: &mut BytesMut) {
    if conn.steps.is_empty() {
        return;
    }
    let commands = Request::take_commands(&mut conn.commands);
    let mut result = if commands.is_empty() { Ok(Vec::new()) } else { call(conn, commands).await };
    if let Ok(replies) = &mut result
        && conn.metas > 0
    {
        let claims: Vec<(usize, Command)> = conn
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Remote { index, render: Render::Meta(m), .. } => {
                    meta::needs_claim(m, &replies[*index]).map(|c| (*index, c))
                }
                _ => None,
            })
            .collect();
        if !claims.is_empty() {
            let (at, commands): (Vec<usize>, Vec<Command>) = claims.into_iter().unzip();
            match call(conn, commands).await {
                Ok(claimed) => at.into_iter().zip(claimed).for_each(|(i, r)| replies[i] = r),
                Err(e) => result = Err(e),
            }
        }
    }
    // Read once, and only for the replies that show times (meta, stats).
    let mut now = None;
    // Drained, not taken: the step list keeps its capacity across batches.
    let Conn { steps, local, stats, shared, .. } = conn;
    let mut now_ms = || *now.get_or_insert_with(|| shared.clock.now_ms());
    for step in steps.drain(..) {
        match step {
            Step::Local(range) => out.extend_from_slice(&local[range]),
            Step::Remote { index, render, noreply } => {
                let reply = match &result {
                    Ok(replies) => &replies[index],
                    Err(e) => {
                        if !noreply {
                            line(out, &pipeline_error_text(e));
                        }
                        continue;
                    }
                };
                stats.count(&render, reply);
                if noreply {
                    continue;
                }
                match &render {
                    Render::Text(r) => text::render(r, reply, out),
                    Render::Meta(m) => meta::render(m, reply, now_ms(), out),
                    Render::Stats(group) => crate::stats::render(group.as_deref(), reply, shared, now_ms(), out),
                }
            }
        }
    }
    local.clear();
    conn.metas = 0;
    conn.shared.counters.add(&mut conn.stats);
}

/// memcached ascii auth: the data of a `set` is `user password`.
async fn authenticate(conn: &mut Conn, data: &Bytes, out: &mut BytesMut) {
    conn.stats.inc(Stat::AuthCmds, 1);
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split_whitespace();
    let (Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next()) else {
        conn.stats.inc(Stat::AuthErrors, 1);
        return line(out, "CLIENT_ERROR authentication failure");
    };
    let creds = Arc::new(Credentials::Password { user: Some(user.into()), password: password.into() });
    match gerdu_api::pipeline::check_credentials(&conn.shared.pipeline, conn.context(), creds.clone()).await {
        Ok(()) => {
            conn.credentials = Some(creds);
            conn.authenticated = true;
            line(out, "STORED");
        }
        Err(PipelineError::BadCredentials | PipelineError::Unauthenticated) => {
            conn.stats.inc(Stat::AuthErrors, 1);
            line(out, "CLIENT_ERROR authentication failure");
        }
        Err(e) => line(out, &pipeline_error_text(&e)),
    }
}

/// Parses and answers everything complete in `input`. Returns true when the
/// connection must close.
async fn process(input: &mut BytesMut, conn: &mut Conn, out: &mut BytesMut) -> bool {
    loop {
        if conn.swallow > 0 {
            let n = conn.swallow.min(input.len());
            let _ = input.split_to(n);
            conn.swallow -= n;
            if conn.swallow > 0 {
                break;
            }
        }
        if conn.steps.len() >= MAX_BATCH {
            execute(conn, out).await;
        }
        let req = match codec::parse(input, &conn.shared.limits) {
            None => break,
            Some(Frame::Error { text, noreply, swallow, close }) => {
                conn.swallow = swallow;
                if !noreply {
                    conn.local(text);
                }
                if close {
                    execute(conn, out).await;
                    return true;
                }
                continue;
            }
            Some(Frame::Req(req)) => req,
        };
        if conn.shared.auth_required && !conn.authenticated {
            match req {
                Req::Store { op: StoreOp::Set, data, .. } => {
                    execute(conn, out).await;
                    authenticate(conn, &data, out).await;
                }
                Req::Quit => {
                    execute(conn, out).await;
                    return true;
                }
                _ => conn.local("CLIENT_ERROR unauthenticated"),
            }
            continue;
        }
        let noreply = req.noreply();
        match req {
            Req::Version => conn.local(&format!("VERSION {}", crate::VERSION)),
            Req::Verbosity { .. } if noreply => {}
            Req::Verbosity { .. } => conn.local("OK"),
            Req::Noop => conn.local("MN"),
            Req::Quit => {
                execute(conn, out).await;
                return true;
            }
            Req::Stats(None) => conn.remote(Command::Stats, Render::Stats(None), false),
            Req::Stats(Some(group)) => match &group[..] {
                b"settings" | b"items" => conn.remote(Command::Stats, Render::Stats(Some(group)), false),
                b"reset" => {
                    conn.shared.counters.reset();
                    conn.local("RESET");
                }
                _ => conn.local("ERROR"),
            },
            Req::Meta(mut m) => match meta::translate(&m) {
                Ok(command) => {
                    m.data = Bytes::new();
                    conn.remote(command, Render::Meta(Box::new(m)), false);
                    conn.metas += 1;
                }
                Err(text) => conn.local(text),
            },
            req => {
                let clock = &conn.shared.clock;
                let (command, render) = text::translate(req, || clock.now_ms());
                conn.remote(command, Render::Text(render), noreply);
            }
        }
    }
    execute(conn, out).await;
    false
}

/// Serves one connection until it closes or the server shuts down.
pub async fn serve(mut stream: Stream, _peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    shared.total_connections.fetch_add(1, Ordering::Relaxed);
    shared.curr_connections.fetch_add(1, Ordering::Relaxed);
    let mut conn = Conn {
        shared: shared.clone(),
        credentials: None,
        authenticated: false,
        swallow: 0,
        stats: Local::default(),
        steps: Vec::new(),
        metas: 0,
        commands: Vec::new(),
        local: BytesMut::new(),
    };
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let idle = (shared.config.idle_timeout > 0).then(|| Duration::from_secs(shared.config.idle_timeout));
    let mut reader = gerdu_api::net::Reader::new(shutdown, idle);
    loop {
        let Some(n) = reader.read_more(&mut stream, &mut input).await else {
            break;
        };
        conn.stats.inc(Stat::BytesRead, n as u64);
        let close = process(&mut input, &mut conn, &mut out).await;
        if !out.is_empty() {
            conn.stats.inc(Stat::BytesWritten, out.len() as u64);
            if stream.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        if close {
            break;
        }
    }
    shared.counters.add(&mut conn.stats);
    let _ = stream.shutdown().await;
    shared.curr_connections.fetch_sub(1, Ordering::Relaxed);
}
