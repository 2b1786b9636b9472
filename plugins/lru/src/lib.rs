//! # gerdu-policy-lru — least recently used, sharded, byte-weighted
//!
//! The default policy, as in the Go original: the SDK's sharded store
//! ([`gerdu_api::store`]: `lru.shards` shards, each a mutex around a hash
//! index and a slab) with one intrusive doubly-linked recency list per
//! shard, so `get`, `insert` and `remove` are O(1) and allocate nothing but
//! the node slot. `get` copies small values rather than share them (see
//! `Item::read_copy`; `peek` serves existence checks and write paths, which
//! store the value back, so it shares).
//!
//! **Capacity.** The capacity is split evenly over the shards; a shard over
//! its share evicts from its least recently used end. With many keys this
//! behaves as one global LRU; for small caches (or hit-ratio studies) set
//! `lru.shards = 1`. In the server the LRU never evicts by itself
//! (`local_eviction = false`): the leader asks `victims` — each shard's
//! excess over its share, least recent first — and replicates the removal.
//!
//! **Charge per item** = `key.len() + value.len() + OVERHEAD`, where
//! `OVERHEAD` is the size of a slab node (40 bytes with its list links),
//! plus 8 bytes of index slot and control byte, plus 16 bytes for rounding
//! the entry's one allocation (`key ++ value`) to the allocator's size
//! classes: 64 bytes on x86-64, exported as `gerdu_entry_overhead_bytes`.

#![warn(missing_docs)]

use gerdu_api::store::{Links, List, Order, Sharded, Slots, overhead};
use gerdu_api::{PolicyPlugin, register_policy};

/// The recency order: one list, most recent at the head.
#[derive(Default)]
pub struct LruOrder {
    list: List,
}

impl Order for LruOrder {
    type Link = Links;

    fn new(_capacity: u64) -> Self {
        LruOrder::default()
    }

    fn set_capacity(&mut self, _capacity: u64) {}

    fn inserted(&mut self, s: &mut Slots<Links>, i: u32, _hash: u64) {
        self.list.push_front(s, i);
    }

    fn accessed(&mut self, s: &mut Slots<Links>, i: u32, _hash: u64) {
        self.list.move_front(s, i);
    }

    fn rewritten(&mut self, s: &mut Slots<Links>, i: u32, _hash: u64, old: u64) {
        self.list.recharge(s, i, old);
        self.list.move_front(s, i);
    }

    fn prefetch(&self, s: &Slots<Links>, i: u32) {
        List::prefetch_neighbours(s, i);
    }

    fn removed(&mut self, s: &mut Slots<Links>, i: u32) {
        self.list.unlink(s, i);
    }

    fn select(&mut self, s: &mut Slots<Links>, bytes: u64, out: &mut Vec<u32>) {
        self.list.select_oldest(s, bytes, &mut 0, out);
    }
}

/// The LRU store.
pub type Lru = Sharded<LruOrder>;

/// Bytes charged per item on top of key and value.
pub const OVERHEAD: usize = overhead::<LruOrder>();

register_policy!(PolicyPlugin {
    name: "lru",
    description: "least recently used, sharded, byte-weighted (the default)",
    build: |config, settings| gerdu_api::store::build::<LruOrder>(config, settings, "lru"),
});

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use gerdu_api::Item;
    use gerdu_api::Policy;
    use gerdu_api::store::PACK_LIMIT;

    #[test]
    fn conformance() {
        gerdu_api::testkit::check_order::<LruOrder>();
    }

    #[test]
    fn victims_are_least_recent_first() {
        let lru = Lru::new(0, 1, false);
        let mut evicted = Vec::new();
        for k in ["a", "b", "c", "d"] {
            lru.insert(Bytes::from(k), item("v"), &mut evicted);
        }
        lru.get(b"a", 0);
        let mut out = Vec::new();
        lru.victims(1, &mut out);
        assert_eq!(out, [Bytes::from("b")]);
        out.clear();
        lru.victims(3 * (2 + OVERHEAD as u64), &mut out);
        assert_eq!(out, [Bytes::from("b"), Bytes::from("c"), Bytes::from("d")]);
        assert!(evicted.is_empty() && lru.len() == 4);
    }

    fn item(v: &str) -> Item {
        Item { value: Bytes::from(v.to_string()), cas: 1, ..Item::default() }
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let cap = 3 * (2 + 1 + OVERHEAD as u64);
        let lru = Lru::new(cap, 1, true);
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
    fn keys_and_values_of_every_size_round_trip() {
        let lru = Lru::new(0, 1, true);
        let mut ev = Vec::new();
        let long = Bytes::from(vec![b'k'; 300]);
        let keys = [Bytes::new(), Bytes::from("a"), Bytes::from(vec![b'k'; 22]), long.clone()];
        // Empty, packed with the key, exactly the packing limit, and kept apart.
        let values = [0, 5, PACK_LIMIT, PACK_LIMIT + 1, 70_000].map(|n| Bytes::from(vec![b'v'; n]));
        for k in &keys {
            for v in values.iter().chain(values.iter().rev()) {
                lru.insert(k.clone(), Item { value: v.clone(), cas: 9, ..Item::default() }, &mut ev);
                let got = lru.peek(k).expect("stored");
                assert_eq!((got.value.len(), &got.value, got.cas), (v.len(), v, 9), "key of {} bytes", k.len());
                assert_eq!(lru.get(k, 0).map(|i| i.value), Some(v.clone()));
            }
        }
        assert!(lru.peek(&long[..21]).is_none(), "a prefix of a key is another key");
        let mut seen = Vec::new();
        lru.scan(0, &mut |k, i| {
            seen.push((k.clone(), i.value.len()));
            true
        });
        assert_eq!(seen.len(), 4);
        assert!(seen.contains(&(long.clone(), 0)));
        let charge = |k: usize, v: usize| (k + v + OVERHEAD) as u64;
        assert_eq!(lru.used_bytes(), [0, 1, 22, 300].map(|k| charge(k, 0)).iter().sum::<u64>());
        lru.insert(long.clone(), Item { value: values[4].clone(), ..Item::default() }, &mut ev);
        assert_eq!(lru.remove(&long).map(|i| i.value), Some(values[4].clone()));
        assert!(ev.is_empty());
    }

    #[test]
    fn an_entry_costs_a_node_and_one_allocation() {
        assert_eq!(OVERHEAD, 64, "the documented charge per item: 40-byte node, index, allocation rounding");
    }

    #[test]
    fn slots_are_reused() {
        let lru = Lru::new(0, 1, true);
        let mut ev = Vec::new();
        for round in 0..10 {
            for i in 0..100 {
                lru.insert(Bytes::from(format!("{round}-{i}")), item("v"), &mut ev);
            }
            for i in 0..100 {
                assert!(lru.remove(format!("{round}-{i}").as_bytes()).is_some());
            }
        }
        assert_eq!(lru.slots(), 100);
        assert_eq!(lru.used_bytes(), 0);
    }
}
