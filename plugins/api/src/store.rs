//! A sharded, byte-weighted store that a policy plugin fills in with only
//! its eviction order.
//!
//! Every built-in policy has the same store underneath and differs only in
//! the order it keeps: [`Sharded<O>`] implements [`Policy`] for any
//! [`Order`]. Custom policies can use it the same way.
//!
//! **Layout.** The key space is split over N shards by key hash; each shard
//! is a `parking_lot::Mutex` around a hash index ([`Index`]: 32 bits of
//! hash and a slot number per cell), a slab of nodes ([`Node`]: the item's metadata, one
//! allocation holding `key ++ value`, and the order's per-entry
//! [`Order::Link`]), a free list, and the order's own state. Get, insert and
//! remove are one lookup under one lock.
//!
//! **Prefetching.** A lookup in a big store waits on three cache misses in
//! a row: the index cell, the node, the key's bytes (and a recency order's
//! neighbours). [`Policy::prefetch`] starts each of them one step ahead,
//! for the commands that follow in a batch ([`crate::exec::apply_all`]), so
//! they overlap with the work of the command running now.
//!
//! **Batches.** [`Policy::batch`] runs a log entry's writes (or a batch of
//! reads) of at least half as many commands as there are shards with every
//! shard's lock taken once for the whole batch, instead
//! of once per command plus once per prefetch step: a lock is an atomic
//! read-modify-write, which waits for the stores before it to drain. The
//! thread running the batch is recorded in a thread-local, and the store's
//! methods called on that thread reach the shards through the held locks;
//! other threads wait for the batch, as they would for the lock.
//!
//! **Memory.** An entry costs its node (40 bytes with the order's link), 10
//! to 20 bytes of index (an 8-byte cell, at most 4/5 of them used), and one
//! allocation of `key + value` bytes (8 more
//! for a deadline), which is about what Redis spends (its dict entry, object
//! header and two strings). Values
//! over [`PACK_LIMIT`] bytes are kept as shared `Bytes` beside the slab
//! instead, so reads share them rather than copy them. Writes copy the value
//! into the entry (the log entry that carried it is dropped when the log is
//! compacted); reads copy a packed value out (they would copy it into the
//! reply anyway).
//!
//! **Orders.** An [`Order`] hears about every entry that is inserted, read,
//! rewritten or removed, and answers [`Order::select`]: which entries to
//! evict, in its order, to free some bytes. Selecting removes nothing; it
//! may reorganise the order's own queues (S3-FIFO moves a small-queue entry
//! that was read to the main queue on the way). The store removes what was
//! selected (local eviction), or the caller does by replicating the removal
//! ([`Policy::victims`], DESIGN §3). Intrusive doubly-linked lists over slot
//! numbers ([`List`]) are what most orders are made of.
//!
//! **Capacity.** The capacity is split evenly over the shards; with local
//! eviction a shard over its share evicts before it stores (as a simulator
//! does: evict, then insert), so the entry just written is never the
//! victim unless it alone is larger than the share. With many keys this
//! behaves as one global order; for small caches and hit-ratio studies use
//! one shard.
//!
//! **Charge per item** = `key.len() + value.len() + overhead`, where the
//! overhead is the node's size, plus the 8-byte index cell, plus 16 bytes for the rounding of the entry's allocation to the
//! allocator's size classes, plus what the order adds per entry
//! ([`Order::EXTRA`], e.g. a ghost entry).

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard};

use crate::cow::{CowCoordinator, ShardedCapture};
use crate::index::{self, Index, prefetch};
use crate::policy::{Capture, Captured, Policy, Update, charge};
use crate::reply::{Item, ItemMeta, ItemRef, ItemValue};

/// The "no slot" link value.
pub const NIL: u32 = u32::MAX;

/// Values up to this many bytes are packed into one allocation with their
/// key; longer ones are kept as shared [`Bytes`] beside the slab (a read
/// shares them instead of copying; see [`crate::reply::READ_COPY_LIMIT`]).
pub const PACK_LIMIT: usize = crate::reply::READ_COPY_LIMIT;

/// One slab slot: an entry and the order's link for it.
///
/// The key and (up to [`PACK_LIMIT`] bytes) the value share one heap
/// allocation, `[deadline] ++ key ++ value`; the rest of the item's metadata
/// sits in the node: 28 bytes besides the order's link, so 40 with a link of
/// 8 or 12 bytes, where a key, an [`Item`] and their `Bytes` headers would
/// take 88 and a separate allocation for the key. The allocation is reached
/// by a thin pointer ([`Data`]): its length follows from [`Node::word`],
/// which holds the key's and the packed value's lengths. No deadline is kept
/// in the node: an item with a deadline carries it as the first 8 bytes of
/// its allocation (as Redis keeps deadlines apart, in its `expires` dict), so
/// the many items without one do not pay for it.
#[derive(Default)]
pub struct Node<L> {
    /// `[deadline u64 LE] ++ key ++ value`; the value only when packed.
    data: Data,
    /// The layout of `data`: [`LARGE`], [`DEADLINE`], and the lengths. A
    /// packed entry keeps the key's length in the low [`KEY_BITS`] and the
    /// value's above them; a large one (value beside the slab) keeps the
    /// key's length in all 30 low bits.
    word: u32,
    flags: u32,
    meta: ItemMeta,
    cas: u64,
    /// The order's per-entry state.
    pub link: L,
}

