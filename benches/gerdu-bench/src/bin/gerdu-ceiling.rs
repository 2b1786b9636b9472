//! # gerdu-ceiling — a server that does no work, to find what the machine allows
//!
//! ```text
//! gerdu-ceiling --proto resp --port 7001 [-d 100]
//! gerdu-ceiling --proto mc   --port 7002 [-d 100]
//! ```
//!
//! It speaks just enough RESP or memcached text for the referee's load
//! generators (redis-benchmark, kvbench, gerdu-bench), and stores nothing:
//! every `GET`/`get` answers one canned value of `-d` bytes (a hit), every
//! `SET`/`set` (and `add`, `replace`, `append`, `prepend`, `cas`) answers
//! `+OK` / `STORED`, `PING` answers `+PONG`, `version` answers a version
//! line, anything else `+OK` / `ERROR`. One thread, mio (epoll), one `read`
//! per readable socket and one `write` per batch of replies: the system calls
//! of redis-server's event loop, with no hashing, no store, no metrics and no
//! allocation per request.
//!
//! So the ops/s a load generator reaches against it is the most any server
//! can reach on this machine with that generator: what remains is the
//! kernel's TCP work and the generator itself. `CEILING=1 bash
//! benches/referee.sh` runs it side by side with redis-server, memcached and
//! gerdu under the referee (`../shared/bench/peers.sh`) and prints each one's
//! ratio to the peer.
//!
//! It binds 127.0.0.1 only and runs until killed.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);

const USAGE: &str = "usage: gerdu-ceiling --proto resp|mc --port PORT [-d VALUE_BYTES]";

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Resp,
    Mc,
}

/// The replies carrying the value, built once.
struct Canned {
    /// `$LEN\r\nVALUE\r\n`.
    resp_get: Vec<u8>,
    /// What follows the key in a `VALUE` line: ` 0 LEN\r\nVALUE\r\n`.
    mc_value: Vec<u8>,
}

impl Canned {
    fn new(value: &[u8]) -> Self {
        let mut resp_get = format!("${}\r\n", value.len()).into_bytes();
        resp_get.extend_from_slice(value);
        resp_get.extend_from_slice(b"\r\n");
        let mut mc_value = format!(" 0 {}\r\n", value.len()).into_bytes();
        mc_value.extend_from_slice(value);
        mc_value.extend_from_slice(b"\r\n");
        Canned { resp_get, mc_value }
    }
}

struct Conn {
    sock: TcpStream,
    input: Vec<u8>,
    /// Bytes of `input` already answered.
    used: usize,
    output: Vec<u8>,
    /// Bytes of `output` already written.
    sent: usize,
}

fn main() -> ExitCode {
    let mut port = None;
    let mut proto = Proto::Resp;
    let mut size = 100usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next();
        match (a.as_str(), v.as_deref()) {
            ("--port", Some(v)) => port = v.parse::<u16>().ok(),
            ("--proto", Some("resp")) => proto = Proto::Resp,
            ("--proto", Some("mc")) => proto = Proto::Mc,
            ("-d", Some(v)) => size = v.parse().unwrap_or(100),
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(port) = port else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match serve(SocketAddr::from(([127, 0, 0, 1], port)), proto, &Canned::new(&vec![b'x'; size])) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gerdu-ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(addr: SocketAddr, proto: Proto, value: &Canned) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in &events {
            if ev.token() == LISTENER {
                accept(&poll, &mut listener, &mut conns)?;
                continue;
            }
            let id = ev.token().0;
            let Some(conn) = conns.get_mut(id).and_then(Option::as_mut) else { continue };
            let open = (!ev.is_readable() || read(conn, proto, value)) && flush(conn);
            if !open {
                let _ = poll.registry().deregister(&mut conn.sock);
                conns[id] = None;
            }
        }
    }
}

