//! The meta commands (`mg`, `ms`, `md`, `ma`, `me`): flags → command model,
//! replies → `VA`/`HD`/`EN`/`NS`/`EX`/`NF` lines with the requested return
//! flags in request order.
//!
//! What goes through the log: `ms`, `md`, `ma` always; `mg` only when it may
//! change the item (`N` vivify, `R` recache, `T` touch), or when a plain `mg`
//! finds a stale item whose recache token nobody holds yet. Then the
//! connection asks again with a [`Command::MetaGet`] so that exactly one
//! client in the cluster gets `W` (see [`crate::conn`]). Everything else about
//! a plain `mg` is a read.
//!
//! Quiet mode (`q`) hides the uninteresting answer as memcached does: `EN`
//! for `mg`, `HD` for `ms` and `md`, success (`HD` or `VA`) for `ma`.

use bytes::{BufMut, BytesMut};
use gerdu_api::{Command, Condition, Expiry, Item, MetaArith, MetaGet, Reply, SetCommand};

use crate::codec::{Meta, MetaCmd, token_num};
use crate::text::{expiry, line};

/// The number after `flag`, if the flag is given.
fn tok<T: std::str::FromStr + TryFrom<u64>>(m: &Meta, flag: u8) -> Result<Option<T>, &'static str> {
    m.token(flag).map(|t| token_num::<T>(t).ok_or("CLIENT_ERROR bad token in command line format")).transpose()
}

/// An expiry token (`T`, `N`), with memcached's exptime rules.
fn tok_exp(m: &Meta, flag: u8) -> Result<Option<Expiry>, &'static str> {
    Ok(tok::<i64>(m, flag)?.map(expiry))
}

/// Translates a meta command. `Err` is the error line to answer.
pub fn translate(m: &Meta) -> Result<Command, &'static str> {
    let key = m.key.clone();
    match m.cmd {
        MetaCmd::Get => {
            let vivify = tok_exp(m, b'N')?;
            let touch = tok_exp(m, b'T')?;
            let recache_ms = tok::<u64>(m, b'R')?.map(|s| s.saturating_mul(1000));
            let new_cas = tok::<u64>(m, b'E')?;
            if vivify.is_some() || touch.is_some() || recache_ms.is_some() {
                Ok(Command::MetaGet(MetaGet { key, vivify, recache_ms, touch, new_cas }))
            } else if m.has(b'u') {
                Ok(Command::Inspect { key })
            } else {
                Ok(Command::Get { keys: vec![key] })
            }
        }
        MetaCmd::Debug => Ok(Command::Inspect { key }),
        MetaCmd::Set => {
            let cas = tok::<u64>(m, b'C')?;
            let new_cas = tok::<u64>(m, b'E')?;
            let flags = tok::<u32>(m, b'F')?.unwrap_or(0);
            let ttl = tok_exp(m, b'T')?.unwrap_or(Expiry::Never);
            let vivify = tok_exp(m, b'N')?;
            let mode = m.token(b'M').map_or(Some(b'S'), |t| (t.len() == 1).then(|| t[0].to_ascii_uppercase()));
            let value = m.data.clone();
            let set = |condition| {
                let mut s = SetCommand::new(key.clone(), value.clone());
                s.flags = flags;
                s.expiry = ttl;
                s.condition = condition;
                s.new_cas = new_cas;
                s.invalidate = m.has(b'I');
                Ok(Command::Set(s))
            };
            match mode {
                Some(b'S') => set(cas.map_or(Condition::Always, Condition::IfCas)),
                Some(b'E') => set(Condition::IfAbsent),
                Some(b'R') => set(cas.map_or(Condition::IfPresent, Condition::IfCas)),
                Some(mode @ (b'A' | b'P')) => {
                    Ok(Command::Append { key, value, prepend: mode == b'P', create: vivify, cas })
                }
                _ => Err("CLIENT_ERROR invalid mode for ms M token"),
            }
        }
        MetaCmd::Delete => {
            let cas = tok::<u64>(m, b'C')?;
            let new_cas = tok::<u64>(m, b'E')?;
            let invalidate = m.has(b'I').then(|| tok_exp(m, b'T')).transpose()?.map(|t| t.unwrap_or(Expiry::Keep));
            if cas.is_none() && new_cas.is_none() && invalidate.is_none() {
                Ok(Command::Delete { keys: vec![key] })
            } else {
                Ok(Command::MetaDelete { key, cas, invalidate, new_cas })
            }
        }
        MetaCmd::Arith => {
            let decr = match m.token(b'M').map(|t| &t[..]) {
                None | Some(b"I" | b"i" | b"+") => false,
                Some(b"D" | b"d" | b"-") => true,
                Some(_) => return Err("CLIENT_ERROR invalid mode for ma M token"),
            };
            let delta = match m.token(b'D') {
                None => 1,
                Some(t) => token_num::<u64>(t).ok_or("CLIENT_ERROR invalid numeric delta argument")?,
            };
            let initial = tok::<u64>(m, b'J')?.unwrap_or(0);
            let vivify = tok_exp(m, b'N')?.map(|e| (e, initial));
            Ok(Command::MetaArith(MetaArith {
                key,
                decr,
                delta,
                cas: tok::<u64>(m, b'C')?,
                new_cas: tok::<u64>(m, b'E')?,
                vivify,
                touch: tok_exp(m, b'T')?,
            }))
        }
    }
}