/// The bit of [`Node::word`] that marks a value kept beside the slab.
const LARGE: u32 = 1 << 31;
/// The bit of [`Node::word`] that marks a deadline at the start of `data`.
const DEADLINE: u32 = 1 << 30;
/// Bits of a packed entry's key length: a key of 1 MiB or more keeps its
/// value beside the slab whatever the value's size (Redis allows keys up to
/// 512 MiB, memcached 250 bytes).
const KEY_BITS: u32 = 20;
/// A large entry's key length: up to 1 GiB.
const LARGE_KEY: u32 = DEADLINE - 1;
const _: () = assert!(PACK_LIMIT < 1 << (30 - KEY_BITS), "a packed value's length fits beside the key's");

#[allow(unsafe_code)] // `data`: see `Data`
impl<L> Node<L> {
    /// Where the key begins in `data`.
    #[inline]
    fn key_at(&self) -> usize {
        if self.word & DEADLINE != 0 { 8 } else { 0 }
    }

    #[inline]
    fn key_len(&self) -> usize {
        let mask = if self.packed() { (1 << KEY_BITS) - 1 } else { LARGE_KEY };
        (self.word & mask) as usize
    }

    /// A packed value's length (0 for a large one).
    #[inline]
    fn packed_len(&self) -> usize {
        if self.packed() { ((self.word & LARGE_KEY) >> KEY_BITS) as usize } else { 0 }
    }

    /// The bytes behind `data`.
    #[inline]
    fn data_len(&self) -> usize {
        self.key_at() + self.key_len() + self.packed_len()
    }

    #[inline]
    fn data(&self) -> &[u8] {
        // SAFETY: `data` holds `data_len()` bytes: `word` and `data` change
        // together (`Slots::put`).
        unsafe { self.data.bytes(self.data_len()) }
    }

    #[inline]
    fn key(&self) -> &[u8] {
        let at = self.key_at();
        &self.data()[at..at + self.key_len()]
    }

    /// Where a packed value begins in `data`.
    #[inline]
    fn value_at(&self) -> usize {
        self.key_at() + self.key_len()
    }

    #[inline]
    fn packed(&self) -> bool {
        self.word & LARGE == 0
    }

    /// The deadline (unix ms; 0 = none).
    #[inline]
    fn expires_at(&self) -> u64 {
        match self.data().first_chunk::<8>() {
            Some(bytes) if self.word & DEADLINE != 0 => u64::from_le_bytes(*bytes),
            _ => 0,
        }
    }

    #[inline]
    fn is_expired(&self, now_ms: u64) -> bool {
        let deadline = self.expires_at();
        deadline != 0 && deadline <= now_ms
    }

    /// Starts loading the entry's allocation (its first and last line: the
    /// key, and the end of a packed value).
    #[inline]
    fn prefetch_data(&self) {
        let (start, len) = (self.data.0.as_ptr(), self.data_len());
        if len != 0 {
            prefetch(start);
            prefetch(start.wrapping_add(len - 1));
        }
    }

    /// The `word` for a key and value of these lengths.
    fn word_for(key_len: usize, value_len: usize, deadline: bool) -> u32 {
        let packed = value_len <= PACK_LIMIT && key_len < 1 << KEY_BITS;
        assert!(key_len <= LARGE_KEY as usize, "keys are shorter than 1 GiB");
        let lengths = if packed { key_len as u32 | (value_len as u32) << KEY_BITS } else { key_len as u32 | LARGE };
        lengths | if deadline { DEADLINE } else { 0 }
    }
}

#[allow(unsafe_code)]
impl<L> Drop for Node<L> {
    fn drop(&mut self) {
        let len = self.data_len();
        // SAFETY: `data` holds `len` bytes (see `data`), and is not used again.
        unsafe { self.data.free(len) }
    }
}

/// An owned heap buffer behind a thin pointer: 8 bytes where `Box<[u8]>`
/// takes 16. Its owner keeps the length and hands it to every call.
struct Data(std::ptr::NonNull<u8>);

// SAFETY: `Data` owns its buffer alone, like a `Box<[u8]>`.
#[allow(unsafe_code)]
unsafe impl Send for Data {}
// SAFETY: shared access only reads.
#[allow(unsafe_code)]
unsafe impl Sync for Data {}

impl Default for Data {
    fn default() -> Self {
        Data(std::ptr::NonNull::dangling())
    }
}

#[allow(unsafe_code)]
impl Data {
    /// A buffer holding `parts`, one after the other.
    fn from_parts(parts: &[&[u8]]) -> Self {
        let len = parts.iter().map(|p| p.len()).sum();
        if len == 0 {
            return Data::default();
        }
        let layout = std::alloc::Layout::array::<u8>(len).expect("entry size");
        // SAFETY: `layout` has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = std::ptr::NonNull::new(ptr) else { std::alloc::handle_alloc_error(layout) };
        let mut at = 0;
        for part in parts {
            // SAFETY: the parts fill the `len` bytes just allocated, which nothing else can reach yet.
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), ptr.as_ptr().add(at), part.len()) };
            at += part.len();
        }
        Data(ptr)
    }

    /// The buffer's bytes.
    ///
    /// # Safety
    /// `len` is the length it was made with.
    #[inline]
    unsafe fn bytes(&self, len: usize) -> &[u8] {
        // SAFETY: the caller's promise; a zero length needs only a dangling, aligned pointer.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), len) }
    }

    /// The buffer's bytes, to change.
    ///
    /// # Safety
    /// As [`Data::bytes`].
    #[inline]
    unsafe fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: the caller's promise, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), len) }
    }

    /// Frees the buffer and leaves an empty one.
    ///
    /// # Safety
    /// As [`Data::bytes`].
    unsafe fn free(&mut self, len: usize) {
        let ptr = std::mem::take(self).0;
        if len != 0 {
            // SAFETY: allocated in `from_parts` with this layout (the caller's promise on `len`).
            unsafe { std::alloc::dealloc(ptr.as_ptr(), std::alloc::Layout::array::<u8>(len).expect("entry size")) }
        }
    }
}

