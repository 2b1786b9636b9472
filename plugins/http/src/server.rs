//! Accept loop, TLS, connection limit and graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use gerdu_api::tokio_util::sync::CancellationToken;
use gerdu_api::{PluginError, ProtocolContext, Running};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::HttpConfig;
use crate::routes::{self, State};

pub(crate) async fn start(host: String, config: Arc<HttpConfig>, ctx: ProtocolContext) -> Result<Running, PluginError> {
    let addr = format!("{host}:{}", config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| PluginError::Io { context: format!("http: cannot listen on {addr}"), source: e })?;
    let local_addr = listener.local_addr().map_err(|e| PluginError::Io { context: "http".into(), source: e })?;
    let tls = ctx.tls.clone().map(|base| {
        let mut c = (*base).clone();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(c))
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(config.header_timeout_ms));
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let state = Arc::new(State::new(ctx.pipeline.clone(), ctx.admin.clone(), config.clone()));
    let served = accept_loop(listener, builder, state, tls, config, ctx.shutdown);
    Ok(Running { local_addr, served: Box::pin(served) })
}

async fn accept_loop(
    listener: TcpListener,
    builder: Arc<auto::Builder<TokioExecutor>>,
    state: Arc<State>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    config: Arc<HttpConfig>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!("http accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "http: connection limit reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (builder, state, tls, shutdown) = (builder.clone(), state.clone(), tls.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_conn(stream, peer, builder, state, shutdown).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)) => r,
                    };
                    match handshake {
                        Ok(Ok(tls_stream)) => serve_conn(tls_stream, peer, builder, state, shutdown).await,
                        Ok(Err(e)) => tracing::debug!(%peer, "http: TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "http: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

async fn serve_conn<I>(
    io: I,
    peer: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    state: Arc<State>,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| routes::handle(state.clone(), req));
    let conn = builder.serve_connection(TokioIo::new(io), svc);
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
