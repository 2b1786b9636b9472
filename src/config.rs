//! Configuration: built-in defaults < `gerdu.toml` < `GERDU_*` environment <
//! command-line flags, merged with figment.
//!
//! The core owns the top-level keys ([`CoreConfig`]) and the `[raft]`,
//! `[tls]` and `[pipeline]` sections. Every plugin owns the section named
//! after it (`[http]`, `[lru]`, `[auth]`, ...) and extracts it itself from the
//! merged [`Figment`]; the core only checks that no top-level key is unknown.
//!
//! Where the file comes from: `--config PATH`, else `GERDU_CONFIG`, else
//! `./gerdu.toml` when present. Environment keys are `GERDU_` + the key path
//! with `__` between sections: `GERDU_CAPACITY=1GB`, `GERDU_HTTP__PORT=9000`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use gerdu_api::ReadConsistency;
use gerdu_api::plugin::{Kind, registered};
use gerdu_api::size::ByteSize;
use serde::{Deserialize, Deserializer, Serialize};

/// A configuration problem: one line naming the flag or key. Exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        let mut line = gerdu_api::config_error_line(&e);
        if let Some(figment::Source::File(path)) = e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
            line.push_str(&format!(" (in {})", path.display()));
        }
        ConfigError(line)
    }
}

/// Log levels of the Go original (`panic` and `fatal` log errors only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Go's panic level: errors only.
    Panic,
    /// Go's fatal level: errors only.
    Fatal,
    /// Errors.
    Error,
    /// Warnings and errors.
    Warn,
    /// Start-up, membership and shutdown events; nothing per request.
    #[default]
    Info,
    /// Debugging detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The tracing filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Panic | LogLevel::Fatal | LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
            .map_err(|_| format!("unknown log level {s:?} (panic, fatal, error, warn, info, debug, trace)"))
    }
}

/// `[raft.tls]`: mutual TLS between peers. Every node presents `cert`
/// (signed by `ca`) and accepts only peers whose certificates `ca` signed;
/// a node's certificate must name the host of its raft address (IP or DNS
/// subject alternative name).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PeerTlsConfig {
    /// PEM certificate chain of this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of this node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// PEM certificate(s) of the CA that signs every node's certificate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// `[tls]`: certificate and key for every listener (`-cert`, `-key`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `[raft]`: consensus settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Address of the peer (raft) listener (`-raft`).
    pub addr: String,
    /// Address of a member to join (`-join`); empty bootstraps a new cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<String>,
    /// Directory for the log, vote and snapshots (`-storage`); none keeps them in memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<PathBuf>,
    /// `[raft.tls]`: mutual TLS for peer traffic (off unless all three files are set).
    pub tls: PeerTlsConfig,
    /// With storage: when appended entries are made durable (`always`: before
    /// the write is acknowledged; `never`: left to the OS).
    pub fsync: crate::raft::journal::Fsync,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_logs: u64,
    /// Also build one when the log holds more than this many bytes of
    /// commands, or more than the store's used bytes if that is larger.
    pub snapshot_log_bytes: ByteSize,
    /// Without storage: compact when the log holds more than this many bytes
    /// of commands (a snapshot then costs nothing until a follower needs one).
    pub memory_log_bytes: ByteSize,
    /// Entries kept in the log after a snapshot, for lagging followers.
    pub keep_logs: u64,
    /// Most commands one log entry carries.
    pub max_batch: usize,
    /// Leader heartbeat interval in ms.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound in ms.
    pub election_timeout_min_ms: u64,
    /// Election timeout upper bound in ms.
    pub election_timeout_max_ms: u64,
    /// How long a request waits for a leader, and a leader's write waits to
    /// commit, before "unavailable", in ms.
    pub leader_wait_ms: u64,
    /// A joining node is given up (and removed again) when its log makes no
    /// progress for this long, in ms.
    pub catch_up_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            addr: "127.0.0.1:12000".into(),
            join: None,
            storage: None,
            fsync: crate::raft::journal::Fsync::Always,
            tls: PeerTlsConfig::default(),
            snapshot_logs: 100_000,
            snapshot_log_bytes: ByteSize(64 << 20),
            memory_log_bytes: ByteSize(4 << 20),
            keep_logs: 100,
            max_batch: 4096,
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            leader_wait_ms: 5_000,
            catch_up_timeout_ms: 10_000,
        }
    }
}

