//! # gerdu-policy-s3fifo — S3-FIFO (small, main and ghost FIFO queues)
//!
//! `-type s3fifo`. The algorithm of Yang et al., "FIFO queues are all you
//! need for cache eviction" (SOSP 2023), hand-written on the SDK's sharded
//! store ([`gerdu_api::store`]). Written here rather than taken from a
//! crate: the crates that implement it own their map and evict on their own,
//! while a gerdu policy must name victims without removing them (the leader
//! replicates the removal, DESIGN §3), weigh entries in bytes, and let the
//! store keep items, expiry and snapshots.
//!
//! Per shard, in charged bytes:
//!
//! - **small**, a FIFO of 10% of the shard's capacity, takes new keys;
//! - **main**, a FIFO of the other 90%, with a 2-bit read counter per entry
//!   (CLOCK-like);
//! - **ghost**, the hashes of keys recently evicted from small, up to 90%
//!   of the capacity in the bytes they were charged.
//!
//! A read adds one to the entry's counter (at most 3). A new key goes to
//! main if its hash is in the ghost (it was evicted too early), or while
//! nothing has been evicted yet and small is full; otherwise to small.
//! Evicting: while main is over its share, or small is empty, main's
//! oldest entry is evicted if its counter is 0, else it goes back to the
//! head with the counter less one; otherwise small's oldest entry moves to
//! main if it was read at least twice, else it is evicted and its hash goes
//! to the ghost. This matches libCacheSim's `S3FIFO` (the reference figures
//! in the hit-ratio benchmark come from it).
//!
//! Selecting victims without removing them ([`Order::select`]) walks both
//! queues with cursors: entries it moves or re-queues are moved at once,
//! entries it names stay where they are until the removal comes (marked
//! with the selection's number, so a second pass over main skips them).
//!
//! **Charge per item** = `key.len() + value.len() + OVERHEAD`: the store's
//! node with a 12-byte link, index slot and allocator rounding, plus 40
//! bytes for the ghost entry each evicted key leaves (a map slot and a
//! queue slot): 104 bytes on x86-64.

#![warn(missing_docs)]

use std::collections::{HashMap, VecDeque};

use gerdu_api::store::{Links, List, NIL, Order, Sharded, Slots, overhead};
use gerdu_api::{PolicyPlugin, register_policy};

const SMALL: u8 = 1;
const MAIN: u8 = 2;
/// Reads in small that earn a move to main.
const MOVE_TO_MAIN: u8 = 2;
/// Highest read counter.
const MAX_FREQ: u8 = 3;

/// An entry's queue, links, read counter, and the selection that named it.
#[derive(Default)]
pub struct S3Link {
    links: Links,
    queue: u8,
    freq: u8,
    mark: u16,
}

gerdu_api::linked!(S3Link);

/// Hashes of keys evicted from small, oldest first, bounded in bytes.
#[derive(Default)]
struct Ghost {
    /// hash → (generation, charge) of its live queue entry.
    live: HashMap<u64, (u64, u64)>,
    queue: VecDeque<(u64, u64)>,
    bytes: u64,
    limit: u64,
    generation: u64,
}

impl Ghost {
    fn add(&mut self, hash: u64, charge: u64) {
        if self.limit == 0 {
            return;
        }
        self.generation += 1;
        if let Some((_, old)) = self.live.insert(hash, (self.generation, charge)) {
            self.bytes -= old;
        }
        self.queue.push_back((hash, self.generation));
        self.bytes += charge;
        self.trim();
    }

    /// Whether `hash` was in the ghost; it leaves it.
    fn take(&mut self, hash: u64) -> bool {
        match self.live.remove(&hash) {
            Some((_, charge)) => {
                self.bytes -= charge;
                // Queue entries of taken hashes are skipped when they come
                // up; compact when they are most of the queue.
                if self.queue.len() > 2 * self.live.len() + 64 {
                    let live = &self.live;
                    self.queue.retain(|(h, g)| live.get(h).is_some_and(|(lg, _)| lg == g));
                }
                true
            }
            None => false,
        }
    }

    fn trim(&mut self) {
        while self.bytes > self.limit {
            let Some((hash, generation)) = self.queue.pop_front() else { break };
            if let Some(&(g, charge)) = self.live.get(&hash)
                && g == generation
            {
                self.live.remove(&hash);
                self.bytes -= charge;
            }
        }
    }
}

