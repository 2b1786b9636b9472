//! The framed peer RPC that carries raft's own hot messages: AppendEntries
//! and Vote, and followers' read-index requests.
//!
//! Replication is a stream of small request/answer pairs, one at a time per
//! follower (openraft waits for each answer before it sends the next). Over
//! HTTP/2 each pair cost the leader four to five `writev`s (headers, data,
//! window updates, pings) and a few task hand-offs inside hyper on both
//! sides; here it is one `write` and, most of the time, one `read` each way,
//! handled inside the task that asked.
//!
//! The wire, on the `-raft` port beside the gRPC peer service:
//! - the dialer opens a TCP connection (TLS with `[raft.tls]`, as for gRPC)
//!   and sends the 8 bytes [`MAGIC`]; the listener tells the two protocols
//!   apart by these first bytes (an HTTP/2 client starts with `PRI * HTTP`);
//! - then frames: a 4-byte big-endian length, then that many bytes. A
//!   request's first byte is its kind ([`APPEND_ENTRIES`], [`VOTE`],
//!   [`READ_INDEX`]), the rest openraft's request as MessagePack (as [`super::wire`] encodes it
//!   for gRPC); the answer is `Result<response, RaftError>` the same way;
//! - one request at a time per connection, answered in order. A frame over
//!   [`MAX_FRAME`], an unknown kind or a message that does not decode closes
//!   the connection: the dialer sees a network error and redials.
//!
//! Snapshots, forwarded client requests, joins and leaves stay on gRPC:
//! they are rare, and streaming a snapshot is what HTTP/2 is good at.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use gerdu_api::tokio_util::sync::CancellationToken;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::RaftNode;
use super::types::{NodeId, TypeConfig};

/// What a framed connection starts with.
pub const MAGIC: &[u8; 8] = b"GRDRAFT1";

/// Request kind: openraft `AppendEntriesRequest`.
pub const APPEND_ENTRIES: u8 = 1;
/// Request kind: openraft `VoteRequest`.
pub const VOTE: u8 = 2;
/// Request kind: a follower's read index (`()`), answered
/// `Result<u64, Blocked>` ([`super::read_index`]).
pub const READ_INDEX: u8 = 3;

/// The largest frame either side accepts (a log batch can be large).
pub const MAX_FRAME: usize = 1 << 30;

/// The first read of a frame ([`Frames`]): every answer and most requests
/// other than AppendEntries with entries fit.
const HEAD_BITE: usize = 4 << 10;

/// The most [`Frames`] reserves before a frame's bytes arrive.
const FRAME_RESERVE: usize = 1 << 20;

/// How long a dial may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A byte stream either side can run frames over.
trait Io: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Io for T {}

/// Encodes one frame into `out` (cleared first; its room is kept from one
/// frame to the next): length, the kind byte when given, then `value`.
fn frame<T: Serialize>(out: &mut Vec<u8>, kind: Option<u8>, value: &T) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    out.extend(kind);
    // Serializing plain data into a Vec cannot fail.
    rmp_serde::encode::write_named(out, value).expect("MessagePack encoding of a raft message");
    let len = u32::try_from(out.len() - 4).expect("a raft message under 4 GiB");
    out[..4].copy_from_slice(&len.to_be_bytes());
}

/// Either side's reader: frames read straight into one buffer, each handed
/// out as shared [`Bytes`](bytes::Bytes) of it. An AppendEntries frame lives
/// on as its log entries' encodings; read this way it is copied once (by
/// the kernel), where a `BufReader` in front copied it again (2.4% of a
/// follower's CPU under a SET load).
struct Frames<R> {
    io: R,
    buf: bytes::BytesMut,
}

impl<R: AsyncRead + Unpin> Frames<R> {
    fn new(io: R) -> Self {
        Frames { io, buf: bytes::BytesMut::new() }
    }

