//! Raft glue: one openraft node per process, even when alone.
//!
//! Every change is a log entry (DESIGN §3): a node started without `-join`
//! bootstraps a one-member cluster and commits its own entries, so a single
//! node and a cluster run the same code path; with `-join` it asks a member
//! to add it ([`membership`]). Peers talk over [`peer`] (server) and
//! [`network`] (client), the gRPC service of `proto/raft.proto` with the
//! payloads of [`wire`]. [`RaftNode`] owns the openraft
//! handle plus the two batching tasks in front of it: the
//! [proposer](proposer) (group commit of writes) and the
//! [read index](read_index) (one quorum round per batch of linearizable
//! reads).
//!
//! Storage: the log lives in memory ([`log_store::MemLog`]); snapshots are
//! taken every `raft.snapshot_logs` entries, or sooner (the
//! [compactor](compactor) task) when the log holds more bytes than
//! `raft.snapshot_log_bytes` and than the store itself (with `-storage`,
//! where a snapshot encodes the store to disk) or than
//! `raft.memory_log_bytes` (without: a snapshot only records a log position,
//! see [`state_machine`]), and purge the log down to `raft.keep_logs`
//! entries, so memory stays flat.

pub mod batch;
pub mod evictor;
pub mod forwarder;
pub mod handoff;
pub mod journal;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod peer;
pub mod proposer;
pub mod read_index;
pub mod rpc;
pub mod state_machine;
pub mod sweeper;
pub mod types;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gerdu_api::tokio_util::sync::CancellationToken;
use gerdu_api::{AdminError, Clock, Command, NodeStatus, Pipeline, PipelineError, Policy, ReadConsistency, Reply};
use openraft::{ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot};

use crate::config::CoreConfig;
use crate::metrics::ServerMetrics;
pub use handoff::Refusal;
pub use membership::Ran;
pub use read_index::Blocked;
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
    /// The peer address cannot be bound.
    #[error("{0}")]
    Bind(String),
    /// `-join` failed.
    #[error("{0}")]
    Join(String),
    /// The storage directory cannot be used.
    #[error("{0}")]
    Storage(String),
}

/// Triggers a snapshot when the log holds more bytes than `min_bytes` and,
/// when `scaled` (with storage, where a snapshot encodes the store), than the
/// store, so that compaction costs O(1) per byte written whatever the batch
/// sizes, and holds at least twice the `keep` entries a purge leaves. Looks
/// every 10 ms, so that a write storm does not pile up much log between
/// looks.
///
/// Without storage (where a snapshot costs nothing) it also empties the log
/// once writes pause for [`IDLE_COMPACT`]: it purges every entry that all
/// members already hold ([`idle_purge_point`]), the `keep` entries too, so
/// an idle node holds no copy of the last writes besides the store, and
/// has the allocator give the memory back ([`crate::app::release_memory`]).
/// Ends when raft shuts down.
async fn compactor(
    raft: Raft,
    log: log_store::MemLog,
    policy: Arc<dyn Policy>,
    (min_bytes, scaled): (u64, bool),
    keep: u64,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The last log index seen, since when it has not moved, and whether the
    // log was emptied since it last moved.
    let (mut last_index, mut still_since, mut emptied) = (None, tokio::time::Instant::now(), false);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            // Shutting down: a trigger now would be refused (and logged as an error).
            _ = stop.cancelled() => return,
        }
        let threshold = if scaled { min_bytes.max(policy.used_bytes()) } else { min_bytes };
        // The entries a snapshot keeps can hold more than the threshold:
        // compact only when a purge would remove at least as many.
        if log.bytes() <= threshold || (log.len() as u64) < 2 * keep {
            let index = raft.metrics().borrow().last_log_index;
            if index != last_index {
                (last_index, still_since, emptied) = (index, tokio::time::Instant::now(), false);
            } else if !scaled && !emptied && !log.is_empty() && still_since.elapsed() >= IDLE_COMPACT {
                if let Some(upto) = idle_purge_point(&raft) {
                    if raft.metrics().borrow().snapshot.is_none_or(|s| s.index < upto) {
                        if raft.trigger().snapshot().await.is_err() {
                            return;
                        }
                        let _ = raft
                            .wait(Some(Duration::from_secs(5)))
                            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= upto), "idle snapshot")
                            .await;
                    }
                    if raft.trigger().purge_log(upto).await.is_err() {
                        return;
                    }
                }
                // Once per pause (the purge itself does not move the last index).
                emptied = true;
                // The log store drops the entries soon after the trigger;
                // then the allocator may give their memory back (a pass over
                // its pages: about 2 ms with a million items, once per pause).
                tokio::spawn(async {
                    tokio::time::sleep(RELEASE_AFTER).await;
                    crate::app::release_memory();
                });
            }
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