impl RaftConfig {
    /// [`Self::leader_wait_ms`] as a duration.
    pub fn leader_wait(&self) -> Duration {
        Duration::from_millis(self.leader_wait_ms)
    }
}

/// `[expiry]`: the background sweep of expired items (see `raft::sweeper`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryConfig {
    /// Milliseconds between sweeps; 0 turns the sweep off.
    pub sweep_ms: u64,
    /// Items examined per sweep round.
    pub sweep_keys: usize,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig { sweep_ms: 100, sweep_keys: 1000 }
    }
}

/// `[pipeline]`: the middleware chain, outermost first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Middleware names, outermost first. `raft` must be present: writes reach
    /// the store only through it.
    pub middleware: Vec<String>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig { middleware: vec!["auth".into(), "metrics".into(), "raft".into()] }
    }
}

/// The core's keys. See `gerdu.toml` for each key's meaning.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CoreConfig {
    /// Node id (`-id`).
    pub id: String,
    /// Address every listener binds (`-host`).
    pub host: String,
    /// Log level (`-log`).
    pub log: LogLevel,
    /// Cache capacity in charged bytes (`-capacity`).
    pub capacity: ByteSize,
    /// Eviction policy plugin (`-type`).
    pub policy: String,
    /// Protocol plugins to start besides HTTP (`-protocols grpc,redis,mcd`).
    #[serde(deserialize_with = "string_or_list")]
    pub protocols: Vec<String>,
    /// Default read consistency.
    pub read_consistency: ReadConsistency,
    /// Worker threads; 0 = one per core (`-threads`).
    pub threads: usize,
    /// `[tls]`
    pub tls: TlsConfig,
    /// `[raft]`
    pub raft: RaftConfig,
    /// `[expiry]`
    pub expiry: ExpiryConfig,
    /// `[pipeline]`
    pub pipeline: PipelineConfig,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            id: "master".into(),
            host: "127.0.0.1".into(),
            log: LogLevel::Info,
            capacity: ByteSize(64 << 20),
            policy: "lru".into(),
            protocols: Vec::new(),
            read_consistency: ReadConsistency::Linearizable,
            threads: 1,
            tls: TlsConfig::default(),
            raft: RaftConfig::default(),
            expiry: ExpiryConfig::default(),
            pipeline: PipelineConfig::default(),
        }
    }
}

