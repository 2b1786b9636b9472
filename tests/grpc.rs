//! The gRPC protocol against an in-process server on 127.0.0.1:0 with the
//! tonic client generated from `proto/gerdu.proto`: every RPC and status
//! code, the original API's behaviour, the stream, auth metadata, limits,
//! health, reflection, TLS, and drain on shutdown.

mod common;

use std::time::Duration;

use futures::StreamExt;
use gerdu_protocol_grpc::pb::gerdu_client::GerduClient;
use gerdu_protocol_grpc::pb::{self, operation, operation_result};
use tonic::transport::Channel;
use tonic::{Code, Request};

struct G {
    s: common::TestServer,
    client: GerduClient<Channel>,
}

async fn connect(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connect")
}

async fn start(extra: &str) -> G {
    let s = common::start(&format!("protocols = [\"grpc\"]\n[grpc]\nport = 0\n{extra}")).await;
    let addr = s.server.addr("grpc").expect("grpc listens");
    G { client: GerduClient::new(connect(addr).await), s }
}

fn put(key: &str, value: &str) -> pb::PutRequest {
    pb::PutRequest { key: key.into(), value: value.to_string().into(), ..Default::default() }
}

fn get(key: &str) -> pb::GetRequest {
    pb::GetRequest { key: key.into() }
}

