//! Translating Redis commands into the command model and replies back.
//!
//! [`dispatch`] looks at one request and decides, without waiting:
//! - [`Action::Local`]: answered on the spot (`PING`, `ECHO`, `COMMAND`,
//!   arity and syntax errors, ...), the reply already written;
//! - [`Action::Remote`]: one [`Command`] for the pipeline plus a
//!   [`Render`] saying how to turn its reply into RESP;
//! - [`Action::Barrier`]: a command that changes the connection (`AUTH`,
//!   `HELLO`, `RESET`, `QUIT`), run by the connection after everything before
//!   it has been answered.
//!
//! One file per family: [`strings`], [`keyspace`], [`connection`], [`server`].

pub mod connection;
pub mod keyspace;
pub mod server;
pub mod strings;

use bytes::Bytes;
use gerdu_api::{Command, CommandError, Number, PipelineError, Reply, Ttl};

use crate::codec::Out;
use crate::conn::ConnState;
use crate::table::{self, Family};

/// What to do with one request.
pub enum Action {
    /// The reply has been written.
    Local,
    /// The command for the pipeline and how to render its reply.
    Remote(Command, Render),
    /// A connection-changing command, run after the batch before it.
    Barrier(connection::Barrier),
}

/// How replies become RESP.
#[derive(Clone, Debug)]
pub enum Render {
    /// First value of `Values` as a bulk string or null (`GET`, `GETEX`).
    Bulk,
    /// `Value` as a bulk string or null (`GETDEL`).
    ValueBulk,
    /// `Values` as an array of bulk strings or nulls (`MGET`).
    Array,
    /// `SET`: `+OK` or null; with `GET`, the old value.
    Set {
        /// `SET ... GET` was given.
        get: bool,
    },
    /// `SETNX`: 1 if stored, else 0.
    StoredInt,
    /// `+OK` whatever succeeded (`MSET`, `SETEX`, `FLUSHDB`, `RENAME`).
    Ok,
    /// The previous value (`GETSET`).
    Old,
    /// A boolean as 1/0 (`EXPIRE`, `PERSIST`, `RENAMENX`, `COPY`, `MSETNX`).
    Bool,
    /// A count as an integer (`DEL`, `EXISTS`, `APPEND`, `SETRANGE`, `DBSIZE`).
    Int,
    /// A new counter value (`INCR*`, `INCRBYFLOAT`).
    Number,
    /// Length of the first value (`STRLEN`).
    Strlen,
    /// Substring of the first value (`GETRANGE`).
    Range(i64, i64),
    /// `+string` or `+none` from an existence count (`TYPE`).
    Type,
    /// Number of found values (`TOUCH`).
    Found,
    /// Remaining life (`TTL`, `PTTL`, `EXPIRETIME`, `PEXPIRETIME`).
    Ttl {
        /// Milliseconds instead of seconds.
        ms: bool,
        /// Absolute unix time instead of remaining time.
        absolute: bool,
    },
    /// A key list (`KEYS`).
    Keys,
    /// `[cursor, [keys]]` (`SCAN`), keeping only `string` keys for `TYPE`.
    Scan {
        /// `TYPE` asked for something other than `string`: no keys match.
        none: bool,
    },
    /// One key or null (`RANDOMKEY`).
    Key,
    /// `INFO` text built from store statistics.
    Info(Vec<String>),
}

/// Redis' text for a command-model error.
pub fn error_text(e: &CommandError) -> String {
    match e {
        CommandError::NotInteger => "ERR value is not an integer or out of range".into(),
        CommandError::NonNumeric => "ERR value is not an integer or out of range".into(),
        CommandError::NotFloat => "ERR value is not a valid float".into(),
        CommandError::Overflow => "ERR increment or decrement would overflow".into(),
        CommandError::NanOrInfinity => "ERR increment would produce NaN or Infinity".into(),
        CommandError::NoSuchKey => "ERR no such key".into(),
        CommandError::TooLarge => "ERR string exceeds maximum allowed size (proto-max-bulk-len)".into(),
        CommandError::Refused(m) => format!("ERR {m}"),
    }
}

