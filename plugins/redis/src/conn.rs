//! One client connection: read, parse every complete request, answer them in
//! order with one write.
//!
//! All requests found in one read form a batch. Requests answered locally
//! are rendered at once; the others' commands go to the pipeline together as
//! one [`Request`] (so a pipeline of 16 `SET`s is one proposal, and 16 `GET`s
//! share one read index), and their replies are rendered in place. A
//! connection-changing command (`AUTH`, `HELLO`, `RESET`, `QUIT`) cuts the
//! batch: what came before is answered first, with the old state.
//!
//! A protocol error is answered with Redis' text and the connection is
//! closed, as Redis does. The connection also closes on shutdown (after the
//! batch in flight), when idle for `redis.timeout` seconds (0 = never), or
//! when its unparsed input exceeds `redis.query_buffer_limit`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use gerdu_api::clock::Moment;
use gerdu_api::net::Stream;
use gerdu_api::tokio_util::sync::CancellationToken;
use gerdu_api::{Admin, Command, Credentials, Pipeline, Reply, Request, RequestContext};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;

use crate::RedisConfig;
use crate::codec::{self, Limits, Out};
use crate::commands::{self, Action, Render, connection};
use crate::table;

/// Most requests answered by one pipeline call; longer pipelines are split.
const MAX_BATCH: usize = 1024;

/// What `CLIENT LIST` shows about a connection.
pub struct ClientInfo {
    /// Connection id (`CLIENT ID`).
    pub id: u64,
    /// Peer address.
    pub addr: SocketAddr,
    /// When it connected.
    pub created: Moment,
    /// Milliseconds after `created` of the last request.
    pub last_active_ms: AtomicU64,
    /// Index in the command table of the last command.
    pub last_cmd: AtomicUsize,
    /// `CLIENT SETNAME`.
    pub name: Mutex<Option<Bytes>>,
    /// `CLIENT SETINFO LIB-NAME` / `LIB-VER`.
    pub lib: Mutex<(Option<Bytes>, Option<Bytes>)>,
    /// 2 or 3.
    pub resp: AtomicUsize,
}

impl ClientInfo {
    /// One `CLIENT LIST` line (without the newline).
    pub fn line(&self, laddr: SocketAddr) -> String {
        let name = self.name.lock().clone().unwrap_or_default();
        let (lib_name, lib_ver) = self.lib.lock().clone();
        let age = self.created.elapsed();
        let idle = age.saturating_sub(Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed)));
        let cmd = table::COMMANDS.get(self.last_cmd.load(Ordering::Relaxed)).map_or("NULL", |s| s.name);
        format!(
            "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 \
             watch=0 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 \
             events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
            self.id,
            self.addr,
            laddr,
            String::from_utf8_lossy(&name),
            age.as_secs(),
            idle.as_secs(),
            cmd,
            self.resp.load(Ordering::Relaxed),
            String::from_utf8_lossy(&lib_name.unwrap_or_default()),
            String::from_utf8_lossy(&lib_ver.unwrap_or_default()),
        )
    }
}

/// State shared by all connections of the listener.
pub struct Shared {
    /// The request pipeline.
    pub pipeline: Pipeline,
    /// Node status for `INFO replication`.
    pub admin: Arc<dyn Admin>,
    /// `[redis]`.
    pub config: RedisConfig,
    /// `auth.enabled`.
    pub auth_required: bool,
    /// Capacity and policy for `INFO` and `CONFIG GET`.
    pub capacity: u64,
    /// Policy name.
    pub policy: String,
    /// Listening address.
    pub local_addr: SocketAddr,
    /// Whether the listener speaks TLS.
    pub tls: bool,
    /// Parser limits.
    pub limits: Limits,
    /// Connected clients.
    pub clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    next_id: AtomicU64,
    /// When the listener started.
    pub started: Instant,
    /// Requests answered.
    pub commands_processed: AtomicU64,
    /// Connections accepted.
    pub connections_received: AtomicU64,
    /// Connections refused at `max_clients`.
    pub rejected_connections: AtomicU64,
    /// The server's metrics, for `INFO stats`.
    pub metrics: gerdu_api::prometheus::Registry,
}

impl Shared {
    /// Builds the shared state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        pipeline: Pipeline,
        admin: Arc<dyn Admin>,
        config: RedisConfig,
        auth_required: bool,
        capacity: u64,
        policy: String,
        local_addr: SocketAddr,
        tls: bool,
        metrics: gerdu_api::prometheus::Registry,
    ) -> Self {
        let limits = Limits { max_bulk: config.max_bulk.0 as usize, max_args: config.max_args, ..Limits::default() };
        Shared {
            pipeline,
            admin,
            config,
            auth_required,
            capacity,
            policy,
            local_addr,
            tls,
            limits,
            clients: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            commands_processed: AtomicU64::new(0),
            connections_received: AtomicU64::new(0),
            rejected_connections: AtomicU64::new(0),
            metrics,
        }
    }
}

/// A connection's state.
pub struct ConnState {
    /// RESP3 after `HELLO 3`.
    pub resp3: bool,
    /// Credentials accepted by `AUTH`/`HELLO`, sent with every request.
    pub credentials: Option<Arc<Credentials>>,
    /// Whether `AUTH` succeeded (only matters when auth is on).
    pub authenticated: bool,
    /// What `CLIENT LIST` shows.
    pub info: Arc<ClientInfo>,
    /// Listener state.
    pub shared: Arc<Shared>,
}

impl ConnState {
    /// Whether commands other than AUTH/HELLO/QUIT/RESET must be refused.
    pub fn needs_auth(&self) -> bool {
        self.shared.auth_required && !self.authenticated
    }

