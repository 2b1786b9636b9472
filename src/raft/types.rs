//! The types openraft is instantiated with.
//!
//! Node ids: gerdu names nodes with strings (`-id master`); openraft wants a
//! number. [`node_id`] hashes the name (FNV-1a 64), and the [`Node`] record
//! carries the name and addresses, so the mapping is never needed backwards.

use std::fmt;
use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use gerdu_api::{Command, Reply};
use serde::{Deserialize, Serialize};

/// openraft node id: the FNV-1a hash of the node's name.
pub type NodeId = u64;

/// What the membership stores about each node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node's name (`-id`).
    pub name: String,
    /// Peer (raft) address.
    pub raft_addr: String,
    /// HTTP address, for redirecting clients and `/join` by HTTP address.
    pub http_addr: String,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.raft_addr)
    }
}

/// The numeric id of a node name.
pub fn node_id(name: &str) -> NodeId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One log entry's payload: the writes of many clients, and the leader's
/// clock when it proposed them (expiry is judged against it on every node).
///
/// **Encoding.** On the peer wire and in the journal a batch is one
/// MessagePack binary: a format byte ([`BATCH_FORMAT`]), the clock (u64 LE),
/// and the commands in postcard (compact: no field names, varint lengths),
/// where MessagePack with field names would spell out every field of every
/// command. The encoding is made once, by the first peer or journal write
/// that needs it, and shared by the batch's clones (openraft clones an entry
/// for each follower). Journals written before it hold a batch as a
/// MessagePack map; those still decode.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Leader's unix time in ms when proposing.
    pub now_ms: u64,
    /// The writes, applied in order (a `Vec` behind the `Arc`: made from
    /// the proposer's or the decoder's vector without copying the commands).
    pub commands: Arc<Vec<Command>>,
    /// The encoding, once made.
    encoded: Arc<OnceLock<Bytes>>,
}

/// The first byte of an encoded [`Batch`]: how the rest is laid out.
pub const BATCH_FORMAT: u8 = 1;

impl Batch {
    /// A batch of `commands` proposed at `now_ms`.
    pub fn new(now_ms: u64, commands: Vec<Command>) -> Self {
        Batch { now_ms, commands: Arc::new(commands), encoded: Arc::default() }
    }

    /// The batch's encoding (made on first use).
    pub fn encoded(&self) -> &Bytes {
        self.encoded.get_or_init(|| {
            let mut out = Vec::with_capacity(64 + 128 * self.commands.len());
            out.push(BATCH_FORMAT);
            out.extend_from_slice(&self.now_ms.to_le_bytes());
            // Writing plain data into a Vec cannot fail.
            postcard::to_extend(&self.commands[..], out).expect("postcard encoding of commands").into()
        })
    }

    /// Decodes [`Batch::encoded`]'s output. The commands' small keys and
    /// values become slices of `data` ([`gerdu_api::shared`]), and `data`
    /// is kept as the batch's encoding (a follower that becomes leader
    /// sends it on as it is).
    pub fn decode(data: Bytes) -> Result<Self, String> {
        let (&format, rest) = data.split_first().ok_or("an empty batch")?;
        if format != BATCH_FORMAT {
            return Err(format!("batch format {format} (this build reads {BATCH_FORMAT})"));
        }
        let (now, rest) = rest.split_first_chunk::<8>().ok_or("a batch cut short")?;
        let (commands, left): (Vec<Command>, _) =
            gerdu_api::shared::decode_from(&data, || postcard::take_from_bytes(rest)).map_err(|e| e.to_string())?;
        if !left.is_empty() {
            return Err(format!("{} bytes after a batch's commands", left.len()));
        }
        let now_ms = u64::from_le_bytes(*now);
        Ok(Batch { now_ms, commands: Arc::new(commands), encoded: Arc::new(OnceLock::from(data)) })
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

            /// A batch as journals before [`BATCH_FORMAT`] hold it.
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
        write!(f, "Batch({} commands @{})", self.commands.len(), self.now_ms)
    }
}

/// The replies to a [`Batch`], aligned with its commands.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BatchReply(pub Vec<Reply>);

openraft::declare_raft_types!(
    /// gerdu's raft type configuration.
    pub TypeConfig:
        D = Batch,
        R = BatchReply,
        NodeId = NodeId,
        Node = Node,
        SnapshotData = Cursor<Vec<u8>>,
);

/// The raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// Storage errors.
pub type StorageError = openraft::StorageError<NodeId>;

#[cfg(test)]
mod tests {
    use super::*;
    use gerdu_api::{Expiry, SetCommand};

    #[test]
    fn batches_round_trip_compactly_and_old_journals_still_decode() {
        let mut set = SetCommand::new("key:1", vec![7u8; 100]);
        set.expiry = Expiry::In(5_000);
        set.flags = 42;
        let commands = vec![Command::Set(set), Command::Delete { keys: vec!["a".into(), "b".into()] }];
        let batch = Batch::new(1_700_000_000_123, commands.clone());
        let wire = rmp_serde::to_vec_named(&batch).unwrap();
        let back: Batch = rmp_serde::from_slice(&wire).unwrap();
        assert_eq!((back.now_ms, &back.commands[..]), (batch.now_ms, &commands[..]));
        // No field names: the 100-byte value, the keys and a little framing.
        assert!(wire.len() < 100 + 40, "{} bytes", wire.len());
        // Decoded from a peer frame, the batch keeps its bytes as its
        // encoding, and the small keys and values are slices of it too.
        let frame = Bytes::from(wire.clone());
        let shared: Batch = gerdu_api::shared::decode_from(&frame, || rmp_serde::from_slice(&frame)).unwrap();
        let in_frame = |p: *const u8| frame.as_ptr_range().contains(&p);
        assert!(in_frame(shared.encoded().as_ptr()));
        let Command::Set(s) = &shared.commands[0] else { panic!("{shared}") };
        assert!(in_frame(s.key.as_ptr()) && in_frame(s.value.as_ptr()));
        assert_eq!(&shared.commands[..], &commands[..]);
        // The clones share one encoding.
        assert!(std::ptr::eq(batch.clone().encoded().as_ptr(), batch.encoded().as_ptr()));

        // A batch as journals held it before: a map with field names.
        #[derive(Serialize)]
        struct Named<'a> {
            now_ms: u64,
            commands: &'a [Command],
        }
        let old = rmp_serde::to_vec_named(&Named { now_ms: 9, commands: &commands }).unwrap();
        let back: Batch = rmp_serde::from_slice(&old).unwrap();
        assert_eq!((back.now_ms, &back.commands[..]), (9, &commands[..]));

        // Damage is an error, not a panic.
        let data = batch.encoded();
        assert!(Batch::decode(data.slice(..data.len() - 1)).is_err());
        assert!(Batch::decode(Bytes::from_static(&[2])).is_err());
        assert!(Batch::decode(Bytes::new()).is_err());
        let mut trailing = data.to_vec();
        trailing.push(0);
        assert!(Batch::decode(trailing.into()).is_err());
    }

    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(super::node_id("master"), super::node_id("master"));
        assert_ne!(super::node_id("node1"), super::node_id("node2"));
    }
}
