//! The executor: the one implementation of every command's semantics.
//!
//! [`apply`] runs a write against a [`Policy`] inside the Raft state machine;
//! [`read`] runs a read against the local store; [`apply_all`] and
//! [`read_all`] run a batch of them ([`apply_writes`] a log entry's writes
//! as [`Write`]s: a `set` may be borrowed straight from the entry's
//! encoding as a [`SetRef`], without a `Bytes` per key and value), telling the store which keys come next
//! ([`Policy::prefetch`]) so that the cache misses of the following
//! lookups overlap with the work of the current one. Both are plain functions of
//! (store, command, time) so that every node that applies the same log entry
//! reaches the same state, and so that every policy is tested through the same
//! semantics by the [conformance kit](crate::testkit).
//!
//! Bytes: commands are [detached](crate::Command::detach) when they are
//! proposed, so apply stores their keys and values as they are (a clone of a
//! `Bytes`), never pinning a network buffer. A `set` hands the store its value
//! borrowed ([`crate::Value`]): the store copies a short one, and shares a long
//! one held as `Bytes` or copies one borrowed from an encoding.
//!
//! Expiry: an item whose deadline is at or before the entry's timestamp is
//! treated as absent. Writes that meet such an item remove it (counted in
//! [`ApplyState::expired`]); reads just hide it, because a read must not change
//! data outside the log.

use bytes::{Bytes, BytesMut};

use std::borrow::Cow;

use crate::command::{Command, Condition, Delta, ExpireCondition, Expiry, MetaArith, MetaGet, SetRef};
use crate::glob::glob_match;
use crate::policy::{PREFETCH_STEPS, Policy, Update};
use crate::reply::{CommandError, Item, ItemMeta, ItemRef, Number, Reply, Ttl};

/// Largest value a write may produce (Redis' `proto-max-bulk-len`, 512 MB).
pub const MAX_VALUE_LEN: usize = 512 * 1024 * 1024;

/// Mutable context of applying one log entry.
#[derive(Debug, Default)]
pub struct ApplyState {
    /// The entry's timestamp (unix ms), chosen by the leader.
    pub now_ms: u64,
    /// The last cas unique handed out; each stored item takes the next one.
    pub cas: u64,
    /// Keys the policy evicted while applying.
    pub evicted: Vec<Bytes>,
    /// Expired items removed while applying.
    pub expired: u64,
}

impl ApplyState {
    fn next_cas(&mut self) -> u64 {
        self.cas += 1;
        self.cas
    }
}

/// The live item under `key`, removing it if it has expired.
fn live(store: &dyn Policy, key: &[u8], st: &mut ApplyState) -> Option<Item> {
    let item = store.peek(key)?;
    if item.is_expired(st.now_ms) {
        store.remove(key);
        st.expired += 1;
        return None;
    }
    Some(item)
}

/// Runs `run` on every index below `n`, in order, and before each one
/// hints the keys of the next [`PREFETCH_STEPS`] commands to the store, one
/// step deeper for each command nearer ([`Policy::prefetch`]): a key is
/// hinted at steps 0, 1, 2 in the three turns before its own.
fn pipelined<'a>(store: &dyn Policy, n: usize, key: impl Fn(usize) -> Option<&'a [u8]>, mut run: impl FnMut(usize)) {
    if n < 2 {
        // Nothing to overlap with.
        return (0..n).for_each(run);
    }
    for turn in 0..n + PREFETCH_STEPS {
        for step in 0..PREFETCH_STEPS {
            if let Some(k) = turn.checked_sub(step).filter(|&j| j < n).and_then(&key) {
                store.prefetch(k, step);
            }
        }
        if let Some(j) = turn.checked_sub(PREFETCH_STEPS) {
            run(j);
        }
    }
}

/// [`pipelined`] inside one [`Policy::batch`], collecting `run`'s replies:
/// how a batch of commands or writes is run.
fn batched<'a>(
    store: &dyn Policy,
    n: usize,
    key: impl Fn(usize) -> Option<&'a [u8]>,
    mut run: impl FnMut(usize) -> Reply,
) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(n);
    store.batch(n, &mut || pipelined(store, n, &key, |j| replies.push(run(j))));
    replies
}

