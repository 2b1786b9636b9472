//! The Policy trait: the store itself (map + eviction order + accounting).
//!
//! A policy plugin owns the items. Its methods take `&self` and manage their
//! own concurrency (sharding, locks), as pingora's eviction managers do, so
//! reads from many connections run in parallel with the single writer (the
//! Raft state machine applying the log).
//!
//! Policies do **not** judge expiry: they store the deadline in [`Item`] and
//! the executor ([`crate::exec`]) hides expired items and removes them on
//! writes.
//!
//! Capacity is enforced one of two ways, chosen by
//! [`PolicySettings::local_eviction`]:
//!
//! - `true` (standalone use, the conformance kit): [`Policy::insert`] evicts
//!   in policy order until the charged bytes fit and reports what it evicted;
//! - `false` (the server, always): the policy never evicts by itself — its
//!   order depends on reads, which differ from node to node, so replicas
//!   would drift apart. The leader asks [`Policy::victims`] which keys its
//!   order would evict and proposes their removal as a log entry; every
//!   replica applies the same removal (DESIGN §3).
//!
//! # Capacity accounting
//!
//! Every item is charged `key.len() + value.len() + entry_overhead()` bytes.
//! `entry_overhead` is the policy's own per-entry bookkeeping (node, index
//! slot, allocation headers), documented by each policy and exported as the
//! `gerdu_entry_overhead_bytes` metric.

use bytes::Bytes;

use crate::reply::{Item, ItemRef, Value};

/// The bytes an item is charged: key + value + per-entry overhead.
#[inline]
pub fn charge(key_len: usize, value_len: usize, overhead: usize) -> usize {
    key_len + value_len + overhead
}

/// Settings every policy receives when it is built.
#[derive(Clone, Debug)]
pub struct PolicySettings {
    /// Capacity in charged bytes (0 = unlimited).
    pub capacity: u64,
    /// Whether the policy evicts by itself when a write takes it over
    /// capacity (see the module docs).
    pub local_eviction: bool,
}

/// What [`Policy::update`] does with the entry it found.
#[derive(Debug)]
pub enum Update<'v> {
    /// Leave the entry as it is (or absent).
    Keep,
    /// Store this item under the key (insert or replace). Its value is
    /// borrowed from the write: the policy keeps a copy or a shared handle
    /// ([`ItemValue::into_shared`](crate::ItemValue::into_shared)).
    Store(Item<Value<'v>>),
    /// Remove the entry.
    Remove,
}

/// A number of a policy's own, exported on `/metrics` beside the core's
/// store series ([`Policy::stats`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PolicyStat {
    /// Full series name (`gerdu_weak_limit_bytes`).
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// Current value.
    pub value: u64,
    /// A counter (only ever grows) rather than a gauge.
    pub counter: bool,
}

/// How many commands ahead the batch executor hints at
/// ([`Policy::prefetch`]): one step each.
pub const PREFETCH_STEPS: usize = 3;