    /// The next frame's payload; `Ok(None)` at a clean end of stream
    /// before a frame starts.
    async fn next(&mut self) -> io::Result<Option<bytes::Bytes>> {
        use bytes::{Buf, BufMut};
        loop {
            // A frame whose length is not known yet is read in a first bite
            // of at most HEAD_BITE bytes (a small frame whole); then room is
            // made for the rest of it (no more than FRAME_RESERVE before its
            // bytes arrive), and what a bite read ahead is all that is ever
            // copied as the buffer grows.
            let room = match self.buf.get(..4) {
                Some(head) => {
                    let len = u32::from_be_bytes(head.try_into().expect("four bytes")) as usize;
                    if len > MAX_FRAME {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("peer frame of {len} bytes")));
                    }
                    if self.buf.len() >= 4 + len {
                        self.buf.advance(4);
                        return Ok(Some(self.buf.split_to(len).freeze()));
                    }
                    (4 + len - self.buf.len()).min(FRAME_RESERVE)
                }
                None => HEAD_BITE - self.buf.len(),
            };
            if self.buf.capacity() - self.buf.len() < room {
                self.buf.reserve(room);
            }
            if self.io.read_buf(&mut (&mut self.buf).limit(room)).await? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection mid-frame"));
            }
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("malformed peer message: {e}"))
}

/// Why a call failed.
#[derive(Debug)]
pub enum CallError {
    /// No connection could be made: the request surely never left.
    Connect(io::Error),
    /// The connection failed or the answer did not decode; the request may
    /// or may not have reached the peer.
    Io(io::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connect(e) => write!(f, "cannot connect: {e}"),
            CallError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Connects to `addr` within [`CONNECT_TIMEOUT`], refusing a connection to
/// itself. Dialing a port of this host that nothing listens on can make
/// the kernel pick that same port as the connection's own and join the
/// socket to itself (TCP simultaneous open, when the port lies in the
/// ephemeral range): the dialer then holds the port, and the peer that
/// should listen there cannot start (a node restarted on its address
/// failed so in a test while its leader kept redialing it). Go's `net.Dial`
/// refuses such connections the same way.
pub async fn dial(addr: &str) -> io::Result<TcpStream> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    refuse_self(tcp)
}

/// `tcp`, unless it is connected to itself (then closed at once: an
/// error as if nothing listened there).
fn refuse_self(tcp: TcpStream) -> io::Result<TcpStream> {
    if tcp.local_addr()? == tcp.peer_addr()? {
        return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "connected to itself: nothing listens there"));
    }
    Ok(tcp)
}

/// One framed connection to a peer, dialed on first use.
pub struct Conn {
    frames: Frames<Box<dyn Io>>,
    /// The request being sent (its room reused).
    out: Vec<u8>,
}

impl Conn {
    /// Dials `addr` (`host:port`), over TLS when `tls` is given, and
    /// announces the framed protocol.
    pub async fn connect(addr: &str, tls: Option<&crate::tls::PeerTls>) -> io::Result<Conn> {
        let tcp = dial(addr).await?;
        tcp.set_nodelay(true)?;
        let mut io: Box<dyn Io> = match tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls_pki_types::ServerName::try_from(super::network::host_of(addr).to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("peer address {addr}: {e}")))?;
                let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
                let handshake = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
                Box::new(handshake)
            }
        };
        io.write_all(MAGIC).await?;
        Ok(Conn { frames: Frames::new(io), out: Vec::new() })
    }

    /// Sends one request and waits for its answer.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(&mut self, kind: u8, req: &Req) -> io::Result<Resp> {
        frame(&mut self.out, Some(kind), req);
        self.frames.io.write_all(&self.out).await?;
        let Some(answer) = self.frames.next().await? else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the peer closed the connection"));
        };
        rmp_serde::from_slice(&answer).map_err(invalid)
    }
}

/// Idle connections by peer address, shared by a node's clients: openraft
/// makes a client for every read-index round and vote round, not only for
/// its replication streams, and each used to dial (and leave behind a
/// `TIME_WAIT` socket) for its one call.
#[derive(Clone, Default)]
pub struct Pool(Arc<parking_lot::Mutex<std::collections::HashMap<String, Vec<Conn>>>>);

/// Most idle connections kept per peer (one round of each kind at a time
/// needs one each; more would only hold sockets).
const POOL_PER_PEER: usize = 4;

impl Pool {
    fn take(&self, addr: &str) -> Option<Conn> {
        self.0.lock().get_mut(addr).and_then(Vec::pop)
    }

    fn put(&self, addr: String, conn: Conn) {
        let mut idle = self.0.lock();
        let list = idle.entry(addr).or_default();
        if list.len() < POOL_PER_PEER {
            list.push(conn);
        }
    }
}

