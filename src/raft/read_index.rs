//! Batched read index for linearizable reads.
//!
//! A linearizable read must see every write acknowledged before it started.
//! openraft's `ensure_linearizable` confirms leadership with a quorum and
//! waits until the state machine has applied up to the commit index; one such
//! round is enough for every read that *arrived before the round started*.
//! The task below runs one round at a time and serves all reads queued while
//! the previous round was in flight with the next round, so the cost is one
//! round per batch of reads, not per read. A round that finds this node no
//! longer leading, or cannot confirm that it still does (no quorum
//! answered: a leader waking from a pause is told of the newer term only
//! by the next message it gets), answers [`Blocked::NotLeader`]: its reads
//! belong on the leader, whichever node that turns out to be, and reads
//! are always safe to send there (until `raft.leader_wait_ms` runs out).
//!
//! A follower's linearizable reads use the leader's read index too
//! ([`follower`]): one `READ_INDEX` call per batch of reads asks the leader
//! for its read index (the leader serves it from the round above); the
//! reads are then served from the follower's own store once it has applied
//! that index, as etcd's followers do. The leader does not serve them or
//! ship their values.

use gerdu_api::PipelineError;
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::types::Raft;

/// A read waiting for a read index: the log index reads may be served at
/// once it is applied.
pub type Waiter = oneshot::Sender<Result<u64, Blocked>>;

/// Why reads may not be served here. (Serializable: a leader answers a
/// follower's read index with it.)
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Blocked {
    /// This node does not lead (any more), or could not confirm that it
    /// does: the reads belong on the leader.
    NotLeader,
    /// Anything else (no quorum in time, shutting down).
    Failed(PipelineError),
}

impl Blocked {
    /// The error a client gets where the reads are not sent on.
    pub fn into_error(self) -> PipelineError {
        match self {
            Blocked::NotLeader => PipelineError::Unavailable("this node is not the leader".into()),
            Blocked::Failed(e) => e,
        }
    }
}

impl From<PipelineError> for Blocked {
    fn from(e: PipelineError) -> Self {
        Blocked::Failed(e)
    }
}

/// Runs read-index rounds until every sender is dropped.
pub async fn run(raft: Raft, rx: mpsc::Receiver<Waiter>) {
    in_rounds(rx, || {
        let raft = raft.clone();
        async move {
            Some(match raft.ensure_linearizable().await {
                Ok(read) => Ok(read.map_or(0, |l| l.index)),
                Err(RaftError::APIError(
                    CheckIsLeaderError::ForwardToLeader(_) | CheckIsLeaderError::QuorumNotEnough(_),
                )) => Err(Blocked::NotLeader),
                Err(e) => Err(Blocked::Failed(PipelineError::Unavailable(format!(
                    "cannot confirm leadership for a linearizable read: {e}"
                )))),
            })
        }
    })
    .await
}

/// Answers waiters in rounds, one round at a time: every waiter queued
/// while a round ran gets the next round's result. Ends when every sender
/// is dropped, or when a round gives `None`.
async fn in_rounds<T: Clone, F: std::future::Future<Output = Option<T>>>(
    mut rx: mpsc::Receiver<oneshot::Sender<T>>,
    mut round: impl FnMut() -> F,
) {
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        waiters.push(first);
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let Some(result) = round().await else { return };
        for w in waiters.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}

pub mod follower {
    //! A follower's batched read index: see the [module docs](super).

    use std::sync::Weak;
    use std::time::{Duration, Instant};

    use gerdu_api::{PipelineError, ReadConsistency};
    use tokio::sync::{mpsc, oneshot};

    use super::Blocked;
    use crate::raft::RaftNode;

    /// A follower's read waiting for the leader's read index to be applied here.
    pub type Waiter = oneshot::Sender<Result<(), Blocked>>;

    /// Runs rounds until the node is gone or every sender is dropped: one
    /// round at a time, for every read queued while the one before ran.
    pub async fn run(node: Weak<RaftNode>, rx: mpsc::Receiver<Waiter>) {
        super::in_rounds(rx, || {
            let node = node.clone();
            async move { Some(node.upgrade()?.leaders_read_index_applied().await) }
        })
        .await
    }

    impl RaftNode {
        /// Asks the leader for its read index and waits until this node
        /// has applied it; a leader that changes meanwhile is asked again,
        /// all within `raft.leader_wait_ms`.
        async fn leaders_read_index_applied(&self) -> Result<(), Blocked> {
            let deadline = Instant::now() + self.leader_wait;
            loop {
                let (leader, node) = self.wait_leader(deadline).await?;
                if leader == self.id {
                    return self.read_barrier(ReadConsistency::Linearizable).await;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                match self.network.read_index(&node.raft_addr, left).await {
                    Ok(Ok(index)) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        return match self
                            .raft
                            .wait(Some(left))
                            .applied_index_at_least(Some(index), "the leader's read index is applied here")
                            .await
                        {
                            Ok(_) => Ok(()),
                            Err(e) => Err(PipelineError::Unavailable(format!(
                                "the read index was not applied here in time: {e}"
                            ))
                            .into()),
                        };
                    }
                    Ok(Err(Blocked::Failed(e))) => return Err(Blocked::Failed(e)),
                    // Not the leader any more, or not reached: ask the next one.
                    Ok(Err(Blocked::NotLeader)) | Err(_) => {}
                }
                if Instant::now() >= deadline {
                    return Err(PipelineError::Unavailable("the leader could not be reached in time".into()).into());
                }
                // Let the membership metrics catch up with the new leader.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
