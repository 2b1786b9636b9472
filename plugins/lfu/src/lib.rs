//! # gerdu-policy-lfu — least frequently used, O(1), with aging
//!
//! `-type lfu`. The SDK's sharded store ([`gerdu_api::store`]) with a
//! frequency order per shard: an array of 256 recency lists, one per access
//! count. A new entry starts at count 1; a read or a write moves it to the
//! head of the next count's list (counts stop at 255). Every operation is
//! O(1): moving between lists is two unlinks and a push, and finding the
//! least frequent entry walks at most 256 list heads from the lowest count
//! that can be non-empty.
//!
//! **Ties** are broken by recency: among entries with the same count, the
//! one read or written longest ago goes first (each list is kept in recency
//! order).
//!
//! **Aging.** Counts halve (and stay at least 1) every time a shard has
//! seen `8 × entries` accesses (at least 1024), so keys that were hot
//! yesterday and are not read any more lose their rank and can leave, and a
//! newly popular key catches up in a bounded time. Halving relinks every
//! entry once, so it costs O(1) per access amortized. Of two counts that
//! halve to the same value, the entries of the higher one end up nearer the
//! head (kept longer).
//!
//! **Deletes** unlink the entry from its list and uncharge its bytes at
//! once (the Go original left deleted nodes in its frequency lists).
//!
//! **Charge per item** = `key.len() + value.len() + OVERHEAD` (the store's
//! node with a 12-byte link, index slot, allocator rounding: 64 bytes on
//! x86-64).

#![warn(missing_docs)]

use gerdu_api::store::{Links, List, NIL, Order, Sharded, Slots, overhead};
use gerdu_api::{PolicyPlugin, register_policy};

/// Highest access count.
const MAX_COUNT: usize = 255;
/// Fewest accesses between two halvings.
const MIN_AGING_PERIOD: u64 = 1024;
/// Accesses per entry between two halvings.
const AGING_PER_ENTRY: u64 = 8;

/// An entry's place: its count's list and the count.
#[derive(Default)]
pub struct LfuLink {
    links: Links,
    count: u8,
}

gerdu_api::linked!(LfuLink);

/// The frequency order of one shard.
pub struct LfuOrder {
    lists: Box<[List; MAX_COUNT + 1]>,
    /// No list below this count holds an entry.
    lowest: usize,
    /// Accesses since the last halving.
    accesses: u64,
    len: u64,
}

impl LfuOrder {
    fn put(&mut self, s: &mut Slots<LfuLink>, i: u32, count: usize) {
        s.link_mut(i).count = count as u8;
        self.lists[count].push_front(s, i);
        self.lowest = self.lowest.min(count);
    }

    fn bump(&mut self, s: &mut Slots<LfuLink>, i: u32) {
        let count = s.link(i).count as usize;
        self.lists[count].unlink(s, i);
        self.put(s, i, (count + 1).min(MAX_COUNT));
        self.accesses += 1;
        if self.accesses >= (self.len * AGING_PER_ENTRY).max(MIN_AGING_PERIOD) {
            self.halve(s);
        }
    }

    /// Halves every count, keeping recency order within each list.
    fn halve(&mut self, s: &mut Slots<LfuLink>) {
        self.accesses = 0;
        let old = std::mem::replace(&mut self.lists, Box::new([List::default(); MAX_COUNT + 1]));
        self.lowest = MAX_COUNT;
        for (count, list) in old.iter().enumerate().skip(1) {
            // Oldest first, each pushed to the head: the order is kept.
            let mut i = list.tail;
            while i != NIL {
                let newer = List::newer(s, i);
                self.put(s, i, (count / 2).max(1));
                i = newer;
            }
        }
    }

    /// The current count of slot `i` (for tests).
    pub fn count(s: &Slots<LfuLink>, i: u32) -> u8 {
        s.link(i).count
    }
}

impl Order for LfuOrder {
    type Link = LfuLink;

    fn new(_capacity: u64) -> Self {
        LfuOrder { lists: Box::new([List::default(); MAX_COUNT + 1]), lowest: MAX_COUNT, accesses: 0, len: 0 }
    }

    fn set_capacity(&mut self, _capacity: u64) {}

    fn inserted(&mut self, s: &mut Slots<LfuLink>, i: u32, _hash: u64) {
        self.len += 1;
        self.put(s, i, 1);
    }

    fn accessed(&mut self, s: &mut Slots<LfuLink>, i: u32, _hash: u64) {
        self.bump(s, i);
    }

    fn rewritten(&mut self, s: &mut Slots<LfuLink>, i: u32, _hash: u64, old: u64) {
        let count = s.link(i).count as usize;
        self.lists[count].recharge(s, i, old);
        self.bump(s, i);
    }

    fn prefetch(&self, s: &Slots<LfuLink>, i: u32) {
        // A bump unlinks `i` and pushes it on the next count's list.
        List::prefetch_neighbours(s, i);
        if let Some(next) = self.lists.get(s.link(i).count as usize + 1) {
            s.prefetch(next.head);
        }
    }