/// Seconds left for `t`: -1 for no deadline, rounded up otherwise.
fn ttl_secs(item: &Item, now_ms: u64) -> i64 {
    if item.expires_at == 0 { -1 } else { item.expires_at.saturating_sub(now_ms).div_ceil(1000) as i64 }
}

fn num(out: &mut BytesMut, n: impl itoa::Integer) {
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Writes the return flags the request asked for, in request order. Without
/// an item only `O` and `k` (with `b`) are echoed, as on a miss.
fn flags_out(m: &Meta, item: Option<&Item>, now_ms: u64, out: &mut BytesMut) {
    for f in &m.flags {
        match (f.flag, item) {
            (b'O', _) => {
                out.put_slice(b" O");
                out.put_slice(&f.token);
            }
            (b'k', _) => {
                out.put_slice(b" k");
                out.put_slice(&m.wire_key);
                if m.has(b'b') {
                    out.put_slice(b" b");
                }
            }
            (b'c', Some(i)) => {
                out.put_slice(b" c");
                num(out, i.cas);
            }
            (b'f', Some(i)) if m.cmd == MetaCmd::Get => {
                out.put_slice(b" f");
                num(out, i.flags);
            }
            (b'h', Some(i)) => {
                out.put_slice(if i.meta.fetched() { b" h1" } else { b" h0" });
            }
            (b'l', Some(i)) => {
                out.put_slice(b" l");
                num(out, i.meta.idle_secs(now_ms));
            }
            (b's', Some(i)) if m.cmd == MetaCmd::Get => {
                out.put_slice(b" s");
                num(out, i.value.len());
            }
            (b't', Some(i)) if matches!(m.cmd, MetaCmd::Get | MetaCmd::Arith) => {
                out.put_slice(b" t");
                num(out, ttl_secs(i, now_ms));
            }
            _ => {}
        }
    }
}

/// A status line: code, return flags, `\r\n`.
fn status(code: &[u8], m: &Meta, item: Option<&Item>, now_ms: u64, out: &mut BytesMut) {
    out.put_slice(code);
    flags_out(m, item, now_ms, out);
    out.put_slice(b"\r\n");
}

/// A hit with or without its value (`VA <len> ...` / `HD ...`), and the
/// recache state flags after the requested ones.
fn hit(m: &Meta, item: &Item, won: bool, now_ms: u64, out: &mut BytesMut) {
    let value = m.has(b'v');
    if value {
        out.put_slice(b"VA ");
        num(out, item.value.len());
    } else {
        out.put_slice(b"HD");
    }
    flags_out(m, Some(item), now_ms, out);
    if m.cmd == MetaCmd::Get {
        if item.meta.won() {
            out.put_slice(b" Z");
        }
        if item.meta.stale() {
            out.put_slice(b" X");
        }
        if won {
            out.put_slice(b" W");
        }
    }
    out.put_slice(b"\r\n");
    if value {
        out.put_slice(&item.value);
        out.put_slice(b"\r\n");
    }
}

/// Whether a plain `mg` reply found a stale item nobody holds the token
/// for: the connection then asks again through the log.
pub fn needs_claim(m: &Meta, reply: &Reply) -> Option<Command> {
    if m.cmd != MetaCmd::Get {
        return None;
    }
    match reply {
        Reply::Values(v) if v.first().and_then(|i| i.as_ref()).is_some_and(|i| i.meta.stale() && !i.meta.won()) => {
            Some(Command::MetaGet(MetaGet {
                key: m.key.clone(),
                vivify: None,
                recache_ms: None,
                touch: None,
                new_cas: None,
            }))
        }
        _ => None,
    }
}

/// Renders the reply to a meta command.
pub fn render(m: &Meta, reply: &Reply, now_ms: u64, out: &mut BytesMut) {
    let quiet = m.has(b'q');
    match (m.cmd, reply) {
        (MetaCmd::Get, Reply::Values(_) | Reply::Value(_) | Reply::Meta { .. }) => {
            // A plain mg reads (`Values`), `u` inspects (`Value`), the rest may write (`Meta`).
            let (found, won) = match reply {
                Reply::Values(v) => (v.first().and_then(Option::as_ref), false),
                Reply::Value(found) => (found.as_ref(), false),
                Reply::Meta { item, won } => (item.as_ref(), *won),
                _ => unreachable!(),
            };
            match found {
                Some(item) => hit(m, item, won, now_ms, out),
                None if quiet => {}
                None => status(b"EN", m, None, now_ms, out),
            }
        }
        (MetaCmd::Debug, Reply::Value(Some(i))) => {
            let exp = ttl_secs(i, now_ms);
            let la = i.meta.idle_secs(now_ms);
            let fetch = if i.meta.fetched() { "yes" } else { "no" };
            out.put_slice(b"ME ");
            out.put_slice(&m.wire_key);
            let size = m.key.len() + i.value.len();
            line(out, &format!(" exp={exp} la={la} cas={} fetch={fetch} cls=1 size={size}", i.cas));
        }
        (MetaCmd::Debug, _) => out.put_slice(b"EN\r\n"),
        (MetaCmd::Set, Reply::Stored { cas, .. }) if !quiet => {
            // ms returns only `c` of the item flags.
            let item = Item { cas: *cas, ..Item::default() };
            status(b"HD", m, Some(&item), now_ms, out);
        }
        (MetaCmd::Set, Reply::Count(_)) if !quiet => status(b"HD", m, None, now_ms, out),
        (MetaCmd::Set, Reply::Stored { .. } | Reply::Count(_)) => {}
        (MetaCmd::Set, Reply::NotStored { .. }) => status(b"NS", m, None, now_ms, out),
        (MetaCmd::Delete, Reply::Count(1) | Reply::Ok) if quiet => {}
        (MetaCmd::Delete, Reply::Count(1) | Reply::Ok) => status(b"HD", m, None, now_ms, out),
        (MetaCmd::Delete, Reply::Count(_)) => status(b"NF", m, None, now_ms, out),
        (MetaCmd::Arith, Reply::Value(Some(_))) if quiet => {}
        (MetaCmd::Arith, Reply::Value(Some(item))) => hit(m, item, false, now_ms, out),
        (_, Reply::Exists) => status(b"EX", m, None, now_ms, out),
        (_, Reply::NotFound) => status(b"NF", m, None, now_ms, out),
        (_, Reply::Error(e)) => crate::text::command_error(e, out),
        (_, other) => {
            tracing::warn!("memcached: unexpected reply {other:?} to {:?}", m.cmd);
            line(out, "SERVER_ERROR unexpected reply");
        }
    }
}
