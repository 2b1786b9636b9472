//! # gerdu-policy-lru — least recently used, sharded, byte-weighted
//!
//! The default policy, as in the Go original. The key space is split over
//! `lru.shards` shards by key hash; each shard is a `parking_lot::Mutex` around
//! a hash index (`hashbrown::HashTable<u32>` of slots) and an intrusive
//! doubly-linked recency list threaded through a slab of nodes, so `get`,
//! `insert` and `remove` are O(1) and allocate nothing but the node slot.
//! Keys up to 22 bytes live inside their node (no pointer to chase when a
//! lookup compares keys); `update` decides and stores under one lock and one
//! lookup; `get` copies small values rather than share them (see
//! `Item::read_copy`; `peek` serves existence checks and write paths, which
//! store the value back, so it shares).
//!
//! **Capacity.** The capacity is split evenly over the shards; a shard over
//! its share evicts from its least recently used end. With many keys this
//! behaves as one global LRU; for small caches (or hit-ratio studies) set
//! `lru.shards = 1`.
//!
//! **Charge per item** = `key.len() + value.len() + OVERHEAD`, where
//! `OVERHEAD` is the size of a slab node, plus 8 bytes of index slot and
//! control byte, plus 16 bytes of allocator headers for the value buffer and
//! (for keys longer than 22 bytes) the key buffer: 120 bytes on x86-64,
//! exported as `gerdu_entry_overhead_bytes`.

#![warn(missing_docs)]

use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::Bytes;
use gerdu_api::cow::{CowCoordinator, ShardedCapture};
use gerdu_api::policy::Captured;
use gerdu_api::{Capture, Config, Item, PluginError, Policy, PolicyPlugin, PolicySettings, Update, register_policy};
use hashbrown::HashTable;
use parking_lot::Mutex;
use serde::Deserialize;

const NIL: u32 = u32::MAX;
const FREE: u32 = u32::MAX - 1;

/// Keys up to this many bytes live inside their slab node. 22 is what fits in
/// the space of the `Bytes` a longer key needs (the enum's tag goes in the
/// niche of `Bytes`' vtable pointer), so inline keys cost no node space.
const INLINE: usize = 22;

/// A key as a node holds it. Short keys (most keys) are stored inline, so a
/// lookup compares them without following a pointer to another allocation
/// (that cache miss was a tenth of a GET's CPU); longer keys are shared bytes.
#[derive(Clone)]
enum NodeKey {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Bytes),
}

impl NodeKey {
    fn new(key: &Bytes) -> NodeKey {
        if key.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..key.len()].copy_from_slice(key);
            NodeKey::Inline { len: key.len() as u8, buf }
        } else {
            NodeKey::Heap(key.clone())
        }
    }

    #[inline]
    fn as_slice(&self) -> &[u8] {
        match self {
            NodeKey::Inline { len, buf } => &buf[..*len as usize],
            NodeKey::Heap(b) => b,
        }
    }

    fn to_bytes(&self) -> Bytes {
        match self {
            NodeKey::Inline { .. } => Bytes::copy_from_slice(self.as_slice()),
            NodeKey::Heap(b) => b.clone(),
        }
    }
}

impl AsRef<[u8]> for NodeKey {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Default for NodeKey {
    fn default() -> Self {
        NodeKey::Inline { len: 0, buf: [0; INLINE] }
    }
}

struct Node {
    key: NodeKey,
    item: Item,
    prev: u32,
    next: u32,
}

/// Bytes charged per item on top of key and value.
pub const OVERHEAD: usize = std::mem::size_of::<Node>() + 8 + 16;

struct Shard {
    table: HashTable<u32>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    used: u64,
    capacity: u64,
}

fn empty_item() -> Item {
    Item { value: Bytes::new(), flags: 0, meta: Default::default(), cas: 0, expires_at: 0 }
}

impl Shard {
    fn new(capacity: u64) -> Self {
        Shard { table: HashTable::new(), nodes: Vec::new(), free: Vec::new(), head: NIL, tail: NIL, used: 0, capacity }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.table.find(hash, |&i| self.nodes[i as usize].key.as_slice() == key).copied()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.nodes[i as usize].prev, self.nodes[i as usize].next);
        if prev == NIL {
            self.head = next
        } else {
            self.nodes[prev as usize].next = next
        }
        if next == NIL { self.tail = prev } else { self.nodes[next as usize].prev = prev }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        self.nodes[i as usize].prev = NIL;
        self.nodes[i as usize].next = old;
        if old != NIL {
            self.nodes[old as usize].prev = i;
        } else {
            self.tail = i;
        }
        self.head = i;
    }

    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn charge(key: &[u8], item: &Item) -> u64 {
        gerdu_api::policy::charge(key.len(), item.value.len(), OVERHEAD) as u64
    }

