//! Raft glue: one openraft node per process, even when alone.
//!
//! Every change is a log entry (DESIGN §3): a node started without `-join`
//! bootstraps a one-member cluster and commits its own entries, so a single
//! node and a cluster run the same code path. [`RaftNode`] owns the openraft
//! handle plus the two batching tasks in front of it: the
//! [proposer](proposer) (group commit of writes) and the
//! [read index](read_index) (one quorum round per batch of linearizable
//! reads).
//!
//! Storage: the log lives in memory ([`log_store::MemLog`]); snapshots are
//! taken every `raft.snapshot_logs` entries, or sooner when the log holds
//! more bytes than `raft.snapshot_log_bytes` and than the store itself (the
//! [compactor](compactor) task), and purge the log down to `raft.keep_logs`
//! entries, so memory stays flat.

pub mod log_store;
pub mod network;
pub mod proposer;
pub mod read_index;
pub mod state_machine;
pub mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gerdu_api::{Clock, Command, NodeStatus, PipelineError, Policy, ReadConsistency, Reply};
use openraft::{ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot};

use crate::config::CoreConfig;
use crate::metrics::ServerMetrics;
use types::{Node, NodeId, Raft};

/// Why the raft node could not start.
#[derive(Debug, thiserror::Error)]
pub enum RaftStartError {
    /// openraft refused the config.
    #[error("raft config: {0}")]
    Config(String),
    /// openraft failed to start or bootstrap.
    #[error("raft: {0}")]
    Raft(String),
    /// The asked mode is not available in this build.
    #[error("{0}")]
    Unsupported(String),
}

/// Triggers a snapshot when the log holds more bytes than `min_bytes` and
/// than the store, so that compaction costs O(1) per byte written whatever the
/// batch sizes. Ends when raft shuts down.
async fn compactor(raft: Raft, log: log_store::MemLog, policy: Arc<dyn Policy>, min_bytes: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if log.bytes() <= min_bytes.max(policy.used_bytes()) {
            continue;
        }
        let before = raft.metrics().borrow().snapshot;
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
        // One at a time: wait until it is built (or give up after a while).
        let _ = raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.snapshot != before && m.purged.is_some(), "snapshot built")
            .await;
    }
}

/// Keeps `flag` equal to "this node leads a membership in which it is the
/// only voter", from raft's metrics as they change. Ends when raft shuts down.
///
/// Then no other node can ever be elected, every acknowledged write has been
/// applied here before it was acknowledged, and the local state is
/// linearizable without a quorum round (there is no quorum to ask). Reads
/// check the flag instead of the metrics, which would take a lock per read.
async fn watch_sole_voter(raft: Raft, id: NodeId, flag: Arc<AtomicBool>) {
    let mut metrics = raft.metrics();
    loop {
        let sole = {
            let m = metrics.borrow_and_update();
            m.state == ServerState::Leader && {
                let mut voters = m.membership_config.membership().voter_ids();
                voters.next() == Some(id) && voters.next().is_none()
            }
        };
        flag.store(sole, Ordering::Release);
        if metrics.changed().await.is_err() {
            flag.store(false, Ordering::Release);
            return;
        }
    }
}

/// This process's raft node and its batching front.
pub struct RaftNode {
    /// The openraft handle.
    pub raft: Raft,
    /// Numeric id.
    pub id: NodeId,
    /// Name and addresses.
    pub node: Node,
    /// Default read consistency.
    pub default_consistency: ReadConsistency,
    proposals: mpsc::Sender<proposer::Proposal>,
    reads: mpsc::Sender<read_index::Waiter>,
    log: log_store::MemLog,
    leader_wait: Duration,
    /// Kept up to date by [`watch_sole_voter`]: read on every linearizable read.
    sole_voter: Arc<AtomicBool>,
}

