//! The store's hash index: slot numbers by key hash, open addressing with
//! linear probing, and a way to pull a key's cell into the CPU cache ahead
//! of its lookup.
//!
//! **Why not `hashbrown`.** A lookup in a big store is a chain of cache
//! misses: the index, the slab node, the key's bytes. hashbrown keeps its
//! control bytes and its buckets in two places (two misses) and has no way
//! to learn where a hash will land, so nothing can be fetched early. Here a
//! cell is one `u64`, `tag << 32 | slot`, where the tag is the low 32 bits
//! of the key's hash: one miss finds both, a lookup compares 32 bits of hash
//! before it touches a node (a false match costs one key compare), and
//! [`Index::prefetch`] knows the cell's address from the hash alone. The
//! batch executor ([`crate::exec::apply_all`]) uses that to have the cells,
//! nodes and keys of the next commands on their way while it runs this one
//! ([`crate::policy::Policy::prefetch`]).
//!
//! **Layout.** A power-of-two array of cells; a key's home cell is its tag
//! masked by the array's size (the tag holds the position bits, so growing
//! rehashes from the cells alone, without a node or a key). Collisions probe
//! the next cells, which share cache lines (8 cells a line). The array grows
//! to twice its size when it would be more than [`MAX_LOAD_NUM`] /
//! [`MAX_LOAD_DEN`] full; removal shifts the following cells back (no
//! tombstones), so probe runs never lengthen with churn.
//!
//! **Memory.** 8 bytes a cell, 1.25 to 2.5 cells an entry (10 to 20 bytes),
//! where hashbrown spends 5 bytes a bucket at up to 7/8 load (6 to 11).

/// A free cell (no entry has slot `u32::MAX`: it is the store's `NIL`).
const EMPTY: u64 = u64::MAX;

/// Grow when more than this fraction of the cells is used.
pub const MAX_LOAD_NUM: usize = 4;
/// See [`MAX_LOAD_NUM`].
pub const MAX_LOAD_DEN: usize = 5;

/// The first array size.
const MIN_CELLS: usize = 16;

/// An open-addressing index from key hash to slot number. It stores no
/// keys: lookups take a closure that checks a candidate slot's key.
#[derive(Default)]
pub struct Index {
    cells: Box<[u64]>,
    len: usize,
}

/// The tag of a hash: its low 32 bits (the store shards on the high ones).
#[inline]
pub fn tag(hash: u64) -> u32 {
    hash as u32
}

#[inline]
fn cell(tag: u32, slot: u32) -> u64 {
    (tag as u64) << 32 | slot as u64
}

impl Index {
    /// An empty index (allocates on the first insert).
    pub fn new() -> Self {
        Index::default()
    }

    /// Entries in the index.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn mask(&self) -> usize {
        self.cells.len().wrapping_sub(1)
    }

    /// The home cell of `tag`.
    #[inline]
    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    /// The slot whose key `is_key` accepts among the entries tagged `tag`.
    #[inline]
    pub fn find(&self, tag: u32, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.cells.is_empty() {
            return None;
        }
        let mask = self.mask();
        let mut at = self.home(tag);
        loop {
            let c = self.cells[at];
            if c == EMPTY {
                return None;
            }
            if (c >> 32) as u32 == tag && is_key(c as u32) {
                return Some(c as u32);
            }
            at = (at + 1) & mask;
        }
    }

    /// The first slot tagged `tag`, without checking its key: what a
    /// lookup will most likely find (for prefetching only).
    #[inline]
    pub fn probable(&self, tag: u32) -> Option<u32> {
        self.find(tag, |_| true)
    }

    /// Adds `slot` under `tag` (the caller knows the key is not there).
    pub fn insert(&mut self, tag: u32, slot: u32) {
        if (self.len + 1) * MAX_LOAD_DEN > self.cells.len() * MAX_LOAD_NUM {
            self.grow();
        }
        self.place(cell(tag, slot));
        self.len += 1;
    }

    fn place(&mut self, c: u64) {
        let mask = self.mask();
        let mut at = self.home((c >> 32) as u32);
        while self.cells[at] != EMPTY {
            at = (at + 1) & mask;
        }
        self.cells[at] = c;
    }

    fn grow(&mut self) {
        let size = (self.cells.len() * 2).max(MIN_CELLS);
        let old = std::mem::replace(&mut self.cells, vec![EMPTY; size].into_boxed_slice());
        for c in old.iter().copied().filter(|&c| c != EMPTY) {
            self.place(c);
        }
    }

    /// Removes `slot`, which is indexed under `tag`; answers whether it was.
    pub fn remove(&mut self, tag: u32, slot: u32) -> bool {
        if self.cells.is_empty() {
            return false;
        }
        let (mask, want) = (self.mask(), cell(tag, slot));
        let mut hole = self.home(tag);
        loop {
            match self.cells[hole] {
                EMPTY => return false,
                c if c == want => break,
                _ => hole = (hole + 1) & mask,
            }
        }
        // Backward shift: move each following cell of the run into the hole
        // when its home is not between the hole and where it sits.
        let mut at = hole;
        loop {
            at = (at + 1) & mask;
            let c = self.cells[at];
            if c == EMPTY {
                break;
            }
            let home = self.home((c >> 32) as u32);
            if at.wrapping_sub(home) & mask >= at.wrapping_sub(hole) & mask {
                self.cells[hole] = c;
                hole = at;
            }
        }
        self.cells[hole] = EMPTY;
        self.len -= 1;
        true
    }

    /// Starts pulling the home cell of `tag` into the cache.
    #[inline]
    pub fn prefetch(&self, tag: u32) {
        if let Some(c) = self.cells.get(self.home(tag)) {
            prefetch(c);
        }
    }
}

