//! Batched read index for linearizable reads.
//!
//! A linearizable read must see every write acknowledged before it started.
//! openraft's `ensure_linearizable` confirms leadership with a quorum and
//! waits until the state machine has applied up to the commit index; one such
//! round is enough for every read that *arrived before the round started*.
//! The task below runs one round at a time and serves all reads queued while
//! the previous round was in flight with the next round, so the cost is one
//! round per batch of reads, not per read.

use gerdu_api::PipelineError;
use tokio::sync::{mpsc, oneshot};

use super::types::Raft;

/// A read waiting for a read index.
pub type Waiter = oneshot::Sender<Result<(), PipelineError>>;

/// Runs read-index rounds until every sender is dropped.
pub async fn run(raft: Raft, mut rx: mpsc::Receiver<Waiter>) {
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        waiters.push(first);
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let result =
            raft.ensure_linearizable().await.map(|_| ()).map_err(|e| {
                PipelineError::Unavailable(format!("cannot confirm leadership for a linearizable read: {e}"))
            });
        for w in waiters.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}
