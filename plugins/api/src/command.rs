//! The protocol-neutral command model.
//!
//! Every protocol plugin (HTTP, RESP, memcached, gRPC) translates its wire
//! requests into [`Command`]s and translates [`Reply`](crate::Reply)s back. The model is the
//! union of what the four protocols can ask *atomically*, so a read-modify-write
//! such as `INCR`, memcached `cas` or `APPEND` is one command, executed inside
//! the replicated state machine, and therefore atomic across protocols and
//! across nodes.
//!
//! Commands are either *writes* (they become Raft log entries and are applied
//! on every node) or *reads* (they never enter the log; they are served from
//! the local store after a read index, see the core's raft middleware).
//! [`Command::is_write`] is the single place that decides which is which.
//!
//! Time in commands is never "now": a relative expiry ([`Expiry::In`]) is
//! resolved against the timestamp carried by the log entry that applies it, so
//! replicas that apply the same log agree on every deadline.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::reply::Value;

/// A key as the protocols deliver it: arbitrary bytes.
pub type Key = Bytes;

/// When an item expires, as a command asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Expiry {
    /// Never expires (and removes an existing deadline: `PERSIST`, `SET` without TTL).
    #[default]
    Never,
    /// Keep whatever deadline the item already has (`KEEPTTL`, memcached `append`).
    Keep,
    /// Expires this many milliseconds after the log entry's timestamp.
    In(u64),
    /// Expires at this unix time in milliseconds.
    At(u64),
}

impl Expiry {
    /// The absolute deadline (unix ms, 0 = never) this expiry gives an item
    /// whose current deadline is `current`, judged at `now_ms`.
    pub fn resolve(self, now_ms: u64, current: u64) -> u64 {
        match self {
            Expiry::Never => 0,
            Expiry::Keep => current,
            // A deadline of "now" must still be in the past for `now`, never 0 (= never).
            Expiry::In(ms) => now_ms.saturating_add(ms).max(1),
            Expiry::At(at) => at.max(1),
        }
    }
}

/// The condition a `set` must meet to store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Condition {
    /// Store unconditionally (memcached `set`, Redis `SET`).
    #[default]
    Always,
    /// Store only if the key is absent (memcached `add`, Redis `NX`).
    IfAbsent,
    /// Store only if the key is present (memcached `replace`, Redis `XX`).
    IfPresent,
    /// Store only if the item's cas unique equals this (memcached `cas`).
    IfCas(u64),
}

/// The condition an expiry change must meet (Redis `EXPIRE ... NX|XX|GT|LT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ExpireCondition {
    /// Always change the deadline.
    #[default]
    Always,
    /// Only if the item has no deadline.
    IfNone,
    /// Only if the item has a deadline.
    IfSome,
    /// Only if the new deadline is later (no deadline counts as infinitely late).
    IfGreater,
    /// Only if the new deadline is earlier (no deadline counts as infinitely late).
    IfLess,
}

/// A `set` with everything a protocol can attach to it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetCommand {
    /// The key.
    #[serde(deserialize_with = "crate::shared::bytes")]
    pub key: Key,
    /// The value.
    #[serde(deserialize_with = "crate::shared::bytes")]
    pub value: Bytes,
    /// Opaque client flags (memcached's 32-bit flags).
    pub flags: u32,
    /// Expiry of the stored item.
    pub expiry: Expiry,
    /// When to store.
    pub condition: Condition,
    /// Return the previous item in the reply (Redis `SET ... GET`, `GETSET`).
    pub return_old: bool,
    /// Give the stored item this cas instead of the next counter value
    /// (memcached meta `E`).
    pub new_cas: Option<u64>,
    /// With [`Condition::IfCas`]: a cas *older* than the item's still
    /// stores, but marks the item stale (memcached meta `ms ... I`).
    pub invalidate: bool,
}

/// A `set` as the executor applies it ([`crate::exec::Write`]), its key and
/// value borrowed: from a [`SetCommand`] ([`SetCommand::as_set`]), or
/// straight from a log entry's encoding, where a follower reads them
/// without making a `Bytes` of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetRef<'a> {
    /// The key.
    pub key: &'a [u8],
    /// The value.
    pub value: Value<'a>,
    /// As [`SetCommand::flags`].
    pub flags: u32,
    /// As [`SetCommand::expiry`].
    pub expiry: Expiry,
    /// As [`SetCommand::condition`].
    pub condition: Condition,
    /// As [`SetCommand::return_old`].
    pub return_old: bool,
    /// As [`SetCommand::new_cas`].
    pub new_cas: Option<u64>,
    /// As [`SetCommand::invalidate`].
    pub invalidate: bool,
}

