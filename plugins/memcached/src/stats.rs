//! `stats`, `stats settings`, `stats items`: memcached's names, filled from
//! this listener's counters and the store's statistics.
//!
//! Command counters (`cmd_get`, `get_hits`, `cas_badval`, ...) count what
//! this memcached listener served, as memcached counts its own traffic; the
//! item counts, bytes and evictions are the shared store's. Each connection
//! counts into a local array and adds it to the shared atomics once per
//! batch, so counting costs no contended atomics per request.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;
use gerdu_api::{Number, Reply};

use crate::codec::MetaCmd;
use crate::conn::{Render, Shared};
use crate::text::{TextRender, line};

/// Counted events.
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub enum Stat {
    CmdGet,
    GetHits,
    GetMisses,
    CmdSet,
    CmdTouch,
    TouchHits,
    TouchMisses,
    DeleteHits,
    DeleteMisses,
    IncrHits,
    IncrMisses,
    DecrHits,
    DecrMisses,
    CasHits,
    CasMisses,
    CasBadval,
    CmdFlush,
    AuthCmds,
    AuthErrors,
    BytesRead,
    BytesWritten,
}

const N: usize = Stat::BytesWritten as usize + 1;

const NAMES: [&str; N] = [
    "cmd_get",
    "get_hits",
    "get_misses",
    "cmd_set",
    "cmd_touch",
    "touch_hits",
    "touch_misses",
    "delete_hits",
    "delete_misses",
    "incr_hits",
    "incr_misses",
    "decr_hits",
    "decr_misses",
    "cas_hits",
    "cas_misses",
    "cas_badval",
    "cmd_flush",
    "auth_cmds",
    "auth_errors",
    "bytes_read",
    "bytes_written",
];

/// The listener's counters.
#[derive(Default)]
pub struct Counters([AtomicU64; N]);

impl Counters {
    /// Adds a connection's local counts.
    pub fn add(&self, local: &mut Local) {
        for (shared, n) in self.0.iter().zip(local.0.iter_mut()) {
            if *n > 0 {
                shared.fetch_add(*n, Ordering::Relaxed);
                *n = 0;
            }
        }
    }

    /// `stats reset`.
    pub fn reset(&self) {
        self.0.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    }
}

/// A connection's counts since its last batch.
#[derive(Default)]
pub struct Local(pub [u64; N]);

impl Local {
    /// Counts `n` events.
    #[inline]
    pub fn inc(&mut self, s: Stat, n: u64) {
        self.0[s as usize] += n;
    }

    /// Counts what a reply says about its command.
    pub fn count(&mut self, render: &Render, reply: &Reply) {
        match (render, reply) {
            (Render::Text(TextRender::Values { .. }), Reply::Values(v))
            | (Render::Text(TextRender::Touch), Reply::Values(v)) => {
                let hits = v.iter().filter(|i| i.is_some()).count() as u64;
                let touch = matches!(render, Render::Text(TextRender::Touch));
                let (all, h, m) = if touch {
                    (Stat::CmdTouch, Stat::TouchHits, Stat::TouchMisses)
                } else {
                    (Stat::CmdGet, Stat::GetHits, Stat::GetMisses)
                };
                self.inc(all, v.len() as u64);
                self.inc(h, hits);
                self.inc(m, v.len() as u64 - hits);
            }
            (Render::Text(TextRender::Store { cas }), r) => {
                self.inc(Stat::CmdSet, 1);
                match r {
                    Reply::Exists => self.inc(Stat::CasBadval, 1),
                    Reply::NotFound => self.inc(Stat::CasMisses, 1),
                    Reply::Stored { .. } if *cas => self.inc(Stat::CasHits, 1),
                    _ => {}
                }
            }
            (Render::Text(TextRender::Delete), Reply::Count(n)) => {
                self.inc(if *n > 0 { Stat::DeleteHits } else { Stat::DeleteMisses }, 1)
            }
            (Render::Text(TextRender::Arith { decr }), r) => {
                let hit = matches!(r, Reply::Number(Number::Unsigned(_)));
                let stat = match (decr, hit) {
                    (false, true) => Stat::IncrHits,
                    (false, false) => Stat::IncrMisses,
                    (true, true) => Stat::DecrHits,
                    (true, false) => Stat::DecrMisses,
                };
                self.inc(stat, 1);
            }
            (Render::Text(TextRender::Flush), _) => self.inc(Stat::CmdFlush, 1),
            (Render::Meta(m), r) => match m.cmd {
                MetaCmd::Get => {
                    let hit = match r {
                        Reply::Values(v) => v.first().is_some_and(|i| i.is_some()),
                        Reply::Value(i) | Reply::Meta { item: i, .. } => i.is_some(),
                        _ => false,
                    };
                    self.inc(Stat::CmdGet, 1);
                    self.inc(if hit { Stat::GetHits } else { Stat::GetMisses }, 1);
                }
                MetaCmd::Set => self.inc(Stat::CmdSet, 1),
                _ => {}
            },
            _ => {}
        }
    }
}