/// Applies a log entry's writes in order ([`apply`] each), prefetching the
/// keys ahead.
pub fn apply_all(store: &dyn Policy, commands: &[Command], st: &mut ApplyState) -> Vec<Reply> {
    batched(store, commands.len(), |j| commands[j].first_key(), |j| apply(store, &commands[j], st))
}

/// A write as a log entry holds it: a `set` borrowed (from a command, or
/// read straight from the entry's encoding), or any command.
#[derive(Clone, Debug, PartialEq)]
pub enum Write<'a> {
    /// A `set`.
    Set(SetRef<'a>),
    /// Any command (a `set` too).
    Command(Cow<'a, Command>),
}

impl Write<'_> {
    /// The key the write touches first (what is prefetched).
    #[inline]
    pub fn first_key(&self) -> Option<&[u8]> {
        match self {
            Write::Set(s) => Some(s.key),
            Write::Command(c) => c.first_key(),
        }
    }
}

/// [`apply_all`] for writes that are not all commands (a log entry read
/// straight from its encoding).
pub fn apply_writes(store: &dyn Policy, writes: &[Write<'_>], st: &mut ApplyState) -> Vec<Reply> {
    batched(
        store,
        writes.len(),
        |j| writes[j].first_key(),
        |j| match &writes[j] {
            Write::Set(s) => set(store, s, st),
            Write::Command(c) => apply(store, c, st),
        },
    )
}

/// Serves a batch of reads in order ([`read`] each) at `now_ms`,
/// prefetching the keys ahead. `serve` answers commands that are not
/// reads (a caller's own error).
pub fn read_all(
    store: &dyn Policy,
    commands: &[Command],
    now_ms: u64,
    serve: impl Fn(&Command) -> Option<Reply>,
) -> Vec<Reply> {
    batched(
        store,
        commands.len(),
        |j| commands[j].first_key(),
        |j| serve(&commands[j]).unwrap_or_else(|| read(store, &commands[j], now_ms)),
    )
}

/// Keys and values up to this size are copied into their own allocation when
/// a write is proposed ([`crate::Command::detach`]).
pub const DETACH_LIMIT: usize = 64 * 1024;

/// A copy of `b` that owns exactly its bytes, for buffers up to
/// [`DETACH_LIMIT`]. Protocols parse zero-copy, so an argument is a slice of
/// a whole network read; keeping the slice in a log entry or an item would
/// pin that buffer for as long as they live. Larger values are kept as they
/// are (their buffer is mostly themselves).
pub fn detach(b: &Bytes) -> Bytes {
    if b.len() <= DETACH_LIMIT { Bytes::copy_from_slice(b) } else { b.clone() }
}

fn store_item(store: &dyn Policy, key: Bytes, value: Bytes, flags: u32, expires_at: u64, st: &mut ApplyState) -> u64 {
    let cas = st.next_cas();
    let item = Item { value, flags, meta: ItemMeta::stored(st.now_ms), cas, expires_at };
    store.insert(key, item, &mut st.evicted);
    cas
}

/// Stores `item` as it is: a change of metadata only (expiry, meta bits),
/// which keeps the item's cas, as memcached's `touch` does.
fn restore(store: &dyn Policy, key: &Bytes, item: Item, st: &mut ApplyState) {
    store.insert(key.clone(), item, &mut st.evicted);
}

/// The cas a changed item takes: the explicit one (memcached meta `E`) or
/// the next counter value.
fn cas_for(explicit: Option<u64>, st: &mut ApplyState) -> u64 {
    explicit.unwrap_or_else(|| st.next_cas())
}

fn set(store: &dyn Policy, cmd: &SetRef<'_>, st: &mut ApplyState) -> Reply {
    // One lookup: decide and store under the policy's lock for the key.
    let now = st.now_ms;
    let mut cas = st.cas;
    let mut expired = false;
    let mut reply = Reply::Ok;
    let mut evicted = std::mem::take(&mut st.evicted);
    store.update_in_place(
        cmd.key,
        &mut |found| {
            let current = match found {
                Some(i) if i.is_expired(now) => {
                    expired = true;
                    None
                }
                other => other,
            };
            let old = || if cmd.return_old { current.map(|c| c.to_item()) } else { None };
            let mut stale = false;
            let refused = match (cmd.condition, current) {
                (Condition::Always, _) => None,
                (Condition::IfAbsent, None) | (Condition::IfPresent, Some(_)) => None,
                (Condition::IfAbsent, Some(_)) | (Condition::IfPresent, None) => Some(Reply::NotStored { old: old() }),
                (Condition::IfCas(_), None) => Some(Reply::NotFound),
                (Condition::IfCas(want), Some(c)) if cmd.invalidate && want < c.cas => {
                    stale = true;
                    None
                }
                (Condition::IfCas(want), Some(c)) if c.cas != want => Some(Reply::Exists),
                (Condition::IfCas(_), Some(_)) => None,
            };
            if let Some(r) = refused {
                reply = r;
                // An expired item the command met is removed, as on every write.
                return if expired { Update::Remove } else { Update::Keep };
            }
            let expires_at = cmd.expiry.resolve(now, current.map_or(0, |c| c.expires_at));
            let item_cas = match cmd.new_cas {
                Some(explicit) => explicit,
                None => {
                    cas += 1;
                    cas
                }
            };
            reply = Reply::Stored { created: current.is_none(), cas: item_cas, old: old() };
            let meta = ItemMeta::stored(now).with_stale(stale);
            Update::Store(Item { value: cmd.value, flags: cmd.flags, meta, cas: item_cas, expires_at })
        },
        &mut evicted,
    );
    st.evicted = evicted;
    st.cas = cas;
    st.expired += u64::from(expired);
    reply
}

/// Removes `key` (one lookup); answers whether it was live, and with
/// `want_item` (GETDEL) the item itself, copied out only then. An expired
/// item is removed too and counted, but is not live.
fn delete(store: &dyn Policy, key: &Bytes, st: &mut ApplyState, want_item: bool) -> (bool, Option<Item>) {
    let now = st.now_ms;
    let (mut live, mut expired, mut item) = (false, false, None);
    store.update_in_place(
        key,
        &mut |found| match found {
            None => Update::Keep,
            Some(i) => {
                if i.is_expired(now) {
                    expired = true;
                } else {
                    live = true;
                    item = want_item.then(|| i.to_item());
                }
                Update::Remove
            }
        },
        &mut st.evicted,
    );
    st.expired += u64::from(expired);
    (live, item)
}

fn parse_i64(v: &[u8]) -> Option<i64> {
    // Redis accepts no spaces, no '+', no leading zeros beyond "0".
    let s = std::str::from_utf8(v).ok()?;
    if s.is_empty() || s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) || s.starts_with("-0") {
        return None;
    }
    s.parse().ok()
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_f64(v: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(v).ok()?;
    if s.is_empty() || s.trim() != s {
        return None;
    }
    let f: f64 = s.parse().ok()?;
    f.is_finite().then_some(f)
}

/// Formats a float as Redis does for `INCRBYFLOAT`: shortest exact decimal,
/// no exponent, no trailing zeros.
pub fn format_float(f: f64) -> String {
    if f == f.trunc() && f.abs() < 1e17 { format!("{}", f as i64) } else { format!("{f}") }
}

fn incr(store: &dyn Policy, key: &Bytes, delta: Delta, st: &mut ApplyState) -> Reply {
    let current = live(store, key, st);
    let (flags, deadline) = current.as_ref().map_or((0, 0), |c| (c.flags, c.expires_at));
    let (number, text) = match delta {
        Delta::Signed(by) => {
            let base = match &current {
                None => 0,
                Some(c) => match parse_i64(&c.value) {
                    Some(n) => n,
                    None => return Reply::Error(CommandError::NotInteger),
                },
            };
            let Some(n) = base.checked_add(by) else {
                return Reply::Error(CommandError::Overflow);
            };
            (Number::Signed(n), n.to_string())
        }
        Delta::Unsigned { by, decr } => {
            let Some(c) = &current else {
                return Reply::NotFound;
            };
            let Some(base) = parse_u64(&c.value) else {
                return Reply::Error(CommandError::NonNumeric);
            };
            let n = if decr { base.saturating_sub(by) } else { base.wrapping_add(by) };
            (Number::Unsigned(n), n.to_string())
        }
        Delta::Float(by) => {
            let base = match &current {
                None => 0.0,
                Some(c) => match parse_f64(&c.value) {
                    Some(n) => n,
                    None => return Reply::Error(CommandError::NotFloat),
                },
            };
            let n = base + by;
            if !n.is_finite() {
                return Reply::Error(CommandError::NanOrInfinity);
            }
            let text = format_float(n);
            (Number::Float(Bytes::from(text.clone())), text)
        }
    };
    store_item(store, key.clone(), Bytes::from(text), flags, deadline, st);
    Reply::Number(number)
}

fn append(
    store: &dyn Policy,
    key: &Bytes,
    value: &Bytes,
    prepend: bool,
    create: Option<Expiry>,
    cas: Option<u64>,
    st: &mut ApplyState,
) -> Reply {
    let current = live(store, key, st);
    let (joined, flags, deadline) = match (current, create) {
        (None, None) => return if cas.is_some() { Reply::NotFound } else { Reply::NotStored { old: None } },
        (None, Some(expiry)) => (value.clone(), 0, expiry.resolve(st.now_ms, 0)),
        (Some(c), _) if cas.is_some_and(|want| want != c.cas) => return Reply::Exists,
        (Some(c), _) => {
            if c.value.len() + value.len() > MAX_VALUE_LEN {
                return Reply::Error(CommandError::TooLarge);
            }
            let mut buf = BytesMut::with_capacity(c.value.len() + value.len());
            if prepend {
                buf.extend_from_slice(value);
                buf.extend_from_slice(&c.value);
            } else {
                buf.extend_from_slice(&c.value);
                buf.extend_from_slice(value);
            }
            (buf.freeze(), c.flags, c.expires_at)
        }
    };
    let len = joined.len() as u64;
    store_item(store, key.clone(), joined, flags, deadline, st);
    // Redis answers the new length; memcached maps any Count to STORED.
    Reply::Count(len)
}

fn set_range(store: &dyn Policy, key: &Bytes, offset: u64, value: &Bytes, st: &mut ApplyState) -> Reply {
    let current = live(store, key, st);
    let old_len = current.as_ref().map_or(0, |c| c.value.len());
    if value.is_empty() {
        return Reply::Count(old_len as u64);
    }
    let end = offset.saturating_add(value.len() as u64);
    if end > MAX_VALUE_LEN as u64 {
        return Reply::Error(CommandError::TooLarge);
    }
    let end = end as usize;
    let mut buf = BytesMut::zeroed(end.max(old_len));
    let (flags, deadline) = match &current {
        Some(c) => {
            buf[..old_len].copy_from_slice(&c.value);
            (c.flags, c.expires_at)
        }
        None => (0, 0),
    };
    buf[offset as usize..end].copy_from_slice(value);
    let len = buf.len() as u64;
    store_item(store, key.clone(), buf.freeze(), flags, deadline, st);
    Reply::Count(len)
}

fn touch(store: &dyn Policy, key: &Bytes, expiry: Expiry, cond: ExpireCondition, st: &mut ApplyState) -> Reply {
    let Some(c) = live(store, key, st) else {
        return Reply::Bool(false);
    };
    let new = expiry.resolve(st.now_ms, c.expires_at);
    // "No deadline" compares as infinitely late.
    let as_order = |d: u64| if d == 0 { u64::MAX } else { d };
    let allowed = match cond {
        ExpireCondition::Always => true,
        ExpireCondition::IfNone => c.expires_at == 0,
        ExpireCondition::IfSome => c.expires_at != 0,
        ExpireCondition::IfGreater => c.expires_at != 0 && as_order(new) > as_order(c.expires_at),
        ExpireCondition::IfLess => as_order(new) < as_order(c.expires_at),
    };
    if !allowed {
        return Reply::Bool(false);
    }
    if matches!(expiry, Expiry::Never) && c.expires_at == 0 && cond == ExpireCondition::Always {
        // PERSIST on a key without TTL changes nothing (Redis answers 0).
        return Reply::Bool(false);
    }
    if new != 0 && new <= st.now_ms {
        // A deadline in the past deletes the key, as Redis does.
        store.remove(key);
        return Reply::Bool(true);
    }
    restore(store, key, Item { expires_at: new, ..c }, st);
    Reply::Bool(true)
}

/// Caps every item's deadline at `delay_ms` after the entry's timestamp.
fn flush_after(store: &dyn Policy, delay_ms: u64, st: &mut ApplyState) {
    let at = st.now_ms.saturating_add(delay_ms).max(1);
    let mut keys = Vec::new();
    let mut cursor = 0;
    loop {
        cursor = store.scan(cursor, &mut |k, i| {
            if i.expires_at == 0 || i.expires_at > at {
                keys.push(k.clone());
            }
            true
        });
        if cursor == 0 {
            break;
        }
    }
    for k in keys {
        if let Some(c) = store.peek(&k) {
            restore(store, &k, Item { expires_at: at, ..c }, st);
        }
    }
}

fn meta_get(store: &dyn Policy, m: &MetaGet, st: &mut ApplyState) -> Reply {
    let now = st.now_ms;
    let Some(c) = live(store, &m.key, st) else {
        let Some(ttl) = m.vivify else {
            return Reply::Meta { item: None, won: false };
        };
        // An empty placeholder; this client wins the right to fill it.
        let cas = cas_for(m.new_cas, st);
        let item =
            Item { value: Bytes::new(), flags: 0, meta: ItemMeta::stored(now), cas, expires_at: ttl.resolve(now, 0) };
        restore(store, &m.key, Item { meta: item.meta.with_won(true), ..item.clone() }, st);
        return Reply::Meta { item: Some(item), won: true };
    };
    let mut next = c.clone();
    next.meta.note_fetch(now);
    if let Some(t) = m.touch {
        next.expires_at = t.resolve(now, c.expires_at);
    }
    let expiring_soon = |r: u64| c.expires_at != 0 && c.expires_at.saturating_sub(now) < r;
    let won = !c.meta.won() && (c.meta.stale() || m.recache_ms.is_some_and(expiring_soon));
    next.meta = next.meta.with_won(c.meta.won() || won);
    if won || m.touch.is_some() {
        // Only a new deadline or a handed-out token is worth a store.
        restore(store, &m.key, next.clone(), st);
    }
    // The reader sees the state before this command (h, l, Z) and the new deadline.
    Reply::Meta { item: Some(Item { meta: c.meta, ..next }), won }
}

fn meta_delete(
    store: &dyn Policy,
    key: &Bytes,
    cas: Option<u64>,
    invalidate: Option<Expiry>,
    new_cas: Option<u64>,
    st: &mut ApplyState,
) -> Reply {
    let Some(c) = live(store, key, st) else {
        return Reply::NotFound;
    };
    if cas.is_some_and(|want| want != c.cas) {
        return Reply::Exists;
    }
    match invalidate {
        None => {
            store.remove(key);
        }
        Some(expiry) => {
            let cas = cas_for(new_cas, st);
            let meta = c.meta.with_stale(true).with_won(false);
            let expires_at = expiry.resolve(st.now_ms, c.expires_at);
            restore(store, key, Item { meta, cas, expires_at, ..c }, st);
        }
    }
    Reply::Ok
}

fn meta_arith(store: &dyn Policy, m: &MetaArith, st: &mut ApplyState) -> Reply {
    let now = st.now_ms;
    let Some(c) = live(store, &m.key, st) else {
        let Some((ttl, initial)) = m.vivify else {
            return Reply::NotFound;
        };
        let cas = cas_for(m.new_cas, st);
        let item = Item {
            value: Bytes::from(initial.to_string()),
            flags: 0,
            meta: ItemMeta::stored(now),
            cas,
            expires_at: ttl.resolve(now, 0),
        };
        restore(store, &m.key, item.clone(), st);
        return Reply::Value(Some(item));
    };
    if m.cas.is_some_and(|want| want != c.cas) {
        return Reply::Exists;
    }
    let Some(base) = parse_u64(&c.value) else {
        return Reply::Error(CommandError::NonNumeric);
    };
    let n = if m.decr { base.saturating_sub(m.delta) } else { base.wrapping_add(m.delta) };
    let expires_at = m.touch.map_or(c.expires_at, |t| t.resolve(now, c.expires_at));
    let item = Item {
        value: Bytes::from(n.to_string()),
        flags: c.flags,
        meta: ItemMeta::stored(now),
        cas: cas_for(m.new_cas, st),
        expires_at,
    };
    restore(store, &m.key, item.clone(), st);
    Reply::Value(Some(item))
}

/// Applies a write command. `st.now_ms` must be the log entry's timestamp.
pub fn apply(store: &dyn Policy, cmd: &Command, st: &mut ApplyState) -> Reply {
    match cmd {
        Command::Set(s) => set(store, &s.as_set(), st),
        Command::SetMany { items, only_if_none_exist } => {
            if *only_if_none_exist && items.iter().any(|s| live(store, &s.key, st).is_some()) {
                return Reply::Bool(false);
            }
            for s in items {
                set(store, &s.as_set(), st);
            }
            if *only_if_none_exist { Reply::Bool(true) } else { Reply::Ok }
        }
        Command::Delete { keys } => {
            let mut removed = 0;
            pipelined(
                store,
                keys.len(),
                |j| Some(&keys[j][..]),
                |j| removed += u64::from(delete(store, &keys[j], st, false).0),
            );
            Reply::Count(removed)
        }
        Command::GetDelete { key } => Reply::Value(delete(store, key, st, true).1),
        Command::GetAndTouch { keys, expiry } => {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                let item = live(store, k, st).map(|c| {
                    // A touch keeps the cas (as memcached's `gat` does) and is a fetch.
                    let mut meta = c.meta;
                    meta.note_fetch(st.now_ms);
                    let touched = Item { expires_at: expiry.resolve(st.now_ms, c.expires_at), meta, ..c.clone() };
                    restore(store, k, touched.clone(), st);
                    Item { meta: c.meta, ..touched }
                });
                out.push(item);
            }
            Reply::Values(out)
        }
        Command::Touch { key, expiry, condition } => touch(store, key, *expiry, *condition, st),
        Command::Incr { key, delta } => incr(store, key, *delta, st),
        Command::Append { key, value, prepend, create, cas } => append(store, key, value, *prepend, *create, *cas, st),
        Command::SetRange { key, offset, value } => set_range(store, key, *offset, value, st),
        Command::Rename { from, to, only_if_absent } => {
            let Some(item) = live(store, from, st) else {
                return Reply::Error(CommandError::NoSuchKey);
            };
            if from == to {
                return if *only_if_absent { Reply::Bool(false) } else { Reply::Ok };
            }
            if *only_if_absent && live(store, to, st).is_some() {
                return Reply::Bool(false);
            }
            store.remove(from);
            store_item(store, to.clone(), item.value, item.flags, item.expires_at, st);
            if *only_if_absent { Reply::Bool(true) } else { Reply::Ok }
        }
        Command::Copy { from, to, replace } => {
            let Some(item) = live(store, from, st) else {
                return Reply::Bool(false);
            };
            if from == to || (!replace && live(store, to, st).is_some()) {
                return Reply::Bool(false);
            }
            store_item(store, to.clone(), item.value, item.flags, item.expires_at, st);
            Reply::Bool(true)
        }
        Command::Flush => {
            store.clear();
            Reply::Ok
        }
        Command::FlushAfter { delay_ms } => {
            flush_after(store, *delay_ms, st);
            Reply::Ok
        }
        Command::MetaGet(m) => meta_get(store, m, st),
        Command::MetaDelete { key, cas, invalidate, new_cas } => {
            meta_delete(store, key, *cas, *invalidate, *new_cas, st)
        }
        Command::MetaArith(m) => meta_arith(store, m, st),
        Command::Evict { keys } => {
            let before = st.evicted.len();
            pipelined(
                store,
                keys.len(),
                |j| Some(&keys[j][..]),
                |j| {
                    if store.remove(&keys[j]).is_some() {
                        st.evicted.push(keys[j].clone());
                    }
                },
            );
            Reply::Count((st.evicted.len() - before) as u64)
        }
        Command::Sweep { keys } => {
            let now = st.now_ms;
            let mut removed = 0;
            for k in keys {
                let mut expired = |found: Option<ItemRef<'_>>| match found {
                    Some(i) if i.is_expired(now) => {
                        removed += 1;
                        Update::Remove
                    }
                    _ => Update::Keep,
                };
                store.update_in_place(k, &mut expired, &mut st.evicted);
            }
            st.expired += removed;
            Reply::Count(removed)
        }
        read => Reply::Error(CommandError::Refused(format!("{:?} is not a write", read.op()))),
    }
}

