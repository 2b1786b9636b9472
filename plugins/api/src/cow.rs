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

type Items = Vec<(Bytes, Item)>;

/// The per-shard copies of one capture.
pub struct CowState {
    slots: Box<[Mutex<Option<Items>>]>,
}

impl CowState {
    fn fill(&self, shard: usize, copy: impl FnOnce() -> Items) {
        let mut slot = self.slots[shard].lock();
        if slot.is_none() {
            *slot = Some(copy());
        }
    }
}

/// Arms and disarms captures; shared by a store and its captures.
#[derive(Default)]
pub struct CowCoordinator {
    armed: AtomicBool,
    state: Mutex<Option<Arc<CowState>>>,
}

impl CowCoordinator {
    /// Call under shard `shard`'s lock before mutating it; `copy` returns the
    /// shard's current items.
    #[inline]
    pub fn before_write(&self, shard: usize, copy: impl FnOnce() -> Items) {
        if !self.armed.load(Ordering::Acquire) {
            return;
        }
        let state = self.state.lock().clone();
        if let Some(state) = state {
            state.fill(shard, copy);
        }
    }

    /// Arms a capture of `shards` shards; `None` if one is already armed.
    pub fn arm(&self, shards: usize) -> Option<Arc<CowState>> {
        let mut current = self.state.lock();
        if current.is_some() {
            return None;
        }
        let state = Arc::new(CowState { slots: (0..shards).map(|_| Mutex::new(None)).collect() });
        *current = Some(state.clone());
        self.armed.store(true, Ordering::Release);
        Some(state)
    }

    fn disarm(&self, state: &Arc<CowState>) {
        let mut current = self.state.lock();
        if current.as_ref().is_some_and(|s| Arc::ptr_eq(s, state)) {
            *current = None;
            self.armed.store(false, Ordering::Release);
        }
    }
}

/// A capture over shards of type `S`.
pub struct ShardedCapture<S: Send + 'static> {
    shards: Arc<[Mutex<S>]>,
    coordinator: Arc<CowCoordinator>,
    state: Arc<CowState>,
    copy: fn(&S) -> Items,
}

impl<S: Send + 'static> ShardedCapture<S> {
    /// A capture that `coordinator` has armed as `state`; `copy` copies one shard.
    pub fn new(
        shards: Arc<[Mutex<S>]>,
        coordinator: Arc<CowCoordinator>,
        state: Arc<CowState>,
        copy: fn(&S) -> Items,
    ) -> Self {
        ShardedCapture { shards, coordinator, state, copy }
    }
}

impl<S: Send + 'static> Capture for ShardedCapture<S> {
    fn finish(self: Box<Self>) -> Items {
        let mut out = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            {
                let guard = shard.lock();
                self.state.fill(i, || (self.copy)(&guard));
            }
            out.append(self.state.slots[i].lock().as_mut().expect("filled"));
        }
        out
    }
}

impl<S: Send + 'static> Drop for ShardedCapture<S> {
    fn drop(&mut self) {
        self.coordinator.disarm(&self.state);
    }
}
