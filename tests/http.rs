//! Black-box tests of the HTTP protocol against an in-process server on
//! 127.0.0.1:0, with real TCP connections.

mod common;

use common::{Answer, contents, delete, get, metric, put, request, start};
use gerdu_api::{Clock, Command, Expiry, Request, RequestContext, SetCommand};
use http::{Method, StatusCode};

#[tokio::test]
async fn go_original_status_codes() {
    let s = start("").await;
    let a = s.http;
    assert_eq!(put(a, "/cache/Hello", b"World").await.status, StatusCode::CREATED);
    assert_eq!(put(a, "/cache/Hello", b"World!").await.status, StatusCode::NO_CONTENT);
    let got = get(a, "/cache/Hello").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.text(), "World!");
    assert_eq!(delete(a, "/cache/Hello").await.status, StatusCode::OK);
    assert_eq!(get(a, "/cache/Hello").await.status, StatusCode::NOT_FOUND);
    assert_eq!(delete(a, "/cache/Hello").await.status, StatusCode::NOT_FOUND);
    s.server.shutdown().await;
}

#[tokio::test]
async fn keys_are_percent_decoded_and_may_contain_slashes() {
    let s = start("").await;
    let a = s.http;
    assert_eq!(put(a, "/cache/a%20b%2Fc", b"1").await.status, StatusCode::CREATED);
    assert_eq!(get(a, "/cache/a%20b%2Fc").await.text(), "1");
    assert_eq!(get(a, "/cache/a%20b/c").await.text(), "1", "%2F and / name the same key");
    assert_eq!(put(a, "/cache/x/y/z", b"2").await.status, StatusCode::CREATED);
    assert_eq!(get(a, "/cache/x%2Fy%2Fz").await.text(), "2");
    assert_eq!(put(a, "/cache/%E2%9C%93", b"check").await.status, StatusCode::CREATED);
    assert_eq!(get(a, "/cache/\u{2713}".replace('\u{2713}', "%e2%9c%93").as_str()).await.text(), "check");
    assert_eq!(get(a, "/cache/").await.status, StatusCode::BAD_REQUEST, "empty key");
    s.server.shutdown().await;
}

#[tokio::test]
async fn binary_values_round_trip() {
    let s = start("").await;
    let value: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    assert_eq!(put(s.http, "/cache/bin", &value).await.status, StatusCode::CREATED);
    let got = get(s.http, "/cache/bin").await;
    assert_eq!(&got.body[..], &value[..]);
    assert_eq!(got.headers["content-type"], "application/octet-stream");
    let head = request(s.http, Method::HEAD, "/cache/bin", b"", &[]).await;
    assert_eq!(head.status, StatusCode::OK);
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], "10000");
    s.server.shutdown().await;
}

#[tokio::test]
async fn wrong_methods_and_routes() {
    let s = start("").await;
    let a = s.http;
    let r = request(a, Method::POST, "/cache/k", b"v", &[]).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "GET, HEAD, PUT, DELETE");
    assert_eq!(request(a, Method::PUT, "/metrics", b"", &[]).await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(request(a, Method::GET, "/join", b"", &[]).await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get(a, "/nope").await.status, StatusCode::NOT_FOUND);
    s.server.shutdown().await;
}

