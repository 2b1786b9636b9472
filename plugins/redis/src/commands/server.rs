//! Server commands: COMMAND (COUNT, DOCS, INFO, LIST), INFO, DBSIZE, FLUSHDB,
//! FLUSHALL, TIME, CONFIG GET (and RESETSTAT). `INFO replication` reports the
//! raft role, term, leader and members.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use gerdu_api::glob::glob_match;
use gerdu_api::{Command, Reply};

use super::{Action, Render, is, syntax_error};
use crate::codec::Out;
use crate::conn::ConnState;
use crate::table::{self, Spec};

fn command_info(out: &mut Out<'_>, s: &Spec) {
    out.array(10);
    out.bulk(s.name.as_bytes());
    out.int(i64::from(s.arity));
    out.set(s.flags.len());
    for f in s.flags {
        out.simple(f);
    }
    out.int(i64::from(s.first_key));
    out.int(i64::from(s.last_key));
    out.int(i64::from(s.step));
    out.set(1);
    out.simple(&format!("@{}", s.group));
    out.array(0);
    out.array(0);
    out.array(0);
}

fn command_docs(out: &mut Out<'_>, s: &Spec) {
    out.bulk(s.name.as_bytes());
    out.map(3);
    out.bulk(b"summary");
    out.bulk(s.summary.as_bytes());
    out.bulk(b"since");
    out.bulk(b"1.0.0");
    out.bulk(b"group");
    out.bulk(s.group.as_bytes());
}

fn specs(args: &[Bytes]) -> impl Iterator<Item = (&Bytes, Option<&'static Spec>)> {
    args.iter().map(|a| (a, table::find(a)))
}

fn command(args: &[Bytes], out: &mut Out<'_>) {
    if args.len() == 1 {
        out.array(table::COMMANDS.len());
        for s in table::COMMANDS {
            command_info(out, s);
        }
        return;
    }
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match sub.as_str() {
        "count" => out.int(table::COMMANDS.len() as i64),
        "list" => {
            out.array(table::COMMANDS.len());
            for s in table::COMMANDS {
                out.bulk(s.name.as_bytes());
            }
        }
        "info" => {
            let names = &args[2..];
            if names.is_empty() {
                out.array(table::COMMANDS.len());
                table::COMMANDS.iter().for_each(|s| command_info(out, s));
                return;
            }
            out.array(names.len());
            for (_, spec) in specs(names) {
                match spec {
                    Some(s) => command_info(out, s),
                    None => out.null_array(),
                }
            }
        }
        "docs" => {
            let names = &args[2..];
            if names.is_empty() {
                out.map(table::COMMANDS.len());
                table::COMMANDS.iter().for_each(|s| command_docs(out, s));
                return;
            }
            let found: Vec<&Spec> = specs(names).filter_map(|(_, s)| s).collect();
            out.map(found.len());
            found.into_iter().for_each(|s| command_docs(out, s));
        }
        _ => out.error(&format!("ERR unknown subcommand '{}'. Try COMMAND HELP.", String::from_utf8_lossy(&args[1]))),
    }
}

/// The `CONFIG GET` parameters and their values.
fn config_values(conn: &ConnState) -> Vec<(&'static str, String)> {
    let s = &conn.shared;
    let policy = match s.policy.as_str() {
        "lru" => "allkeys-lru".to_string(),
        "lfu" => "allkeys-lfu".to_string(),
        other => other.to_string(),
    };
    vec![
        ("maxmemory", s.capacity.to_string()),
        ("maxmemory-policy", policy),
        ("maxclients", s.config.max_clients.to_string()),
        ("timeout", s.config.timeout.to_string()),
        ("port", if s.tls { "0".into() } else { s.local_addr.port().to_string() }),
        ("tls-port", if s.tls { s.local_addr.port().to_string() } else { "0".into() }),
        ("bind", s.local_addr.ip().to_string()),
        ("databases", "1".into()),
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("proto-max-bulk-len", s.config.max_bulk.0.to_string()),
        ("client-query-buffer-limit", s.config.query_buffer_limit.0.to_string()),
    ]
}

fn config(args: &[Bytes], conn: &ConnState, out: &mut Out<'_>) {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match sub.as_str() {
        "get" if args.len() >= 3 => {
            let values = config_values(conn);
            let matched: Vec<&(&str, String)> = values
                .iter()
                .filter(|(k, _)| args[2..].iter().any(|p| glob_match(&p.to_ascii_lowercase(), k.as_bytes())))
                .collect();
            out.map(matched.len());
            for (k, v) in matched {
                out.bulk(k.as_bytes());
                out.bulk(v.as_bytes());
            }
        }
        "set" if args.len() >= 4 => {
            out.error("ERR CONFIG SET is not supported: gerdu is configured by gerdu.toml, GERDU_* and flags")
        }
        "resetstat" if args.len() == 2 => {
            conn.shared.commands_processed.store(0, Ordering::Relaxed);
            out.ok();
        }
        "get" | "set" | "resetstat" => super::arity_error(out, &format!("config|{sub}")),
        _ => out.error(&format!("ERR unknown subcommand '{}'. Try CONFIG HELP.", String::from_utf8_lossy(&args[1]))),
    }
}

