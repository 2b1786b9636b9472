//! The Redis (RESP2) and memcached text protocols, and pipelined HTTP/1.1:
//! each client writes `-P` requests in one write and reads their `-P`
//! replies, as redis-benchmark pipelines; each request's latency runs from
//! that write to its reply.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{Budget, Picker, Tally, key};

/// Which text protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    /// Redis RESP2: `GET key`, `SET key value`.
    Resp,
    /// memcached text: `get key`, `set key 0 0 n`.
    Memcache,
    /// HTTP/1.1: `GET` and `PUT /cache/key`, keep-alive, pipelined.
    Http1,
}

impl Wire {
    /// Appends one request.
    pub fn encode(self, get: bool, key: &str, value: &[u8], out: &mut Vec<u8>) {
        use std::io::Write;
        match (self, get) {
            (Wire::Resp, true) => {
                let _ = write!(out, "*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
            }
            (Wire::Resp, false) => {
                let _ = write!(out, "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n", key.len(), value.len());
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
            (Wire::Memcache, true) => {
                let _ = write!(out, "get {key}\r\n");
            }
            (Wire::Memcache, false) => {
                let _ = write!(out, "set {key} 0 0 {}\r\n", value.len());
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
            (Wire::Http1, true) => {
                let _ = write!(out, "GET /cache/{key} HTTP/1.1\r\nhost: gerdu\r\n\r\n");
            }
            (Wire::Http1, false) => {
                let _ =
                    write!(out, "PUT /cache/{key} HTTP/1.1\r\nhost: gerdu\r\ncontent-length: {}\r\n\r\n", value.len());
                out.extend_from_slice(value);
            }
        }
    }

    /// The length of the one reply at the start of `buf` and, if it is an
    /// error, its text; `None` while it is incomplete. A miss is an answer.
    pub fn reply(self, buf: &[u8]) -> Option<(usize, Option<String>)> {
        match self {
            Wire::Resp => resp_reply(buf),
            Wire::Memcache => memcache_reply(buf),
            Wire::Http1 => http1_reply(buf),
        }
    }
}

/// The first line of `buf` (without its CRLF) and where the next begins.
fn first_line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..end], end + 2))
}

/// [`Wire::reply`] for RESP2: a status, an integer or a bulk string.
fn resp_reply(buf: &[u8]) -> Option<(usize, Option<String>)> {
    let (line, after) = first_line(buf)?;
    match line.first() {
        Some(b'+' | b':') => Some((after, None)),
        Some(b'$') => {
            let n: i64 = std::str::from_utf8(&line[1..]).ok()?.parse().ok()?;
            let total = if n < 0 { after } else { after + n as usize + 2 };
            (buf.len() >= total).then_some((total, None))
        }
        _ => Some((after, Some(String::from_utf8_lossy(line).into_owned()))),
    }
}

/// [`Wire::reply`] for memcached text: `STORED`, `END`, or one `VALUE`.
fn memcache_reply(buf: &[u8]) -> Option<(usize, Option<String>)> {
    let (line, after) = first_line(buf)?;
    let text = || String::from_utf8_lossy(line).into_owned();
    if line == b"STORED" || line == b"END" {
        return Some((after, None));
    }
    if line.starts_with(b"VALUE ") {
        let n: usize = std::str::from_utf8(line.rsplit(|&b| b == b' ').next()?).ok()?.parse().ok()?;
        let total = after + n + 2 + b"END\r\n".len();
        return match buf.get(total - 5..total) {
            None => None,
            Some(b"END\r\n") => Some((total, None)),
            Some(_) => Some((total, Some(format!("{}: no END after the value", text())))),
        };
    }
    Some((after, Some(text())))
}

/// [`Wire::reply`] for HTTP/1.1: a head, then `Content-Length` bytes of
/// body. 200 and 404 (a GET's hit and miss), 201 and 204 (a PUT's) are
/// answers; any other status is an error.
fn http1_reply(buf: &[u8]) -> Option<(usize, Option<String>)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..head_end]).unwrap_or("");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, v)| v.trim().parse::<usize>().ok());
    let Some(length) = length else { return Some((head_end + 4, Some(format!("{status}: a bad content-length")))) };
    let total = head_end + 4 + length;
    if buf.len() < total {
        return None;
    }
    let code = status.split(' ').nth(1).unwrap_or("");
    let error = (!matches!(code, "200" | "201" | "204" | "404")).then(|| status.to_string());
    Some((total, error))
}

