//! Command-line flags: the Go original's flags (one dash or two) plus the new
//! ones. Every config flag is an `Option`, so a flag that is not given never
//! overrides the file or the environment.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::Parser;
use gerdu_api::size::ByteSize;
use serde_json::{Map, Value, json};

use crate::config::LogLevel;

/// gerdu: a distributed in-memory key-value cache (HTTP, Redis, memcached, gRPC).
#[derive(Debug, Parser, Default)]
#[command(name = "gerdu", version, about, long_about = None)]
pub struct Cli {
    /// Config file (default: $GERDU_CONFIG, else ./gerdu.toml if present)
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the merged configuration as TOML and exit
    #[arg(long)]
    pub print_config: bool,
    /// Validate the configuration and exit
    #[arg(long)]
    pub check: bool,
    /// List the registered protocol, policy and middleware plugins and exit
    #[arg(long)]
    pub list_plugins: bool,

    /// Cache capacity: key + value + per-entry overhead (K/KB, M/MB, G/GB, T/TB)  [default: 64MB]
    #[arg(long)]
    pub capacity: Option<ByteSize>,
    /// TLS certificate (PEM) for every listener
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// TLS private key (PEM)
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// gRPC port  [default: 8081]
    #[arg(long)]
    pub grpcport: Option<u16>,
    /// Address to bind  [default: 127.0.0.1]
    #[arg(long)]
    pub host: Option<String>,
    /// HTTP port  [default: 8080]
    #[arg(long)]
    pub httpport: Option<u16>,
    /// Node id  [default: master]
    #[arg(long)]
    pub id: Option<String>,
    /// Address of a cluster member to join (raft or HTTP address)
    #[arg(long)]
    pub join: Option<String>,
    /// Log level: panic, fatal, error, warn, info, debug, trace  [default: info]
    #[arg(long)]
    pub log: Option<LogLevel>,
    /// memcached port  [default: 11211]
    #[arg(long)]
    pub mcdport: Option<u16>,
    /// Protocols besides HTTP, comma separated: grpc, redis, mcd
    #[arg(long)]
    pub protocols: Option<String>,
    /// Raft peer address  [default: 127.0.0.1:12000]
    #[arg(long)]
    pub raft: Option<String>,
    /// Redis port  [default: 6379]
    #[arg(long)]
    pub redisport: Option<u16>,
    /// Directory for the raft log and snapshots (default: in memory)
    #[arg(long)]
    pub storage: Option<PathBuf>,
    /// Worker threads; 0 = one per core  [default: 1]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Eviction policy  [default: lru]
    #[arg(long = "type", value_name = "TYPE")]
    pub policy: Option<String>,
}

/// Go's flag package accepts `-name value` and `-name=value`; clap wants two
/// dashes for long names. Rewrites `-name...` to `--name...` for names longer
/// than one letter (so `-h` and `-V` keep meaning help and version).
pub fn normalize_args<I: IntoIterator<Item = OsString>>(args: I) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut after_double_dash = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i == 0 || after_double_dash {
            out.push(arg);
            continue;
        }
        match arg.to_str() {
            Some("--") => {
                after_double_dash = true;
                out.push(arg);
            }
            Some(s) if s.starts_with('-') && !s.starts_with("--") => {
                let name = s[1..].split('=').next().unwrap_or("");
                if name.len() > 1 && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
                    out.push(OsString::from(format!("-{s}")));
                } else {
                    out.push(arg);
                }
            }
            _ => out.push(arg),
        }
    }
    out
}

impl Cli {
    /// Parses (Go-style dashes accepted).
    pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(normalize_args(args))
    }

    /// The flags given, as a nested config value (absent flags are absent).
    pub fn overrides(&self) -> Value {
        let mut root = Map::new();
        let mut put = |path: &[&str], v: Value| {
            let mut node = &mut root;
            for (i, p) in path.iter().enumerate() {
                if i + 1 == path.len() {
                    node.insert(p.to_string(), v.clone());
                } else {
                    node = node
                        .entry(p.to_string())
                        .or_insert_with(|| Value::Object(Map::new()))
                        .as_object_mut()
                        .expect("object");
                }
            }
        };
        if let Some(v) = self.capacity {
            put(&["capacity"], json!(v.to_string()));
        }
        if let Some(v) = &self.cert {
            put(&["tls", "cert"], json!(v));
        }
        if let Some(v) = &self.key {
            put(&["tls", "key"], json!(v));
        }
        if let Some(v) = self.grpcport {
            put(&["grpc", "port"], json!(v));
        }
        if let Some(v) = &self.host {
            put(&["host"], json!(v));
        }
        if let Some(v) = self.httpport {
            put(&["http", "port"], json!(v));
        }
        if let Some(v) = &self.id {
            put(&["id"], json!(v));
        }
        if let Some(v) = &self.join {
            put(&["raft", "join"], json!(v));
        }
        if let Some(v) = self.log {
            put(&["log"], serde_json::to_value(v).expect("log level"));
        }
        if let Some(v) = self.mcdport {
            put(&["mcd", "port"], json!(v));
        }
        if let Some(v) = &self.protocols {
            put(&["protocols"], json!(v));
        }
        if let Some(v) = &self.raft {
            put(&["raft", "addr"], json!(v));
        }
        if let Some(v) = self.redisport {
            put(&["redis", "port"], json!(v));
        }
        if let Some(v) = &self.storage {
            put(&["raft", "storage"], json!(v));
        }
        if let Some(v) = &self.policy {
            put(&["policy"], json!(v));
        }
        if let Some(v) = self.threads {
            put(&["threads"], json!(v));
        }
        Value::Object(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<OsString> {
        std::iter::once("gerdu").chain(s.split_whitespace()).map(OsString::from).collect()
    }

    #[test]
    fn go_style_single_dash_flags() {
        let cli =
            Cli::parse_args(args("-capacity 12MB -httpport 9000 -type lru -id=node1 --raft 127.0.0.1:1")).unwrap();
        assert_eq!(cli.capacity, Some(ByteSize(12 << 20)));
        assert_eq!(cli.httpport, Some(9000));
        assert_eq!(cli.policy.as_deref(), Some("lru"));
        assert_eq!(cli.id.as_deref(), Some("node1"));
        assert_eq!(
            cli.overrides(),
            json!({"capacity": "12MB", "http": {"port": 9000}, "policy": "lru", "id": "node1",
                "raft": {"addr": "127.0.0.1:1"}})
        );
    }

    #[test]
    fn bad_flag_values_are_rejected() {
        assert!(Cli::parse_args(args("-capacity 12XB")).is_err());
        assert!(Cli::parse_args(args("-httpport 70000")).is_err());
        assert!(Cli::parse_args(args("-log loud")).is_err());
        assert!(Cli::parse_args(args("-nosuchflag 1")).is_err());
    }

    #[test]
    fn short_flags_untouched() {
        assert_eq!(normalize_args(args("-h")), args("-h"));
        assert_eq!(normalize_args(args("-- -x")), args("-- -x"));
    }
}
