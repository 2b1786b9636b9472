//! Group commit: the writes of all connections become few log entries.
//!
//! Every write request (a batch of commands from one client) is sent to one
//! proposer task. The task takes whatever is queued — up to `raft.max_batch`
//! commands — flattens it into one [`Batch`] stamped with the clock and
//! encodes it, the entry then keeping the encoding instead of the commands
//! (whose small keys and values were slices of the clients' network reads:
//! [`Batch::packed`]; a sole voter without storage, which needs no encoding,
//! copies them into one buffer instead: [`Batch::gathered`]), hands it to openraft without
//! waiting for the commit (`client_write_ff`), and goes back for more. At
//! most one entry is uncommitted at once (its reply channel is polled by
//! the task itself: no task or boxed future per entry): while it commits,
//! the next one fills up, so under load each entry carries the writes of
//! many clients (fewer log entries, fewer apply rounds, fewer snapshots per
//! write, one allocation for all their bytes), and with no load a lone write
//! is proposed at once. An entry costs about 22,000
//! instructions besides its writes' own, most of them openraft's loop
//! (benches/JOURNAL.md, "The cost of a log entry").
//! One rather than two: kvbench memcached SET `-P 16` against a single node,
//! four alternating runs, did 592k-664k SET/s with one against 530k-641k with
//! two, with a lower p99 (2.3-2.8 ms against 2.2-4.8 ms); without pipelining
//! and in a three-node cluster the two were level.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gerdu_api::{Clock, Command, PipelineError, Reply};
use openraft::RaftTypeConfig;
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::responder::Responder;
use tokio::sync::{mpsc, oneshot};

use super::types::{Batch, NodeId, Raft, TypeConfig};
use crate::metrics::ServerMetrics;

/// Where a proposal's replies go.
pub type ReplyTx = oneshot::Sender<Result<Vec<Reply>, PipelineError>>;

/// A client's writes and where to send their replies.
pub struct Proposal {
    /// The writes.
    pub commands: Vec<Command>,
    /// Replies, aligned with `commands`.
    pub reply: ReplyTx,
}

/// What the proposer is told at start.
pub struct Settings {
    /// Most commands in one entry (`raft.max_batch`).
    pub max_batch: usize,
    /// How long a write that met an election waits for a leader.
    pub leader_wait: Duration,
    /// Whether entries are journaled (`-storage`): then each is encoded at once.
    pub journaled: bool,
    /// Whether this node is the only voter (kept up to date by the raft
    /// node): then, without a journal, nothing needs an entry's encoding.
    pub sole_voter: Arc<AtomicBool>,
}

/// Runs the proposer until every sender is dropped.
pub async fn run(
    raft: Raft,
    mut rx: mpsc::UnboundedReceiver<Proposal>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    metrics: Arc<ServerMetrics>,
) {
    let Settings { max_batch, leader_wait, journaled, sole_voter } = settings;
    // The entry in flight (at most one), resolved here: its reply channel
    // is polled in place, with no task or boxed future per entry.
    let mut in_flight: Option<InFlight> = None;
    // Kept from entry to entry: the next entry's clients' commands, and
    // whom to answer (emptied when they are answered).
    let mut parts: Vec<Vec<Command>> = Vec::new();
    let mut spare: Vec<(usize, ReplyTx)> = Vec::new();
    let mut open = true;
    while open || in_flight.is_some() {
        let idle = in_flight.is_none();
        let committed = async {
            match in_flight.as_mut() {
                Some(f) => (&mut f.receiver).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = committed => {
                let Some(InFlight { mut waiters, batch, .. }) = in_flight.take() else { continue };
                let result = match result {
                    Ok(Ok(resp)) => Ok(resp.data.0),
                    // Rare; nothing else is proposed meanwhile, so writes keep their order.
                    Ok(Err(e)) => retry_after_election(&raft, e, batch, leader_wait).await,
                    Err(_) => Err(PipelineError::ShuttingDown),
                };
                deliver(result, &mut waiters);
                spare = waiters;
            }
            first = rx.recv(), if open && idle => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut waiters = std::mem::take(&mut spare);
                let mut count = 0;
                let mut next = Some(first);
                while let Some(p) = next.take() {
                    count += p.commands.len();
                    waiters.push((p.commands.len(), p.reply));
                    parts.push(p.commands);
                    if count < max_batch {
                        next = rx.try_recv().ok();
                    }
                }
                metrics.batch_commands.observe(count as f64);
                // Encoded now, straight from the clients' commands, when
                // followers or the journal will need it; a sole voter
                // without storage keeps the commands, copying only the
                // small fields.
                let batch = if journaled || !sole_voter.load(Ordering::Acquire) {
                    Batch::packed(clock.now_ms(), &mut parts)
                } else {
                    Batch::gathered(clock.now_ms(), &mut parts)
                };
                // Submit in order; the commit is awaited above.
                match raft.client_write_ff(batch.clone()).await {
                    Ok(receiver) => in_flight = Some(InFlight { receiver, waiters, batch }),
                    Err(fatal) => {
                        deliver(Err(PipelineError::Internal(fatal.to_string())), &mut waiters);
                        spare = waiters;
                    }
                }
            }
        }
    }
}

/// The entry proposed and not yet applied: where openraft answers, whom to
/// answer, and the batch (proposed again if an election lost it).
struct InFlight {
    receiver: <<TypeConfig as RaftTypeConfig>::Responder as Responder<TypeConfig>>::Receiver,
    waiters: Vec<(usize, ReplyTx)>,
    batch: Batch,
}

/// A write that met an election: wait (bounded) for a leader and, if it is
/// this node, propose again.
async fn retry_after_election(
    raft: &Raft,
    err: ClientWriteError<NodeId, super::types::Node>,
    batch: Batch,
    leader_wait: Duration,
) -> Result<Vec<Reply>, PipelineError> {
    let ClientWriteError::ForwardToLeader(fwd) = err else {
        return Err(PipelineError::Internal(err.to_string()));
    };
    if fwd.leader_id.is_some() {
        // Leadership moved while the entry was in flight: the new leader may
        // still commit it, so it cannot be proposed again from here.
        let leader = fwd.leader_node.map_or_else(|| "another node".to_string(), |n| n.name);
        return Err(PipelineError::Unavailable(format!(
            "leadership moved to {leader} during the write; it may or may not have been applied"
        )));
    }
    let me = raft.metrics().borrow().id;
    let waited = raft.wait(Some(leader_wait)).metrics(|m| m.current_leader.is_some(), "a leader is elected").await;
    if waited.is_err() || raft.metrics().borrow().current_leader != Some(me) {
        return Err(PipelineError::Unavailable("no leader elected in time".into()));
    }
    match raft.client_write(batch).await {
        Ok(resp) => Ok(resp.data.0),
        Err(RaftError::APIError(e)) => Err(PipelineError::Unavailable(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(PipelineError::Internal(e.to_string())),
    }
}

fn deliver(result: Result<Vec<Reply>, PipelineError>, waiters: &mut Vec<(usize, ReplyTx)>) {
    match result {
        Ok(replies) => {
            let mut it = replies.into_iter();
            for (n, tx) in waiters.drain(..) {
                let _ = tx.send(Ok(it.by_ref().take(n).collect()));
            }
        }
        Err(e) => {
            for (_, tx) in waiters.drain(..) {
                let _ = tx.send(Err(e.clone()));
            }
        }
    }
}