/// One connection.
pub async fn connect(addr: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Writes `out` and reads `n` replies into `tally` (latency from `start`).
/// `Err` when the connection failed (the run of this client ends).
async fn exchange(
    stream: &mut TcpStream,
    wire: Wire,
    out: &[u8],
    n: usize,
    inbuf: &mut BytesMut,
    tally: &mut Tally,
    done: &AtomicU64,
) -> Result<(), String> {
    let start = Instant::now();
    stream.write_all(out).await.map_err(|e| format!("write: {e}"))?;
    let mut got = 0;
    while got < n {
        match wire.reply(inbuf) {
            Some((len, error)) => {
                inbuf.advance(len);
                tally.record(start);
                if let Some(e) = error {
                    tally.error(|| e);
                }
                done.fetch_add(1, Ordering::Relaxed);
                got += 1;
            }
            None => {
                if inbuf.capacity() - inbuf.len() < 16 * 1024 {
                    inbuf.reserve(64 * 1024);
                }
                match stream.read_buf(inbuf).await {
                    Ok(0) => return Err("the server closed the connection".into()),
                    Ok(_) => {}
                    Err(e) => return Err(format!("read: {e}")),
                }
            }
        }
    }
    Ok(())
}

/// One client: batches of `depth` requests until the budget is spent.
pub async fn client(
    mut stream: TcpStream,
    wire: Wire,
    mut picker: Picker,
    value: bytes::Bytes,
    depth: usize,
    budget: Arc<Budget>,
) -> Tally {
    let mut tally = Tally::new();
    let (mut out, mut inbuf) = (Vec::new(), BytesMut::with_capacity(64 * 1024));
    loop {
        out.clear();
        let mut n = 0;
        while n < depth.max(1) && budget.take() {
            let (get, key) = picker.next();
            wire.encode(get, &key, &value, &mut out);
            n += 1;
        }
        if n == 0 {
            return tally;
        }
        if let Err(e) = exchange(&mut stream, wire, &out, n, &mut inbuf, &mut tally, &budget.done).await {
            tally.error(|| e);
            return tally;
        }
    }
}

/// Stores every key once (untimed), 1000 pipelined sets at a time over a
/// few connections.
pub async fn preload(addr: &str, wire: Wire, keyspace: u64, value: &bytes::Bytes) -> Result<(), String> {
    let mut workers = Vec::new();
    for _ in 0..4 {
        workers.push((connect(addr).await?, BytesMut::new()));
    }
    let value = value.clone();
    crate::preload_ranges(keyspace, 1000, workers, move |(mut stream, mut inbuf), keys| {
        let n = keys.end - keys.start;
        let mut out = Vec::new();
        for i in keys {
            wire.encode(false, &key(i), &value, &mut out);
        }
        async move {
            let (mut tally, done) = (Tally::new(), AtomicU64::new(0));
            exchange(&mut stream, wire, &out, n as usize, &mut inbuf, &mut tally, &done).await?;
            match tally.first_error {
                Some(e) => Err(format!("preload: {e}")),
                None => Ok((stream, inbuf)),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_replies_are_framed_whole() {
        let w = Wire::Resp;
        assert_eq!(w.reply(b"+OK\r\n"), Some((5, None)));
        assert_eq!(w.reply(b"$-1\r\n$3"), Some((5, None)));
        assert_eq!(w.reply(b"$3\r\nabc\r\n+OK"), Some((9, None)));
        assert_eq!(w.reply(b"$3\r\nab"), None);
        assert_eq!(w.reply(b"+OK\r"), None);
        assert_eq!(w.reply(b"-ERR no\r\n"), Some((9, Some("-ERR no".into()))));
    }

    #[test]
    fn memcached_replies_are_framed_whole() {
        let w = Wire::Memcache;
        assert_eq!(w.reply(b"STORED\r\n"), Some((8, None)));
        assert_eq!(w.reply(b"END\r\n"), Some((5, None)));
        let hit = b"VALUE k 0 3\r\nabc\r\nEND\r\n";
        assert_eq!(w.reply(hit), Some((hit.len(), None)));
        assert_eq!(w.reply(&hit[..hit.len() - 1]), None);
        assert!(w.reply(b"VALUE k 0 3\r\nabc\r\nXXX\r\n").unwrap().1.is_some());
        assert_eq!(
            w.reply(b"SERVER_ERROR out of memory\r\n").unwrap().1.as_deref(),
            Some("SERVER_ERROR out of memory")
        );
    }

    #[test]
    fn http1_answers_are_framed_whole() {
        let w = Wire::Http1;
        let hit = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\ndate: x\r\n\r\nabc";
        assert_eq!(w.reply(hit), Some((hit.len(), None)));
        assert_eq!(w.reply(&hit[..hit.len() - 1]), None);
        let miss = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\nHTTP/1.1";
        assert_eq!(w.reply(miss), Some((miss.len() - 8, None)));
        let created = b"HTTP/1.1 201 Created\r\n\r\n";
        assert_eq!(w.reply(created), Some((created.len(), None)));
        assert_eq!(w.reply(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n"), None);
        let busy = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\nno";
        assert_eq!(w.reply(busy), Some((busy.len(), Some("HTTP/1.1 503 Service Unavailable".into()))));
    }

    #[test]
    fn requests_are_what_the_servers_expect() {
        let mut out = Vec::new();
        Wire::Resp.encode(false, "k", b"vv", &mut out);
        Wire::Resp.encode(true, "k", b"", &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
        out.clear();
        Wire::Memcache.encode(false, "k", b"vv", &mut out);
        Wire::Memcache.encode(true, "k", b"", &mut out);
        assert_eq!(out, b"set k 0 0 2\r\nvv\r\nget k\r\n");
        out.clear();
        Wire::Http1.encode(false, "k", b"vv", &mut out);
        Wire::Http1.encode(true, "k", b"", &mut out);
        assert_eq!(
            out,
            b"PUT /cache/k HTTP/1.1\r\nhost: gerdu\r\ncontent-length: 2\r\n\r\nvvGET /cache/k HTTP/1.1\r\nhost: gerdu\r\n\r\n"
        );
    }
}
