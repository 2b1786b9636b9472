//! Listener plumbing every TCP protocol shares: bind, optional TLS, a
//! connection limit, and graceful drain.
//!
//! [`serve`] accepts until the shutdown token is cancelled, runs the TLS
//! handshake (bounded, off the accept loop) when configured, and hands each
//! connection to the protocol's handler as a [`Stream`]. On shutdown it stops
//! accepting, lets handlers finish (they see the same token and close after
//! their request in flight), and returns when every connection is done.
//! Connections over the limit are passed to `reject` (to write the protocol's
//! own "too many clients" answer) and closed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

use crate::plugin::PluginError;

/// A client connection, plain or TLS.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Binds `host:port` for protocol `name`.
pub async fn bind(name: &str, host: &str, port: u16) -> Result<(TcpListener, SocketAddr), PluginError> {
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| PluginError::Io { context: format!("{name}: cannot listen on {addr}"), source: e })?;
    let local = listener.local_addr().map_err(|e| PluginError::Io { context: name.to_string(), source: e })?;
    Ok((listener, local))
}

/// How [`serve`] runs.
pub struct ServeOptions {
    /// Protocol name, for logs.
    pub name: &'static str,
    /// TLS acceptor when TLS is on.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Cancelled on server shutdown.
    pub shutdown: CancellationToken,
}

/// Accepts connections until shutdown, then waits for every handler.
pub async fn serve<H, F, R, RF>(listener: TcpListener, opts: ServeOptions, handler: H, reject: R)
where
    H: Fn(Stream, SocketAddr) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream) -> RF + Send + Sync + 'static,
    RF: Future<Output = ()> + Send + 'static,
{
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let handler = Arc::new(handler);
    loop {
        let (stream, peer) = tokio::select! {
            _ = opts.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!("{} accept: {e}", opts.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "{}: connection limit reached", opts.name);
            tracker.spawn(reject(stream));
            continue;
        };
        let (handler, tls, shutdown, name) = (handler.clone(), opts.tls.clone(), opts.shutdown.clone(), opts.name);
        tracker.spawn(async move {
            let _permit = permit;
            let stream = match tls {
                None => Stream::Plain(stream),
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        r = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)) => r,
                    };
                    match handshake {
                        Ok(Ok(s)) => Stream::Tls(Box::new(s)),
                        Ok(Err(e)) => return tracing::debug!(%peer, "{name}: TLS handshake failed: {e}"),
                        Err(_) => return tracing::debug!(%peer, "{name}: TLS handshake timed out"),
                    }
                }
            };
            handler(stream, peer).await;
        });
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// A TLS acceptor from the server's base config with the given ALPN protocols.
pub fn acceptor(base: &Arc<rustls::ServerConfig>, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let mut config = (**base).clone();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// What a connection's reads wait on besides its input: the server's
/// shutdown and the idle timeout. One per connection, made at its start.
///
/// Both are cheap per read. The shutdown future is registered with the
/// connection's task on the first wait and stays registered (the task is
/// woken when the token is cancelled); later waits check the token's flag
/// instead of polling the future again. The idle timer is one timer for the
/// connection, not one per read: it is armed for the time the connection
/// went back to waiting plus the timeout, and when it fires early (the
/// connection has been served since) it is moved to the new deadline, so a
/// busy connection touches the timer about once per timeout, not once per
/// request.
pub struct Reader {
    shutdown: CancellationToken,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: bool,
    idle: Option<Duration>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// When the connection last went back to waiting for input (after
    /// its last answer was written), with an idle timeout only.
    waiting_since: tokio::time::Instant,
}

impl Reader {
    /// Reads for a connection of a server that stops on `shutdown`, closing
    /// it after `idle` without input (the protocol's idle timeout; `None` =
    /// never).
    pub fn new(shutdown: CancellationToken, idle: Option<Duration>) -> Self {
        Reader {
            cancelled: Box::pin(shutdown.clone().cancelled_owned()),
            shutdown,
            registered: false,
            idle,
            timer: None,
            waiting_since: tokio::time::Instant::now(),
        }
    }

    /// Whether the server is shutting down; on the first call, also registers
    /// the connection's task to be woken when it does.
    fn shutting_down(&mut self, cx: &mut Context<'_>) -> bool {
        if self.registered {
            return self.shutdown.is_cancelled();
        }
        self.registered = true;
        self.cancelled.as_mut().poll(cx).is_ready()
    }

    /// Whether the connection has been idle for the timeout; else the timer
    /// is armed to wake the task at the deadline.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(idle) = self.idle else { return false };
        let deadline = self.waiting_since + idle;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if tokio::time::Instant::now() >= deadline {
                return true;
            }
            // Served since the timer was armed: wait for the new deadline.
            timer.as_mut().reset(deadline);
        }
    }

    /// Reads more of the connection's input into `buf`. `None` when the peer
    /// closed or failed, the server is shutting down, or nothing arrived for
    /// the idle timeout.
    ///
    /// The read is polled first. Shutdown is checked whenever the read has
    /// to wait (so a waiting connection is woken by it) and when the input
    /// was there at once (so a client that never stops sending still sees
    /// it), but not again when the read completes after a wait.
    pub async fn read_more(&mut self, stream: &mut Stream, buf: &mut BytesMut) -> Option<usize> {
        // Idle from here: a request that took long to answer is not idle
        // time (Redis counts from the last interaction, reads and writes).
        if self.idle.is_some() {
            self.waiting_since = tokio::time::Instant::now();
        }
        let mut read = std::pin::pin!(stream.read_buf(buf));
        let mut first = true;
        std::future::poll_fn(|cx| {
            let waited = !std::mem::replace(&mut first, false);
            if let Poll::Ready(r) = read.as_mut().poll(cx) {
                if !waited && self.shutting_down(cx) {
                    return Poll::Ready(None);
                }
                return Poll::Ready(r.ok().filter(|&n| n > 0));
            }
            if self.shutting_down(cx) || self.idle_expired(cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }
}

/// Answers a connection over the limit with the protocol's `reply` and
/// closes it (the `reject` handler of [`serve`]).
pub async fn refuse(mut stream: TcpStream, reply: &'static [u8]) {
    let _ = stream.write_all(reply).await;
    let _ = stream.shutdown().await;
}
