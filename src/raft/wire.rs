//! The peer protocol's payloads.
//!
//! `proto/raft.proto` carries openraft's own messages as MessagePack (with
//! field names, so serde attributes such as `skip_serializing_if` stay
//! safe) inside `Blob`s; forwarded client requests use [`ForwardRequest`]
//! and [`ForwardResponse`]. A log entry's payload, the bulk of the traffic,
//! is one MessagePack binary inside that: the compact encoding of
//! [`super::batch::Batch`], made once per entry whatever the followers. A
//! follower decodes an AppendEntries frame without copying its writes: the
//! frame becomes shared `Bytes`, and each entry's batch and the small keys
//! and values in it are slices of it ([`gerdu_api::shared`]); the frame is
//! freed when the log no longer holds any of its entries.

use gerdu_api::{Command, PipelineError, ReadConsistency, Reply};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Code generated from `proto/raft.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("gerdu.raft");
}

/// Encodes a value for a `Blob`.
pub fn encode<T: Serialize>(value: &T) -> bytes::Bytes {
    // Serializing plain data into a Vec cannot fail.
    rmp_serde::to_vec_named(value).expect("MessagePack encoding of a raft message").into()
}

/// Decodes a `Blob`; a malformed one is the sender's bug, reported as
/// `INVALID_ARGUMENT` (server side) or a network error (client side).
pub fn decode<T: DeserializeOwned>(data: &[u8]) -> Result<T, String> {
    rmp_serde::from_slice(data).map_err(|e| format!("malformed peer message: {e}"))
}

/// A client request that a follower hands to the leader.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// Read consistency of the request's reads.
    pub consistency: ReadConsistency,
    /// The commands, in order.
    pub commands: Vec<Command>,
}

/// The leader's answer to a [`ForwardRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardResponse {
    /// Executed: one reply per command, or why the whole request failed.
    Done(Result<Vec<Reply>, PipelineError>),
    /// The receiver does not lead (any more): it did the request's first
    /// commands, one reply each here (often none), and nothing of the rest,
    /// which the sender sends on to the leader.
    Moved(Vec<Reply>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use gerdu_api::SetCommand;

    #[test]
    fn forward_messages_round_trip() {
        let req = ForwardRequest {
            consistency: ReadConsistency::Leader,
            commands: vec![
                Command::Set(SetCommand::new("k", vec![0u8, 255, 7])),
                Command::Get { keys: vec!["k".into()] },
            ],
        };
        let back: ForwardRequest = decode(&encode(&req)).unwrap();
        assert_eq!(back.commands, req.commands);
        assert_eq!(back.consistency, ReadConsistency::Leader);
        let resp = ForwardResponse::Done(Err(PipelineError::Unavailable("x".into())));
        let back: ForwardResponse = decode(&encode(&resp)).unwrap();
        assert!(matches!(back, ForwardResponse::Done(Err(PipelineError::Unavailable(m))) if m == "x"));
        assert!(decode::<ForwardResponse>(b"\xc1garbage").is_err());
    }
}
