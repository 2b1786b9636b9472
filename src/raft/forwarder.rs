//! Forwarding in batches: a follower sends the requests that need the
//! leader (see [`membership`](super::membership)) over one `Forward` RPC per
//! batch, not one per request.
//!
//! One task takes whatever is queued, up to [`MAX_BATCH`] requests, and
//! sends it; at most [`MAX_IN_FLIGHT`] batches are on the wire at once, so
//! under load the next batch fills while the previous ones run. The leader
//! runs a batch's requests concurrently, so its proposer puts their writes
//! into as few log entries as it would for its own clients.
//!
//! Per request: answered from the leader; or resent (to the new leader)
//! when the receiver was not the leader or lost its leadership before the
//! request's writes committed, when the leader could not be connected
//! (the connection, TCP or TLS, failed: nothing was sent), and — reads
//! only — after any transport failure; otherwise a write gets
//! "unavailable" (it may have been applied: not resent). All within
//! `raft.leader_wait_ms` of the batch being sent: a leader that does not
//! answer by then (paused, cut off) fails the batch's writes the same way.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::join_all;
use gerdu_api::{Command, PipelineError, Reply};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::RaftNode;
use super::wire::{self, ForwardRequest, ForwardResponse, pb};

/// Most requests in one `Forward` RPC.
pub const MAX_BATCH: usize = 512;
/// Most `Forward` RPCs of one node in flight.
pub const MAX_IN_FLIGHT: usize = 4;

/// A request waiting to be forwarded, and where its answer goes.
pub struct Forwarded {
    /// The request.
    pub request: ForwardRequest,
    /// Its replies, or why it failed.
    pub reply: oneshot::Sender<Result<Vec<Reply>, PipelineError>>,
}

/// Runs until the node is gone or every sender is dropped.
pub async fn run(node: Weak<RaftNode>, mut rx: mpsc::Receiver<Forwarded>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let Some(node) = node.upgrade() else { return };
        tokio::spawn(async move {
            let _permit = permit;
            node.send_batch(batch).await;
        });
    }
}

fn fail(batch: Vec<Forwarded>, e: &PipelineError) {
    for f in batch {
        let _ = f.reply.send(Err(e.clone()));
    }
}

impl RaftNode {
    /// Sends one batch to the leader, resending what may be resent.
    async fn send_batch(&self, mut pending: Vec<Forwarded>) {
        let deadline = Instant::now() + self.leader_wait;
        loop {
            let (leader, node) = match self.wait_leader(deadline).await {
                Ok(l) => l,
                Err(e) => return fail(pending, &e),
            };
            let mut again = Vec::new();
            if leader == self.id {
                // Elected meanwhile (the metrics say so; this node's own
                // leadership flag may lag them): run them here, keeping
                // those an election gives back again.
                let back = join_all(pending.into_iter().map(|f| async move {
                    match self.run_forwarded(f.request).await {
                        Ok(result) => {
                            let _ = f.reply.send(result);
                            None
                        }
                        Err(request) => Some(Forwarded { request, reply: f.reply }),
                    }
                }))
                .await;
                again.extend(back.into_iter().flatten());
            } else {
                let mut client = match self.network.client(&node.raft_addr) {
                    Ok(c) => c,
                    Err(m) => return fail(pending, &PipelineError::Internal(m)),
                };
                let requests: Vec<&ForwardRequest> = pending.iter().map(|f| &f.request).collect();
                // Bounded by the deadline: a leader that stopped answering
                // (paused, cut off) must not hold its followers' clients.
                let call = client.forward(pb::Blob { data: wire::encode(&requests) });
                let sent = match tokio::time::timeout_at(deadline.into(), call).await {
                    Ok(sent) => sent,
                    Err(_) => Err(tonic::Status::deadline_exceeded("no answer in time")),
                };
                match sent {
                    Ok(reply) => match wire::decode::<Vec<ForwardResponse>>(&reply.into_inner().data) {
                        Ok(answers) if answers.len() == pending.len() => {
                            for (f, answer) in pending.into_iter().zip(answers) {
                                match answer {
                                    ForwardResponse::Done(r) => {
                                        let _ = f.reply.send(r);
                                    }
                                    ForwardResponse::NotLeader => again.push(f),
                                }
                            }
                        }
                        Ok(_) => {
                            return fail(pending, &PipelineError::Internal("the leader answered a short batch".into()));
                        }
                        Err(m) => return fail(pending, &PipelineError::Internal(m)),
                    },
                    Err(status) => {
                        let unsent = super::network::never_sent(&status);
                        for f in pending {
                            if unsent || !f.request.commands.iter().any(Command::is_write) {
                                again.push(f);
                            } else {
                                let _ = f.reply.send(Err(PipelineError::Unavailable(format!(
                                    "the leader {} did not answer ({}); the write may or may not have been applied",
                                    node.name,
                                    super::network::describe(&status)
                                ))));
                            }
                        }
                    }
                }
            }
            if again.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                return fail(again, &PipelineError::Unavailable("the leader could not be reached in time".into()));
            }
            pending = again;
            // Let the membership metrics catch up with the new leader.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