    /// Removes slot `i` (already found) and returns its key and item.
    fn take(&mut self, hash: u64, i: u32) -> (Bytes, Item) {
        self.unlink(i);
        if let Ok(e) = self.table.find_entry(hash, |&j| j == i) {
            e.remove();
        }
        let node = &mut self.nodes[i as usize];
        let key = std::mem::take(&mut node.key);
        let item = std::mem::replace(&mut node.item, empty_item());
        node.prev = FREE;
        node.next = FREE;
        self.free.push(i);
        self.used -= Self::charge(key.as_slice(), &item);
        (key.to_bytes(), item)
    }

    /// Stores `item` under `key` in slot `found` (or a new slot), makes it
    /// the most recent, and evicts down to the capacity.
    fn store(
        &mut self,
        hasher: &impl BuildHasher,
        hash: u64,
        found: Option<u32>,
        key: &Bytes,
        item: Item,
        evicted: &mut Vec<Bytes>,
    ) -> Option<Item> {
        let charge = Self::charge(key, &item);
        let old = if let Some(i) = found {
            let node = &mut self.nodes[i as usize];
            let old = std::mem::replace(&mut node.item, item);
            self.used = self.used - Self::charge(key, &old) + charge;
            self.touch(i);
            Some(old)
        } else {
            let node = Node { key: NodeKey::new(key), item, prev: NIL, next: NIL };
            let i = match self.free.pop() {
                Some(i) => {
                    self.nodes[i as usize] = node;
                    i
                }
                None => {
                    self.nodes.push(node);
                    (self.nodes.len() - 1) as u32
                }
            };
            let nodes = &self.nodes;
            self.table.insert_unique(hash, i, |&j| hasher.hash_one(nodes[j as usize].key.as_slice()));
            self.used += charge;
            self.push_front(i);
            None
        };
        self.evict(hasher, evicted);
        old
    }

    fn evict(&mut self, hasher: &impl BuildHasher, evicted: &mut Vec<Bytes>) {
        while self.capacity != 0 && self.used > self.capacity && self.tail != NIL {
            let i = self.tail;
            let hash = hasher.hash_one(self.nodes[i as usize].key.as_slice());
            let (key, _) = self.take(hash, i);
            evicted.push(key);
        }
    }

    fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    fn items(&self) -> Vec<(NodeKey, Item)> {
        self.nodes.iter().filter(|n| n.prev != FREE).map(|n| (n.key.clone(), n.item.clone())).collect()
    }
}

/// The LRU store.
pub struct Lru {
    shards: Arc<[Mutex<Shard>]>,
    hasher: foldhash::fast::RandomState,
    capacity: Mutex<u64>,
    cow: Arc<CowCoordinator<NodeKey>>,
}

impl Lru {
    /// An LRU of `capacity` charged bytes (0 = unlimited) over `shards` shards.
    pub fn new(capacity: u64, shards: usize) -> Self {
        let shards = shards.clamp(1, 1024);
        let per = Self::share(capacity, shards);
        Lru {
            shards: (0..shards).map(|_| Mutex::new(Shard::new(per))).collect(),
            hasher: foldhash::fast::RandomState::default(),
            capacity: Mutex::new(capacity),
            cow: Arc::default(),
        }
    }

    fn share(capacity: u64, shards: usize) -> u64 {
        if capacity == 0 { 0 } else { (capacity / shards as u64).max(1) }
    }

    #[inline]
    fn locate(&self, key: &[u8]) -> (u64, usize) {
        let hash = self.hasher.hash_one(key);
        // hashbrown uses the low bits for position and the top 7 for tags; shard on the middle.
        (hash, ((hash >> 32) as usize) % self.shards.len())
    }

