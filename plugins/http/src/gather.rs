//! HTTP/1.1 answers gathered into one write per batch of pipelined requests.
//! kvbench HTTP GET `-P 16`: 52k-88k → 160k-261k requests/s, `strace -c`
//! 50,000 → 6,250 writes for 50,000 GETs (benches/JOURNAL.md, 2026-12-07).
//!
//! hyper's HTTP/1.1 server writes and flushes every answer on its own: a
//! client with 16 requests in flight got 16 `writev`s for the one `read`
//! that brought them (`strace -c`), and pipelining bought nothing. hyper's
//! own remedy (`pipeline_flush`) is marked experimental and loses answers:
//! with it, a `400` for a malformed request, the answer to a request with
//! `Connection: close` that has another request behind it, and HTTP/1.0
//! answers were never sent (checked 2026-12-07 with hyper 1.12).
//!
//! [`Gathered`] sits between hyper and a plain TCP connection instead. A
//! flush leaves the answers in its buffer; they go out together when hyper
//! next reads (by then it has answered every request it had read: a
//! pipelined batch, or the one request of a client that waits), when it
//! shuts the connection down, once 64 KiB are waiting (a large or streamed
//! answer is written as it comes), or, if hyper drops the connection without
//! either, as far as the socket takes them without waiting. A request whose
//! answer takes time (a write waiting for its raft commit) holds back the
//! answers before it in its batch until it is answered, as the RESP and
//! memcached connections answer a batch together.
//!
//! HTTP/2 connections (the client's first bytes are the h2 preface) and TLS
//! connections pass through untouched: h2 gathers its own frames, and
//! rustls its own records.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use gerdu_api::net::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Waiting answers written through at once, without waiting for a read.
const LIMIT: usize = 64 * 1024;

/// The start of the HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// A connection whose HTTP/1.1 answers are written once per batch.
pub(crate) struct Gathered {
    inner: Stream,
    /// Answers written by hyper; `out[sent..]` are not sent yet.
    out: Vec<u8>,
    sent: usize,
    /// Writes go straight through (TLS, HTTP/2).
    through: bool,
    /// Nothing has been read yet (the protocol is not known).
    first: bool,
}

impl Gathered {
    pub(crate) fn new(inner: Stream) -> Self {
        let through = !matches!(inner, Stream::Plain(_));
        Gathered { inner, out: Vec::new(), sent: 0, through, first: true }
    }

    /// Sends every waiting answer.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Gathered {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Every request read so far is answered: the answers go out before
        // the next read (and a client that does not read its answers is not
        // read from either).
        ready!(this.poll_send(cx))?;
        let start = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.first && buf.filled().len() > start {
            this.first = false;
            let got = &buf.filled()[start..];
            let n = got.len().min(H2_PREFACE.len());
            this.through |= got[..n] == H2_PREFACE[..n];
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Gathered {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.through {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        if this.out.len() >= LIMIT {
            ready!(this.poll_send(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            this.out.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        // Plain TCP is: hyper then hands over an answer's head and body as
        // they are, and they are copied once, into `out`. TLS keeps its own.
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.through {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        if this.out.len() >= LIMIT {
            ready!(this.poll_send(cx))?;
        }
        // The rest goes out with the next read or the shutdown.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl Drop for Gathered {
    fn drop(&mut self) {
        // hyper dropped the connection without a read or a shutdown after
        // its last answer (an error's answer): send what the socket takes.
        if let Stream::Plain(tcp) = &self.inner {
            while self.sent < self.out.len() {
                match tcp.try_write(&self.out[self.sent..]) {
                    Ok(n) if n > 0 => self.sent += n,
                    _ => break,
                }
            }
        }
    }
}
