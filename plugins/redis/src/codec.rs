//! RESP request parsing and reply encoding.
//!
//! Requests are what `redis-cli`, client libraries and telnet users send:
//! RESP arrays of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`) or inline
//! commands (`GET k\r\n`, with Redis' quoting rules). [`parse`] takes one
//! complete request off the front of the buffer, zero-copy (arguments are
//! slices of one frozen `Bytes`), or reports that more bytes are needed.
//! Malformed input gets Redis' own protocol error texts; the caller replies
//! with it and closes the connection, as Redis does.
//!
//! Replies are written straight into the connection's output buffer by
//! [`Out`], in RESP2 or RESP3 (switched by `HELLO`).

use bytes::{Buf, Bytes, BytesMut};

/// Parser limits (Redis' defaults in [`Limits::default`]).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest bulk argument (`proto-max-bulk-len`, 512 MB).
    pub max_bulk: usize,
    /// Most arguments in one multibulk request (an inline request is bounded
    /// by `max_inline` instead, as in Redis).
    pub max_args: usize,
    /// Longest inline request (64 KB in Redis).
    pub max_inline: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bulk: 512 * 1024 * 1024, max_args: 1024 * 1024, max_inline: 64 * 1024 }
    }
}

/// Most bytes reserved ahead for an announced but unread bulk argument.
const MAX_RESERVE: usize = 1 << 20;

/// A malformed request; the text is Redis' error (without the `ERR ` prefix).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

fn perr(s: impl Into<String>) -> ProtocolError {
    ProtocolError(format!("Protocol error: {}", s.into()))
}

/// Finds `\r\n` at or after `from`; returns the index of `\r`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let nl = memchr(b'\n', &buf[from..])? + from;
    (nl > from && buf[nl - 1] == b'\r').then_some(nl - 1).or(Some(nl))
}

#[inline]
fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// Parses a count like Redis' `string2ll`: an optional `-`, then digits
/// without leading zeros (`0` alone is fine), no `+`, no spaces. So a valid
/// count is at most 20 bytes long, which keeps the "count string too big"
/// checks from depending on how the input was split into reads.
fn parse_len(digits: &[u8]) -> Option<i64> {
    let (negative, unsigned) = match digits.strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, digits),
    };
    match unsigned {
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] if unsigned.len() <= 19 => {}
        _ => return None,
    }
    // At most 19 digits: fits in a u64 (and is checked against i64 below).
    let mut n: u64 = 0;
    for &d in unsigned {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    if negative { 0i64.checked_sub_unsigned(n) } else { i64::try_from(n).ok() }
}

/// Parses one request off the front of `buf`.
///
/// `Ok(None)`: incomplete, read more. `Ok(Some(args))`: one request
/// (possibly empty: blank inline lines and `*0` are ignored by the caller).
/// A multibulk request's name, when it is `GET` or `SET` in any case, comes
/// back in lower case (a static string); every other argument as sent.
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let mut args = Vec::new();
    Ok(parse_into(buf, limits, &mut args)?.then_some(args))
}

/// [`parse`] into `args` (cleared first), so a connection reuses one vector
/// for all its requests. `Ok(true)`: `args` holds one request (possibly
/// none: blank inline lines and `*0` are ignored by the caller).
pub fn parse_into(buf: &mut BytesMut, limits: &Limits, args: &mut Vec<Bytes>) -> Result<bool, ProtocolError> {
    args.clear();
    if buf.is_empty() {
        return Ok(false);
    }
    if buf[0] == b'*' { parse_multibulk(buf, limits, args) } else { parse_inline(buf, limits, args) }
}

