//! The Policy trait: the store itself (map + eviction order + accounting).
//!
//! A policy plugin owns the items. Its methods take `&self` and manage their
//! own concurrency (sharding, locks), as pingora's eviction managers do, so
//! reads from many connections run in parallel with the single writer (the
//! Raft state machine applying the log).
//!
//! Policies do **not** judge expiry: they store the deadline in [`Item`] and
//! the executor ([`crate::exec`]) hides expired items and removes them on
//! writes. Policies **do** enforce capacity: [`Policy::insert`] evicts in
//! policy order until the charged bytes fit, and reports what it evicted so
//! that the core can count it (and, in a cluster, replicate the decision).
//!
//! # Capacity accounting
//!
//! Every item is charged `key.len() + value.len() + entry_overhead()` bytes.
//! `entry_overhead` is the policy's own per-entry bookkeeping (node, index
//! slot, allocation headers), documented by each policy and exported as the
//! `gerdu_entry_overhead_bytes` metric.

use bytes::Bytes;

use crate::reply::Item;

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
}

/// What [`Policy::update`] does with the entry it found.
#[derive(Debug)]
pub enum Update {
    /// Leave the entry as it is (or absent).
    Keep,
    /// Store this item under the key (insert or replace).
    Store(Item),
    /// Remove the entry.
    Remove,
}

/// A store with an eviction policy. See the module docs.
pub trait Policy: Send + Sync + 'static {
    /// Reads an item and records the access: recency or frequency, and the
    /// item's own access record ([`crate::ItemMeta::note_fetch`] at
    /// `now_ms`). Returns the item as it was *before* this access (memcached
    /// `mg ... h l` report the previous access).
    fn get(&self, key: &[u8], now_ms: u64) -> Option<Item>;

    /// Reads an item without recording an access.
    fn peek(&self, key: &[u8]) -> Option<Item>;

    /// Stores an item, returning the one it replaced. Keys and values come
    /// from [detached](crate::Command::detach) commands, so they may be kept
    /// as they are. If the store is over
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
    fn update(
        &self,
        key: &Bytes,
        f: &mut dyn FnMut(Option<&Item>) -> Update,
        evicted: &mut Vec<Bytes>,
    ) -> Option<Item> {
        let current = self.peek(key);
        match f(current.as_ref()) {
            Update::Keep => None,
            Update::Store(item) => self.insert(key.clone(), item, evicted),
            Update::Remove => self.remove(key),
        }
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

    /// Visits items for scans and snapshots, starting at position `cursor` of
    /// an iteration order that is stable while the store does not change much.
    /// `f` returns `false` to stop. Returns the cursor to continue from, 0 when
    /// the iteration is complete.
    fn scan(&self, cursor: u64, f: &mut dyn FnMut(&Bytes, &Item) -> bool) -> u64;

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
