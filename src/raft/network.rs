//! Peer networking, client side: openraft's [`RaftNetworkFactory`], plus the
//! clients the node uses to forward requests and membership changes to the
//! leader.
//!
//! AppendEntries and Vote travel over the framed peer RPC ([`super::rpc`]):
//! each openraft client (one per replication stream, and one per peer for
//! every vote round and every read-index round) holds a connection while
//! it lives, taken from the node's pool of idle ones or dialed, redialed
//! after any failure, and left in the pool when the client goes (a
//! read-index round used to dial every follower afresh: 4,756 sockets in
//! `TIME_WAIT` after 50,000 linearizable GETs on a leader). Snapshots,
//! forwarding and membership use the tonic service of `proto/raft.proto`: one HTTP/2 channel per peer address, created lazily
//! and shared, which tonic reconnects after a failure. A peer that cannot
//! be connected is reported to openraft as `Unreachable` (it backs off);
//! other transport failures as `Network`; a raft error the peer answered as
//! `RemoteError`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use parking_lot::Mutex;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use super::types::{Node, NodeId, TypeConfig};
use super::wire::{self, pb};

/// A peer's client.
pub type PeerClient = pb::raft_peer_client::RaftPeerClient<Channel>;

/// The largest peer message (log batches, snapshot chunks).
const MAX_MESSAGE: usize = 1 << 30;

/// Channels to peers by address; cheap to clone.
#[derive(Clone, Default)]
pub struct Network {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Mutual TLS (`[raft.tls]`): this node's identity and the peers' CA.
    tls: Option<Arc<crate::tls::PeerTls>>,
    /// Peers that could not be reached at the last attempt (logged once
    /// when they go, once when they come back).
    down: Arc<Mutex<std::collections::HashSet<NodeId>>>,
    /// Idle framed connections, for openraft's short-lived clients.
    pool: super::rpc::Pool,
    /// Set by [`Network::drop_outgoing_raft`]: tests' one-way partition.
    dropping: Arc<std::sync::atomic::AtomicBool>,
}

/// The host part of `host:port` (without IPv6 brackets).
pub(crate) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl Network {
    /// Channels that speak TLS to peers when `tls` is given.
    pub fn new(tls: Option<crate::tls::PeerTls>) -> Self {
        Network {
            channels: Arc::default(),
            tls: tls.map(Arc::new),
            down: Arc::default(),
            pool: Default::default(),
            dropping: Arc::default(),
        }
    }

    /// A fault for tests: while `on`, this node's raft messages to its peers
    /// (AppendEntries, Vote, snapshots) fail as if the peers were
    /// unreachable, while theirs to it, and its forwarding and membership
    /// calls, go through. A leader so cut off keeps leading in its own eyes
    /// while the others elect a new one, as in a one-way network partition.
    #[doc(hidden)]
    pub fn drop_outgoing_raft(&self, on: bool) {
        self.dropping.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn endpoint(&self, addr: &str) -> Result<Endpoint, String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| format!("peer address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            use tonic::transport::{Certificate, ClientTlsConfig, Identity};
            let config = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem))
                .domain_name(host_of(addr));
            endpoint = endpoint.tls_config(config).map_err(|e| format!("peer TLS for {addr}: {e}"))?;
        }
        Ok(endpoint)
    }

    /// The read index of the leader at `addr` (`READ_INDEX` over the
    /// framed RPC), within `ttl`.
    pub async fn read_index(
        &self,
        addr: &str,
        ttl: Duration,
    ) -> Result<Result<u64, super::Blocked>, super::rpc::CallError> {
        let mut client = super::rpc::Client::pooled(self.pool.clone());
        client.call(addr, self.tls.as_deref(), super::rpc::READ_INDEX, &(), ttl).await
    }

    /// The client for the peer at `addr` (`host:port`).
    pub fn client(&self, addr: &str) -> Result<PeerClient, String> {
        let channel = {
            let mut channels = self.channels.lock();
            match channels.get(addr) {
                Some(c) => c.clone(),
                None => {
                    let c = self.endpoint(addr)?.connect_lazy();
                    channels.insert(addr.to_string(), c.clone());
                    c
                }
            }
        };
        Ok(PeerClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE))
    }
}

/// Whether a failed call surely never reached the peer's service: the
/// connection (TCP, then TLS) could not be made, so repeating the call
/// cannot apply anything twice. tonic keeps the transport error as the
/// status' source, and wraps a failure to connect in [`tonic::ConnectError`];
/// any other transport failure (a connection reset or closed while the call
/// was on it, a timeout) may have come after the request went out.
pub fn never_sent(status: &tonic::Status) -> bool {
    causes(status).any(|e| e.is::<tonic::ConnectError>())
}

/// A failed call's status for a log or a client: its message, and the
/// innermost cause tonic kept (`transport error: connection reset by peer`).
pub fn describe(status: &tonic::Status) -> String {
    match causes(status).last() {
        Some(e) => format!("{}: {e}", status.message()),
        None => status.message().to_string(),
    }
}

/// The errors behind a failed call's status, outermost first.
fn causes(status: &tonic::Status) -> impl Iterator<Item = &(dyn std::error::Error + 'static)> {
    std::iter::successors(std::error::Error::source(status), |e| e.source())
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Peer {
        Peer {
            target,
            node: node.clone(),
            client: self.client(&node.raft_addr),
            rpc: super::rpc::Client::pooled(self.pool.clone()),
            tls: self.tls.clone(),
            down: self.down.clone(),
            dropping: self.dropping.clone(),
        }
    }
}