impl CoreConfig {
    /// Worker threads to start: [`Self::threads`], or one per core for 0.
    pub fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Extracts and validates the core keys from the merged config.
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        check_top_level_keys(figment)?;
        let mut cfg: CoreConfig = figment.extract()?;
        cfg.protocols = normalize_protocols(&cfg.protocols);
        for name in &cfg.protocols {
            gerdu_api::plugin::find_protocol(name).map_err(|e| ConfigError(format!("protocols: {e}")))?;
        }
        gerdu_api::plugin::find_policy(&cfg.policy).map_err(|e| ConfigError(format!("policy: {e}")))?;
        for name in &cfg.pipeline.middleware {
            gerdu_api::plugin::find_middleware(name).map_err(|e| ConfigError(format!("pipeline.middleware: {e}")))?;
        }
        if !cfg.pipeline.middleware.iter().any(|m| m == "raft") {
            return Err(ConfigError(
                "pipeline.middleware: must include \"raft\" (writes reach the store through it)".into(),
            ));
        }
        if cfg.pipeline.middleware.last().map(String::as_str) != Some("raft") {
            return Err(ConfigError("pipeline.middleware: \"raft\" must be the innermost (last) middleware".into()));
        }
        let mut seen = BTreeSet::new();
        for m in &cfg.pipeline.middleware {
            if !seen.insert(m) {
                return Err(ConfigError(format!("pipeline.middleware: {m:?} is listed twice")));
            }
        }
        if cfg.threads > 1024 {
            return Err(ConfigError(format!("threads: {} is more than 1024", cfg.threads)));
        }
        if cfg.id.is_empty() {
            return Err(ConfigError("id: must not be empty".into()));
        }
        let t = &cfg.raft.tls;
        if !(t.cert.is_some() == t.key.is_some() && t.key.is_some() == t.ca.is_some()) {
            return Err(ConfigError("raft.tls: cert, key and ca must be given together".into()));
        }
        if cfg.tls.cert.is_some() != cfg.tls.key.is_some() {
            return Err(ConfigError("tls: cert and key must be given together (-cert and -key)".into()));
        }
        cfg.raft.addr.parse::<SocketAddr>().map_err(|e| ConfigError(format!("raft.addr: {e}: {:?}", cfg.raft.addr)))?;
        if cfg.raft.max_batch == 0 {
            return Err(ConfigError("raft.max_batch: must be at least 1".into()));
        }
        if cfg.raft.heartbeat_ms == 0
            || cfg.raft.election_timeout_min_ms <= cfg.raft.heartbeat_ms
            || cfg.raft.election_timeout_max_ms <= cfg.raft.election_timeout_min_ms
        {
            return Err(ConfigError(
                "raft: need 0 < heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms".into(),
            ));
        }
        Ok(cfg)
    }
}

/// `-protocols` takes the Go form `grpc,redis,mcd`; `http` is always on and
/// `memcached` is accepted for `mcd`.
fn normalize_protocols(list: &[String]) -> Vec<String> {
    let mut out: Vec<String> = vec!["http".into()];
    for p in list.iter().flat_map(|s| s.split(',')).map(|s| s.trim().to_ascii_lowercase()) {
        let p = if p == "memcached" { "mcd".to_string() } else { p };
        if !p.is_empty() && !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Either::deserialize(d)? {
        Either::One(s) => s.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        Either::Many(v) => v,
    })
}

const CORE_KEYS: &[&str] = &[
    "id",
    "host",
    "log",
    "capacity",
    "policy",
    "protocols",
    "read_consistency",
    "threads",
    "tls",
    "raft",
    "expiry",
    "pipeline",
];

/// Sections the Go original's flags write to (`-redisport`, `-mcdport`,
/// `-grpcport`); accepted even when that protocol is not built in.
const FLAG_SECTIONS: &[&str] = &["redis", "mcd", "grpc"];

/// Every top-level key must be a core key or the section of a registered plugin.
fn check_top_level_keys(figment: &Figment) -> Result<(), ConfigError> {
    let value: figment::value::Dict = figment.extract()?;
    let plugins: BTreeSet<&str> = [Kind::Protocol, Kind::Policy, Kind::Middleware]
        .into_iter()
        .flat_map(registered)
        .map(|(name, _)| name)
        .collect();
    for key in value.keys() {
        if !CORE_KEYS.contains(&key.as_str())
            && !FLAG_SECTIONS.contains(&key.as_str())
            && !plugins.contains(key.as_str())
        {
            let mut valid: BTreeSet<&str> = CORE_KEYS.iter().copied().collect();
            valid.extend(FLAG_SECTIONS.iter().copied());
            valid.extend(plugins.iter());
            let valid: Vec<&str> = valid.into_iter().collect();
            return Err(ConfigError(format!("unknown key {key:?}; valid top-level keys: {}", valid.join(", "))));
        }
    }
    Ok(())
}

