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
//! most one entry is uncommitted at once: while it commits, the next one
//! fills up. The state machine answers the entry's clients as it applies
//! it and wakes the proposer ([`Handoff`](super::handoff)), before
//! openraft's core has seen the result; openraft's own channel for the
//! entry is polled by the task itself (no task or boxed future per entry)
//! for a refusal (an entry lost to an election: its clients get their
//! commands back and send them to the new leader). So under load each entry carries the writes of
//! many clients (fewer log entries, fewer apply rounds, fewer snapshots per
//! write, one allocation for all their bytes), and with no load a lone write
//! is proposed at once. An entry costs about 22,000
//! instructions besides its writes' own, most of them openraft's loop
//! (benches/JOURNAL.md, "The cost of a log entry").
//! One rather than two: kvbench memcached SET `-P 16` against a single node,
//! four alternating runs, did 592k-664k SET/s with one against 530k-641k with
//! two, with a lower p99 (2.3-2.8 ms against 2.2-4.8 ms); without pipelining
//! and in a three-node cluster the two were level.
//!
//! An entry that does not commit within `raft.leader_wait_ms` (a leader cut
//! off from its quorum) has its clients answered "unavailable" and stays in
//! the log, its outcome collected later; the next entry is proposed after
//! it, so only then is more than one entry uncommitted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use gerdu_api::{Clock, Command, PipelineError};
use openraft::RaftTypeConfig;
use openraft::error::ClientWriteError;
use openraft::raft::responder::Responder;
use tokio::sync::mpsc;
use tokio::sync::oneshot::error::TryRecvError;

use super::handoff::Handoff;
pub use super::handoff::ReplyTx;
use super::types::{Batch, Raft, TypeConfig};
use crate::metrics::ServerMetrics;

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
    /// Whether entries are journaled (`-storage`): then each is encoded at once.
    pub journaled: bool,
    /// How long an entry's clients wait for it to commit (`raft.leader_wait_ms`).
    pub commit_wait: Duration,
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
    let Settings { max_batch, journaled, commit_wait, sole_voter } = settings;
    // The entry in flight (at most one), resolved here: the handoff and
    // openraft's channel are polled in place, with no task or boxed future
    // per entry.
    let mut in_flight: Option<InFlight> = None;
    // Applied entries' channels openraft has not answered yet (it answers
    // on its next turn): kept until it has, since it warns of an answer it
    // cannot deliver.
    let mut unheard: VecDeque<Receiver> = VecDeque::new();
    // Kept from entry to entry: the next entry's clients' commands, and
    // whom to answer (emptied when they are answered).
    let mut parts: Vec<Vec<Command>> = Vec::new();
    let mut spare: Vec<(usize, ReplyTx)> = Vec::new();
    // The watch on an entry that does not commit (a leader cut off from its
    // quorum): it ticks four times per `commit_wait` while an entry is in
    // flight, and an entry still in flight at its fifth tick has waited
    // `commit_wait` at least. Entries are counted, not timed: nothing per
    // entry. (A wait of 0 ticks every millisecond.)
    let mut watch = tokio::time::interval((commit_wait / 4).max(Duration::from_millis(1)));
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut proposed, mut watched, mut ticks) = (0u64, 0u64, 0u32);
    let mut open = true;
    while open || in_flight.is_some() {
        let idle = in_flight.is_none();
        // `None`: applied here, its clients answered; `Some`: openraft's answer.
        let settled = poll_fn(|cx| match in_flight.as_mut() {
            None => Poll::Pending,
            Some(f) => match f.handoff.poll_applied(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Pin::new(&mut f.receiver).poll(cx).map(Some),
            },
        });
        tokio::select! {
            // In this order, without select's random start (a thread-local
            // generator, each turn): the in-flight entry or new writes (only
            // one of the two is enabled), then the watch.
            biased;
            answer = settled => {
                let Some(InFlight { handoff, batch, receiver }) = in_flight.take() else { continue };
                match answer {
                    // The proposer is not woken for openraft's answer: it
                    // is only collected (below, after the next entry).
                    None => {
                        let mut receiver = receiver;
                        let quiet = &mut Context::from_waker(Waker::noop());
                        if Pin::new(&mut receiver).poll(quiet).is_pending() {
                            unheard.push_back(receiver);
                        }
                    }
                    // Applied without the handoff reaching the state machine
                    // (or after it did: then this does nothing).
                    Some(Ok(Ok(resp))) => handoff.applied(resp.data.0),
                    // This node lost its leadership before the entry
                    // committed, and it never will be: its clients take
                    // their commands back to the leader (see `handoff`).
                    Some(Ok(Err(ClientWriteError::ForwardToLeader(_)))) => match batch.commands() {
                        Ok(commands) => handoff.not_applied(commands),
                        Err(e) => handoff.fail(PipelineError::Internal(e)),
                    },
                    Some(Ok(Err(e))) => handoff.fail(PipelineError::Internal(e.to_string())),
                    Some(Err(_)) => handoff.fail(PipelineError::ShuttingDown),
                }
                spare = handoff.take_list();
                while unheard.front_mut().is_some_and(|r| !matches!(r.try_recv(), Err(TryRecvError::Empty))) {
                    unheard.pop_front();
                }
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
                let handoff = Handoff::new(waiters);
                let batch = batch.with_handoff(handoff.clone());
                // Submit in order; the outcome is awaited above.
                match raft.client_write_ff(batch.clone()).await {
                    Ok(receiver) => {
                        in_flight = Some(InFlight { handoff, batch, receiver });
                        proposed += 1;
                    }
                    Err(fatal) => {
                        handoff.fail(PipelineError::Internal(fatal.to_string()));
                        spare = handoff.take_list();
                    }
                }
            }
            _ = watch.tick(), if !idle => {
                if watched == proposed {
                    ticks += 1;
                } else {
                    (watched, ticks) = (proposed, 1);
                }
                if ticks > 4 && let Some(InFlight { handoff, receiver, .. }) = in_flight.take() {
                    // Its clients are answered; the entry stays in the log
                    // (it may still commit once the quorum is back, or be
                    // replaced by a new leader's log), its outcome collected
                    // like an applied one's, and the next entry is proposed
                    // after it.
                    handoff.fail(PipelineError::Unavailable(format!(
                        "the write was not committed within {} ms (no quorum reachable); it may or may not be applied later",
                        commit_wait.as_millis()
                    )));
                    spare = handoff.take_list();
                    unheard.push_back(receiver);
                }
            }
        }
    }
    for r in unheard {
        let _ = r.await;
    }
}

/// openraft's channel for an entry's outcome.
type Receiver = <<TypeConfig as RaftTypeConfig>::Responder as Responder<TypeConfig>>::Receiver;

/// The entry proposed and not yet applied: its clients, openraft's channel,
/// and the batch (its commands given back to its clients if an election lost it).
struct InFlight {
    handoff: Arc<Handoff>,
    batch: Batch,
    receiver: Receiver,
}
