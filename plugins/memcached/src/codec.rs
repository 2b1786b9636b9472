//! memcached text protocol parsing.
//!
//! [`parse`] takes one complete request off the front of the input buffer:
//! a command line (ended by `\r\n`, or a bare `\n` as memcached accepts) and,
//! for storage commands, the data block that follows it. The line is cut
//! into tokens as ranges (no reference count per token); only what a request
//! keeps, its keys and its data, becomes a zero-copy `Bytes` slice of the
//! input. The two lines a cache serves most, `get <key>` and `set <key>
//! <flags> <exptime> <bytes>` in their usual spelling, are read in one pass
//! without tokens first (a tenth to a fifth fewer instructions per request;
//! anything unusual falls through to the general parser, which answers it
//! the same way). Malformed input is answered with
//! memcached's own error lines ([`Frame::Error`]): the offending line is
//! consumed, and for a storage command whose length was readable the data
//! block is consumed too (`swallow`), so the connection stays usable, as in
//! memcached. Only an overlong line without a newline closes the connection.
//!
//! Meta commands (`mg`, `ms`, `md`, `ma`, `mn`, `me`) are parsed into
//! [`Meta`]: the key (base64-decoded with `b`), and the flags in request
//! order, checked against the flags the command accepts. Tokens are checked
//! where they are used ([`crate::meta`]).

use std::ops::Range;

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use smallvec::SmallVec;

/// Longest key (memcached's `KEY_MAX_LENGTH`).
pub const MAX_KEY: usize = 250;

/// Longest opaque token (`O`), as memcached.
pub const MAX_OPAQUE: usize = 32;

/// Parser limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest data block (`-I`, memcached's `item_size_max`).
    pub max_item: usize,
    /// Longest command line; longer input without a newline closes the
    /// connection.
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_item: 1 << 20, max_line: 64 * 1024 }
    }
}

/// The storage commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// `set`
    Set,
    /// `add`
    Add,
    /// `replace`
    Replace,
    /// `append`
    Append,
    /// `prepend`
    Prepend,
    /// `cas`
    Cas,
}

/// The meta commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaCmd {
    /// `mg`
    Get,
    /// `ms`
    Set,
    /// `md`
    Delete,
    /// `ma`
    Arith,
    /// `me`
    Debug,
}

impl MetaCmd {
    /// The flags the command accepts (memcached 1.6).
    fn accepts(self, flag: u8) -> bool {
        let allowed: &[u8] = match self {
            MetaCmd::Get => b"bcfhklOqstuvENRT",
            MetaCmd::Set => b"bcCEFIkOqsSTMN",
            MetaCmd::Delete => b"bCEIkOqT",
            MetaCmd::Arith => b"bCENJDTMqOtckv",
            MetaCmd::Debug => b"b",
        };
        allowed.contains(&flag)
    }
}

/// One meta flag: its letter and the token glued to it (`T30` → `T`, `30`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaFlag {
    /// The flag letter.
    pub flag: u8,
    /// The token after the letter (may be empty).
    pub token: Bytes,
}

/// A parsed meta command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Which command.
    pub cmd: MetaCmd,
    /// The key (decoded when `b` is given).
    pub key: Bytes,
    /// The key as sent (base64 text with `b`), for the `k` flag.
    pub wire_key: Bytes,
    /// Flags in request order.
    pub flags: Vec<MetaFlag>,
    /// `ms` data block.
    pub data: Bytes,
}

impl Meta {
    /// Whether a flag is present.
    pub fn has(&self, flag: u8) -> bool {
        self.flags.iter().any(|f| f.flag == flag)
    }

    /// The token of a flag, if present.
    pub fn token(&self, flag: u8) -> Option<&Bytes> {
        self.flags.iter().find(|f| f.flag == flag).map(|f| &f.token)
    }
}