/// The count every client sends, read at once: at most 9 digits (no sign,
/// no leading zero) and its `\r\n` at `at`; the count and where the line
/// after it starts. Anything else (`None`) is read by [`find_crlf`] and
/// [`parse_len`], which know every form and error; for what this reads they
/// give the same.
#[inline]
fn short_count(b: &[u8], at: usize) -> Option<(usize, usize)> {
    let mut i = at;
    let mut n = 0usize;
    while let Some(&d) = b.get(i) {
        if !d.is_ascii_digit() || i - at == 9 {
            break;
        }
        n = n * 10 + usize::from(d - b'0');
        i += 1;
    }
    let digits = i - at;
    if digits == 0 || (digits > 1 && b[at] == b'0') || b.get(i..i + 2)? != b"\r\n" {
        return None;
    }
    Some((n, i + 2))
}

fn parse_multibulk(buf: &mut BytesMut, limits: &Limits, args: &mut Vec<Bytes>) -> Result<bool, ProtocolError> {
    let (n, mut pos) = match short_count(buf, 1) {
        Some((n, next)) => (n as i64, next),
        None => {
            let Some(end) = find_crlf(buf, 1) else {
                if buf.len() > limits.max_inline {
                    return Err(perr("too big mbulk count string"));
                }
                return Ok(false);
            };
            let n = parse_len(&buf[1..end]).ok_or_else(|| perr("invalid multibulk length"))?;
            (n, end + if buf.get(end) == Some(&b'\r') { 2 } else { 1 })
        }
    };
    if n > 0 && n as u64 > limits.max_args as u64 {
        return Err(perr("invalid multibulk length"));
    }
    if n <= 0 {
        buf.advance(pos);
        return Ok(true);
    }
    let n = n as usize;
    // First pass: find every argument's span without copying.
    let mut spans: smallvec::SmallVec<[(usize, usize); 8]> = smallvec::SmallVec::new();
    for _ in 0..n {
        if pos >= buf.len() {
            return Ok(false);
        }
        if buf[pos] != b'$' {
            return Err(perr(format!("expected '$', got '{}'", buf[pos] as char)));
        }
        let (len, start) = match short_count(buf, pos + 1) {
            Some(read) => read,
            None => {
                let Some(end) = find_crlf(buf, pos + 1) else {
                    if buf.len() - pos > 32 {
                        return Err(perr("too big bulk count string"));
                    }
                    return Ok(false);
                };
                let len = parse_len(&buf[pos + 1..end])
                    .and_then(|l| usize::try_from(l).ok())
                    .ok_or_else(|| perr("invalid bulk length"))?;
                (len, end + if buf[end] == b'\r' { 2 } else { 1 })
            }
        };
        if len > limits.max_bulk {
            return Err(perr("invalid bulk length"));
        }
        if buf.len() < start + len + 2 {
            // Make room for the whole argument at once instead of growing in
            // steps, but only up to a bound: a client that announces a huge
            // bulk and sends nothing must not make us allocate it.
            buf.reserve((start + len + 2 - buf.len()).min(MAX_RESERVE));
            return Ok(false);
        }
        spans.push((start, start + len));
        pos = start + len + 2;
    }
    // Each argument is a slice of the request's bytes (a reference count on
    // the read buffer each); the last one is the request itself, cut down,
    // which saves one count taken and given back per request.
    let mut frame = buf.split_to(pos).freeze();
    let (&(a, b), mut rest) = spans.split_last().expect("n > 0 arguments");
    // GET's and SET's name is a static string, not a slice: one count fewer
    // taken on the read buffer and given back per command.
    if let Some((&(s, e), tail)) = rest.split_first()
        && let Some(name) = crate::table::hot_name(&frame[s..e])
    {
        args.push(Bytes::from_static(name));
        rest = tail;
    }
    args.extend(rest.iter().map(|&(a, b)| frame.slice(a..b)));
    frame.truncate(b);
    frame.advance(a);
    args.push(frame);
    Ok(true)
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits, args: &mut Vec<Bytes>) -> Result<bool, ProtocolError> {
    let Some(nl) = memchr(b'\n', buf) else {
        if buf.len() > limits.max_inline {
            return Err(perr("too big inline request"));
        }
        return Ok(false);
    };
    if nl > limits.max_inline {
        return Err(perr("too big inline request"));
    }
    let line = buf.split_to(nl + 1);
    let mut line = &line[..nl];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    *args = split_args(line).ok_or_else(|| perr("unbalanced quotes in request"))?;
    Ok(true)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline request like Redis' `sdssplitargs`: spaces separate
/// arguments; `"..."` understands `\n \r \t \b \a \\ \" \xHH`; `'...'`
/// understands `\'`. A closing quote must be followed by a space or the end.
pub fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= line.len() {
            return Some(out);
        }
        let mut cur = Vec::new();
        let (mut in_dq, mut in_sq) = (false, false);
        loop {
            if in_dq {
                let &c = line.get(i)?;
                if c == b'\\'
                    && i + 3 < line.len()
                    && line[i + 1] == b'x'
                    && let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3]))
                {
                    cur.push(h * 16 + l);
                    i += 4;
                    continue;
                }
                if c == b'\\' && i + 1 < line.len() {
                    cur.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                } else if c == b'"' {
                    if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                    i += 1;
                }
            } else if in_sq {
                let &c = line.get(i)?;
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    cur.push(b'\'');
                    i += 2;
                } else if c == b'\'' {
                    if i + 1 < line.len() && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                    i += 1;
                }
            } else {
                match line.get(i) {
                    None => break,
                    Some(c) if c.is_ascii_whitespace() => break,
                    Some(b'"') => in_dq = true,
                    Some(b'\'') => in_sq = true,
                    Some(&c) => cur.push(c),
                }
                i += 1;
            }
        }
        out.push(Bytes::from(cur));
    }
}

