//! A log entry's payload ([`Batch`]) and its encoding.
//!
//! **Encoding** ([`BATCH_FORMAT`] 2). On the peer wire and in the journal a
//! batch is one MessagePack binary: the format byte, the leader's clock (u64
//! LE), the number of commands (a LEB128 varint), then one record per
//! command:
//!
//! - a `set` (the bulk of every log): tag 0, the key and the value (each a
//!   varint length and the bytes), the flags (varint), the expiry (a code
//!   byte: never, keep, in, at; the last two with a varint), the condition
//!   (always, if absent, if present, if cas with a varint), and a bit byte
//!   (return the old item, invalidate, an explicit cas follows as a varint);
//! - any other command: tag 1 and the command in postcard.
//!
//! A `set` is written and read field by field, without serde: postcard's
//! generic path cost the leader about 340 instructions per `set`.
//!
//! **Applied from the encoding.** A replicated or journaled batch is kept as
//! its encoding alone ([`Batch::packed`] on the leader, [`Batch::decode`] on
//! a follower): when it is applied, [`Batch::writes`] reads each `set`'s key
//! and value as slices of the encoding ([`SetRef`]), and the store copies
//! them into its entries. No `Bytes` is made per key or value: a follower
//! used to make two per `set` when it received the entry (an atomic
//! reference count on the peer frame each) and drop them when the log was
//! compacted (two more), and the leader pointed its commands' keys and
//! values into the encoding the same way. The log keeps one buffer per entry,
//! never a client's read buffer. A long value (over
//! [`PACK_LIMIT`](gerdu_api::store::PACK_LIMIT) bytes) the leader's client
//! sent stays in its own `Bytes` beside the encoding, so the leader's store
//! shares it rather than copy it; a follower copies it out of the encoding,
//! so that a stored value never keeps a frame alive. A follower checks
//! every record when the entry arrives (a damaged batch is refused then, as
//! before), without building anything.
//!
//! **A sole voter without storage** needs no encoding, and would only pay
//! for copying its large values into one: its proposer uses
//! [`Batch::gathered`] (the commands, their small keys and values copied into
//! one buffer); the encoding is made only if a node joins and asks for the
//! entry.
//!
//! **Older encodings** still decode: format 1 (the whole command list in
//! postcard), and a MessagePack map with field names (journals before
//! that). A cluster's nodes must run builds that share the format: a node
//! that meets a newer one refuses the entry by name.

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use gerdu_api::command::{SetRef, is_small};
use gerdu_api::exec::{self, ApplyState, Write};
use gerdu_api::{Command, Condition, Expiry, Policy, Reply, SetCommand, Value};
use serde::{Deserialize, Serialize};

use super::handoff::Handoff;

/// The first byte of an encoded [`Batch`]: how the rest is laid out.
pub const BATCH_FORMAT: u8 = 2;
/// The format before [`BATCH_FORMAT`]: the commands in postcard. Read only.
const POSTCARD_FORMAT: u8 = 1;

/// Where the records of a format 2 encoding start: after the format byte
/// and the clock.
const HEADER: usize = 9;

/// Record tags.
const SET: u8 = 0;
const OTHER: u8 = 1;

/// One log entry's payload: the writes of many clients, and the leader's
/// clock when it proposed them (expiry is judged against it on every node).
/// Clones share everything (openraft clones an entry for each follower).
#[derive(Clone, Debug)]
pub struct Batch {
    /// Leader's unix time in ms when proposing.
    pub now_ms: u64,
    body: Body,
    /// On the node that proposed it, in memory only: whom to answer once
    /// it is applied ([`Handoff`]). Never encoded.
    handoff: Option<Arc<Handoff>>,
}

#[derive(Clone, Debug)]
enum Body {
    /// The writes as commands (a sole voter's batch, an older format's),
    /// and their encoding once made.
    Commands(Arc<Owned>),
    /// A format 2 encoding whose records all read, and how many there are.
    /// `large`: the long values of the `set`s, in order, as the leader's
    /// clients sent them (empty on a follower).
    Encoded { data: Bytes, count: usize, large: Arc<[Bytes]> },
}

/// The commands a [`Body::Commands`] owns and their encoding once made (one
/// allocation for both).
#[derive(Debug)]
struct Owned {
    commands: Vec<Command>,
    encoded: OnceLock<Bytes>,
}