/// Which config file to read: `--config`, else `GERDU_CONFIG`, else
/// `./gerdu.toml` if it exists. An explicitly named file must exist.
pub fn config_file(cli: Option<&Path>, env: Option<&str>) -> Result<Option<PathBuf>, ConfigError> {
    let explicit = cli.map(Path::to_path_buf).or_else(|| env.filter(|s| !s.is_empty()).map(PathBuf::from));
    match explicit {
        Some(p) if p.is_file() => Ok(Some(p)),
        Some(p) => Err(ConfigError(format!("config: cannot read {}", p.display()))),
        None => Ok(Some(PathBuf::from("gerdu.toml")).filter(|p| p.is_file())),
    }
}

/// Merges the layers. `env` is the process environment (injected for tests);
/// `flags` are the command-line overrides as a nested value.
pub fn figment(file: Option<&Path>, env: &[(String, String)], flags: serde_json::Value) -> Figment {
    let mut f = Figment::from(Serialized::defaults(CoreConfig::default()));
    if let Some(path) = file {
        f = f.merge(Toml::file_exact(path));
    }
    // The environment is passed in (not read by figment's Env) so tests inject it.
    f = f.merge(Serialized::defaults(env_to_value(env)));
    f.merge(Serialized::defaults(flags))
}

/// Turns `GERDU_A__B=v` pairs into `{ "a": { "b": v } }`, parsing values as
/// TOML scalars (numbers, booleans, arrays) where they parse, else strings.
pub fn env_to_value(env: &[(String, String)]) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("GERDU_") else {
            continue;
        };
        // GERDU_CONFIG names the file; GERDU_LOG_FILTER is a tracing filter, not a key.
        if rest.is_empty() || rest == "CONFIG" || rest == "LOG_FILTER" {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
        let value = parse_env_value(v);
        let mut node = &mut root;
        for (i, part) in path.iter().enumerate() {
            if i + 1 == path.len() {
                node.insert(part.clone(), value.clone());
            } else {
                let entry = node.entry(part.clone()).or_insert_with(|| serde_json::Value::Object(Default::default()));
                if !entry.is_object() {
                    *entry = serde_json::Value::Object(Default::default());
                }
                node = entry.as_object_mut().expect("object");
            }
        }
    }
    serde_json::Value::Object(root)
}

fn parse_env_value(v: &str) -> serde_json::Value {
    let doc = format!("v = {v}");
    match toml::from_str::<toml::Table>(&doc) {
        Ok(t) => serde_json::to_value(&t["v"]).unwrap_or_else(|_| serde_json::Value::String(v.into())),
        Err(_) => serde_json::Value::String(v.into()),
    }
}

/// Prints the merged config as TOML.
pub fn to_toml(figment: &Figment) -> Result<String, ConfigError> {
    let value: toml::Value = figment.extract()?;
    toml::to_string_pretty(&value).map_err(|e| ConfigError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_are_typed_and_nested() {
        let v = env_to_value(&[
            ("GERDU_HTTP__PORT".into(), "9000".into()),
            ("GERDU_CAPACITY".into(), "1GB".into()),
            ("GERDU_PROTOCOLS".into(), "redis,mcd".into()),
            ("GERDU_AUTH__ENABLED".into(), "true".into()),
            ("GERDU_CONFIG".into(), "x.toml".into()),
            ("OTHER".into(), "1".into()),
        ]);
        assert_eq!(
            v,
            serde_json::json!({"http": {"port": 9000}, "capacity": "1GB", "protocols": "redis,mcd",
                "auth": {"enabled": true}})
        );
    }

    #[test]
    fn protocols_normalized() {
        assert_eq!(
            normalize_protocols(&["redis,memcached".into(), "grpc".into()]),
            vec!["http", "redis", "mcd", "grpc"]
        );
        assert_eq!(normalize_protocols(&[]), vec!["http"]);
    }
}