/// A store with an eviction policy. See the module docs.
pub trait Policy: Send + Sync + 'static {
    /// Reads an item and records the access: recency or frequency, and the
    /// item's own access record ([`crate::ItemMeta::note_fetch`] at
    /// `now_ms`). Returns the item as it was *before* this access (memcached
    /// `mg ... h l` report the previous access).
    fn get(&self, key: &[u8], now_ms: u64) -> Option<Item>;

    /// Reads an item without recording an access.
    fn peek(&self, key: &[u8]) -> Option<Item>;

    /// Runs `run`, a batch of about `n` commands' calls to this store from
    /// this thread (the batch executor's [`crate::exec::apply_all`] and
    /// [`crate::exec::read_all`]). A store may take its locks once for the
    /// batch instead of once per call; `run` must not wait for another
    /// thread that uses the store (another store's calls from another
    /// thread's batch included), nor read a [`Capture`] (which takes the
    /// locks itself). The default just runs it.
    fn batch(&self, n: usize, run: &mut dyn FnMut()) {
        let _ = n;
        run()
    }

    /// A hint that `key` is looked up soon: the batch executor calls it for
    /// the commands ahead of the one it runs ([`crate::exec::apply_all`]),
    /// with `step` 0 for the farthest and [`PREFETCH_STEPS`]` - 1` for the
    /// next. A store may start loading what the lookup will wait for, one
    /// level deeper each step (its index cell, then the entry, then the
    /// entry's bytes), using what the previous step brought in. It changes
    /// nothing and may do nothing (the default).
    fn prefetch(&self, key: &[u8], step: usize) {
        let _ = (key, step);
    }

    /// Stores an item, returning the one it replaced. Keys and values come
    /// from log entries: they pin no network buffer, but keys and values of
    /// up to [`PACK_LIMIT`](crate::store::PACK_LIMIT) bytes share one buffer
    /// with the rest of their batch (its encoding, or the buffer
    /// [`pack_small`](crate::command::pack_small) made), so a policy that
    /// keeps them should copy them (the SDK's store packs them into its
    /// entries). If the store is over
    /// capacity afterwards, evicts in policy order and pushes the evicted keys
    /// to `evicted` (never the key just inserted unless it alone exceeds the
    /// capacity share it is stored in).
    fn insert(&self, key: Bytes, item: Item, evicted: &mut Vec<Bytes>) -> Option<Item>;

    /// Removes an item, returning it.
    fn remove(&self, key: &[u8]) -> Option<Item>;

    /// Reads the entry of `key` and changes it as `f` decides, in one step:
    /// the write path of every command (a conditional set is a read and a
    /// write of the same key). `f` sees the current item, expired ones
    /// included (the executor judges expiry). A store counts as an access
    /// and may evict, like [`Policy::insert`]. Returns the item replaced or
    /// removed.
    ///
    /// The default is [`Policy::peek`] followed by [`Policy::insert`] or
    /// [`Policy::remove`]; sharded policies override it to do one lookup
    /// under one lock.
    fn update<'v>(
        &self,
        key: &[u8],
        f: &mut dyn FnMut(Option<&Item>) -> Update<'v>,
        evicted: &mut Vec<Bytes>,
    ) -> Option<Item> {
        let current = self.peek(key);
        match f(current.as_ref()) {
            Update::Keep => None,
            Update::Store(item) => self.insert(Bytes::copy_from_slice(key), item.owned(), evicted),
            Update::Remove => self.remove(key),
        }
    }

    /// [`Policy::update`] for writers that do not need the replaced item:
    /// `f` sees the current item where it is (no copy of its value), and
    /// nothing is returned. The write path of a set.
    ///
    /// The default calls [`Policy::update`]; the sharded store overrides it.
    fn update_in_place<'v>(
        &self,
        key: &[u8],
        f: &mut dyn FnMut(Option<ItemRef<'_>>) -> Update<'v>,
        evicted: &mut Vec<Bytes>,
    ) {
        self.update(key, &mut |found| f(found.map(ItemRef::from)), evicted);
    }

    /// Removes every item.
    fn clear(&self);

    /// Number of items (expired ones not yet removed included).
    fn len(&self) -> usize;

    /// Whether the store holds no item.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Charged bytes in use.
    fn used_bytes(&self) -> u64;

    /// Capacity in charged bytes (0 = unlimited).
    fn capacity(&self) -> u64;

    /// Changes the capacity (the weak policy follows memory pressure with it);
    /// evicts down to the new capacity, reporting the keys.
    fn set_capacity(&self, bytes: u64, evicted: &mut Vec<Bytes>);

    /// Per-entry overhead in bytes used in the capacity formula.
    fn entry_overhead(&self) -> usize;

    /// The keys this policy would evict, in its order, to free at least
    /// `bytes` charged bytes (fewer if the store holds less). Nothing is
    /// removed: the caller replicates the removal. A sharded policy frees
    /// each shard's excess over its share first, as its own eviction would.
    fn victims(&self, bytes: u64, out: &mut Vec<Bytes>);

    /// Visits items for scans and snapshots, starting at position `cursor` of
    /// an iteration order that is stable while the store does not change much.
    /// `f` returns `false` to stop. Returns the cursor to continue from, 0 when
    /// the iteration is complete.
    fn scan(&self, cursor: u64, f: &mut dyn FnMut(&Bytes, &Item) -> bool) -> u64;

    /// The background expiry sweep's step: examines up to `budget` items
    /// from `cursor` (a [`Policy::scan`] cursor), pushes the keys of those
    /// expired at `now_ms` to `out`, and returns the cursor to go on from
    /// (0 once the whole store was seen) and how many items it examined.
    /// Nothing is removed: the caller replicates the removal
    /// ([`crate::Command::Sweep`]). The default walks [`Policy::scan`].
    fn expired(&self, cursor: u64, now_ms: u64, budget: usize, out: &mut Vec<Bytes>) -> (u64, usize) {
        let budget = budget.max(1);
        let mut seen = 0;
        let next = self.scan(cursor, &mut |k, i| {
            seen += 1;
            if i.is_expired(now_ms) {
                out.push(k.clone());
            }
            seen < budget
        });
        (next, seen)
    }

    /// Reports the policy's own numbers ([`PolicyStat`]), read on every
    /// scrape of `/metrics`. The default has none.
    fn stats(&self, f: &mut dyn FnMut(PolicyStat)) {
        let _ = f;
    }

    /// Picks one key at random, if any.
    fn random_key(&self, seed: u64) -> Option<Bytes>;

    /// Begins a point-in-time capture of every item, for snapshots.
    ///
    /// The caller guarantees that no write runs concurrently with this call
    /// (the state machine holds its apply lock). The returned [`Capture`] may
    /// be finished later while writes go on; it must still yield exactly the
    /// items as of this call. The default copies everything now; policies
    /// override it with copy-on-write so that writes are not stalled for the
    /// whole copy.
    fn begin_capture(&self) -> Box<dyn Capture> {
        let mut items = Vec::with_capacity(self.len());
        self.scan(0, &mut |k, i| {
            items.push((k.clone(), i.clone()));
            true
        });
        Box::new(Captured(items))
    }
}

/// A point-in-time image of a store being collected.
pub trait Capture: Send {
    /// Calls `f` with every item as of [`Policy::begin_capture`] (the
    /// snapshot encoder writes each one straight into the snapshot).
    fn visit(self: Box<Self>, f: &mut dyn FnMut(&[u8], &Item));

    /// Every item as of [`Policy::begin_capture`], collected.
    fn finish(self: Box<Self>) -> Vec<(Bytes, Item)> {
        let mut items = Vec::new();
        self.visit(&mut |k, i| items.push((Bytes::copy_from_slice(k), i.clone())));
        items
    }
}

/// A capture that is already complete.
pub struct Captured(pub Vec<(Bytes, Item)>);

impl Capture for Captured {
    fn visit(self: Box<Self>, f: &mut dyn FnMut(&[u8], &Item)) {
        self.0.iter().for_each(|(k, i)| f(k, i));
    }

    fn finish(self: Box<Self>) -> Vec<(Bytes, Item)> {
        self.0
    }
}