    fn removed(&mut self, s: &mut Slots<LfuLink>, i: u32) {
        self.len -= 1;
        let count = s.link(i).count as usize;
        self.lists[count].unlink(s, i);
    }

    fn select(&mut self, s: &mut Slots<LfuLink>, bytes: u64, out: &mut Vec<u32>) {
        let mut freed = 0;
        while self.lowest < MAX_COUNT && self.lists[self.lowest].is_empty() {
            self.lowest += 1;
        }
        for list in &self.lists[self.lowest..] {
            if freed >= bytes {
                return;
            }
            list.select_oldest(s, bytes, &mut freed, out);
        }
    }
}

/// The LFU store.
pub type Lfu = Sharded<LfuOrder>;

/// Bytes charged per item on top of key and value.
pub const OVERHEAD: usize = overhead::<LfuOrder>();

register_policy!(PolicyPlugin {
    name: "lfu",
    description: "least frequently used, O(1), ties by recency, counts halve with age",
    build: |config, settings| gerdu_api::store::build::<LfuOrder>(config, settings, "lfu"),
});

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use gerdu_api::{Item, Policy};

    use super::*;

    fn item(v: &str) -> Item {
        Item { value: Bytes::from(v.to_string()), cas: 1, ..Item::default() }
    }

    fn charge(key: &str) -> u64 {
        (key.len() + 1 + OVERHEAD) as u64
    }

    #[test]
    fn conformance() {
        gerdu_api::testkit::check_order::<LfuOrder>();
    }

    #[test]
    fn least_frequent_goes_first_and_ties_by_recency() {
        let lfu = Lfu::new(3 * charge("k1"), 1, true);
        let mut ev = Vec::new();
        for k in ["k1", "k2", "k3"] {
            lfu.insert(Bytes::from(k), item("v"), &mut ev);
        }
        for _ in 0..3 {
            lfu.get(b"k1", 0);
        }
        lfu.get(b"k3", 0);
        // k2 (count 1) is the least frequent.
        lfu.insert(Bytes::from("k4"), item("v"), &mut ev);
        assert_eq!(ev, [Bytes::from("k2")]);
        // k4 (1) goes before k3 (2).
        lfu.insert(Bytes::from("k5"), item("v"), &mut ev);
        assert_eq!(ev[1], Bytes::from("k4"));
        // k5 and k6 both count 1: the older one (k5) goes.
        lfu.get(b"k3", 0);
        lfu.insert(Bytes::from("k6"), item("v"), &mut ev);
        assert_eq!(ev[2], Bytes::from("k5"));
        assert!(lfu.peek(b"k1").is_some() && lfu.peek(b"k3").is_some() && lfu.peek(b"k6").is_some());
    }

    #[test]
    fn delete_really_removes() {
        let lfu = Lfu::new(0, 1, true);
        let mut ev = Vec::new();
        lfu.insert(Bytes::from("a"), item("v"), &mut ev);
        lfu.insert(Bytes::from("b"), item("v"), &mut ev);
        lfu.get(b"a", 0);
        assert!(lfu.remove(b"a").is_some());
        assert_eq!(lfu.used_bytes(), charge("b"));
        let mut out = Vec::new();
        lfu.victims(u64::MAX, &mut out);
        assert_eq!(out, [Bytes::from("b")], "a deleted key is no victim");
        let mut lens = Vec::new();
        lfu.with_orders(|o, _| lens.push(o.lists.iter().map(|l| (l.len, l.bytes)).collect::<Vec<_>>()));
        assert_eq!(lens[0].iter().map(|l| l.0).sum::<usize>(), 1, "one entry in the lists");
        assert_eq!(lens[0].iter().map(|l| l.1).sum::<u64>(), charge("b"), "its bytes only");
    }

    #[test]
    fn counts_age_so_old_hot_keys_can_leave() {
        let lfu = Lfu::new(0, 1, true);
        let mut ev = Vec::new();
        lfu.insert(Bytes::from("old"), item("v"), &mut ev);
        for _ in 0..200 {
            lfu.get(b"old", 0);
        }
        lfu.insert(Bytes::from("new"), item("v"), &mut ev);
        let slots = lfu.slots() as u32;
        let count = |key: &[u8]| {
            let mut c = 0;
            lfu.with_orders(|_, s| {
                for i in 0..slots {
                    if s.key(i) == key {
                        c = LfuOrder::count(s, i);
                    }
                }
            });
            c
        };
        assert_eq!(count(b"old"), 201);
        // `new` is read steadily; `old` not at all. After enough accesses
        // (several halvings), `new` ranks above `old`.
        for _ in 0..(3 * MIN_AGING_PERIOD) {
            lfu.get(b"new", 0);
        }
        assert!(count(b"new") > count(b"old"), "new {} old {}", count(b"new"), count(b"old"));
        let mut out = Vec::new();
        lfu.victims(1, &mut out);
        assert_eq!(out, [Bytes::from("old")]);
    }

    #[test]
    fn overhead_is_documented() {
        assert_eq!(OVERHEAD, 64);
    }
}
