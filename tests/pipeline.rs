//! The pipeline and single-node raft through the public server API:
//! batching, ordering within a batch, snapshots and log compaction.

mod common;

use bytes::Bytes;
use common::start;
use gerdu_api::{Command, Reply, Request, RequestContext, SetCommand, pipeline::call};

fn set(k: &str, v: &str) -> Command {
    Command::Set(SetCommand::new(k.to_string(), v.to_string()))
}

fn get(k: &str) -> Command {
    Command::Get { keys: vec![Bytes::from(k.to_string())] }
}

fn applied(s: &common::TestServer) -> u64 {
    s.server.raft().raft.metrics().borrow().last_applied.map_or(0, |l| l.index)
}

#[tokio::test]
async fn a_batch_of_writes_is_one_log_entry() {
    let s = start("").await;
    let p = s.server.pipeline();
    let before = applied(&s);
    let commands: Vec<Command> = (0..50).map(|i| set(&format!("k{i}"), "v")).collect();
    let resp = call(&p, Request { ctx: RequestContext::new("test"), commands }).await.unwrap();
    assert_eq!(resp.replies.len(), 50);
    assert!(resp.replies.iter().all(|r| matches!(r, Reply::Stored { created: true, .. })));
    assert_eq!(applied(&s), before + 1, "50 writes, one entry");
    s.server.shutdown().await;
}

#[tokio::test]
async fn reads_see_earlier_writes_of_the_same_batch() {
    let s = start("").await;
    let p = s.server.pipeline();
    let commands =
        vec![get("a"), set("a", "1"), get("a"), set("a", "2"), Command::Delete { keys: vec!["a".into()] }, get("a")];
    let resp = call(&p, Request { ctx: RequestContext::new("test"), commands }).await.unwrap();
    let values: Vec<Option<Bytes>> = resp
        .replies
        .iter()
        .filter_map(|r| match r {
            Reply::Values(v) => Some(v[0].as_ref().map(|i| i.value.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(values, vec![None, Some(Bytes::from("1")), None]);
    assert_eq!(resp.replies[4], Reply::Count(1));
    s.server.shutdown().await;
}

#[tokio::test]
async fn concurrent_writers_are_all_applied() {
    let s = start("").await;
    let p = s.server.pipeline();
    let mut tasks = Vec::new();
    for c in 0..20 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let r = call(&p, Request::single(RequestContext::new("test"), set(&format!("c{c}-{i}"), "x"))).await;
                assert!(matches!(r.unwrap().replies[0], Reply::Stored { .. }));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.server.policy().len(), 1000);
    let resp = call(&p, Request::single(RequestContext::new("test"), Command::Size)).await.unwrap();
    assert_eq!(resp.replies[0], Reply::Count(1000));
    s.server.shutdown().await;
}

#[tokio::test]
async fn cas_values_are_unique_per_write() {
    let s = start("").await;
    let p = s.server.pipeline();
    let commands = vec![set("x", "1"), set("x", "2"), set("y", "1")];
    let resp = call(&p, Request { ctx: RequestContext::new("test"), commands }).await.unwrap();
    let cas: Vec<u64> = resp
        .replies
        .iter()
        .map(|r| match r {
            Reply::Stored { cas, .. } => *cas,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(cas[0] < cas[1] && cas[1] < cas[2], "{cas:?}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn snapshots_compact_the_log() {
    let s = start("[raft]\nsnapshot_logs = 100\nkeep_logs = 10\n").await;
    let p = s.server.pipeline();
    for i in 0..600 {
        call(&p, Request::single(RequestContext::new("test"), set(&format!("k{}", i % 50), "v"))).await.unwrap();
    }
    // Wait (no sleeping) until a snapshot covering most of the writes exists.
    s.server
        .raft()
        .raft
        .wait(Some(std::time::Duration::from_secs(10)))
        .metrics(
            |m| m.snapshot.is_some_and(|l| l.index >= 500) && m.purged.is_some_and(|l| l.index >= 400),
            "snapshot and purge",
        )
        .await
        .expect("snapshot taken and log purged");
    assert!(s.server.raft().log_len() < 250, "log held {} entries", s.server.raft().log_len());
    assert!(s.server.metrics().snapshots.get() >= 1);
    // Data is intact.
    let resp = call(&p, Request::single(RequestContext::new("test"), Command::Size)).await.unwrap();
    assert_eq!(resp.replies[0], Reply::Count(50));
    s.server.shutdown().await;
}

#[tokio::test]
async fn empty_request_passes_auth_and_returns_nothing() {
    let s = start("").await;
    let resp =
        call(&s.server.pipeline(), Request { ctx: RequestContext::new("test"), commands: vec![] }).await.unwrap();
    assert!(resp.replies.is_empty());
    s.server.shutdown().await;
}

/// A read on a node that is the only voter passes every stage at once (the
/// store answers synchronously and each stage hands the ready answer on: no
/// future, no allocation, no task switch), and is counted like any other; a
/// write waits for its log entry.
#[tokio::test]
async fn a_read_on_a_sole_voter_is_answered_at_once_and_a_write_waits() {
    let s = start("").await;
    let p = s.server.pipeline();
    // The role watcher sets the leader flag on the runtime; give it turns.
    for _ in 0..10_000 {
        if s.server.raft().is_leader() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(s.server.raft().is_leader(), "a single node leads");
    let write = p.call(Request { ctx: RequestContext::new("test"), commands: vec![set("k", "v")] });
    let Err(write) = write.now() else { panic!("a write must wait for its log entry") };
    assert!(matches!(write.await.unwrap().replies[..], [Reply::Stored { created: true, .. }]));
    let read = p.call(Request { ctx: RequestContext::new("test"), commands: vec![get("k"), get("missing")] });
    let Ok(answer) = read.now() else { panic!("a read on a sole voter must not wait") };
    let values: Vec<Option<Bytes>> = answer
        .unwrap()
        .replies
        .iter()
        .map(|r| match r {
            Reply::Values(v) => v[0].as_ref().map(|i| i.value.clone()),
            other => panic!("unexpected reply {other:?}"),
        })
        .collect();
    assert_eq!(values, vec![Some(Bytes::from("v")), None]);
    let metrics = common::get(s.http, "/metrics").await.text();
    assert_eq!(common::metric(&metrics, "gerdu_hits_total"), 1.0);
    assert_eq!(common::metric(&metrics, "gerdu_misses_total"), 1.0);
    s.server.shutdown().await;
}
