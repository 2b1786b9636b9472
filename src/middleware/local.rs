//! The innermost stage: serves reads from the local store.
//!
//! By the time a request gets here the raft middleware has already obtained
//! the read index (or the configured weaker guarantee) and has taken the
//! writes out; a write that arrives here means the chain has no raft stage,
//! which config validation forbids, so it is answered with an error rather
//! than applied outside the log.

use std::sync::Arc;

use gerdu_api::reply::CommandError;
use gerdu_api::{Call, Clock, Pipeline, Policy, Reply, Response, exec};

/// The local executor over `policy`.
pub fn executor(policy: Arc<dyn Policy>, clock: Arc<dyn Clock>) -> Pipeline {
    Pipeline::from_fn(move |req| {
        let replies = exec::read_all(&*policy, &req.commands, clock.now_ms(), |c| {
            c.is_write().then(|| Reply::Error(CommandError::Refused("writes must pass the raft middleware".into())))
        });
        Call::ready(Ok(Response { replies }))
    })
}
