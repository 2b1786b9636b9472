//! Copy-on-write capture for sharded stores: point-in-time snapshots without
//! stalling writes for the whole copy.
//!
//! [`Policy::begin_capture`](crate::policy::Policy::begin_capture) must yield
//! the items exactly as of the moment it was called, while writes go on. A
//! sharded policy gets that cheaply with this module:
//!
//! 1. `begin_capture` (called while no write runs) arms a [`CowCoordinator`]
//!    with one empty slot per shard.
//! 2. Every mutation of shard *i*, under that shard's lock, first calls
//!    [`CowCoordinator::before_write`]: if a capture is armed and slot *i* is
//!    still empty, the shard's current items are copied into it. One atomic
//!    load when no capture is armed.
//! 3. [`ShardedCapture::finish`] visits every shard under its lock and copies
//!    the shards nobody wrote to, then disarms.
//!
//! Each slot is filled exactly once, before the first write after the start,
//! so the union of the slots is the state at the start. A write pays at most
//! one copy of its own shard (1/N of the store) per snapshot.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::policy::Capture;
use crate::reply::Item;

/// One shard's items as copied for a capture; `K` is the policy's own key
/// type (anything that reads as bytes), so copying needs no allocation per key.
pub type Items<K = Bytes> = Vec<(K, Item)>;

/// The per-shard copies of one capture.
pub struct CowState<K = Bytes> {
    slots: Box<[Mutex<Option<Items<K>>>]>,
}

impl<K> CowState<K> {
    fn fill(&self, shard: usize, copy: impl FnOnce() -> Items<K>) {
        let mut slot = self.slots[shard].lock();
        if slot.is_none() {
            *slot = Some(copy());
        }
    }
}

/// Arms and disarms captures; shared by a store and its captures.
pub struct CowCoordinator<K = Bytes> {
    armed: AtomicBool,
    state: Mutex<Option<Arc<CowState<K>>>>,
}

impl<K> Default for CowCoordinator<K> {
    fn default() -> Self {
        CowCoordinator { armed: AtomicBool::new(false), state: Mutex::new(None) }
    }
}

impl<K> CowCoordinator<K> {
    /// Call under shard `shard`'s lock before mutating it; `copy` returns the
    /// shard's current items.
    #[inline]
    pub fn before_write(&self, shard: usize, copy: impl FnOnce() -> Items<K>) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let state = self.state.lock().clone();
        if let Some(state) = state {
            state.fill(shard, copy);
        }
    }

    /// Arms a capture of `shards` shards; `None` if one is already armed.
    pub fn arm(&self, shards: usize) -> Option<Arc<CowState<K>>> {
        let mut current = self.state.lock();
        if current.is_some() {
            return None;
        }
        let state = Arc::new(CowState { slots: (0..shards).map(|_| Mutex::new(None)).collect() });
        *current = Some(state.clone());
        self.armed.store(true, Ordering::Release);
        Some(state)
    }

    fn disarm(&self, state: &Arc<CowState<K>>) {
        let mut current = self.state.lock();
        if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, state)) {
            *current = None;
            self.armed.store(false, Ordering::Release);
        }
    }
}

/// A capture over shards of type `S` whose items are keyed by `K`.
pub struct ShardedCapture<S: Send + 'static, K: Send + Sync + 'static = Bytes> {
    shards: Arc<[Mutex<S>]>,
    coordinator: Arc<CowCoordinator<K>>,
    state: Arc<CowState<K>>,
    copy: fn(&S) -> Items<K>,
}

impl<S: Send + 'static, K: Send + Sync + 'static> ShardedCapture<S, K> {
    /// A capture that `coordinator` has armed as `state`; `copy` copies one shard.
    pub fn new(
        shards: Arc<[Mutex<S>]>,
        coordinator: Arc<CowCoordinator<K>>,
        state: Arc<CowState<K>>,
        copy: fn(&S) -> Items<K>,
    ) -> Self {
        ShardedCapture { shards, coordinator, state, copy }
    }
}

impl<S: Send + 'static, K: AsRef<[u8]> + Send + Sync + 'static> Capture for ShardedCapture<S, K> {
    fn visit(self: Box<Self>, f: &mut dyn FnMut(&[u8], &Item)) {
        for (i, shard) in self.shards.iter().enumerate() {
            {
                let guard = shard.lock();
                self.state.fill(i, || (self.copy)(&guard));
            }
            // Leave an empty copy behind: the slot stays filled, so a write
            // to this shard before the capture is dropped copies nothing.
            let items = self.state.slots[i].lock().replace(Vec::new()).expect("filled");
            for (k, item) in &items {
                f(k.as_ref(), item);
            }
        }
    }
}

impl<S: Send + 'static, K: Send + Sync + 'static> Drop for ShardedCapture<S, K> {
    fn drop(&mut self) {
        self.coordinator.disarm(&self.state);
    }
}
