//! The raft log: in memory, and with `-storage DIR` also on disk.
//!
//! A `BTreeMap` of entries behind a mutex that is never held across an
//! `.await`. Snapshots purge it (openraft calls [`RaftLogStorage::purge`]
//! after each snapshot, keeping `raft.keep_logs` entries), so its memory stays
//! flat however many writes happen. With storage ([`MemLog::open`]) every
//! change is also written to the [journal](super::journal), which rebuilds
//! the log at start; appends are reported flushed once they are durable.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError, Vote};
use parking_lot::Mutex;

use super::journal::{self, Done, Fsync, Journal, Record, RecordRef};
use super::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// An entry and its size as [`entry_bytes`] counted it when it came, so
/// that purging a few thousand entries at once does not walk their commands
/// again on the raft task.
struct Held {
    entry: Entry,
    bytes: u64,
}

#[derive(Default)]
struct Inner {
    last_purged: Option<LogId>,
    log: BTreeMap<u64, Held>,
    /// Approximate bytes of the entries held (see [`entry_bytes`]).
    bytes: u64,
    committed: Option<LogId>,
    vote: Option<Vote<NodeId>>,
    /// Bytes in the journal file (with storage).
    journal_bytes: u64,
}

impl Inner {
    fn insert(&mut self, entry: Entry) {
        let bytes = entry_bytes(&entry);
        self.bytes += bytes;
        if let Some(old) = self.log.insert(entry.log_id.index, Held { entry, bytes }) {
            self.bytes -= old.bytes;
        }
    }

    fn truncate(&mut self, index: u64) {
        let removed = self.log.split_off(&index);
        self.bytes -= removed.values().map(|h| h.bytes).sum::<u64>();
    }

    fn purge(&mut self, log_id: LogId) -> BTreeMap<u64, Held> {
        self.last_purged = Some(log_id);
        let keep = self.log.split_off(&(log_id.index + 1));
        let purged = std::mem::replace(&mut self.log, keep);
        self.bytes -= purged.values().map(|h| h.bytes).sum::<u64>();
        purged
    }

    fn replay(&mut self, record: Record) {
        match record {
            Record::Entries(entries) => entries.into_iter().for_each(|e| self.insert(e)),
            Record::Truncate(index) => self.truncate(index),
            Record::Purge(log_id) => drop(self.purge(log_id)),
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
        }
    }

    /// The whole live state as journal frames (for a rewrite).
    fn frames(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(v) = self.vote {
            journal::frame(&RecordRef::Vote(v), &mut out);
        }
        journal::frame(&RecordRef::Committed(self.committed), &mut out);
        if let Some(p) = self.last_purged {
            journal::frame(&RecordRef::Purge(p), &mut out);
        }
        let entries: Vec<Entry> = self.log.values().map(|h| h.entry.clone()).collect();
        for chunk in entries.chunks(1024) {
            journal::frame(&RecordRef::Entries(chunk), &mut out);
        }
        out
    }
}

/// The log store; clones share the same log (the reader is a clone).
#[derive(Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<Inner>>,
    journal: Option<Journal>,
}

/// Approximate size of an entry: keys and values of its commands (or its
/// encoding, which holds them) plus a fixed cost per command and per entry.
pub fn entry_bytes(e: &Entry) -> u64 {
    match &e.payload {
        openraft::EntryPayload::Normal(batch) => match batch.decoded() {
            Some(commands) => 64 + commands.iter().map(|c| 48 + command_bytes(c) as u64).sum::<u64>(),
            None => 64 + 48 * batch.len() as u64 + batch.encoded().len() as u64,
        },
        _ => 64,
    }
}

