//! Evictions as log facts (DESIGN §3): the store never evicts by itself
//! (`local_eviction = false`); when applying leaves it over capacity, the
//! leader's evictor asks its policy for victims ([`Policy::victims`]) and
//! proposes their removal as one `Evict` command. Every replica applies the
//! same removal at the same log index, so replicas hold the same items
//! whatever reads each of them served (reads change the eviction order).
//!
//! The store can exceed its capacity by what the entries applied since the
//! last eviction added — a batch or two — before the removal commits. Only
//! one eviction is in flight at a time. A key written after it was chosen
//! and before the removal applies is removed too (it was the least recently
//! used one a moment before).

use std::sync::{Arc, Weak};
use std::time::Duration;

use gerdu_api::{Command, Policy};
use tokio::sync::Notify;

use super::RaftNode;

/// Runs until the node is gone.
pub async fn run(node: Weak<RaftNode>, policy: Arc<dyn Policy>, over_capacity: Arc<Notify>) {
    loop {
        // Also look now and then: leadership may have moved here while over.
        let _ = tokio::time::timeout(Duration::from_millis(250), over_capacity.notified()).await;
        let Some(node) = node.upgrade() else { return };
        if !node.is_leader() {
            continue;
        }
        loop {
            let (capacity, used) = (policy.capacity(), policy.used_bytes());
            if capacity == 0 || used <= capacity {
                break;
            }
            let mut keys = Vec::new();
            policy.victims(used - capacity, &mut keys);
            if keys.is_empty() {
                break;
            }
            if let Err(e) = node.propose(vec![Command::Evict { keys }]).await {
                tracing::debug!("eviction not proposed: {e}");
                break;
            }
        }
    }
}