/// openraft's handle on one peer.
pub struct Peer {
    target: NodeId,
    node: Node,
    client: Result<PeerClient, String>,
    /// The framed connection for AppendEntries and Vote.
    rpc: super::rpc::Client,
    tls: Option<Arc<crate::tls::PeerTls>>,
    down: Arc<Mutex<std::collections::HashSet<NodeId>>>,
    dropping: Arc<std::sync::atomic::AtomicBool>,
}

type Reply = Result<tonic::Response<pb::Blob>, tonic::Status>;

impl Peer {
    fn client(&self) -> Result<PeerClient, Unreachable> {
        self.reachable()?;
        self.client.clone().map_err(|e| Unreachable::new(&std::io::Error::other(e)))
    }

    /// `Unreachable` while [`Network::drop_outgoing_raft`] is on.
    fn reachable(&self) -> Result<(), Unreachable> {
        match self.dropping.load(std::sync::atomic::Ordering::Relaxed) {
            true => Err(Unreachable::new(&std::io::Error::other(format!("{}: dropped (a test's fault)", self.node)))),
            false => Ok(()),
        }
    }

    /// Logs a peer going away and coming back, once each (openraft itself
    /// would log every retry).
    fn note_reachable(&self, reachable: bool, why: impl FnOnce() -> String) {
        let mut down = self.down.lock();
        if reachable && down.remove(&self.target) {
            tracing::info!(peer = %self.node, "peer reachable again");
        } else if !reachable && down.insert(self.target) {
            tracing::warn!(peer = %self.node, "peer unreachable: {}; retrying", why());
        }
    }

    /// One framed call ([`super::rpc`]) and its answer as openraft wants it.
    #[allow(clippy::result_large_err)]
    async fn call<Req, T, E>(&mut self, kind: u8, req: &Req, ttl: Duration) -> Result<T, RPCError<NodeId, Node, E>>
    where
        Req: serde::Serialize,
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.reachable()?;
        let tls = self.tls.as_deref();
        let reply = self.rpc.call::<Req, Result<T, E>>(&self.node.raft_addr, tls, kind, req, ttl).await;
        let io = |m: String| std::io::Error::other(m);
        let reachable = !matches!(reply, Err(super::rpc::CallError::Connect(_)));
        self.note_reachable(reachable, || match &reply {
            Err(e) => e.to_string(),
            Ok(_) => String::new(),
        });
        match reply {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RemoteError::new_with_node(self.target, self.node.clone(), e).into()),
            Err(e @ super::rpc::CallError::Connect(_)) => {
                Err(Unreachable::new(&io(format!("{}: {e}", self.node))).into())
            }
            Err(e) => Err(NetworkError::new(&io(format!("{}: {e}", self.node))).into()),
        }
    }

    /// Decodes the peer's `Result<T, RaftError<E>>`. (openraft's error type
    /// is large; the trait fixes it.)
    #[allow(clippy::result_large_err)]
    fn finish<T, E>(&self, reply: Result<Reply, tokio::time::error::Elapsed>) -> Result<T, RPCError<NodeId, Node, E>>
    where
        T: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let io = |m: String| std::io::Error::other(m);
        let reachable = !matches!(&reply, Ok(Err(status)) if never_sent(status));
        self.note_reachable(reachable, || match &reply {
            Ok(Err(status)) => status.message().to_string(),
            _ => "timed out".into(),
        });
        let reply = match reply {
            Err(_) => return Err(NetworkError::new(&io(format!("{}: timed out", self.node))).into()),
            Ok(Err(status)) if never_sent(&status) => {
                return Err(Unreachable::new(&io(format!("{}: {}", self.node, status.message()))).into());
            }
            Ok(Err(status)) => return Err(NetworkError::new(&io(format!("{}: {status}", self.node))).into()),
            Ok(Ok(r)) => r.into_inner(),
        };
        match wire::decode::<Result<T, E>>(&reply.data) {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RemoteError::new_with_node(self.target, self.node.clone(), e).into()),
            Err(m) => Err(NetworkError::new(&io(m)).into()),
        }
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(super::rpc::APPEND_ENTRIES, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        let mut client = self.client()?;
        let mut rpc = rpc;
        // The chunk's bytes go raw: serde would write a Vec<u8> byte by byte.
        let data = bytes::Bytes::from(std::mem::take(&mut rpc.data));
        let chunk = pb::SnapshotChunk { header: wire::encode(&rpc), data };
        let reply = tokio::time::timeout(option.hard_ttl(), client.install_snapshot(chunk)).await;
        self.finish(reply)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(super::rpc::VOTE, &rpc, option.hard_ttl()).await
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn a_refused_connection_is_never_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let mut client = Network::new(None).client(&addr).unwrap();
        let status = client.forward(pb::Blob { data: bytes::Bytes::from_static(b"x") }).await.unwrap_err();
        assert!(never_sent(&status), "{status:?}");
    }

    #[tokio::test]
    async fn a_connection_lost_after_the_request_went_out_may_have_been_sent() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        const MARKER: &[u8] = b"the request's own bytes";
        // The peer takes the request (its DATA frame carries the marker as
        // it is) and drops the connection without answering.
        let peer = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !seen.windows(MARKER.len()).any(|w| w == MARKER) {
                let n = conn.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before sending the request");
                seen.extend_from_slice(&buf[..n]);
            }
        });
        let mut client = Network::new(None).client(&addr).unwrap();
        let status = client.forward(pb::Blob { data: bytes::Bytes::from_static(MARKER) }).await.unwrap_err();
        peer.await.unwrap();
        assert!(!never_sent(&status), "{status:?}");
        // What the client is told names the cause, not only "transport error".
        let told = describe(&status);
        assert!(told.starts_with(status.message()) && told.len() > status.message().len() + 2, "{told}");
    }
}
