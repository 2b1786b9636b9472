//! Peer networking, server side: the `-raft` address serves two protocols,
//! told apart by a connection's first 8 bytes: the framed peer RPC
//! ([`super::rpc`], AppendEntries and Vote) after its magic, else the
//! `gerdu.raft.RaftPeer` gRPC service (HTTP/2, whose preface those bytes
//! begin, handed to hyper untouched).
//!
//! Raft's messages go straight to openraft; forwarded client requests run
//! through this node's raft stage (only while it leads: otherwise the sender
//! is told `NotLeader` and tries the new leader); joins and leaves run the
//! membership change here if this node leads, else they are passed on.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use gerdu_api::AdminError;
use gerdu_api::net::{ServeOptions, Stream};
use gerdu_api::tokio_util::sync::CancellationToken;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::RaftNode;
use super::types::{NodeId, TypeConfig};
use super::wire::{self, ForwardRequest, pb};

/// The peer service of one node.
pub struct PeerService {
    node: Arc<RaftNode>,
}

fn blob<T: serde::Serialize>(value: &T) -> Result<Response<pb::Blob>, Status> {
    Ok(Response::new(pb::Blob { data: wire::encode(value) }))
}

fn decode<T: serde::de::DeserializeOwned>(req: Request<pb::Blob>) -> Result<T, Status> {
    wire::decode(&req.into_inner().data).map_err(Status::invalid_argument)
}

/// The status a membership error travels as.
pub fn admin_status(e: AdminError) -> Status {
    match e {
        AdminError::NotImplemented(m) => Status::unimplemented(m),
        AdminError::BadRequest(m) => Status::invalid_argument(m),
        AdminError::Conflict(m) => Status::already_exists(m),
        AdminError::NotFound(m) => Status::not_found(m),
        AdminError::Unavailable(m) => Status::unavailable(m),
        e @ AdminError::NotLeader(_) => Status::failed_precondition(e.to_string()),
    }
}

/// The membership error a peer's status stands for.
pub fn status_admin(s: &Status) -> AdminError {
    let m = s.message().to_string();
    match s.code() {
        tonic::Code::Unimplemented => AdminError::NotImplemented(m),
        tonic::Code::InvalidArgument => AdminError::BadRequest(m),
        tonic::Code::AlreadyExists => AdminError::Conflict(m),
        tonic::Code::NotFound => AdminError::NotFound(m),
        _ => AdminError::Unavailable(format!("the leader did not answer: {s}")),
    }
}

#[tonic::async_trait]
impl pb::raft_peer_server::RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(req)?;
        blob(&self.node.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let rpc: VoteRequest<NodeId> = decode(req)?;
        blob(&self.node.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<pb::SnapshotChunk>) -> Result<Response<pb::Blob>, Status> {
        let chunk = req.into_inner();
        let mut rpc: InstallSnapshotRequest<TypeConfig> =
            wire::decode(&chunk.header).map_err(Status::invalid_argument)?;
        rpc.data = chunk.data.into();
        blob(&self.node.raft.install_snapshot(rpc).await)
    }

    async fn forward(&self, req: Request<pb::Blob>) -> Result<Response<pb::Blob>, Status> {
        let batch: Vec<ForwardRequest> = decode(req)?;
        blob(&self.node.serve_forwarded_batch(batch).await)
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        let j = req.into_inner();
        let leader = self.node.join(j.id, j.raft_addr, j.http_addr).await.map_err(admin_status)?;
        Ok(Response::new(pb::JoinResponse { leader }))
    }

    async fn leave(&self, req: Request<pb::LeaveRequest>) -> Result<Response<pb::LeaveResponse>, Status> {
        self.node.leave(req.into_inner().id).await.map_err(admin_status)?;
        Ok(Response::new(pb::LeaveResponse {}))
    }
}

/// Most peer connections at once (peers keep one or two each).
const MAX_PEER_CONNECTIONS: usize = 4096;

/// Serves the peer service on `listener` until `shutdown` is cancelled; with
/// `tls`, only to peers that present a certificate the CA signed. Accepting,
/// the TLS handshake and the connection limit are the listeners' own
/// ([`gerdu_api::net::serve`]).
pub async fn serve(
    listener: TcpListener,
    node: Arc<RaftNode>,
    shutdown: CancellationToken,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let service = pb::raft_peer_server::RaftPeerServer::new(PeerService { node: node.clone() })
        .max_decoding_message_size(1 << 30)
        .max_encoding_message_size(1 << 30);
    let opts = ServeOptions { name: "raft", tls, max_connections: MAX_PEER_CONNECTIONS, shutdown: shutdown.clone() };
    let handler = move |stream, peer| serve_conn(stream, peer, node.clone(), service.clone(), shutdown.clone());
    gerdu_api::net::serve(listener, opts, handler, |_stream| async {}).await;
}

/// How long a new peer connection may take to send its first 8 bytes.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_conn<S>(
    mut stream: Stream,
    peer: SocketAddr,
    node: Arc<RaftNode>,
    service: S,
    shutdown: CancellationToken,
) where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut head = [0u8; 8];
    let hello = tokio::select! {
        r = tokio::time::timeout(HELLO_TIMEOUT, stream.read_exact(&mut head)) => r,
        _ = shutdown.cancelled() => return,
    };
    match hello {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return tracing::debug!(%peer, "raft peer connection closed before its first bytes: {e}"),
        Err(_) => return tracing::debug!(%peer, "raft peer connection sent nothing"),
    }
    if &head == super::rpc::MAGIC {
        if let Err(e) = super::rpc::serve(stream, node, shutdown).await {
            tracing::debug!(%peer, "raft peer RPC connection: {e}");
        }
        return;
    }
    let stream = Rewind { head, pos: 0, inner: stream };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    // Peer connections end with the node: no drain (raft retries elsewhere).
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(%peer, "raft peer connection: {e}");
        },
        _ = shutdown.cancelled() => {}
    }
}

/// A stream whose first bytes were already read: they are read again first.
struct Rewind {
    head: [u8; 8],
    pos: usize,
    inner: Stream,
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.pos < self.head.len() {
            let n = buf.remaining().min(self.head.len() - self.pos);
            buf.put_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
