//! What a [`Command`](crate::Command) answers, protocol-neutral.
//!
//! Each protocol maps a reply to its own wire form (HTTP status codes, RESP
//! types, memcached `STORED`/`NOT_STORED`/`EXISTS`/`NOT_FOUND` lines, gRPC
//! messages). Replies are `Serialize` because they travel back from the
//! leader to the node that forwarded a request.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A stored item as the store keeps it and as reads return it. The default
/// is an empty value with no flags, cas, deadline or access record.
///
/// `V` is [`Bytes`] everywhere but in a write's decision
/// ([`crate::Update::Store`]), where the value is a [`Value`] borrowed from
/// the write: the store copies a short value into its entry and keeps a long
/// one (shared when the write holds it as `Bytes`), so a write's own value
/// is neither cloned nor dropped on the way (two atomic reference counts per
/// SET on every node).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item<V = Bytes> {
    /// The value.
    pub value: V,
    /// Opaque client flags.
    pub flags: u32,
    /// Last access and memcached meta state (see [`ItemMeta`]).
    pub meta: ItemMeta,
    /// Unique per write (memcached `cas`): a counter of applied writes,
    /// identical on every replica.
    pub cas: u64,
    /// Unix time in ms when the item expires; 0 = never.
    pub expires_at: u64,
}

/// An item's access time and state bits, packed into 32 bits so that an
/// [`Item`] stays 56 bytes.
///
/// - bits 0–28: unix seconds (mod 2^29) of the last access, for memcached's
///   `mg ... l` and `me ... la=`; ages are computed modulo 2^29 (17 years),
///   so the wrap never shows;
/// - bit 29 `FETCHED`: read since it was stored (`mg ... h`, `me fetch=`);
/// - bit 30 `STALE`: invalidated by `md ... I` / `ms ... I` (`X` flag);
/// - bit 31 `WON`: a client was handed the recache token (`W`; later
///   readers see `Z`).
///
/// `STALE` and `WON` change only through log entries, so they are identical
/// on every replica and travel in snapshots. The access time and `FETCHED`
/// are each node's own record of its reads, like recency in an LRU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemMeta(pub u32);

impl ItemMeta {
    const TIME: u32 = (1 << 29) - 1;
    const FETCHED: u32 = 1 << 29;
    const STALE: u32 = 1 << 30;
    const WON: u32 = 1 << 31;
    /// The bits that are identical on every replica.
    pub const REPLICATED: u32 = Self::STALE | Self::WON;

    /// A fresh item's meta: accessed at `now_ms`, nothing else.
    pub fn stored(now_ms: u64) -> Self {
        ItemMeta(Self::secs(now_ms))
    }

    fn secs(now_ms: u64) -> u32 {
        ((now_ms / 1000) as u32) & Self::TIME
    }

    /// Records a read at `now_ms`.
    #[inline]
    pub fn note_fetch(&mut self, now_ms: u64) {
        self.0 = (self.0 & !Self::TIME) | Self::FETCHED | Self::secs(now_ms);
    }

    /// Whether the item was read since it was stored.
    pub fn fetched(self) -> bool {
        self.0 & Self::FETCHED != 0
    }

    /// Seconds since the last access, judged at `now_ms`.
    pub fn idle_secs(self, now_ms: u64) -> u32 {
        Self::secs(now_ms).wrapping_sub(self.0 & Self::TIME) & Self::TIME
    }

    /// Whether the item was invalidated (memcached `X`).
    pub fn stale(self) -> bool {
        self.0 & Self::STALE != 0
    }

    /// Whether the recache token was handed out (memcached `Z` for later readers).
    pub fn won(self) -> bool {
        self.0 & Self::WON != 0
    }

    /// With the stale bit set or cleared.
    pub fn with_stale(self, on: bool) -> Self {
        ItemMeta(if on { self.0 | Self::STALE } else { self.0 & !Self::STALE })
    }

    /// With the won bit set or cleared.
    pub fn with_won(self, on: bool) -> Self {
        ItemMeta(if on { self.0 | Self::WON } else { self.0 & !Self::WON })
    }

    /// Only the replica-identical bits (for snapshots and digests).
    pub fn replicated(self) -> Self {
        ItemMeta(self.0 & Self::REPLICATED)
    }
}

/// What an [`Item`]'s value can be: owned [`Bytes`], or a [`Value`]
/// borrowed from the write that stores it.
pub trait ItemValue: AsRef<[u8]> {
    /// The value as [`Bytes`] of its own (what the store keeps of a long
    /// value): moved if owned, a reference count or a copy if borrowed.
    fn into_shared(self) -> Bytes;
}

impl ItemValue for Bytes {
    #[inline]
    fn into_shared(self) -> Bytes {
        self
    }
}

/// A value a write stores, borrowed from the write: the `Bytes` of a
/// command (a long value is then shared), or bytes inside a buffer the
/// store must not keep alive, such as a log entry's encoding (a long value
/// is then copied).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    /// A command's value.
    Shared(&'a Bytes),
    /// Bytes to copy.
    Borrowed(&'a [u8]),
}

impl AsRef<[u8]> for Value<'_> {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        match self {
            Value::Shared(b) => b,
            Value::Borrowed(s) => s,
        }
    }
}

impl ItemValue for Value<'_> {
    #[inline]
    fn into_shared(self) -> Bytes {
        match self {
            Value::Shared(b) => b.clone(),
            Value::Borrowed(s) => Bytes::copy_from_slice(s),
        }
    }
}

impl Item<Value<'_>> {
    /// The item, owned (its value shared with the command's, or copied).
    pub fn owned(&self) -> Item {
        Item {
            value: self.value.into_shared(),
            flags: self.flags,
            meta: self.meta,
            cas: self.cas,
            expires_at: self.expires_at,
        }
    }
}