/// Asks the CPU to bring the cache line holding `*value` closer (a hint:
/// no effect on what the program computes, and nothing on targets without
/// the instruction).
#[inline(always)]
pub fn prefetch<T>(value: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults and reads nothing the program sees;
    // any address is allowed.
    #[allow(unsafe_code)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(value.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn finds_what_it_holds() {
        let mut ix = Index::new();
        assert_eq!(ix.find(7, |_| true), None);
        assert!(!ix.remove(7, 1));
        for slot in 0..1000u32 {
            ix.insert(slot.wrapping_mul(0x9E37_79B9), slot);
        }
        assert_eq!(ix.len(), 1000);
        for slot in 0..1000u32 {
            assert_eq!(ix.find(slot.wrapping_mul(0x9E37_79B9), |s| s == slot), Some(slot));
        }
        assert!(ix.remove(5u32.wrapping_mul(0x9E37_79B9), 5));
        assert_eq!(ix.find(5u32.wrapping_mul(0x9E37_79B9), |s| s == 5), None);
        assert!(ix.cells.len() * MAX_LOAD_NUM >= ix.len() * MAX_LOAD_DEN);
    }

    #[test]
    fn equal_tags_are_told_apart_by_the_key_check() {
        let mut ix = Index::new();
        for slot in 0..40 {
            ix.insert(42, slot);
        }
        for slot in 0..40 {
            assert_eq!(ix.find(42, |s| s == slot), Some(slot));
        }
        assert!(ix.remove(42, 17));
        assert_eq!(ix.find(42, |s| s == 17), None);
        assert_eq!(ix.find(42, |s| s == 39), Some(39));
        assert!(ix.probable(42).is_some_and(|s| s < 40 && s != 17));
        assert_eq!(ix.probable(43), None);
    }

    proptest! {
        /// Any mix of inserts and removes (tags drawn from a few values, so
        /// runs collide, wrap around the array's end and shift back) leaves
        /// the index answering exactly what a map of slot → tag holds.
        #[test]
        fn matches_a_map(ops in prop::collection::vec((any::<bool>(), 0u32..64, 0u32..6), 1..400)) {
            let mut ix = Index::new();
            let mut model: HashMap<u32, u32> = HashMap::new();
            for (insert, slot, t) in ops {
                // High tag bits vary too, so homes spread and wrap.
                let tag = t.wrapping_mul(0x8000_0007) | 0xf;
                if insert {
                    if let std::collections::hash_map::Entry::Vacant(e) = model.entry(slot) {
                        e.insert(tag);
                        ix.insert(tag, slot);
                    }
                } else {
                    let had = model.get(&slot) == Some(&tag);
                    prop_assert_eq!(ix.remove(tag, slot), had);
                    if had {
                        model.remove(&slot);
                    }
                }
                prop_assert_eq!(ix.len(), model.len());
                for (&s, &t) in &model {
                    prop_assert_eq!(ix.find(t, |c| c == s), Some(s));
                }
            }
        }
    }
}