/// One parsed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Req {
    /// `get`/`gets`.
    Get {
        /// Keys, answered in order.
        keys: Vec<Bytes>,
        /// `gets`: include the cas.
        cas: bool,
    },
    /// `gat`/`gats`.
    Gat {
        /// New expiry (memcached exptime).
        exptime: i64,
        /// Keys.
        keys: Vec<Bytes>,
        /// `gats`.
        cas: bool,
    },
    /// `set`, `add`, `replace`, `append`, `prepend`, `cas`.
    Store {
        /// Which command.
        op: StoreOp,
        /// Key.
        key: Bytes,
        /// Client flags.
        flags: u32,
        /// memcached exptime.
        exptime: i64,
        /// The data block.
        data: Bytes,
        /// `cas` unique (0 for the others).
        cas: u64,
        /// No reply wanted.
        noreply: bool,
    },
    /// `delete key [noreply]`.
    Delete {
        /// Key.
        key: Bytes,
        /// No reply wanted.
        noreply: bool,
    },
    /// `incr`/`decr`.
    Arith {
        /// Key.
        key: Bytes,
        /// Amount.
        delta: u64,
        /// `decr`.
        decr: bool,
        /// No reply wanted.
        noreply: bool,
    },
    /// `touch key exptime [noreply]`.
    Touch {
        /// Key.
        key: Bytes,
        /// memcached exptime.
        exptime: i64,
        /// No reply wanted.
        noreply: bool,
    },
    /// `flush_all [delay] [noreply]`.
    FlushAll {
        /// Seconds (or unix time) until the flush; 0 = now.
        delay: i64,
        /// No reply wanted.
        noreply: bool,
    },
    /// `version`.
    Version,
    /// `verbosity level [noreply]`.
    Verbosity {
        /// No reply wanted.
        noreply: bool,
    },
    /// `stats [group]`.
    Stats(Option<Bytes>),
    /// `quit`.
    Quit,
    /// `mn`.
    Noop,
    /// A meta command.
    Meta(Meta),
}

impl Req {
    /// Whether the client asked for no reply.
    pub fn noreply(&self) -> bool {
        match self {
            Req::Store { noreply, .. }
            | Req::Delete { noreply, .. }
            | Req::Arith { noreply, .. }
            | Req::Touch { noreply, .. }
            | Req::FlushAll { noreply, .. }
            | Req::Verbosity { noreply } => *noreply,
            _ => false,
        }
    }
}

/// What [`parse`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A request.
    Req(Req),
    /// Malformed input, already consumed.
    Error {
        /// The error line without `\r\n` (`ERROR`, `CLIENT_ERROR ...`).
        text: &'static str,
        /// The request said `noreply`: memcached sends no error either.
        noreply: bool,
        /// Bytes of the data block still to discard after the buffer.
        swallow: usize,
        /// Close the connection after answering.
        close: bool,
    },
}

const BAD_FORMAT: &str = "CLIENT_ERROR bad command line format";

fn error(text: &'static str) -> Frame {
    Frame::Error { text, noreply: false, swallow: 0, close: false }
}

/// Whether a key is acceptable: 1 to 250 bytes, no control characters or
/// spaces.
pub fn valid_key(key: &[u8]) -> bool {
    // Without an early exit, so that it is a few vector instructions.
    !key.is_empty() && key.len() <= MAX_KEY && key.iter().fold(true, |ok, &b| ok & (b > b' ') & (b != 0x7f))
}

/// Parses a number token as Rust's `str::parse` does (an optional sign,
/// digits); a token of up to 19 plain digits (every count and flag a client
/// sends) is read directly.
fn num<T: std::str::FromStr + TryFrom<u64>>(tok: &[u8]) -> Option<T> {
    if let Some((n, end)) = digits(tok, 0)
        && end == tok.len()
    {
        return T::try_from(n).ok();
    }
    std::str::from_utf8(tok).ok()?.parse().ok()
}

/// Parses a number token the way the meta commands need it.
pub fn token_num<T: std::str::FromStr + TryFrom<u64>>(tok: &[u8]) -> Option<T> {
    if tok.is_empty() || tok[0] == b'+' { None } else { num(tok) }
}

/// Parses one frame off the front of `buf`; `None` when more input is needed.
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Option<Frame> {
    parse_with(buf, limits, true)
}

