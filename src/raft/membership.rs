//! Membership and forwarding: what makes several nodes one cluster.
//!
//! - **Join** ([`RaftNode::join`]): run on the leader (a follower passes it
//!   on). The node is added as a learner, the call waits until it has caught
//!   up with the leader's log, then it becomes a voter. A learner whose log
//!   makes no progress for `raft.catch_up_timeout_ms` (unreachable,
//!   crashed) is removed again and the join fails. Joining
//!   again with the same name and address is a no-op; a name that is taken
//!   by another address, or an address taken by another name, is a conflict.
//! - **Leave** ([`RaftNode::leave`]): the leader removes the node from the
//!   membership (two-phase joint consensus). A leader that removes itself
//!   keeps leading until the change commits, then steps down and the others
//!   elect a new leader.
//! - **Starting with `-join ADDR`** ([`RaftNode::join_cluster`]): ask ADDR
//!   over the peer protocol; if ADDR is an HTTP address instead, `POST
//!   /join` to it (the Go original's form). Retried while the target is
//!   unreachable or has no leader, for up to [`JOIN_PATIENCE`].
//! - **Forwarding** ([`RaftNode::forward`]): a request that needs the leader
//!   (writes, and reads at `leader` consistency; a follower serves
//!   `linearizable` reads itself, see [`super::read_index`]) and
//!   reaches a follower is sent to the leader whole, in batches with other
//!   requests ([`forwarder`](super::forwarder)), and answered from there.
//!   During an election it waits for a leader, up to `raft.leader_wait_ms`.
//!   It is resent when the leader changed before running it, or lost its
//!   leadership before the request's writes committed (then they never
//!   will: openraft refused or truncated them) or before its reads' read
//!   index passed (a request of writes and reads of which a deposed
//!   leader did a part keeps that part's replies; the rest is resent); a
//!   write is not resent after a transport failure that may
//!   have delivered it, nor after the leader failed to answer by the
//!   deadline (the client gets "unavailable" instead of a possible double
//!   apply). Writes and reads the leader itself took from a client and lost
//!   to an election the same way are forwarded to the new leader.

use std::time::{Duration, Instant};

use gerdu_api::{AdminError, Command, Pipeline, PipelineError, ReadConsistency, Reply, Request, RequestContext};
use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};

use super::types::{Node, NodeId, node_id};
use super::wire::{ForwardRequest, ForwardResponse, pb};
use super::{Blocked, RaftNode, RaftStartError, Refusal};

/// How long a node started with `-join` keeps trying to join.
pub const JOIN_PATIENCE: Duration = Duration::from_secs(60);

/// The `protocol` of a forwarded request in the leader's pipeline.
pub const FORWARDED: &str = "peer";

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> AdminError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
            AdminError::Unavailable("leadership changed during the membership change; retry".into())
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => AdminError::BadRequest(e.to_string()),
        RaftError::Fatal(e) => AdminError::Unavailable(e.to_string()),
    }
}

/// What [`RaftNode::run_here`] came to.
#[derive(Debug)]
pub enum Ran {
    /// Every command done: one reply each.
    Done(Vec<Reply>),
    /// This node was found not leading after `replies.len()` commands,
    /// which were done; nothing of `rest`, the commands after them, was.
    Moved {
        /// The replies of the commands done.
        replies: Vec<Reply>,
        /// The commands not done.
        rest: Vec<Command>,
    },
}

impl From<Result<Ran, PipelineError>> for ForwardResponse {
    /// A forwarded request's answer: what was done, and nothing of the rest.
    fn from(ran: Result<Ran, PipelineError>) -> Self {
        match ran {
            Ok(Ran::Done(replies)) => ForwardResponse::Done(Ok(replies)),
            Ok(Ran::Moved { replies, .. }) => ForwardResponse::Moved(replies),
            Err(e) => ForwardResponse::Done(Err(e)),
        }
    }
}

/// Why one attempt to join failed.
enum Attempt {
    /// Try again (unreachable, no leader yet).
    Retry(String),
    /// The cluster said no.
    Refused(String),
}

