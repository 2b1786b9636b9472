//! The `metrics` middleware: per-command request counters and latency (by
//! protocol and op), hit/miss and add/delete counters of the Go original, and
//! whole-request errors. Latency is measured from the moment the protocol
//! finished parsing the request (`RequestContext::received`) to the reply.

use std::sync::Arc;

use gerdu_api::{
    Middleware, MiddlewareContext, MiddlewarePlugin, Op, Pipeline, PipelineError, PluginError, Reply,
    register_middleware,
};

use super::stage;
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

fn count(m: &ServerMetrics, op: Op, reply: &Reply) {
    match (op, reply) {
        (_, Reply::Values(items)) => {
            let hits = items.iter().filter(|i| i.is_some()).count() as u64;
            m.hits.inc_by(hits);
            m.misses.inc_by(items.len() as u64 - hits);
        }
        (Op::Set, Reply::Stored { .. }) => m.adds.inc(),
        (Op::Delete, Reply::Count(n)) => m.deletes.inc_by(*n),
        (Op::Delete, Reply::Value(Some(_))) => m.deletes.inc(),
        _ => {}
    }
}

impl Middleware for MetricsMiddleware {
    fn layer(&self, inner: Pipeline) -> Pipeline {
        let metrics = self.metrics.clone();
        stage(move |req| {
            let inner = inner.clone();
            let m = metrics.clone();
            Box::pin(async move {
                let protocol = req.ctx.protocol;
                let received = req.ctx.received;
                let ops: Vec<Op> = req.commands.iter().map(|c| c.op()).collect();
                let result = gerdu_api::pipeline::call(&inner, req).await;
                match &result {
                    Ok(resp) => {
                        let elapsed = received.elapsed().as_secs_f64();
                        for (op, reply) in ops.iter().zip(&resp.replies) {
                            let (counter, histogram) = m.series(protocol, *op);
                            counter.inc();
                            histogram.observe(elapsed);
                            count(&m, *op, reply);
                        }
                    }
                    Err(e) => m.errors.with_label_values(&[protocol, error_label(e)]).inc(),
                }
                result
            })
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
