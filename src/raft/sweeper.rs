//! Active expiry: the leader's bounded background sweep, so expired items
//! that nobody reads again still free their memory (Redis' active expire
//! cycle, with the removal made a log fact).
//!
//! Every `expiry.sweep_ms` the leader examines `expiry.sweep_keys` items
//! from where the last round stopped ([`Policy::expired`], a cursor over the
//! store's slab, so every item is seen once per pass whatever its TTL) and
//! proposes the expired ones as one [`Command::Sweep`]. Replicas remove them
//! at the same log index, judging expiry against the entry's timestamp, so a
//! key written again since the sweep saw it stays. While more than a tenth
//! of what a round examined had expired, it goes on at once, up to a quarter
//! of the interval (Redis' 25% CPU bound), then waits for the next tick.
//!
//! Expired items stay invisible until then: every read hides them and every
//! write that meets one removes it.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use gerdu_api::{Clock, Command, Policy, Reply};

use super::RaftNode;
use crate::metrics::ServerMetrics;

/// How the sweep runs (`[expiry]`).
#[derive(Clone, Copy, Debug)]
pub struct Sweep {
    /// Time between sweeps; zero disables them.
    pub interval: Duration,
    /// Items examined per round.
    pub keys: usize,
}

/// Runs until the node is gone.
pub async fn run(
    node: Weak<RaftNode>,
    policy: Arc<dyn Policy>,
    clock: Arc<dyn Clock>,
    metrics: Arc<ServerMetrics>,
    cfg: Sweep,
) {
    if cfg.interval.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cursor = 0;
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if !node.is_leader() {
            continue;
        }
        let started = Instant::now();
        loop {
            let mut keys = Vec::new();
            let (next, seen) = policy.expired(cursor, clock.now_ms(), cfg.keys, &mut keys);
            cursor = next;
            if !keys.is_empty() {
                let found = keys.len();
                match node.propose(vec![Command::Sweep { keys }]).await {
                    Ok(replies) => {
                        if let Some(Reply::Count(n)) = replies.first() {
                            metrics.swept.inc_by(*n);
                        }
                    }
                    Err(e) => {
                        tracing::debug!("expiry sweep not proposed: {e}");
                        break;
                    }
                }
                if found * 10 > seen && started.elapsed() < cfg.interval / 4 {
                    continue;
                }
            }
            break;
        }
    }
}