/// The hasher every store uses: foldhash with a per-store seed.
pub type Hasher = foldhash::fast::FixedState;

/// A shard's slab as an [`Order`] sees it: links by slot, and what each
/// entry is charged.
pub struct Slots<L> {
    nodes: Vec<Node<L>>,
    /// The values over [`PACK_LIMIT`] bytes, by slot.
    large: hashbrown::HashMap<u32, Bytes, Hasher>,
    /// One bit per slot: occupied.
    live: Vec<u64>,
    free: Vec<u32>,
    hasher: Hasher,
    overhead: u64,
}

impl<L> Slots<L> {
    /// The link of slot `i`.
    #[inline]
    pub fn link(&self, i: u32) -> &L {
        &self.nodes[i as usize].link
    }

    /// The link of slot `i`, to change.
    #[inline]
    pub fn link_mut(&mut self, i: u32) -> &mut L {
        &mut self.nodes[i as usize].link
    }

    /// The bytes slot `i`'s entry is charged.
    #[inline]
    pub fn charge(&self, i: u32) -> u64 {
        let n = &self.nodes[i as usize];
        let value_len = if n.packed() { n.packed_len() } else { self.large.get(&i).map_or(0, Bytes::len) };
        charge(n.key_len(), value_len, 0) as u64 + self.overhead
    }

    /// The hash of slot `i`'s key (for frequency sketches and ghosts).
    #[inline]
    pub fn hash(&self, i: u32) -> u64 {
        self.hasher.hash_one(self.nodes[i as usize].key())
    }

    /// Starts loading slot `i`'s node (a hint; no effect on results): its
    /// first and last byte, since nodes (40 bytes with an LRU's links) lie
    /// across two cache lines about half the time, and the lookup reads
    /// fields from both ends.
    #[inline]
    pub fn prefetch(&self, i: u32) {
        if let Some(n) = self.nodes.get(i as usize) {
            let start: *const u8 = (n as *const Node<L>).cast();
            prefetch(start);
            prefetch(start.wrapping_add(std::mem::size_of::<Node<L>>() - 1));
        }
    }

    /// The key of slot `i`.
    pub fn key(&self, i: u32) -> &[u8] {
        self.nodes[i as usize].key()
    }

    /// The item in slot `i`, as a read hands it out: a packed value is
    /// copied, a large one shared.
    fn item(&self, i: u32) -> Item {
        self.item_ref(i).to_item()
    }

    /// The item in slot `i`, in place.
    #[inline]
    fn item_ref(&self, i: u32) -> ItemRef<'_> {
        let n = &self.nodes[i as usize];
        let (value, shared) = if n.packed() {
            (&n.data()[n.value_at()..], None)
        } else {
            let large = self.large.get(&i);
            (large.map_or(&[][..], |b| &b[..]), large)
        };
        ItemRef { value, shared, flags: n.flags, meta: n.meta, cas: n.cas, expires_at: n.expires_at() }
    }

    /// Puts `item` in slot `i` under `key`.
    #[allow(unsafe_code)]
    fn put<V: ItemValue>(&mut self, i: u32, key: &[u8], item: Item<V>) {
        let Item { value, flags, meta, cas, expires_at } = item;
        let word = Node::<L>::word_for(key.len(), value.as_ref().len(), expires_at != 0);
        let n = &mut self.nodes[i as usize];
        let was_large = !n.packed();
        let deadline = expires_at.to_le_bytes();
        let head: &[u8] = if expires_at != 0 { &deadline } else { &[] };
        let packed = word & LARGE == 0;
        let tail: &[u8] = if packed { value.as_ref() } else { &[] };
        // A rewrite that keeps the layout and the sizes reuses the allocation.
        if n.word == word && n.key() == key {
            let len = n.data_len();
            // SAFETY: `data` holds `len` bytes, and `word` stays the same.
            let data = unsafe { n.data.bytes_mut(len) };
            data[..head.len()].copy_from_slice(head);
            data[len - tail.len()..].copy_from_slice(tail);
        } else {
            let (fresh, len) = (Data::from_parts(&[head, key, tail]), n.data_len());
            let mut old = std::mem::replace(&mut n.data, fresh);
            n.word = word;
            // SAFETY: `old` held `len` bytes, and is not used again.
            unsafe { old.free(len) };
        }
        (n.flags, n.meta, n.cas) = (flags, meta, cas);
        if !packed {
            self.large.insert(i, value.into_shared());
        } else if was_large {
            self.large.remove(&i);
        }
    }

    fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    fn is_live(&self, i: usize) -> bool {
        self.live.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set_live(&mut self, i: usize, live: bool) {
        if self.live.len() <= i / 64 {
            self.live.resize(i / 64 + 1, 0);
        }
        if live { self.live[i / 64] |= 1 << (i % 64) } else { self.live[i / 64] &= !(1 << (i % 64)) }
    }
}

impl<L: Default> Slots<L> {
    fn new(hasher: Hasher, overhead: u64) -> Self {
        Slots { nodes: Vec::new(), large: Default::default(), live: Vec::new(), free: Vec::new(), hasher, overhead }
    }

