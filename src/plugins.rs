//! Links the built-in plugins. A plugin crate that nothing names is not
//! linked and its `inventory` registration silently vanishes, so each one is
//! named here once; `tests/registry.rs` asserts the registered set.

use gerdu_policy_lru as _;
use gerdu_protocol_http as _;
use gerdu_protocol_memcached as _;
use gerdu_protocol_redis as _;

/// The plugins this build registers, by kind (for the registry test).
pub const BUILT_IN: &[(&str, &[&str])] =
    &[("protocol", &["http", "mcd", "redis"]), ("policy", &["lru"]), ("middleware", &["auth", "metrics", "raft"])];
