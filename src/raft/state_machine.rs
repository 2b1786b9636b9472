//! The replicated state machine: applies log entries to the policy.
//!
//! Apply is the single writer of the store. Each entry's commands run through
//! [`gerdu_api::exec::apply`] with the entry's timestamp (kept monotonic: a
//! new leader's clock never moves time backwards) and the shared cas counter,
//! so every replica that applies the same log holds the same items, flags,
//! deadlines and cas values. Reads do not come through here; they go to the
//! policy directly and run in parallel with apply.
//!
//! Snapshots are the whole store as an image ([`gerdu_api::image`]). A snapshot begins a point-in-time capture of the
//! policy under the apply lock ([`Policy::begin_capture`]: copy-on-write per
//! shard), so the image is exactly the state at `last_applied` while applying
//! goes on during the copy and the encoding.
//!
//! With `-storage` every snapshot is encoded and written to disk (a restart
//! loads it). Without, a snapshot is only what lets openraft purge the log,
//! and the store itself is the state: taking one records its log position
//! and nothing else (O(1), no copy of the data kept in memory). The image is
//! encoded only when a follower needs one ([`get_current_snapshot`]), from
//! the store as it is then, at the applied position of that moment; applying
//! waits while it is encoded (the price of not keeping a second copy of the
//! data set).
//!
//! [`get_current_snapshot`]: RaftStateMachine::get_current_snapshot

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use gerdu_api::exec::ApplyState;
use gerdu_api::image::{ImageMeta, ImageWriter, decode_image};
use gerdu_api::{Policy, Reply};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership};
use parking_lot::Mutex;

use super::handoff::Handoff;
use super::types::{BatchReply, Entry, LogId, Node, NodeId, StorageError, TypeConfig};
use crate::metrics::ServerMetrics;

struct Inner {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, Node>,
    meta: ImageMeta,
    snapshot: Option<(SnapshotMeta<NodeId, Node>, Bytes)>,
    /// Without storage: the last snapshot taken (only its position recorded).
    taken: Option<SnapshotMeta<NodeId, Node>>,
    snapshots_built: u64,
}

/// Shared by the state machine and its snapshot builders.
pub struct SmShared {
    policy: Arc<dyn Policy>,
    metrics: Arc<ServerMetrics>,
    inner: Mutex<Inner>,
    /// With `-storage`: where the current snapshot is kept.
    dir: Option<std::path::PathBuf>,
    /// Signalled when applying left the store over capacity (the leader's
    /// evictor then proposes the removal of victims).
    over_capacity: Arc<tokio::sync::Notify>,
}

/// Name of the snapshot file in the storage directory.
pub const SNAPSHOT_FILE: &str = "snapshot";
use gerdu_api::image::SNAPSHOT_FILE_MAGIC as FILE_MAGIC;

/// Writes the current snapshot to `dir` (a new file renamed over the old
/// one, synced): `magic, meta_len u32, meta (MessagePack), data, crc32 u32`.
pub fn persist_snapshot(dir: &std::path::Path, meta: &SnapshotMeta<NodeId, Node>, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let meta = rmp_serde::to_vec_named(meta).map_err(std::io::Error::other)?;
    let mut head = Vec::with_capacity(12 + meta.len());
    head.extend_from_slice(FILE_MAGIC);
    head.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    head.extend_from_slice(&meta);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(data);
    let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    f.write_all(&head)?;
    f.write_all(data)?;
    f.write_all(&crc.finalize().to_le_bytes())?;
    f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads the snapshot kept in `dir`, if any.
pub fn load_snapshot(dir: &std::path::Path) -> std::io::Result<Option<(SnapshotMeta<NodeId, Node>, Bytes)>> {
    let data = match std::fs::read(dir.join(SNAPSHOT_FILE)) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("snapshot file: {m}"));
    if data.len() < 16 || &data[..8] != FILE_MAGIC {
        return Err(bad("not a gerdu snapshot file"));
    }
    let (body, tail) = data.split_at(data.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != tail {
        return Err(bad("checksum mismatch"));
    }
    let meta_len = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let meta_end = 12 + meta_len;
    if body.len() < meta_end {
        return Err(bad("truncated"));
    }
    let meta = rmp_serde::from_slice(&body[12..meta_end]).map_err(|e| bad(&e.to_string()))?;
    Ok(Some((meta, Bytes::copy_from_slice(&body[meta_end..]))))
}

/// The state machine handed to openraft.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<SmShared>,
    /// The applied entries' replies for clients of this node, answered
    /// once the apply lock is released ([`Handoff`]); kept from call to
    /// call for its room.
    answers: Vec<(Arc<Handoff>, Vec<Reply>)>,
}