    fn alloc<V: ItemValue>(&mut self, key: &[u8], item: Item<V>) -> u32 {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.nodes.push(Node::default());
                (self.nodes.len() - 1) as u32
            }
        };
        self.put(i, key, item);
        self.set_live(i as usize, true);
        i
    }

    /// Empties slot `i` (callers that need its item read it first).
    fn release(&mut self, i: u32) {
        if !self.nodes[i as usize].packed() {
            self.large.remove(&i);
        }
        self.nodes[i as usize] = Node::default();
        self.set_live(i as usize, false);
        self.free.push(i);
    }
}

/// What an eviction order needs per entry for a doubly-linked list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Links {
    /// Towards the head (more recent).
    pub prev: u32,
    /// Towards the tail (older).
    pub next: u32,
}

impl Default for Links {
    fn default() -> Self {
        Links { prev: NIL, next: NIL }
    }
}

/// A link type that holds [`Links`] for one list at a time.
pub trait Linked {
    /// The list links.
    fn links(&self) -> &Links;
    /// The list links, to change.
    fn links_mut(&mut self) -> &mut Links;
}

/// Implements [`Linked`] for a link struct through its `links: Links` field.
#[macro_export]
macro_rules! linked {
    ($t:ty) => {
        impl $crate::store::Linked for $t {
            fn links(&self) -> &$crate::store::Links {
                &self.links
            }
            fn links_mut(&mut self) -> &mut $crate::store::Links {
                &mut self.links
            }
        }
    };
}

impl Linked for Links {
    fn links(&self) -> &Links {
        self
    }
    fn links_mut(&mut self) -> &mut Links {
        self
    }
}

/// An intrusive doubly-linked list of slots (head = newest), with the
/// number and charged bytes of its entries.
#[derive(Clone, Copy, Debug)]
pub struct List {
    /// The newest slot.
    pub head: u32,
    /// The oldest slot.
    pub tail: u32,
    /// Entries in the list.
    pub len: usize,
    /// Their charged bytes.
    pub bytes: u64,
}

impl Default for List {
    fn default() -> Self {
        List { head: NIL, tail: NIL, len: 0, bytes: 0 }
    }
}

impl List {
    /// Puts slot `i` (in no list) at the head.
    pub fn push_front<L: Linked>(&mut self, s: &mut Slots<L>, i: u32) {
        self.attach(s, i);
        self.len += 1;
        self.bytes += s.charge(i);
    }

    /// Takes slot `i` out of this list.
    pub fn unlink<L: Linked>(&mut self, s: &mut Slots<L>, i: u32) {
        self.detach(s, i);
        self.len -= 1;
        self.bytes -= s.charge(i);
    }

    /// Moves slot `i` (in this list) to the head: pointers only, the
    /// counts stay (the read path of every recency order).
    pub fn move_front<L: Linked>(&mut self, s: &mut Slots<L>, i: u32) {
        if self.head != i {
            self.detach(s, i);
            self.attach(s, i);
        }
    }

    fn attach<L: Linked>(&mut self, s: &mut Slots<L>, i: u32) {
        let old = self.head;
        *s.link_mut(i).links_mut() = Links { prev: NIL, next: old };
        if old != NIL {
            s.link_mut(old).links_mut().prev = i;
        } else {
            self.tail = i;
        }
        self.head = i;
    }

    fn detach<L: Linked>(&mut self, s: &mut Slots<L>, i: u32) {
        let Links { prev, next } = *s.link(i).links();
        if prev == NIL {
            self.head = next
        } else {
            s.link_mut(prev).links_mut().next = next
        }
        if next == NIL {
            self.tail = prev
        } else {
            s.link_mut(next).links_mut().prev = prev
        }
        *s.link_mut(i).links_mut() = Links::default();
    }

    /// Starts loading the nodes next to slot `i`, which moving or
    /// unlinking it will write: an order's [`Order::prefetch`].
    #[inline]
    pub fn prefetch_neighbours<L: Linked>(s: &Slots<L>, i: u32) {
        let Links { prev, next } = *s.link(i).links();
        s.prefetch(prev);
        s.prefetch(next);
    }

    /// The slot before `i` (towards the head), walking from the tail.
    #[inline]
    pub fn newer<L: Linked>(s: &Slots<L>, i: u32) -> u32 {
        s.link(i).links().prev
    }

    /// Call when slot `i` (in this list) changed its charge from `old`.
    pub fn recharge<L>(&mut self, s: &Slots<L>, i: u32, old: u64) {
        self.bytes = self.bytes - old + s.charge(i);
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.head == NIL
    }

    /// Names entries oldest first (from the tail) into `out`, adding their
    /// charges to `freed`, until `freed` reaches `bytes` or the list ends:
    /// the whole of an LRU's [`Order::select`].
    pub fn select_oldest<L: Linked>(&self, s: &Slots<L>, bytes: u64, freed: &mut u64, out: &mut Vec<u32>) {
        let mut i = self.tail;
        while *freed < bytes && i != NIL {
            *freed += s.charge(i);
            out.push(i);
            i = Self::newer(s, i);
        }
    }
}

