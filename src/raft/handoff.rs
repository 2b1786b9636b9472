//! Who answers a write: the state machine, the moment it applies the entry.
//!
//! A log entry the proposer makes carries, in memory only, a [`Handoff`]:
//! the clients whose writes it holds and where their replies go. Clones of
//! the entry (the log's, each follower stream's) share it; its encoding
//! (the peer wire, the journal) leaves it out, so a follower's copy or one
//! read back from disk has none. When this node's state machine applies an
//! entry that has one, it answers those clients there and then, and tells
//! the proposer the entry is done. This is how etcd's server answers a
//! proposal (its apply loop triggers the request's waiter).
//!
//! openraft would otherwise answer through its responder, which it calls
//! only after the state machine's result has gone back to its core task,
//! on that task's next turn: the clients' replies waited for that turn and
//! then for the proposer's, and the next entry could start only then. Now
//! the clients are answered and the proposer proposes the next entry
//! before the core's turn, so entries start sooner and carry more writes
//! (benches/JOURNAL.md, "The state machine answers the clients"). When a
//! next entry is already waiting, the core also takes it in the same turn
//! as the applied entry's result; under load without pipelining that is
//! rare (callgrind counts two turns per entry either way).
//!
//! openraft's responder still answers every proposal (its membership calls
//! need its own kind), and the proposer still listens to it, for what the
//! state machine cannot report: an entry refused, or truncated from this
//! node's log by a new leader, or openraft stopping. Then the clients are
//! still waiting, and the proposer answers them: a refused or truncated
//! entry was not applied and never will be (openraft answers
//! `ForwardToLeader` only then; an entry a new leader holds is applied here
//! as it commits), so each client gets its commands back
//! ([`Refusal::NotApplied`]) to run on the leader. A handoff answers its
//! clients once: whichever comes second finds them answered.

use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use gerdu_api::{Command, PipelineError, Reply};
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Where one client's replies go.
pub type ReplyTx = oneshot::Sender<Result<Vec<Reply>, Refusal>>;

/// Why a proposal got no replies.
#[derive(Debug)]
pub enum Refusal {
    /// The request failed.
    Failed(PipelineError),
    /// This node lost its leadership before the entry committed, and the
    /// entry never will be (refused, or truncated by the new leader): the
    /// client's commands, untouched, to be run on the leader instead.
    NotApplied(Vec<Command>),
}

impl Refusal {
    /// The error a client gets where the commands are not sent on.
    pub fn into_error(self) -> PipelineError {
        match self {
            Refusal::Failed(e) => e,
            Refusal::NotApplied(_) => {
                PipelineError::Unavailable("leadership moved before the write was committed; it was not applied".into())
            }
        }
    }
}

impl From<PipelineError> for Refusal {
    fn from(e: PipelineError) -> Self {
        Refusal::Failed(e)
    }
}

/// An entry's clients, shared by the proposer and the entry.
pub struct Handoff(Mutex<State>);

struct State {
    /// Each client's number of replies and its channel, in the entry's
    /// order; empty once they are answered.
    waiters: Vec<(usize, ReplyTx)>,
    /// Whether the state machine answered them.
    applied: bool,
    /// The proposer, waiting for that.
    waker: Option<Waker>,
}

impl std::fmt::Debug for Handoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.lock();
        f.debug_struct("Handoff").field("clients", &s.waiters.len()).field("applied", &s.applied).finish()
    }
}

impl Handoff {
    /// A handoff for these clients (`waiters`: each one's number of
    /// commands and its channel, in the entry's order).
    pub fn new(waiters: Vec<(usize, ReplyTx)>) -> Arc<Self> {
        Arc::new(Handoff(Mutex::new(State { waiters, applied: false, waker: None })))
    }

    /// The entry was applied: answers its clients with `replies` (aligned
    /// with the entry's commands) and wakes the proposer. Does nothing if
    /// they were answered already.
    pub fn applied(&self, replies: Vec<Reply>) {
        let mut s = self.0.lock();
        if s.waiters.is_empty() {
            return;
        }
        let mut it = replies.into_iter();
        for (n, tx) in s.waiters.drain(..) {
            let _ = tx.send(Ok(it.by_ref().take(n).collect()));
        }
        s.applied = true;
        if let Some(w) = s.waker.take() {
            w.wake();
        }
    }

