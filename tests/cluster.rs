//! Clusters of in-process nodes on 127.0.0.1: joining by raft and by HTTP
//! address, forwarding from followers, membership conflicts, graceful leave
//! of a leader and of a follower, a crashed minority, a crashed leader, a
//! leader without a quorum, and a leader cut off one way whose unapplied
//! writes go to its successor.

mod common;

use common::contents;

use std::time::Duration;

use gerdu_api::Clock;

use http::{Method, StatusCode};

async fn node(name: &str, join: Option<&str>) -> common::TestServer {
    let join = join.map(|j| format!("[raft]\njoin = {j:?}\n")).unwrap_or_default();
    common::start(&format!("id = {name:?}\n{join}")).await
}

/// Nodes a, b and c (b and c join a), with `top` extra top-level config and
/// `raft` extra `[raft]` lines, once c sees all three and a leader.
async fn three(top: &str, raft: &str) -> (common::TestServer, common::TestServer, common::TestServer) {
    let cfg = |name: &str, join: Option<String>| {
        let join = join.map(|j| format!("join = {j:?}\n")).unwrap_or_default();
        format!("id = {name:?}\n{top}[raft]\n{raft}{join}")
    };
    let a = common::start(&cfg("a", None)).await;
    let b = common::start(&cfg("b", Some(raft_addr(&a)))).await;
    let c = common::start(&cfg("c", Some(raft_addr(&a)))).await;
    settle(&c, 3).await;
    (a, b, c)
}

fn raft_addr(s: &common::TestServer) -> String {
    s.server.raft().node.raft_addr.clone()
}

/// Waits until `s` sees `n` members, one of which leads.
async fn settle(s: &common::TestServer, n: usize) {
    let raft = &s.server.raft().raft;
    raft.wait(Some(Duration::from_secs(20)))
        .metrics(
            |m| {
                m.membership_config.nodes().count() == n
                    && m.current_leader.is_some_and(|l| m.membership_config.nodes().any(|(id, _)| *id == l))
            },
            "membership settles with a leader among the members",
        )
        .await
        .expect("membership settles");
}

fn leader_of(s: &common::TestServer) -> Option<String> {
    s.server.raft().status().leader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_replicate_and_forward() {
    let (a, b, c) = three("", "").await;
    for s in [&a, &b, &c] {
        settle(s, 3).await;
        let status = s.server.raft().status();
        assert_eq!(status.members.len(), 3, "{status:?}");
        assert_eq!(status.leader.as_deref(), Some("a"));
    }
    assert_eq!(c.server.raft().status().role, "follower");
    let view: serde_json::Value = serde_json::from_str(&common::get(b.http, "/cluster").await.text()).unwrap();
    assert_eq!((view["id"].as_str(), view["state"].as_str()), (Some("b"), Some("follower")));
    assert_eq!(view["leader"]["id"], "a");
    assert_eq!(view["leader"]["raft_addr"], raft_addr(&a));
    let mut roles: Vec<(&str, &str)> = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["id"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    roles.sort();
    assert_eq!(roles, [("a", "voter"), ("b", "voter"), ("c", "voter")]);
    let index = |k: &str| view[k].as_u64().unwrap();
    assert!(index("last_log_index") >= index("committed_index") && index("committed_index") >= 1, "{view}");

    // A write sent to a follower is forwarded; linearizable reads on every node see it.
    assert_eq!(common::put(b.http, "/cache/k", b"v1").await.status, StatusCode::CREATED);
    for s in [&a, &b, &c] {
        let got = common::get(s.http, "/cache/k").await;
        assert_eq!((got.status, got.text()), (StatusCode::OK, "v1".to_string()));
    }
    assert_eq!(common::put(c.http, "/cache/k", b"v2").await.status, StatusCode::NO_CONTENT);
    assert_eq!(common::get(a.http, "/cache/k").await.text(), "v2");
    assert_eq!(common::delete(c.http, "/cache/k").await.status, StatusCode::OK);
    assert_eq!(common::get(b.http, "/cache/k").await.status, StatusCode::NOT_FOUND);

    // Many concurrent writes through a follower: forwarded in batches, each answered.
    let writes = (0..200).map(|i| {
        let addr = c.http;
        async move { common::put(addr, &format!("/cache/many{i}"), b"x").await.status }
    });
    let statuses = futures::future::join_all(writes).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::CREATED), "{statuses:?}");
    assert_eq!(a.server.policy().len(), 200);

    // Every replica applied the same writes.
    for s in [&b, &c] {
        caught_up(s, &a).await;
        assert_eq!(s.server.policy().len(), a.server.policy().len());
    }
    for s in [c, b, a] {
        s.server.shutdown().await;
    }
}