    /// Records the command (its index in the command table) for `CLIENT LIST`.
    pub fn note_command(&self, index: usize) {
        self.info.last_cmd.store(index, Ordering::Relaxed);
    }

    /// A request context carrying this connection's credentials.
    pub fn context(&self) -> RequestContext {
        self.context_at(Moment::now())
    }

    /// [`Self::context`] for a request received at `received`.
    pub fn context_at(&self, received: Moment) -> RequestContext {
        let mut ctx = RequestContext::received_at("redis", received);
        ctx.credentials = self.credentials.clone();
        ctx
    }
}

enum Step {
    Local(Range<usize>),
    /// The reply to `batch.commands[at]`, rendered.
    Remote {
        at: usize,
        render: Render,
    },
}

struct Batch {
    steps: Vec<Step>,
    commands: Vec<Command>,
    local: BytesMut,
    /// The request being dispatched (reused: no vector per request).
    args: Vec<Bytes>,
    /// When the read that brought the batch completed (one clock read per
    /// read, for the latency metrics and `CLIENT LIST`'s idle time).
    received: Moment,
}

impl Batch {
    fn new() -> Self {
        Batch {
            steps: Vec::new(),
            commands: Vec::new(),
            local: BytesMut::new(),
            args: Vec::new(),
            received: Moment::now(),
        }
    }
}

/// Answers every step of the batch into `out`, calling the pipeline once.
async fn execute(batch: &mut Batch, conn: &ConnState, out: &mut BytesMut) {
    if batch.steps.is_empty() {
        return;
    }
    let shared = &conn.shared;
    // Counted once answered, as Redis counts a command after running it (an
    // INFO does not count itself).
    let answered = batch.steps.len() as u64;
    let result = if batch.commands.is_empty() {
        Ok(Vec::new())
    } else {
        let request =
            Request { ctx: conn.context_at(batch.received), commands: Request::take_commands(&mut batch.commands) };
        conn.shared.pipeline.call(request).await.map(|r| r.replies)
    };
    let info = |o: &mut Out<'_>, sections: &[String], reply: &Reply| {
        crate::commands::server::render_info(o, sections, reply, conn);
    };
    let mut o = Out::new(out, conn.resp3);
    for step in batch.steps.drain(..) {
        match step {
            Step::Local(range) => o.raw(&batch.local[range]),
            Step::Remote { at, render } => match &result {
                Ok(replies) => commands::render(&render, replies.get(at), &info, &mut o),
                Err(e) => o.error(&commands::pipeline_error_text(e)),
            },
        }
    }
    batch.local.clear();
    shared.commands_processed.fetch_add(answered, Ordering::Relaxed);
}

/// Parses and answers everything complete in `input`, with `batch` (empty;
/// kept by the connection so its buffers are reused). Returns true when the
/// connection must close (QUIT, protocol error).
async fn process(input: &mut BytesMut, conn: &mut ConnState, batch: &mut Batch, out: &mut BytesMut) -> bool {
    loop {
        if batch.steps.len() >= MAX_BATCH {
            execute(batch, conn, out).await;
        }
        match codec::parse_into(input, &conn.shared.limits, &mut batch.args) {
            Ok(true) if batch.args.is_empty() => continue,
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                execute(batch, conn, out).await;
                Out::new(out, conn.resp3).error(&format!("ERR {}", e.0));
                return true;
            }
        };
        let start = batch.local.len();
        let action = commands::dispatch(&mut batch.args, conn, &mut Out::new(&mut batch.local, conn.resp3));
        match action {
            Action::Local => batch.steps.push(Step::Local(start..batch.local.len())),
            Action::Remote(command, render) => {
                batch.steps.push(Step::Remote { at: batch.commands.len(), render });
                batch.commands.push(command);
            }
            Action::Barrier(b) => {
                execute(batch, conn, out).await;
                conn.shared.commands_processed.fetch_add(1, Ordering::Relaxed);
                if connection::run_barrier(b, conn, out).await {
                    return true;
                }
            }
        }
    }
    execute(batch, conn, out).await;
    false
}

/// Serves one connection until it closes or the server shuts down.
pub async fn serve(mut stream: Stream, peer: SocketAddr, shared: Arc<Shared>, shutdown: CancellationToken) {
    shared.connections_received.fetch_add(1, Ordering::Relaxed);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let info = Arc::new(ClientInfo {
        id,
        addr: peer,
        created: Moment::now(),
        last_active_ms: AtomicU64::new(0),
        last_cmd: AtomicUsize::new(usize::MAX),
        name: Mutex::new(None),
        lib: Mutex::new((None, None)),
        resp: AtomicUsize::new(2),
    });
    shared.clients.lock().insert(id, info.clone());
    let mut conn = ConnState { resp3: false, credentials: None, authenticated: false, info, shared: shared.clone() };
    let mut input = BytesMut::with_capacity(16 * 1024);
    let mut out = BytesMut::with_capacity(16 * 1024);
    let mut batch = Batch::new();
    let idle = (shared.config.timeout > 0).then(|| Duration::from_secs(shared.config.timeout));
    let mut reader = gerdu_api::net::Reader::new(shutdown, idle);
    loop {
        if reader.read_more(&mut stream, &mut input).await.is_none() {
            break;
        }
        batch.received = Moment::now();
        let active = batch.received.since(conn.info.created);
        conn.info.last_active_ms.store(active.as_millis() as u64, Ordering::Relaxed);
        let close = process(&mut input, &mut conn, &mut batch, &mut out).await;
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                break;
            }
            out.clear();
        }
        if close {
            break;
        }
        if input.len() > shared.config.query_buffer_limit.0 as usize {
            tracing::debug!(%peer, "redis: query buffer limit exceeded; closing");
            break;
        }
    }
    let _ = stream.shutdown().await;
    shared.clients.lock().remove(&id);
}
