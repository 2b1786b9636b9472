//! Prometheus metrics, in a registry owned by the server (not the global one,
//! so several servers in one test process do not collide).
//!
//! The Go original's counters keep their names (`gerdu_adds_total`,
//! `gerdu_deletes_total`, `gerdu_hits_total`, `gerdu_misses_total`); the rest
//! is new. Gauges about the store and raft are refreshed when `/metrics` is
//! scraped ([`ServerMetrics::refresh`]), so the hot path pays only for
//! counters and the latency histogram.

use dashmap::DashMap;
use gerdu_api::{Op, Policy, PolicyStat};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

use crate::raft::RaftNode;

/// A series a policy reports.
enum PolicySeries {
    Counter(IntCounter),
    Gauge(IntGauge),
}

/// Every metric the server exports.
pub struct ServerMetrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// Items stored (sets that stored a value). Go original: `gerdu_adds_total`.
    pub adds: IntCounter,
    /// Items deleted by clients. Go original: `gerdu_deletes_total`.
    pub deletes: IntCounter,
    /// Reads that found the key. Go original: `gerdu_hits_total`.
    pub hits: IntCounter,
    /// Reads that did not. Go original: `gerdu_misses_total`.
    pub misses: IntCounter,
    requests: IntCounterVec,
    durations: HistogramVec,
    /// Failed requests by protocol and error.
    pub errors: IntCounterVec,
    protocols: Vec<ProtocolSeries>,
    other: DashMap<&'static str, &'static ProtocolSeries>,
    /// The policy's own series ([`Policy::stats`]), registered when first reported.
    policy_stats: DashMap<&'static str, PolicySeries>,
    /// Items held.
    pub items: IntGauge,
    /// Charged bytes in use.
    pub used_bytes: IntGauge,
    /// Capacity in charged bytes.
    pub capacity_bytes: IntGauge,
    /// Per-entry overhead in the capacity formula.
    pub entry_overhead_bytes: IntGauge,
    /// Items evicted by the policy.
    pub evictions: IntCounter,
    /// Expired items removed (by reads' writes, writes and the sweep).
    pub expirations: IntCounter,
    /// Expired items the leader's background sweep removed.
    pub swept: IntCounter,
    /// Snapshots built.
    pub snapshots: IntCounter,
    /// Commands per proposed log entry.
    pub batch_commands: Histogram,
    /// Current raft term.
    pub raft_term: IntGauge,
    /// 1 if this node leads.
    pub raft_is_leader: IntGauge,
    /// Last applied log index.
    pub raft_applied_index: IntGauge,
    /// Last log index.
    pub raft_last_log_index: IntGauge,
    /// Index of the last snapshot.
    pub raft_snapshot_index: IntGauge,
    /// Entries held in the log.
    pub raft_log_entries: IntGauge,
    /// Approximate bytes held in the log.
    pub raft_log_bytes: IntGauge,
    /// Cluster members.
    pub raft_members: IntGauge,
}

/// One (protocol, op) pair's request counter and latency histogram.
pub struct Series {
    /// `gerdu_requests_total{protocol, op}`
    pub requests: IntCounter,
    /// `gerdu_request_duration_seconds{protocol, op}`
    pub duration: Histogram,
}

/// Every op's [`Series`] for one protocol.
pub struct ProtocolSeries {
    name: &'static str,
    by_op: Vec<Series>,
}

impl ProtocolSeries {
    fn new(name: &'static str, requests: &IntCounterVec, durations: &HistogramVec) -> Self {
        let by_op = Op::ALL
            .iter()
            .map(|op| Series {
                requests: requests.with_label_values(&[name, op.as_str()]),
                duration: durations.with_label_values(&[name, op.as_str()]),
            })
            .collect();
        ProtocolSeries { name, by_op }
    }

    /// The series of `op`.
    pub fn get(&self, op: Op) -> &Series {
        &self.by_op[op.index()]
    }
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone())).expect("metric names are unique");
    m
}