/// An eviction order: per-shard state plus a per-entry [`Order::Link`].
/// See the module docs.
pub trait Order: Send + 'static {
    /// Per-entry state (list links, a frequency counter, a queue tag).
    type Link: Default + Send + 'static;

    /// Bytes the order adds to each entry's charge beyond its node (ghost
    /// entries, sketch counters).
    const EXTRA: usize = 0;

    /// A fresh order for a shard whose eviction limit is `capacity` charged
    /// bytes (0 = no limit).
    fn new(capacity: u64) -> Self;

    /// The shard's limit changed.
    fn set_capacity(&mut self, capacity: u64);

    /// Slot `i` holds a new entry; `hash` is its key's hash (the store's
    /// own, already computed for the lookup: sketches and ghosts use it).
    fn inserted(&mut self, s: &mut Slots<Self::Link>, i: u32, hash: u64);

    /// Slot `i`'s entry (key hash `hash`) was read.
    fn accessed(&mut self, s: &mut Slots<Self::Link>, i: u32, hash: u64);

    /// Slot `i`'s entry (key hash `hash`) was written again; it was charged
    /// `old` before.
    fn rewritten(&mut self, s: &mut Slots<Self::Link>, i: u32, hash: u64, old: u64);

    /// Slot `i`'s entry is about to be removed (its charge still reads).
    fn removed(&mut self, s: &mut Slots<Self::Link>, i: u32);

    /// Slot `i` is about to be read or written: start loading what the
    /// order will touch then (a list's neighbours, [`List::prefetch_neighbours`]).
    /// A hint; the default does nothing.
    fn prefetch(&self, s: &Slots<Self::Link>, i: u32) {
        let _ = (s, i);
    }

    /// Pushes slots to evict, in order, until their charges add up to
    /// `bytes` or every entry was named once. Removes nothing; the order may
    /// rearrange its own state, and must name each slot at most once per call.
    fn select(&mut self, s: &mut Slots<Self::Link>, bytes: u64, out: &mut Vec<u32>);
}

/// One shard: index, slab, order, accounting.
pub struct Shard<O: Order> {
    table: Index,
    slots: Slots<O::Link>,
    order: O,
    used: u64,
    /// `used`, published for [`Policy::used_bytes`] to read without the
    /// shard's lock (it is asked after every applied log entry).
    usage: Arc<AtomicU64>,
    /// Eviction limit (0 = never evicts).
    limit: u64,
    scratch: Vec<u32>,
}

impl<O: Order> Shard<O> {
    fn new(hasher: Hasher, overhead: u64, limit: u64, order_capacity: u64, usage: Arc<AtomicU64>) -> Self {
        usage.store(0, Ordering::Relaxed);
        Shard {
            table: Index::new(),
            slots: Slots::new(hasher, overhead),
            order: O::new(order_capacity),
            used: 0,
            usage,
            limit,
            scratch: Vec::new(),
        }
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.table.find(index::tag(hash), |i| self.slots.nodes[i as usize].key() == key)
    }

    /// Removes slot `i`; answers the charge it freed.
    fn take(&mut self, hash: u64, i: u32) -> u64 {
        self.order.removed(&mut self.slots, i);
        self.table.remove(index::tag(hash), i);
        let charge = self.slots.charge(i);
        self.used -= charge;
        self.usage.store(self.used, Ordering::Relaxed);
        self.slots.release(i);
        charge
    }

    /// Stores `item` under `key` in slot `found` (or a new slot), evicting
    /// first what it takes to fit. Callers that answer with the replaced item
    /// read it before.
    fn store<V: ItemValue>(
        &mut self,
        hash: u64,
        found: Option<u32>,
        key: &[u8],
        item: Item<V>,
        evicted: &mut Vec<Bytes>,
    ) {
        let charge = charge(key.len(), item.value.as_ref().len(), 0) as u64 + self.slots.overhead;
        // Eviction keeps `found`, so its charge stays what it is now.
        let old_charge = found.map_or(0, |i| self.slots.charge(i));
        let grows = charge.saturating_sub(old_charge);
        if self.limit != 0 && self.used + grows > self.limit {
            self.evict(self.used + grows - self.limit, found, evicted);
        }
        if let Some(i) = found {
            self.slots.put(i, key, item);
            self.used = self.used - old_charge + charge;
            self.order.rewritten(&mut self.slots, i, hash, old_charge);
        } else {
            let i = self.slots.alloc(key, item);
            self.table.insert(index::tag(hash), i);
            self.used += charge;
            self.order.inserted(&mut self.slots, i, hash);
        }
        // Only an entry larger than the whole share is still over.
        if self.limit != 0 && self.used > self.limit {
            self.evict(self.used - self.limit, None, evicted);
        }
        self.usage.store(self.used, Ordering::Relaxed);
    }

    /// Evicts at least `bytes` (or everything but `keep`, the entry being
    /// rewritten).
    fn evict(&mut self, bytes: u64, keep: Option<u32>, evicted: &mut Vec<Bytes>) {
        let mut chosen = std::mem::take(&mut self.scratch);
        let mut freed = 0;
        while freed < bytes {
            chosen.clear();
            self.order.select(&mut self.slots, bytes - freed, &mut chosen);
            let before = freed;
            for &i in chosen.iter().filter(|&&i| Some(i) != keep) {
                let hash = self.slots.hash(i);
                evicted.push(Bytes::copy_from_slice(self.slots.key(i)));
                freed += self.take(hash, i);
            }
            if freed == before {
                break;
            }
        }
        chosen.clear();
        self.scratch = chosen;
    }

    fn items(&self) -> Vec<(Bytes, Item)> {
        (0..self.slots.nodes.len() as u32)
            .filter(|&i| self.slots.is_live(i as usize))
            .map(|i| (Bytes::copy_from_slice(self.slots.key(i)), self.slots.item(i)))
            .collect()
    }
}

/// The byte overhead charged per entry of a store with order `O`.
pub const fn overhead<O: Order>() -> usize {
    std::mem::size_of::<Node<O::Link>>() + 8 + 16 + O::EXTRA
}