/// Redis' text for a failed request.
pub fn pipeline_error_text(e: &PipelineError) -> String {
    match e {
        PipelineError::Unauthenticated => "NOAUTH Authentication required.".into(),
        PipelineError::BadCredentials => "WRONGPASS invalid username-password pair or user is disabled.".into(),
        PipelineError::Unavailable(m) => format!("CLUSTERDOWN {m}"),
        PipelineError::ShuttingDown => "ERR server is shutting down".into(),
        PipelineError::Internal(m) => format!("ERR internal error: {m}"),
    }
}

/// `ERR wrong number of arguments for 'x' command`.
pub fn arity_error(out: &mut Out<'_>, name: &str) {
    out.error(&format!("ERR wrong number of arguments for '{name}' command"));
}

/// `ERR syntax error`.
pub fn syntax_error(out: &mut Out<'_>) {
    out.error("ERR syntax error");
}

/// Parses a Redis integer argument (strict: no spaces, no `+`).
pub fn int_arg(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.starts_with('+') || s.trim() != s {
        return None;
    }
    s.parse().ok()
}

/// Case-insensitive comparison with a lower-case keyword.
pub fn is(arg: &[u8], keyword: &str) -> bool {
    arg.eq_ignore_ascii_case(keyword.as_bytes())
}

/// `ERR value is not an integer or out of range`.
pub fn not_integer(out: &mut Out<'_>) {
    out.error("ERR value is not an integer or out of range");
}

/// Moves argument `i` out of the request, leaving it empty: the command
/// keeps the reference count the parser took on the read buffer, instead of
/// taking a second one and giving both back later (an atomic operation
/// each). Only for an argument read for the last time.
pub fn take(args: &mut [Bytes], i: usize) -> Bytes {
    std::mem::take(&mut args[i])
}

/// [`take`] for every argument from `from` on.
pub fn take_from(args: &mut [Bytes], from: usize) -> Vec<Bytes> {
    args[from..].iter_mut().map(std::mem::take).collect()
}

fn unknown_command(out: &mut Out<'_>, args: &[Bytes]) {
    let mut msg = format!("ERR unknown command '{}', with args beginning with: ", String::from_utf8_lossy(&args[0]));
    for a in args.iter().skip(1) {
        if msg.len() > 256 {
            break;
        }
        msg.push_str(&format!("'{}' ", String::from_utf8_lossy(&a[..a.len().min(128)])));
    }
    out.error(&msg);
}

/// Decides what to do with one request (see the module docs). Arguments
/// the command keeps are moved out of `args` ([`take`]).
pub fn dispatch(args: &mut [Bytes], conn: &mut ConnState, out: &mut Out<'_>) -> Action {
    let Some((index, family)) = table::lookup(&args[0]) else {
        unknown_command(out, args);
        return Action::Local;
    };
    let spec = &table::COMMANDS[index];
    if !table::arity_ok(spec, args.len()) {
        arity_error(out, spec.name);
        return Action::Local;
    }
    if conn.needs_auth() && !matches!(spec.name, "auth" | "hello" | "quit" | "reset") {
        out.error("NOAUTH Authentication required.");
        return Action::Local;
    }
    conn.note_command(index);
    match family {
        Family::Strings => strings::dispatch(spec.name, args, out),
        Family::Keyspace => keyspace::dispatch(spec.name, args, out),
        Family::Connection => connection::dispatch(spec.name, args, conn, out),
        Family::Server => server::dispatch(spec.name, args, conn, out),
    }
}

fn first_value(reply: &Reply) -> Option<Option<&Bytes>> {
    match reply {
        Reply::Values(v) => Some(v.first().and_then(|i| i.as_ref().map(|i| &i.value))),
        _ => None,
    }
}

/// Byte range of `GETRANGE start end` over a value of `len` bytes.
pub fn range(len: usize, start: i64, end: i64) -> Option<(usize, usize)> {
    if len == 0 {
        return None;
    }
    let len = len as i64;
    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
    let (s, e) = (norm(start), norm(end).min(len - 1));
    (s <= e && s < len).then_some((s as usize, e as usize + 1))
}