/// A batch's writes, ready to apply ([`Batch::writes`]).
pub enum Writes<'a> {
    /// The commands the batch holds.
    Commands(&'a [Command]),
    /// Read from the encoding.
    Read(Vec<Write<'a>>),
}

impl Writes<'_> {
    /// How many writes there are.
    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Writes::Commands(c) => c.len(),
            Writes::Read(w) => w.len(),
        }
    }

    /// Applies them in order ([`exec::apply_all`] or [`exec::apply_writes`]).
    pub fn apply(&self, store: &dyn Policy, st: &mut ApplyState) -> Vec<Reply> {
        match self {
            Writes::Commands(c) => exec::apply_all(store, c, st),
            Writes::Read(w) => exec::apply_writes(store, w, st),
        }
    }
}

impl Batch {
    /// A batch of `commands` proposed at `now_ms`; the encoding is made on
    /// first use.
    pub fn new(now_ms: u64, commands: Vec<Command>) -> Self {
        Batch { now_ms, body: Body::Commands(Arc::new(Owned { commands, encoded: OnceLock::new() })), handoff: None }
    }

    /// The proposer's batch when nothing needs its encoding at once (a sole
    /// voter without storage): the commands of `parts` (one part per client
    /// request, in order) in one vector, their small keys and values copied
    /// into one buffer, in place of the clients' read buffers they were
    /// slices of; the encoding is made if a peer or a journal ever asks for
    /// it. Large values are not copied again. `parts` is left empty, its
    /// room kept for the next batch.
    pub fn gathered(now_ms: u64, parts: &mut Vec<Vec<Command>>) -> Self {
        let mut commands = Vec::with_capacity(parts.iter().map(Vec::len).sum());
        parts.drain(..).for_each(|p| commands.extend(p));
        gerdu_api::command::pack_small(&mut commands);
        Batch::new(now_ms, commands)
    }

    /// The proposer's batch when it is replicated or journaled: the
    /// commands of `parts` (one part per client request, in order) encoded
    /// at once and kept as the encoding (see the module docs), with the long
    /// values of their `set`s moved out; the rest of the commands (slices of
    /// the clients' read buffers) is dropped. The parts are never gathered
    /// into one vector: the encoding is the batch. `parts` is left empty,
    /// its room kept for the next batch.
    pub fn packed(now_ms: u64, parts: &mut Vec<Vec<Command>>) -> Self {
        let count = parts.iter().map(Vec::len).sum();
        let data = Bytes::from(encode(now_ms, count, parts.iter().flatten()));
        let large = parts
            .iter_mut()
            .flatten()
            .filter_map(|c| match c {
                Command::Set(s) if !is_small(&s.value) => Some(std::mem::take(&mut s.value)),
                _ => None,
            })
            .collect();
        parts.clear();
        Batch { now_ms, body: Body::Encoded { data, count, large }, handoff: None }
    }

    /// The batch, its clients to be answered through `handoff` when it is
    /// applied on this node.
    pub fn with_handoff(mut self, handoff: Arc<Handoff>) -> Self {
        self.handoff = Some(handoff);
        self
    }

    /// Whom to answer when the batch is applied, on the node that proposed it.
    pub fn handoff(&self) -> Option<&Arc<Handoff>> {
        self.handoff.as_ref()
    }

    /// How many commands the batch holds.
    pub fn len(&self) -> usize {
        match &self.body {
            Body::Commands(owned) => owned.commands.len(),
            Body::Encoded { count, .. } => *count,
        }
    }

    /// Whether the batch holds no command.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The commands, when the batch holds them as such (not read from an
    /// encoding).
    pub fn decoded(&self) -> Option<&[Command]> {
        match &self.body {
            Body::Commands(owned) => Some(&owned.commands),
            Body::Encoded { .. } => None,
        }
    }

    /// The batch's encoding (made on first use).
    pub fn encoded(&self) -> &Bytes {
        match &self.body {
            Body::Commands(owned) => {
                owned.encoded.get_or_init(|| encode(self.now_ms, owned.commands.len(), owned.commands.iter()).into())
            }
            Body::Encoded { data, .. } => data,
        }
    }