/// Dispatches a server command (arity already checked).
pub fn dispatch(name: &str, args: &[Bytes], conn: &mut ConnState, out: &mut Out<'_>) -> Action {
    match name {
        "command" => command(args, out),
        "config" => config(args, conn, out),
        "time" => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            out.array(2);
            out.bulk(now.as_secs().to_string().as_bytes());
            out.bulk(now.subsec_micros().to_string().as_bytes());
        }
        "dbsize" => return Action::Remote(Command::Size, Render::Int),
        "flushdb" | "flushall" => {
            if args.len() > 2 || (args.len() == 2 && !is(&args[1], "async") && !is(&args[1], "sync")) {
                syntax_error(out);
            } else {
                return Action::Remote(Command::Flush, Render::Ok);
            }
        }
        "info" => {
            let sections = args[1..].iter().map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect();
            return Action::Remote(Command::Stats, Render::Info(sections));
        }
        _ => out.error("ERR unknown command"),
    }
    Action::Local
}

use gerdu_api::plugin::counter_value as counter;

/// Renders `INFO [section ...]` from the store's statistics.
pub fn render_info(out: &mut Out<'_>, sections: &[String], reply: &Reply, conn: &ConnState) {
    let stats: Vec<(String, String)> = match reply {
        Reply::Stats(s) => s.clone(),
        _ => Vec::new(),
    };
    let stat = |k: &str| stats.iter().find(|(n, _)| n == k).map_or("0".to_string(), |(_, v)| v.clone());
    let s = &conn.shared;
    let all = sections.is_empty() || sections.iter().any(|x| matches!(x.as_str(), "all" | "everything" | "default"));
    let want = |name: &str| all || sections.iter().any(|x| x == name);
    let mut text = String::new();
    let mut section = |title: &str, lines: Vec<(&str, String)>| {
        if !text.is_empty() {
            text.push_str("\r\n");
        }
        text.push_str(&format!("# {title}\r\n"));
        for (k, v) in lines {
            text.push_str(&format!("{k}:{v}\r\n"));
        }
    };
    let uptime = s.started.elapsed().as_secs();
    if want("server") {
        section(
            "Server",
            vec![
                ("redis_version", crate::REDIS_VERSION.into()),
                ("gerdu_version", env!("CARGO_PKG_VERSION").into()),
                ("redis_mode", "standalone".into()),
                ("os", std::env::consts::OS.into()),
                ("arch_bits", (usize::BITS).to_string()),
                ("process_id", std::process::id().to_string()),
                ("tcp_port", s.local_addr.port().to_string()),
                ("uptime_in_seconds", uptime.to_string()),
                ("uptime_in_days", (uptime / 86_400).to_string()),
            ],
        );
    }
    if want("clients") {
        section(
            "Clients",
            vec![
                ("connected_clients", s.clients.lock().len().to_string()),
                ("maxclients", s.config.max_clients.to_string()),
                ("blocked_clients", "0".into()),
            ],
        );
    }
    if want("memory") {
        let policy = config_values(conn).into_iter().find(|(k, _)| *k == "maxmemory-policy").map(|(_, v)| v);
        section(
            "Memory",
            vec![
                ("used_memory", stat("bytes")),
                ("maxmemory", s.capacity.to_string()),
                ("maxmemory_policy", policy.unwrap_or_default()),
                ("gerdu_entry_overhead", stat("entry_overhead")),
            ],
        );
    }
    if want("stats") {
        section(
            "Stats",
            vec![
                ("total_connections_received", s.connections_received.load(Ordering::Relaxed).to_string()),
                ("total_commands_processed", s.commands_processed.load(Ordering::Relaxed).to_string()),
                ("rejected_connections", s.rejected_connections.load(Ordering::Relaxed).to_string()),
                ("expired_keys", counter(&s.metrics, "gerdu_expirations_total").to_string()),
                ("evicted_keys", counter(&s.metrics, "gerdu_evictions_total").to_string()),
                ("keyspace_hits", counter(&s.metrics, "gerdu_hits_total").to_string()),
                ("keyspace_misses", counter(&s.metrics, "gerdu_misses_total").to_string()),
            ],
        );
    }
    if want("replication") {
        let status = s.admin.status();
        let role = if status.role == "leader" { "master" } else { "slave" };
        let members: Vec<String> = status.members.iter().map(|(id, addr)| format!("{id}@{addr}")).collect();
        section(
            "Replication",
            vec![
                ("role", role.into()),
                ("raft_role", status.role.clone()),
                ("raft_node_id", status.id.clone()),
                ("raft_leader", status.leader.clone().unwrap_or_default()),
                ("raft_term", status.term.to_string()),
                ("raft_applied_index", status.applied_index.to_string()),
                ("raft_members", members.join(",")),
                ("connected_slaves", status.members.len().saturating_sub(1).to_string()),
            ],
        );
    }
    if want("keyspace") {
        let keys = stat("curr_items");
        let lines = if keys == "0" { vec![] } else { vec![("db0", format!("keys={keys},expires=0,avg_ttl=0"))] };
        section("Keyspace", lines);
    }
    out.verbatim(text.as_bytes());
}