impl StateMachine {
    /// A state machine over `policy`; with `dir` (`-storage`) its snapshots
    /// are kept there, and the one found there is loaded now.
    pub fn new(
        policy: Arc<dyn Policy>,
        metrics: Arc<ServerMetrics>,
        dir: Option<std::path::PathBuf>,
    ) -> std::io::Result<Self> {
        let sm = StateMachine {
            shared: Arc::new(SmShared {
                policy,
                metrics,
                inner: Mutex::new(Inner {
                    last_applied: None,
                    membership: StoredMembership::default(),
                    meta: ImageMeta::default(),
                    snapshot: None,
                    taken: None,
                    snapshots_built: 0,
                }),
                dir,
                over_capacity: Arc::default(),
            }),
            answers: Vec::new(),
        };
        if let Some(dir) = &sm.shared.dir
            && let Some((meta, data)) = load_snapshot(dir)?
        {
            let items = sm.shared.restore(&meta, data).map_err(std::io::Error::other)?;
            tracing::info!(dir = %dir.display(), items, last = ?meta.last_log_id, "snapshot loaded");
        }
        Ok(sm)
    }

    /// Signalled whenever applying leaves the store over capacity.
    pub fn over_capacity(&self) -> Arc<tokio::sync::Notify> {
        self.shared.over_capacity.clone()
    }

    /// A backup ([`gerdu_api::image::BackupWriter`]) of the state as
    /// applied now, taken at `created_ms`. The capture begins here, under the
    /// apply lock; the items are encoded off the async workers while
    /// applying goes on (the capture copies on write), one chunk ahead of
    /// the reader, so the backup never holds a copy of the whole store.
    pub fn backup(&self, created_ms: u64) -> gerdu_api::BackupFile {
        let (capture, meta, index) = {
            let inner = self.shared.inner.lock();
            (self.shared.policy.begin_capture(), inner.meta.clone(), inner.last_applied.map_or(0, |l| l.index))
        };
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let mut writer = gerdu_api::image::BackupWriter::new(index, created_ms, &meta);
            let mut reading = true;
            capture.visit(&mut |k, item| {
                if reading {
                    writer.push(k, item);
                    if let Some(chunk) = writer.chunk() {
                        // The reader went away: stop encoding.
                        reading = tx.blocking_send(Ok(chunk)).is_ok();
                    }
                }
            });
            if reading {
                let _ = tx.blocking_send(Ok(writer.finish()));
            }
        });
        gerdu_api::BackupFile { applied_index: index, chunks: rx }
    }
}

impl SmShared {
    /// Replaces the store with a snapshot's items; answers how many.
    fn restore(&self, meta: &SnapshotMeta<NodeId, Node>, data: Bytes) -> Result<usize, String> {
        let (sm_meta, items) = decode_image(data.clone())?;
        let count = items.len();
        let mut inner = self.inner.lock();
        self.policy.clear();
        let mut evicted = Vec::new();
        for (k, item) in items {
            self.policy.insert(k, item, &mut evicted);
        }
        inner.meta = sm_meta;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        if self.dir.is_some() {
            inner.snapshot = Some((meta.clone(), data));
        } else {
            // In memory the store is the snapshot (see the module docs).
            inner.taken = Some(meta.clone());
        }
        Ok(count)
    }