    /// The writes to apply, in order: the commands as they are, or each
    /// record read from the encoding (a `set`'s key and value borrowed from
    /// it, a long value from the leader's client shared).
    pub fn writes(&self) -> Result<Writes<'_>, String> {
        let (data, count, large) = match &self.body {
            Body::Commands(owned) => return Ok(Writes::Commands(&owned.commands)),
            Body::Encoded { data, count, large } => (data, *count, large),
        };
        let read = || -> Result<Vec<Write<'_>>, Damage> {
            let mut large = large.iter();
            let mut reader = Reader::new(data, HEADER);
            reader.varint()?;
            let mut writes = Vec::with_capacity(count);
            for _ in 0..count {
                // Record by record as `Reader::record`, with a set's long
                // value swapped for the client's own and built in place.
                match reader.byte()? {
                    SET => {
                        let mut s = reader.set()?;
                        if !is_small(s.value.as_ref())
                            && let Some(own) = large.next()
                            && own.len() == s.value.as_ref().len()
                        {
                            s.value = Value::Shared(own);
                        }
                        writes.push(Write::Set(s));
                    }
                    tag => writes.push(reader.other(tag)?),
                }
            }
            Ok(writes)
        };
        read().map(Writes::Read).map_err(|e| e.to_string())
    }

    /// The commands, owned (each small key and value of an encoded batch a
    /// slice of its encoding, each long one as [`Batch::writes`] has it):
    /// what the proposer gives back to its clients when an election kept
    /// the batch from committing, and what the tests compare.
    pub fn commands(&self) -> Result<Vec<Command>, String> {
        let (Body::Encoded { data, .. }, Writes::Read(writes)) = (&self.body, self.writes()?) else {
            return Ok(self.decoded().unwrap_or_default().to_vec());
        };
        let field = |b: &[u8]| if is_small(b) { data.slice_ref(b) } else { Bytes::copy_from_slice(b) };
        Ok(writes
            .into_iter()
            .map(|w| match w {
                Write::Set(s) => Command::Set(SetCommand {
                    key: field(s.key),
                    value: match s.value {
                        Value::Shared(own) => own.clone(),
                        Value::Borrowed(b) => field(b),
                    },
                    flags: s.flags,
                    expiry: s.expiry,
                    condition: s.condition,
                    return_old: s.return_old,
                    new_cas: s.new_cas,
                    invalidate: s.invalidate,
                }),
                Write::Command(c) => c.into_owned(),
            })
            .collect())
    }

    /// Reads [`Batch::encoded`]'s output (or format 1's). A format 2
    /// encoding is checked whole and kept as it is (its records are read
    /// again when applied); format 1's commands are decoded, their small
    /// keys and values slices of `data`.
    pub fn decode(data: Bytes) -> Result<Self, String> {
        let (&format, rest) = data.split_first().ok_or("an empty batch")?;
        let (now, _) = rest.split_first_chunk::<8>().ok_or("a batch cut short")?;
        let now_ms = u64::from_le_bytes(*now);
        match format {
            BATCH_FORMAT => {
                let count = Reader::new(&data, HEADER).check().map_err(|e| e.to_string())?;
                Ok(Batch { now_ms, body: Body::Encoded { data, count, large: Arc::new([]) }, handoff: None })
            }
            POSTCARD_FORMAT => {
                let (commands, left): (Vec<Command>, _) =
                    gerdu_api::shared::decode_from(&data, || postcard::take_from_bytes(&data[HEADER..]))
                        .map_err(|e| e.to_string())?;
                if !left.is_empty() {
                    return Err(format!("{} bytes after a batch's commands", left.len()));
                }
                Ok(Batch {
                    now_ms,
                    body: Body::Commands(Arc::new(Owned { commands, encoded: OnceLock::from(data) })),
                    handoff: None,
                })
            }
            other => Err(format!("batch format {other} (this build reads {BATCH_FORMAT} and older)")),
        }
    }
}

