//! The on-disk raft log behind `-storage DIR`: an append-only journal of
//! checksummed records, replayed into the in-memory log at start.
//!
//! File `DIR/raft.log` is a sequence of frames `len u32 LE, crc32 u32 LE,
//! payload` where the payload is a MessagePack [`Record`]: appended entries,
//! a truncation, a purge, the vote, the committed id. Replay applies them in
//! order; a frame cut short or failing its checksum at the end (a crash in
//! the middle of a write) ends the replay and is cut off the file.
//!
//! One writer thread owns the file. It writes every record queued, then
//! makes them durable with one `fdatasync` (group commit below raft's own
//! batching) before it reports the appends flushed to openraft — so with
//! `raft.fsync = "always"` (the default) a write is acknowledged only once
//! it is on disk. `"never"` leaves flushing to the OS: it survives a crash
//! of the process, not of the machine. The vote is always synced before
//! the node acts on it.
//!
//! The journal is rewritten (live entries, vote, committed, purge point, to
//! a new file renamed over the old one) when it holds more than twice the
//! bytes of the live log and at least [`REWRITE_FLOOR`].

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;

use openraft::Vote;
use openraft::storage::LogFlushed;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::types::{Entry, LogId, NodeId, TypeConfig};

/// Journal size below which it is never rewritten.
pub const REWRITE_FLOOR: u64 = 64 << 20;

/// Name of the journal file in the storage directory.
pub const FILE: &str = "raft.log";

/// When appended records are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// Before the append is reported flushed (a write is acknowledged once on disk).
    #[default]
    Always,
    /// Left to the OS.
    Never,
}

/// One journal record (decoding side).
#[derive(Debug, Deserialize)]
pub enum Record {
    /// Entries appended (they replace entries at the same indexes).
    Entries(Vec<Entry>),
    /// Entries from this index on removed.
    Truncate(u64),
    /// Entries up to and including this id removed.
    Purge(LogId),
    /// The vote.
    Vote(Vote<NodeId>),
    /// The committed id.
    Committed(Option<LogId>),
}

/// One journal record (encoding side, borrowing).
#[derive(Debug, Serialize)]
pub enum RecordRef<'a> {
    /// See [`Record::Entries`].
    Entries(&'a [Entry]),
    /// See [`Record::Truncate`].
    Truncate(u64),
    /// See [`Record::Purge`].
    Purge(LogId),
    /// See [`Record::Vote`].
    Vote(Vote<NodeId>),
    /// See [`Record::Committed`].
    Committed(Option<LogId>),
}

/// Encodes one record as a frame.
pub fn frame(record: &RecordRef<'_>, out: &mut Vec<u8>) {
    let payload = rmp_serde::to_vec_named(record).expect("MessagePack encoding of a journal record");
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
}

/// Reads every whole, valid record of the journal at `path`, and the length
/// of the valid prefix.
pub fn replay(path: &Path) -> io::Result<(Vec<Record>, u64)> {
    let mut data = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut data)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    }
    let mut records = Vec::new();
    let mut at = 0usize;
    while data.len() - at >= 8 {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(payload) = data.get(at + 8..at + 8 + len) else { break };
        if crc32fast::hash(payload) != crc {
            break;
        }
        match rmp_serde::from_slice::<Record>(payload) {
            Ok(r) => records.push(r),
            Err(_) => break,
        }
        at += 8 + len;
    }
    if at < data.len() {
        tracing::warn!(
            path = %path.display(),
            valid = at,
            dropped = data.len() - at,
            "raft journal ends with an incomplete or corrupt record (a crash during a write); it is cut off"
        );
    }
    Ok((records, at as u64))
}

/// What to do when a job is on disk.
pub enum Done {
    /// Nothing.
    Nothing,
    /// Tell openraft the appended entries are flushed.
    Flushed(LogFlushed<TypeConfig>),
    /// Wake a waiter.
    Notify(oneshot::Sender<io::Result<()>>),
}

impl Done {
    fn complete(self, result: &io::Result<()>) {
        let copy = || match result {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        match self {
            Done::Nothing => {}
            Done::Flushed(cb) => cb.log_io_completed(copy()),
            Done::Notify(tx) => {
                let _ = tx.send(copy());
            }
        }
    }
}

enum Job {
    /// Frames appended to the journal.
    Append(Vec<u8>, Done),
    /// Frames that replace the whole journal.
    Rewrite(Vec<u8>),
}

/// The journal's writer; cheap to clone (a channel to the writer thread).
#[derive(Clone)]
pub struct Journal {
    jobs: std_mpsc::Sender<Job>,
}

impl Journal {
    /// Opens the journal in `dir` for appending after `valid` bytes (the
    /// replayed prefix; anything after it is cut off).
    pub fn open(dir: &Path, valid: u64, fsync: Fsync) -> io::Result<Journal> {
        let path = dir.join(FILE);
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path)?;
        file.set_len(valid)?;
        file.sync_all()?;
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer { dir: dir.to_path_buf(), path, file: BufWriter::new(append_at_end(file)?), fsync };
        std::thread::Builder::new().name("gerdu-journal".into()).spawn(move || writer.run(rx))?;
        Ok(Journal { jobs: tx })
    }

    /// Queues frames; `done` runs once they are written (and synced).
    pub fn append(&self, frames: Vec<u8>, done: Done) {
        if let Err(std_mpsc::SendError(Job::Append(_, done))) = self.jobs.send(Job::Append(frames, done)) {
            done.complete(&Err(io::Error::other("the raft journal writer stopped")));
        }
    }

    /// Queues a rewrite of the whole journal with `frames`.
    pub fn rewrite(&self, frames: Vec<u8>) {
        let _ = self.jobs.send(Job::Rewrite(frames));
    }
}

fn append_at_end(mut file: File) -> io::Result<File> {
    use std::io::Seek;
    file.seek(io::SeekFrom::End(0))?;
    Ok(file)
}

struct Writer {
    dir: PathBuf,
    path: PathBuf,
    file: BufWriter<File>,
    fsync: Fsync,
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Job>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            jobs.extend(rx.try_iter());
            let mut waiting = Vec::new();
            let mut result = Ok(());
            for job in jobs {
                match job {
                    Job::Append(frames, done) => {
                        if result.is_ok() {
                            result = self.file.write_all(&frames);
                        }
                        waiting.push(done);
                    }
                    Job::Rewrite(frames) => {
                        // Earlier appends must be durable before the old file goes.
                        let r = result.and_then(|_| self.sync()).and_then(|_| self.rewrite(&frames));
                        if let Err(e) = &r {
                            tracing::error!("raft journal rewrite failed: {e}");
                        }
                        result = r;
                    }
                }
            }
            let result = result.and_then(|_| self.sync());
            if let Err(e) = &result {
                tracing::error!("raft journal write failed: {e}");
            }
            for done in waiting {
                done.complete(&result);
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.fsync == Fsync::Always {
            self.file.get_ref().sync_data()?;
        }
        Ok(())
    }

    fn rewrite(&mut self, frames: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(frames)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()?;
        self.file = BufWriter::new(append_at_end(OpenOptions::new().write(true).open(&self.path)?)?);
        Ok(())
    }
}