/// [`parse`], with or without the fast path for the common lines (the tests
/// compare the two).
#[inline(always)]
fn parse_with(buf: &mut BytesMut, limits: &Limits, fast: bool) -> Option<Frame> {
    // A line over the limit closes the connection whether or not its
    // newline has arrived yet, so the outcome never depends on read sizes.
    let nl = memchr::memchr(b'\n', buf);
    if nl.unwrap_or(buf.len()) > limits.max_line {
        buf.clear();
        return Some(Frame::Error { text: "CLIENT_ERROR line too long", noreply: false, swallow: 0, close: true });
    }
    let nl = nl?;
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    if fast && let Some(frame) = common(buf, nl, line_end, limits) {
        return frame;
    }
    // Storage commands need their data block before anything is consumed.
    // The line is cut into tokens once, for this and for the parser.
    let spans = spans(&buf[..line_end]);
    let token = |i: usize| spans.get(i).map(|t| &buf[t.clone()]);
    let length_at = match token(0) {
        Some(b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas") => Some(4),
        Some(b"ms") => Some(2),
        _ => None,
    };
    if let Some(len) = length_at.and_then(token).and_then(data_len)
        && len <= limits.max_item
        && buf.len() < nl + 1 + len + 2
    {
        buf.reserve(nl + 1 + len + 2 - buf.len());
        return None;
    }
    let toks = Tokens { line: buf.split_to(nl + 1).freeze(), spans };
    Some(parse_line(&toks, buf, limits))
}

/// The two requests a cache serves most, in their usual spelling, read in
/// one pass over the line without cutting it into tokens first: `get <key>`
/// and `set <key> <flags> <exptime> <bytes>[ noreply]` (single spaces, plain
/// digits, a data block within the limit). The line and a `set`'s data block
/// are taken off `buf` together, and key and data are slices of that one
/// piece. `None` for any other line (another command, several keys, another
/// spelling, a value too large, anything malformed), which the general
/// parser then reads; for the lines taken here the frame is the one the
/// general parser gives (`tests::the_fast_path_agrees`). `Some(None)`: the
/// data block has not all arrived.
fn common(buf: &mut BytesMut, nl: usize, line_end: usize, limits: &Limits) -> Option<Option<Frame>> {
    let line = &buf[..line_end];
    let (key, cas) = match line {
        [b'g', b'e', b't', b' ', key @ ..] => (key, false),
        [b'g', b'e', b't', b's', b' ', key @ ..] => (key, true),
        [b's', b'e', b't', b' ', rest @ ..] => {
            let key_end = 4 + memchr::memchr(b' ', rest)?;
            return set(buf, nl, line_end, key_end, limits);
        }
        _ => return None,
    };
    // A space makes the key invalid: several keys go the general way.
    if !valid_key(key) {
        return None;
    }
    let from = line_end - key.len();
    // The key is the line itself, cut down: no second reference count on
    // the read buffer to take and give back.
    let mut key = buf.split_to(nl + 1).freeze();
    key.truncate(line_end);
    key.advance(from);
    Some(Some(Frame::Req(Req::Get { keys: vec![key], cas })))
}

/// [`common`]'s `set`, its key ending at `key_end`.
fn set(buf: &mut BytesMut, nl: usize, line_end: usize, key_end: usize, limits: &Limits) -> Option<Option<Frame>> {
    let line = &buf[..line_end];
    if !valid_key(&line[4..key_end]) {
        return None;
    }
    let (flags, at) = digits(line, key_end + 1)?;
    let (exptime, at) = digits(line, at + 1)?;
    let (len, at) = digits(line, at + 1)?;
    let noreply = match &line[at..] {
        b"" => false,
        b" noreply" => true,
        _ => return None,
    };
    let flags = u32::try_from(flags).ok()?;
    let exptime = i64::try_from(exptime).ok()?;
    let len = usize::try_from(len).ok().filter(|&n| n <= i32::MAX as usize && n <= limits.max_item)?;
    let total = nl + 1 + len + 2;
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Some(None);
    }
    let mut data = buf.split_to(total).freeze();
    if &data[total - 2..] != b"\r\n" {
        return Some(Some(bad_chunk(noreply)));
    }
    let key = data.slice(4..key_end);
    data.advance(nl + 1);
    data.truncate(len);
    Some(Some(Frame::Req(Req::Store { op: StoreOp::Set, key, flags, exptime, data, cas: 0, noreply })))
}

