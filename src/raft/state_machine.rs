//! The replicated state machine: applies log entries to the policy.
//!
//! Apply is the single writer of the store. Each entry's commands run through
//! [`gerdu_api::exec::apply`] with the entry's timestamp (kept monotonic: a
//! new leader's clock never moves time backwards) and the shared cas counter,
//! so every replica that applies the same log holds the same items, flags,
//! deadlines and cas values. Reads do not come through here; they go to the
//! policy directly and run in parallel with apply.
//!
//! Snapshots are the whole store in a small binary format (see
//! [`SnapshotWriter`]). A snapshot begins a point-in-time capture of the
//! policy under the apply lock ([`Policy::begin_capture`]: copy-on-write per
//! shard), so the image is exactly the state at `last_applied` while applying
//! goes on during the copy and the encoding.

use std::io::Cursor;
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes};
use gerdu_api::exec::{self, ApplyState};
use gerdu_api::{Item, Policy, Reply};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership};
use parking_lot::Mutex;

use super::types::{BatchReply, Entry, LogId, Node, NodeId, StorageError, TypeConfig};
use crate::metrics::ServerMetrics;

const MAGIC: &[u8; 8] = b"GERDUSN2";

/// State that must be identical on every replica besides the items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SmMeta {
    /// Last cas unique handed out.
    pub cas: u64,
    /// Latest entry timestamp applied.
    pub last_now: u64,
}

struct Inner {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, Node>,
    meta: SmMeta,
    snapshot: Option<(SnapshotMeta<NodeId, Node>, Bytes)>,
    snapshots_built: u64,
}

/// Shared by the state machine and its snapshot builders.
pub struct SmShared {
    policy: Arc<dyn Policy>,
    metrics: Arc<ServerMetrics>,
    inner: Mutex<Inner>,
}

/// The state machine handed to openraft.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<SmShared>,
}

impl StateMachine {
    /// A state machine over `policy`.
    pub fn new(policy: Arc<dyn Policy>, metrics: Arc<ServerMetrics>) -> Self {
        StateMachine {
            shared: Arc::new(SmShared {
                policy,
                metrics,
                inner: Mutex::new(Inner {
                    last_applied: None,
                    membership: StoredMembership::default(),
                    meta: SmMeta::default(),
                    snapshot: None,
                    snapshots_built: 0,
                }),
            }),
        }
    }

    /// The replica-identical metadata (cas counter, time).
    pub fn meta(&self) -> SmMeta {
        self.shared.inner.lock().meta.clone()
    }
}

/// Writes a snapshot: magic, cas, last_now, count, then per item
/// `key_len u32, key, value_len u32, value, flags u32, meta u32, cas u64,
/// expires_at u64` where `meta` holds only the replicated bits
/// ([`ItemMeta::replicated`](gerdu_api::ItemMeta::replicated))
/// (little endian). Items are written as they are visited; the count is
/// filled in at the end.
pub struct SnapshotWriter {
    buf: Vec<u8>,
    count: u64,
}

impl SnapshotWriter {
    /// A writer with room for about `size_hint` bytes of items.
    pub fn new(meta: &SmMeta, size_hint: usize) -> Self {
        let mut buf = Vec::with_capacity(32 + size_hint);
        buf.extend_from_slice(MAGIC);
        buf.put_u64_le(meta.cas);
        buf.put_u64_le(meta.last_now);
        buf.put_u64_le(0);
        SnapshotWriter { buf, count: 0 }
    }

    /// Appends one item.
    pub fn push(&mut self, key: &[u8], item: &Item) {
        let buf = &mut self.buf;
        buf.put_u32_le(key.len() as u32);
        buf.extend_from_slice(key);
        buf.put_u32_le(item.value.len() as u32);
        buf.extend_from_slice(&item.value);
        buf.put_u32_le(item.flags);
        buf.put_u32_le(item.meta.replicated().0);
        buf.put_u64_le(item.cas);
        buf.put_u64_le(item.expires_at);
        self.count += 1;
    }

    /// The encoded snapshot.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf[24..32].copy_from_slice(&self.count.to_le_bytes());
        self.buf
    }
}

/// Decodes a snapshot into (meta, items).
pub fn decode_snapshot(data: Bytes) -> Result<(SmMeta, Vec<(Bytes, Item)>), String> {
    let mut b = data;
    let need = |b: &Bytes, n: usize| {
        if b.remaining() < n { Err("snapshot truncated".to_string()) } else { Ok(()) }
    };
    need(&b, 32)?;
    if &b[..8] != MAGIC {
        return Err("not a gerdu snapshot".into());
    }
    b.advance(8);
    let meta = SmMeta { cas: b.get_u64_le(), last_now: b.get_u64_le() };
    let count = b.get_u64_le();
    let mut items = Vec::with_capacity(count.min(1 << 24) as usize);
    for _ in 0..count {
        need(&b, 4)?;
        let klen = b.get_u32_le() as usize;
        need(&b, klen + 4)?;
        // Each key and value gets its own allocation: items must not pin the
        // whole snapshot buffer for as long as any one of them lives.
        let key = gerdu_api::exec::detach(&b.split_to(klen));
        let vlen = b.get_u32_le() as usize;
        need(&b, vlen + 24)?;
        let value = gerdu_api::exec::detach(&b.split_to(vlen));
        let flags = b.get_u32_le();
        let meta = gerdu_api::ItemMeta(b.get_u32_le());
        let item = Item { value, flags, meta, cas: b.get_u64_le(), expires_at: b.get_u64_le() };
        items.push((key, item));
    }
    if b.has_remaining() {
        return Err("trailing bytes after snapshot".into());
    }
    Ok((meta, items))
}