/// The dialing side's handle: a connection kept between calls, dropped
/// after any failure (the next call redials), and given back to the pool
/// when the handle goes.
pub struct Client {
    conn: Option<(String, Conn)>,
    pool: Pool,
}

impl Client {
    /// A client that takes idle connections from `pool` and leaves its own
    /// there when dropped.
    pub fn pooled(pool: Pool) -> Self {
        Client { conn: None, pool }
    }

    /// One call within `ttl`, dialing `addr` first when not connected. A
    /// connection taken from the pool that fails is replaced by a new one
    /// and the call made once more (the peer may have closed it while it
    /// sat idle; raft's messages are safe to repeat).
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        addr: &str,
        tls: Option<&crate::tls::PeerTls>,
        kind: u8,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, CallError> {
        let attempt = async {
            if self.conn.is_none()
                && let Some(mut conn) = self.pool.take(addr)
                && let Ok(answer) = conn.call(kind, req).await
            {
                self.conn = Some((addr.to_string(), conn));
                return Ok(answer);
            }
            let conn = match &mut self.conn {
                Some((_, c)) => c,
                None => {
                    let conn = Conn::connect(addr, tls).await.map_err(CallError::Connect)?;
                    &mut self.conn.insert((addr.to_string(), conn)).1
                }
            };
            conn.call(kind, req).await.map_err(CallError::Io)
        };
        let result = match tokio::time::timeout(ttl, attempt).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Io(io::Error::new(io::ErrorKind::TimedOut, "timed out"))),
        };
        if result.is_err() {
            // Mid-frame or unknown state: never reuse it.
            self.conn = None;
        }
        result
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some((addr, conn)) = self.conn.take() {
            self.pool.put(addr, conn);
        }
    }
}