impl SetCommand {
    /// The set, borrowed (its value shared with the store when long).
    #[inline]
    pub fn as_set(&self) -> SetRef<'_> {
        SetRef {
            key: &self.key,
            value: Value::Shared(&self.value),
            flags: self.flags,
            expiry: self.expiry,
            condition: self.condition,
            return_old: self.return_old,
            new_cas: self.new_cas,
            invalidate: self.invalidate,
        }
    }

    /// An unconditional set without TTL or flags.
    pub fn new(key: impl Into<Key>, value: impl Into<Bytes>) -> Self {
        SetCommand {
            key: key.into(),
            value: value.into(),
            flags: 0,
            expiry: Expiry::Never,
            condition: Condition::Always,
            return_old: false,
            new_cas: None,
            invalidate: false,
        }
    }
}

/// How a counter changes.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Delta {
    /// Redis `INCRBY`/`DECRBY`: signed 64-bit; a missing key counts as 0 and is
    /// created; overflow is an error; the value must be a decimal integer.
    Signed(i64),
    /// memcached `incr`/`decr`: unsigned 64-bit; a missing key is `NOT_FOUND`;
    /// incr wraps at 2^64, decr stops at 0.
    Unsigned {
        /// Amount.
        by: u64,
        /// Decrement instead of increment.
        decr: bool,
    },
    /// Redis `INCRBYFLOAT`: a missing key counts as 0.
    Float(f64),
}

/// The parts of a memcached `mg` that make it a write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaGet {
    /// Key.
    #[serde(deserialize_with = "crate::shared::bytes")]
    pub key: Key,
    /// On a miss, create an empty item with this expiry and hand this
    /// client the recache token (`N`).
    pub vivify: Option<Expiry>,
    /// Hand out the recache token if the item expires within this many ms (`R`).
    pub recache_ms: Option<u64>,
    /// New expiry for a hit (`T`).
    pub touch: Option<Expiry>,
    /// The cas a vivified item takes (`E`).
    pub new_cas: Option<u64>,
}

/// A memcached `ma`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetaArith {
    /// Key.
    #[serde(deserialize_with = "crate::shared::bytes")]
    pub key: Key,
    /// Decrement instead of increment (`MD`).
    pub decr: bool,
    /// Amount (`D`, default 1).
    pub delta: u64,
    /// Only if the item's cas equals this (`C`).
    pub cas: Option<u64>,
    /// The cas the changed item takes (`E`).
    pub new_cas: Option<u64>,
    /// On a miss, create the item with this expiry and initial value (`N`, `J`).
    pub vivify: Option<(Expiry, u64)>,
    /// New expiry on a hit (`T`).
    pub touch: Option<Expiry>,
}

