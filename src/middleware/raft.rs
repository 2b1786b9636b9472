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
//! `linearizable` or `leader` consistency — is forwarded to the leader whole
//! ([`RaftNode::forward`]); `local` reads are served here. Writes this node
//! proposed as leader and that an election kept from committing (so they
//! never will: [`Refusal::NotApplied`]), and reads whose read index found
//! this node no longer leading ([`Blocked::NotLeader`]), are forwarded the
//! same way, with the rest of their request; a request a follower forwarded
//! here is instead handed back to it ([`RaftNode::serve_forwarded`]), to
//! send on to the new leader.

use std::sync::Arc;

use gerdu_api::{
    Call, Command, Middleware, MiddlewareContext, MiddlewarePlugin, Pipeline, PluginError, ReadConsistency, Request,
    Response, register_middleware,
};

use crate::raft::membership::FORWARDED;
use crate::raft::{Blocked, RaftNode, Refusal};

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
            let forwarded = req.ctx.protocol == FORWARDED;
            if needs_leader && !req.commands.is_empty() && !forwarded && !node.is_leader() {
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
                        Err(Refusal::NotApplied(commands)) if !forwarded => {
                            Box::pin(node.forward(commands, consistency)).await?
                        }
                        Err(refusal) => return Err(refusal.into_error()),
                    };
                    Ok(Response { replies })
                });
            }
            let (node, inner) = (node.clone(), inner.clone());
            Call::waiting(async move {
                if !any_write {
                    return match node.read_barrier(consistency).await {
                        Ok(()) => inner.call(req).await,
                        Err(Blocked::NotLeader) if !forwarded => {
                            Box::pin(node.forward(req.commands, consistency)).await.map(|replies| Response { replies })
                        }
                        Err(blocked) => Err(blocked.into_error()),
                    };
                }
                let mut replies = Vec::with_capacity(req.commands.len());
                let mut commands = req.commands.into_iter().peekable();
                while let Some(first) = commands.next() {
                    let write = first.is_write();
                    let mut run = vec![first];
                    while let Some(c) = commands.next_if(|c| c.is_write() == write) {
                        run.push(c);
                    }
                    // `Some`: nothing of this run was done here, as this node
                    // no longer leads.
                    let moved = if write {
                        match node.submit(run).await {
                            Ok(r) => {
                                replies.extend(r);
                                None
                            }
                            Err(Refusal::NotApplied(run)) if !forwarded => Some(run),
                            Err(refusal) => return Err(refusal.into_error()),
                        }
                    } else {
                        match node.read_barrier(consistency).await {
                            Ok(()) => {
                                let sub = Request { ctx: req.ctx.clone(), commands: run };
                                replies.extend(inner.call(sub).await?.replies);
                                None
                            }
                            Err(Blocked::NotLeader) if !forwarded => Some(run),
                            Err(blocked) => return Err(blocked.into_error()),
                        }
                    };
                    // It and the rest of the request go to the leader.
                    if let Some(mut rest) = moved {
                        rest.extend(commands);
                        replies.extend(Box::pin(node.forward(rest, consistency)).await?);
                        break;
                    }
                }
                Ok(Response { replies })
            })
        });
        self.node.set_stage(raft_stage.clone(), store);
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