impl RaftNode {
    /// The current leader, waiting for one (up to `deadline`) during an election.
    pub async fn wait_leader(&self, deadline: Instant) -> Result<(NodeId, Node), PipelineError> {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(id) = m.current_leader
                    && let Some((_, node)) = m.membership_config.nodes().find(|(nid, _)| **nid == id)
                {
                    return Ok((id, node.clone()));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(PipelineError::ShuttingDown),
                Err(_) => return Err(PipelineError::Unavailable("no leader elected in time".into())),
            }
        }
    }

    /// Runs `commands` on the leader (see the module docs), batched with
    /// other requests by the [forwarder](super::forwarder).
    pub async fn forward(
        &self,
        commands: Vec<Command>,
        consistency: ReadConsistency,
    ) -> Result<Vec<Reply>, PipelineError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let request = ForwardRequest { consistency, commands };
        self.forwards
            .send(super::forwarder::Forwarded { request, done: Vec::new(), reply })
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)?
    }

    /// Runs a batch forwarded by a follower: one answer per request.
    pub async fn serve_forwarded_batch(&self, batch: Vec<ForwardRequest>) -> Vec<ForwardResponse> {
        futures::future::join_all(batch.into_iter().map(|f| self.serve_forwarded(f))).await
    }

    /// Runs a request forwarded by a follower if this node leads
    /// ([`Self::run_forwarded`]); answers what it did and gives back the
    /// rest ([`ForwardResponse::Moved`]) when it is found not leading.
    pub async fn serve_forwarded(&self, f: ForwardRequest) -> ForwardResponse {
        if !self.is_leader() {
            return ForwardResponse::Moved(Vec::new());
        }
        self.run_forwarded(f.consistency, f.commands).await.into()
    }

    /// Runs a forwarded request's commands here ([`Self::run_here`]), its
    /// reads served by the store, marked [`FORWARDED`].
    pub async fn run_forwarded(
        &self,
        consistency: ReadConsistency,
        commands: Vec<Command>,
    ) -> Result<Ran, PipelineError> {
        let Some(store) = self.store.get() else {
            return Err(PipelineError::Internal("the raft stage is not built".into()));
        };
        let mut ctx = RequestContext::new(FORWARDED);
        ctx.consistency = Some(consistency);
        self.run_here(store, &ctx, commands, consistency).await
    }

    /// Runs a request's commands as this node's leader would: in maximal
    /// runs of consecutive writes and of reads, in order, each write run
    /// proposed ([`Self::submit`]) and resolved once applied, each read run
    /// served by `store` after a read barrier at `consistency`. Stops at the
    /// first run this node cannot do because it no longer leads (an
    /// election kept its writes from committing, so they never will; its
    /// read index found another leader): then the replies so far come back
    /// with the commands from that run on, none of which was done.
    pub async fn run_here(
        &self,
        store: &Pipeline,
        ctx: &RequestContext,
        commands: Vec<Command>,
        consistency: ReadConsistency,
    ) -> Result<Ran, PipelineError> {
        // The first run's replies become the request's (no copy when it is
        // the only run).
        let mut replies: Vec<Reply> = Vec::new();
        let mut add = |r: Vec<Reply>| match replies.is_empty() {
            true => replies = r,
            false => replies.extend(r),
        };
        let mut rest = commands;
        while let Some(first) = rest.first() {
            let write = first.is_write();
            // A request of one kind is one run, its vector moved as it is.
            let end = rest.iter().position(|c| c.is_write() != write).unwrap_or(rest.len());
            let after = rest.split_off(end);
            let run = std::mem::replace(&mut rest, after);
            let moved = if write {
                match self.submit(run).await {
                    Ok(r) => {
                        add(r);
                        None
                    }
                    Err(Refusal::NotApplied(run)) => Some(run),
                    Err(Refusal::Failed(e)) => return Err(e),
                }
            } else {
                match self.read_barrier(consistency).await {
                    Ok(()) => {
                        let sub = Request { ctx: ctx.clone(), commands: run };
                        add(gerdu_api::pipeline::call(store, sub).await?.replies);
                        None
                    }
                    Err(Blocked::NotLeader) => Some(run),
                    Err(Blocked::Failed(e)) => return Err(e),
                }
            };
            if let Some(mut run) = moved {
                run.append(&mut rest);
                return Ok(Ran::Moved { replies, rest: run });
            }
        }
        Ok(Ran::Done(replies))
    }

    /// The leader's client, or `None` when this node leads.
    async fn leader_client(&self) -> Result<Option<(Node, super::network::PeerClient)>, AdminError> {
        let deadline = Instant::now() + self.leader_wait;
        let (leader, node) = self.wait_leader(deadline).await.map_err(|e| AdminError::Unavailable(e.to_string()))?;
        if leader == self.id {
            return Ok(None);
        }
        let client = self.network.client(&node.raft_addr).map_err(AdminError::BadRequest)?;
        Ok(Some((node, client)))
    }

    /// Adds a node (see the module docs); answers the leader's name.
    pub async fn join(&self, name: String, raft_addr: String, http_addr: String) -> Result<String, AdminError> {
        if name.is_empty() || raft_addr.is_empty() {
            return Err(AdminError::BadRequest("join needs a node id and its raft address".into()));
        }
        if let Some((_, mut client)) = self.leader_client().await? {
            let req = pb::JoinRequest { id: name, raft_addr, http_addr };
            return match client.join(req).await {
                Ok(r) => Ok(r.into_inner().leader),
                Err(s) => Err(super::peer::status_admin(&s)),
            };
        }
        let id = node_id(&name);
        let (learner, voter) = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            let mut found = None;
            for (nid, node) in m.nodes() {
                if *nid == id && node.raft_addr != raft_addr {
                    return Err(AdminError::Conflict(format!(
                        "node {name:?} is already a member at {}; leave first to move it",
                        node.raft_addr
                    )));
                }
                if *nid != id && node.raft_addr == raft_addr {
                    return Err(AdminError::Conflict(format!(
                        "address {raft_addr} already belongs to node {:?}",
                        node.name
                    )));
                }
                if *nid == id {
                    found = Some(m.membership().voter_ids().any(|v| v == id));
                }
            }
            (found.is_some(), found == Some(true))
        };
        if voter {
            return Ok(self.node.name.clone());
        }
        if !learner {
            let node = Node { name: name.clone(), raft_addr: raft_addr.clone(), http_addr };
            tracing::info!(node = %name, addr = %raft_addr, "adding a learner; it catches up before it votes");
            self.raft.add_learner(id, node, false).await.map_err(write_error)?;
        }
        if let Err(e) = self.catch_up(id).await {
            // Do not leave an unreachable learner behind.
            let _ = self.raft.change_membership(ChangeMembers::RemoveNodes([id].into()), false).await;
            return Err(AdminError::Unavailable(format!("node {name:?} at {raft_addr} was not added: {e}")));
        }
        self.change_membership(ChangeMembers::AddVoterIds([id].into())).await?;
        tracing::info!(node = %name, addr = %raft_addr, "node joined as a voter");
        Ok(self.node.name.clone())
    }

    /// Waits until learner `id` has replicated the leader's log as of now,
    /// as long as it makes progress: it fails after `raft.catch_up_timeout_ms`
    /// without any.
    async fn catch_up(&self, id: NodeId) -> Result<(), String> {
        let matched = |m: &openraft::RaftMetrics<NodeId, Node>| {
            m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten()).map(|l| l.index)
        };
        let target = self.raft.metrics().borrow().last_log_index;
        let mut metrics = self.raft.metrics();
        let mut last = None;
        let mut progress_at = Instant::now();
        loop {
            let now = {
                let m = metrics.borrow_and_update();
                if m.current_leader != Some(self.id) {
                    return Err("leadership changed while it caught up; retry".into());
                }
                matched(&m)
            };
            if now.is_some() && now >= target {
                return Ok(());
            }
            if now != last {
                last = now;
                progress_at = Instant::now();
            }
            let left = (progress_at + self.catch_up_timeout).saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("shutting down".into()),
                Err(_) => {
                    return Err(format!("it did not catch up (no progress for {:?})", self.catch_up_timeout));
                }
            }
        }
    }

    /// Changes the membership; while another change is still in progress
    /// (two nodes leaving at once), waits for it and tries again, for up to
    /// `raft.leader_wait_ms`.
    async fn change_membership(&self, change: ChangeMembers<NodeId, Node>) -> Result<(), AdminError> {
        let deadline = Instant::now() + self.leader_wait;
        loop {
            match self.raft.change_membership(change.clone(), false).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(
                    openraft::error::ChangeMembershipError::InProgress(_),
                ))) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(write_error(e)),
            }
        }
    }

    /// Removes a node (see the module docs).
    pub async fn leave(&self, name: String) -> Result<(), AdminError> {
        if let Some((_, mut client)) = self.leader_client().await? {
            return match client.leave(pb::LeaveRequest { id: name }).await {
                Ok(_) => Ok(()),
                Err(s) => Err(super::peer::status_admin(&s)),
            };
        }
        let id = node_id(&name);
        let m = self.raft.metrics().borrow().membership_config.clone();
        if !m.nodes().any(|(nid, _)| *nid == id) {
            return Err(AdminError::NotFound(format!("no node {name:?} in the cluster")));
        }
        let voters: Vec<NodeId> = m.membership().voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(AdminError::BadRequest(format!("node {name:?} is the only voter; it cannot leave")));
            }
            ChangeMembers::RemoveVoters([id].into())
        } else {
            ChangeMembers::RemoveNodes([id].into())
        };
        self.change_membership(change).await?;
        tracing::info!(node = %name, "node left the cluster");
        Ok(())
    }

    /// Graceful leave on shutdown: if other members remain, remove this node
    /// from the membership (a leader hands over by stepping down).
    pub async fn leave_cluster(&self) {
        let others = {
            let m = self.raft.metrics().borrow().membership_config.clone();
            m.nodes().any(|(nid, _)| *nid != self.id) && m.nodes().any(|(nid, _)| *nid == self.id)
        };
        if !others {
            return;
        }
        let patience = self.leader_wait * 2;
        match tokio::time::timeout(patience, self.leave(self.node.name.clone())).await {
            Ok(Ok(())) => tracing::info!("left the cluster"),
            Ok(Err(e)) => tracing::warn!("could not leave the cluster: {e}"),
            Err(_) => tracing::warn!("could not leave the cluster within {patience:?}"),
        }
    }

    /// Joins the cluster that `target` (a raft or HTTP address) belongs to,
    /// then waits until this node votes.
    pub(super) async fn join_cluster(&self, target: &str) -> Result<(), RaftStartError> {
        let deadline = Instant::now() + JOIN_PATIENCE;
        loop {
            match self.ask_join(target).await {
                Ok(()) => break,
                Err(Attempt::Refused(m)) => return Err(RaftStartError::Join(format!("-join {target}: {m}"))),
                Err(Attempt::Retry(m)) if Instant::now() >= deadline => {
                    return Err(RaftStartError::Join(format!("-join {target}: gave up after {JOIN_PATIENCE:?}: {m}")));
                }
                Err(Attempt::Retry(m)) => {
                    tracing::info!("-join {target}: {m}; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        let id = self.id;
        self.raft
            .wait(Some(JOIN_PATIENCE))
            .metrics(|m| m.membership_config.membership().voter_ids().any(|v| v == id), "this node votes")
            .await
            .map_err(|e| RaftStartError::Join(format!("-join {target}: admitted, but {e}")))?;
        tracing::info!(target = %target, "joined the cluster as a voter");
        Ok(())
    }

    async fn ask_join(&self, target: &str) -> Result<(), Attempt> {
        let mut client = self.network.client(target).map_err(Attempt::Refused)?;
        let req = pb::JoinRequest {
            id: self.node.name.clone(),
            raft_addr: self.node.raft_addr.clone(),
            http_addr: self.node.http_addr.clone(),
        };
        let status = match client.join(req).await {
            Ok(_) => return Ok(()),
            Err(s) => s,
        };
        match status.code() {
            tonic::Code::InvalidArgument | tonic::Code::AlreadyExists | tonic::Code::NotFound => {
                Err(Attempt::Refused(status.message().to_string()))
            }
            // Not a gerdu peer port: maybe its HTTP port (the Go original's form).
            tonic::Code::Unimplemented | tonic::Code::Unknown | tonic::Code::Internal => self.http_join(target).await,
            _ => Err(Attempt::Retry(status.message().to_string())),
        }
    }

    /// `POST http://target/join {"id","addr"}`.
    async fn http_join(&self, target: &str) -> Result<(), Attempt> {
        use http_body_util::{BodyExt, Full};
        let body = serde_json::json!({ "id": self.node.name, "addr": self.node.raft_addr }).to_string();
        let stream = super::rpc::dial(target).await.map_err(|e| Attempt::Retry(e.to_string()))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| Attempt::Retry(e.to_string()))?;
        tokio::spawn(conn);
        let req = http::Request::post("/join")
            .header(http::header::HOST, target)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| Attempt::Refused(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| Attempt::Retry(e.to_string()))?;
        let status = resp.status();
        let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let text = String::from_utf8_lossy(&text).trim().to_string();
        match status.as_u16() {
            200..=299 => Ok(()),
            400..=499 => Err(Attempt::Refused(format!("HTTP {status}: {text}"))),
            _ => Err(Attempt::Retry(format!("HTTP {status}: {text}"))),
        }
    }
}