/// Encodes a batch of the `count` commands `commands` yields (the module
/// docs' format).
fn encode<'a>(now_ms: u64, count: usize, commands: impl Iterator<Item = &'a Command> + Clone) -> Vec<u8> {
    let size: usize = commands
        .clone()
        .map(|c| match c {
            Command::Set(s) => s.key.len() + s.value.len() + 16,
            _ => 64,
        })
        .sum();
    let mut out = Vec::with_capacity(20 + size);
    out.push(BATCH_FORMAT);
    out.extend_from_slice(&now_ms.to_le_bytes());
    varint(&mut out, count as u64);
    for c in commands {
        match c {
            Command::Set(s) => set_record(&mut out, s),
            other => {
                out.push(OTHER);
                // Writing plain data into a Vec cannot fail.
                out = postcard::to_extend(other, out).expect("postcard encoding of a command");
            }
        }
    }
    out
}

/// Writes a `set` record.
fn set_record(out: &mut Vec<u8>, s: &SetCommand) {
    out.push(SET);
    varint(out, s.key.len() as u64);
    out.extend_from_slice(&s.key);
    varint(out, s.value.len() as u64);
    out.extend_from_slice(&s.value);
    varint(out, u64::from(s.flags));
    match s.expiry {
        Expiry::Never => out.push(0),
        Expiry::Keep => out.push(1),
        Expiry::In(ms) => {
            out.push(2);
            varint(out, ms);
        }
        Expiry::At(ms) => {
            out.push(3);
            varint(out, ms);
        }
    }
    match s.condition {
        Condition::Always => out.push(0),
        Condition::IfAbsent => out.push(1),
        Condition::IfPresent => out.push(2),
        Condition::IfCas(cas) => {
            out.push(3);
            varint(out, cas);
        }
    }
    out.push(u8::from(s.return_old) | u8::from(s.invalidate) << 1 | u8::from(s.new_cas.is_some()) << 2);
    if let Some(cas) = s.new_cas {
        varint(out, cas);
    }
}

/// Appends `v` as LEB128.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads records from an encoding; every read is bounds-checked, and
/// damage is an error ([`Damage`]: small, so the reads' results stay in
/// registers; the message is made only for a damaged batch).
struct Reader<'a> {
    /// The encoding's bytes (read from), and the encoding itself (what
    /// another command's fields are slices of).
    data: &'a [u8],
    bytes: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader of `bytes` from `pos`.
    fn new(bytes: &'a Bytes, pos: usize) -> Self {
        Reader { data: bytes, bytes, pos }
    }
}

/// What was wrong with a damaged batch.
#[derive(Debug)]
enum Damage {
    Cut,
    LongVarint,
    LongFlags,
    Trailing(usize),
    Code(&'static str, u8),
    Postcard(postcard::Error),
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Cut => f.write_str("a batch cut short"),
            Damage::LongVarint => f.write_str("a varint over 64 bits in a batch"),
            Damage::LongFlags => f.write_str("set flags over 32 bits in a batch"),
            Damage::Trailing(n) => write!(f, "{n} bytes after a batch's commands"),
            Damage::Code(what, code) => write!(f, "{what} {code:#x} in a batch"),
            Damage::Postcard(e) => write!(f, "a command in a batch: {e}"),
        }
    }
}