#[tokio::test]
async fn original_api_put_get_delete() {
    let mut g = start("").await;
    let r = g.client.put(put("Hello", "World")).await.unwrap().into_inner();
    assert!(r.created, "a new key is created");
    let r = g.client.put(put("Hello", "World!")).await.unwrap().into_inner();
    assert!(!r.created, "a second put is an update");
    let r = g.client.get(get("Hello")).await.unwrap().into_inner();
    assert_eq!(&r.value[..], b"World!");
    let r = g.client.delete(pb::DeleteRequest { key: "Hello".into() }).await.unwrap().into_inner();
    assert!(r.deleted);
    let e = g.client.get(get("Hello")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = g.client.delete(pb::DeleteRequest { key: "Hello".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The same data set as HTTP.
    g.client.put(put("shared", "via grpc")).await.unwrap();
    assert_eq!(common::get(g.s.http, "/cache/shared").await.text(), "via grpc");
    g.s.server.shutdown().await;
}

#[tokio::test]
async fn ttl_flags_and_cas() {
    let mut g = start("").await;
    let p = pb::PutRequest { ttl_ms: 10_000, flags: 0xdead_beef, ..put("t", "v") };
    let first = g.client.put(p).await.unwrap().into_inner();
    assert!(first.cas > 0);
    let r = g.client.get(get("t")).await.unwrap().into_inner();
    assert_eq!((r.flags, r.cas, r.ttl_ms), (0xdead_beef, first.cas, 10_000));
    g.s.clock.advance(4_000);
    assert_eq!(g.client.get(get("t")).await.unwrap().into_inner().ttl_ms, 6_000);
    // Every write changes the cas.
    let second = g.client.put(put("t", "w")).await.unwrap().into_inner();
    assert_ne!(second.cas, first.cas);
    assert_eq!(g.client.get(get("t")).await.unwrap().into_inner().ttl_ms, -1, "a plain put clears the ttl");
    g.client.put(pb::PutRequest { ttl_ms: 1_000, ..put("t", "w") }).await.unwrap();
    g.s.clock.advance(1_000);
    assert_eq!(g.client.get(get("t")).await.unwrap_err().code(), Code::NotFound, "expired");
    g.s.server.shutdown().await;
}

#[tokio::test]
async fn conditional_puts() {
    let mut g = start("").await;
    let absent = |k: &str, v: &str| pb::PutRequest { condition: pb::Condition::IfAbsent as i32, ..put(k, v) };
    assert!(g.client.put(absent("c", "1")).await.unwrap().into_inner().created);
    assert_eq!(g.client.put(absent("c", "2")).await.unwrap_err().code(), Code::AlreadyExists);
    let present = |k: &str, v: &str| pb::PutRequest { condition: pb::Condition::IfPresent as i32, ..put(k, v) };
    assert_eq!(g.client.put(present("nope", "x")).await.unwrap_err().code(), Code::NotFound);
    assert!(!g.client.put(present("c", "3")).await.unwrap().into_inner().created);

    let cas = g.client.get(get("c")).await.unwrap().into_inner().cas;
    let if_cas = |k: &str, v: &str, cas| pb::PutRequest { condition: pb::Condition::IfCas as i32, cas, ..put(k, v) };
    let stored = g.client.put(if_cas("c", "4", cas)).await.unwrap().into_inner();
    assert!(stored.cas != cas && !stored.created);
    let e = g.client.put(if_cas("c", "5", cas)).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "a stale cas: {e:?}");
    assert_eq!(g.client.put(if_cas("missing", "5", 1)).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(&g.client.get(get("c")).await.unwrap().into_inner().value[..], b"4");

    let e = g.client.put(pb::PutRequest { condition: 42, ..put("c", "x") }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = g.client.put(pb::PutRequest { cas: 7, ..put("c", "x") }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "cas without CONDITION_IF_CAS");
    g.s.server.shutdown().await;
}

#[tokio::test]
async fn multi_get_put_delete() {
    let mut g = start("").await;
    g.client.put(put("b", "exists")).await.unwrap();
    let items = vec![
        put("a", "1"),
        pb::PutRequest { condition: pb::Condition::IfAbsent as i32, ..put("b", "2") },
        put("", "3"),
        pb::PutRequest { ttl_ms: 500, ..put("d", "4") },
    ];
    let results = g.client.multi_put(pb::MultiPutRequest { items }).await.unwrap().into_inner().results;
    let codes: Vec<i32> = results.iter().map(|r| r.status.as_ref().unwrap().code).collect();
    assert_eq!(codes, [Code::Ok as i32, Code::AlreadyExists as i32, Code::InvalidArgument as i32, Code::Ok as i32]);
    assert!(results[0].created && results[0].cas > 0 && results[3].cas > results[0].cas);

    let keys = vec!["a".into(), "b".into(), "zzz".into(), "d".into()];
    let entries = g.client.multi_get(pb::MultiGetRequest { keys }).await.unwrap().into_inner().entries;
    let seen: Vec<(&str, bool, &[u8], i64)> =
        entries.iter().map(|e| (e.key.as_str(), e.found, &e.value[..], e.ttl_ms)).collect();
    assert_eq!(
        seen,
        [
            ("a", true, &b"1"[..], -1),
            ("b", true, &b"exists"[..], -1),
            ("zzz", false, &b""[..], 0),
            ("d", true, &b"4"[..], 500)
        ]
    );

    let keys = vec!["a".into(), "zzz".into(), "d".into()];
    let r = g.client.multi_delete(pb::MultiDeleteRequest { keys }).await.unwrap().into_inner();
    assert_eq!(r.deleted, 2);
    assert_eq!(g.client.get(get("a")).await.unwrap_err().code(), Code::NotFound);
    let r = g.client.multi_get(pb::MultiGetRequest { keys: vec![] }).await.unwrap().into_inner();
    assert!(r.entries.is_empty());
    let e = g.client.multi_delete(pb::MultiDeleteRequest { keys: vec!["".into()] }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    g.s.server.shutdown().await;
}

#[tokio::test]
async fn increment_and_touch() {
    let mut g = start("").await;
    let inc = |key: &str, delta| pb::IncrementRequest { key: key.into(), delta };
    assert_eq!(g.client.increment(inc("n", None)).await.unwrap().into_inner().value, 1, "absent delta is 1");
    assert_eq!(g.client.increment(inc("n", Some(41))).await.unwrap().into_inner().value, 42);
    assert_eq!(g.client.increment(inc("n", Some(-50))).await.unwrap().into_inner().value, -8);
    // The counter is an ordinary value for every protocol.
    assert_eq!(&g.client.get(get("n")).await.unwrap().into_inner().value[..], b"-8");
    g.client.put(put("word", "abc")).await.unwrap();
    assert_eq!(g.client.increment(inc("word", None)).await.unwrap_err().code(), Code::FailedPrecondition);
    g.client.put(put("big", &i64::MAX.to_string())).await.unwrap();
    assert_eq!(g.client.increment(inc("big", None)).await.unwrap_err().code(), Code::OutOfRange);

    let touch = |key: &str, ttl_ms| pb::TouchRequest { key: key.into(), ttl_ms };
    g.client.touch(touch("word", 2_000)).await.unwrap();
    assert_eq!(g.client.get(get("word")).await.unwrap().into_inner().ttl_ms, 2_000);
    g.client.touch(touch("word", 0)).await.unwrap();
    assert_eq!(g.client.get(get("word")).await.unwrap().into_inner().ttl_ms, -1, "ttl 0 persists");
    assert_eq!(g.client.touch(touch("missing", 5)).await.unwrap_err().code(), Code::NotFound);
    g.s.server.shutdown().await;
}

fn op(id: u64, op: operation::Op) -> pb::Operation {
    pb::Operation { id, op: Some(op) }
}

#[tokio::test]
async fn pipeline_stream_answers_in_order_with_per_operation_status() {
    let mut g = start("").await;
    let n = 2_000u64;
    let mut ops = Vec::new();
    for i in 0..n {
        ops.push(op(i * 3, operation::Op::Put(put(&format!("k{i}"), &format!("v{i}")))));
        ops.push(op(i * 3 + 1, operation::Op::Get(get(&format!("k{i}")))));
        let key = if i % 100 == 0 { String::new() } else { format!("k{i}") };
        ops.push(op(i * 3 + 2, operation::Op::Increment(pb::IncrementRequest { key, delta: None })));
    }
    ops.push(pb::Operation { id: 9_999_999, op: None });
    let mut results = g.client.pipeline(futures::stream::iter(ops)).await.unwrap().into_inner();
    let mut count = 0u64;
    while let Some(r) = results.next().await {
        let r = r.unwrap();
        let code = r.status.as_ref().map_or(0, |s| s.code);
        if r.id == 9_999_999 {
            assert_eq!(code, Code::InvalidArgument as i32);
            count += 1;
            continue;
        }
        assert_eq!(r.id, count, "results come back in order");
        let i = r.id / 3;
        match (r.id % 3, r.result) {
            (0, Some(operation_result::Result::Put(p))) => assert!(p.created && code == 0),
            (1, Some(operation_result::Result::Get(v))) => assert_eq!(v.value, format!("v{i}").into_bytes()),
            (2, None) if i % 100 == 0 => assert_eq!(code, Code::InvalidArgument as i32, "empty key"),
            (2, None) => assert_eq!(code, Code::FailedPrecondition as i32, "v{i} is not a number"),
            other => panic!("unexpected result {other:?} for id {}", r.id),
        }
        count += 1;
    }
    assert_eq!(count, 3 * n + 1);
    g.s.server.shutdown().await;
}

#[tokio::test]
async fn size_limits_are_resource_exhausted() {
    let mut g = start("max_key_size = 8\nmax_value_size = 16\nmax_message_size = 1024\n").await;
    assert_eq!(g.client.put(put("123456789", "v")).await.unwrap_err().code(), Code::ResourceExhausted);
    assert_eq!(g.client.get(get("123456789")).await.unwrap_err().code(), Code::ResourceExhausted);
    let e = g.client.put(put("k", &"x".repeat(17))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    g.client.put(put("k", &"x".repeat(16))).await.unwrap();
    let e = g.client.put(put("k", &"x".repeat(2000))).await.unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "a message over max_message_size: {e:?}");
    assert_eq!(g.client.get(get("")).await.unwrap_err().code(), Code::InvalidArgument);
    // The connection still serves.
    assert_eq!(g.client.get(get("k")).await.unwrap().into_inner().value.len(), 16);
    g.s.server.shutdown().await;
}

#[tokio::test]
async fn auth_metadata() {
    let g = start(
        "[auth]\nenabled = true\nusers = [{ name = \"alice\", password = \"wonderland\" }, { name = \"ci\", token = \"f00d\" }]\n",
    )
    .await;
    let mut client = g.client.clone();
    let e = client.get(get("k")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let with = |value: &str, msg: pb::PutRequest| {
        let mut r = Request::new(msg);
        r.metadata_mut().insert("authorization", value.parse().unwrap());
        r
    };
    assert_eq!(client.put(with("Bearer nope", put("k", "v"))).await.unwrap_err().code(), Code::Unauthenticated);
    assert_eq!(client.put(with("Digest x", put("k", "v"))).await.unwrap_err().code(), Code::Unauthenticated);
    assert!(client.put(with("Bearer f00d", put("k", "v"))).await.unwrap().into_inner().created);
    // base64("alice:wonderland")
    assert!(!client.put(with("Basic YWxpY2U6d29uZGVybGFuZA==", put("k", "w"))).await.unwrap().into_inner().created);
    let e = client.cluster_status(pb::ClusterStatusRequest {}).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // A stream without credentials ends with UNAUTHENTICATED.
    let ops = futures::stream::iter(vec![op(1, operation::Op::Get(get("k")))]);
    let mut results = client.pipeline(ops).await.unwrap().into_inner();
    assert_eq!(results.next().await.unwrap().unwrap_err().code(), Code::Unauthenticated);
    // Health stays open.
    let addr = g.s.server.addr("grpc").unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(connect(addr).await);
    let r = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    assert_eq!(r.into_inner().status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    g.s.server.shutdown().await;
}

#[tokio::test]
async fn read_consistency_metadata() {
    let mut g = start("").await;
    g.client.put(put("k", "v")).await.unwrap();
    for level in ["linearizable", "leader", "local"] {
        let mut r = Request::new(get("k"));
        r.metadata_mut().insert("gerdu-consistency", level.parse().unwrap());
        assert_eq!(&g.client.get(r).await.unwrap().into_inner().value[..], b"v");
    }
    let mut r = Request::new(get("k"));
    r.metadata_mut().insert("gerdu-consistency", "eventual".parse().unwrap());
    assert_eq!(g.client.get(r).await.unwrap_err().code(), Code::InvalidArgument);
    g.s.server.shutdown().await;
}

#[tokio::test]
async fn cluster_status_health_and_reflection() {
    let mut g = start("").await;
    let s = g.client.cluster_status(pb::ClusterStatusRequest {}).await.unwrap().into_inner();
    assert_eq!((s.id.as_str(), s.role.as_str(), s.leader.as_str()), ("master", "leader", "master"));
    assert_eq!(s.members.len(), 1);
    assert!(s.term >= 1);

    let addr = g.s.server.addr("grpc").unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(connect(addr).await);
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    for service in ["", "gerdu.Gerdu"] {
        let r = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap();
        assert_eq!(r.into_inner().status, serving, "{service:?}");
    }
    let e = health.check(tonic_health::pb::HealthCheckRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(connect(addr).await);
    let asks = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol("gerdu.Gerdu".into())),
        },
    ];
    let mut answers = reflection.server_reflection_info(futures::stream::iter(asks)).await.unwrap().into_inner();
    match answers.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            for want in ["gerdu.Gerdu", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
                assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
            }
        }
        other => panic!("unexpected {other:?}"),
    }
    match answers.next().await.unwrap().unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => assert!(!files.file_descriptor_proto.is_empty()),
        other => panic!("unexpected {other:?}"),
    }
    // grpcurl and older tools ask v1alpha.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    let mut alpha = AlphaClient::new(connect(addr).await);
    let ask = tonic_reflection::pb::v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(AlphaRequest::ListServices(String::new())),
    };
    let mut answers = alpha.server_reflection_info(futures::stream::iter(vec![ask])).await.unwrap().into_inner();
    match answers.next().await.unwrap().unwrap().message_response {
        Some(AlphaResponse::ListServicesResponse(list)) => {
            assert!(list.service.iter().any(|s| s.name == "gerdu.Gerdu"))
        }
        other => panic!("unexpected {other:?}"),
    }

    // An unknown service or method is UNIMPLEMENTED, as on any gRPC server.
    let mut raw = tonic::client::Grpc::new(connect(addr).await);
    for path in ["/nope.Nope/Get", "/gerdu.Gerdu/Nope"] {
        raw.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<pb::GetRequest, pb::GetResponse>::default();
        let path = http::uri::PathAndQuery::from_static(path);
        let e = raw.unary(Request::new(get("k")), path.clone(), codec).await.unwrap_err();
        assert_eq!(e.code(), Code::Unimplemented, "{path}");
    }
    g.s.server.shutdown().await;
}

#[tokio::test]
async fn open_stream_ends_unavailable_when_the_server_drains() {
    let mut g = start("").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::Operation>(4);
    let mut results = g.client.pipeline(stream_of(rx)).await.unwrap().into_inner();
    tx.send(op(1, operation::Op::Put(put("k", "v")))).await.unwrap();
    assert!(results.next().await.unwrap().unwrap().status.is_some_and(|s| s.code == 0));
    let shutdown = tokio::spawn(g.s.server.shutdown());
    let end = tokio::time::timeout(Duration::from_secs(30), results.next()).await.expect("the stream ends");
    assert_eq!(end.unwrap().unwrap_err().code(), Code::Unavailable);
    tokio::time::timeout(Duration::from_secs(30), shutdown).await.expect("drain finishes").unwrap();
    drop(tx);
}

/// The operations sent on `rx`, as a request stream.
fn stream_of(mut rx: tokio::sync::mpsc::Receiver<pb::Operation>) -> impl futures::Stream<Item = pb::Operation> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn health_turns_not_serving_when_the_drain_starts() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let g = start("").await;
    let addr = g.s.server.addr("grpc").unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(connect(addr).await);
    let ask = tonic_health::pb::HealthCheckRequest { service: "gerdu.Gerdu".into() };
    let mut watch = health.watch(ask).await.unwrap().into_inner();
    assert_eq!(watch.next().await.unwrap().unwrap().status, ServingStatus::Serving as i32);
    let shutdown = tokio::spawn(g.s.server.shutdown());
    let next = tokio::time::timeout(Duration::from_secs(30), watch.next()).await.expect("an update");
    assert_eq!(next.unwrap().unwrap().status, ServingStatus::NotServing as i32);
    drop(watch);
    tokio::time::timeout(Duration::from_secs(30), shutdown).await.expect("drain finishes").unwrap();
}
