//! The types openraft is instantiated with.
//!
//! Node ids: gerdu names nodes with strings (`-id master`); openraft wants a
//! number. [`node_id`] hashes the name (FNV-1a 64), and the [`Node`] record
//! carries the name and addresses, so the mapping is never needed backwards.

use gerdu_api::Reply;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Cursor;

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

pub use super::batch::Batch;

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
    #[test]
    fn node_ids_are_stable_and_distinct() {
        assert_eq!(super::node_id("master"), super::node_id("master"));
        assert_ne!(super::node_id("node1"), super::node_id("node2"));
    }
}
