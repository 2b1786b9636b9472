//! The `metrics` middleware: per-command request counters and latency (by
//! protocol and op), hit/miss and add/delete counters of the Go original, and
//! whole-request errors. Latency is measured from the moment the protocol
//! finished parsing the request (`RequestContext::received`) to the reply.

use std::sync::Arc;

use gerdu_api::{
    Call, Middleware, MiddlewareContext, MiddlewarePlugin, Op, Pipeline, PipelineError, PluginError, Reply, Response,
    register_middleware,
};

use crate::metrics::ServerMetrics;

struct MetricsMiddleware {
    metrics: Arc<ServerMetrics>,
}

fn error_label(e: &PipelineError) -> &'static str {
    match e {
        PipelineError::Unauthenticated => "unauthenticated",
        PipelineError::BadCredentials => "bad_credentials",
        PipelineError::Unavailable(_) => "unavailable",
        PipelineError::ShuttingDown => "shutting_down",
        PipelineError::Internal(_) => "internal",
    }
}

/// The ops of a request, kept without allocating for the usual case of a
/// request whose commands are all of one op.
enum Ops {
    Uniform(Op, usize),
    Mixed(Vec<Op>),
}

impl Ops {
    fn of(commands: &[gerdu_api::Command]) -> Ops {
        let Some(first) = commands.first().map(|c| c.op()) else {
            return Ops::Uniform(Op::Get, 0);
        };
        if commands.iter().all(|c| c.op() == first) {
            Ops::Uniform(first, commands.len())
        } else {
            Ops::Mixed(commands.iter().map(|c| c.op()).collect())
        }
    }

    /// The op of command `i`.
    fn at(&self, i: usize) -> Op {
        match self {
            Ops::Uniform(op, _) => *op,
            Ops::Mixed(ops) => ops[i],
        }
    }

    /// Calls `f(op, n)` for each run of `n` consecutive commands of one op.
    fn runs(&self, mut f: impl FnMut(Op, usize)) {
        match self {
            Ops::Uniform(_, 0) => {}
            Ops::Uniform(op, n) => f(*op, *n),
            Ops::Mixed(ops) => {
                let mut i = 0;
                while i < ops.len() {
                    let run = ops[i..].iter().take_while(|o| **o == ops[i]).count();
                    f(ops[i], run);
                    i += run;
                }
            }
        }
    }
}

/// The Go original's counters, summed over a request and added once each.
fn count(m: &ServerMetrics, ops: &Ops, replies: &[Reply]) {
    let (mut hits, mut misses, mut adds, mut deletes) = (0u64, 0u64, 0u64, 0u64);
    for (i, reply) in replies.iter().enumerate() {
        match (ops.at(i), reply) {
            (_, Reply::Values(items)) => {
                let found = items.iter().filter(|i| i.is_some()).count() as u64;
                hits += found;
                misses += items.len() as u64 - found;
            }
            (Op::Get, Reply::Meta { item, .. }) => {
                hits += u64::from(item.is_some());
                misses += u64::from(item.is_none());
            }
            (Op::Set, Reply::Stored { .. }) => adds += 1,
            (Op::Delete, Reply::Ok) => deletes += 1,
            (Op::Delete, Reply::Count(n)) => deletes += n,
            (Op::Delete, Reply::Value(Some(_))) => deletes += 1,
            _ => {}
        }
    }
    for (counter, n) in [(&m.hits, hits), (&m.misses, misses), (&m.adds, adds), (&m.deletes, deletes)] {
        if n > 0 {
            counter.inc_by(n);
        }
    }
}

/// Records one request's answer: counters and latency by protocol and op,
/// the Go original's counters, or the whole-request error.
fn record(
    m: &ServerMetrics,
    protocol: &'static str,
    received: gerdu_api::clock::Moment,
    ops: &Ops,
    result: &Result<Response, PipelineError>,
) {
    match result {
        Ok(resp) => {
            // One latency observation per run of same-op commands: they were
            // answered together, at the same instant.
            let elapsed = received.elapsed_secs();
            let series = m.protocol_series(protocol);
            ops.runs(|op, n| {
                let s = series.get(op);
                s.requests.inc_by(n as u64);
                s.duration.observe(elapsed);
            });
            count(m, ops, &resp.replies);
        }
        Err(e) => m.errors.with_label_values(&[protocol, error_label(e)]).inc(),
    }
}

impl Middleware for MetricsMiddleware {
    fn layer(&self, inner: Pipeline) -> Pipeline {
        let metrics = self.metrics.clone();
        Pipeline::from_fn(move |req| {
            let (protocol, received) = (req.ctx.protocol, req.ctx.received);
            let ops = Ops::of(&req.commands);
            // At once when the inner stages answered at once (a read on a
            // leader), else when they do.
            match inner.call(req).now() {
                Ok(result) => {
                    record(&metrics, protocol, received, &ops, &result);
                    Call::ready(result)
                }
                Err(call) => {
                    let m = metrics.clone();
                    Call::waiting(async move {
                        let result = call.await;
                        record(&m, protocol, received, &ops, &result);
                        result
                    })
                }
            }
        })
    }
}

fn build(ctx: &MiddlewareContext<'_>) -> Result<Box<dyn Middleware>, PluginError> {
    let metrics = ctx
        .extensions
        .get::<Arc<ServerMetrics>>()
        .ok_or_else(|| PluginError::Other("the metrics middleware needs the server metrics".into()))?;
    Ok(Box::new(MetricsMiddleware { metrics: metrics.clone() }))
}

register_middleware!(MiddlewarePlugin {
    name: "metrics",
    description: "Prometheus request counters, latency histograms, hits/misses, adds/deletes",
    build,
});