    /// Locks the shard of `key` for a mutation (copy-on-write for a running capture).
    #[inline]
    fn lock_for_write(&self, key: &[u8]) -> (u64, parking_lot::MutexGuard<'_, Shard>) {
        let (hash, idx) = self.locate(key);
        let guard = self.shards[idx].lock();
        self.cow.before_write(idx, || guard.items());
        (hash, guard)
    }
}

impl Policy for Lru {
    fn get(&self, key: &[u8], now_ms: u64) -> Option<Item> {
        let (hash, idx) = self.locate(key);
        let mut s = self.shards[idx].lock();
        let i = s.find(hash, key)?;
        s.touch(i);
        let item = &mut s.nodes[i as usize].item;
        let before = item.read_copy();
        // Local access bookkeeping only; a capture in progress may see it,
        // snapshots keep just the replicated meta bits.
        item.meta.note_fetch(now_ms);
        Some(before)
    }

    fn peek(&self, key: &[u8]) -> Option<Item> {
        let (hash, idx) = self.locate(key);
        let s = self.shards[idx].lock();
        s.find(hash, key).map(|i| s.nodes[i as usize].item.clone())
    }

    fn insert(&self, key: Bytes, item: Item, evicted: &mut Vec<Bytes>) -> Option<Item> {
        let (hash, mut s) = self.lock_for_write(&key);
        let found = s.find(hash, &key);
        s.store(&self.hasher, hash, found, &key, item, evicted)
    }

    fn update(
        &self,
        key: &Bytes,
        f: &mut dyn FnMut(Option<&Item>) -> Update,
        evicted: &mut Vec<Bytes>,
    ) -> Option<Item> {
        let (hash, mut s) = self.lock_for_write(key);
        let found = s.find(hash, key);
        match f(found.map(|i| &s.nodes[i as usize].item)) {
            Update::Keep => None,
            Update::Store(item) => s.store(&self.hasher, hash, found, key, item, evicted),
            Update::Remove => found.map(|i| s.take(hash, i).1),
        }
    }

    fn remove(&self, key: &[u8]) -> Option<Item> {
        let (hash, mut s) = self.lock_for_write(key);
        let i = s.find(hash, key)?;
        Some(s.take(hash, i).1)
    }

    fn clear(&self) {
        for (idx, shard) in self.shards.iter().enumerate() {
            let mut s = shard.lock();
            self.cow.before_write(idx, || s.items());
            let cap = s.capacity;
            *s = Shard::new(cap);
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    fn used_bytes(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().used).sum()
    }

    fn capacity(&self) -> u64 {
        *self.capacity.lock()
    }

    fn set_capacity(&self, bytes: u64, evicted: &mut Vec<Bytes>) {
        *self.capacity.lock() = bytes;
        let per = Self::share(bytes, self.shards.len());
        for (idx, shard) in self.shards.iter().enumerate() {
            let mut s = shard.lock();
            self.cow.before_write(idx, || s.items());
            s.capacity = per;
            s.evict(&self.hasher, evicted);
        }
    }

    fn entry_overhead(&self) -> usize {
        OVERHEAD
    }

    fn scan(&self, cursor: u64, f: &mut dyn FnMut(&Bytes, &Item) -> bool) -> u64 {
        let mut shard = (cursor >> 32) as usize;
        let mut slot = (cursor & 0xffff_ffff) as usize;
        while shard < self.shards.len() {
            let s = self.shards[shard].lock();
            while slot < s.nodes.len() {
                let node = &s.nodes[slot];
                slot += 1;
                if node.prev != FREE && !f(&node.key.to_bytes(), &node.item) {
                    // Continue after this slot; wrap to the next shard at its end.
                    if slot < s.nodes.len() {
                        return ((shard as u64) << 32) | slot as u64;
                    }
                    return if shard + 1 < self.shards.len() { ((shard as u64 + 1) << 32).max(1) } else { 0 };
                }
            }
            drop(s);
            shard += 1;
            slot = 0;
        }
        0
    }

    fn begin_capture(&self) -> Box<dyn Capture> {
        match self.cow.arm(self.shards.len()) {
            Some(state) => Box::new(ShardedCapture::new(self.shards.clone(), self.cow.clone(), state, Shard::items)),
            // A capture is already running: copy eagerly (callers hold off writes meanwhile).
            None => Box::new(Captured(
                self.shards.iter().flat_map(|s| s.lock().items()).map(|(k, i)| (k.to_bytes(), i)).collect(),
            )),
        }
    }

    fn random_key(&self, seed: u64) -> Option<Bytes> {
        let n = self.shards.len();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for probe in 0..n {
            let s = self.shards[(x as usize + probe) % n].lock();
            if s.len() == 0 {
                continue;
            }
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let node = &s.nodes[(x as usize) % s.nodes.len()];
                if node.prev != FREE {
                    return Some(node.key.to_bytes());
                }
            }
            return (s.head != NIL).then(|| s.nodes[s.head as usize].key.to_bytes());
        }
        None
    }
}