    /// Ready once [`Self::applied`] answered the clients (the proposer;
    /// one waiter at a time).
    pub fn poll_applied(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.0.lock();
        if s.applied {
            return Poll::Ready(());
        }
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Answers the clients still waiting with `err` (an entry that was
    /// refused and is not proposed again).
    pub fn fail(&self, err: PipelineError) {
        for (_, tx) in self.0.lock().waiters.drain(..) {
            let _ = tx.send(Err(Refusal::Failed(err.clone())));
        }
    }

    /// The entry will never be applied (see the module docs): gives each
    /// client still waiting its own commands back (`commands`: the entry's,
    /// in order).
    pub fn not_applied(&self, commands: Vec<Command>) {
        let mut it = commands.into_iter();
        for (n, tx) in self.0.lock().waiters.drain(..) {
            let _ = tx.send(Err(Refusal::NotApplied(it.by_ref().take(n).collect())));
        }
    }

    /// Gives back the (emptied) client list, for the next entry to reuse.
    pub fn take_list(&self) -> Vec<(usize, ReplyTx)> {
        let mut s = self.0.lock();
        let mut list = std::mem::take(&mut s.waiters);
        // Answered by now; if not (a bug), they hear that the node stopped.
        for (_, tx) in list.drain(..) {
            let _ = tx.send(Err(Refusal::Failed(PipelineError::ShuttingDown)));
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    type Rx = oneshot::Receiver<Result<Vec<Reply>, Refusal>>;

    fn clients(counts: &[usize]) -> (Vec<(usize, ReplyTx)>, Vec<Rx>) {
        counts
            .iter()
            .map(|&n| {
                let (tx, rx) = oneshot::channel();
                ((n, tx), rx)
            })
            .unzip()
    }

    #[tokio::test]
    async fn applying_answers_each_client_its_share_then_wakes_the_proposer() {
        let (waiters, mut rxs) = clients(&[2, 1]);
        let h = Handoff::new(waiters);
        let proposer = {
            let h = h.clone();
            tokio::spawn(async move { poll_fn(|cx| h.poll_applied(cx)).await })
        };
        tokio::task::yield_now().await;
        assert!(!proposer.is_finished());
        h.applied(vec![Reply::Count(1), Reply::Count(2), Reply::Count(3)]);
        proposer.await.unwrap();
        assert_eq!(rxs.remove(0).await.unwrap().unwrap(), vec![Reply::Count(1), Reply::Count(2)]);
        assert_eq!(rxs.remove(0).await.unwrap().unwrap(), vec![Reply::Count(3)]);
        assert!(h.take_list().is_empty());
    }

    #[tokio::test]
    async fn clients_are_answered_once() {
        let (waiters, mut rxs) = clients(&[1]);
        let h = Handoff::new(waiters);
        h.applied(vec![Reply::Count(7)]);
        // openraft's own answer, after the state machine's, changes nothing.
        h.applied(vec![]);
        h.fail(PipelineError::ShuttingDown);
        assert_eq!(rxs.remove(0).await.unwrap().unwrap(), vec![Reply::Count(7)]);

        let (waiters, mut rxs) = clients(&[1, 1]);
        let h = Handoff::new(waiters);
        h.fail(PipelineError::Unavailable("no leader".into()));
        // An apply after that (the entry committed after all) answers no one twice.
        h.applied(vec![Reply::Count(1), Reply::Count(2)]);
        assert!(poll_fn(|cx| Poll::Ready(h.poll_applied(cx).is_pending())).await);
        for rx in rxs.drain(..) {
            assert!(matches!(rx.await.unwrap(), Err(Refusal::Failed(PipelineError::Unavailable(_)))));
        }
    }

    #[tokio::test]
    async fn a_list_given_back_unanswered_fails_its_clients() {
        let (waiters, mut rxs) = clients(&[3]);
        let h = Handoff::new(waiters);
        let list = h.take_list();
        assert!(list.is_empty() && list.capacity() >= 1);
        assert!(matches!(rxs.remove(0).await.unwrap(), Err(Refusal::Failed(PipelineError::ShuttingDown))));
    }

    #[tokio::test]
    async fn an_entry_that_will_never_apply_gives_each_client_its_commands_back() {
        let (waiters, mut rxs) = clients(&[1, 2]);
        let h = Handoff::new(waiters);
        let del = |k: &'static str| Command::Delete { keys: vec![bytes::Bytes::from_static(k.as_bytes())] };
        h.not_applied(vec![del("a"), del("b"), del("c")]);
        let mut back = Vec::new();
        for rx in rxs.drain(..) {
            match rx.await.unwrap() {
                Err(Refusal::NotApplied(commands)) => back.push(commands),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(back, vec![vec![del("a")], vec![del("b"), del("c")]]);
        // Answered once: nothing is left to fail.
        h.fail(PipelineError::ShuttingDown);
        assert!(h.take_list().is_empty());
    }
}
