//! Peer networking.
//!
//! This build runs single-node clusters only: a node never needs to reach a
//! peer, so every RPC answers `Unreachable`. The cluster work replaces this
//! module with the tonic transport of `proto/raft.proto`; nothing else in the
//! core changes, because openraft only sees [`RaftNetworkFactory`].

use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use super::types::{Node, NodeId, TypeConfig};

/// Builds [`NoPeer`] clients.
#[derive(Clone, Default)]
pub struct NoNetwork;

/// A peer that cannot be reached.
pub struct NoPeer {
    target: Node,
}

fn unreachable<E: std::error::Error>(target: &Node) -> RPCError<NodeId, Node, E> {
    let err = std::io::Error::other(format!("peer {target} unreachable: this build runs single-node clusters"));
    RPCError::Unreachable(Unreachable::new(&err))
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoPeer;

    async fn new_client(&mut self, _target: NodeId, node: &Node) -> NoPeer {
        NoPeer { target: node.clone() }
    }
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(unreachable(&self.target))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        Err(unreachable(&self.target))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(unreachable(&self.target))
    }
}
