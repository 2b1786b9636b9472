//! Links the built-in plugins. A plugin crate that nothing names is not
//! linked and its `inventory` registration silently vanishes, so each one is
//! named here once; `tests/registry.rs` asserts the registered set.

use gerdu_policy_lfu as _;
use gerdu_policy_lru as _;
use gerdu_policy_s3fifo as _;
use gerdu_policy_weak as _;
use gerdu_policy_wtinylfu as _;
use gerdu_protocol_grpc as _;
use gerdu_protocol_http as _;
use gerdu_protocol_memcached as _;
use gerdu_protocol_redis as _;

/// The plugins this build registers, by kind (for the registry test).
pub const BUILT_IN: &[(&str, &[&str])] = &[
    ("protocol", &["grpc", "http", "mcd", "redis"]),
    ("policy", &["lfu", "lru", "s3fifo", "weak", "wtinylfu"]),
    ("middleware", &["auth", "metrics", "raft"]),
];
