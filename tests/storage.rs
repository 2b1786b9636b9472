//! `-storage DIR`: the raft log, vote and snapshots on disk. A restarted
//! node recovers every acknowledged write (from snapshot + journal), a torn
//! journal tail is cut off, a whole cluster restarts, and the stores pass
//! openraft's storage test suite.

mod common;

use std::sync::Arc;
use std::time::Duration;

use gerdu_api::{Command, Delta, Expiry, Reply, Request, RequestContext, SetCommand};
use http::StatusCode;

fn storage(dir: &std::path::Path, extra: &str) -> String {
    format!("[raft]\nstorage = {:?}\nsnapshot_logs = 50\nkeep_logs = 5\n{extra}", dir.display().to_string())
}

async fn run(s: &common::TestServer, command: Command) -> Reply {
    let req = Request::single(RequestContext::new("test"), command);
    let mut r = gerdu_api::pipeline::call(&s.server.pipeline(), req).await.expect("request");
    r.replies.pop().unwrap()
}

async fn item(s: &common::TestServer, key: &str) -> Option<gerdu_api::Item> {
    match run(s, Command::Get { keys: vec![key.to_string().into()] }).await {
        Reply::Values(mut v) => v.pop().unwrap(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_recovers_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::start(&storage(dir.path(), "")).await;
    // Enough single writes for several snapshots plus a journal tail.
    for i in 0..300 {
        let set = SetCommand::new(format!("k{i}"), format!("v{i}"));
        assert!(matches!(run(&s, Command::Set(set)).await, Reply::Stored { .. }));
    }
    let ttl = SetCommand { expiry: Expiry::In(60_000), flags: 7, ..SetCommand::new("ttl", "x") };
    run(&s, Command::Set(ttl)).await;
    for _ in 0..5 {
        run(&s, Command::Incr { key: "n".into(), delta: Delta::Signed(2) }).await;
    }
    run(&s, Command::Delete { keys: vec!["k0".into()] }).await;
    let before = item(&s, "k299").await.unwrap();
    let ttl_before = item(&s, "ttl").await.unwrap();
    assert!(dir.path().join("snapshot").exists() && dir.path().join("raft.log").exists());
    s.server.shutdown().await;

    let s = common::start(&storage(dir.path(), "")).await;
    assert_eq!(s.server.policy().len(), 301, "299 k*, ttl, n");
    // (The access record in `meta` is each node's own, not recovered.)
    let fields = |i: gerdu_api::Item| (i.value, i.flags, i.cas, i.expires_at, i.meta.replicated());
    assert_eq!(item(&s, "k299").await.map(fields), Some(fields(before)), "value, flags and cas survive");
    assert_eq!(item(&s, "ttl").await.map(|i| (i.flags, i.expires_at)), Some((7, ttl_before.expires_at)));
    assert_eq!(item(&s, "k0").await, None);
    assert_eq!(item(&s, "n").await.map(|i| i.value), Some("10".into()));
    // And it keeps working: new writes get new cas values.
    match run(&s, Command::Set(SetCommand::new("k299", "new"))).await {
        Reply::Stored { cas, .. } => assert!(cas > ttl_before.cas),
        other => panic!("{other:?}"),
    }
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_journal_tail_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    // No snapshot in this run: everything comes from the journal.
    let cfg = format!("[raft]\nstorage = {:?}\n", dir.path().display().to_string());
    let s = common::start(&cfg).await;
    for i in 0..20 {
        run(&s, Command::Set(SetCommand::new(format!("k{i}"), "v"))).await;
    }
    s.server.kill().await;
    // A crash in the middle of a write leaves a frame cut short.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("raft.log")).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9]).unwrap();
    drop(f);
    let s = common::start(&cfg).await;
    assert_eq!(s.server.policy().len(), 20);
    run(&s, Command::Set(SetCommand::new("after", "v"))).await;
    s.server.kill().await;
    let s = common::start(&cfg).await;
    assert_eq!(s.server.policy().len(), 21, "writes after the cut are kept");
    s.server.shutdown().await;
}

/// A free loopback port (bound, then released) below the kernel's
/// ephemeral range: a node restarted on its fixed address must find it
/// free, and while the node is down no outgoing connection (of any test in
/// this binary) can be given a port there.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (base, span) = (10_000, low.saturating_sub(10_000));
    if span >= 1_000 {
        let start = std::process::id().wrapping_mul(2_654_435_761) % span;
        for _ in 0..1_000 {
            let port = (base + (start + NEXT.fetch_add(1, Ordering::Relaxed) * 7) % span) as u16;
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Three nodes a, b, c with fixed raft ports and a storage directory each
/// (so that they can be restarted); b and c join a.
struct Disks {
    dirs: Vec<tempfile::TempDir>,
    ports: Vec<u16>,
}

impl Disks {
    fn new() -> Disks {
        Disks {
            dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
            ports: (0..3).map(|_| free_port()).collect(),
        }
    }

    /// Node `i`'s config, with `raft` extra lines in its `[raft]` section.
    fn config(&self, i: usize, raft: &str) -> String {
        let join = if i == 0 { String::new() } else { format!("join = \"127.0.0.1:{}\"\n", self.ports[0]) };
        format!(
            "id = {:?}\n[raft]\naddr = \"127.0.0.1:{}\"\nstorage = {:?}\n{raft}{join}",
            ["a", "b", "c"][i],
            self.ports[i],
            self.dirs[i].path().display().to_string()
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_restarts_from_storage() {
    let disks = Disks::new();
    let cfg = |i: usize| disks.config(i, "");
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(common::start(&cfg(i)).await);
    }
    for i in 0..30 {
        let path = format!("/cache/k{i}");
        assert_eq!(common::put(nodes[i % 3].http, &path, b"v").await.status, StatusCode::CREATED);
    }
    for n in nodes {
        n.server.kill().await;
    }
    // All three come back; they elect a leader among themselves.
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(common::start(&cfg(i)).await);
    }
    for n in &nodes {
        n.server
            .raft()
            .raft
            .wait(Some(Duration::from_secs(20)))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .unwrap();
    }
    for (i, n) in nodes.iter().enumerate() {
        let got = common::get(n.http, &format!("/cache/k{}", (i * 7) % 30)).await;
        assert_eq!((got.status, got.text()), (StatusCode::OK, "v".to_string()));
    }
    assert_eq!(common::put(nodes[2].http, "/cache/after", b"1").await.status, StatusCode::CREATED);
    for n in nodes {
        n.server.kill().await;
    }
}

/// Builds the stores, on disk (`-storage`) or in memory.
struct Builder {
    disk: bool,
}

impl
    openraft::testing::StoreBuilder<
        gerdu::raft::types::TypeConfig,
        gerdu::raft::log_store::MemLog,
        gerdu::raft::state_machine::StateMachine,
        tempfile::TempDir,
    > for Builder
{
    async fn build(
        &self,
    ) -> Result<
        (tempfile::TempDir, gerdu::raft::log_store::MemLog, gerdu::raft::state_machine::StateMachine),
        openraft::StorageError<u64>,
    > {
        let dir = tempfile::tempdir().unwrap();
        let log = match self.disk {
            true => gerdu::raft::log_store::MemLog::open(dir.path(), gerdu::raft::journal::Fsync::Always).unwrap(),
            false => gerdu::raft::log_store::MemLog::default(),
        };
        let figment = common::figment("");
        let plugin = gerdu_api::plugin::find_policy("lru").unwrap();
        let policy =
            (plugin.build)(&figment, &gerdu_api::PolicySettings { capacity: 64 << 20, local_eviction: false }).unwrap();
        let metrics = Arc::new(gerdu::metrics::ServerMetrics::with_protocols(&[]));
        let kept = self.disk.then(|| dir.path().to_path_buf());
        let sm = gerdu::raft::state_machine::StateMachine::new(policy, metrics, kept).unwrap();
        Ok((dir, log, sm))
    }
}

#[test]
fn the_disk_stores_pass_openraft_storage_suite() {
    openraft::testing::Suite::test_all(Builder { disk: true }).unwrap();
}

#[test]
fn the_memory_stores_pass_openraft_storage_suite() {
    openraft::testing::Suite::test_all(Builder { disk: false }).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_for_100k_writes_catches_up_by_snapshot() {
    let disks = Disks::new();
    let cfg = |i: usize| disks.config(i, "snapshot_logs = 20\nkeep_logs = 5\n");
    let a = common::start(&cfg(0)).await;
    let b = common::start(&cfg(1)).await;
    let c = common::start(&cfg(2)).await;
    run(&a, Command::Set(SetCommand::new("early", "1"))).await;
    let c_applied = a.server.raft().status().applied_index;
    common::applied(&c, c_applied, 20).await;
    c.server.kill().await;

    // 100,000 writes while c is down, 1,000 per request.
    for batch in 0..100 {
        let commands =
            (0..1000).map(|i| Command::Set(SetCommand::new(format!("k{}", batch * 1000 + i), "v"))).collect();
        let req = Request { ctx: RequestContext::new("test"), commands };
        gerdu_api::pipeline::call(&a.server.pipeline(), req).await.unwrap();
    }
    let purged = a.server.raft().raft.metrics().borrow().purged.map(|p| p.index).unwrap_or(0);
    assert!(purged > c_applied, "the leader no longer has the entries c missed");

    let c = common::start(&cfg(2)).await;
    common::applied(&c, a.server.raft().status().applied_index, 60).await;
    assert!(c.server.raft().raft.metrics().borrow().snapshot.is_some_and(|s| s.index > c_applied));
    assert_eq!(c.server.policy().len(), 100_001);
    for n in [a, b, c] {
        n.server.kill().await;
    }
}
