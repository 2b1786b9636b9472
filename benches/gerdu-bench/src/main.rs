//! # gerdu-bench — gerdu's load generator, for all four protocols
//!
//! ```text
//! gerdu-bench redis    --addr 127.0.0.1:6379  -c 50 -n 200000 -d 100 -r 100000 -t get -P 16
//! gerdu-bench memcache --addr 127.0.0.1:11211 -c 50 -t set -P 1
//! gerdu-bench http     --addr 127.0.0.1:8080  -c 50 -t get -P 1
//! gerdu-bench grpc     --addr 127.0.0.1:8081  --mode stream -P 16 -t set --duration 10
//! ```
//!
//! Each of `-c` clients has its own connection and runs until the shared
//! budget (`-n` requests, or `--duration` seconds) is spent. It works
//! against any server of the protocol (redis-server, memcached), so the same
//! load measures gerdu and its peers:
//!
//! - `redis`, `memcache`: `-P` requests written at once, then their `-P`
//!   replies read (redis-benchmark's pipelining; [`text`]);
//! - `http`: HTTP/1.1 keep-alive with `-P 1`, one HTTP/2 connection with
//!   `-P` streams in flight otherwise ([`http`]); with `--pipeline`,
//!   HTTP/1.1 with `-P` requests written at once, as for `redis`;
//! - `grpc --mode unary`: one `Get` or `Put` call at a time per client;
//!   `--mode stream`: one `Pipeline` stream per client with `-P` operations
//!   in flight (results come back in order, so each one's latency is the
//!   time since it was sent).
//!
//! Keys are `key:%012d` over `-r` keys, uniform or Zipf (`--dist zipf:0.99`);
//! values are `-d` bytes; `-t get|set|mixed` (`--get-ratio` for mixed). A
//! `get` or `mixed` run first stores every key (`MultiPut`, untimed) unless
//! `--no-preload`. The result line gives ops/s, p50/p99/p99.9 latency and
//! errors; `--json` prints it as one JSON object instead. Progress goes to
//! stderr once a second when stderr is a terminal.

mod hitratio;
mod http;
mod text;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use gerdu_protocol_grpc::pb::{self, gerdu_client::GerduClient, operation};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::Distribution;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(name = "gerdu-bench", version, about = "Load generator for gerdu")]
struct Cli {
    #[command(subcommand)]
    protocol: Protocol,
}

#[derive(Subcommand, Debug)]
enum Protocol {
    /// Redis protocol (RESP2): GET and SET, -P pipelined per connection.
    Redis(TextArgs),
    /// memcached text protocol: get and set, -P pipelined per connection.
    Memcache(TextArgs),
    /// HTTP: GET and PUT /cache/{key}; HTTP/1.1 with -P 1, HTTP/2 streams
    /// otherwise, or pipelined HTTP/1.1 with --pipeline.
    Http(HttpArgs),
    /// gRPC (proto/gerdu.proto): unary Get/Put or the Pipeline stream.
    Grpc(GrpcArgs),
    /// Miss ratios of every policy on real traces and Zipf workloads (in-process).
    Hitratio(hitratio::HitArgs),
}

#[derive(Parser, Debug, Clone)]
struct GrpcArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    addr: String,
    /// unary: one call at a time per client; stream: -P operations in flight on one Pipeline stream.
    #[arg(long, value_enum, default_value_t = Mode::Unary)]
    mode: Mode,
    #[command(flatten)]
    load: Load,
}

#[derive(Parser, Debug, Clone)]
struct HttpArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// HTTP/1.1 with -P requests written at once on each connection (as the
    /// Redis and memcached loads pipeline), instead of HTTP/2 streams.
    #[arg(long)]
    pipeline: bool,
    #[command(flatten)]
    load: Load,
}

#[derive(Parser, Debug, Clone)]
struct TextArgs {
    /// Server address (default: the protocol's usual port on 127.0.0.1).
    #[arg(long)]
    addr: Option<String>,
    #[command(flatten)]
    load: Load,
}