/// A follower serves linearizable reads from its own store once it has
/// applied the leader's read index: a write the leader acknowledged just
/// before is seen, and an item that has expired by the follower's clock
/// (not yet by the leader's) is gone there: the leader did not serve it.
/// With the leader gone, such reads fail after the wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_serve_linearizable_reads_at_the_leaders_read_index() {
    let (a, b, c) = three("", "leader_wait_ms = 500\n").await;
    for i in 0..20 {
        let value = format!("v{i}");
        assert!(common::put(a.http, "/cache/k", value.as_bytes()).await.status.is_success());
        for s in [&b, &c] {
            let got = common::get(s.http, "/cache/k").await;
            assert_eq!((got.status, got.text()), (StatusCode::OK, value.clone()), "the write before is seen");
        }
    }
    assert_eq!(common::put(a.http, "/cache/t?ttl=10", b"soon gone").await.status, StatusCode::CREATED);
    b.clock.advance(20_000);
    assert_eq!(common::get(b.http, "/cache/t").await.status, StatusCode::NOT_FOUND, "expired by b's clock");
    assert_eq!(common::get(c.http, "/cache/t").await.text(), "soon gone", "not by c's");
    assert_eq!(common::get(a.http, "/cache/t").await.text(), "soon gone", "nor by a's");

    a.server.kill().await;
    c.server.kill().await;
    let got = common::get(b.http, "/cache/k").await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE, "{}", got.text());
    b.server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_by_http_address_and_membership_conflicts() {
    let a = node("a", None).await;
    // The Go original's form: -join with the member's HTTP address.
    let b = node("b", Some(&a.http.to_string())).await;
    settle(&a, 2).await;
    settle(&b, 2).await;

    let join = |addr, body: String| async move {
        common::request(addr, Method::POST, "/join", body.as_bytes(), &[]).await.status
    };
    // Joining again with the same id and address is a no-op, on any node.
    let same = format!(r#"{{"id":"b","addr":"{}"}}"#, raft_addr(&b));
    assert_eq!(join(a.http, same.clone()).await, StatusCode::OK);
    assert_eq!(join(b.http, same).await, StatusCode::OK);
    // The id is taken by another address; the address by another id.
    assert_eq!(join(a.http, r#"{"id":"b","addr":"127.0.0.1:1"}"#.into()).await, StatusCode::CONFLICT);
    let taken = format!(r#"{{"id":"zed","addr":"{}"}}"#, raft_addr(&b));
    assert_eq!(join(b.http, taken).await, StatusCode::CONFLICT);
    assert_eq!(join(a.http, "not json".into()).await, StatusCode::BAD_REQUEST);
    let leave = |addr, body: &'static str| async move {
        common::request(addr, Method::POST, "/leave", body.as_bytes(), &[]).await.status
    };
    assert_eq!(leave(b.http, "nobody").await, StatusCode::NOT_FOUND);
    assert_eq!(a.server.raft().status().members.len(), 2);

    // A follower removed with POST /leave (sent to itself) is out of the membership.
    assert_eq!(leave(b.http, "b").await, StatusCode::OK);
    settle(&a, 1).await;
    assert_eq!(leave(a.http, "a").await, StatusCode::BAD_REQUEST, "the only voter cannot leave");
    assert_eq!(common::put(a.http, "/cache/x", b"1").await.status, StatusCode::CREATED);
    b.server.kill().await;
    a.server.shutdown().await;
}

/// Waits until `s` has applied everything the leader `l` has in its log.
async fn caught_up(s: &common::TestServer, l: &common::TestServer) {
    common::applied(s, l.server.raft().cluster().await.last_log_index, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_come_from_the_leader_and_restores_replicate() {
    let (a, b, c) = three("", "").await;
    for i in 0..100 {
        assert_eq!(
            common::put(b.http, &format!("/cache/k{i}"), format!("v{i}").as_bytes()).await.status,
            StatusCode::CREATED
        );
    }
    // A follower sends the client to the leader; the leader's backup holds
    // every acknowledged write.
    let r = common::get(b.http, "/backup").await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers["location"], format!("http://{}/backup", a.server.raft().node.http_addr).as_str());
    let backup = common::get(a.http, "/backup").await;
    assert_eq!((backup.status, common::backup_items(&backup.body)), (StatusCode::OK, 100));
    // A follower's own state, on request, once it has applied the same.
    caught_up(&c, &a).await;
    let local = common::request(c.http, Method::GET, "/backup", b"", &[("gerdu-consistency", "local")]).await;
    assert_eq!((local.status, common::backup_items(&local.body)), (StatusCode::OK, 100));

    // Everything deleted, then restored through a follower: the writes are
    // forwarded and replicated, and every node holds the same data again.
    for i in 0..100 {
        assert_eq!(common::delete(a.http, &format!("/cache/k{i}")).await.status, StatusCode::OK);
    }
    let r = common::request(c.http, Method::POST, "/restore", &local.body, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    for s in [&a, &b, &c] {
        caught_up(s, &a).await;
        let data = contents(s);
        assert_eq!(data.len(), 100);
        assert_eq!(data[&bytes::Bytes::from("k7")].0, bytes::Bytes::from("v7"));
    }
    assert_eq!(contents(&a), contents(&b));
    assert_eq!(contents(&a), contents(&c));
    for s in [c, b, a] {
        s.server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_leaves_gracefully_and_the_others_carry_on() {
    let (a, b, c) = three("", "").await;
    assert_eq!(common::put(b.http, "/cache/before", b"1").await.status, StatusCode::CREATED);

    // SIGTERM on the leader: it removes itself, steps down, exits.
    a.server.shutdown().await;
    settle(&b, 2).await;
    settle(&c, 2).await;
    let new_leader = leader_of(&b).expect("a new leader");
    assert_ne!(new_leader, "a");
    assert_eq!(leader_of(&c), Some(new_leader));
    for s in [&b, &c] {
        assert_eq!(common::get(s.http, "/cache/before").await.text(), "1");
    }
    assert_eq!(common::put(c.http, "/cache/after", b"2").await.status, StatusCode::CREATED);
    assert_eq!(common::get(b.http, "/cache/after").await.text(), "2");
    c.server.shutdown().await;
    b.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_follower_does_not_stop_the_majority() {
    let (a, b, c) = three("", "").await;
    c.server.kill().await;
    for i in 0..20 {
        let path = format!("/cache/k{i}");
        assert_eq!(common::put(b.http, &path, b"x").await.status, StatusCode::CREATED, "{path}");
    }
    assert_eq!(a.server.policy().len(), 20);
    // Leaving now would need c in the new membership's quorum: stop as crashes do.
    b.server.kill().await;
    a.server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_lagging_nodes_catch_up_by_snapshot() {
    // Snapshot every 200 entries, keep 10: a node that joins late, or is
    // down for a while, cannot get the early entries from the log any more.
    let cfg = "[raft]\nsnapshot_logs = 200\nkeep_logs = 10\n";
    let start = |name: &'static str, join: Option<String>| async move {
        let join = join.map(|j| format!("join = {j:?}\n")).unwrap_or_default();
        common::start(&format!("id = {name:?}\n{cfg}{join}")).await
    };
    let a = start("a", None).await;
    let pipeline = a.server.pipeline();
    let put = |i: u32| {
        let cmd = gerdu_api::Command::Set(gerdu_api::SetCommand::new(format!("k{i}"), format!("v{i}")));
        gerdu_api::Request::single(gerdu_api::RequestContext::new("test"), cmd)
    };
    // One write per entry: 1000 entries, several snapshots, a purged log.
    for i in 0..1000 {
        gerdu_api::pipeline::call(&pipeline, put(i)).await.unwrap();
    }
    let raft = &a.server.raft().raft;
    raft.wait(Some(Duration::from_secs(20)))
        .metrics(|m| m.purged.is_some_and(|p| p.index > 500), "log purged")
        .await
        .unwrap();

    let b = start("b", Some(raft_addr(&a))).await;
    settle(&b, 2).await;
    common::applied(&b, a.server.raft().status().applied_index, 20).await;
    assert!(b.server.raft().raft.metrics().borrow().snapshot.is_some(), "b was brought up by a snapshot");
    assert_eq!(b.server.policy().len(), 1000);
    assert_eq!(common::get(b.http, "/cache/k7").await.text(), "v7");
    a.server.shutdown().await;
    b.server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hold_identical_data_with_evictions_and_ttls() {
    identical_replicas("lru").await;
}

/// W-TinyLFU's order changes most on reads (promotions, admission by a
/// sketch of reads): replicas must still evict exactly the same keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_hold_identical_data_with_wtinylfu() {
    identical_replicas("wtinylfu").await;
}

/// Whether the store still holds an expired item (the leader's sweep is
/// then still to propose its removal).
fn any_expired(policy: &dyn gerdu_api::Policy, now_ms: u64) -> bool {
    let (mut cursor, mut keys) = (0, Vec::new());
    loop {
        cursor = policy.expired(cursor, now_ms, 1000, &mut keys).0;
        if !keys.is_empty() {
            return true;
        }
        if cursor == 0 {
            return false;
        }
    }
}

async fn identical_replicas(policy: &str) {
    let (a, b, c) = three(&format!("capacity = \"48KB\"\npolicy = \"{policy}\"\n"), "").await;
    let nodes = [&a, &b, &c];
    let value = vec![b'v'; 200];
    for i in 0..900u32 {
        let node = nodes[(i % 3) as usize];
        let ttl = if i % 4 == 0 { "?ttl=2s" } else { "" };
        let path = format!("/cache/k{}{ttl}", i % 700);
        let status = common::put(node.http, &path, &value).await.status;
        assert!(status.is_success(), "{path}: {status}");
        // Reads change the eviction order differently on every node.
        let read = format!("/cache/k{}", (i * 7) % 700);
        for n in nodes {
            common::request(n.http, http::Method::GET, &read, b"", &[("gerdu-consistency", "local")]).await;
        }
        if i % 300 == 299 {
            // Time passes on the leader: TTLs run out at the same log index everywhere.
            a.clock.advance(1_500);
        }
    }
    assert!(a.server.metrics().evictions.get() > 0, "the workload must evict");
    // Same applied index on every node, then the same data. The leader's
    // evictor and sweep may still have an entry on its way (an eviction
    // chosen just before a sweep brought the store within capacity): read
    // every node while nothing is in the leader's log beyond what all of
    // them applied, before and after the reads, else look again.
    let policy = a.server.policy().clone();
    let last_log = |n: &common::TestServer| n.server.raft().raft.metrics().borrow().last_log_index.unwrap_or(0);
    let applied_of = |n: &common::TestServer| n.server.raft().status().applied_index;
    for attempt in 0.. {
        assert!(attempt < 50, "the cluster never settled");
        a.server
            .raft()
            .raft
            .wait(Some(Duration::from_secs(20)))
            .metrics(
                |m| {
                    m.last_applied.map(|l| l.index) == m.last_log_index
                        && policy.used_bytes() <= 48 * 1024
                        && !any_expired(&*policy, a.clock.now_ms())
                },
                "evictions and sweeps applied",
            )
            .await
            .unwrap();
        let applied = applied_of(&a);
        for n in [&b, &c] {
            common::applied(n, applied, 20).await;
        }
        let evictions: Vec<u64> = nodes.iter().map(|n| n.server.metrics().evictions.get()).collect();
        let all: Vec<_> = nodes.iter().map(|n| contents(n)).collect();
        if last_log(&a) != applied || nodes.iter().any(|n| applied_of(n) != applied) {
            continue; // an entry came in between
        }
        let want = &all[0];
        assert!(!want.is_empty());
        for (n, got) in [&b, &c].into_iter().zip(&all[1..]) {
            let differ: Vec<_> =
                want.keys().chain(got.keys()).filter(|k| want.get(*k) != got.get(*k)).take(5).cloned().collect();
            assert!(differ.is_empty(), "replica {} differs from the leader at {differ:?}", n.server.raft().node.name);
        }
        assert!(evictions.iter().all(|&e| e == evictions[0]), "evictions counted alike: {evictions:?}");
        break;
    }
    for n in [c, b, a] {
        n.server.kill().await;
    }
}

/// A CA and, per name, a node certificate for 127.0.0.1 signed by it.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new(nodes: &[&str]) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for name in nodes {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn section(&self, name: &str) -> String {
        let p = |f: String| self.dir.path().join(f).display().to_string();
        format!(
            "[raft.tls]\ncert = {:?}\nkey = {:?}\nca = {:?}\n",
            p(format!("{name}.pem")),
            p(format!("{name}.key")),
            p("ca.pem".into())
        )
    }

    fn config(&self, name: &str) -> gerdu::config::PeerTlsConfig {
        let p = |f: String| Some(self.dir.path().join(f));
        gerdu::config::PeerTlsConfig {
            cert: p(format!("{name}.pem")),
            key: p(format!("{name}.key")),
            ca: p("ca.pem".into()),
        }
    }
}

type VoteAnswer = Result<openraft::raft::VoteResponse<u64>, openraft::error::RaftError<u64>>;

/// A vote request from a candidate no member knows, at `term`.
fn vote(term: u64) -> openraft::raft::VoteRequest<u64> {
    openraft::raft::VoteRequest::new(openraft::Vote::new(term, u64::MAX), None)
}

/// The framed peer RPC answers raft requests, and closes a connection
/// that sends an unknown request kind, a body that does not decode or a
/// frame over the limit, while the node goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_framed_peer_rpc_answers_votes_and_drops_bad_frames() {
    use gerdu::raft::rpc::{Conn, MAGIC, MAX_FRAME, VOTE};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let a = node("a", None).await;
    let addr = raft_addr(&a);
    let term = a.server.raft().status().term;
    // A stale candidate is refused, with the node's own vote in the answer.
    let mut conn = Conn::connect(&addr, None).await.unwrap();
    let answer: VoteAnswer = conn.call(VOTE, &vote(0)).await.unwrap();
    let answer = answer.unwrap();
    assert!(!answer.vote_granted);
    assert_eq!(answer.vote.leader_id().term, term);
    // The same connection serves the next request.
    let again: VoteAnswer = conn.call(VOTE, &vote(0)).await.unwrap();
    assert!(!again.unwrap().vote_granted);

    let oversized = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
    for bad in [vec![0, 0, 0, 1, 99], vec![0, 0, 0, 3, VOTE, 0xc1, 0xc1], oversized] {
        let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
        raw.write_all(MAGIC).await.unwrap();
        raw.write_all(&bad).await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut rest)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{bad:?}: the connection is closed without an answer");
    }
    assert_eq!(common::put(a.http, "/cache/k", b"still serving").await.status, StatusCode::CREATED);
    assert_eq!(common::get(a.http, "/cache/k").await.text(), "still serving");
    a.server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_speak_mutual_tls_and_refuse_strangers() {
    let pki = Pki::new(&["a", "b", "c"]);
    let start = |name: &'static str, join: Option<String>| {
        let tls = pki.section(name);
        async move {
            let join = join.map(|j| format!("[raft]\njoin = {j:?}\n")).unwrap_or_default();
            common::start(&format!("id = {name:?}\n{join}{tls}")).await
        }
    };
    let a = start("a", None).await;
    let b = start("b", Some(raft_addr(&a))).await;
    let c = start("c", Some(raft_addr(&a))).await;
    settle(&c, 3).await;
    assert_eq!(common::put(c.http, "/cache/k", b"over tls").await.status, StatusCode::CREATED);
    for s in [&a, &b, &c] {
        assert_eq!(common::get(s.http, "/cache/k").await.text(), "over tls");
    }

    // Without a certificate, or with one from another CA, the peer port answers nothing.
    let join = || gerdu::raft::wire::pb::JoinRequest {
        id: "x".into(),
        raft_addr: "127.0.0.1:1".into(),
        http_addr: String::new(),
    };
    let plain = gerdu::raft::network::Network::new(None);
    assert!(plain.client(&raft_addr(&a)).unwrap().join(join()).await.is_err());
    let rogue = Pki::new(&["a"]);
    let rogue_tls = gerdu::tls::load_peer(&rogue.config("a")).unwrap();
    let stranger = gerdu::raft::network::Network::new(rogue_tls);
    assert!(stranger.client(&raft_addr(&a)).unwrap().join(join()).await.is_err());
    // The framed RPC (AppendEntries, Vote) is refused to both as well.
    let pki_a = gerdu::tls::load_peer(&rogue.config("a")).unwrap().unwrap();
    for tls in [None, Some(&pki_a)] {
        let refused = match gerdu::raft::rpc::Conn::connect(&raft_addr(&a), tls).await {
            Err(_) => true,
            Ok(mut conn) => conn.call::<_, VoteAnswer>(gerdu::raft::rpc::VOTE, &vote(1)).await.is_err(),
        };
        assert!(refused, "a stranger's vote request (TLS: {}) got an answer", tls.is_some());
    }
    assert_eq!(a.server.raft().status().members.len(), 3);
    for n in [c, b, a] {
        n.server.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_and_requests_wait_for_the_election() {
    let (a, b, c) = three("", "").await;
    assert_eq!(common::put(b.http, "/cache/before", b"1").await.status, StatusCode::CREATED);
    // The leader dies without leaving: the others notice, elect, and a write
    // sent meanwhile waits for the new leader instead of failing.
    a.server.kill().await;
    let during = common::put(b.http, "/cache/during", b"2").await;
    if during.status == StatusCode::SERVICE_UNAVAILABLE {
        // The one honest failure: the write went out to the old leader as it
        // died, so nobody can say whether it was applied. Repeating it (it is
        // idempotent) must then succeed once the new leader is in place.
        assert!(during.text().contains("may or may not have been applied"), "{}", during.text());
        let again = common::put(b.http, "/cache/during", b"2").await;
        let (status, body) = (again.status, again.text());
        assert!(status == StatusCode::CREATED || status == StatusCode::NO_CONTENT, "{status}: {body}");
    } else {
        assert_eq!(during.status, StatusCode::CREATED);
    }
    let leader = leader_of(&b).expect("a new leader");
    assert!(leader == "b" || leader == "c", "{leader}");
    for s in [&b, &c] {
        assert_eq!(common::get(s.http, "/cache/before").await.text(), "1");
        assert_eq!(common::get(s.http, "/cache/during").await.text(), "2");
    }
    c.server.kill().await;
    b.server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_requests_get_unavailable_after_the_wait() {
    let (a, b, c) = three("", "leader_wait_ms = 300\n").await;
    a.server.kill().await;
    c.server.kill().await;
    let put = common::put(b.http, "/cache/k", b"v").await;
    assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE, "{}", put.text());
    let get = common::get(b.http, "/cache/k").await;
    assert_eq!(get.status, StatusCode::SERVICE_UNAVAILABLE, "a linearizable read needs a quorum too");
    b.server.kill().await;
}

/// Node a of three, leading, with b and c gone (`raft`: extra `[raft]`
/// lines): its next entry cannot commit.
async fn leader_cut_off(raft: &str) -> common::TestServer {
    let (a, b, c) = three("", raft).await;
    assert_eq!(leader_of(&a).as_deref(), Some("a"));
    b.server.kill().await;
    c.server.kill().await;
    a
}

/// A leader cut off from its quorum answers writes "unavailable" after the
/// wait instead of holding them, and goes on answering the next ones; and
/// linearizable reads too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_without_a_quorum_answers_writes_after_the_wait() {
    let a = leader_cut_off("leader_wait_ms = 300\n").await;
    for key in ["/cache/k1", "/cache/k2"] {
        let put = common::put(a.http, key, b"v").await;
        assert_eq!(put.status, StatusCode::SERVICE_UNAVAILABLE, "{}", put.text());
        assert!(put.text().contains("not committed within 300 ms"), "{}", put.text());
    }
    // Nor reads: without a quorum, leadership cannot be confirmed.
    let get = common::get(a.http, "/cache/k1").await;
    assert_eq!(get.status, StatusCode::SERVICE_UNAVAILABLE, "{}", get.text());
    a.server.kill().await;
}

/// `leader_wait_ms = 0` (answer at once when there is no leader) leaves a
/// working node: writes that commit at once are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leader_wait_at_all_still_serves() {
    let a = common::start("id = \"a\"\n[raft]\nleader_wait_ms = 0\n").await;
    assert_eq!(common::put(a.http, "/cache/k", b"v").await.status, StatusCode::CREATED);
    assert_eq!(common::get(a.http, "/cache/k").await.text(), "v");
    a.server.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_followers_leaving_at_once_both_get_out() {
    let (a, b, c) = three("", "").await;
    // Their membership changes collide; the second waits for the first.
    tokio::join!(b.server.shutdown(), c.server.shutdown());
    settle(&a, 1).await;
    assert_eq!(a.server.raft().status().members.len(), 1);
    assert_eq!(common::put(a.http, "/cache/k", b"v").await.status, StatusCode::CREATED);
    a.server.shutdown().await;
}

/// A leader's write that an election keeps from committing (a new leader's
/// log replaces it) comes back to its client unapplied, commands intact,
/// for the raft stage to send to the new leader; and so does a write a
/// node no longer leading is asked to propose, a read's index, and a
/// request a follower forwarded to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_an_election_kept_from_committing_come_back_unapplied() {
    use gerdu::raft::wire::{ForwardRequest, ForwardResponse};
    use gerdu::raft::{Blocked, Ran, Refusal};
    use gerdu_api::{Command, SetCommand};
    use openraft::raft::AppendEntriesRequest;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

    let a = leader_cut_off("").await;
    let node = a.server.raft().clone();
    let before = node.raft.metrics().borrow().clone();
    let (last, term) = (before.last_log_index.expect("a log"), before.vote.leader_id().term);
    let write = vec![Command::Set(SetCommand::new("k", "lost")), Command::Set(SetCommand::new("k2", "lost too"))];
    let pending = tokio::spawn({
        let (node, write) = (node.clone(), write.clone());
        async move { node.submit(write).await }
    });
    node.raft
        .wait(Some(Duration::from_secs(20)))
        .metrics(|m| m.last_log_index == Some(last + 1), "the write is in a's log")
        .await
        .expect("the write is logged");
    assert!(!pending.is_finished());

    // A leader a does not know, at the next term, whose log has a blank
    // entry where a's write is: a follows it and truncates the write.
    let stranger = u64::MAX;
    let request = AppendEntriesRequest {
        vote: Vote::new_committed(term + 1, stranger),
        prev_log_id: Some(LogId::new(*before.vote.leader_id(), last)),
        entries: vec![Entry {
            log_id: LogId::new(CommittedLeaderId::new(term + 1, stranger), last + 1),
            payload: EntryPayload::Blank,
        }],
        leader_commit: None,
    };
    node.raft.append_entries(request).await.expect("a takes the new leader's entries");
    match pending.await.unwrap() {
        Err(Refusal::NotApplied(back)) => assert_eq!(back, write),
        other => panic!("the write should come back unapplied: {other:?}"),
    }
    assert!(a.server.policy().get(b"k", 0).is_none(), "nothing of it was applied");

    // a follows now: a write it is asked to propose is refused at once.
    match node.submit(write.clone()).await {
        Err(Refusal::NotApplied(back)) => assert_eq!(back, write),
        other => panic!("a follower's proposal should come back unapplied: {other:?}"),
    }
    // A linearizable read's index finds another leader; a request a
    // follower forwarded here comes back whole, to be sent on: reads only,
    // writes only, or both; and so does one that reaches it once it knows
    // it does not lead.
    let linearizable = gerdu_api::ReadConsistency::Linearizable;
    assert!(matches!(node.read_barrier(linearizable).await, Err(Blocked::NotLeader)));
    let read = vec![Command::Get { keys: vec![bytes::Bytes::from_static(b"k")] }];
    let both = [read.clone(), write.clone()].concat();
    for commands in [read, write, both] {
        match node.run_forwarded(linearizable, commands.clone()).await {
            Ok(Ran::Moved { replies, rest }) => assert!(replies.is_empty() && rest == commands, "{replies:?} {rest:?}"),
            other => panic!("a request forwarded to a node no longer leading should come back: {other:?}"),
        }
        let request = ForwardRequest { consistency: linearizable, commands };
        assert!(matches!(node.serve_forwarded(request).await, ForwardResponse::Moved(done) if done.is_empty()));
    }
    a.server.kill().await;
}

/// A command on the Redis port at `addr`, without the client's own
/// response timeout (an answer may come after an election).
async fn redis_query(addr: std::net::SocketAddr, cmd: redis::Cmd) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut con = client.get_multiplexed_async_connection_with_config(&config).await?;
    cmd.query_async(&mut con).await
}

/// A leader whose messages to the others are lost (theirs to it arrive: a
/// one-way partition) is replaced, and the new leader's log takes the
/// place of the entry the old one had logged meanwhile. That entry's INCR
/// goes, through the raft stage, to the new leader, and is applied there
/// once; a linearizable GET sent to the old leader meanwhile (its read
/// index finds no quorum) is answered by the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_unapplied_write_is_sent_to_the_new_leader() {
    use redis::{Value, cmd};
    let top = "protocols = [\"http\", \"redis\"]\n[redis]\nport = 0\n";
    // The wait outlasts the election: the write is not failed meanwhile.
    let (a, b, c) = three(top, "leader_wait_ms = 30000\n").await;
    assert_eq!(leader_of(&a).as_deref(), Some("a"));
    let a_redis = a.server.addr("redis").expect("redis listens");
    assert_eq!(redis_query(a_redis, cmd("INCR").arg("n").clone()).await, Ok(Value::Int(1)));
    let node = a.server.raft().clone();
    let last = node.raft.metrics().borrow().last_log_index.expect("a log");

    node.drop_outgoing_raft(true);
    let incr = tokio::spawn(redis_query(a_redis, cmd("INCR").arg("n").clone()));
    node.raft
        .wait(Some(Duration::from_secs(20)))
        .metrics(|m| m.last_log_index == Some(last + 1), "the INCR is in a's log")
        .await
        .expect("the INCR is logged");
    let get = tokio::spawn(common::get(a.http, "/cache/n"));

    // b and c hear nothing from a and elect one of them; a hears of it and
    // follows, its INCR's entry replaced.
    assert_eq!(incr.await.unwrap(), Ok(Value::Int(2)), "applied once, by the new leader");
    // Served by the new leader: either value is linearizable, as the INCR
    // was not answered yet when the GET was sent.
    let read = get.await.unwrap();
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    assert!(["1", "2"].contains(&read.text().as_str()), "{}", read.text());
    let leader = leader_of(&a).expect("a follows a leader");
    assert!(leader == "b" || leader == "c", "{leader}");
    node.drop_outgoing_raft(false);
    let l = if leader == "b" { &b } else { &c };
    for s in [&a, &b, &c] {
        caught_up(s, l).await;
        let n = s.server.policy().get(b"n", 0).map(|item| item.value);
        assert_eq!(n.as_deref(), Some(&b"2"[..]), "on {}", s.server.raft().node.name);
    }
    for s in [a, b, c] {
        s.server.kill().await;
    }
}