thread_local! {
    /// The store (its shards' address) whose batch this thread is running,
    /// holding every shard's lock ([`Policy::batch`]); 0 for none.
    static HELD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A shard reached by a store method: locked for the call, or held by the
/// batch this thread runs.
enum ShardGuard<'a, O: Order> {
    Locked(MutexGuard<'a, Shard<O>>),
    Held(&'a mut Shard<O>),
}

impl<O: Order> std::ops::Deref for ShardGuard<'_, O> {
    type Target = Shard<O>;

    fn deref(&self) -> &Shard<O> {
        match self {
            ShardGuard::Locked(g) => g,
            ShardGuard::Held(s) => s,
        }
    }
}

impl<O: Order> std::ops::DerefMut for ShardGuard<'_, O> {
    fn deref_mut(&mut self) -> &mut Shard<O> {
        match self {
            ShardGuard::Locked(g) => g,
            ShardGuard::Held(s) => s,
        }
    }
}

/// Ends a batch: clears the thread's mark and releases every shard's lock
/// (on unwinding too).
struct Release<'a, O: Order>(&'a Sharded<O>);

#[allow(unsafe_code)]
impl<O: Order> Drop for Release<'_, O> {
    fn drop(&mut self) {
        HELD.with(|h| h.set(0));
        for shard in self.0.shards.iter() {
            // SAFETY: `batch` locked every shard and forgot the guards; no
            // reference into a shard outlives the batch's `run`.
            unsafe { shard.force_unlock() };
        }
    }
}

/// A sharded store with eviction order `O`; implements [`Policy`].
pub struct Sharded<O: Order> {
    shards: Arc<[Mutex<Shard<O>>]>,
    /// Each shard's charged bytes, as the shard publishes them ([`Shard::usage`]).
    usage: Box<[Arc<AtomicU64>]>,
    hasher: Hasher,
    capacity: Mutex<u64>,
    cow: Arc<CowCoordinator<Bytes>>,
    /// Evict on writes (else only `victims` + a replicated removal).
    local: bool,
}

