//! HTTP connections: hyper's auto (HTTP/1.1 + h2) connection over the shared
//! listener plumbing (TLS, connection limit, drain) of [`gerdu_api::net`],
//! with HTTP/1.1 answers gathered per batch ([`crate::gather`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gerdu_api::net::{self, ServeOptions, Stream};
use gerdu_api::tokio_util::sync::CancellationToken;
use gerdu_api::{PluginError, ProtocolContext, Running};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use crate::HttpConfig;
use crate::gather::Gathered;
use crate::routes::{self, State};

pub(crate) async fn start(host: String, config: Arc<HttpConfig>, ctx: ProtocolContext) -> Result<Running, PluginError> {
    let (listener, local_addr) = net::bind("http", &host, config.port).await?;
    let tls = ctx.tls.as_ref().map(|base| net::acceptor(base, &[b"h2", b"http/1.1"]));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(config.header_timeout_ms));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let scheme = if tls.is_some() { "https" } else { "http" };
    let state =
        Arc::new(State::new(ctx.pipeline.clone(), ctx.admin.clone(), config.clone(), ctx.clock.clone(), scheme));
    let shutdown = ctx.shutdown.clone();
    let opts = ServeOptions { name: "http", tls, max_connections: config.max_connections, shutdown: ctx.shutdown };
    let served = net::serve(
        listener,
        opts,
        move |stream, peer| serve_conn(stream, peer, builder.clone(), state.clone(), shutdown.clone()),
        |_stream| async {},
    );
    Ok(Running { local_addr, served: Box::pin(served) })
}

async fn serve_conn(
    io: Stream,
    peer: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let svc = service_fn(move |req| routes::handle(state.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(Gathered::new(io)), svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "http connection: {e}");
    }
}