#[derive(Parser, Debug, Clone)]
struct Load {
    /// Concurrent clients, each with its own connection.
    #[arg(short = 'c', long, default_value_t = 50)]
    clients: usize,
    /// Total requests (ignored with --duration).
    #[arg(short = 'n', long, default_value_t = 200_000)]
    requests: u64,
    /// Run this many seconds instead of -n requests.
    #[arg(long)]
    duration: Option<f64>,
    /// Value size in bytes.
    #[arg(short = 'd', long, default_value_t = 100)]
    data_size: usize,
    /// Number of distinct keys.
    #[arg(short = 'r', long, default_value_t = 100_000)]
    keyspace: u64,
    /// Key distribution: uniform, or zipf:ALPHA.
    #[arg(long, default_value = "uniform", value_parser = parse_dist)]
    dist: Dist,
    /// Operations: get, set, or mixed (see --get-ratio).
    #[arg(short = 't', long, value_enum, default_value_t = Test::Get)]
    test: Test,
    /// Share of gets in a mixed run.
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    /// Operations in flight per client (pipeline depth; gRPC: stream mode only).
    #[arg(short = 'P', long, default_value_t = 1)]
    depth: usize,
    /// Skip storing every key before a get or mixed run.
    #[arg(long)]
    no_preload: bool,
    /// Seed of the key choice (each client adds its index).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the result as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Unary,
    Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Test {
    Get,
    Set,
    Mixed,
}

#[derive(Clone, Copy, Debug)]
enum Dist {
    Uniform,
    Zipf(f64),
}

fn parse_dist(s: &str) -> Result<Dist, String> {
    match s.split_once(':') {
        None if s == "uniform" => Ok(Dist::Uniform),
        Some(("zipf", alpha)) => {
            let alpha: f64 = alpha.parse().map_err(|e| format!("zipf alpha: {e}"))?;
            if alpha > 0.0 { Ok(Dist::Zipf(alpha)) } else { Err("zipf alpha must be > 0".into()) }
        }
        _ => Err(format!("unknown distribution {s:?} (uniform, zipf:ALPHA)")),
    }
}

/// Picks operations and keys for one client.
struct Picker {
    rng: SmallRng,
    zipf: Option<rand_distr::Zipf<f64>>,
    keyspace: u64,
    test: Test,
    get_ratio: f64,
}

impl Picker {
    fn new(load: &Load, client: usize) -> Picker {
        let zipf = match load.dist {
            Dist::Uniform => None,
            Dist::Zipf(alpha) => Some(rand_distr::Zipf::new(load.keyspace as f64, alpha).expect("valid zipf")),
        };
        Picker {
            rng: SmallRng::seed_from_u64(load.seed.wrapping_add(client as u64)),
            zipf,
            keyspace: load.keyspace.max(1),
            test: load.test,
            get_ratio: load.get_ratio,
        }
    }

    /// Another picker with the same settings and its own random sequence.
    fn fork(&mut self, salt: u64) -> Picker {
        Picker {
            rng: SmallRng::seed_from_u64(self.rng.random::<u64>().wrapping_add(salt)),
            zipf: self.zipf,
            keyspace: self.keyspace,
            test: self.test,
            get_ratio: self.get_ratio,
        }
    }

    /// (is a get, key)
    fn next(&mut self) -> (bool, String) {
        let index = match &self.zipf {
            // Zipf draws 1..=n, 1 the most frequent.
            Some(z) => (z.sample(&mut self.rng) as u64).saturating_sub(1).min(self.keyspace - 1),
            None => self.rng.random_range(0..self.keyspace),
        };
        let get = match self.test {
            Test::Get => true,
            Test::Set => false,
            Test::Mixed => self.rng.random_bool(self.get_ratio.clamp(0.0, 1.0)),
        };
        (get, key(index))
    }
}

fn key(index: u64) -> String {
    format!("key:{index:012}")
}

/// What clients share: the request budget and the progress counter.
struct Budget {
    left: AtomicU64,
    deadline: Option<Instant>,
    done: AtomicU64,
}

impl Budget {
    fn take(&self) -> bool {
        match self.deadline {
            Some(d) => Instant::now() < d,
            None => self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok(),
        }
    }
}

/// One client's results.
struct Tally {
    latency_us: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            errors: 0,
            first_error: None,
        }
    }

    fn record(&mut self, since: Instant) {
        self.latency_us.saturating_record(since.elapsed().as_micros().max(1) as u64);
    }

    fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latency_us.add(&other.latency_us).expect("same histogram bounds");
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