impl ServerMetrics {
    /// Registers every metric in a fresh registry, with the per-op series of
    /// `protocols` made up front (others are made on first use).
    pub fn with_protocols(protocols: &[&'static str]) -> Self {
        let mut m = Self::new();
        m.protocols = protocols.iter().map(|p| ProtocolSeries::new(p, &m.requests, &m.durations)).collect();
        m
    }

    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let r = Registry::new();
        let counter = |name: &str, help: &str| reg(&r, IntCounter::new(name, help).expect("counter"));
        let gauge = |name: &str, help: &str| reg(&r, IntGauge::new(name, help).expect("gauge"));
        let latency_buckets = vec![
            0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5,
        ];
        ServerMetrics {
            adds: counter("gerdu_adds_total", "Items stored by set operations"),
            deletes: counter("gerdu_deletes_total", "Items deleted by clients"),
            hits: counter("gerdu_hits_total", "Key reads that found the key"),
            misses: counter("gerdu_misses_total", "Key reads that did not find the key"),
            requests: reg(
                &r,
                IntCounterVec::new(Opts::new("gerdu_requests_total", "Commands served"), &["protocol", "op"])
                    .expect("requests"),
            ),
            durations: reg(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("gerdu_request_duration_seconds", "Time from parse to reply, per command")
                        .buckets(latency_buckets),
                    &["protocol", "op"],
                )
                .expect("durations"),
            ),
            errors: reg(
                &r,
                IntCounterVec::new(
                    Opts::new("gerdu_request_errors_total", "Requests that failed as a whole"),
                    &["protocol", "error"],
                )
                .expect("errors"),
            ),
            protocols: Vec::new(),
            other: DashMap::new(),
            policy_stats: DashMap::new(),
            items: gauge("gerdu_items", "Items held (expired ones not yet removed included)"),
            used_bytes: gauge("gerdu_used_bytes", "Charged bytes in use: key + value + entry overhead per item"),
            capacity_bytes: gauge("gerdu_capacity_bytes", "Capacity in charged bytes (0 = unlimited)"),
            entry_overhead_bytes: gauge("gerdu_entry_overhead_bytes", "Per-item overhead charged by the policy"),
            evictions: counter("gerdu_evictions_total", "Items evicted to stay within capacity"),
            expirations: counter("gerdu_expirations_total", "Expired items removed"),
            swept: counter("gerdu_expiry_swept_total", "Expired items the background sweep removed (leader)"),
            snapshots: counter("gerdu_raft_snapshots_total", "Raft snapshots built"),
            batch_commands: reg(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("gerdu_raft_batch_commands", "Commands carried per proposed log entry")
                        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0]),
                )
                .expect("batch"),
            ),
            raft_term: gauge("gerdu_raft_term", "Current raft term"),
            raft_is_leader: gauge("gerdu_raft_is_leader", "1 if this node is the raft leader"),
            raft_applied_index: gauge("gerdu_raft_applied_index", "Last log index applied to the store"),
            raft_last_log_index: gauge("gerdu_raft_last_log_index", "Last log index"),
            raft_snapshot_index: gauge("gerdu_raft_snapshot_index", "Log index covered by the last snapshot"),
            raft_log_entries: gauge("gerdu_raft_log_entries", "Entries held in the raft log"),
            raft_log_bytes: gauge("gerdu_raft_log_bytes", "Approximate bytes of commands held in the raft log"),
            raft_members: gauge("gerdu_raft_members", "Members of the raft cluster"),
            registry: r,
        }
    }

    /// The request counters and latency histograms of one protocol, by op.
    /// Registered protocols have theirs made up front; the lookup is a short
    /// scan by name, and nothing is cloned or locked per request.
    pub fn protocol_series(&self, protocol: &'static str) -> &ProtocolSeries {
        if let Some(p) = self.protocols.iter().find(|p| std::ptr::eq(p.name, protocol) || p.name == protocol) {
            return p;
        }
        // A protocol that was not registered when the metrics were made.
        self.other
            .entry(protocol)
            .or_insert_with(|| Box::leak(Box::new(ProtocolSeries::new(protocol, &self.requests, &self.durations))))
            .value()
    }

    /// The request counter and latency histogram of one (protocol, op).
    pub fn series(&self, protocol: &'static str, op: Op) -> &Series {
        self.protocol_series(protocol).get(op)
    }

    /// Updates the gauges from the store and raft.
    pub fn refresh(&self, policy: &dyn Policy, raft: &RaftNode) {
        self.items.set(policy.len() as i64);
        self.used_bytes.set(policy.used_bytes() as i64);
        self.capacity_bytes.set(policy.capacity() as i64);
        self.entry_overhead_bytes.set(policy.entry_overhead() as i64);
        policy.stats(&mut |stat| self.policy_stat(stat));
        let m = raft.raft.metrics().borrow().clone();
        self.raft_term.set(m.current_term as i64);
        self.raft_is_leader.set(i64::from(m.current_leader == Some(raft.id)));
        self.raft_applied_index.set(m.last_applied.map_or(0, |l| l.index) as i64);
        self.raft_last_log_index.set(m.last_log_index.unwrap_or(0) as i64);
        self.raft_snapshot_index.set(m.snapshot.map_or(0, |l| l.index) as i64);
        self.raft_log_entries.set(raft.log_len() as i64);
        self.raft_log_bytes.set(raft.log_bytes() as i64);
        self.raft_members.set(m.membership_config.nodes().count() as i64);
    }

    fn policy_stat(&self, stat: PolicyStat) {
        let series = self.policy_stats.entry(stat.name).or_insert_with(|| {
            let made = if stat.counter {
                IntCounter::new(stat.name, stat.help).map(PolicySeries::Counter)
            } else {
                IntGauge::new(stat.name, stat.help).map(PolicySeries::Gauge)
            };
            let series = made.expect("a policy series with a valid name");
            let collector: Box<dyn prometheus::core::Collector> = match &series {
                PolicySeries::Counter(c) => Box::new(c.clone()),
                PolicySeries::Gauge(g) => Box::new(g.clone()),
            };
            if let Err(e) = self.registry.register(collector) {
                tracing::warn!("policy metric {} not exported: {e}", stat.name);
            }
            series
        });
        match &*series {
            // A counter is reported as a total: add what it grew by.
            PolicySeries::Counter(c) => c.inc_by(stat.value.saturating_sub(c.get())),
            PolicySeries::Gauge(g) => g.set(stat.value as i64),
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding");
        String::from_utf8(buf).expect("utf-8")
    }
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_unique_and_original_ones_exist() {
        let m = ServerMetrics::new();
        m.series("http", Op::Get).requests.inc();
        let families = m.registry.gather();
        let mut names: Vec<_> = families.iter().map(|f| f.name().to_string()).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
        for original in ["gerdu_adds_total", "gerdu_deletes_total", "gerdu_hits_total", "gerdu_misses_total"] {
            assert!(names.iter().any(|x| x == original), "{original} missing");
        }
    }
}