impl RaftNode {
    /// Starts the node and, without `-join`, bootstraps a one-member cluster
    /// and waits until it leads.
    pub async fn start(
        cfg: &CoreConfig,
        http_addr: String,
        policy: Arc<dyn Policy>,
        metrics: Arc<ServerMetrics>,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, RaftStartError> {
        if let Some(join) = &cfg.raft.join {
            return Err(RaftStartError::Unsupported(format!(
                "-join {join}: joining a cluster is not available in this build yet (single-node only)"
            )));
        }
        if let Some(dir) = &cfg.raft.storage {
            return Err(RaftStartError::Unsupported(format!(
                "-storage {}: on-disk raft storage is not available in this build yet (the log is kept in memory)",
                dir.display()
            )));
        }
        let r = &cfg.raft;
        let config = openraft::Config {
            cluster_name: "gerdu".into(),
            heartbeat_interval: r.heartbeat_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_logs),
            max_in_snapshot_log_to_keep: r.keep_logs,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftStartError::Config(e.to_string()))?;

        let node = Node { name: cfg.id.clone(), raft_addr: r.addr.clone(), http_addr };
        let id = types::node_id(&cfg.id);
        let log = log_store::MemLog::default();
        let sm_policy = policy.clone();
        let sm = state_machine::StateMachine::new(policy, metrics.clone());
        let raft = Raft::new(id, Arc::new(config), network::NoNetwork, log.clone(), sm)
            .await
            .map_err(|e| RaftStartError::Raft(e.to_string()))?;

        let members: BTreeMap<NodeId, Node> = [(id, node.clone())].into();
        if let Err(e) = raft.initialize(members).await {
            // Already initialized (restart with storage) is fine.
            if !matches!(e, openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) {
                return Err(RaftStartError::Raft(e.to_string()));
            }
        }
        raft.wait(Some(Duration::from_secs(10)))
            .state(ServerState::Leader, "single node becomes leader")
            .await
            .map_err(|e| RaftStartError::Raft(format!("bootstrap: {e}")))?;

        let (ptx, prx) = mpsc::channel(16 * 1024);
        tokio::spawn(proposer::run(raft.clone(), prx, clock, r.max_batch, r.leader_wait(), metrics));
        let (rtx, rrx) = mpsc::channel(16 * 1024);
        tokio::spawn(read_index::run(raft.clone(), rrx));
        tokio::spawn(compactor(raft.clone(), log.clone(), sm_policy, r.snapshot_log_bytes.0));
        let sole_voter = Arc::new(AtomicBool::new(false));
        tokio::spawn(watch_sole_voter(raft.clone(), id, sole_voter.clone()));

        tracing::info!(id = %cfg.id, raft_addr = %r.addr, "raft node bootstrapped a single-member cluster");
        Ok(Arc::new(RaftNode {
            raft,
            id,
            node,
            default_consistency: cfg.read_consistency,
            proposals: ptx,
            reads: rtx,
            log,
            leader_wait: r.leader_wait(),
            sole_voter,
        }))
    }

    /// Replicates writes; resolves with their replies once applied.
    pub async fn propose(&self, mut commands: Vec<Command>) -> Result<Vec<Reply>, PipelineError> {
        // Here, on the client's task, not on the proposer's: copies run in parallel.
        commands.iter_mut().for_each(Command::detach);
        let (tx, rx) = oneshot::channel();
        self.proposals
            .send(proposer::Proposal { commands, reply: tx })
            .await
            .map_err(|_| PipelineError::ShuttingDown)?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)?
    }

    /// Waits until reads at `consistency` may be served from the local store.
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<(), PipelineError> {
        match consistency {
            ReadConsistency::Local => Ok(()),
            ReadConsistency::Leader => {
                if self.raft.metrics().borrow().current_leader == Some(self.id) {
                    Ok(())
                } else {
                    Err(PipelineError::Unavailable("this node is not the leader".into()))
                }
            }
            ReadConsistency::Linearizable if self.sole_voter.load(Ordering::Acquire) => Ok(()),
            ReadConsistency::Linearizable => {
                let (tx, rx) = oneshot::channel();
                self.reads.send(tx).await.map_err(|_| PipelineError::ShuttingDown)?;
                match tokio::time::timeout(self.leader_wait, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err(PipelineError::ShuttingDown),
                    Err(_) => Err(PipelineError::Unavailable("read index timed out".into())),
                }
            }
        }
    }

    /// Approximate bytes held in the in-memory log.
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }

    /// Entries currently held in the in-memory log.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let members: Vec<(String, String)> =
            m.membership_config.nodes().map(|(_, n)| (n.name.clone(), n.raft_addr.clone())).collect();
        let leader = m
            .current_leader
            .and_then(|l| m.membership_config.nodes().find(|(id, _)| **id == l).map(|(_, n)| n.name.clone()));
        NodeStatus {
            id: self.node.name.clone(),
            role: role.into(),
            leader,
            term: m.current_term,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            members,
        }
    }

    /// Stops the raft core.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}