/// Runs a read command against the local store at `now_ms`.
pub fn read(store: &dyn Policy, cmd: &Command, now_ms: u64) -> Reply {
    let visible = |item: Option<Item>| item.filter(|i| !i.is_expired(now_ms));
    match cmd {
        // A multi-key get (MGET, memcached `get k1 k2 ...`) prefetches its keys too.
        Command::Get { keys } => {
            let mut items = Vec::with_capacity(keys.len());
            pipelined(store, keys.len(), |j| Some(&keys[j][..]), |j| items.push(visible(store.get(&keys[j], now_ms))));
            Reply::Values(items)
        }
        Command::Inspect { key } => Reply::Value(visible(store.peek(key))),
        Command::Exists { keys } => {
            Reply::Count(keys.iter().filter(|k| visible(store.peek(k)).is_some()).count() as u64)
        }
        Command::Ttl { key } => Reply::Ttl(match visible(store.peek(key)) {
            None => Ttl::Missing,
            Some(i) if i.expires_at == 0 => Ttl::Persistent,
            Some(i) => Ttl::Expires { at_ms: i.expires_at, remaining_ms: i.expires_at - now_ms },
        }),
        Command::Scan { cursor, pattern, count } => {
            let mut keys = Vec::new();
            let mut visited = 0usize;
            let budget = (*count).max(1);
            let next = store.scan(*cursor, &mut |k, i| {
                visited += 1;
                if !i.is_expired(now_ms) && pattern.as_ref().is_none_or(|p| glob_match(p, k)) {
                    keys.push(k.clone());
                }
                visited < budget
            });
            Reply::Keys { cursor: next, keys }
        }
        Command::RandomKey => {
            // A few tries to skip expired keys, as Redis does.
            for attempt in 0..16u64 {
                let Some(k) = store.random_key(now_ms.wrapping_add(attempt)) else {
                    return Reply::Key(None);
                };
                if visible(store.peek(&k)).is_some() {
                    return Reply::Key(Some(k));
                }
            }
            Reply::Key(None)
        }
        Command::Size => Reply::Count(store.len() as u64),
        Command::Stats => Reply::Stats(vec![
            ("curr_items".into(), store.len().to_string()),
            ("bytes".into(), store.used_bytes().to_string()),
            ("limit_maxbytes".into(), store.capacity().to_string()),
            ("entry_overhead".into(), store.entry_overhead().to_string()),
        ]),
        write => Reply::Error(CommandError::Refused(format!("{:?} is a write", write.op()))),
    }
}