/// How long the log must stay unchanged before an idle node empties it.
const IDLE_COMPACT: Duration = Duration::from_secs(1);

/// How long after emptying the log the allocator is told to release memory.
const RELEASE_AFTER: Duration = Duration::from_millis(200);

/// Up to where an idle node may purge its log: everything applied here that
/// every other member has too (a leader knows what each one holds; a
/// follower's own log is only for itself). `None` when nothing is applied or
/// a member's progress is unknown.
fn idle_purge_point(raft: &Raft) -> Option<u64> {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let applied = m.last_applied?.index;
    let Some(replication) = &m.replication else { return Some(applied) };
    replication
        .iter()
        .filter(|(id, _)| **id != m.id)
        .try_fold(applied, |upto, (_, matched)| matched.map(|l| upto.min(l.index)))
}

/// Keeps `flag` equal to "this node leads a membership in which it is the
/// only voter", from raft's metrics as they change. Ends when raft shuts down.
///
/// Then no other node can ever be elected, every acknowledged write has been
/// applied here before it was acknowledged, and the local state is
/// linearizable without a quorum round (there is no quorum to ask). Reads
/// check the flag instead of the metrics, which would take a lock per read.
///
/// It watches openraft's server metrics (vote, role, leader, membership),
/// which change only when those do, not the full metrics, which openraft
/// sends after every turn of its loop (several per log entry).
async fn watch_sole_voter(raft: Raft, id: NodeId, flag: Arc<AtomicBool>, leader: Arc<AtomicBool>) {
    let mut metrics = raft.server_metrics();
    let mut last_role = None;
    loop {
        let (sole, leads) = {
            let m = metrics.borrow_and_update();
            if last_role != Some(m.state) {
                let leader = m
                    .current_leader
                    .and_then(|l| m.membership_config.nodes().find(|(nid, _)| **nid == l).map(|(_, n)| n.name.clone()));
                let term = m.vote.leader_id().get_term();
                tracing::info!(role = role_name(m.state), term, leader = ?leader, "raft role");
                last_role = Some(m.state);
            }
            let leads = m.state == ServerState::Leader;
            let sole = leads && {
                let mut voters = m.membership_config.membership().voter_ids();
                voters.next() == Some(id) && voters.next().is_none()
            };
            (sole, leads)
        };
        flag.store(sole, Ordering::Release);
        leader.store(leads, Ordering::Release);
        if metrics.changed().await.is_err() {
            flag.store(false, Ordering::Release);
            leader.store(false, Ordering::Release);
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
    proposals: mpsc::UnboundedSender<proposer::Proposal>,
    reads: mpsc::Sender<read_index::Waiter>,
    /// A follower's linearizable reads, to [`read_index::follower`].
    follower_reads: mpsc::Sender<read_index::follower::Waiter>,
    log: log_store::MemLog,
    leader_wait: Duration,
    catch_up_timeout: Duration,
    /// Kept up to date by [`watch_sole_voter`]: read on every linearizable read.
    sole_voter: Arc<AtomicBool>,
    /// Whether this node leads, kept up to date by [`watch_sole_voter`].
    leader: Arc<AtomicBool>,
    /// Set when [`RaftNode::shutdown`] begins.
    stopping: AtomicBool,
    /// The peer server, awaited on shutdown (its connections closed).
    peer_server: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Channels to peers.
    network: network::Network,
    /// The stage inside the raft stage of the pipeline (the store), which
    /// serves the reads of requests forwarded by followers; set when the
    /// pipeline is built.
    store: OnceLock<Pipeline>,
    /// Stops the peer server.
    peer_shutdown: CancellationToken,
    /// Stops the background tasks that talk to raft (the compactor).
    background: CancellationToken,
    /// Requests for the leader, to the [forwarder](forwarder).
    forwards: mpsc::Sender<forwarder::Forwarded>,
    /// The state machine (backups read it).
    sm: state_machine::StateMachine,
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
        let r = &cfg.raft;
        let config = openraft::Config {
            cluster_name: "gerdu".into(),
            heartbeat_interval: r.heartbeat_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_logs),
            max_in_snapshot_log_to_keep: r.keep_logs,
            // Per snapshot chunk (3MB by default): the 200ms default is too
            // tight for a loaded machine.
            install_snapshot_timeout: 10_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| RaftStartError::Config(e.to_string()))?;

        // The peer listener comes first: its bound address is what peers dial.
        let listener = tokio::net::TcpListener::bind(&r.addr)
            .await
            .map_err(|e| RaftStartError::Bind(format!("raft: cannot listen on {}: {e}", r.addr)))?;
        let bound = listener.local_addr().map_err(|e| RaftStartError::Bind(format!("raft: {e}")))?;
        let raft_addr = advertised(&r.addr, bound);
        let node = Node { name: cfg.id.clone(), raft_addr, http_addr };
        let id = types::node_id(&cfg.id);
        let storage_err = |e: std::io::Error| {
            let dir = r.storage.as_deref().unwrap_or(std::path::Path::new(""));
            RaftStartError::Storage(format!("-storage {}: {e}", dir.display()))
        };
        let log = match &r.storage {
            Some(dir) => log_store::MemLog::open(dir, r.fsync).map_err(storage_err)?,
            None => log_store::MemLog::default(),
        };
        let sm_policy = policy.clone();
        let evict_policy = policy.clone();
        let sm = state_machine::StateMachine::new(policy, metrics.clone(), r.storage.clone()).map_err(storage_err)?;
        let over_capacity = sm.over_capacity();
        let sm_handle = sm.clone();
        let peer_tls = crate::tls::load_peer(&r.tls).map_err(|e| RaftStartError::Config(e.0))?;
        let acceptor = peer_tls.as_ref().map(|t| tokio_rustls::TlsAcceptor::from(t.server.clone()));
        let network = network::Network::new(peer_tls);
        let raft = Raft::new(id, Arc::new(config), network.clone(), log.clone(), sm)
            .await
            .map_err(|e| RaftStartError::Raft(e.to_string()))?;

        // Unbounded: every proposer awaits its replies before proposing
        // again, so the queue never holds more than the callers in flight
        // (connections and requests, bounded by the listeners' limits), and
        // a bound would only add a semaphore to every write.
        let (ptx, prx) = mpsc::unbounded_channel();
        let sweep =
            sweeper::Sweep { interval: Duration::from_millis(cfg.expiry.sweep_ms), keys: cfg.expiry.sweep_keys };
        let (sweep_clock, sweep_metrics) = (clock.clone(), metrics.clone());
        let sole_voter = Arc::new(AtomicBool::new(false));
        let settings = proposer::Settings {
            max_batch: r.max_batch,
            journaled: r.storage.is_some(),
            commit_wait: r.leader_wait(),
            sole_voter: sole_voter.clone(),
        };
        tokio::spawn(proposer::run(raft.clone(), prx, clock, settings, metrics));
        let (rtx, rrx) = mpsc::channel(16 * 1024);
        tokio::spawn(read_index::run(raft.clone(), rrx));
        let compaction = match r.storage {
            Some(_) => (r.snapshot_log_bytes.0, true),
            // In memory a snapshot records a position only: compacting is cheap.
            None => (r.memory_log_bytes.0, false),
        };
        let background = CancellationToken::new();
        tokio::spawn(compactor(raft.clone(), log.clone(), sm_policy, compaction, r.keep_logs, background.clone()));
        let leader = Arc::new(AtomicBool::new(false));
        tokio::spawn(watch_sole_voter(raft.clone(), id, sole_voter.clone(), leader.clone()));

        let (ftx, frx) = mpsc::channel(16 * 1024);
        let (frtx, frrx) = mpsc::channel(16 * 1024);
        let this = Arc::new(RaftNode {
            raft: raft.clone(),
            id,
            node: node.clone(),
            default_consistency: cfg.read_consistency,
            proposals: ptx,
            reads: rtx,
            follower_reads: frtx,
            log,
            leader_wait: r.leader_wait(),
            catch_up_timeout: Duration::from_millis(r.catch_up_timeout_ms),
            sole_voter,
            leader,
            stopping: AtomicBool::new(false),
            peer_server: parking_lot::Mutex::new(None),
            network,
            store: OnceLock::new(),
            peer_shutdown: CancellationToken::new(),
            background,
            forwards: ftx,
            sm: sm_handle,
        });
        tokio::spawn(forwarder::run(Arc::downgrade(&this), frx));
        tokio::spawn(read_index::follower::run(Arc::downgrade(&this), frrx));
        tokio::spawn(sweeper::run(Arc::downgrade(&this), evict_policy.clone(), sweep_clock, sweep_metrics, sweep));
        tokio::spawn(evictor::run(Arc::downgrade(&this), evict_policy, over_capacity));
        let server = tokio::spawn(peer::serve(listener, this.clone(), this.peer_shutdown.clone(), acceptor));
        *this.peer_server.lock() = Some(server);

        // A node restarted from storage is already a member: it neither
        // bootstraps nor joins, it rejoins the election.
        let restored = raft
            .with_raft_state(move |st| st.membership_state.effective().nodes().any(|(nid, _)| *nid == id))
            .await
            .unwrap_or(false);
        let started = match &r.join {
            _ if restored => {
                // Serve once a leader is known (a lone node elects itself at
                // once); a cluster whose other members are still down gets
                // requests that wait for one instead.
                let _ = this.wait_leader(std::time::Instant::now() + this.leader_wait).await;
                Ok(())
            }
            Some(target) => this.join_cluster(target).await,
            None => bootstrap(&raft, id, node).await,
        };
        if let Err(e) = started {
            this.shutdown().await;
            return Err(e);
        }
        match &r.join {
            Some(target) => {
                tracing::info!(id = %cfg.id, raft_addr = %this.node.raft_addr, join = %target, "raft node joined")
            }
            None => tracing::info!(id = %cfg.id, raft_addr = %this.node.raft_addr, "raft node bootstrapped a cluster"),
        }
        Ok(this)
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Acquire) && !self.stopping.load(Ordering::Acquire)
    }

    /// Records the stage inside the raft stage (the store), which serves
    /// forwarded requests' reads (the raft middleware calls this once).
    pub fn set_store(&self, store: Pipeline) {
        let _ = self.store.set(store);
    }

    /// Replicates writes; resolves with their replies once applied. Writes
    /// an election kept from committing fail ([`Refusal::into_error`]); the
    /// raft stage uses [`Self::submit`] and sends them to the new leader.
    pub async fn propose(&self, commands: Vec<Command>) -> Result<Vec<Reply>, PipelineError> {
        self.submit(commands).await.map_err(Refusal::into_error)
    }

    /// Replicates writes; resolves with their replies once applied, or
    /// gives them back when this node lost its leadership before they
    /// committed ([`Refusal::NotApplied`]).
    pub async fn submit(&self, mut commands: Vec<Command>) -> Result<Vec<Reply>, Refusal> {
        // Large fields here, on the client's task (copies of different
        // clients run in parallel); small ones once per log entry, by the
        // proposer (one allocation for the writes of every client in it).
        gerdu_api::command::detach_large(&mut commands);
        let (tx, rx) = oneshot::channel();
        self.proposals.send(proposer::Proposal { commands, reply: tx }).map_err(|_| PipelineError::ShuttingDown)?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)?
    }

    /// Whether reads at `consistency` may be served from the local store
    /// now, when that is known without waiting: `local` always, `leader` on
    /// the leader (an error elsewhere), `linearizable` on a sole voter (the
    /// only node commits alone, and a write is acknowledged once applied).
    /// `None`: a read index round must be waited for ([`Self::read_barrier`]).
    pub fn read_barrier_now(&self, consistency: ReadConsistency) -> Option<Result<(), Blocked>> {
        match consistency {
            ReadConsistency::Local => Some(Ok(())),
            ReadConsistency::Leader => {
                Some(if self.leader.load(Ordering::Acquire) { Ok(()) } else { Err(Blocked::NotLeader) })
            }
            ReadConsistency::Linearizable if self.sole_voter.load(Ordering::Acquire) => Some(Ok(())),
            ReadConsistency::Linearizable => None,
        }
    }

    /// Waits until reads at `consistency` may be served from the local store.
    pub async fn read_barrier(&self, consistency: ReadConsistency) -> Result<(), Blocked> {
        if let Some(passed) = self.read_barrier_now(consistency) {
            return passed;
        }
        self.read_index().await.map(|_| ())
    }

    /// A read-index round of this node as leader (batched with others):
    /// the index reads may be served at; this node has applied it.
    async fn read_index(&self) -> Result<u64, Blocked> {
        let (tx, rx) = oneshot::channel();
        self.reads.send(tx).await.map_err(|_| PipelineError::ShuttingDown)?;
        match tokio::time::timeout(self.leader_wait, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(PipelineError::ShuttingDown.into()),
            Err(_) => Err(PipelineError::Unavailable("read index timed out".into()).into()),
        }
    }

    /// The read index a follower asked for (`READ_INDEX`): linearizable
    /// reads on the follower may be served once it has applied it.
    pub async fn read_index_for_follower(&self) -> Result<u64, Blocked> {
        if !self.is_leader() {
            return Err(Blocked::NotLeader);
        }
        if self.sole_voter.load(Ordering::Acquire) {
            // Every acknowledged write is applied here (see `watch_sole_voter`).
            return Ok(self.raft.metrics().borrow().last_applied.map_or(0, |l| l.index));
        }
        self.read_index().await
    }

    /// Waits until this follower may serve linearizable reads: it has
    /// applied the leader's read index, asked for once per batch of reads
    /// ([`read_index::follower`]).
    pub async fn follower_read_barrier(&self) -> Result<(), Blocked> {
        let (tx, rx) = oneshot::channel();
        self.follower_reads.send(tx).await.map_err(|_| PipelineError::ShuttingDown)?;
        rx.await.map_err(|_| PipelineError::ShuttingDown)?
    }

    /// A backup of the data ([`gerdu_api::Admin::backup`]): at `linearizable`
    /// or `leader` consistency only the leader takes one, after the read
    /// barrier, so it holds every write acknowledged before the call.
    pub async fn backup(
        &self,
        consistency: ReadConsistency,
        created_ms: u64,
    ) -> Result<gerdu_api::BackupFile, AdminError> {
        if consistency != ReadConsistency::Local {
            if !self.is_leader() {
                return Err(AdminError::NotLeader(self.leader_http_addr()));
            }
            self.read_barrier(consistency).await.map_err(|e| AdminError::Unavailable(e.into_error().to_string()))?;
        }
        Ok(self.sm.backup(created_ms))
    }

    /// The leader's HTTP address, when a leader is known.
    fn leader_http_addr(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config.nodes().find(|(id, _)| **id == leader).map(|(_, n)| n.http_addr.clone())
    }

    /// Approximate bytes held in the in-memory log.
    pub fn log_bytes(&self) -> u64 {
        self.log.bytes()
    }

    /// Entries currently held in the in-memory log.
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// A fault for tests: see [`network::Network::drop_outgoing_raft`].
    #[doc(hidden)]
    pub fn drop_outgoing_raft(&self, on: bool) {
        self.network.drop_outgoing_raft(on);
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let role = role_name(m.state);
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

    /// The detailed cluster view (`GET /cluster`).
    pub async fn cluster(&self) -> gerdu_api::ClusterView {
        let committed = self.raft.with_raft_state(|st| st.committed.map_or(0, |l| l.index)).await.unwrap_or(0);
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let members: Vec<gerdu_api::MemberView> = m
            .membership_config
            .nodes()
            .map(|(id, n)| gerdu_api::MemberView {
                id: n.name.clone(),
                role: if membership.voter_ids().any(|v| v == *id) { "voter" } else { "learner" }.into(),
                raft_addr: n.raft_addr.clone(),
                http_addr: n.http_addr.clone(),
                matched_index: m.replication.as_ref().and_then(|r| r.get(id).copied().flatten()).map(|l| l.index),
            })
            .collect();
        let leader_name = m
            .current_leader
            .and_then(|l| m.membership_config.nodes().find(|(id, _)| **id == l).map(|(_, n)| n.name.clone()));
        gerdu_api::ClusterView {
            id: self.node.name.clone(),
            state: role_name(m.state).into(),
            term: m.current_term,
            leader: leader_name.and_then(|name| members.iter().find(|x| x.id == name).cloned()),
            members,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: committed,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map_or(0, |l| l.index),
        }
    }

    /// Stops the raft core and the peer server.
    pub async fn shutdown(&self) {
        // From now on forwarded requests are told "not the leader" (the
        // sender retries with the next leader) instead of failing as the
        // core stops under them.
        self.stopping.store(true, Ordering::Release);
        self.background.cancel();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
        self.peer_shutdown.cancel();
        let server = self.peer_server.lock().take();
        if let Some(server) = server {
            let _ = server.await;
        }
    }
}

/// The name of a raft role in `/health`, `/cluster` and logs.
fn role_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// The raft address peers dial: the configured one, with the bound port when
/// it asked for port 0.
fn advertised(configured: &str, bound: std::net::SocketAddr) -> String {
    match configured.rsplit_once(':') {
        Some((host, "0")) => format!("{host}:{}", bound.port()),
        _ => configured.to_string(),
    }
}

/// Initializes a one-member cluster (a node started without `-join`) and
/// waits until it leads.
async fn bootstrap(raft: &Raft, id: NodeId, node: Node) -> Result<(), RaftStartError> {
    let members: BTreeMap<NodeId, Node> = [(id, node)].into();
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
    Ok(())
}