/// Renders the reply of one remote step (`None`: the pipeline answered fewer
/// replies than commands).
pub fn render(
    render: &Render,
    reply: Option<&Reply>,
    extra: &dyn Fn(&mut Out<'_>, &[String], &Reply),
    out: &mut Out<'_>,
) {
    let Some(reply) = reply else {
        out.error("ERR internal error: no reply");
        return;
    };
    if let Reply::Error(e) = reply {
        out.error(&error_text(e));
        return;
    }
    match (render, reply) {
        (Render::Bulk, r) if first_value(r).is_some() => out.opt_bulk(first_value(r).flatten().map(|b| &b[..])),
        (Render::ValueBulk, Reply::Value(v)) => out.opt_bulk(v.as_ref().map(|i| &i.value[..])),
        (Render::Array, Reply::Values(v)) => {
            out.array(v.len());
            for i in v {
                out.opt_bulk(i.as_ref().map(|i| &i.value[..]));
            }
        }
        (Render::Set { get: false }, Reply::Stored { .. }) => out.ok(),
        (Render::Set { get: false }, Reply::NotStored { .. }) => out.null(),
        (Render::Set { get: true }, Reply::Stored { old, .. } | Reply::NotStored { old }) => {
            out.opt_bulk(old.as_ref().map(|i| &i.value[..]))
        }
        (Render::StoredInt, Reply::Stored { .. }) => out.int(1),
        (Render::StoredInt, Reply::NotStored { .. }) => out.int(0),
        (Render::Ok, _) => out.ok(),
        (Render::Old, Reply::Stored { old, .. }) => out.opt_bulk(old.as_ref().map(|i| &i.value[..])),
        (Render::Bool, Reply::Bool(b)) => out.int(i64::from(*b)),
        (Render::Int, Reply::Count(n)) => out.int(*n as i64),
        (Render::Number, Reply::Number(Number::Signed(n))) => out.int(*n),
        (Render::Number, Reply::Number(Number::Unsigned(n))) => out.int(*n as i64),
        (Render::Number, Reply::Number(Number::Float(f))) => out.bulk(f),
        (Render::Strlen, r) if first_value(r).is_some() => {
            out.int(first_value(r).flatten().map_or(0, |v| v.len()) as i64)
        }
        (Render::Range(s, e), r) if first_value(r).is_some() => {
            let v = first_value(r).flatten().map(|b| &b[..]).unwrap_or_default();
            match range(v.len(), *s, *e) {
                Some((a, b)) => out.bulk(&v[a..b]),
                None => out.bulk(b""),
            }
        }
        (Render::Type, Reply::Count(n)) => out.simple(if *n > 0 { "string" } else { "none" }),
        (Render::Found, Reply::Values(v)) => out.int(v.iter().filter(|i| i.is_some()).count() as i64),
        (Render::Ttl { ms, absolute }, Reply::Ttl(t)) => out.int(match t {
            Ttl::Missing => -2,
            Ttl::Persistent => -1,
            Ttl::Expires { at_ms, remaining_ms } => match (ms, absolute) {
                (true, true) => *at_ms as i64,
                (false, true) => (*at_ms / 1000) as i64,
                (true, false) => *remaining_ms as i64,
                (false, false) => (remaining_ms.saturating_add(500) / 1000) as i64,
            },
        }),
        (Render::Keys, Reply::Keys { keys, .. }) => {
            out.array(keys.len());
            for k in keys {
                out.bulk(k);
            }
        }
        (Render::Scan { none }, Reply::Keys { cursor, keys }) => {
            out.array(2);
            out.bulk(itoa::Buffer::new().format(*cursor).as_bytes());
            let keys: &[Bytes] = if *none { &[] } else { keys };
            out.array(keys.len());
            for k in keys {
                out.bulk(k);
            }
        }
        (Render::Key, Reply::Key(k)) => out.opt_bulk(k.as_deref()),
        (Render::Info(sections), r) => extra(out, sections, r),
        (_, other) => out.error(&format!("ERR internal error: unexpected reply {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn getrange_indices_like_redis() {
        // "This is a string"
        let len = 16;
        assert_eq!(range(len, 0, 3), Some((0, 4)));
        assert_eq!(range(len, -3, -1), Some((13, 16)));
        assert_eq!(range(len, 0, -1), Some((0, 16)));
        assert_eq!(range(len, 10, 100), Some((10, 16)));
        assert_eq!(range(len, 5, 3), None);
        assert_eq!(range(len, 20, 30), None);
        assert_eq!(range(0, 0, -1), None);
        assert_eq!(range(len, -100, 2), Some((0, 3)));
    }
}
