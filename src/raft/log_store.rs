//! The raft log: in memory, and with `-storage DIR` also on disk.
//!
//! A ring of entries in index order ([`Entries`], a `VecDeque`: appends at
//! the back, purges at the front, lookups by subtraction) behind a mutex
//! that is never held across an `.await`. Snapshots purge it (openraft
//! calls [`RaftLogStorage::purge`] after each snapshot, keeping
//! `raft.keep_logs` entries), so its memory stays flat however many writes
//! happen. With storage ([`MemLog::open`]) every
//! change is also written to the [journal](super::journal), which rebuilds
//! the log at start; appends are reported flushed once they are durable.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
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

/// The entries held, in index order and without gaps (a raft log has
/// none): the one at position `i` has index `first + i`.
#[derive(Default)]
struct Entries {
    first: u64,
    held: VecDeque<Held>,
}

impl Entries {
    fn len(&self) -> usize {
        self.held.len()
    }

    /// One past the last index held.
    fn end(&self) -> u64 {
        self.first + self.held.len() as u64
    }

    fn last(&self) -> Option<&Held> {
        self.held.back()
    }

    fn iter(&self) -> impl Iterator<Item = &Held> {
        self.held.iter()
    }

    /// Puts `held` at its index: replaces the entry there, or appends.
    /// Returns the entry it replaced.
    fn insert(&mut self, held: Held) -> Option<Held> {
        let index = held.entry.log_id.index;
        if self.held.is_empty() {
            self.first = index;
        } else if index < self.first || index > self.end() {
            // openraft appends right after the last entry, or over one it
            // holds; anything else would leave a gap. Keep the log whole:
            // start it again at this entry.
            tracing::error!(index, first = self.first, end = self.end(), "raft log: an entry out of order");
            self.held.clear();
            self.first = index;
        }
        let at = (index - self.first) as usize;
        match self.held.get_mut(at) {
            Some(slot) => Some(std::mem::replace(slot, held)),
            None => {
                self.held.push_back(held);
                None
            }
        }
    }

    /// Removes the entries from `index` on and returns them.
    fn truncate(&mut self, index: u64) -> VecDeque<Held> {
        let at = index.saturating_sub(self.first).min(self.held.len() as u64) as usize;
        self.held.split_off(at)
    }

    /// Removes the entries up to `index`, inclusive, and returns them.
    fn purge(&mut self, index: u64) -> VecDeque<Held> {
        let n = (index + 1).saturating_sub(self.first).min(self.held.len() as u64) as usize;
        let rest = self.held.split_off(n);
        let purged = std::mem::replace(&mut self.held, rest);
        self.first = self.first.max(index + 1);
        purged
    }

    /// The entries whose indexes are in `range`.
    fn range(&self, range: impl RangeBounds<u64>) -> impl Iterator<Item = &Held> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let position = |i: u64| i.saturating_sub(self.first).min(self.held.len() as u64) as usize;
        let (from, to) = (position(start), position(end));
        self.held.range(from..to.max(from))
    }
}

#[derive(Default)]
struct Inner {
    last_purged: Option<LogId>,
    log: Entries,
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
        if let Some(old) = self.log.insert(Held { entry, bytes }) {
            self.bytes -= old.bytes;
        }
    }

    fn truncate(&mut self, index: u64) {
        let removed = self.log.truncate(index);
        self.bytes -= removed.iter().map(|h| h.bytes).sum::<u64>();
    }

    fn purge(&mut self, log_id: LogId) -> VecDeque<Held> {
        self.last_purged = Some(log_id);
        let purged = self.log.purge(log_id.index);
        self.bytes -= purged.iter().map(|h| h.bytes).sum::<u64>();
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
        let entries: Vec<Entry> = self.log.iter().map(|h| h.entry.clone()).collect();
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
            last = ?inner.log.last().map(|h| h.entry.log_id.index),
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
        Ok(self.inner.lock().log.range(range).map(|h| h.entry.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.inner.lock();
        let last = inner.log.last().map(|h| h.entry.log_id).or(inner.last_purged);
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
            for entry in purged {
                drop(entry);
                tokio::task::yield_now().await;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn held(index: u64, term: u64) -> Held {
        let log_id = LogId::new(CommittedLeaderId::new(term, 0), index);
        Held { entry: Entry { log_id, payload: EntryPayload::Blank }, bytes: 1 }
    }

    fn indexes<'a>(it: impl Iterator<Item = &'a Held>) -> Vec<(u64, u64)> {
        it.map(|h| (h.entry.log_id.index, h.entry.log_id.leader_id.term)).collect()
    }

    #[test]
    fn entries_append_replace_truncate_and_purge_by_index() {
        let mut log = Entries::default();
        for i in 5..10 {
            assert!(log.insert(held(i, 1)).is_none());
        }
        assert_eq!((log.first, log.end(), log.len()), (5, 10, 5));
        // Over an entry held: replaced, the later ones kept (as a map would).
        assert_eq!(log.insert(held(7, 2)).map(|h| h.entry.log_id.index), Some(7));
        assert_eq!(indexes(log.range(6..=8)), vec![(6, 1), (7, 2), (8, 1)]);
        assert_eq!(indexes(log.range(..6)), vec![(5, 1)]);
        assert_eq!(indexes(log.range(9..)), vec![(9, 1)]);
        assert_eq!(indexes(log.range(0..3)), vec![]);
        assert_eq!(indexes(log.range(12..20)), vec![]);
        assert_eq!(indexes(log.range((Bound::Included(8), Bound::Excluded(6)))), vec![]);
        // Truncate from 8: 8 and 9 go.
        assert_eq!(indexes(log.truncate(8).iter()), vec![(8, 1), (9, 1)]);
        assert_eq!(log.end(), 8);
        log.insert(held(8, 3));
        // Purge up to 6: 5 and 6 go, and lookups still find the rest.
        assert_eq!(indexes(log.purge(6).iter()), vec![(5, 1), (6, 1)]);
        assert_eq!(log.first, 7);
        assert_eq!(indexes(log.range(..)), vec![(7, 2), (8, 3)]);
        assert_eq!(indexes(log.range(8..9)), vec![(8, 3)]);
        // Purging past the end empties it; the next entry starts it again.
        assert_eq!(log.purge(20).len(), 2);
        assert_eq!(log.len(), 0);
        log.insert(held(21, 3));
        assert_eq!(indexes(log.range(..)), vec![(21, 3)]);
        // Truncating before the first entry empties it.
        assert_eq!(log.truncate(3).len(), 1);
        assert!(log.last().is_none());
    }

    #[test]
    fn an_entry_out_of_order_starts_the_log_again_at_it() {
        let mut log = Entries::default();
        log.insert(held(1, 1));
        log.insert(held(2, 1));
        log.insert(held(9, 1));
        assert_eq!(indexes(log.range(..)), vec![(9, 1)]);
        assert_eq!(indexes(log.range(9..10)), vec![(9, 1)]);
    }
}