#[tokio::test]
async fn body_and_key_limits() {
    let s = start("[http]\nmax_body = \"1KB\"\nmax_key = 16\n").await;
    let a = s.http;
    assert_eq!(put(a, "/cache/small", &[b'x'; 1024]).await.status, StatusCode::CREATED);
    assert_eq!(put(a, "/cache/big", &[b'x'; 1025]).await.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(get(a, "/cache/big").await.status, StatusCode::NOT_FOUND, "nothing stored");
    assert_eq!(put(a, &format!("/cache/{}", "k".repeat(17)), b"v").await.status, StatusCode::URI_TOO_LONG);
    assert_eq!(get(a, "/cache/small").await.status, StatusCode::OK, "server still serves");
    s.server.shutdown().await;
}

#[tokio::test]
async fn ttl_expires_with_injected_time() {
    let s = start("").await;
    let a = s.http;
    assert_eq!(put(a, "/cache/t?ttl=10", b"v").await.status, StatusCode::CREATED);
    assert_eq!(put(a, "/cache/ms?ttl=1500ms", b"v").await.status, StatusCode::CREATED);
    assert_eq!(put(a, "/cache/forever", b"v").await.status, StatusCode::CREATED);
    s.clock.advance(1_499);
    assert_eq!(get(a, "/cache/ms").await.status, StatusCode::OK);
    s.clock.advance(1);
    assert_eq!(get(a, "/cache/ms").await.status, StatusCode::NOT_FOUND);
    s.clock.advance(8_499);
    assert_eq!(get(a, "/cache/t").await.status, StatusCode::OK);
    s.clock.advance(1);
    assert_eq!(get(a, "/cache/t").await.status, StatusCode::NOT_FOUND);
    assert_eq!(get(a, "/cache/forever").await.status, StatusCode::OK);
    // An expired key counts as absent: PUT creates it again.
    assert_eq!(put(a, "/cache/t", b"again").await.status, StatusCode::CREATED);
    assert_eq!(put(a, "/cache/x?ttl=soon", b"v").await.status, StatusCode::BAD_REQUEST);
    s.server.shutdown().await;
}

/// Active expiry: keys that expire and are never read again are removed by
/// the leader's background sweep (as log entries), counted, and the rest stay.
#[tokio::test]
async fn expired_keys_nobody_reads_are_swept() {
    let s = start("[expiry]\nsweep_ms = 5\nsweep_keys = 40\n").await;
    let a = s.http;
    for i in 0..300 {
        let ttl = if i % 3 == 0 { "" } else { "?ttl=1s" };
        assert_eq!(put(a, &format!("/cache/k{i}{ttl}"), b"v").await.status, StatusCode::CREATED);
    }
    let policy = s.server.policy().clone();
    assert_eq!(policy.len(), 300, "nothing expired yet");
    s.clock.advance(1_000);
    s.server
        .raft()
        .raft
        .wait(Some(std::time::Duration::from_secs(20)))
        .metrics(|_| policy.len() == 100, "expired keys swept")
        .await
        .expect("the sweep removes every expired key without a read");
    let m = get(a, "/metrics").await.text();
    assert_eq!(metric(&m, "gerdu_expiry_swept_total"), 200.0);
    assert_eq!(metric(&m, "gerdu_expirations_total"), 200.0);
    assert_eq!(metric(&m, "gerdu_items"), 100.0);
    assert_eq!(get(a, "/cache/k0").await.status, StatusCode::OK, "keys without a ttl stay");
    assert_eq!(get(a, "/cache/k1").await.status, StatusCode::NOT_FOUND);
    s.server.shutdown().await;
}

/// The weak policy in the server: memory pressure read from an injected
/// meminfo file lowers the limit, the leader evicts in LRU order down to the
/// floor, and the live limit and pressure evictions are exported.
#[tokio::test]
async fn weak_policy_yields_memory_under_pressure() {
    let dir = tempfile::tempdir().unwrap();
    let meminfo = dir.path().join("meminfo");
    let write = |available_mb: u64| {
        let text = format!("MemTotal: {} kB\nMemAvailable: {} kB\n", 1000 * 1024, available_mb * 1024);
        std::fs::write(&meminfo, text).unwrap();
    };
    write(500);
    let s = start(&format!(
        "policy = \"weak\"\n[lru]\nshards = 1\n[weak]\nsource = \"meminfo\"\nmeminfo = {:?}\nfloor = \"1MB\"\ninterval_ms = 5\n",
        meminfo.display().to_string()
    ))
    .await;
    let a = s.http;
    let value = vec![b'v'; 10_000];
    for i in 0..200 {
        assert_eq!(put(a, &format!("/cache/key{i:03}"), &value).await.status, StatusCode::CREATED);
    }
    let m = get(a, "/metrics").await.text();
    assert_eq!(metric(&m, "gerdu_capacity_bytes"), (64 << 20) as f64, "plenty of memory: the ceiling (capacity) binds");
    assert_eq!(metric(&m, "gerdu_weak_memory_available_bytes"), (500u64 << 20) as f64);
    assert_eq!(metric(&m, "gerdu_items"), 200.0);
    // Memory runs short (99 MB left of 1000, under the 10% reserve).
    write(99);
    let policy = s.server.policy().clone();
    s.server
        .raft()
        .raft
        .wait(Some(std::time::Duration::from_secs(20)))
        .metrics(|_| policy.capacity() == 1 << 20 && policy.used_bytes() <= 1 << 20, "pressure evictions applied")
        .await
        .expect("the cache shrinks to the floor");
    let m = get(a, "/metrics").await.text();
    let items = metric(&m, "gerdu_items");
    assert!(items > 50.0 && items < 200.0, "{items} items left at the 1MB floor");
    assert_eq!(metric(&m, "gerdu_weak_limit_bytes"), (1 << 20) as f64);
    assert_eq!(metric(&m, "gerdu_weak_pressure_evictions_total"), 200.0 - items);
    assert_eq!(metric(&m, "gerdu_evictions_total"), 200.0 - items);
    assert_eq!(metric(&m, "gerdu_weak_shrinks_total"), 1.0);
    assert_eq!(get(a, "/cache/key000").await.status, StatusCode::NOT_FOUND, "oldest evicted");
    assert_eq!(get(a, "/cache/key199").await.status, StatusCode::OK, "newest kept");
    s.server.shutdown().await;
}

/// Every series the Grafana dashboard in `examples/grafana` queries is one a
/// server exports (with the weak policy, which adds its own).
#[tokio::test]
async fn the_grafana_dashboard_queries_exported_series() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/grafana/gerdu-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let s = start("policy = \"weak\"\n").await;
    let exported = get(s.http, "/metrics").await.text();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("gerdu_") {
                let name: String = expr[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let base = name.strip_suffix("_bucket").unwrap_or(&name);
                // A labelled series shows once it has a child; those only declared so far are in the source.
                let declared = include_str!("../src/metrics.rs").contains(&format!("\"{base}\""));
                assert!(
                    exported.contains(&format!("# TYPE {base} ")) || declared,
                    "{base} (panel {}) is not exported",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried > 20, "{queried} series queried");
    s.server.shutdown().await;
}

#[tokio::test]
async fn if_none_match_star_only_creates() {
    let s = start("").await;
    let put_new = |body: &'static [u8]| request(s.http, Method::PUT, "/cache/once", body, &[("if-none-match", "*")]);
    assert_eq!(put_new(b"1").await.status, StatusCode::CREATED);
    assert_eq!(put_new(b"2").await.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(get(s.http, "/cache/once").await.text(), "1");
    s.server.shutdown().await;
}

#[tokio::test]
async fn eviction_keeps_charged_bytes_within_capacity() {
    for policy in ["lru", "lfu", "s3fifo", "wtinylfu"] {
        evicts_within_capacity(policy).await;
    }
}

async fn evicts_within_capacity(name: &str) {
    let s = start(&format!("capacity = \"64KB\"\npolicy = \"{name}\"\n[{name}]\nshards = 1\n")).await;
    let a = s.http;
    let value = vec![b'v'; 1000];
    for i in 0..200 {
        put(a, &format!("/cache/key{i:03}"), &value).await;
    }
    // Evictions are log entries the leader proposes once a write takes the
    // store over capacity: wait until the last one is applied.
    let policy = s.server.policy().clone();
    s.server
        .raft()
        .raft
        .wait(Some(std::time::Duration::from_secs(10)))
        .metrics(|_| policy.used_bytes() <= 65536, "evictions applied")
        .await
        .expect("back within capacity");
    let m = get(a, "/metrics").await.text();
    let used = metric(&m, "gerdu_used_bytes");
    assert!(used <= 65536.0, "{name}: used {used} over capacity");
    assert_eq!(metric(&m, "gerdu_capacity_bytes"), 65536.0);
    let overhead = metric(&m, "gerdu_entry_overhead_bytes");
    assert_eq!(overhead, policy.entry_overhead() as f64, "{name}: the policy's own overhead");
    let per_item = 6.0 + 1000.0 + overhead;
    let items = metric(&m, "gerdu_items");
    assert!(items > 10.0, "{name}: {items} items kept");
    assert_eq!(used, items * per_item, "{name}: charge = key + value + overhead");
    assert_eq!(metric(&m, "gerdu_evictions_total"), 200.0 - items, "{name}");
    assert_eq!(get(a, "/cache/key000").await.status, StatusCode::NOT_FOUND, "{name}: oldest evicted");
    assert_eq!(get(a, "/cache/key199").await.status, StatusCode::OK, "{name}: newest kept");
    s.server.shutdown().await;
}

#[tokio::test]
async fn metrics_count_like_the_go_original() {
    let s = start("").await;
    let a = s.http;
    put(a, "/cache/a", b"1").await;
    put(a, "/cache/b", b"2").await;
    get(a, "/cache/a").await;
    get(a, "/cache/zz").await;
    delete(a, "/cache/b").await;
    delete(a, "/cache/b").await;
    let r = get(a, "/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let m = r.text();
    assert_eq!(metric(&m, "gerdu_adds_total"), 2.0);
    assert_eq!(metric(&m, "gerdu_hits_total"), 1.0);
    assert_eq!(metric(&m, "gerdu_misses_total"), 1.0);
    assert_eq!(metric(&m, "gerdu_deletes_total"), 1.0);
    assert_eq!(metric(&m, "gerdu_items"), 1.0);
    assert_eq!(metric(&m, "gerdu_raft_is_leader"), 1.0);
    assert!(metric(&m, "gerdu_raft_applied_index") >= 4.0);
    assert!(m.contains("gerdu_requests_total{op=\"get\",protocol=\"http\"} 2"), "{m}");
    assert!(m.contains("gerdu_request_duration_seconds_count{op=\"set\",protocol=\"http\"} 2"));
    s.server.shutdown().await;
}

#[tokio::test]
async fn health_reports_the_raft_role() {
    let s = start("id = \"solo\"").await;
    let r = get(s.http, "/health").await;
    assert_eq!(r.status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["id"], "solo");
    assert_eq!(v["role"], "leader");
    assert_eq!(v["leader"], "solo");
    assert_eq!(v["members"].as_array().unwrap().len(), 1);
    s.server.shutdown().await;
}

#[tokio::test]
async fn join_and_leave_errors() {
    let s = start("[raft]\ncatch_up_timeout_ms = 200\n").await;
    let a = s.http;
    // Nothing listens there: the learner never catches up and is removed again.
    let j = request(a, Method::POST, "/join", br#"{"id":"node1","addr":"127.0.0.1:1"}"#, &[]).await;
    assert_eq!(j.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(j.text().contains("node1"), "{}", j.text());
    assert_eq!(s.server.raft().status().members.len(), 1);
    assert_eq!(request(a, Method::POST, "/join", b"{", &[]).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(request(a, Method::POST, "/leave", b"node1", &[]).await.status, StatusCode::NOT_FOUND);
    assert_eq!(request(a, Method::POST, "/leave", b"  ", &[]).await.status, StatusCode::BAD_REQUEST);
    s.server.shutdown().await;
}

#[tokio::test]
async fn auth_accepts_basic_and_bearer_only() {
    let s = start(
        r#"
        [auth]
        enabled = true
        users = [ { name = "alice", password = "wonderland" }, { name = "ci", token = "f00d" } ]
        "#,
    )
    .await;
    let a = s.http;
    let none: Answer = put(a, "/cache/k", b"v").await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert!(none.headers.get_all("www-authenticate").iter().count() >= 1);
    // alice:wonderland
    let basic = ("authorization", "Basic YWxpY2U6d29uZGVybGFuZA==");
    let wrong = ("authorization", "Basic YWxpY2U6eA==");
    assert_eq!(request(a, Method::PUT, "/cache/k", b"v", &[basic]).await.status, StatusCode::CREATED);
    assert_eq!(request(a, Method::GET, "/cache/k", b"", &[wrong]).await.status, StatusCode::UNAUTHORIZED);
    let bearer = ("authorization", "Bearer f00d");
    assert_eq!(request(a, Method::GET, "/cache/k", b"", &[bearer]).await.status, StatusCode::OK);
    let bad_token = ("authorization", "Bearer nope");
    assert_eq!(request(a, Method::GET, "/cache/k", b"", &[bad_token]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(request(a, Method::POST, "/join", b"{}", &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(get(a, "/backup").await.status, StatusCode::UNAUTHORIZED);
    let backup = request(a, Method::GET, "/backup", b"", &[bearer]).await;
    assert_eq!((backup.status, common::backup_items(&backup.body)), (StatusCode::OK, 1));
    assert_eq!(request(a, Method::POST, "/restore", &backup.body, &[]).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(request(a, Method::POST, "/restore", &backup.body, &[basic]).await.status, StatusCode::OK);
    assert_eq!(get(a, "/metrics").await.status, StatusCode::OK, "metrics stay open");
    assert_eq!(get(a, "/health").await.status, StatusCode::OK, "health stays open");
    s.server.shutdown().await;
}

#[tokio::test]
async fn read_consistency_header() {
    let s = start("").await;
    put(s.http, "/cache/k", b"v").await;
    for c in ["linearizable", "leader", "local"] {
        let r = request(s.http, Method::GET, "/cache/k", b"", &[("gerdu-consistency", c)]).await;
        assert_eq!(r.status, StatusCode::OK, "{c}");
    }
    let r = request(s.http, Method::GET, "/cache/k", b"", &[("gerdu-consistency", "eventual")]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    s.server.shutdown().await;
}

#[tokio::test]
async fn malformed_http_gets_400_and_server_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start("").await;
    let mut raw = tokio::net::TcpStream::connect(s.http).await.unwrap();
    raw.write_all(b"THIS IS NOT HTTP\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    raw.read_to_end(&mut buf).await.unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&buf));
    assert_eq!(put(s.http, "/cache/k", b"v").await.status, StatusCode::CREATED);
    s.server.shutdown().await;
}

#[tokio::test]
async fn backup_and_restore_round_trip() {
    let a = start("").await;
    // Values, flags and deadlines (a third never expire, a third in a
    // minute, a third in a second), written through the pipeline.
    let sets: Vec<SetCommand> = (0..300u32)
        .map(|i| {
            let mut set = SetCommand::new(format!("k{i}"), format!("value {i}"));
            set.flags = i;
            set.expiry = [Expiry::Never, Expiry::In(60_000), Expiry::In(1_000)][i as usize % 3];
            set
        })
        .collect();
    let write =
        Request::single(RequestContext::new("test"), Command::SetMany { items: sets, only_if_none_exist: false });
    gerdu_api::pipeline::call(&a.server.pipeline(), write).await.unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(5_000).collect();
    assert_eq!(put(a.http, "/cache/bin", &binary).await.status, StatusCode::CREATED);

    let backup = get(a.http, "/backup").await;
    assert_eq!(backup.status, StatusCode::OK);
    assert_eq!(common::backup_items(&backup.body), 301);
    assert_eq!(backup.headers["gerdu-applied-index"], a.server.raft().status().applied_index.to_string().as_str());
    let original = contents(&a);

    // Restored two seconds later into another server that has a key of its
    // own: the one-second items have expired, everything else comes back
    // with its value, flags and deadline, and the other key stays.
    let b = start("").await;
    for s in [&a, &b] {
        s.clock.advance(2_000);
    }
    assert_eq!(put(b.http, "/cache/other", b"stays").await.status, StatusCode::CREATED);
    let r = request(b.http, Method::POST, "/restore", &backup.body, &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let counts: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
    assert_eq!((counts["restored"].as_u64(), counts["expired"].as_u64()), (Some(201), Some(100)), "{counts}");
    let restored = contents(&b);
    assert_eq!(restored.len(), 202);
    let now = b.clock.now_ms();
    for (key, (value, flags, _cas, expires_at, _)) in &original {
        match restored.get(key) {
            Some((v, f, _, e, _)) => assert_eq!((v, f, e), (value, flags, expires_at), "{key:?}"),
            None => assert!(*expires_at != 0 && *expires_at <= now, "{key:?} missing"),
        }
    }
    assert_eq!(&get(b.http, "/cache/bin").await.body[..], &binary[..]);
    assert_eq!(get(b.http, "/cache/other").await.text(), "stays");

    // A damaged file is refused whole: nothing is written.
    let mut damaged = backup.body.to_vec();
    damaged[40] ^= 1;
    assert_eq!(put(b.http, "/cache/k0", b"changed").await.status, StatusCode::NO_CONTENT);
    let r = request(b.http, Method::POST, "/restore", &damaged, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text().contains("checksum"), "{}", r.text());
    assert_eq!(get(b.http, "/cache/k0").await.text(), "changed");
    let r = request(b.http, Method::POST, "/restore", b"hello", &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(get(b.http, "/restore").await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(request(b.http, Method::POST, "/backup", b"", &[]).await.status, StatusCode::METHOD_NOT_ALLOWED);
    a.server.shutdown().await;
    b.server.shutdown().await;
}

#[tokio::test]
async fn restore_is_bounded_by_max_restore() {
    let a = start("").await;
    assert_eq!(put(a.http, "/cache/k", &[b'x'; 4096]).await.status, StatusCode::CREATED);
    let backup = get(a.http, "/backup").await;
    let b = start("[http]\nmax_restore = \"1KB\"\n").await;
    let r = request(b.http, Method::POST, "/restore", &backup.body, &[]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(get(b.http, "/cache/k").await.status, StatusCode::NOT_FOUND);
    a.server.shutdown().await;
    b.server.shutdown().await;
}

#[tokio::test]
async fn a_large_backup_streams_in_chunks() {
    let a = start("").await;
    let values: Vec<Vec<u8>> = (0..30u8).map(|i| vec![b'a' + i % 26; 100_000]).collect();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(put(a.http, &format!("/cache/big{i}"), v).await.status, StatusCode::CREATED);
    }
    let backup = get(a.http, "/backup").await;
    assert_eq!(backup.status, StatusCode::OK);
    // Sent as encoded: no length known up front.
    assert!(backup.headers.get("content-length").is_none(), "{:?}", backup.headers);
    assert!(backup.body.len() > 3_000_000);
    let file = gerdu_api::image::decode_backup(backup.body.clone()).unwrap();
    assert_eq!(file.items.len(), 30);
    for (key, item) in &file.items {
        let i: usize = std::str::from_utf8(&key[3..]).unwrap().parse().unwrap();
        assert_eq!(&item.value[..], &values[i][..]);
    }
    a.server.shutdown().await;
}

/// One HTTP/1.1 response read off a raw connection: status, headers (lower
/// case) and body, with a `Content-Length` or `chunked` body.
async fn read_response(
    r: &mut tokio::io::BufReader<tokio::net::TcpStream>,
) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    let status: u16 = line.split(' ').nth(1).unwrap_or_else(|| panic!("status line {line:?}")).parse().unwrap();
    let mut headers = std::collections::HashMap::new();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.insert(k.to_ascii_lowercase(), v.trim().to_string());
    }
    let mut body = Vec::new();
    if let Some(n) = headers.get("content-length") {
        body.resize(n.parse().unwrap(), 0);
        r.read_exact(&mut body).await.unwrap();
    } else if headers.get("transfer-encoding").is_some_and(|t| t == "chunked") {
        loop {
            line.clear();
            r.read_line(&mut line).await.unwrap();
            let n = usize::from_str_radix(line.trim_end(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).await.unwrap();
            assert_eq!(&chunk[n..], b"\r\n");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    }
    (status, headers, body)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    use tokio::io::AsyncWriteExt;
    let s = start("").await;
    assert_eq!(put(s.http, "/cache/big", &vec![b'x'; 300_000]).await.status, StatusCode::CREATED);
    let mut conn = tokio::io::BufReader::new(tokio::net::TcpStream::connect(s.http).await.unwrap());
    // Everything in one write: the server finds the requests queued behind
    // each other in its read buffer, and answers them as one batch.
    let mut batch = Vec::new();
    for i in 0..20 {
        batch.extend_from_slice(
            format!("PUT /cache/k{i} HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\nv{}", i % 10).as_bytes(),
        );
    }
    for i in 0..20 {
        batch.extend_from_slice(format!("GET /cache/k{i} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes());
    }
    batch.extend_from_slice(b"GET /cache/missing HTTP/1.1\r\nhost: t\r\n\r\n");
    batch.extend_from_slice(b"DELETE /cache/k0 HTTP/1.1\r\nhost: t\r\n\r\n");
    batch.extend_from_slice(b"GET /cache/k0 HTTP/1.1\r\nhost: t\r\n\r\n");
    // A long answer, then a streamed one, each with a request behind it.
    batch.extend_from_slice(b"GET /cache/big HTTP/1.1\r\nhost: t\r\n\r\n");
    batch.extend_from_slice(b"GET /backup HTTP/1.1\r\nhost: t\r\n\r\n");
    batch.extend_from_slice(b"GET /cache/k1 HTTP/1.1\r\nhost: t\r\n\r\n");
    conn.get_mut().write_all(&batch).await.unwrap();
    for _ in 0..20 {
        assert_eq!(read_response(&mut conn).await.0, 201);
    }
    for i in 0..20 {
        let (status, _, body) = read_response(&mut conn).await;
        assert_eq!((status, body), (200, format!("v{}", i % 10).into_bytes()));
    }
    assert_eq!(read_response(&mut conn).await.0, 404);
    assert_eq!(read_response(&mut conn).await.0, 200);
    assert_eq!(read_response(&mut conn).await.0, 404);
    let (status, _, body) = read_response(&mut conn).await;
    assert_eq!((status, body.len()), (200, 300_000));
    let (status, headers, body) = read_response(&mut conn).await;
    assert_eq!(status, 200, "{headers:?}");
    // k1..k19 and big.
    assert_eq!(common::backup_items(&bytes::Bytes::from(body)), 20);
    let (status, _, body) = read_response(&mut conn).await;
    assert_eq!((status, body), (200, b"v1".to_vec()));
    s.server.shutdown().await;
}

#[tokio::test]
async fn answers_before_the_connection_closes_are_sent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = start("").await;
    assert_eq!(put(s.http, "/cache/k", b"v").await.status, StatusCode::CREATED);
    // Each is written at once; the server answers what it must, then closes.
    let cases: [(&[u8], &[&str]); 4] = [
        // A request that closes the connection, with another behind it.
        (
            b"GET /cache/k HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\nGET /cache/k HTTP/1.1\r\nhost: t\r\n\r\n",
            &["HTTP/1.1 200"],
        ),
        // Garbage with a request behind it.
        (b"NOT HTTP\r\n\r\nGET /cache/k HTTP/1.1\r\nhost: t\r\n\r\n", &["HTTP/1.1 400"]),
        // HTTP/1.0 closes after each answer.
        (b"GET /cache/k HTTP/1.0\r\n\r\nGET /cache/k HTTP/1.0\r\n\r\n", &["HTTP/1.0 200"]),
        // Two answers, the second closing.
        (
            b"GET /cache/k HTTP/1.1\r\nhost: t\r\n\r\nGET /cache/nope HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n",
            &["HTTP/1.1 200", "HTTP/1.1 404"],
        ),
    ];
    for (sent, want) in cases {
        let mut raw = tokio::net::TcpStream::connect(s.http).await.unwrap();
        raw.write_all(sent).await.unwrap();
        let mut buf = Vec::new();
        raw.read_to_end(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf);
        let statuses: Vec<&str> = text.match_indices("HTTP/1.").map(|(at, _)| &text[at..at + 12]).collect();
        assert_eq!(statuses, want, "{:?} → {text:?}", String::from_utf8_lossy(sent));
    }
    s.server.shutdown().await;
}

#[tokio::test]
async fn h2c_streams_are_served_beside_http1() {
    use http_body_util::{BodyExt, Full};
    let s = start("").await;
    let tcp = tokio::net::TcpStream::connect(s.http).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let call = |method: Method, path: String, body: &'static [u8]| {
        let mut sender = sender.clone();
        async move {
            let req = hyper::Request::builder()
                .method(method)
                .uri(format!("http://{}{path}", s.http))
                .body(Full::new(bytes::Bytes::from_static(body)))
                .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let status = resp.status();
            (status, resp.into_body().collect().await.unwrap().to_bytes())
        }
    };
    // Many streams in flight on the one connection.
    let puts: Vec<_> = (0..32).map(|i| call(Method::PUT, format!("/cache/h{i}"), b"two")).collect();
    for (status, _) in futures::future::join_all(puts).await {
        assert_eq!(status, StatusCode::CREATED);
    }
    let gets: Vec<_> = (0..32).map(|i| call(Method::GET, format!("/cache/h{i}"), b"")).collect();
    for (status, body) in futures::future::join_all(gets).await {
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"two"[..]));
    }
    // The same port still speaks HTTP/1.1.
    assert_eq!(get(s.http, "/cache/h3").await.body, "two");
    s.server.shutdown().await;
}