/// Values up to this size are copied, not shared, when read (see
/// [`Item::read_copy`]).
pub const READ_COPY_LIMIT: usize = 512;

impl Item {
    /// A copy of the item for a read's reply. A small value is copied into a
    /// fresh buffer instead of sharing the stored one: sharing touches the
    /// stored buffer's reference count (a separate allocation, so a cache
    /// miss, plus an atomic increment and decrement), while the copy touches
    /// only the value bytes, which the reply reads anyway. Larger values are
    /// shared.
    #[inline]
    pub fn read_copy(&self) -> Item {
        let value =
            if self.value.len() <= READ_COPY_LIMIT { Bytes::copy_from_slice(&self.value) } else { self.value.clone() };
        Item { value, ..*self }
    }

    /// Whether the item is expired at `now_ms`.
    #[inline]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now_ms
    }
}

/// A stored item seen where it is, without a copy of its value: what
/// [`crate::Policy::update_in_place`] shows the decision it asks for.
#[derive(Clone, Copy, Debug)]
pub struct ItemRef<'a> {
    /// The value's bytes.
    pub value: &'a [u8],
    /// The value as shared bytes, when the store keeps it so (long values):
    /// [`ItemRef::to_item`] shares it instead of copying.
    pub shared: Option<&'a Bytes>,
    /// Opaque client flags.
    pub flags: u32,
    /// Last access and memcached meta state.
    pub meta: ItemMeta,
    /// The item's cas unique.
    pub cas: u64,
    /// Unix time in ms when the item expires; 0 = never.
    pub expires_at: u64,
}

impl ItemRef<'_> {
    /// Whether the item is expired at `now_ms`.
    #[inline]
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now_ms
    }

    /// The item, owned: the value shared if the store shares it, else copied.
    pub fn to_item(&self) -> Item {
        let value = self.shared.cloned().unwrap_or_else(|| Bytes::copy_from_slice(self.value));
        Item { value, flags: self.flags, meta: self.meta, cas: self.cas, expires_at: self.expires_at }
    }
}

impl<'a> From<&'a Item> for ItemRef<'a> {
    fn from(item: &'a Item) -> Self {
        ItemRef {
            value: &item.value,
            shared: Some(&item.value),
            flags: item.flags,
            meta: item.meta,
            cas: item.cas,
            expires_at: item.expires_at,
        }
    }
}

/// A numeric result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Number {
    /// Signed result (Redis `INCR`).
    Signed(i64),
    /// Unsigned result (memcached `incr`).
    Unsigned(u64),
    /// Float result, already formatted as Redis formats it.
    Float(Bytes),
}

/// Remaining life of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ttl {
    /// No such key (Redis `-2`).
    Missing,
    /// The key never expires (Redis `-1`).
    Persistent,
    /// The key expires.
    Expires {
        /// Absolute deadline, unix ms.
        at_ms: u64,
        /// Milliseconds left.
        remaining_ms: u64,
    },
}

/// Why a command failed although the request was well-formed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CommandError {
    /// The value is not a decimal integer in range (Redis wording).
    #[error("value is not an integer or out of range")]
    NotInteger,
    /// memcached: the value is not an unsigned decimal.
    #[error("cannot increment or decrement non-numeric value")]
    NonNumeric,
    /// The value is not a valid float.
    #[error("value is not a valid float")]
    NotFloat,
    /// Arithmetic overflow.
    #[error("increment or decrement would overflow")]
    Overflow,
    /// A float result is NaN or infinite.
    #[error("increment would produce NaN or Infinity")]
    NanOrInfinity,
    /// The source key does not exist (`RENAME`).
    #[error("no such key")]
    NoSuchKey,
    /// The result would exceed the item size limit.
    #[error("string exceeds maximum allowed size")]
    TooLarge,
    /// The command is not accepted in this position (for example a write
    /// without the raft middleware in the pipeline).
    #[error("{0}")]
    Refused(String),
}

/// The answer to one command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Done; nothing to report.
    Ok,
    /// A set stored its value.
    Stored {
        /// The key did not exist before.
        created: bool,
        /// The new item's cas.
        cas: u64,
        /// The previous item, when asked for.
        old: Option<Item>,
    },
    /// A conditional set did not store (absent/present condition failed).
    NotStored {
        /// The current item, when asked for.
        old: Option<Item>,
    },
    /// A cas set found a different cas.
    Exists,
    /// The key does not exist.
    NotFound,
    /// Items of a multi-key read, aligned with the keys asked.
    Values(Vec<Option<Item>>),
    /// One item or none.
    Value(Option<Item>),
    /// A memcached meta get that may have changed the item
    /// ([`Command::MetaGet`](crate::Command::MetaGet)).
    Meta {
        /// The item after the command, with the `WON` bit as it was before
        /// (so a reader that did not win sees `Z`); `None`: a miss.
        item: Option<Item>,
        /// This client was handed the recache token (`W`).
        won: bool,
    },
    /// A count: keys deleted, keys existing, items stored.
    Count(u64),
    /// A changed counter.
    Number(Number),
    /// Remaining time to live.
    Ttl(Ttl),
    /// A page of a key scan.
    Keys {
        /// Where to continue; 0 when done.
        cursor: u64,
        /// Keys found.
        keys: Vec<Bytes>,
    },
    /// One key or none (`RANDOMKEY`).
    Key(Option<Bytes>),
    /// Whether a conditional change happened (`EXPIRE NX`, `RENAMENX`, `COPY`).
    Bool(bool),
    /// Name/value statistics.
    Stats(Vec<(String, String)>),
    /// The command failed.
    Error(CommandError),
}