impl SmShared {
    fn apply_entry(&self, inner: &mut Inner, entry: &Entry, evicted: &mut u64, expired: &mut u64) -> BatchReply {
        inner.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => BatchReply::default(),
            EntryPayload::Membership(m) => {
                inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                BatchReply::default()
            }
            EntryPayload::Normal(batch) => {
                let now = batch.now_ms.max(inner.meta.last_now);
                inner.meta.last_now = now;
                let mut st = ApplyState { now_ms: now, cas: inner.meta.cas, ..Default::default() };
                let replies: Vec<Reply> =
                    batch.commands.iter().map(|c| exec::apply(&*self.policy, c, &mut st)).collect();
                inner.meta.cas = st.cas;
                *evicted += st.evicted.len() as u64;
                *expired += st.expired;
                BatchReply(replies)
            }
        }
    }

    fn build(&self) -> Snapshot<TypeConfig> {
        // Begin the capture under the apply lock (so the image is exactly the
        // state at last_applied); the policy copies on write, so applying goes
        // on while the capture is collected and encoded.
        let started = std::time::Instant::now();
        let (capture, sm_meta, meta) = {
            let mut inner = self.inner.lock();
            let capture = self.policy.begin_capture();
            inner.snapshots_built += 1;
            let snapshot_id = match inner.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, inner.snapshots_built),
                None => format!("--{}", inner.snapshots_built),
            };
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id,
            };
            (capture, inner.meta.clone(), meta)
        };
        // Encode while visiting: no intermediate copy of the whole store.
        // Room for the charged bytes (key + value + overhead per item) is a
        // little more than the encoding needs (key + value + 28).
        let mut writer = SnapshotWriter::new(&sm_meta, self.policy.used_bytes() as usize);
        capture.visit(&mut |k, item| writer.push(k, item));
        let items = writer.count;
        let data = Bytes::from(writer.finish());
        tracing::debug!(items, bytes = data.len(), took = ?started.elapsed(), "snapshot built");
        let mut inner = self.inner.lock();
        // An installed snapshot may have overtaken this one meanwhile.
        if inner.snapshot.as_ref().is_none_or(|(m, _)| m.last_log_id <= meta.last_log_id) {
            inner.snapshot = Some((meta.clone(), data.clone()));
        }
        drop(inner);
        self.metrics.snapshots.inc();
        Snapshot { meta, snapshot: Box::new(Cursor::new(data.to_vec())) }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
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
        let replies: Vec<BatchReply> = {
            let mut inner = self.shared.inner.lock();
            entries.into_iter().map(|e| self.shared.apply_entry(&mut inner, &e, &mut evicted, &mut expired)).collect()
        };
        let m = &self.shared.metrics;
        m.evictions.inc_by(evicted);
        m.expirations.inc_by(expired);
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
        let (sm_meta, items) = decode_snapshot(data.clone())
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &std::io::Error::other(e)))?;
        let mut inner = self.shared.inner.lock();
        let policy = &self.shared.policy;
        policy.clear();
        let mut evicted = Vec::new();
        for (k, item) in items {
            policy.insert(k, item, &mut evicted);
        }
        inner.meta = sm_meta;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
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
    use gerdu_policy_lru::Lru;

    #[test]
    fn snapshot_round_trip() {
        let lru = Lru::new(0, 4);
        let mut ev = Vec::new();
        for i in 0..100u64 {
            let meta = gerdu_api::ItemMeta::default().with_stale(i % 2 == 0);
            let item = Item { value: Bytes::from(format!("v{i}")), flags: i as u32, meta, cas: i, expires_at: i * 7 };
            lru.insert(Bytes::from(format!("k{i}")), item, &mut ev);
        }
        let meta = SmMeta { cas: 100, last_now: 12345 };
        let mut writer = SnapshotWriter::new(&meta, 0);
        lru.begin_capture().visit(&mut |k, item| writer.push(k, item));
        let data = writer.finish();
        let (m2, items) = decode_snapshot(Bytes::from(data.clone())).unwrap();
        assert_eq!(m2, meta);
        assert_eq!(items.len(), 100);
        for (k, item) in items {
            assert_eq!(lru.peek(&k), Some(item));
        }
        assert!(decode_snapshot(Bytes::from(data[..data.len() - 1].to_vec())).is_err());
        assert!(decode_snapshot(Bytes::from_static(b"garbage")).is_err());
    }
}