fn command_bytes(c: &gerdu_api::Command) -> usize {
    use gerdu_api::Command as C;
    match c {
        C::Set(s) => s.key.len() + s.value.len(),
        C::SetMany { items, .. } => items.iter().map(|s| s.key.len() + s.value.len()).sum(),
        C::Append { key, value, .. } | C::SetRange { key, value, .. } => key.len() + value.len(),
        C::Delete { keys } | C::Evict { keys } | C::Sweep { keys } | C::GetAndTouch { keys, .. } => {
            keys.iter().map(|k| k.len()).sum()
        }
        C::Incr { key, .. } | C::Touch { key, .. } | C::GetDelete { key } => key.len(),
        C::Rename { from, to, .. } | C::Copy { from, to, .. } => from.len() + to.len(),
        _ => 0,
    }
}

impl MemLog {
    /// The log kept in `dir` too: replays the journal there (creating the
    /// directory if needed) and appends to it from now on.
    pub fn open(dir: &std::path::Path, fsync: Fsync) -> std::io::Result<MemLog> {
        std::fs::create_dir_all(dir)?;
        let (records, valid) = journal::replay(&dir.join(journal::FILE))?;
        let mut inner = Inner::default();
        let count = records.len();
        records.into_iter().for_each(|r| inner.replay(r));
        inner.journal_bytes = valid;
        tracing::info!(
            dir = %dir.display(),
            records = count,
            entries = inner.log.len(),
            last = ?inner.log.values().next_back().map(|h| h.entry.log_id.index),
            "raft log loaded"
        );
        let journal = Journal::open(dir, valid, fsync)?;
        Ok(MemLog { inner: Arc::new(Mutex::new(inner)), journal: Some(journal) })
    }

    /// Queues a record for the journal, if there is one.
    fn record(&self, inner: &mut Inner, record: RecordRef<'_>, done: Done) -> Option<Done> {
        let Some(journal) = &self.journal else { return Some(done) };
        let mut frames = Vec::new();
        journal::frame(&record, &mut frames);
        inner.journal_bytes += frames.len() as u64;
        journal.append(frames, done);
        None
    }

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
        Ok(self.inner.lock().log.range(range).map(|(_, h)| h.entry.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock();
        let last = inner.log.values().next_back().map(|h| h.entry.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut inner = self.inner.lock();
            inner.vote = Some(*vote);
            if self.record(&mut inner, RecordRef::Vote(*vote), Done::Notify(tx)).is_some() {
                return Ok(());
            }
        }
        // The vote must be on disk before the node acts on it.
        let result = rx.await.unwrap_or_else(|_| Err(std::io::Error::other("the raft journal writer stopped")));
        result.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        Ok(self.inner.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        inner.committed = committed;
        self.record(&mut inner, RecordRef::Committed(committed), Done::Nothing);
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
        let entries: Vec<Entry> = entries.into_iter().collect();
        let pending = {
            let mut inner = self.inner.lock();
            let pending = self.record(&mut inner, RecordRef::Entries(&entries), Done::Flushed(callback));
            entries.into_iter().for_each(|e| inner.insert(e));
            pending
        };
        // Without a journal the entries are "flushed" once in memory.
        if let Some(Done::Flushed(callback)) = pending {
            callback.log_io_completed(Ok(()));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut inner = self.inner.lock();
        inner.truncate(log_id.index);
        self.record(&mut inner, RecordRef::Truncate(log_id.index), Done::Nothing);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let purged = {
            let mut inner = self.inner.lock();
            let purged = inner.purge(log_id);
            self.record(&mut inner, RecordRef::Purge(log_id), Done::Nothing);
            if let Some(journal) = &self.journal
                && inner.journal_bytes > journal::REWRITE_FLOOR.max(2 * inner.bytes)
            {
                let frames = inner.frames();
                inner.journal_bytes = frames.len() as u64;
                journal.rewrite(frames);
            }
            purged
        };
        // Freeing thousands of entries is not free: do it off the raft
        // task, an entry at a time between other work. (On another thread
        // it would cost more: mimalloc hands blocks freed by a foreign
        // thread back to their owner, which collects them later, in bursts.)
        tokio::spawn(async move {
            for entry in purged.into_values() {
                drop(entry);
                tokio::task::yield_now().await;
            }
        });
        Ok(())
    }
}