fn accept(poll: &Poll, listener: &mut TcpListener, conns: &mut Vec<Option<Conn>>) -> io::Result<()> {
    loop {
        match listener.accept() {
            Ok((mut sock, _)) => {
                sock.set_nodelay(true)?;
                let id = conns.iter().position(Option::is_none).unwrap_or(conns.len());
                poll.registry().register(&mut sock, Token(id), Interest::READABLE | Interest::WRITABLE)?;
                let conn =
                    Conn { sock, input: vec![0; 64 * 1024], used: 0, output: Vec::with_capacity(64 * 1024), sent: 0 };
                if id == conns.len() {
                    conns.push(Some(conn));
                } else {
                    conns[id] = Some(conn);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Reads what the socket has (a read shorter than the room means it is
/// drained: mio's edge-triggered events fire again for new data) and
/// answers every whole request in it. False when the peer closed or failed.
fn read(conn: &mut Conn, proto: Proto, value: &Canned) -> bool {
    let mut filled = conn.used;
    loop {
        if filled == conn.input.len() {
            conn.input.resize(conn.input.len() * 2, 0);
        }
        let room = conn.input.len() - filled;
        match conn.sock.read(&mut conn.input[filled..]) {
            Ok(0) => return false,
            Ok(n) => {
                filled += n;
                if n < room {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    let mut at = 0;
    while at < filled {
        let step = match proto {
            Proto::Resp => resp(&conn.input[at..filled], value, &mut conn.output),
            Proto::Mc => mc(&conn.input[at..filled], value, &mut conn.output),
        };
        match step {
            Some(n) => at += n,
            None => break,
        }
    }
    conn.input.copy_within(at..filled, 0);
    conn.used = filled - at;
    true
}

/// Writes the pending replies; what the socket does not take waits for the
/// next writable event. False when the peer failed.
fn flush(conn: &mut Conn) -> bool {
    while conn.sent < conn.output.len() {
        match conn.sock.write(&conn.output[conn.sent..]) {
            Ok(n) => conn.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    conn.output.clear();
    conn.sent = 0;
    true
}

fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..end], end + 2))
}

fn number(digits: &[u8]) -> Option<usize> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// One RESP request at the start of `buf` (a multibulk array, or an inline
/// line): its reply is appended to `out` and its length returned; `None`
/// while it is incomplete.
fn resp(buf: &[u8], value: &Canned, out: &mut Vec<u8>) -> Option<usize> {
    let (head, mut at) = line(buf)?;
    let name: &[u8] = if let Some(count) = head.strip_prefix(b"*") {
        let count = number(count).unwrap_or(0);
        let mut name: &[u8] = b"";
        for i in 0..count {
            let (len, n) = line(&buf[at..])?;
            let len = number(len.strip_prefix(b"$").unwrap_or(b"")).unwrap_or(0);
            let start = at + n;
            if buf.len() < start + len + 2 {
                return None;
            }
            if i == 0 {
                name = &buf[start..start + len];
            }
            at = start + len + 2;
        }
        name
    } else {
        head.split(|b| *b == b' ').next().unwrap_or(b"")
    };
    if name.eq_ignore_ascii_case(b"GET") {
        out.extend_from_slice(&value.resp_get);
    } else if name.eq_ignore_ascii_case(b"PING") {
        out.extend_from_slice(b"+PONG\r\n");
    } else {
        out.extend_from_slice(b"+OK\r\n");
    }
    Some(at)
}

/// One memcached text request at the start of `buf` (a storage command
/// with its data block included): as [`resp`].
fn mc(buf: &[u8], value: &Canned, out: &mut Vec<u8>) -> Option<usize> {
    let (head, at) = line(buf)?;
    let mut words = head.split(|b| *b == b' ').filter(|w| !w.is_empty());
    match words.next().unwrap_or(b"") {
        b"get" | b"gets" => {
            for key in words {
                out.extend_from_slice(b"VALUE ");
                out.extend_from_slice(key);
                out.extend_from_slice(&value.mc_value);
            }
            out.extend_from_slice(b"END\r\n");
            Some(at)
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => {
            let len = words.nth(3).and_then(number).unwrap_or(0);
            if buf.len() < at + len + 2 {
                return None;
            }
            out.extend_from_slice(b"STORED\r\n");
            Some(at + len + 2)
        }
        b"version" => {
            out.extend_from_slice(b"VERSION 0-ceiling\r\n");
            Some(at)
        }
        _ => {
            out.extend_from_slice(b"ERROR\r\n");
            Some(at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_answers_whole_requests_and_waits_for_the_rest() {
        let (canned, mut out) = (Canned::new(b"abc"), Vec::new());
        let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n";
        let first = resp(req, &canned, &mut out).unwrap();
        assert_eq!(&out, b"$3\r\nabc\r\n");
        assert_eq!(resp(&req[first..], &canned, &mut out), Some(req.len() - first));
        assert!(out.ends_with(b"+OK\r\n"));
        assert_eq!(resp(&req[first..req.len() - 1], &canned, &mut Vec::new()), None);
    }

    #[test]
    fn mc_skips_the_data_block_of_a_set() {
        let (canned, mut out) = (Canned::new(b"abc"), Vec::new());
        let req = b"set k 0 0 2\r\nvv\r\nget k\r\n";
        let first = mc(req, &canned, &mut out).unwrap();
        assert_eq!(first, 17);
        assert_eq!(mc(&req[first..], &canned, &mut out), Some(7));
        assert_eq!(&out, b"STORED\r\nVALUE k 0 3\r\nabc\r\nEND\r\n");
        assert_eq!(mc(&req[..15], &canned, &mut Vec::new()), None);
    }
}