/// The plain decimal number (1 to 19 digits) at `from` in `line`, ended by a
/// space or the line's end, and where it ends; `None` otherwise.
fn digits(line: &[u8], from: usize) -> Option<(u64, usize)> {
    let mut n = 0u64;
    let mut at = from;
    while let Some(&b) = line.get(at) {
        if !b.is_ascii_digit() {
            break;
        }
        if at - from == 19 {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
        at += 1;
    }
    (at > from && (at == line.len() || line[at] == b' ')).then_some((n, at))
}

/// The data length a storage line announces (its length token), if it is
/// readable.
fn data_len(tok: &[u8]) -> Option<usize> {
    num::<i64>(tok).filter(|&n| n >= 0 && n <= i32::MAX as i64).map(|n| n as usize)
}

/// Where the space-separated tokens of a line are.
fn spans(line: &[u8]) -> SmallVec<[Range<usize>; 8]> {
    let mut out = SmallVec::new();
    let mut start = 0;
    for space in memchr::memchr_iter(b' ', line).chain([line.len()]) {
        if space > start {
            out.push(start..space);
        }
        start = space + 1;
    }
    out
}

/// A command line and where its tokens are.
struct Tokens {
    /// The line as read, with its newline.
    line: Bytes,
    spans: SmallVec<[Range<usize>; 8]>,
}

impl Tokens {
    fn len(&self) -> usize {
        self.spans.len()
    }

    /// Token `i`'s bytes.
    fn at(&self, i: usize) -> &[u8] {
        &self.line[self.spans[i].clone()]
    }

    /// Token `i`, to keep (a slice of the line).
    fn bytes(&self, i: usize) -> Bytes {
        self.line.slice(self.spans[i].clone())
    }

    /// Tokens `from..` to keep.
    fn keys(&self, from: usize) -> Vec<Bytes> {
        (from..self.len()).map(|i| self.bytes(i)).collect()
    }
}

fn parse_line(toks: &Tokens, buf: &mut BytesMut, limits: &Limits) -> Frame {
    if toks.len() == 0 {
        return error("ERROR");
    }
    let name = toks.at(0);
    let noreply_last = toks.at(toks.len() - 1) == b"noreply";
    match name {
        b"get" | b"gets" => {
            if toks.len() < 2 {
                return error("ERROR");
            }
            if !(1..toks.len()).all(|i| valid_key(toks.at(i))) {
                return error(BAD_FORMAT);
            }
            Frame::Req(Req::Get { keys: toks.keys(1), cas: name == b"gets" })
        }
        b"gat" | b"gats" => {
            if toks.len() < 2 {
                return error("ERROR");
            }
            let Some(exptime) = num::<i64>(toks.at(1)) else {
                return error("CLIENT_ERROR invalid exptime argument");
            };
            if !(2..toks.len()).all(|i| valid_key(toks.at(i))) {
                return error(BAD_FORMAT);
            }
            Frame::Req(Req::Gat { exptime, keys: toks.keys(2), cas: name == b"gats" })
        }
        b"set" | b"add" | b"replace" | b"append" | b"prepend" | b"cas" => storage(toks, buf, limits),
        b"delete" => {
            if !(2..=4).contains(&toks.len()) {
                return error("ERROR");
            }
            let extra = toks.len() - 2 - usize::from(noreply_last);
            if extra > 1 || (extra == 1 && toks.at(2) != b"0") {
                return Frame::Error {
                    text: "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]",
                    noreply: noreply_last,
                    swallow: 0,
                    close: false,
                };
            }
            if !valid_key(toks.at(1)) {
                return Frame::Error { text: BAD_FORMAT, noreply: noreply_last, swallow: 0, close: false };
            }
            Frame::Req(Req::Delete { key: toks.bytes(1), noreply: noreply_last })
        }
        b"incr" | b"decr" => {
            if toks.len() != 3 && !(toks.len() == 4 && noreply_last) {
                return error("ERROR");
            }
            let e = |text| Frame::Error { text, noreply: noreply_last, swallow: 0, close: false };
            if !valid_key(toks.at(1)) {
                return e(BAD_FORMAT);
            }
            let Some(delta) = token_num::<u64>(toks.at(2)) else {
                return e("CLIENT_ERROR invalid numeric delta argument");
            };
            Frame::Req(Req::Arith { key: toks.bytes(1), delta, decr: name == b"decr", noreply: noreply_last })
        }
        b"touch" => {
            if toks.len() != 3 && !(toks.len() == 4 && noreply_last) {
                return error("ERROR");
            }
            let e = |text| Frame::Error { text, noreply: noreply_last, swallow: 0, close: false };
            if !valid_key(toks.at(1)) {
                return e(BAD_FORMAT);
            }
            let Some(exptime) = num::<i64>(toks.at(2)) else {
                return e("CLIENT_ERROR invalid exptime argument");
            };
            Frame::Req(Req::Touch { key: toks.bytes(1), exptime, noreply: noreply_last })
        }
        b"flush_all" => {
            let args = toks.len() - 1 - usize::from(noreply_last);
            if args > 1 {
                return error("ERROR");
            }
            let delay = if args == 1 { num::<i64>(toks.at(1)) } else { Some(0) };
            match delay {
                Some(delay) => Frame::Req(Req::FlushAll { delay, noreply: noreply_last }),
                None => Frame::Error {
                    text: "CLIENT_ERROR invalid exptime argument",
                    noreply: noreply_last,
                    swallow: 0,
                    close: false,
                },
            }
        }
        b"version" => Frame::Req(Req::Version),
        b"verbosity" if toks.len() >= 2 && toks.len() <= 3 => Frame::Req(Req::Verbosity { noreply: noreply_last }),
        b"stats" => Frame::Req(Req::Stats((toks.len() > 1).then(|| toks.bytes(1)))),
        b"quit" => Frame::Req(Req::Quit),
        b"mn" => Frame::Req(Req::Noop),
        b"mg" => meta(MetaCmd::Get, toks, buf, limits),
        b"ms" => meta(MetaCmd::Set, toks, buf, limits),
        b"md" => meta(MetaCmd::Delete, toks, buf, limits),
        b"ma" => meta(MetaCmd::Arith, toks, buf, limits),
        b"me" => meta(MetaCmd::Debug, toks, buf, limits),
        _ => error("ERROR"),
    }
}

/// Takes a data block of `len` bytes plus its `\r\n` off `buf` (complete:
/// [`parse`] waited for it), or reports memcached's error.
fn take_data(len: usize, buf: &mut BytesMut) -> Option<Bytes> {
    let block = buf.split_to(len + 2).freeze();
    (&block[len..] == b"\r\n").then(|| block.slice(..len))
}

fn bad_chunk(noreply: bool) -> Frame {
    Frame::Error { text: "CLIENT_ERROR bad data chunk", noreply, swallow: 0, close: false }
}

/// Discards a data block that will not be stored: what is buffered now, and
/// the rest as it arrives.
fn swallow(text: &'static str, len: usize, buf: &mut BytesMut, noreply: bool) -> Frame {
    let total = len + 2;
    let now = total.min(buf.len());
    let _ = buf.split_to(now);
    Frame::Error { text, noreply, swallow: total - now, close: false }
}

fn storage(toks: &Tokens, buf: &mut BytesMut, limits: &Limits) -> Frame {
    let op = match toks.at(0) {
        b"set" => StoreOp::Set,
        b"add" => StoreOp::Add,
        b"replace" => StoreOp::Replace,
        b"append" => StoreOp::Append,
        b"prepend" => StoreOp::Prepend,
        _ => StoreOp::Cas,
    };
    let base = if op == StoreOp::Cas { 6 } else { 5 };
    let noreply = toks.len() == base + 1 && toks.at(base) == b"noreply";
    if toks.len() != base && !noreply {
        return error("ERROR");
    }
    let bad = Frame::Error { text: BAD_FORMAT, noreply, swallow: 0, close: false };
    let (Some(flags), Some(exptime), Some(len)) =
        (num::<u32>(toks.at(2)), num::<i64>(toks.at(3)), num::<i64>(toks.at(4)))
    else {
        return bad;
    };
    if len < 0 || len > i32::MAX as i64 {
        return bad;
    }
    let len = len as usize;
    let cas = if op == StoreOp::Cas {
        match num::<u64>(toks.at(5)) {
            Some(c) => c,
            None => return bad,
        }
    } else {
        0
    };
    if !valid_key(toks.at(1)) {
        return bad;
    }
    if len > limits.max_item {
        return swallow("SERVER_ERROR object too large for cache", len, buf, noreply);
    }
    match take_data(len, buf) {
        Some(data) => Frame::Req(Req::Store { op, key: toks.bytes(1), flags, exptime, data, cas, noreply }),
        None => bad_chunk(noreply),
    }
}

fn meta(cmd: MetaCmd, toks: &Tokens, buf: &mut BytesMut, limits: &Limits) -> Frame {
    if toks.len() < 2 {
        return error(if cmd == MetaCmd::Debug { BAD_FORMAT } else { "ERROR" });
    }
    let wire_key = toks.bytes(1);
    // ms carries its data length before the flags.
    let (len, first_flag) = if cmd == MetaCmd::Set {
        let Some(len) = (toks.len() > 2)
            .then(|| token_num::<i64>(toks.at(2)))
            .flatten()
            .filter(|&n| (0..=i32::MAX as i64).contains(&n))
        else {
            return error(BAD_FORMAT);
        };
        (Some(len as usize), 3)
    } else {
        (None, 2)
    };
    // After a readable ms line, any error still consumes the data block.
    let fail = |text: &'static str, buf: &mut BytesMut| match len {
        Some(len) => swallow(text, len, buf, false),
        None => error(text),
    };
    if wire_key.len() > MAX_KEY * 2 {
        return fail(BAD_FORMAT, buf);
    }
    let mut flags = Vec::with_capacity(toks.len().saturating_sub(first_flag));
    let mut seen = 0u64;
    for at in first_flag..toks.len() {
        let t = toks.at(at);
        let flag = t[0];
        if !flag.is_ascii_alphabetic() || !cmd.accepts(flag) {
            return fail("CLIENT_ERROR invalid flag", buf);
        }
        let bit = 1u64 << (if flag.is_ascii_lowercase() { flag - b'a' } else { flag - b'A' + 26 });
        if seen & bit != 0 {
            return fail("CLIENT_ERROR duplicate flag", buf);
        }
        seen |= bit;
        if flag == b'O' && t.len() - 1 > MAX_OPAQUE {
            return fail("CLIENT_ERROR opaque token too long", buf);
        }
        let span = &toks.spans[at];
        flags.push(MetaFlag { flag, token: toks.line.slice(span.start + 1..span.end) });
    }
    let key = if flags.iter().any(|f| f.flag == b'b') {
        match base64::engine::general_purpose::STANDARD.decode(&wire_key) {
            Ok(k) if !k.is_empty() && k.len() <= MAX_KEY => Bytes::from(k),
            _ => return fail("CLIENT_ERROR error decoding key", buf),
        }
    } else {
        if !valid_key(&wire_key) {
            return fail(BAD_FORMAT, buf);
        }
        wire_key.clone()
    };
    let data = match len {
        None => Bytes::new(),
        Some(len) if len > limits.max_item => {
            return swallow("SERVER_ERROR object too large for cache", len, buf, false);
        }
        Some(len) => match take_data(len, buf) {
            Some(d) => d,
            None => return bad_chunk(false),
        },
    };
    Frame::Req(Req::Meta(Meta { cmd, key, wire_key, flags, data }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all(input: &[u8]) -> Vec<Frame> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(f) = parse(&mut buf, &Limits::default()) {
            out.push(f);
        }
        out
    }

    #[test]
    fn storage_and_retrieval() {
        let frames = all(b"set k 5 0 2\r\nhi\r\nget a b\r\ngets a\nincr n 7 noreply\r\n");
        assert_eq!(frames.len(), 4);
        assert!(
            matches!(&frames[0], Frame::Req(Req::Store { op: StoreOp::Set, flags: 5, data, .. }) if &data[..] == b"hi")
        );
        assert!(matches!(&frames[1], Frame::Req(Req::Get { keys, cas: false }) if keys.len() == 2));
        assert!(matches!(&frames[2], Frame::Req(Req::Get { cas: true, .. })));
        assert!(matches!(&frames[3], Frame::Req(Req::Arith { delta: 7, noreply: true, .. })));
    }

    #[test]
    fn bad_chunk_consumes_exactly_the_block() {
        let frames = all(b"set a 0 0 2\r\nhello\r\nget a\r\n");
        assert!(matches!(&frames[0], Frame::Error { text: "CLIENT_ERROR bad data chunk", .. }));
        assert!(matches!(&frames[1], Frame::Error { text: "ERROR", .. }), "the rest of the line is a command");
        assert!(matches!(&frames[2], Frame::Req(Req::Get { .. })));
    }

    #[test]
    fn too_large_is_swallowed() {
        let limits = Limits { max_item: 4, ..Limits::default() };
        let mut buf = BytesMut::from(&b"set a 0 0 10\r\n0123"[..]);
        let f = parse(&mut buf, &limits).unwrap();
        assert_eq!(
            f,
            Frame::Error { text: "SERVER_ERROR object too large for cache", noreply: false, swallow: 8, close: false }
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn keys_are_checked() {
        let long = format!("get {}\r\n", "k".repeat(251));
        assert!(matches!(&all(long.as_bytes())[0], Frame::Error { text: BAD_FORMAT, .. }));
        assert!(matches!(&all(b"get a\x01b\r\n")[0], Frame::Error { text: BAD_FORMAT, .. }));
        assert!(matches!(&all(b"set a\x7f 0 0 1\r\nx\r\n")[0], Frame::Error { text: BAD_FORMAT, .. }));
    }

    #[test]
    fn meta_flags() {
        let f = all(b"mg k v t O123 N30\r\nmg k v v\r\nmg k zz\r\nms YWI= 2 b T0\r\nhi\r\n");
        match &f[0] {
            Frame::Req(Req::Meta(m)) => {
                assert_eq!(m.cmd, MetaCmd::Get);
                assert_eq!(m.token(b'O').map(|t| &t[..]), Some(&b"123"[..]));
                assert!(m.has(b'v') && !m.has(b'c'));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(&f[1], Frame::Error { text: "CLIENT_ERROR duplicate flag", .. }));
        assert!(matches!(&f[2], Frame::Error { text: "CLIENT_ERROR invalid flag", .. }));
        assert!(matches!(&f[3], Frame::Req(Req::Meta(m)) if &m.key[..] == b"ab" && &m.data[..] == b"hi"));
    }

    #[test]
    fn leading_spaces_still_wait_for_the_data_block() {
        // Found by fuzzing: the data wait must see the same command name as the parser.
        let mut buf = BytesMut::from(&b"  ms k 5\r\nab"[..]);
        assert_eq!(parse(&mut buf, &Limits::default()), None);
        buf.extend_from_slice(b"cde\r\n");
        assert!(
            matches!(parse(&mut buf, &Limits::default()), Some(Frame::Req(Req::Meta(m))) if &m.data[..] == b"abcde")
        );
    }

    #[test]
    fn overlong_line_closes() {
        let limits = Limits { max_line: 8, ..Limits::default() };
        let mut buf = BytesMut::from(&b"get aaaaaaaaaaaa"[..]);
        assert!(matches!(parse(&mut buf, &limits), Some(Frame::Error { close: true, .. })));
        // The same line with its newline already read closes too.
        let mut buf = BytesMut::from(&b"get aaaaaaaaaaaa\r\n"[..]);
        assert!(matches!(parse(&mut buf, &limits), Some(Frame::Error { close: true, .. })));
        let mut buf = BytesMut::from(&b"get a\r\n"[..]);
        assert!(matches!(parse(&mut buf, &limits), Some(Frame::Req(_))));
    }

    /// Renders a request back to the wire (the encoder for round trips).
    fn encode(req: &Req) -> Vec<u8> {
        match req {
            Req::Get { keys, cas } => {
                let mut v = if *cas { b"gets".to_vec() } else { b"get".to_vec() };
                for k in keys {
                    v.push(b' ');
                    v.extend_from_slice(k);
                }
                v.extend_from_slice(b"\r\n");
                v
            }
            Req::Store { key, flags, exptime, data, noreply, .. } => {
                let mut v = format!(
                    "set {} {flags} {exptime} {}{}\r\n",
                    String::from_utf8_lossy(key),
                    data.len(),
                    if *noreply { " noreply" } else { "" }
                )
                .into_bytes();
                v.extend_from_slice(data);
                v.extend_from_slice(b"\r\n");
                v
            }
            other => panic!("not generated: {other:?}"),
        }
    }

    fn key() -> impl Strategy<Value = Bytes> {
        "[a-zA-Z0-9:_\\-]{1,40}".prop_map(Bytes::from)
    }

    fn request() -> impl Strategy<Value = Req> {
        prop_oneof![
            (prop::collection::vec(key(), 1..5), any::<bool>()).prop_map(|(keys, cas)| Req::Get { keys, cas }),
            (key(), any::<u32>(), -100i64..100_000, prop::collection::vec(any::<u8>(), 0..64), any::<bool>()).prop_map(
                |(key, flags, exptime, data, noreply)| Req::Store {
                    op: StoreOp::Set,
                    key,
                    flags,
                    exptime,
                    data: Bytes::from(data),
                    cas: 0,
                    noreply
                }
            ),
        ]
    }

    /// A `get` or `set`, mostly in the usual spelling and often not quite:
    /// odd numbers and keys, doubled spaces, other endings, a data block
    /// that fits or does not.
    fn line() -> impl Strategy<Value = Vec<u8>> {
        let words = "0|00|4294967295|4294967296|9223372036854775807|9223372036854775808|1234567890123456789|\
                     12345678901234567890|-1|+1|noreply|a\x7fb|a\tb|a\rb|";
        let word = prop::sample::select(words.split('|').collect::<Vec<_>>()).prop_map(String::from);
        let num = prop_oneof![3 => any::<u32>().prop_map(|n| (n % 1000).to_string()), 1 => word.clone()];
        let long = prop::sample::select(vec![250usize, 251]).prop_map(|n| "k".repeat(n));
        let key = prop_oneof![6 => "[a-z:0-9]{1,8}", 1 => long, 1 => word];
        let sep = || prop_oneof![8 => Just(" "), 1 => Just("  ")];
        let end = || prop::sample::select(vec!["\r\n", "\r\n", "\n", "\r\r\n", " \r\n"]);
        let get = (
            prop::sample::select(vec!["get", "get", "gets", "GET", "getx"]),
            prop::collection::vec((sep(), key.clone()), 0..3),
            end(),
        )
            .prop_map(|(cmd, keys, end)| {
                let args: String = keys.into_iter().map(|(s, k)| format!("{s}{k}")).collect();
                format!("{cmd}{args}{end}").into_bytes()
            });
        let set = (
            (
                prop::sample::select(vec!["set", "set", "sets", "add"]),
                sep(),
                key,
                sep(),
                num.clone(),
                sep(),
                num.clone(),
            ),
            (sep(), prop::option::weighted(0.8, Just(())), num),
            (prop::sample::select(vec!["", "", " noreply", " noreply x", " "]), end()),
            (
                prop::collection::vec(prop::sample::select(vec![b'a', b'\r', b'\n']), 0..6),
                prop::sample::select(vec!["\r\n", "\r\n", "", "x\r\n"]),
            ),
        )
            .prop_map(
                |((cmd, s1, key, s2, flags, s3, exptime), (s4, fits, len), (tail, end), (data, after))| {
                    let len = fits.map_or(len, |()| data.len().to_string());
                    let mut v = format!("{cmd}{s1}{key}{s2}{flags}{s3}{exptime}{s4}{len}{tail}{end}").into_bytes();
                    v.extend_from_slice(&data);
                    v.extend_from_slice(after.as_bytes());
                    v
                },
            );
        prop_oneof![get, set]
    }

    proptest! {
        /// encode → parse is the identity, and any split of the input into
        /// two reads parses the same.
        #[test]
        fn round_trip_any_split(reqs in prop::collection::vec(request(), 1..6), cut in any::<prop::sample::Index>()) {
            let wire: Vec<u8> = reqs.iter().flat_map(encode).collect();
            let whole: Vec<Frame> = all(&wire);
            prop_assert_eq!(&whole, &reqs.iter().cloned().map(Frame::Req).collect::<Vec<_>>());
            let at = cut.index(wire.len() + 1);
            let mut buf = BytesMut::from(&wire[..at]);
            let mut got = Vec::new();
            while let Some(f) = parse(&mut buf, &Limits::default()) { got.push(f); }
            buf.extend_from_slice(&wire[at..]);
            while let Some(f) = parse(&mut buf, &Limits::default()) { got.push(f); }
            prop_assert_eq!(got, whole);
        }

        /// The fast path for `get` and `set` gives the frames the general
        /// parser gives, and leaves the same input, for lines near and far
        /// from the usual spelling, read whole or in two pieces.
        #[test]
        fn the_fast_path_agrees(
            lines in prop::collection::vec(line(), 1..5),
            cut in any::<prop::sample::Index>(),
            max_item in prop::sample::select(vec![4usize, 1 << 20]),
        ) {
            let wire: Vec<u8> = lines.concat();
            let limits = Limits { max_item, ..Limits::default() };
            let at = cut.index(wire.len() + 1);
            let run = |fast: bool| {
                let mut buf = BytesMut::from(&wire[..at]);
                let mut got = Vec::new();
                while let Some(f) = parse_with(&mut buf, &limits, fast) { got.push(f); }
                buf.extend_from_slice(&wire[at..]);
                while let Some(f) = parse_with(&mut buf, &limits, fast) { got.push(f); }
                (got, buf)
            };
            prop_assert_eq!(run(true), run(false));
        }

        /// Any bytes: no panic, and every frame consumes input (no loop).
        #[test]
        fn never_panics(input in prop::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&input[..]);
            let mut n = 0;
            while let Some(_f) = parse(&mut buf, &Limits { max_item: 64, max_line: 128 }) {
                n += 1;
                prop_assert!(n <= input.len() + 1);
            }
        }
    }
}
