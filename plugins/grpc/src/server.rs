//! gRPC connections: HTTP/2 (h2c, or ALPN `h2` over TLS) with hyper over the
//! shared listener plumbing (TLS, connection limit, drain) of
//! [`gerdu_api::net`], and a small router that sends each call to its
//! service by path: `gerdu.Gerdu`, `grpc.health.v1.Health`, and server
//! reflection (`grpc.reflection.v1` and `v1alpha`, for grpcurl and older
//! tools). Any other path gets `UNIMPLEMENTED`.
//!
//! tonic's `router` feature would do the routing too, at the price of
//! compiling axum; four prefixes do not need it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use gerdu_api::net::Stream;
use gerdu_api::tokio_util::sync::CancellationToken;
use http::HeaderValue;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tonic::Status;
use tonic::body::Body;
use tonic::codegen::Service as TowerService;

/// How long a draining connection may keep streams open (health `Watch`
/// streams never end by themselves) before it is closed.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

type Response = http::Response<Body>;
type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// The services of the gRPC port, by path prefix.
pub(crate) struct Routes<G, H, R1, R2> {
    pub(crate) gerdu: G,
    pub(crate) health: H,
    pub(crate) reflection_v1: R1,
    pub(crate) reflection_v1alpha: R2,
}

/// Calls `svc` (a generated tonic server: always ready, never fails).
fn forward<S>(svc: &S, req: http::Request<Incoming>) -> ResponseFuture
where
    S: TowerService<http::Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let mut svc = svc.clone();
    Box::pin(async move { svc.call(req).await })
}

/// The router: one per server, shared by every connection.
pub(crate) struct Router<G, H, R1, R2>(pub(crate) Arc<Routes<G, H, R1, R2>>);

impl<G, H, R1, R2> Clone for Router<G, H, R1, R2> {
    fn clone(&self) -> Self {
        Router(self.0.clone())
    }
}

impl<G, H, R1, R2> hyper::service::Service<http::Request<Incoming>> for Router<G, H, R1, R2>
where
    G: TowerService<http::Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    G::Future: Send + 'static,
    H: TowerService<http::Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    H::Future: Send + 'static,
    R1: TowerService<http::Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    R1::Future: Send + 'static,
    R2: TowerService<http::Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + Sync + 'static,
    R2::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        let routes = &self.0;
        let path = req.uri().path();
        if path.starts_with("/gerdu.Gerdu/") {
            let call = forward(&routes.gerdu, req);
            Box::pin(async move { call.await.map(size_status) })
        } else if path.starts_with("/grpc.health.v1.Health/") {
            forward(&routes.health, req)
        } else if path.starts_with("/grpc.reflection.v1.ServerReflection/") {
            forward(&routes.reflection_v1, req)
        } else if path.starts_with("/grpc.reflection.v1alpha.ServerReflection/") {
            forward(&routes.reflection_v1alpha, req)
        } else {
            let status = Status::unimplemented(format!("unknown service or method {path}"));
            Box::pin(std::future::ready(Ok(status.into_http())))
        }
    }
}

/// tonic answers a request message over the decoding limit with
/// `OUT_OF_RANGE` before the handler runs (a trailers-only response);
/// gerdu answers every size limit with `RESOURCE_EXHAUSTED`, as grpc-go does.
fn size_status(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    let over_limit = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers.get("grpc-message").and_then(|m| m.to_str().ok()).is_some_and(|m| m.contains("too%20large"));
    if over_limit {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
    resp
}

/// Serves one connection until the client leaves or the server drains.
pub(crate) async fn serve_conn<S>(io: Stream, peer: SocketAddr, router: S, shutdown: CancellationToken)
where
    S: hyper::service::Service<http::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(io), router);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            // GOAWAY: finish the calls in flight, accept no new ones.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(DRAIN_LIMIT, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return tracing::debug!(%peer, "grpc connection: streams still open after the drain limit"),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, "grpc connection: {e}");
    }
}