    /// Applies one entry. An entry whose writes cannot be read (a batch is
    /// checked when it is made or received, so only a bug gets here) is a
    /// storage error (made by the caller): openraft stops the node rather
    /// than skip a write.
    fn apply_entry(
        &self,
        inner: &mut Inner,
        entry: &Entry,
        evicted: &mut u64,
        expired: &mut u64,
    ) -> Result<BatchReply, String> {
        let batch = match &entry.payload {
            EntryPayload::Normal(batch) => batch,
            EntryPayload::Membership(m) => {
                inner.last_applied = Some(entry.log_id);
                inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                return Ok(BatchReply::default());
            }
            EntryPayload::Blank => {
                inner.last_applied = Some(entry.log_id);
                return Ok(BatchReply::default());
            }
        };
        // Read before anything changes: an entry that does not read is not applied.
        let writes = batch.writes()?;
        inner.last_applied = Some(entry.log_id);
        let now = batch.now_ms.max(inner.meta.last_now);
        inner.meta.last_now = now;
        let mut st = ApplyState { now_ms: now, cas: inner.meta.cas, ..Default::default() };
        let replies = writes.apply(&*self.policy, &mut st);
        inner.meta.cas = st.cas;
        *evicted += st.evicted.len() as u64;
        *expired += st.expired;
        Ok(BatchReply(replies))
    }