fn stat(out: &mut BytesMut, name: &str, value: impl std::fmt::Display) {
    line(out, &format!("STAT {name} {value}"));
}

/// Process CPU seconds (user, system) from `/proc/self/stat`, as
/// `seconds.micros`.
fn rusage() -> (String, String) {
    let ticks = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        Some((f.get(11)?.parse::<u64>().ok()?, f.get(12)?.parse::<u64>().ok()?))
    });
    let fmt = |t: u64| format!("{}.{:06}", t / 100, (t % 100) * 10_000);
    ticks.map_or(("0.000000".into(), "0.000000".into()), |(u, s)| (fmt(u), fmt(s)))
}

fn store_stat(stats: &[(String, String)], name: &str) -> String {
    stats.iter().find(|(k, _)| k == name).map_or_else(|| "0".into(), |(_, v)| v.clone())
}

fn metric(shared: &Shared, name: &str) -> u64 {
    gerdu_api::plugin::counter_value(&shared.metrics, name)
}

/// Renders `stats [group]` from the store's `Stats` reply.
pub fn render(group: Option<&[u8]>, reply: &Reply, shared: &Shared, now_ms: u64, out: &mut BytesMut) {
    let store = match reply {
        Reply::Stats(s) => s.as_slice(),
        _ => &[],
    };
    let c = &shared.counters;
    match group {
        None => {
            let (user, system) = rusage();
            stat(out, "pid", std::process::id());
            stat(out, "uptime", shared.started.elapsed().as_secs());
            stat(out, "time", now_ms / 1000);
            stat(out, "version", crate::VERSION);
            stat(out, "pointer_size", usize::BITS);
            stat(out, "rusage_user", user);
            stat(out, "rusage_system", system);
            stat(out, "max_connections", shared.config.max_connections);
            stat(out, "curr_connections", shared.curr_connections.load(Ordering::Relaxed));
            stat(out, "total_connections", shared.total_connections.load(Ordering::Relaxed));
            stat(out, "rejected_connections", shared.rejected_connections.load(Ordering::Relaxed));
            for (i, name) in NAMES.iter().enumerate() {
                stat(out, name, c.0[i].load(Ordering::Relaxed));
            }
            stat(out, "limit_maxbytes", store_stat(store, "limit_maxbytes"));
            stat(out, "threads", shared.threads);
            stat(out, "curr_items", store_stat(store, "curr_items"));
            stat(out, "bytes", store_stat(store, "bytes"));
            stat(out, "evictions", metric(shared, "gerdu_evictions_total"));
            stat(out, "expired", metric(shared, "gerdu_expirations_total"));
        }
        Some(b"settings") => {
            stat(out, "maxbytes", store_stat(store, "limit_maxbytes"));
            stat(out, "maxconns", shared.config.max_connections);
            stat(out, "tcpport", shared.local_addr.port());
            stat(out, "udpport", 0);
            stat(out, "inter", shared.local_addr.ip());
            stat(out, "evictions", "on");
            stat(out, "cas_enabled", "yes");
            stat(out, "num_threads", shared.threads);
            stat(out, "item_size_max", shared.config.max_item_size.0);
            stat(out, "idle_timeout", shared.config.idle_timeout);
            stat(out, "auth_enabled_ascii", if shared.auth_required { "yes" } else { "no" });
            stat(out, "ssl_enabled", if shared.tls { "yes" } else { "no" });
            stat(out, "policy", &shared.policy);
        }
        Some(_) => {
            // `stats items`: one class holds everything.
            let items = store_stat(store, "curr_items");
            stat(out, "items:1:number", &items);
            stat(out, "items:1:mem_requested", store_stat(store, "bytes"));
            stat(out, "items:1:evicted", metric(shared, "gerdu_evictions_total"));
            stat(out, "items:1:expired", metric(shared, "gerdu_expirations_total"));
        }
    }
    out.extend_from_slice(b"END\r\n");
}