/// Serves framed requests on a connection whose [`MAGIC`] was read, until
/// the peer closes it, a frame is bad, or `shutdown` is cancelled.
pub async fn serve<S>(io: S, node: Arc<RaftNode>, shutdown: CancellationToken) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let mut frames = Frames::new(io);
    let mut answer = Vec::new();
    loop {
        // The frame is shared: its entries' encodings are slices of it
        // (`gerdu_api::shared`), and it lives as long as the log holds one.
        let request = tokio::select! {
            r = frames.next() => match r? {
                Some(request) => request,
                None => return Ok(()),
            },
            _ = shutdown.cancelled() => return Ok(()),
        };
        let Some((&kind, body)) = request.split_first() else {
            return Err(invalid("an empty frame"));
        };
        match kind {
            APPEND_ENTRIES => {
                let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> =
                    gerdu_api::shared::decode_from(&request, || rmp_serde::from_slice(body)).map_err(invalid)?;
                frame(&mut answer, None, &node.raft.append_entries(rpc).await);
            }
            VOTE => {
                let rpc: openraft::raft::VoteRequest<NodeId> = rmp_serde::from_slice(body).map_err(invalid)?;
                frame(&mut answer, None, &node.raft.vote(rpc).await);
            }
            READ_INDEX => frame(&mut answer, None, &node.read_index_for_follower().await),
            other => return Err(invalid(format!("unknown request kind {other}"))),
        }
        frames.io.write_all(&answer).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_over_any_split() {
        let value = ("key".to_string(), vec![1u8, 2, 3], 42u64);
        let mut bytes = vec![9; 3];
        frame(&mut bytes, Some(VOTE), &value);
        assert_eq!(u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len() - 4);
        // Two frames back to back, fed through a pipe in small pieces.
        let (mut w, r) = tokio::io::duplex(3);
        let both = [bytes.clone(), bytes.clone()].concat();
        let writer = tokio::spawn(async move { w.write_all(&both).await });
        let mut frames = Frames::new(r);
        for _ in 0..2 {
            let buf = frames.next().await.unwrap().unwrap();
            assert_eq!(buf[0], VOTE);
            let back: (String, Vec<u8>, u64) = rmp_serde::from_slice(&buf[1..]).unwrap();
            assert_eq!(back, value);
        }
        writer.await.unwrap().unwrap();
        assert!(frames.next().await.unwrap().is_none(), "a clean end after the last frame");
    }

    #[tokio::test]
    async fn served_frames_round_trip_over_any_split() {
        let value = ("key".to_string(), vec![7u8; 3000], 42u64);
        let mut one = Vec::new();
        frame(&mut one, Some(APPEND_ENTRIES), &value);
        let mut empty = Vec::new();
        frame(&mut empty, None, &());
        // Three frames back to back (one of them larger than a read's room
        // and one almost empty), through a pipe in pieces of 5 bytes.
        let big = (vec![1u8; 16 * HEAD_BITE + 10], 1u8);
        let mut large = Vec::new();
        frame(&mut large, Some(VOTE), &big);
        let all = [one.clone(), empty.clone(), large.clone()].concat();
        let (mut w, r) = tokio::io::duplex(5);
        let writer = tokio::spawn(async move { w.write_all(&all).await });
        let mut frames = Frames::new(r);
        let first = frames.next().await.unwrap().unwrap();
        assert_eq!(first[0], APPEND_ENTRIES);
        assert_eq!(rmp_serde::from_slice::<(String, Vec<u8>, u64)>(&first[1..]).unwrap(), value);
        assert_eq!(&frames.next().await.unwrap().unwrap()[..], &empty[4..]);
        let third = frames.next().await.unwrap().unwrap();
        assert_eq!(rmp_serde::from_slice::<(Vec<u8>, u8)>(&third[1..]).unwrap(), big);
        writer.await.unwrap().unwrap();
        assert!(frames.next().await.unwrap().is_none(), "a clean end after the last frame");
    }

    #[tokio::test]
    async fn oversized_and_truncated_frames_are_errors() {
        let huge = (MAX_FRAME as u32 + 1).to_be_bytes();
        let err = Frames::new(&huge[..]).next().await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        for cut in [&[0u8, 0][..], &[0, 0, 0, 9, 1, 2]] {
            let err = Frames::new(cut).next().await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[tokio::test]
    async fn a_connection_to_itself_is_refused_and_frees_the_port() {
        // A socket bound to a port and connected to that same port is
        // joined to itself, as a dial may be by chance.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        assert_eq!(tcp.local_addr().unwrap(), tcp.peer_addr().unwrap());
        let err = refuse_self(tcp).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        // The port is free again for the node that should listen there.
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        // An ordinary connection passes.
        let tcp = dial(&addr.to_string()).await.unwrap();
        assert_ne!(tcp.local_addr().unwrap(), tcp.peer_addr().unwrap());
        drop(listener);
    }

    /// A framed peer that answers every request with the number of
    /// connections it has accepted so far, and closes each connection after
    /// `per_conn` answers.
    async fn counting_peer(per_conn: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::spawn(async move {
                    let mut magic = [0u8; 8];
                    tcp.read_exact(&mut magic).await.unwrap();
                    assert_eq!(&magic, MAGIC);
                    let mut frames = Frames::new(tcp);
                    for _ in 0..per_conn {
                        let Ok(Some(_)) = frames.next().await else { return };
                        let mut answer = Vec::new();
                        frame(&mut answer, None, &Ok::<usize, String>(n));
                        frames.io.write_all(&answer).await.unwrap();
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn ask(client: &mut Client, addr: &str) -> usize {
        let answer: Result<usize, String> =
            client.call(addr, None, VOTE, &(), Duration::from_secs(10)).await.map_err(|e| e.to_string()).unwrap();
        answer.unwrap()
    }

    #[tokio::test]
    async fn short_lived_clients_share_pooled_connections() {
        let (addr, accepted) = counting_peer(usize::MAX).await;
        let pool = Pool::default();
        for _ in 0..5 {
            // As openraft's client for one read-index round: one call, dropped.
            let mut client = Client::pooled(pool.clone());
            assert_eq!(ask(&mut client, &addr).await, 1);
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_peer_closed_is_replaced_within_the_call() {
        // The peer closes every connection after one answer (as a restarted
        // peer would have): the next client's pooled connection is dead.
        let (addr, accepted) = counting_peer(1).await;
        let pool = Pool::default();
        assert_eq!(ask(&mut Client::pooled(pool.clone()), &addr).await, 1);
        assert_eq!(ask(&mut Client::pooled(pool.clone()), &addr).await, 2);
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
