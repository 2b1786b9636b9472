//! # gerdu-protocol-http — the HTTP protocol plugin
//!
//! Always on (port `http.port`, `-httpport`, default 8080). HTTP/1.1 and
//! HTTP/2 (h2c, or ALPN over TLS) with hyper 1.
//!
//! | route | method | answer |
//! |---|---|---|
//! | `/cache/{key}` | `PUT` body | 201 created, 204 updated, 412 if `If-None-Match: *` and the key exists |
//! | `/cache/{key}` | `GET`/`HEAD` | 200 + body (`ETag` = cas), 404 |
//! | `/cache/{key}` | `DELETE` | 200 deleted, 404 missing |
//! | `/metrics` | `GET` | Prometheus text |
//! | `/health` | `GET` | 200 JSON: id, role, leader, term, applied index, members |
//! | `/cluster` | `GET` | 200 JSON: state, term, leader and members with roles and addresses, log / committed / applied / snapshot index |
//! | `/join` | `POST {"id","addr"}` | adds a node: 200, 409 id or address taken, 503 cannot catch up |
//! | `/leave` | `POST` node id | removes a node: 200, 404 not a member |
//! | `/backup` | `GET` | the data as a backup file ([`gerdu_api::image`]), streamed as it is encoded: on the leader after a read-index round (every acknowledged write is in it); a follower answers 307 to the leader; `Gerdu-Consistency: local` takes this node's own state. Header `Gerdu-Applied-Index` |
//! | `/restore` | `POST` backup file | writes every item not yet expired (value, flags, deadline) as ordinary replicated writes, 1024 per raft entry; other keys stay. 200 `{"restored","expired","from_index"}`, 400 damaged file, 413 over `max_restore` |
//!
//! Keys are the percent-decoded rest of the path. `PUT ...?ttl=30` (seconds,
//! or with a unit: `500ms`, `30s`, `5m`, `2h`, `1d`) sets an expiry. The
//! `Gerdu-Consistency` request header (`linearizable`, `leader`, `local`)
//! overrides the read consistency of one request.
//!
//! `/join`, `/leave` and `/backup` need the credentials a write needs;
//! `/restore`'s writes go through the pipeline as writes.
//!
//! HTTP/1.1 pipelining: pipelined requests are answered in order, and the
//! answers to requests that arrived together go out in one or two writes
//! rather than one each ([`gather`]).
//!
//! Limits (`[http]`): `max_body` (413), `max_restore` (413), `max_key` (414), `max_connections`
//! (further connections are closed at once), `header_timeout_ms` (slow
//! clients are dropped). Wrong methods get 405 with `Allow`.

#![warn(missing_docs)]

mod gather;
mod routes;
mod server;

use std::sync::Arc;

use futures::future::BoxFuture;
use gerdu_api::size::ByteSize;
use gerdu_api::{Config, PluginError, Protocol, ProtocolContext, ProtocolPlugin, Running, register_protocol};
use serde::{Deserialize, Serialize};

/// `[http]` section.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Port (`-httpport`).
    pub port: u16,
    /// Largest request body.
    pub max_body: ByteSize,
    /// Largest backup file `POST /restore` takes (it is held in memory).
    pub max_restore: ByteSize,
    /// Longest key, in bytes after percent-decoding.
    pub max_key: usize,
    /// Most concurrent connections.
    pub max_connections: usize,
    /// Time a client has to send the request headers, in ms.
    pub header_timeout_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            port: 8080,
            max_body: ByteSize(16 << 20),
            max_restore: ByteSize(1 << 30),
            max_key: 64 * 1024,
            max_connections: 10_000,
            header_timeout_ms: 10_000,
        }
    }
}

struct Http {
    host: String,
    config: HttpConfig,
}

impl Protocol for Http {
    fn start(self: Box<Self>, ctx: ProtocolContext) -> BoxFuture<'static, Result<Running, PluginError>> {
        Box::pin(server::start(self.host, Arc::new(self.config), ctx))
    }
}

fn build(config: &Config) -> Result<Box<dyn Protocol>, PluginError> {
    let host: String = config.extract_inner("host").unwrap_or_else(|_| "127.0.0.1".into());
    let http: HttpConfig = gerdu_api::plugin::section(config, "http")?;
    if http.max_connections == 0 {
        return Err(PluginError::Config("http.max_connections: must be at least 1".into()));
    }
    Ok(Box::new(Http { host, config: http }))
}

register_protocol!(ProtocolPlugin {
    name: "http",
    description: "HTTP/1.1 and HTTP/2: /cache/{key}, /metrics, /health, /cluster, /join, /leave, /backup, /restore (always on)",
    build,
});