/// One operation of the command model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    // ---- reads ----
    /// Fetch many keys (missing or expired keys answer `None`).
    Get {
        /// Keys, answered in this order.
        #[serde(deserialize_with = "crate::shared::list")]
        keys: Vec<Key>,
    },
    /// How many of the keys exist (a key named twice counts twice, as Redis does).
    Exists {
        /// Keys.
        #[serde(deserialize_with = "crate::shared::list")]
        keys: Vec<Key>,
    },
    /// Remaining time to live of a key.
    Ttl {
        /// Key.
        #[serde(deserialize_with = "crate::shared::bytes")]
        key: Key,
    },
    /// Iterate the key space: keys in `cursor..`, at most `count`, filtered by a glob.
    Scan {
        /// Where to continue (0 starts).
        cursor: u64,
        /// Optional glob (`*`, `?`, `[...]`, `\`).
        #[serde(deserialize_with = "crate::shared::optional")]
        pattern: Option<Bytes>,
        /// How many keys to visit at most.
        count: usize,
    },
    /// One key chosen at random.
    RandomKey,
    /// One item without recording an access (memcached `me`, `mg ... u`).
    Inspect {
        /// Key.
        #[serde(deserialize_with = "crate::shared::bytes")]
        key: Key,
    },
    /// Number of live items.
    Size,
    /// Store statistics as name/value pairs.
    Stats,

    // ---- writes ----
    /// Store a value.
    Set(SetCommand),
    /// Store many values; with `only_if_none_exist`, store all or none (`MSETNX`).
    SetMany {
        /// The sets, applied in order.
        items: Vec<SetCommand>,
        /// Store only if none of the keys exists.
        only_if_none_exist: bool,
    },
    /// Remove keys; the reply counts those that existed.
    Delete {
        /// Keys.
        #[serde(deserialize_with = "crate::shared::list")]
        keys: Vec<Key>,
    },
    /// Fetch and remove (`GETDEL`).
    GetDelete {
        /// Key.
        #[serde(deserialize_with = "crate::shared::bytes")]
        key: Key,
    },
    /// Fetch keys and change their expiry (memcached `gat`, Redis `GETEX`).
    GetAndTouch {
        /// Keys.
        #[serde(deserialize_with = "crate::shared::list")]
        keys: Vec<Key>,
        /// New expiry.
        expiry: Expiry,
    },
    /// Change a key's expiry (`touch`, `EXPIRE`, `PERSIST` with [`Expiry::Never`]).
    Touch {
        /// Key.
        #[serde(deserialize_with = "crate::shared::bytes")]
        key: Key,
        /// New expiry.
        expiry: Expiry,
        /// When to change it.
        condition: ExpireCondition,
    },
    /// Add to a numeric value.
    Incr {
        /// Key.
        #[serde(deserialize_with = "crate::shared::bytes")]
        key: Key,
        /// Amount and arithmetic.
        delta: Delta,
    },
    /// Append or prepend bytes.
    Append {
        /// Key.
        #[serde(deserialize_with = "crate::shared::bytes")]
        key: Key,
        /// Bytes to add.
        #[serde(deserialize_with = "crate::shared::bytes")]
        value: Bytes,
        /// Prepend instead of append.
        prepend: bool,
        /// Create a missing key with this expiry (Redis; memcached meta
        /// `ms ... MA N<ttl>`); `None` answers `NotStored` (memcached).
        create: Option<Expiry>,
        /// Only if the item's cas equals this (memcached meta `C`).
        cas: Option<u64>,
    },
    /// Overwrite part of a value (`SETRANGE`), zero-padding as needed.
    SetRange {
        /// Key.
        #[serde(deserialize_with = "crate::shared::bytes")]
        key: Key,
        /// Byte offset.
        offset: u64,
        /// Bytes written at the offset.
        #[serde(deserialize_with = "crate::shared::bytes")]
        value: Bytes,
    },
    /// Rename a key (`RENAME`, `RENAMENX` with `only_if_absent`).
    Rename {
        /// Source.
        #[serde(deserialize_with = "crate::shared::bytes")]
        from: Key,
        /// Destination.
        #[serde(deserialize_with = "crate::shared::bytes")]
        to: Key,
        /// Only if the destination does not exist.
        only_if_absent: bool,
    },
    /// Copy a key (`COPY`).
    Copy {
        /// Source.
        #[serde(deserialize_with = "crate::shared::bytes")]
        from: Key,
        /// Destination.
        #[serde(deserialize_with = "crate::shared::bytes")]
        to: Key,
        /// Overwrite an existing destination.
        replace: bool,
    },
    /// Remove every item.
    Flush,
    /// Let every item expire after this many milliseconds at the latest
    /// (memcached `flush_all <delay>`): items already expiring sooner keep
    /// their deadline; items stored later are not affected.
    FlushAfter {
        /// Milliseconds after the entry's timestamp.
        delay_ms: u64,
    },
    /// memcached meta get that may change the item: vivify a miss, hand out
    /// the recache token, update the TTL (`mg` with `N`, `R`, `T`, or on a
    /// stale item). A plain `mg` is a [`Command::Get`].
    MetaGet(MetaGet),
    /// memcached meta delete (`md`): compare cas, or invalidate instead of
    /// removing.
    MetaDelete {
        /// Key.
        #[serde(deserialize_with = "crate::shared::bytes")]
        key: Key,
        /// Only if the item's cas equals this (`C`).
        cas: Option<u64>,
        /// Mark the item stale instead of removing it (`I`), with a new
        /// expiry if given (`T`).
        invalidate: Option<Expiry>,
        /// The cas the invalidated item takes (`E`).
        new_cas: Option<u64>,
    },
    /// memcached meta arithmetic (`ma`): unsigned 64-bit, incr wraps, decr
    /// stops at 0.
    MetaArith(MetaArith),
    /// Remove keys chosen by the leader's eviction policy (replicated evictions).
    Evict {
        /// Keys.
        #[serde(deserialize_with = "crate::shared::list")]
        keys: Vec<Key>,
    },
    /// Remove those of `keys` that have expired at the entry's timestamp
    /// (the leader's background expiry sweep; a key written again since the
    /// sweep saw it stays).
    Sweep {
        /// Keys.
        #[serde(deserialize_with = "crate::shared::list")]
        keys: Vec<Key>,
    },
}

