//! The classic text commands: request → command model → reply lines.
//!
//! | memcached | command model | replies |
//! |---|---|---|
//! | `get`/`gets` | `Get` (a read) | `VALUE k f n [cas]` blocks, `END` |
//! | `gat`/`gats` | `GetAndTouch` | same |
//! | `set`/`add`/`replace`/`cas` | `Set` with `Always`/`IfAbsent`/`IfPresent`/`IfCas` | `STORED`, `NOT_STORED`, `EXISTS`, `NOT_FOUND` |
//! | `append`/`prepend` | `Append` (no create) | `STORED`, `NOT_STORED` |
//! | `delete` | `Delete` | `DELETED`, `NOT_FOUND` |
//! | `incr`/`decr` | `Incr` with unsigned wrap / floor at 0 | the number, `NOT_FOUND` |
//! | `touch` | `GetAndTouch` of one key | `TOUCHED`, `NOT_FOUND` |
//! | `flush_all [d]` | `Flush`, or `FlushAfter` for a delay | `OK` |
//!
//! Expiry follows memcached: 0 never, up to 30 days relative seconds, more
//! is a unix time, negative is already expired. A touch keeps the item's cas;
//! every other write gives it a new one.

use bytes::{BufMut, Bytes, BytesMut};
use gerdu_api::{Command, CommandError, Condition, Delta, Expiry, Reply, SetCommand};

use crate::codec::{Req, StoreOp};

/// Relative expiry limit: larger exptimes are unix times.
pub const REALTIME_MAXDELTA: i64 = 60 * 60 * 24 * 30;

/// memcached exptime → expiry.
pub fn expiry(exptime: i64) -> Expiry {
    match exptime {
        0 => Expiry::Never,
        e if e < 0 => Expiry::At(1),
        e if e <= REALTIME_MAXDELTA => Expiry::In(e as u64 * 1000),
        e => Expiry::At((e as u64).saturating_mul(1000)),
    }
}

/// Writes `text\r\n`.
pub fn line(out: &mut BytesMut, text: &str) {
    out.put_slice(text.as_bytes());
    out.put_slice(b"\r\n");
}

/// memcached's error line for a failed command.
pub fn command_error(e: &CommandError, out: &mut BytesMut) {
    match e {
        CommandError::NonNumeric | CommandError::NotInteger => {
            line(out, "CLIENT_ERROR cannot increment or decrement non-numeric value")
        }
        CommandError::TooLarge => line(out, "SERVER_ERROR object too large for cache"),
        other => line(out, &format!("SERVER_ERROR {other}")),
    }
}

/// How to answer a classic command once its reply is known.
#[derive(Debug)]
pub enum TextRender {
    /// `VALUE` blocks and `END`.
    Values {
        /// The keys asked, aligned with the reply (the command takes the
        /// request's vector; a copy of one key needs no allocation).
        keys: smallvec::SmallVec<[bytes::Bytes; 1]>,
        /// Include the cas (`gets`, `gats`).
        cas: bool,
    },
    /// A storage command.
    Store {
        /// `cas` (for the cas counters).
        cas: bool,
    },
    /// `delete`.
    Delete,
    /// `incr`/`decr`.
    Arith {
        /// `decr` (for the counters).
        decr: bool,
    },
    /// `touch`.
    Touch,
    /// `flush_all`.
    Flush,
}

/// Translates a classic command that needs the store. `now_ms` turns an
/// absolute `flush_all` time into a delay (it is read only for that).
pub fn translate(req: Req, now_ms: impl FnOnce() -> u64) -> (Command, TextRender) {
    // The render's copy of the keys; one key (the usual `get`) without the
    // iterator's general path.
    let copy = |keys: &[Bytes]| match keys {
        [key] => smallvec::smallvec![key.clone()],
        keys => keys.iter().cloned().collect(),
    };
    match req {
        Req::Get { keys, cas } => {
            let render = TextRender::Values { keys: copy(&keys), cas };
            (Command::Get { keys }, render)
        }
        Req::Gat { exptime, keys, cas } => {
            let render = TextRender::Values { keys: copy(&keys), cas };
            (Command::GetAndTouch { keys, expiry: expiry(exptime) }, render)
        }
        Req::Store { op: op @ (StoreOp::Append | StoreOp::Prepend), key, data, .. } => (
            Command::Append { key, value: data, prepend: op == StoreOp::Prepend, create: None, cas: None },
            TextRender::Store { cas: false },
        ),
        Req::Store { op, key, flags, exptime, data, cas, .. } => {
            let mut s = SetCommand::new(key, data);
            s.flags = flags;
            s.expiry = expiry(exptime);
            s.condition = match op {
                StoreOp::Add => Condition::IfAbsent,
                StoreOp::Replace => Condition::IfPresent,
                StoreOp::Cas => Condition::IfCas(cas),
                _ => Condition::Always,
            };
            (Command::Set(s), TextRender::Store { cas: op == StoreOp::Cas })
        }
        Req::Delete { key, .. } => (Command::Delete { keys: vec![key] }, TextRender::Delete),
        Req::Arith { key, delta, decr, .. } => {
            (Command::Incr { key, delta: Delta::Unsigned { by: delta, decr } }, TextRender::Arith { decr })
        }
        Req::Touch { key, exptime, .. } => {
            (Command::GetAndTouch { keys: vec![key], expiry: expiry(exptime) }, TextRender::Touch)
        }
        Req::FlushAll { delay, .. } => {
            let command = match expiry(delay) {
                Expiry::In(ms) => Command::FlushAfter { delay_ms: ms },
                Expiry::At(at) => match now_ms() {
                    now if at > now => Command::FlushAfter { delay_ms: at - now },
                    _ => Command::Flush,
                },
                _ => Command::Flush,
            };
            (command, TextRender::Flush)
        }
        other => unreachable!("answered locally: {other:?}"),
    }
}

