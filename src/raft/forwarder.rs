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
//! request's writes committed (a request of writes and reads it did part
//! of before it found itself deposed keeps that part's replies, and only
//! the rest is resent), when the leader could not be connected
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
    /// The request: what is left of it to do.
    pub request: ForwardRequest,
    /// The replies of its first commands, done by a leader that then found
    /// itself deposed (see [`ForwardResponse::Moved`]); usually none.
    pub done: Vec<Reply>,
    /// Its replies, or why it failed.
    pub reply: oneshot::Sender<Result<Vec<Reply>, PipelineError>>,
}

impl Forwarded {
    /// Answers the client: the replies of the commands done before, then
    /// `result`'s.
    fn answer(self, result: Result<Vec<Reply>, PipelineError>) {
        let result = match result {
            Ok(replies) if !self.done.is_empty() => {
                let mut all = self.done;
                all.extend(replies);
                Ok(all)
            }
            other => other,
        };
        let _ = self.reply.send(result);
    }

    /// A deposed leader did the first `done.len()` commands, answered
    /// `done`: keeps their replies and the rest to send on. `None` when it
    /// answered more than the request has (it is answered an error).
    fn moved(mut self, done: Vec<Reply>) -> Option<Self> {
        if done.len() > self.request.commands.len() {
            self.answer(Err(PipelineError::Internal("the leader answered more replies than commands".into())));
            return None;
        }
        self.request.commands.drain(..done.len());
        self.done.extend(done);
        Some(self)
    }
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
        f.answer(Err(e.clone()));
    }
}

/// Answers each request as its leader did, keeping in `again` those to
/// send on (the leader found itself deposed before it was done).
fn settle(pending: Vec<Forwarded>, answers: Vec<ForwardResponse>, again: &mut Vec<Forwarded>) {
    for (f, answer) in pending.into_iter().zip(answers) {
        match answer {
            ForwardResponse::Done(r) => f.answer(r),
            ForwardResponse::Moved(done) => again.extend(f.moved(done)),
        }
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
                // what an election gives back again.
                // (A rare path: the requests are copied, as for the wire.)
                let answers = join_all(pending.iter().map(|f| async {
                    ForwardResponse::from(self.run_forwarded(f.request.consistency, f.request.commands.clone()).await)
                }))
                .await;
                settle(pending, answers, &mut again);
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
                        Ok(answers) if answers.len() == pending.len() => settle(pending, answers, &mut again),
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
                                f.answer(Err(PipelineError::Unavailable(format!(
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

#[cfg(test)]
mod tests {
    use gerdu_api::{Command, PipelineError, ReadConsistency, Reply};
    use tokio::sync::oneshot;

    use super::Forwarded;
    use crate::raft::wire::ForwardRequest;

    fn get(key: &'static str) -> Command {
        Command::Get { keys: vec![bytes::Bytes::from_static(key.as_bytes())] }
    }

    fn forwarded(commands: Vec<Command>) -> (Forwarded, oneshot::Receiver<Result<Vec<Reply>, PipelineError>>) {
        let (reply, rx) = oneshot::channel();
        let request = ForwardRequest { consistency: ReadConsistency::Linearizable, commands };
        (Forwarded { request, done: Vec::new(), reply }, rx)
    }

    /// A request a deposed leader did part of keeps that part's replies,
    /// sends on only the rest, and its client gets every reply in order.
    #[test]
    fn a_request_done_in_part_keeps_its_replies_and_sends_the_rest() {
        let (f, rx) = forwarded(vec![get("a"), get("b"), get("c")]);
        let f = f.moved(vec![Reply::Count(1)]).expect("one reply of three commands");
        assert_eq!(f.request.commands, vec![get("b"), get("c")]);
        let f = f.moved(Vec::new()).expect("none of two");
        f.answer(Ok(vec![Reply::Count(2), Reply::Count(3)]));
        let all = rx.blocking_recv().unwrap().unwrap();
        assert_eq!(all, vec![Reply::Count(1), Reply::Count(2), Reply::Count(3)]);
    }

    #[test]
    fn more_replies_than_commands_is_an_error_not_a_panic() {
        let (f, rx) = forwarded(vec![get("a")]);
        assert!(f.moved(vec![Reply::Ok, Reply::Ok]).is_none());
        assert!(matches!(rx.blocking_recv().unwrap(), Err(PipelineError::Internal(_))));
    }
}