/// The S3-FIFO order of one shard.
pub struct S3FifoOrder {
    small: List,
    main: List,
    ghost: Ghost,
    small_max: u64,
    main_max: u64,
    has_evicted: bool,
    /// Number of the current selection (marks what it named).
    epoch: u16,
}

impl S3FifoOrder {
    fn queue(&mut self, q: u8) -> &mut List {
        if q == SMALL { &mut self.small } else { &mut self.main }
    }

    fn sizes(&mut self, capacity: u64) {
        self.small_max = capacity / 10;
        self.main_max = capacity - self.small_max;
        self.ghost.limit = capacity * 9 / 10;
        self.ghost.trim();
    }

    /// Names slot `i` as a victim of the current selection.
    fn name(&self, s: &mut Slots<S3Link>, i: u32, out: &mut Vec<u32>) -> u64 {
        s.link_mut(i).mark = self.epoch;
        out.push(i);
        s.charge(i)
    }

    /// Which queue slot `i` is in (for tests).
    pub fn queue_of(s: &Slots<S3Link>, i: u32) -> &'static str {
        if s.link(i).queue == SMALL { "small" } else { "main" }
    }
}

/// A walk over one queue from its oldest entry that skips what was named.
struct Walk {
    next: u32,
    /// Bytes of the queue not yet named.
    left: u64,
}

impl Order for S3FifoOrder {
    type Link = S3Link;
    const EXTRA: usize = 40;

    fn new(capacity: u64) -> Self {
        let mut o = S3FifoOrder {
            small: List::default(),
            main: List::default(),
            ghost: Ghost::default(),
            small_max: 0,
            main_max: 0,
            has_evicted: false,
            epoch: 0,
        };
        o.sizes(capacity);
        o
    }

    fn set_capacity(&mut self, capacity: u64) {
        self.sizes(capacity);
    }

    fn inserted(&mut self, s: &mut Slots<S3Link>, i: u32, hash: u64) {
        let to_main = self.ghost.take(hash) || (!self.has_evicted && self.small.bytes >= self.small_max);
        let q = if to_main { MAIN } else { SMALL };
        *s.link_mut(i) = S3Link { queue: q, ..S3Link::default() };
        self.queue(q).push_front(s, i);
    }

    fn accessed(&mut self, s: &mut Slots<S3Link>, i: u32, _hash: u64) {
        let l = s.link_mut(i);
        l.freq = (l.freq + 1).min(MAX_FREQ);
    }

    fn rewritten(&mut self, s: &mut Slots<S3Link>, i: u32, hash: u64, old: u64) {
        let q = s.link(i).queue;
        self.queue(q).recharge(s, i, old);
        self.accessed(s, i, hash);
    }

    fn removed(&mut self, s: &mut Slots<S3Link>, i: u32) {
        let q = s.link(i).queue;
        self.queue(q).unlink(s, i);
    }

    fn select(&mut self, s: &mut Slots<S3Link>, bytes: u64, out: &mut Vec<u32>) {
        self.has_evicted = true;
        self.epoch = self.epoch.wrapping_add(1).max(1);
        let mut small = Walk { next: self.small.tail, left: self.small.bytes };
        let mut main = Walk { next: self.main.tail, left: self.main.bytes };
        let mut freed = 0;
        'evict: while freed < bytes {
            if main.left > self.main_max || small.left == 0 {
                // Main: re-queue read entries with one count less, evict the first unread one.
                let mut requeued_all = 0;
                loop {
                    if main.left == 0 {
                        break 'evict;
                    }
                    if main.next == NIL {
                        // Walked past the head: everything left was re-queued
                        // ahead of the cursor; walk again, skipping the named.
                        requeued_all += 1;
                        if requeued_all > usize::from(MAX_FREQ) + 1 {
                            break 'evict;
                        }
                        main.next = self.main.tail;
                    }
                    let i = main.next;
                    main.next = List::newer(s, i);
                    if s.link(i).mark == self.epoch {
                        continue;
                    }
                    let freq = s.link(i).freq;
                    if freq >= 1 {
                        s.link_mut(i).freq = freq.min(MAX_FREQ) - 1;
                        if main.next == NIL {
                            // Already the head: the walk will restart at the tail.
                            continue;
                        }
                        self.main.move_front(s, i);
                    } else {
                        let c = self.name(s, i, out);
                        main.left -= c;
                        freed += c;
                        break;
                    }
                }
            } else {
                // Small: promote entries read enough, evict the first other one.
                loop {
                    let i = small.next;
                    if i == NIL {
                        small.left = 0;
                        break;
                    }
                    small.next = List::newer(s, i);
                    let c = s.charge(i);
                    small.left -= c;
                    if s.link(i).freq >= MOVE_TO_MAIN {
                        self.small.unlink(s, i);
                        *s.link_mut(i) = S3Link { queue: MAIN, ..S3Link::default() };
                        self.main.push_front(s, i);
                        main.left += c;
                        if main.next == NIL {
                            main.next = i;
                        }
                    } else {
                        freed += self.name(s, i, out);
                        self.ghost.add(s.hash(i), c);
                        break;
                    }
                }
            }
        }
    }
}