async fn connect(addr: &str) -> Result<GerduClient<Channel>, String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    Ok(GerduClient::new(channel).max_decoding_message_size(usize::MAX))
}

fn put_request(key: String, value: &Bytes) -> pb::PutRequest {
    pb::PutRequest { key, value: value.clone(), ..Default::default() }
}

/// Stores every key once (untimed): each worker (a connection and what it
/// needs) takes `chunk` keys at a time from a shared counter and hands the
/// range to `store`, until the key space is done. Shared by every protocol.
async fn preload_ranges<W, F, Fut>(keyspace: u64, chunk: u64, workers: Vec<W>, store: F) -> Result<(), String>
where
    W: Send + 'static,
    F: Fn(W, std::ops::Range<u64>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<W, String>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            let (next, store) = (next.clone(), store.clone());
            tokio::spawn(async move {
                loop {
                    let start = next.fetch_add(chunk, Ordering::Relaxed);
                    if start >= keyspace {
                        return Ok::<(), String>(());
                    }
                    worker = store(worker, start..(start + chunk).min(keyspace)).await?;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// Stores every key once (untimed), in MultiPut batches over a few connections.
async fn preload(addr: &str, load: &Load, value: &Bytes) -> Result<(), String> {
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(addr).await?);
    }
    let value = value.clone();
    preload_ranges(load.keyspace, 1000, clients, move |mut client, keys| {
        let items = keys.map(|i| put_request(key(i), &value)).collect();
        async move {
            client.multi_put(pb::MultiPutRequest { items }).await.map_err(|e| format!("preload: {e}"))?;
            Ok(client)
        }
    })
    .await
}

async fn unary_client(
    mut client: GerduClient<Channel>,
    mut picker: Picker,
    value: Bytes,
    budget: Arc<Budget>,
) -> Tally {
    let mut tally = Tally::new();
    while budget.take() {
        let (get, key) = picker.next();
        let start = Instant::now();
        let result = if get {
            // A miss (NOT_FOUND) is an answer, not an error.
            match client.get(pb::GetRequest { key }).await {
                Err(s) if s.code() != tonic::Code::NotFound => Err(s),
                _ => Ok(()),
            }
        } else {
            client.put(put_request(key, &value)).await.map(|_| ())
        };
        tally.record(start);
        if let Err(s) = result {
            tally.error(|| s.to_string());
        }
        budget.done.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

async fn stream_client(
    mut client: GerduClient<Channel>,
    mut picker: Picker,
    value: Bytes,
    depth: usize,
    budget: Arc<Budget>,
) -> Tally {
    let mut tally = Tally::new();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::Operation>(depth.max(1));
    let outbound = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|op| (op, rx)) });
    let mut results = match client.pipeline(outbound).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            tally.error(|| s.to_string());
            return tally;
        }
    };
    // Results come back in the order sent: a queue of send times is enough.
    let mut sent = std::collections::VecDeque::with_capacity(depth);
    let mut id = 0u64;
    loop {
        while sent.len() < depth.max(1) && budget.take() {
            let (get, key) = picker.next();
            let op = if get {
                operation::Op::Get(pb::GetRequest { key })
            } else {
                operation::Op::Put(put_request(key, &value))
            };
            id += 1;
            if tx.send(pb::Operation { id, op: Some(op) }).await.is_err() {
                break;
            }
            sent.push_back(Instant::now());
        }
        let Some(since) = sent.pop_front() else { break };
        match results.next().await {
            Some(Ok(r)) => {
                tally.record(since);
                let code = r.status.map_or(0, |s| s.code);
                if code != 0 && code != tonic::Code::NotFound as i32 {
                    tally.error(|| format!("status {code}"));
                }
            }
            Some(Err(s)) => {
                tally.error(|| s.to_string());
                break;
            }
            None => {
                tally.error(|| "stream ended early".into());
                break;
            }
        }
        budget.done.fetch_add(1, Ordering::Relaxed);
    }
    drop(tx);
    tally
}

