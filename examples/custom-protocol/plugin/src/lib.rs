//! An example protocol plugin: a line-based text protocol over TCP, written
//! against the plugin SDK (`gerdu-api`) alone.
//!
//! ```text
//! SET key value   -> OK
//! GET key         -> VALUE value | NOT_FOUND
//! DEL key         -> DELETED | NOT_FOUND
//! QUIT            -> (closes)
//! anything else   -> ERROR <why>
//! ```
//!
//! Keys and values are single words. Every command becomes one command of
//! gerdu's model ([`Command`]) sent down the request pipeline, so it goes
//! through auth, metrics and raft like any other protocol's, and the data is
//! the same data HTTP, Redis, memcached and gRPC clients see.
//!
//! Configuration is its own section, `[line] port = 7000`; start it with
//! `-protocols line` from a binary that links this crate (see `../bin`).

use gerdu_api::bytes::Bytes;
use gerdu_api::net::{self, ServeOptions, Stream};
use gerdu_api::tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use gerdu_api::{
    BoxFuture, Command, Config, PluginError, Protocol, ProtocolContext, ProtocolPlugin, Reply, Request, RequestContext,
    Running, SetCommand, register_protocol,
};

/// `[line]`
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LineConfig {
    /// Port to listen on (the core's `host` is the address).
    port: u16,
}

impl Default for LineConfig {
    fn default() -> Self {
        LineConfig { port: 7000 }
    }
}

struct Line {
    host: String,
    port: u16,
}

/// The command a line asks for, or why it is not one.
fn parse(line: &str) -> Result<Option<Command>, &'static str> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let key = |w: &str| Bytes::copy_from_slice(w.as_bytes());
    match words.as_slice() {
        [] => Err("empty line"),
        [cmd, rest @ ..] => match (cmd.to_ascii_uppercase().as_str(), rest) {
            ("SET", [k, v]) => Ok(Some(Command::Set(SetCommand::new(key(k), key(v))))),
            ("GET", [k]) => Ok(Some(Command::Get { keys: vec![key(k)] })),
            ("DEL", [k]) => Ok(Some(Command::Delete { keys: vec![key(k)] })),
            ("QUIT", []) => Ok(None),
            ("SET" | "GET" | "DEL" | "QUIT", _) => Err("wrong number of arguments"),
            _ => Err("unknown command"),
        },
    }
}

/// The line that answers `reply`.
fn answer(reply: &Reply) -> String {
    match reply {
        Reply::Stored { .. } | Reply::Ok => "OK".into(),
        Reply::Values(items) => match items.first() {
            Some(Some(item)) => format!("VALUE {}", String::from_utf8_lossy(&item.value)),
            _ => "NOT_FOUND".into(),
        },
        Reply::Count(0) => "NOT_FOUND".into(),
        Reply::Count(_) => "DELETED".into(),
        Reply::Error(e) => format!("ERROR {e}"),
        other => format!("ERROR unexpected reply {other:?}"),
    }
}

async fn serve(stream: Stream, pipeline: gerdu_api::Pipeline) {
    let (read, mut write) = gerdu_api::tokio::io::split(stream);
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let out = match parse(&line) {
            Ok(None) => return,
            Ok(Some(command)) => {
                let request = Request::single(RequestContext::new("line"), command);
                match gerdu_api::pipeline::call(&pipeline, request).await {
                    Ok(response) => response.replies.first().map_or_else(|| "ERROR no reply".into(), answer),
                    Err(e) => format!("ERROR {e}"),
                }
            }
            Err(why) => format!("ERROR {why}"),
        };
        if write.write_all(format!("{out}\r\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

impl Protocol for Line {
    fn start(self: Box<Self>, ctx: ProtocolContext) -> BoxFuture<'static, Result<Running, PluginError>> {
        Box::pin(async move {
            let (listener, local_addr) = net::bind("line", &self.host, self.port).await?;
            let opts = ServeOptions { name: "line", tls: None, max_connections: 1024, shutdown: ctx.shutdown };
            let pipeline = ctx.pipeline;
            let served = net::serve(
                listener,
                opts,
                move |stream, _peer| serve(stream, pipeline.clone()),
                |stream| net::refuse(stream, b"ERROR too many connections\r\n"),
            );
            Ok(Running { local_addr, served: Box::pin(served) })
        })
    }
}

fn build(config: &Config) -> Result<Box<dyn Protocol>, PluginError> {
    let cfg: LineConfig = gerdu_api::plugin::section(config, "line")?;
    let host = config.extract_inner("host").unwrap_or_else(|_| "127.0.0.1".into());
    Ok(Box::new(Line { host, port: cfg.port }))
}

register_protocol!(ProtocolPlugin {
    name: "line",
    description: "example: a line-based text protocol (SET/GET/DEL), from examples/custom-protocol",
    build,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands() {
        assert!(matches!(parse("set k v"), Ok(Some(Command::Set(_)))));
        assert!(matches!(parse("GET k"), Ok(Some(Command::Get { .. }))));
        assert!(matches!(parse("QUIT"), Ok(None)));
        assert_eq!(parse("GET").unwrap_err(), "wrong number of arguments");
        assert_eq!(parse("PING").unwrap_err(), "unknown command");
        assert_eq!(parse("  ").unwrap_err(), "empty line");
    }
}