/// `[lru]` config section.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct LruConfig {
    /// Number of shards; 0 picks 16 × available cores.
    shards: usize,
}

fn build(config: &Config, settings: &PolicySettings) -> Result<Arc<dyn Policy>, PluginError> {
    let cfg: LruConfig = gerdu_api::plugin::section(config, "lru")?;
    let shards =
        if cfg.shards == 0 { 16 * std::thread::available_parallelism().map_or(1, |n| n.get()) } else { cfg.shards };
    Ok(Arc::new(Lru::new(settings.capacity, shards)))
}

register_policy!(PolicyPlugin {
    name: "lru",
    description: "least recently used, sharded, byte-weighted (the default)",
    build,
});

#[cfg(test)]
mod tests {
    use super::*;
    use gerdu_api::testkit::check_policy;

    #[test]
    fn conformance_sharded() {
        check_policy(&|cap| Arc::new(Lru::new(cap, 8)));
    }

    #[test]
    fn conformance_single_shard() {
        check_policy(&|cap| Arc::new(Lru::new(cap, 1)));
    }

    fn item(v: &str) -> Item {
        Item { value: Bytes::from(v.to_string()), flags: 0, meta: Default::default(), cas: 1, expires_at: 0 }
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let cap = 3 * (2 + 1 + OVERHEAD as u64);
        let lru = Lru::new(cap, 1);
        let mut ev = Vec::new();
        for k in ["k1", "k2", "k3"] {
            lru.insert(Bytes::from(k), item("v"), &mut ev);
        }
        assert!(ev.is_empty());
        assert!(lru.get(b"k1", 0).is_some()); // k2 is now the LRU
        lru.insert(Bytes::from("k4"), item("v"), &mut ev);
        assert_eq!(ev, vec![Bytes::from("k2")]);
        assert!(lru.peek(b"k2").is_none());
        assert!(lru.peek(b"k1").is_some());
        // peek does not refresh: k3 goes next
        lru.peek(b"k3");
        lru.insert(Bytes::from("k5"), item("v"), &mut ev);
        assert_eq!(ev[1], Bytes::from("k3"));
    }

    #[test]
    fn short_and_long_keys() {
        let lru = Lru::new(0, 1);
        let mut ev = Vec::new();
        let long = Bytes::from(vec![b'k'; INLINE + 1]);
        for k in [Bytes::new(), Bytes::from("a"), Bytes::from(vec![b'k'; INLINE]), long.clone()] {
            lru.insert(k.clone(), item("v"), &mut ev);
            assert!(lru.peek(&k).is_some(), "{} bytes", k.len());
        }
        assert!(lru.peek(&long[..INLINE - 1]).is_none(), "a prefix of a key is another key");
        let mut keys = Vec::new();
        lru.scan(0, &mut |k, _| {
            keys.push(k.clone());
            true
        });
        assert_eq!(keys.len(), 4);
        assert!(keys.contains(&long));
        assert_eq!(lru.remove(&long).map(|i| i.value), Some(Bytes::from("v")));
    }

    #[test]
    fn inline_keys_take_no_more_room_than_bytes() {
        assert_eq!(std::mem::size_of::<NodeKey>(), std::mem::size_of::<Bytes>());
    }

    #[test]
    fn slots_are_reused() {
        let lru = Lru::new(0, 1);
        let mut ev = Vec::new();
        for round in 0..10 {
            for i in 0..100 {
                lru.insert(Bytes::from(format!("{round}-{i}")), item("v"), &mut ev);
            }
            for i in 0..100 {
                assert!(lru.remove(format!("{round}-{i}").as_bytes()).is_some());
            }
        }
        assert_eq!(lru.shards[0].lock().nodes.len(), 100);
        assert_eq!(lru.used_bytes(), 0);
    }
}