/// Encodes a request as a RESP multibulk, as clients send it (for tests,
/// fuzzing and tools).
pub fn encode_request<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// Writes replies into an output buffer, in RESP2 or RESP3.
pub struct Out<'a> {
    buf: &'a mut BytesMut,
    resp3: bool,
}

impl<'a> Out<'a> {
    /// A writer over `buf`.
    pub fn new(buf: &'a mut BytesMut, resp3: bool) -> Self {
        Out { buf, resp3 }
    }

    /// Whether RESP3 is on.
    pub fn resp3(&self) -> bool {
        self.resp3
    }

    fn line(&mut self, prefix: u8, n: impl itoa::Integer) {
        self.buf.extend_from_slice(&[prefix]);
        self.buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Bytes already encoded.
    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// `+OK`
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// A simple string (must not contain CR/LF).
    pub fn simple(&mut self, s: &str) {
        self.buf.extend_from_slice(b"+");
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An error; `msg` includes its code (`ERR ...`, `NOAUTH ...`). Newlines
    /// are replaced so the reply stays one line.
    pub fn error(&mut self, msg: &str) {
        self.buf.extend_from_slice(b"-");
        for b in msg.bytes() {
            self.buf.extend_from_slice(&[if b == b'\r' || b == b'\n' { b' ' } else { b }]);
        }
        self.buf.extend_from_slice(b"\r\n");
    }

    /// An integer.
    pub fn int(&mut self, n: i64) {
        self.line(b':', n);
    }

    /// A bulk string.
    pub fn bulk(&mut self, b: &[u8]) {
        self.line(b'$', b.len());
        self.buf.extend_from_slice(b);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Null (a missing bulk string).
    pub fn null(&mut self) {
        self.buf.extend_from_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    /// A null array (RESP2 `*-1`).
    pub fn null_array(&mut self) {
        self.buf.extend_from_slice(if self.resp3 { b"_\r\n" } else { b"*-1\r\n" });
    }

    /// An optional bulk string.
    pub fn opt_bulk(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }

    /// An array header of `n` elements.
    pub fn array(&mut self, n: usize) {
        self.line(b'*', n);
    }

    /// A map header of `n` pairs (RESP2: an array of 2n elements).
    pub fn map(&mut self, n: usize) {
        if self.resp3 { self.line(b'%', n) } else { self.line(b'*', 2 * n) }
    }

    /// A set header (RESP2: an array).
    pub fn set(&mut self, n: usize) {
        if self.resp3 { self.line(b'~', n) } else { self.line(b'*', n) }
    }

    /// A boolean (RESP2: integer 0/1).
    pub fn boolean(&mut self, b: bool) {
        if self.resp3 {
            self.buf.extend_from_slice(if b { b"#t\r\n" } else { b"#f\r\n" });
        } else {
            self.int(i64::from(b));
        }
    }

    /// A double already formatted (RESP2: bulk string).
    pub fn double(&mut self, text: &[u8]) {
        if self.resp3 {
            self.buf.extend_from_slice(b",");
            self.buf.extend_from_slice(text);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text);
        }
    }

    /// A verbatim string (`txt`); RESP2: bulk string.
    pub fn verbatim(&mut self, text: &[u8]) {
        if self.resp3 {
            self.line(b'=', text.len() + 4);
            self.buf.extend_from_slice(b"txt:");
            self.buf.extend_from_slice(text);
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(cmd) = parse(&mut buf, &Limits::default())? {
            out.push(cmd);
        }
        Ok(out)
    }

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        encode_request(args)
    }

    #[test]
    fn multibulk_and_inline() {
        let got = parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nSET a \"b c\\n\" 'd\\'e'\r\nPING\n").unwrap();
        // A multibulk GET's or SET's name comes back in lower case.
        assert_eq!(got[0], vec![Bytes::from("get"), Bytes::from("k")]);
        assert_eq!(got[1], vec![Bytes::from("SET"), Bytes::from("a"), Bytes::from("b c\n"), Bytes::from("d'e")]);
        assert_eq!(got[2], vec![Bytes::from("PING")]);
        assert_eq!(parse_all(b"\r\n").unwrap(), vec![Vec::<Bytes>::new()]);
        assert_eq!(parse_all(b"*0\r\n").unwrap(), vec![Vec::<Bytes>::new()]);
        assert_eq!(parse_all(b"SET k \"\\x41\\x4a\"\r\n").unwrap()[0][2], Bytes::from("AJ"));
    }

    #[test]
    fn get_and_set_names_in_any_case_are_lower_case_the_rest_as_sent() {
        let got = parse_all(b"*2\r\n$3\r\ngEt\r\n$3\r\nSET\r\n*3\r\n$3\r\nSeT\r\n$1\r\nk\r\n$1\r\nv\r\n").unwrap();
        assert_eq!(got[0], vec![Bytes::from("get"), Bytes::from("SET")]);
        assert_eq!(got[1], vec![Bytes::from("set"), Bytes::from("k"), Bytes::from("v")]);
        let got =
            parse_all(b"*1\r\n$3\r\nGET\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n*2\r\n$4\r\nGETS\r\n$1\r\nk\r\n").unwrap();
        // A lone name is the request itself, cut down, as any last argument.
        assert_eq!(got[0], vec![Bytes::from("GET")]);
        assert_eq!(got[1][0], Bytes::from("DEL"));
        assert_eq!(got[2][0], Bytes::from("GETS"));
    }

    #[test]
    fn protocol_errors_are_redis_texts() {
        let err = |input: &[u8]| parse_all(input).unwrap_err().0;
        assert_eq!(err(b"*x\r\n"), "Protocol error: invalid multibulk length");
        assert_eq!(err(b"*1\r\n$-5\r\n"), "Protocol error: invalid bulk length");
        assert_eq!(err(b"*1\r\n:5\r\n"), "Protocol error: expected '$', got ':'");
        assert_eq!(err(b"SET \"a\r\n"), "Protocol error: unbalanced quotes in request");
        assert_eq!(err(b"SET \"a\"b\r\n"), "Protocol error: unbalanced quotes in request");
        let big = vec![b'a'; 70 * 1024];
        assert_eq!(err(&big), "Protocol error: too big inline request");
        let limits = Limits { max_bulk: 10, ..Limits::default() };
        let mut buf = BytesMut::from(&b"*1\r\n$11\r\nhello world\r\n"[..]);
        assert_eq!(parse(&mut buf, &limits).unwrap_err().0, "Protocol error: invalid bulk length");
    }

    #[test]
    fn limits_near_the_integer_range_still_parse() {
        // Found by the fuzz target: a limit of usize::MAX must not wrap to -1.
        let limits = Limits { max_bulk: usize::MAX, max_args: usize::MAX, max_inline: 1024 };
        let mut buf = BytesMut::from(&encode_request(&[vec![252u8]])[..]);
        assert_eq!(parse(&mut buf, &limits).unwrap(), Some(vec![Bytes::from_static(&[252])]));
    }

    #[test]
    fn counts_are_strict_like_string2ll() {
        assert_eq!(parse_len(b"0"), Some(0));
        assert_eq!(parse_len(b"-1"), Some(-1));
        assert_eq!(parse_len(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_len(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_len(b"1234567890"), Some(1_234_567_890));
        for bad in [
            &b"03"[..],
            b"+3",
            b"-0",
            b" 3",
            b"3 ",
            b"",
            b"-",
            b"--1",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"18446744073709551616",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_len(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_long_count_string_fails_the_same_however_it_arrives() {
        // Found by the fuzz target: `$` + 40 zero-padded digits used to parse
        // when it arrived whole but was "too big" when cut before its CRLF.
        let wire = format!("*1\r\n${:0>40}\r\nabc\r\n", 3).into_bytes();
        assert!(parse_all(&wire).is_err());
        for cut in [20, 40] {
            let mut buf = BytesMut::from(&wire[..cut]);
            let chunked = parse(&mut buf, &Limits::default()).and_then(|first| {
                buf.extend_from_slice(&wire[cut..]);
                first.map_or_else(|| parse(&mut buf, &Limits::default()), |r| Ok(Some(r)))
            });
            assert!(chunked.is_err(), "cut at {cut}: {chunked:?}");
        }
    }

    #[test]
    fn incomplete_then_complete() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$5\r\nhel"[..]);
        assert_eq!(parse(&mut buf, &Limits::default()).unwrap(), None);
        buf.extend_from_slice(b"lo\r\n");
        assert_eq!(parse(&mut buf, &Limits::default()).unwrap().unwrap()[1], Bytes::from("hello"));
        assert!(buf.is_empty());
    }

    #[test]
    fn encoder_resp2_and_resp3() {
        let mut b = BytesMut::new();
        let mut o = Out::new(&mut b, false);
        o.null();
        o.map(1);
        o.boolean(true);
        o.double(b"1.5");
        o.error("ERR bad\r\nthing");
        assert_eq!(&b[..], b"$-1\r\n*2\r\n:1\r\n$3\r\n1.5\r\n-ERR bad  thing\r\n");
        let mut b = BytesMut::new();
        let mut o = Out::new(&mut b, true);
        o.null();
        o.map(1);
        o.boolean(true);
        o.double(b"1.5");
        o.verbatim(b"hi");
        assert_eq!(&b[..], b"_\r\n%1\r\n#t\r\n,1.5\r\n=6\r\ntxt:hi\r\n");
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..8)) {
            let wire = encode(&args);
            let parsed = parse_all(&wire).unwrap();
            prop_assert_eq!(parsed.len(), 1);
            let got: Vec<Vec<u8>> = parsed[0].iter().map(|b| b.to_vec()).collect();
            prop_assert_eq!(got, args);
        }

        #[test]
        fn any_split_parses_the_same(
            cmds in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..5), 1..5),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
        ) {
            let wire: Vec<u8> = cmds.iter().flat_map(|c| encode(c)).collect();
            let whole = parse_all(&wire).unwrap();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (wire.len() + 1)).collect();
            cuts.sort();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut last = 0;
            for cut in cuts.into_iter().chain([wire.len()]) {
                buf.extend_from_slice(&wire[last..cut]);
                last = cut;
                while let Some(cmd) = parse(&mut buf, &Limits::default()).unwrap() {
                    got.push(cmd);
                }
            }
            prop_assert_eq!(got, whole);
        }

        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&bytes[..]);
            for _ in 0..100 {
                match parse(&mut buf, &Limits::default()) {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
    }
}