impl<'a> Reader<'a> {
    #[inline(always)]
    fn byte(&mut self) -> Result<u8, Damage> {
        let b = *self.data.get(self.pos).ok_or(Damage::Cut)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, Damage> {
        let first = self.byte()?;
        if first < 0x80 {
            return Ok(u64::from(first));
        }
        self.long_varint(first)
    }

    #[cold]
    fn long_varint(&mut self, first: u8) -> Result<u64, Damage> {
        let mut v = u64::from(first & 0x7f);
        for shift in (7..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Damage::LongVarint)
    }

    /// A key or value, as the encoding's bytes.
    #[inline(always)]
    fn field(&mut self) -> Result<&'a [u8], Damage> {
        let len = self.varint()?;
        let data = self.data;
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| self.pos.checked_add(len))
            .filter(|&end| end <= data.len())
            .ok_or(Damage::Cut)?;
        let start = self.pos;
        self.pos = end;
        Ok(&data[start..end])
    }

    /// Reads the count and every record after it, to the end of the data;
    /// the count.
    fn check(mut self) -> Result<usize, Damage> {
        let n = self.varint()?;
        // Every record takes at least a byte, so a damaged count runs out
        // of data before it runs long.
        for _ in 0..n {
            self.record()?;
        }
        match self.data.len() - self.pos {
            0 => usize::try_from(n).map_err(|_| Damage::Cut),
            left => Err(Damage::Trailing(left)),
        }
    }

    /// One record: a `set` borrowed from the encoding, or another command.
    #[inline(always)]
    fn record(&mut self) -> Result<Write<'a>, Damage> {
        match self.byte()? {
            SET => Ok(Write::Set(self.set()?)),
            tag => self.other(tag),
        }
    }

    /// A record whose tag is not a `set`'s: another command (decoded, its
    /// small fields slices of the encoding), or damage.
    fn other(&mut self, tag: u8) -> Result<Write<'a>, Damage> {
        if tag != OTHER {
            return Err(Damage::Code("record tag", tag));
        }
        let rest = &self.data[self.pos..];
        let (command, left) =
            gerdu_api::shared::decode_from(self.bytes, || postcard::take_from_bytes(rest)).map_err(Damage::Postcard)?;
        self.pos = self.data.len() - left.len();
        Ok(Write::Command(Cow::Owned(command)))
    }

    /// A `set` record after its tag.
    #[inline(always)]
    fn set(&mut self) -> Result<SetRef<'a>, Damage> {
        let key = self.field()?;
        let value = self.field()?;
        let flags = u32::try_from(self.varint()?).map_err(|_| Damage::LongFlags)?;
        let expiry = match self.byte()? {
            0 => Expiry::Never,
            1 => Expiry::Keep,
            2 => Expiry::In(self.varint()?),
            3 => Expiry::At(self.varint()?),
            code => return Err(Damage::Code("expiry code", code)),
        };
        let condition = match self.byte()? {
            0 => Condition::Always,
            1 => Condition::IfAbsent,
            2 => Condition::IfPresent,
            3 => Condition::IfCas(self.varint()?),
            code => return Err(Damage::Code("condition code", code)),
        };
        let bits = self.byte()?;
        if bits & !0b111 != 0 {
            return Err(Damage::Code("set bits", bits));
        }
        let new_cas = if bits & 4 != 0 { Some(self.varint()?) } else { None };
        Ok(SetRef {
            key,
            value: Value::Borrowed(value),
            flags,
            expiry,
            condition,
            return_old: bits & 1 != 0,
            new_cas,
            invalidate: bits & 2 != 0,
        })
    }
}

impl Serialize for Batch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.encoded())
    }
}