/// The kind of a command, for metrics labels and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// [`Command::Get`], [`Command::Inspect`] and [`Command::MetaGet`]
    Get,
    /// [`Command::Exists`]
    Exists,
    /// [`Command::Ttl`]
    Ttl,
    /// [`Command::Scan`]
    Scan,
    /// [`Command::RandomKey`]
    RandomKey,
    /// [`Command::Size`]
    Size,
    /// [`Command::Stats`]
    Stats,
    /// [`Command::Set`] and [`Command::SetMany`]
    Set,
    /// [`Command::Delete`], [`Command::GetDelete`] and [`Command::MetaDelete`]
    Delete,
    /// [`Command::GetAndTouch`] and [`Command::Touch`]
    Touch,
    /// [`Command::Incr`] and [`Command::MetaArith`]
    Incr,
    /// [`Command::Append`] and [`Command::SetRange`]
    Append,
    /// [`Command::Rename`] and [`Command::Copy`]
    Rename,
    /// [`Command::Flush`] and [`Command::FlushAfter`]
    Flush,
    /// [`Command::Evict`]
    Evict,
    /// [`Command::Sweep`]
    Sweep,
}

impl Op {
    /// All ops, for pre-registering metric series.
    pub const ALL: [Op; 16] = [
        Op::Get,
        Op::Exists,
        Op::Ttl,
        Op::Scan,
        Op::RandomKey,
        Op::Size,
        Op::Stats,
        Op::Set,
        Op::Delete,
        Op::Touch,
        Op::Incr,
        Op::Append,
        Op::Rename,
        Op::Flush,
        Op::Evict,
        Op::Sweep,
    ];

    /// The op's position in [`Op::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric label of the op.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::Exists => "exists",
            Op::Ttl => "ttl",
            Op::Scan => "scan",
            Op::RandomKey => "randomkey",
            Op::Size => "size",
            Op::Stats => "stats",
            Op::Set => "set",
            Op::Delete => "delete",
            Op::Touch => "touch",
            Op::Incr => "incr",
            Op::Append => "append",
            Op::Rename => "rename",
            Op::Flush => "flush",
            Op::Evict => "evict",
            Op::Sweep => "sweep",
        }
    }
}

/// Whether a field is small: packed into a batch's shared buffer by
/// [`pack_small`], and shared with the buffer it is decoded from
/// ([`crate::shared`]) rather than copied (gerdu's log entries too).
pub fn is_small(b: &[u8]) -> bool {
    b.len() <= crate::store::PACK_LIMIT
}

/// Gives the keys and values of more than [`crate::store::PACK_LIMIT`] bytes
/// their own allocation, as [`Command::detach`] does; leaves the small ones.
/// gerdu runs it on the client's task, so that large copies of different
/// clients run in parallel on a multi-threaded runtime.
pub fn detach_large(commands: &mut [Command]) {
    for c in commands.iter_mut() {
        c.each_bytes(|b| {
            if !is_small(b) {
                *b = crate::exec::detach(b);
            }
        });
    }
}

/// Copies the keys and values of up to [`crate::store::PACK_LIMIT`] bytes
/// into one shared buffer; leaves the large ones. gerdu's proposer runs it
/// on each log entry's writes (those of every client merged into it) when
/// nothing needs the entry's encoding at once (a sole voter without
/// storage): the entry then owns one buffer, freed whole when the log is
/// compacted, instead of two allocations per write. Otherwise the encoding
/// is that buffer.
pub fn pack_small(commands: &mut [Command]) {
    let mut total = 0;
    for c in commands.iter_mut() {
        c.each_bytes(|b| {
            if is_small(b) {
                total += b.len();
            }
        });
    }
    // Each small field is split off the front of the one buffer as it is copied.
    let mut arena = bytes::BytesMut::with_capacity(total);
    for c in commands.iter_mut() {
        c.each_bytes(|b| {
            if is_small(b) {
                arena.extend_from_slice(b);
                *b = arena.split().freeze();
            }
        });
    }
}