/// The S3-FIFO store.
pub type S3Fifo = Sharded<S3FifoOrder>;

/// Bytes charged per item on top of key and value.
pub const OVERHEAD: usize = overhead::<S3FifoOrder>();

register_policy!(PolicyPlugin {
    name: "s3fifo",
    description: "S3-FIFO: small, main and ghost FIFO queues (SOSP 2023)",
    build: |config, settings| gerdu_api::store::build::<S3FifoOrder>(config, settings, "s3fifo"),
});

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use gerdu_api::{Item, Policy};

    use super::*;

    fn item() -> Item {
        Item { value: Bytes::from_static(b"v"), cas: 1, ..Item::default() }
    }

    fn key(i: usize) -> Bytes {
        Bytes::from(format!("k{i:03}"))
    }

    const CHARGE: u64 = (4 + 1 + OVERHEAD) as u64;

    #[test]
    fn conformance() {
        gerdu_api::testkit::check_order::<S3FifoOrder>();
    }

    #[test]
    fn one_hit_wonders_leave_from_small_and_read_keys_stay() {
        let cache = S3Fifo::new(20 * CHARGE, 1, true);
        let mut ev = Vec::new();
        for i in 0..20 {
            cache.insert(key(i), item(), &mut ev);
        }
        // Read the first two twice: they earn main when small evicts.
        for _ in 0..2 {
            cache.get(&key(0), 0);
            cache.get(&key(1), 0);
        }
        // A scan of new keys does not push them out.
        for i in 100..200 {
            cache.insert(key(i), item(), &mut ev);
        }
        assert!(cache.peek(&key(0)).is_some() && cache.peek(&key(1)).is_some(), "read keys survive a scan");
        assert_eq!(ev.len() + cache.len(), 120);
    }

    #[test]
    fn a_key_back_from_the_ghost_goes_to_main() {
        let cache = S3Fifo::new(20 * CHARGE, 1, true);
        let mut ev = Vec::new();
        for i in 0..40 {
            cache.insert(key(i), item(), &mut ev);
        }
        let gone = ev.last().unwrap().clone();
        cache.insert(gone.clone(), item(), &mut ev);
        let mut queue = "";
        let slots = cache.slots() as u32;
        cache.with_orders(|_, s| {
            for i in 0..slots {
                if s.key(i) == &gone[..] {
                    queue = S3FifoOrder::queue_of(s, i);
                }
            }
        });
        assert_eq!(queue, "main");
    }

    #[test]
    fn victims_name_each_key_once_even_when_main_is_all_read() {
        let cache = S3Fifo::new(0, 1, false);
        let mut ev = Vec::new();
        for i in 0..50 {
            cache.insert(key(i), item(), &mut ev);
            for _ in 0..3 {
                cache.get(&key(i), 0);
            }
        }
        let mut out = Vec::new();
        cache.victims(u64::MAX, &mut out);
        let unique: std::collections::HashSet<_> = out.iter().collect();
        assert_eq!(unique.len(), out.len());
        assert_eq!(out.len(), 50);
        assert_eq!(cache.len(), 50, "nothing removed");
    }

    #[test]
    fn overhead_is_documented() {
        assert_eq!(OVERHEAD, 104);
    }
}