impl<'de> Deserialize<'de> for Batch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Batch;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an encoded batch")
            }

            /// A slice of the buffer being decoded when it is a
            /// [`gerdu_api::shared::decode_from`] source (a peer frame), a copy
            /// otherwise: either way the commands then share it.
            fn visit_bytes<E: serde::de::Error>(self, data: &[u8]) -> Result<Batch, E> {
                let data = gerdu_api::shared::slice_of_source(data).unwrap_or_else(|| Bytes::copy_from_slice(data));
                Batch::decode(data).map_err(E::custom)
            }

            /// A batch as journals before format 1 hold it.
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Batch, A::Error> {
                #[derive(Deserialize)]
                struct Named {
                    now_ms: u64,
                    commands: Vec<Command>,
                }
                let named = Named::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Batch::new(named.now_ms, named.commands))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Batch({} commands @{})", self.len(), self.now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gerdu_api::Delta;
    use gerdu_api::store::PACK_LIMIT;
    use proptest::prelude::*;

    /// Sets with every option, short and long keys and values (both sides
    /// of the sharing limit), and other commands between them.
    fn commands() -> Vec<Command> {
        let mut out = Vec::new();
        let expiries = [Expiry::Never, Expiry::Keep, Expiry::In(5_000), Expiry::At(u64::MAX)];
        let conditions = [Condition::Always, Condition::IfAbsent, Condition::IfPresent, Condition::IfCas(1 << 40)];
        for (i, (expiry, condition)) in expiries.into_iter().zip(conditions).enumerate() {
            for len in [0, 1, PACK_LIMIT, PACK_LIMIT + 1, 70_000] {
                let mut s = SetCommand::new(format!("key:{i}:{len}"), vec![i as u8; len]);
                (s.expiry, s.condition, s.flags) = (expiry, condition, u32::MAX - i as u32);
                (s.return_old, s.invalidate, s.new_cas) = (i % 2 == 1, i >= 2, (i == 3).then_some(u64::MAX));
                out.push(Command::Set(s));
            }
            out.push(Command::Delete { keys: vec![format!("d{i}").into(), Bytes::from(vec![b'k'; PACK_LIMIT + 1])] });
        }
        out.push(Command::Set(SetCommand::new(vec![b'k'; PACK_LIMIT + 1], "long key")));
        out.push(Command::Incr { key: "n".into(), delta: Delta::Signed(-3) });
        out.push(Command::SetMany {
            items: vec![SetCommand::new("a", "1"), SetCommand::new("b", "2")],
            only_if_none_exist: true,
        });
        out.push(Command::Flush);
        out
    }

    /// `commands` as the proposer hands them over: one part per request,
    /// of `size` commands each (the last one shorter, an empty one first).
    fn parts(commands: &[Command], size: usize) -> Vec<Vec<Command>> {
        std::iter::once(Vec::new()).chain(commands.chunks(size).map(<[Command]>::to_vec)).collect()
    }

    /// Each small key and value of `c` lies in `data`, each large one outside it.
    fn check_sharing(c: &[Command], data: &Bytes) {
        let within = |b: &Bytes| data.as_ptr_range().contains(&b.as_ptr());
        for c in c {
            let fields: Vec<&Bytes> = match c {
                Command::Set(s) => vec![&s.key, &s.value],
                Command::Delete { keys } => keys.iter().collect(),
                Command::Incr { key, .. } => vec![key],
                _ => vec![],
            };
            for b in fields.into_iter().filter(|b| !b.is_empty()) {
                assert_eq!(within(b), b.len() <= PACK_LIMIT, "{} bytes in {c:?}", b.len());
            }
        }
    }

    #[test]
    fn batches_round_trip_and_share_their_encoding() {
        let commands = commands();
        let batch = Batch::new(1_700_000_000_123, commands.clone());
        let data = batch.encoded().clone();
        assert_eq!(data[0], BATCH_FORMAT);
        let back = Batch::decode(data.clone()).unwrap();
        assert_eq!(
            (back.now_ms, back.len(), &back.commands().unwrap()[..]),
            (batch.now_ms, commands.len(), &commands[..])
        );
        check_sharing(&back.commands().unwrap(), &data);
        assert!(std::ptr::eq(back.encoded().as_ptr(), data.as_ptr()), "a decoded batch keeps its bytes");
        // The clones share one encoding.
        assert!(std::ptr::eq(batch.clone().encoded().as_ptr(), batch.encoded().as_ptr()));

        // The proposer's batch: the same bytes, the same commands read
        // from them (the long values the clients' own).
        let packed = Batch::packed(batch.now_ms, &mut parts(&commands, 3));
        assert_eq!(packed.encoded(), &data);
        assert!(packed.decoded().is_none());
        assert_eq!(&packed.commands().unwrap()[..], &commands[..]);
        check_sharing(&packed.commands().unwrap(), packed.encoded());
        // A sole voter's: the same commands and, when asked for, the same bytes.
        let gathered = Batch::gathered(batch.now_ms, &mut parts(&commands, 3));
        assert_eq!(gathered.decoded(), Some(&commands[..]));
        assert_eq!(gathered.encoded(), &data);

        // Through MessagePack as a peer frame: the batch and its small
        // fields are slices of the frame.
        let frame = Bytes::from(rmp_serde::to_vec_named(&packed).unwrap());
        let shared: Batch = gerdu_api::shared::decode_from(&frame, || rmp_serde::from_slice(&frame)).unwrap();
        assert_eq!(&shared.commands().unwrap()[..], &commands[..]);
        assert!(frame.as_ptr_range().contains(&shared.encoded().as_ptr()));
        check_sharing(&shared.commands().unwrap(), &frame);
    }

    /// The store and the replies after `writes`, on a fresh store.
    fn applied(writes: &Writes<'_>) -> (Vec<Reply>, Vec<(Bytes, gerdu_api::Item)>) {
        let lru = gerdu_policy_lru::Lru::new(0, 4, true);
        let mut st = ApplyState { now_ms: 1_000, ..Default::default() };
        let replies = writes.apply(&lru, &mut st);
        let mut items = Vec::new();
        lru.begin_capture().visit(&mut |k, item| items.push((Bytes::copy_from_slice(k), item.clone())));
        items.sort_by(|a, b| a.0.cmp(&b.0));
        (replies, items)
    }

    #[test]
    fn applying_the_encoding_is_applying_the_commands() {
        // Without the fixture's last command (a flush).
        let commands: Vec<Command> = commands().into_iter().filter(|c| !matches!(c, Command::Flush)).collect();
        let direct: Vec<Write<'_>> = commands.iter().map(|c| Write::Command(Cow::Borrowed(c))).collect();
        let expected = applied(&Writes::Read(direct));
        assert!(expected.1.len() > 10, "the fixture stores items");

        // The leader's: long values shared with its clients' commands.
        let packed = Batch::packed(1, &mut parts(&commands, 2));
        let writes = packed.writes().unwrap();
        let Writes::Read(read) = &writes else { panic!("a packed batch is read from its encoding") };
        let own_long = read.iter().filter(|w| matches!(w, Write::Set(SetRef { value: Value::Shared(_), .. }))).count();
        let long = commands.iter().filter(|c| matches!(c, Command::Set(s) if !is_small(&s.value))).count();
        assert_eq!((own_long, long > 0), (long, true));
        assert_eq!(applied(&writes), expected);

        // A follower's: every set borrowed from the bytes that arrived.
        let back = Batch::decode(packed.encoded().clone()).unwrap();
        let writes = back.writes().unwrap();
        let Writes::Read(read) = &writes else { panic!("a decoded batch is read from its encoding") };
        assert!(read.iter().all(|w| !matches!(w, Write::Set(SetRef { value: Value::Shared(_), .. }))));
        assert_eq!(
            read.iter().filter(|w| matches!(w, Write::Set(_))).count(),
            commands.iter().filter(|c| matches!(c, Command::Set(_))).count()
        );
        assert_eq!(applied(&writes), expected);

        // A sole voter's: the commands themselves.
        assert_eq!(applied(&Batch::gathered(1, &mut parts(&commands, 2)).writes().unwrap()), expected);
    }

    #[test]
    fn a_set_costs_its_bytes_and_a_few_more() {
        let batch = Batch::new(9, vec![Command::Set(SetCommand::new("key:000001", vec![7u8; 100]))]);
        // Format, clock, count; then tag, two lengths, the bytes, flags, expiry, condition, bits.
        assert_eq!(batch.encoded().len(), 1 + 8 + 1 + 1 + 1 + 10 + 1 + 100 + 4);
    }

    #[test]
    fn older_formats_still_decode() {
        let commands = commands();
        // Format 1: the whole list in postcard.
        let mut v1 = vec![POSTCARD_FORMAT];
        v1.extend_from_slice(&7u64.to_le_bytes());
        let v1 = Bytes::from(postcard::to_extend(&commands[..], v1).unwrap());
        let back = Batch::decode(v1.clone()).unwrap();
        assert_eq!((back.now_ms, back.decoded()), (7, Some(&commands[..])));
        check_sharing(&back.commands().unwrap(), &v1);
        // Before it: a MessagePack map with field names.
        #[derive(Serialize)]
        struct Named<'a> {
            now_ms: u64,
            commands: &'a [Command],
        }
        let old = rmp_serde::to_vec_named(&Named { now_ms: 9, commands: &commands }).unwrap();
        let back: Batch = rmp_serde::from_slice(&old).unwrap();
        assert_eq!((back.now_ms, back.decoded()), (9, Some(&commands[..])));
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        // Cut at every length (the 70 KB values left out: the cuts would
        // copy them a hundred thousand times).
        let short = commands().into_iter().filter(|c| !matches!(c, Command::Set(s) if s.value.len() > 1000)).collect();
        let data = Batch::new(1, short).encoded().clone();
        for len in 0..data.len() {
            assert!(Batch::decode(data.slice(..len)).is_err(), "cut at {len}");
        }
        let mut trailing = data.to_vec();
        trailing.push(0);
        assert!(Batch::decode(trailing.into()).is_err());
        let head = |rest: &[u8]| {
            let mut v = vec![BATCH_FORMAT];
            v.extend_from_slice(&0u64.to_le_bytes());
            v.extend_from_slice(rest);
            Batch::decode(v.into())
        };
        assert!(head(&[0]).unwrap().is_empty());
        // A count the bytes cannot hold, an unknown tag, codes and bits out
        // of range, a length past the end, a varint over 64 bits.
        assert!(head(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(head(&[1, 9]).is_err());
        assert!(head(&[1, SET, 1, b'k', 0, 0, 4, 0, 0]).is_err());
        assert!(head(&[1, SET, 1, b'k', 0, 0, 0, 4, 0]).is_err());
        assert!(head(&[1, SET, 1, b'k', 0, 0, 0, 0, 8]).is_err());
        assert!(head(&[1, SET, 1, b'k', 0, 0, 0, 0, 0]).is_ok());
        assert!(head(&[1, SET, 9, b'k']).is_err());
        assert!(
            head(&[1, SET, 1, b'k', 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0]).is_err(),
            "flags over 32 bits"
        );
        assert!(head(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).is_err());
        assert!(Batch::decode(Bytes::from_static(&[3, 0, 0, 0, 0, 0, 0, 0, 0])).is_err(), "an unknown format");
    }

    fn any_set() -> impl Strategy<Value = Command> {
        let expiry = prop_oneof![
            Just(Expiry::Never),
            Just(Expiry::Keep),
            any::<u64>().prop_map(Expiry::In),
            any::<u64>().prop_map(Expiry::At)
        ];
        let condition = prop_oneof![
            Just(Condition::Always),
            Just(Condition::IfAbsent),
            Just(Condition::IfPresent),
            any::<u64>().prop_map(Condition::IfCas)
        ];
        // Keys and values on both sides of the sharing limit.
        let bytes = || prop::collection::vec(any::<u8>(), 0..PACK_LIMIT * 2);
        (bytes(), bytes(), any::<u32>(), expiry, condition, any::<(bool, bool)>(), any::<Option<u64>>()).prop_map(
            |(key, value, flags, expiry, condition, (return_old, invalidate), new_cas)| {
                Command::Set(SetCommand {
                    key: key.into(),
                    value: value.into(),
                    flags,
                    expiry,
                    condition,
                    return_old,
                    new_cas,
                    invalidate,
                })
            },
        )
    }

    fn any_command() -> impl Strategy<Value = Command> {
        prop_oneof![
            4 => any_set(),
            1 => prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..4)
                .prop_map(|keys| Command::Delete { keys: keys.into_iter().map(Bytes::from).collect() }),
            1 => Just(Command::Flush),
        ]
    }

    proptest! {
        #[test]
        fn any_batch_round_trips(now_ms: u64, commands in prop::collection::vec(any_command(), 0..12)) {
            let batch = Batch::new(now_ms, commands.clone());
            let back = Batch::decode(batch.encoded().clone()).unwrap();
            prop_assert_eq!((back.now_ms, &back.commands().unwrap()[..]), (now_ms, &commands[..]));
            check_sharing(&back.commands().unwrap(), batch.encoded());
            let packed = Batch::packed(now_ms, &mut parts(&commands, 1 + now_ms as usize % 4));
            prop_assert_eq!(packed.encoded(), batch.encoded());
            prop_assert_eq!(&packed.commands().unwrap()[..], &commands[..]);
            let gathered = Batch::gathered(now_ms, &mut parts(&commands, 1 + now_ms as usize % 4));
            prop_assert_eq!(gathered.decoded(), Some(&commands[..]));
            prop_assert_eq!(gathered.encoded(), batch.encoded());
        }

        /// Bytes overwritten anywhere, or the end cut: an error or a batch,
        /// never a panic; and a batch that decodes encodes back to itself.
        #[test]
        fn damaged_batches_never_panic(
            commands in prop::collection::vec(any_command(), 1..6),
            hits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut data = Batch::new(5, commands).encoded().to_vec();
            for (at, b) in hits {
                let i = at.index(data.len());
                data[i] = b;
            }
            data.truncate(1 + cut.index(data.len()));
            if let Ok(batch) = Batch::decode(data.into()) {
                // What was checked on arrival reads when applied.
                let commands = batch.commands().unwrap();
                prop_assert_eq!(batch.writes().unwrap().len(), commands.len());
                let again = Batch::new(batch.now_ms, commands.clone());
                let back = Batch::decode(again.encoded().clone()).unwrap();
                prop_assert_eq!(back.commands().unwrap(), commands);
            }
        }
    }
}
