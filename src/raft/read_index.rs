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

use gerdu_api::PipelineError;
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::types::Raft;

/// A read waiting for a read index.
pub type Waiter = oneshot::Sender<Result<(), Blocked>>;

/// Why reads may not be served here.
#[derive(Clone, Debug)]
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
pub async fn run(raft: Raft, mut rx: mpsc::Receiver<Waiter>) {
    let mut waiters = Vec::new();
    while let Some(first) = rx.recv().await {
        waiters.push(first);
        while let Ok(w) = rx.try_recv() {
            waiters.push(w);
        }
        let result = match raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(
                CheckIsLeaderError::ForwardToLeader(_) | CheckIsLeaderError::QuorumNotEnough(_),
            )) => Err(Blocked::NotLeader),
            Err(e) => Err(Blocked::Failed(PipelineError::Unavailable(format!(
                "cannot confirm leadership for a linearizable read: {e}"
            )))),
        };
        for w in waiters.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}
