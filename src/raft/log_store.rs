//! The in-memory raft log (used when `-storage` is not given).
//!
//! A `BTreeMap` of entries behind a mutex that is never held across an
//! `.await`. Snapshots purge it (openraft calls [`RaftLogStorage::purge`]
//! after each snapshot, keeping `raft.keep_logs` entries), so its memory stays
//! flat however many writes happen.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, Vote};
use parking_lot::Mutex;

use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

#[derive(Default)]
struct Inner {
    last_purged: Option<LogId>,
    log: BTreeMap<u64, Entry>,
    /// Approximate bytes of the entries held (see [`entry_bytes`]).
    bytes: u64,
    committed: Option<LogId>,
    vote: Option<Vote<NodeId>>,
}

/// The in-memory log store; clones share the same log (the reader is a clone).
#[derive(Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<Inner>>,
}

/// Approximate size of an entry: keys and values of its commands plus a
/// fixed cost per command and per entry.
pub fn entry_bytes(e: &Entry) -> u64 {
    match &e.payload {
        openraft::EntryPayload::Normal(batch) => {
            64 + batch.commands.iter().map(|c| 48 + command_bytes(c) as u64).sum::<u64>()
        }
        _ => 64,
    }
}

fn command_bytes(c: &gerdu_api::Command) -> usize {
    use gerdu_api::Command as C;
    match c {
        C::Set(s) => s.key.len() + s.value.len(),
        C::SetMany { items, .. } => items.iter().map(|s| s.key.len() + s.value.len()).sum(),
        C::Append { key, value, .. } | C::SetRange { key, value, .. } => key.len() + value.len(),
        C::Delete { keys } | C::Evict { keys } | C::GetAndTouch { keys, .. } => keys.iter().map(|k| k.len()).sum(),
        C::Incr { key, .. } | C::Touch { key, .. } | C::GetDelete { key } => key.len(),
        C::Rename { from, to, .. } | C::Copy { from, to, .. } => from.len() + to.len(),
        _ => 0,
    }
}

impl MemLog {
    /// Approximate bytes held (for the byte-based snapshot trigger and metrics).
    pub fn bytes(&self) -> u64 {
        self.inner.lock().bytes
    }

    /// Entries currently held (for metrics and tests).
    pub fn len(&self) -> usize {
        self.inner.lock().log.len()
    }

    /// Whether the log holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.inner.lock().log.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock();
        let last = inner.log.values().next_back().map(|e| e.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.inner.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.inner.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.inner.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut inner = self.inner.lock();
            for e in entries {
                inner.bytes += entry_bytes(&e);
                if let Some(old) = inner.log.insert(e.log_id.index, e) {
                    inner.bytes -= entry_bytes(&old);
                }
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        let removed = inner.log.split_off(&log_id.index);
        inner.bytes -= removed.values().map(entry_bytes).sum::<u64>();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let purged = {
            let mut inner = self.inner.lock();
            inner.last_purged = Some(log_id);
            let keep = inner.log.split_off(&(log_id.index + 1));
            let purged = std::mem::replace(&mut inner.log, keep);
            inner.bytes -= purged.values().map(entry_bytes).sum::<u64>();
            purged
        };
        // Freeing thousands of entries is not free: do it off the raft task.
        tokio::task::spawn_blocking(move || drop(purged));
        Ok(())
    }
}