impl<O: Order> Sharded<O> {
    /// A store of `capacity` charged bytes (0 = unlimited) over `shards`
    /// shards that evicts on writes (`local`), or only reports
    /// [`Policy::victims`].
    pub fn new(capacity: u64, shards: usize, local: bool) -> Self {
        // A random seed per store, so keys cannot be chosen to collide.
        let seed = std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u64);
        Self::with_seed(capacity, shards, local, seed)
    }

    /// [`Sharded::new`] with a fixed hash seed: the same keys land in the
    /// same shards and sketch counters on every run (benchmarks, tests).
    pub fn with_seed(capacity: u64, shards: usize, local: bool, seed: u64) -> Self {
        let shards = shards.clamp(1, 1024);
        let (per, order) = (Self::share(capacity, shards, local), Self::order_share(capacity, shards));
        let hasher = Hasher::with_seed(seed);
        let overhead = overhead::<O>() as u64;
        let usage: Box<[Arc<AtomicU64>]> = (0..shards).map(|_| Arc::default()).collect();
        Sharded {
            shards: usage.iter().map(|u| Mutex::new(Shard::new(hasher, overhead, per, order, u.clone()))).collect(),
            usage,
            hasher,
            capacity: Mutex::new(capacity),
            cow: Arc::default(),
            local,
        }
    }

    /// A shard's eviction limit (0 = never evicts): its share, with local
    /// eviction only.
    fn share(capacity: u64, shards: usize, local: bool) -> u64 {
        if local { Self::order_share(capacity, shards) } else { 0 }
    }

    /// Calls `f` on each live slot from `cursor` (shard in the high 32 bits,
    /// slot in the low), one shard lock at a time, until `f` returns false;
    /// returns the cursor of the slot after the last one `f` saw, or 0 once
    /// every shard was walked ([`Policy::scan`]'s contract).
    fn walk(&self, cursor: u64, f: &mut dyn FnMut(&Slots<O::Link>, u32) -> bool) -> u64 {
        let mut shard = (cursor >> 32) as usize;
        let mut slot = (cursor & 0xffff_ffff) as usize;
        while shard < self.shards.len() {
            let s = self.shard(shard);
            while slot < s.slots.nodes.len() {
                slot += 1;
                if s.slots.is_live(slot - 1) && !f(&s.slots, (slot - 1) as u32) {
                    // Continue after this slot; wrap to the next shard at its end.
                    if slot < s.slots.nodes.len() {
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

    /// Runs `f` on each shard's order, under its lock (for tests and metrics).
    pub fn with_orders(&self, mut f: impl FnMut(&O, &Slots<O::Link>)) {
        for i in 0..self.shards.len() {
            let s = self.shard(i);
            f(&s.order, &s.slots);
        }
    }

    /// Number of slab slots (live and free) over all shards.
    pub fn slots(&self) -> usize {
        (0..self.shards.len()).map(|i| self.shard(i).slots.nodes.len()).sum()
    }

    /// This store's mark in [`HELD`].
    #[inline]
    fn mark(&self) -> usize {
        self.shards.as_ptr() as usize
    }

    /// Whether this thread runs a batch of this store (holds every lock).
    #[inline]
    fn held(&self) -> bool {
        HELD.with(|h| h.get()) == self.mark()
    }

    /// Shard `idx`: through the batch's lock when this thread holds it,
    /// else locked for the caller. Never two at once for the same shard:
    /// every method takes one shard at a time and calls nothing back.
    #[inline]
    fn shard(&self, idx: usize) -> ShardGuard<'_, O> {
        self.held_shard(idx).unwrap_or_else(|| ShardGuard::Locked(self.shards[idx].lock()))
    }

    /// [`Sharded::shard`] without waiting: `None` if another thread has it.
    #[inline]
    fn try_shard(&self, idx: usize) -> Option<ShardGuard<'_, O>> {
        self.held_shard(idx).or_else(|| self.shards[idx].try_lock().map(ShardGuard::Locked))
    }

    /// Shard `idx` through the batch's lock, if this thread holds it.
    #[inline]
    #[allow(unsafe_code)]
    fn held_shard(&self, idx: usize) -> Option<ShardGuard<'_, O>> {
        // SAFETY: this thread holds shard `idx`'s lock for the batch (see
        // `batch`), and no other reference to it is live (above).
        self.held().then(|| ShardGuard::Held(unsafe { &mut *self.shards[idx].data_ptr() }))
    }

    #[inline]
    fn locate(&self, key: &[u8]) -> (u64, usize) {
        let hash = self.hasher.hash_one(key);
        // The index takes the low 32 bits (position and tag); shard on the high ones.
        (hash, ((hash >> 32) as usize) % self.shards.len())
    }

    /// Locks the shard of `key` for a mutation (copy-on-write for a running capture).
    #[inline]
    fn lock_for_write(&self, key: &[u8]) -> (u64, ShardGuard<'_, O>) {
        let (hash, idx) = self.locate(key);
        let guard = self.shard(idx);
        self.cow.before_write(idx, || guard.items());
        (hash, guard)
    }

    /// The capacity a shard's order sizes its queues by: the share, also
    /// without local eviction.
    fn order_share(capacity: u64, shards: usize) -> u64 {
        if capacity == 0 { 0 } else { (capacity / shards as u64).max(1) }
    }
}

impl<O: Order> Policy for Sharded<O> {
    fn get(&self, key: &[u8], now_ms: u64) -> Option<Item> {
        let (hash, idx) = self.locate(key);
        let mut guard = self.shard(idx);
        let s = &mut *guard;
        let i = s.find(hash, key)?;
        s.order.accessed(&mut s.slots, i, hash);
        let before = s.slots.item(i);
        // Local access bookkeeping only; a capture in progress may see it,
        // snapshots keep just the replicated meta bits.
        s.slots.nodes[i as usize].meta.note_fetch(now_ms);
        Some(before)
    }

    fn batch(&self, n: usize, run: &mut dyn FnMut()) {
        // Worth it for batches of at least half as many commands as there
        // are shards: a command takes up to eight locks with its prefetch
        // steps, a batch two per shard. Over 32 shards, a pipeline of 16
        // GETs held did 2-4% more GETs/s than one lock per call (three
        // alternating pairs); with a threshold of 8 it measured no better.
        // Nor inside another store's batch: the thread-local marks one store.
        if HELD.with(|h| h.get()) != 0 || n * 2 < self.shards.len() {
            return run();
        }
        // Always in shard order, as every other batch (no lock-order cycle;
        // the other methods take one shard at a time).
        for shard in self.shards.iter() {
            std::mem::forget(shard.lock());
        }
        HELD.with(|h| h.set(self.mark()));
        let _release = Release(self);
        run();
    }

    fn prefetch(&self, key: &[u8], step: usize) {
        let (hash, idx) = self.locate(key);
        // A hint never waits for a lock.
        let Some(s) = self.try_shard(idx) else { return };
        let tag = index::tag(hash);
        if step == 0 {
            return s.table.prefetch(tag);
        }
        // The cell is in the cache by now; its first candidate is almost
        // always the key's slot (a wrong guess only loads a line for nothing).
        let Some(i) = s.table.probable(tag) else { return };
        if step == 1 {
            return s.slots.prefetch(i);
        }
        if let Some(node) = s.slots.nodes.get(i as usize) {
            node.prefetch_data();
            s.order.prefetch(&s.slots, i);
        }
    }

    fn peek(&self, key: &[u8]) -> Option<Item> {
        let (hash, idx) = self.locate(key);
        let s = self.shard(idx);
        s.find(hash, key).map(|i| s.slots.item(i))
    }

    fn insert(&self, key: Bytes, item: Item, evicted: &mut Vec<Bytes>) -> Option<Item> {
        let (hash, mut s) = self.lock_for_write(&key);
        let found = s.find(hash, &key);
        let old = found.map(|i| s.slots.item(i));
        s.store(hash, found, &key, item, evicted);
        old
    }

    fn update<'v>(
        &self,
        key: &[u8],
        f: &mut dyn FnMut(Option<&Item>) -> Update<'v>,
        evicted: &mut Vec<Bytes>,
    ) -> Option<Item> {
        // The current item is copied out: `f` judges it, and it is the
        // answer when replaced or removed.
        let mut old = None;
        self.update_in_place(
            key,
            &mut |found| {
                let current = found.map(|c| c.to_item());
                let decision = f(current.as_ref());
                if !matches!(decision, Update::Keep) {
                    old = current;
                }
                decision
            },
            evicted,
        );
        old
    }

    fn update_in_place<'v>(
        &self,
        key: &[u8],
        f: &mut dyn FnMut(Option<ItemRef<'_>>) -> Update<'v>,
        evicted: &mut Vec<Bytes>,
    ) {
        let (hash, mut s) = self.lock_for_write(key);
        let found = s.find(hash, key);
        match (f(found.map(|i| s.slots.item_ref(i))), found) {
            (Update::Keep, _) | (Update::Remove, None) => {}
            (Update::Store(item), _) => s.store(hash, found, key, item, evicted),
            (Update::Remove, Some(i)) => {
                s.take(hash, i);
            }
        }
    }

    fn remove(&self, key: &[u8]) -> Option<Item> {
        let (hash, mut s) = self.lock_for_write(key);
        let i = s.find(hash, key)?;
        let item = s.slots.item(i);
        s.take(hash, i);
        Some(item)
    }

    fn clear(&self) {
        let capacity = *self.capacity.lock();
        for idx in 0..self.shards.len() {
            let mut s = self.shard(idx);
            self.cow.before_write(idx, || s.items());
            let (overhead, limit, usage) = (s.slots.overhead, s.limit, s.usage.clone());
            *s = Shard::new(self.hasher, overhead, limit, Self::order_share(capacity, self.shards.len()), usage);
        }
    }

    fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.shard(i).slots.len()).sum()
    }

    fn used_bytes(&self) -> u64 {
        // Each shard's own figure as its last change left it: no lock taken.
        self.usage.iter().map(|u| u.load(Ordering::Relaxed)).sum()
    }

    fn capacity(&self) -> u64 {
        *self.capacity.lock()
    }

    fn set_capacity(&self, bytes: u64, evicted: &mut Vec<Bytes>) {
        *self.capacity.lock() = bytes;
        let n = self.shards.len();
        let per = Self::share(bytes, n, self.local);
        for idx in 0..self.shards.len() {
            let mut s = self.shard(idx);
            self.cow.before_write(idx, || s.items());
            s.limit = per;
            s.order.set_capacity(Self::order_share(bytes, n));
            if per != 0 && s.used > per {
                let over = s.used - per;
                s.evict(over, None, evicted);
            }
        }
    }

    fn entry_overhead(&self) -> usize {
        overhead::<O>()
    }

    fn victims(&self, bytes: u64, out: &mut Vec<Bytes>) {
        if bytes == 0 {
            return;
        }
        let n = self.shards.len() as u64;
        let capacity = *self.capacity.lock();
        let over: Vec<u64> = match capacity {
            0 => vec![0; self.shards.len()],
            c => (0..self.shards.len()).map(|i| self.shard(i).used.saturating_sub(c / n)).collect(),
        };
        // Each shard's excess first (what its own eviction would free), the
        // rest spread evenly.
        let rest = bytes.saturating_sub(over.iter().sum()).div_ceil(n);
        let mut chosen = Vec::new();
        for (idx, over) in over.into_iter().enumerate() {
            let mut guard = self.shard(idx);
            let s = &mut *guard;
            chosen.clear();
            s.order.select(&mut s.slots, over + rest, &mut chosen);
            out.extend(chosen.iter().map(|&i| Bytes::copy_from_slice(s.slots.key(i))));
        }
    }

    fn scan(&self, cursor: u64, f: &mut dyn FnMut(&Bytes, &Item) -> bool) -> u64 {
        self.walk(cursor, &mut |s, i| f(&Bytes::copy_from_slice(s.key(i)), &s.item(i)))
    }

    fn expired(&self, cursor: u64, now_ms: u64, budget: usize, out: &mut Vec<Bytes>) -> (u64, usize) {
        // Like `scan`, without making an item (or `Bytes` of a key) of the entries that stay.
        let (budget, mut seen) = (budget.max(1), 0);
        let next = self.walk(cursor, &mut |s, i| {
            seen += 1;
            let node = &s.nodes[i as usize];
            if node.is_expired(now_ms) {
                out.push(Bytes::copy_from_slice(node.key()));
            }
            seen < budget
        });
        (next, seen)
    }

    fn begin_capture(&self) -> Box<dyn Capture> {
        match self.cow.arm(self.shards.len()) {
            Some(state) => Box::new(ShardedCapture::new(self.shards.clone(), self.cow.clone(), state, Shard::items)),
            // A capture is already running: copy eagerly (callers hold off writes meanwhile).
            None => Box::new(Captured((0..self.shards.len()).flat_map(|i| self.shard(i).items()).collect())),
        }
    }

    fn random_key(&self, seed: u64) -> Option<Bytes> {
        let n = self.shards.len();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for probe in 0..n {
            let s = self.shard((x as usize + probe) % n);
            if s.slots.len() == 0 {
                continue;
            }
            for _ in 0..8 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % s.slots.nodes.len();
                if s.slots.is_live(i) {
                    return Some(Bytes::copy_from_slice(s.slots.nodes[i].key()));
                }
            }
            let first = (0..s.slots.nodes.len()).find(|&i| s.slots.is_live(i))?;
            return Some(Bytes::copy_from_slice(s.slots.nodes[first].key()));
        }
        None
    }
}

/// Shard count for a `shards` config value: 0 picks 16 × available cores.
pub fn shard_count(configured: usize) -> usize {
    if configured == 0 { 16 * std::thread::available_parallelism().map_or(1, |n| n.get()) } else { configured }
}

/// The config section every store-based policy has: `shards`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ShardsConfig {
    /// Number of shards; 0 picks 16 × available cores.
    shards: usize,
}

/// Builds a [`Sharded<O>`] policy from the `[section]` config (`shards`)
/// and the server's settings: the `build` of a store-based policy plugin.
pub fn build<O: Order>(
    config: &crate::Config,
    settings: &crate::PolicySettings,
    section: &str,
) -> Result<Arc<dyn Policy>, crate::PluginError> {
    let cfg: ShardsConfig = crate::plugin::section(config, section)?;
    Ok(Arc::new(Sharded::<O>::new(settings.capacity, shard_count(cfg.shards), settings.local_eviction)))
}