/// Runs one task per client (`run` makes it), shows progress on a
/// terminal, and adds up what the clients measured: (tally, seconds).
async fn drive<C, F, Fut>(load: &Load, clients: Vec<C>, run: F) -> Result<(Tally, f64), String>
where
    F: Fn(C, Picker, Bytes, Arc<Budget>) -> Fut,
    Fut: std::future::Future<Output = Tally> + Send + 'static,
{
    let value = Bytes::from(vec![b'x'; load.data_size]);
    let budget = Arc::new(Budget {
        left: AtomicU64::new(load.requests),
        deadline: load.duration.map(|secs| Instant::now() + Duration::from_secs_f64(secs)),
        done: AtomicU64::new(0),
    });
    let started = Instant::now();
    let progress = std::io::stderr().is_terminal().then(|| {
        let budget = budget.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = budget.done.load(Ordering::Relaxed);
                let rate = done as f64 / started.elapsed().as_secs_f64();
                eprint!("\r{done} requests, {rate:.0} ops/s   ");
            }
        })
    });
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| tokio::spawn(run(client, Picker::new(load, i), value.clone(), budget.clone())))
        .collect();
    let mut total = Tally::new();
    for t in tasks {
        total.merge(t.await.map_err(|e| e.to_string())?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    Ok((total, elapsed))
}

async fn run_grpc(args: GrpcArgs) -> Result<(), String> {
    let load = args.load.clone();
    if load.test != Test::Set && !load.no_preload {
        preload(&args.addr, &load, &Bytes::from(vec![b'x'; load.data_size])).await?;
    }
    let mut clients = Vec::with_capacity(load.clients);
    for _ in 0..load.clients.max(1) {
        clients.push(connect(&args.addr).await?);
    }
    let (mode, depth) = (args.mode, load.depth.max(1));
    let (total, elapsed) = drive(&load, clients, |client, picker, value, budget| async move {
        match mode {
            Mode::Unary => unary_client(client, picker, value, budget).await,
            Mode::Stream => stream_client(client, picker, value, depth, budget).await,
        }
    })
    .await?;
    let (mode, depth) = match args.mode {
        Mode::Unary => ("unary", 1),
        Mode::Stream => ("stream", depth),
    };
    report("grpc", mode, &load, depth, &total, elapsed);
    Ok(())
}

async fn run_text(protocol: &'static str, wire: text::Wire, args: TextArgs) -> Result<(), String> {
    let default = if wire == text::Wire::Resp { "127.0.0.1:6379" } else { "127.0.0.1:11211" };
    run_pipelined(protocol, wire, &args.addr.unwrap_or_else(|| default.to_string()), args.load).await
}

/// Clients that write `-P` requests at once and read their replies.
async fn run_pipelined(protocol: &'static str, wire: text::Wire, addr: &str, load: Load) -> Result<(), String> {
    let addr = addr.to_string();
    if load.test != Test::Set && !load.no_preload {
        text::preload(&addr, wire, load.keyspace, &Bytes::from(vec![b'x'; load.data_size])).await?;
    }
    let mut clients = Vec::with_capacity(load.clients);
    for _ in 0..load.clients.max(1) {
        clients.push(text::connect(&addr).await?);
    }
    let depth = load.depth.max(1);
    let (total, elapsed) =
        drive(&load, clients, |stream, picker, value, budget| text::client(stream, wire, picker, value, depth, budget))
            .await?;
    report(protocol, "pipeline", &load, depth, &total, elapsed);
    Ok(())
}

async fn run_http(args: HttpArgs) -> Result<(), String> {
    let load = args.load;
    if args.pipeline {
        return run_pipelined("http", text::Wire::Http1, &args.addr, load).await;
    }
    let addr: Arc<str> = args.addr.into();
    if load.test != Test::Set && !load.no_preload {
        http::preload(&addr, load.keyspace, &Bytes::from(vec![b'x'; load.data_size])).await?;
    }
    let depth = load.depth.max(1);
    let mut clients = Vec::with_capacity(load.clients);
    for _ in 0..load.clients.max(1) {
        clients.push(http::connect(&addr, depth).await?);
    }
    let (total, elapsed) = drive(&load, clients, |sender, picker, value, budget| {
        http::client(sender, addr.clone(), picker, value, depth, budget)
    })
    .await?;
    report("http", if depth > 1 { "h2" } else { "h1" }, &load, depth, &total, elapsed);
    Ok(())
}

fn report(protocol: &str, mode: &str, load: &Load, depth: usize, t: &Tally, elapsed: f64) {
    let ops = t.latency_us.len();
    let rate = ops as f64 / elapsed;
    let ms = |q: f64| t.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let test = match load.test {
        Test::Get => "get",
        Test::Set => "set",
        Test::Mixed => "mixed",
    };
    if load.json {
        let out = serde_json::json!({
            "protocol": protocol, "mode": mode, "test": test, "clients": load.clients, "depth": depth,
            "data_size": load.data_size, "keyspace": load.keyspace, "ops": ops, "seconds": elapsed,
            "ops_per_sec": rate, "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "errors": t.errors,
        });
        println!("{out}");
    } else {
        println!(
            "{protocol} {mode} {test} c={} P={depth}: {rate:.0} ops/s  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  errors {}  ({ops} ops in {elapsed:.2} s)",
            load.clients,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            t.errors
        );
    }
    if let Some(e) = &t.first_error {
        eprintln!("first error: {e}");
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.protocol {
            Protocol::Redis(args) => run_text("redis", text::Wire::Resp, args).await,
            Protocol::Memcache(args) => run_text("memcache", text::Wire::Memcache, args).await,
            Protocol::Http(args) => run_http(args).await,
            Protocol::Grpc(args) => run_grpc(args).await,
            Protocol::Hitratio(args) => hitratio::run(args),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gerdu-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(args: &[&str]) -> Load {
        let cli = Cli::try_parse_from([&["gerdu-bench", "grpc"], args].concat()).unwrap();
        let Protocol::Grpc(g) = cli.protocol else { panic!("not grpc") };
        g.load
    }

    #[test]
    fn distributions_parse() {
        assert!(matches!(parse_dist("uniform"), Ok(Dist::Uniform)));
        assert!(matches!(parse_dist("zipf:0.99"), Ok(Dist::Zipf(a)) if a == 0.99));
        assert!(parse_dist("zipf:0").is_err());
        assert!(parse_dist("zipf:x").is_err());
        assert!(parse_dist("normal").is_err());
    }

    #[test]
    fn keys_stay_in_the_key_space_and_zipf_is_skewed() {
        let mut uniform = Picker::new(&load(&["-r", "1000"]), 0);
        let mut zipf = Picker::new(&load(&["-r", "1000", "--dist", "zipf:1.2"]), 0);
        let mut hottest = 0;
        for _ in 0..10_000 {
            let (get, k) = uniform.next();
            assert!(get && k.as_str() < "key:000000001000", "{k}");
            let (_, k) = zipf.next();
            assert!(k.as_str() < "key:000000001000", "{k}");
            hottest += usize::from(k == "key:000000000000");
        }
        // Rank 1 of Zipf(1.2) over 1000 keys draws about 22% of the samples.
        assert!((1_500..3_000).contains(&hottest), "{hottest}");
    }

    #[test]
    fn mixed_runs_follow_the_get_ratio() {
        let mut p = Picker::new(&load(&["-t", "mixed", "--get-ratio", "0.25"]), 3);
        let gets = (0..10_000).filter(|_| p.next().0).count();
        assert!((2_200..2_800).contains(&gets), "{gets}");
        let mut p = Picker::new(&load(&["-t", "set"]), 3);
        assert!((0..100).all(|_| !p.next().0));
    }

    #[test]
    fn a_count_budget_hands_out_exactly_n() {
        let b = Budget { left: AtomicU64::new(3), deadline: None, done: AtomicU64::new(0) };
        assert_eq!((0..10).filter(|_| b.take()).count(), 3);
    }
}