/// Renders the reply to a classic command.
pub fn render(r: &TextRender, reply: &Reply, out: &mut BytesMut) {
    match (r, reply) {
        (TextRender::Values { keys, cas }, Reply::Values(items)) => {
            for (key, item) in keys.iter().zip(items) {
                let Some(item) = item else { continue };
                out.put_slice(b"VALUE ");
                out.put_slice(key);
                let mut b = itoa::Buffer::new();
                out.put_u8(b' ');
                out.put_slice(b.format(item.flags).as_bytes());
                out.put_u8(b' ');
                out.put_slice(b.format(item.value.len()).as_bytes());
                if *cas {
                    out.put_u8(b' ');
                    out.put_slice(b.format(item.cas).as_bytes());
                }
                out.put_slice(b"\r\n");
                out.put_slice(&item.value);
                out.put_slice(b"\r\n");
            }
            out.put_slice(b"END\r\n");
        }
        (TextRender::Store { .. }, Reply::Stored { .. } | Reply::Count(_)) => out.put_slice(b"STORED\r\n"),
        (TextRender::Store { .. }, Reply::NotStored { .. }) => out.put_slice(b"NOT_STORED\r\n"),
        (TextRender::Store { .. }, Reply::Exists) => out.put_slice(b"EXISTS\r\n"),
        (TextRender::Delete, Reply::Count(1)) => out.put_slice(b"DELETED\r\n"),
        (TextRender::Delete, Reply::Count(_)) => out.put_slice(b"NOT_FOUND\r\n"),
        (TextRender::Arith { .. }, Reply::Number(gerdu_api::Number::Unsigned(n))) => {
            out.put_slice(itoa::Buffer::new().format(*n).as_bytes());
            out.put_slice(b"\r\n");
        }
        (TextRender::Touch, Reply::Values(v)) if v.first().is_some_and(|i| i.is_some()) => {
            out.put_slice(b"TOUCHED\r\n")
        }
        (TextRender::Touch, Reply::Values(_)) => out.put_slice(b"NOT_FOUND\r\n"),
        (TextRender::Flush, Reply::Ok) => out.put_slice(b"OK\r\n"),
        (_, Reply::NotFound) => out.put_slice(b"NOT_FOUND\r\n"),
        (_, Reply::Error(e)) => command_error(e, out),
        (r, other) => {
            tracing::warn!("memcached: unexpected reply {other:?} for {r:?}");
            line(out, "SERVER_ERROR unexpected reply");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_memcached() {
        assert_eq!(expiry(0), Expiry::Never);
        assert_eq!(expiry(-1), Expiry::At(1));
        assert_eq!(expiry(10), Expiry::In(10_000));
        assert_eq!(expiry(REALTIME_MAXDELTA), Expiry::In(REALTIME_MAXDELTA as u64 * 1000));
        assert_eq!(expiry(REALTIME_MAXDELTA + 1), Expiry::At((REALTIME_MAXDELTA as u64 + 1) * 1000));
    }

    #[test]
    fn the_clock_is_read_only_for_an_absolute_flush_time() {
        let now_ms = 2_000_000_000_000;
        let reads = std::cell::Cell::new(0);
        let clock = || {
            reads.set(reads.get() + 1);
            now_ms
        };
        let get = Req::Get { keys: vec![bytes::Bytes::from_static(b"k")], cas: false };
        assert!(matches!(translate(get, clock).0, Command::Get { .. }));
        let flush = |delay| translate(Req::FlushAll { delay, noreply: false }, clock).0;
        assert_eq!(flush(5), Command::FlushAfter { delay_ms: 5_000 });
        assert_eq!(reads.get(), 0);
        // An absolute time: a delay from now, or at once when it has passed.
        assert_eq!(flush(now_ms as i64 / 1000 + 7), Command::FlushAfter { delay_ms: 7_000 });
        assert_eq!(flush(now_ms as i64 / 1000), Command::Flush);
        assert_eq!(flush(REALTIME_MAXDELTA + 1), Command::Flush);
        assert_eq!(reads.get(), 3);
    }
}