impl Command {
    /// Whether the command changes data and so must go through the log.
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Command::Get { .. }
                | Command::Exists { .. }
                | Command::Ttl { .. }
                | Command::Scan { .. }
                | Command::RandomKey
                | Command::Inspect { .. }
                | Command::Size
                | Command::Stats
        )
    }

    /// The key the command looks up first, if it names one (what the
    /// batch executor prefetches, [`crate::Policy::prefetch`]).
    pub fn first_key(&self) -> Option<&[u8]> {
        let key = match self {
            Command::Set(s) => &s.key,
            Command::SetMany { items, .. } => &items.first()?.key,
            Command::Get { keys }
            | Command::Exists { keys }
            | Command::Delete { keys }
            | Command::GetAndTouch { keys, .. }
            | Command::Evict { keys }
            | Command::Sweep { keys } => keys.first()?,
            Command::GetDelete { key }
            | Command::Inspect { key }
            | Command::Ttl { key }
            | Command::Touch { key, .. }
            | Command::Incr { key, .. }
            | Command::Append { key, .. }
            | Command::SetRange { key, .. }
            | Command::MetaDelete { key, .. }
            | Command::MetaGet(MetaGet { key, .. })
            | Command::MetaArith(MetaArith { key, .. }) => key,
            Command::Rename { from, .. } | Command::Copy { from, .. } => from,
            Command::Scan { .. }
            | Command::RandomKey
            | Command::Size
            | Command::Stats
            | Command::Flush
            | Command::FlushAfter { .. } => return None,
        };
        Some(key)
    }

    /// Calls `f` on every key and value the command carries.
    fn each_bytes(&mut self, mut f: impl FnMut(&mut Bytes)) {
        match self {
            Command::Set(s) => {
                f(&mut s.key);
                f(&mut s.value);
            }
            Command::SetMany { items, .. } => {
                for s in items {
                    f(&mut s.key);
                    f(&mut s.value);
                }
            }
            Command::Delete { keys }
            | Command::GetAndTouch { keys, .. }
            | Command::Evict { keys }
            | Command::Sweep { keys } => keys.iter_mut().for_each(&mut f),
            Command::GetDelete { key }
            | Command::Touch { key, .. }
            | Command::Incr { key, .. }
            | Command::MetaDelete { key, .. }
            | Command::MetaGet(MetaGet { key, .. })
            | Command::MetaArith(MetaArith { key, .. }) => f(key),
            Command::Append { key, value, .. } | Command::SetRange { key, value, .. } => {
                f(key);
                f(value);
            }
            Command::Rename { from, to, .. } | Command::Copy { from, to, .. } => {
                f(from);
                f(to);
            }
            Command::Get { .. }
            | Command::Exists { .. }
            | Command::Ttl { .. }
            | Command::Scan { .. }
            | Command::RandomKey
            | Command::Inspect { .. }
            | Command::Size
            | Command::Stats
            | Command::Flush
            | Command::FlushAfter { .. } => {}
        }
    }

    /// Gives every key and value its own allocation (see
    /// [`crate::exec::detach`]). Protocols parse zero-copy, so a command's
    /// bytes are slices of a whole network read; a write is detached once,
    /// when it is proposed, so that neither the log entry that carries it nor
    /// the item it stores pins that buffer. Reads are never kept and need not
    /// be detached.
    pub fn detach(&mut self) {
        self.each_bytes(|b| *b = crate::exec::detach(b));
    }

    /// The command's kind.
    pub fn op(&self) -> Op {
        match self {
            Command::Get { .. } | Command::Inspect { .. } | Command::MetaGet(_) => Op::Get,
            Command::Exists { .. } => Op::Exists,
            Command::Ttl { .. } => Op::Ttl,
            Command::Scan { .. } => Op::Scan,
            Command::RandomKey => Op::RandomKey,
            Command::Size => Op::Size,
            Command::Stats => Op::Stats,
            Command::Set(_) | Command::SetMany { .. } => Op::Set,
            Command::Delete { .. } | Command::GetDelete { .. } | Command::MetaDelete { .. } => Op::Delete,
            Command::GetAndTouch { .. } | Command::Touch { .. } => Op::Touch,
            Command::Incr { .. } | Command::MetaArith(_) => Op::Incr,
            Command::Append { .. } | Command::SetRange { .. } => Op::Append,
            Command::Rename { .. } | Command::Copy { .. } => Op::Rename,
            Command::Flush | Command::FlushAfter { .. } => Op::Flush,
            Command::Evict { .. } => Op::Evict,
            Command::Sweep { .. } => Op::Sweep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_are_classified() {
        assert!(!Command::Get { keys: vec![] }.is_write());
        assert!(!Command::Size.is_write());
        assert!(Command::Set(SetCommand::new("k", "v")).is_write());
        assert!(Command::GetAndTouch { keys: vec![], expiry: Expiry::Never }.is_write());
        assert!(Command::Flush.is_write());
    }

    #[test]
    fn detach_copies_slices_of_a_larger_buffer() {
        let read = Bytes::from(vec![b'x'; 16 * 1024]);
        let mut cmd = Command::Set(SetCommand::new(read.slice(0..3), read.slice(3..10)));
        cmd.detach();
        let Command::Set(s) = &cmd else { unreachable!() };
        assert_eq!((&s.key[..], &s.value[..]), (&b"xxx"[..], &b"xxxxxxx"[..]));
        // The detached bytes no longer point into the read buffer.
        let range = read.as_ptr_range();
        assert!(!range.contains(&s.key.as_ptr()) && !range.contains(&s.value.as_ptr()));
    }

    #[test]
    fn a_batch_shares_one_buffer_for_its_small_bytes() {
        let read = Bytes::from(vec![b'x'; 16 * 1024]);
        let big = crate::store::PACK_LIMIT + 1;
        let mut cmds = vec![
            Command::Set(SetCommand::new(read.slice(0..3), read.slice(3..10))),
            Command::Get { keys: vec![read.slice(0..2)] },
            Command::Set(SetCommand::new(read.slice(10..12), read.slice(12..12 + big))),
            Command::Delete { keys: vec![read.slice(20..25)] },
        ];
        let before = cmds.clone();
        detach_large(&mut cmds);
        pack_small(&mut cmds);
        assert_eq!(cmds, before, "same contents");
        let (Command::Set(a), Command::Set(b), Command::Delete { keys }) = (&cmds[0], &cmds[2], &cmds[3]) else {
            unreachable!()
        };
        let range = read.as_ptr_range();
        for x in [&a.key, &a.value, &b.key, &b.value, &keys[0]] {
            assert!(!range.contains(&x.as_ptr()), "no longer in the read buffer");
        }
        // Small ones are consecutive in one buffer; the large value has its own.
        assert_eq!(a.value.as_ptr(), a.key.as_ptr().wrapping_add(3));
        assert_eq!(b.key.as_ptr(), a.value.as_ptr().wrapping_add(7));
        assert_eq!(keys[0].as_ptr(), b.key.as_ptr().wrapping_add(2));
        assert_ne!(b.value.as_ptr(), b.key.as_ptr().wrapping_add(2));
        // Reads are left alone.
        let Command::Get { keys } = &cmds[1] else { unreachable!() };
        assert!(range.contains(&keys[0].as_ptr()));
    }

    #[test]
    fn the_two_halves_of_detaching_split_the_fields_by_size() {
        let read = Bytes::from(vec![b'x'; 16 * 1024]);
        let big = crate::store::PACK_LIMIT + 1;
        let fresh = || vec![Command::Set(SetCommand::new(read.slice(0..3), read.slice(3..3 + big)))];
        let in_read = |b: &Bytes| read.as_ptr_range().contains(&b.as_ptr());
        let fields = |c: &[Command]| {
            let Command::Set(s) = &c[0] else { unreachable!() };
            (s.key.clone(), s.value.clone())
        };
        // Large fields only: the small key is still a slice of the read.
        let mut cmds = fresh();
        detach_large(&mut cmds);
        let (key, value) = fields(&cmds);
        assert!(in_read(&key) && !in_read(&value));
        // Small fields only: the large value is still a slice of the read.
        let mut cmds = fresh();
        pack_small(&mut cmds);
        let (key, value) = fields(&cmds);
        assert!(!in_read(&key) && in_read(&value));
        assert_eq!((&key[..], value.len()), (&b"xxx"[..], big));
    }

    #[test]
    fn expiry_resolution() {
        assert_eq!(Expiry::Never.resolve(1000, 5), 0);
        assert_eq!(Expiry::Keep.resolve(1000, 5), 5);
        assert_eq!(Expiry::In(10).resolve(1000, 5), 1010);
        assert_eq!(Expiry::In(0).resolve(0, 5), 1, "an immediate deadline is never 0");
        assert_eq!(Expiry::At(77).resolve(1000, 5), 77);
    }

    #[test]
    fn op_index_is_its_position_in_all() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(op.index(), i);
        }
    }

    #[test]
    fn op_labels_are_unique() {
        let mut labels: Vec<_> = Op::ALL.iter().map(|o| o.as_str()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Op::ALL.len());
    }
}