    /// The metadata of a snapshot of the state now (the caller holds `inner`).
    fn snapshot_meta(inner: &mut Inner) -> SnapshotMeta<NodeId, Node> {
        inner.snapshots_built += 1;
        let snapshot_id = match inner.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshots_built),
            None => format!("--{}", inner.snapshots_built),
        };
        SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone(), snapshot_id }
    }

    /// Without storage: records that a snapshot covers the log up to the
    /// applied position (see the module docs).
    fn take(&self) -> Snapshot<TypeConfig> {
        let meta = {
            let mut inner = self.inner.lock();
            let meta = Self::snapshot_meta(&mut inner);
            inner.taken = Some(meta.clone());
            meta
        };
        self.metrics.snapshots.inc();
        Snapshot { meta, snapshot: Box::new(Cursor::new(Vec::new())) }
    }

    fn build(&self) -> Snapshot<TypeConfig> {
        // Begin the capture under the apply lock (so the image is exactly the
        // state at last_applied); the policy copies on write, so applying goes
        // on while the capture is collected and encoded.
        let started = std::time::Instant::now();
        let (capture, sm_meta, meta) = {
            let mut inner = self.inner.lock();
            let capture = self.policy.begin_capture();
            // Encoding the snapshot taken last (nothing applied since): its own meta.
            let meta = match &inner.taken {
                Some(t) if self.dir.is_none() && t.last_log_id == inner.last_applied => t.clone(),
                _ => Self::snapshot_meta(&mut inner),
            };
            (capture, inner.meta.clone(), meta)
        };
        // Encode while visiting: no intermediate copy of the whole store.
        // Room for the charged bytes (key + value + overhead per item) is a
        // little more than the encoding needs (key + value + 28).
        let mut writer = ImageWriter::new(&sm_meta, self.policy.used_bytes() as usize);
        capture.visit(&mut |k, item| writer.push(k, item));
        let items = writer.count();
        let data = writer.finish();
        tracing::debug!(items, bytes = data.len(), took = ?started.elapsed(), "snapshot built");
        if let Some(dir) = &self.dir {
            if let Err(e) = persist_snapshot(dir, &meta, &data) {
                tracing::error!("cannot keep the snapshot in {}: {e}", dir.display());
            }
            let mut inner = self.inner.lock();
            // An installed snapshot may have overtaken this one meanwhile.
            if inner.snapshot.as_ref().is_none_or(|(m, _)| m.last_log_id <= meta.last_log_id) {
                // Kept for followers, who get it from `get_current_snapshot`;
                // openraft takes only the meta of a snapshot it had built.
                inner.snapshot = Some((meta.clone(), Bytes::from(data)));
            }
            drop(inner);
            self.metrics.snapshots.inc();
            return Snapshot { meta, snapshot: Box::new(Cursor::new(Vec::new())) };
        }
        // Without storage nothing keeps the image: hand it out as encoded.
        Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        if self.shared.dir.is_none() {
            return Ok(self.shared.take());
        }
        let shared = self.shared.clone();
        // Encoding a large store is CPU work: keep it off the async workers.
        tokio::task::spawn_blocking(move || shared.build())
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, Node>), StorageError> {
        let inner = self.shared.inner.lock();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchReply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let (mut evicted, mut expired) = (0, 0);
        let mut answers = std::mem::take(&mut self.answers);
        let replies = {
            let mut inner = self.shared.inner.lock();
            let mut replies = Vec::new();
            let mut failed = None;
            for e in entries {
                match self.shared.apply_entry(&mut inner, &e, &mut evicted, &mut expired) {
                    // This node proposed it: its clients are answered here,
                    // openraft passes on an empty reply.
                    Ok(reply) => {
                        let handoff = match &e.payload {
                            EntryPayload::Normal(batch) => batch.handoff(),
                            _ => None,
                        };
                        match handoff {
                            Some(h) => {
                                answers.push((h.clone(), reply.0));
                                replies.push(BatchReply::default());
                            }
                            None => replies.push(reply),
                        }
                    }
                    Err(m) => {
                        failed = Some(StorageIOError::apply(e.log_id, &std::io::Error::other(m)));
                        break;
                    }
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(replies),
            }
        };
        // Answered even when a later entry failed: these were applied.
        for (h, r) in answers.drain(..) {
            h.applied(r);
        }
        self.answers = answers;
        let replies = replies?;
        let m = &self.shared.metrics;
        m.evictions.inc_by(evicted);
        m.expirations.inc_by(expired);
        let policy = &self.shared.policy;
        if policy.capacity() != 0 && policy.used_bytes() > policy.capacity() {
            self.shared.over_capacity.notify_one();
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = Bytes::from(snapshot.into_inner());
        if let Some(dir) = self.shared.dir.clone() {
            let (kept, data) = (meta.clone(), data.clone());
            tokio::task::spawn_blocking(move || persist_snapshot(&dir, &kept, &data))
                .await
                .map_err(std::io::Error::other)
                .and_then(|r| r)
                .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        }
        self.shared
            .restore(meta, data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &std::io::Error::other(e)))?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        if self.shared.dir.is_none() {
            // Nothing kept: encode the store now (see the module docs). No
            // snapshot taken yet means the whole log is still there.
            if self.shared.inner.lock().taken.is_none() {
                return Ok(None);
            }
            let shared = self.shared.clone();
            return tokio::task::spawn_blocking(move || Some(shared.build()))
                .await
                .map_err(|e| StorageIOError::read_snapshot(None, &e).into());
        }
        let inner = self.shared.inner.lock();
        Ok(inner
            .snapshot
            .as_ref()
            .map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(data.to_vec())) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gerdu_api::Item;
    use gerdu_policy_lru::Lru;

    #[test]
    fn snapshot_round_trip() {
        let lru = Lru::new(0, 4, true);
        let mut ev = Vec::new();
        for i in 0..100u64 {
            let meta = gerdu_api::ItemMeta::default().with_stale(i % 2 == 0);
            let item = Item { value: Bytes::from(format!("v{i}")), flags: i as u32, meta, cas: i, expires_at: i * 7 };
            lru.insert(Bytes::from(format!("k{i}")), item, &mut ev);
        }
        let meta = ImageMeta { cas: 100, last_now: 12345 };
        let mut writer = ImageWriter::new(&meta, 0);
        lru.begin_capture().visit(&mut |k, item| writer.push(k, item));
        let data = writer.finish();
        let (m2, items) = decode_image(Bytes::from(data.clone())).unwrap();
        assert_eq!(m2, meta);
        assert_eq!(items.len(), 100);
        for (k, item) in items {
            assert_eq!(lru.peek(&k), Some(item));
        }
        assert!(decode_image(Bytes::from(data[..data.len() - 1].to_vec())).is_err());
        assert!(decode_image(Bytes::from_static(b"garbage")).is_err());
    }
}
