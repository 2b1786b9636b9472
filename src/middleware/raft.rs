//! The `raft` middleware: writes go through the log, reads wait for a read
//! index.
//!
//! A request is split into maximal runs of consecutive writes and reads, kept
//! in order: each write run is proposed as one unit (the proposer may merge it
//! with other clients' writes into one entry) and resolves once applied, so a
//! read run that follows sees it; each read run waits for one read barrier at
//! the request's consistency and is then served by the inner stage.
//!
//! On a follower, a request that needs the leader — any write, or reads at
//! `leader` consistency — is forwarded to the leader whole
//! ([`RaftNode::forward`]); `local` reads are served here, and so are
//! `linearizable` reads once this node has applied the leader's read index
//! ([`RaftNode::follower_read_barrier`]). Writes this node
//! proposed as leader and that an election kept from committing (so they
//! never will: [`Refusal::NotApplied`]), and reads whose read index found
//! this node no longer leading ([`Blocked::NotLeader`]), are forwarded the
//! same way, with the rest of their request ([`RaftNode::run_here`] does a
//! request's runs). Requests followers forwarded here do not come through
//! this stage: [`RaftNode::serve_forwarded`] runs them, and gives back what
//! it could not do to the follower, to send on.

use std::sync::Arc;

use gerdu_api::{
    Call, Command, Middleware, MiddlewareContext, MiddlewarePlugin, Pipeline, PluginError, ReadConsistency, Request,
    Response, register_middleware,
};

use crate::raft::{Blocked, RaftNode, Ran, Refusal};

struct RaftMiddleware {
    node: Arc<RaftNode>,
}

impl Middleware for RaftMiddleware {
    fn layer(&self, inner: Pipeline) -> Pipeline {
        let node = self.node.clone();
        let store = inner.clone();
        let raft_stage = Pipeline::from_fn(move |req: Request| {
            let consistency = req.ctx.consistency.unwrap_or(node.default_consistency);
            let any_write = req.commands.iter().any(Command::is_write);
            let needs_leader = consistency != ReadConsistency::Local || any_write;
            if needs_leader && !req.commands.is_empty() && !node.is_leader() {
                // A follower's linearizable reads: served here once this
                // node has applied the leader's read index.
                if !any_write && consistency == ReadConsistency::Linearizable {
                    let (node, inner) = (node.clone(), inner.clone());
                    return Call::waiting(async move {
                        node.follower_read_barrier().await.map_err(Blocked::into_error)?;
                        inner.call(req).await
                    });
                }
                let node = node.clone();
                return Call::waiting(async move {
                    let replies = node.forward(req.commands, consistency).await?;
                    Ok(Response { replies })
                });
            }
            // Reads whose barrier is already passed (a sole voter, `leader`
            // or `local` consistency) go straight through, without waiting.
            if !any_write && let Some(passed) = node.read_barrier_now(consistency) {
                return match passed {
                    Ok(()) => inner.call(req),
                    Err(e) => Call::ready(Err(e.into_error())),
                };
            }
            // Only writes (the usual write request): one proposal, in a future
            // that holds no more than it needs.
            if any_write && req.commands.iter().all(Command::is_write) {
                let node = node.clone();
                return Call::waiting(async move {
                    let replies = match node.submit(req.commands).await {
                        Ok(replies) => replies,
                        // Boxed: the rare path keeps the usual future small.
                        Err(Refusal::NotApplied(commands)) => Box::pin(node.forward(commands, consistency)).await?,
                        Err(refusal) => return Err(refusal.into_error()),
                    };
                    Ok(Response { replies })
                });
            }
            let (node, inner) = (node.clone(), inner.clone());
            Call::waiting(async move {
                // Reads waiting for their barrier, or writes and reads: in
                // runs, the rest sent to the leader if this node is found
                // deposed on the way.
                let replies = match node.run_here(&inner, &req.ctx, req.commands, consistency).await? {
                    Ran::Done(replies) => replies,
                    Ran::Moved { mut replies, rest } => {
                        replies.extend(Box::pin(node.forward(rest, consistency)).await?);
                        replies
                    }
                };
                Ok(Response { replies })
            })
        });
        self.node.set_store(store);
        raft_stage
    }
}

fn build(ctx: &MiddlewareContext<'_>) -> Result<Box<dyn Middleware>, PluginError> {
    let node = ctx
        .extensions
        .get::<Arc<RaftNode>>()
        .ok_or_else(|| PluginError::Other("the raft middleware needs the core's raft node".into()))?;
    Ok(Box::new(RaftMiddleware { node: node.clone() }))
}

register_middleware!(MiddlewarePlugin {
    name: "raft",
    description: "replicates writes through the raft log; linearizable reads via a batched read index",
    build,
});
