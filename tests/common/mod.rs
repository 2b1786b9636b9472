//! Shared helpers for the black-box tests: an in-process server on
//! 127.0.0.1 with free ports and an injected clock, and a small HTTP client.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use gerdu::Server;
use gerdu_api::ManualClock;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Start of the injected clock (unix ms).
pub const T0: u64 = 1_700_000_000_000;

/// A running in-process server and its clock.
pub struct TestServer {
    pub server: Server,
    pub clock: Arc<ManualClock>,
    pub http: SocketAddr,
}

/// Builds a figment from TOML text on top of test defaults (ports 0, loopback).
pub fn figment(toml_text: &str) -> figment::Figment {
    use figment::providers::{Format, Toml};
    let base =
        gerdu::config::figment(None, &[], serde_json::json!({"http": {"port": 0}, "raft": {"addr": "127.0.0.1:0"}}));
    base.merge(Toml::string(toml_text))
}

/// Starts a server with extra TOML config.
pub async fn start(toml_text: &str) -> TestServer {
    let clock = Arc::new(ManualClock::new(T0));
    let server = Server::start(&figment(toml_text), clock.clone()).await.expect("server starts");
    let http = server.addr("http").expect("http listens");
    TestServer { server, clock, http }
}

/// The answer to an HTTP request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one HTTP/1.1 request on a fresh connection.
pub async fn request(addr: SocketAddr, method: Method, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::copy_from_slice(body))).expect("request");
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer { status, headers, body }
}

pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, Method::GET, path, b"", &[]).await
}

pub async fn put(addr: SocketAddr, path: &str, body: &[u8]) -> Answer {
    request(addr, Method::PUT, path, body, &[]).await
}

pub async fn delete(addr: SocketAddr, path: &str) -> Answer {
    request(addr, Method::DELETE, path, b"", &[]).await
}

/// The value of an unlabelled metric in the Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("metric {name} missing"))
        .trim()
        .parse()
        .expect("metric value")
}

/// Every item of a node, with the state that must be identical on replicas:
/// key → (value, flags, cas, expires_at, replicated meta bits).
pub fn contents(s: &TestServer) -> std::collections::BTreeMap<Bytes, (Bytes, u32, u64, u64, u32)> {
    let mut all = std::collections::BTreeMap::new();
    let mut cursor = 0;
    loop {
        cursor = s.server.policy().scan(cursor, &mut |k, i| {
            all.insert(k.clone(), (i.value.clone(), i.flags, i.cas, i.expires_at, i.meta.replicated().0));
            true
        });
        if cursor == 0 {
            return all;
        }
    }
}

/// How many items a backup file holds (it must be whole).
pub fn backup_items(body: &Bytes) -> usize {
    gerdu_api::image::decode_backup(body.clone()).expect("a whole backup file").items.len()
}

/// Waits (up to `secs`) until `s` has applied log index `index`.
pub async fn applied(s: &TestServer, index: u64, secs: u64) {
    s.server
        .raft()
        .raft
        .wait(Some(std::time::Duration::from_secs(secs)))
        .applied_index_at_least(Some(index), "the node applies the index")
        .await
        .expect("the node applies the index in time");
}
