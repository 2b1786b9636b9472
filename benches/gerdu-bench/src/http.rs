//! HTTP: `GET` and `PUT /cache/{key}`. With `-P 1` each client is one
//! HTTP/1.1 keep-alive connection with one request at a time; with `-P N`
//! it is one HTTP/2 connection (cleartext, prior knowledge) with N streams
//! in flight, each sending its next request when its answer is in (HTTP/1.1
//! pipelining is `--pipeline`, in [`crate::text`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::{Budget, Picker, Tally};

/// A connection's request handle.
pub enum Sender {
    /// HTTP/1.1: one request at a time.
    One(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    /// HTTP/2: any number of streams.
    Many(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// Opens one connection (HTTP/2 when `depth` > 1).
pub async fn connect(addr: &str, depth: usize) -> Result<Sender, String> {
    let stream = crate::text::connect(addr).await?;
    let io = TokioIo::new(stream);
    if depth > 1 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("http2 handshake with {addr}: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::Many(send))
    } else {
        let (send, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("http handshake with {addr}: {e}"))?;
        tokio::spawn(conn);
        Ok(Sender::One(send))
    }
}

fn request(addr: &str, get: bool, key: &str, value: &Bytes) -> Request<Full<Bytes>> {
    let (method, body) = if get { (Method::GET, Bytes::new()) } else { (Method::PUT, value.clone()) };
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}/cache/{key}"))
        .header(hyper::header::HOST, addr)
        .body(Full::new(body))
        .expect("a valid request")
}

/// Whether the status is an answer to this request (a miss is one).
fn expected(get: bool, status: StatusCode) -> bool {
    if get {
        status == StatusCode::OK || status == StatusCode::NOT_FOUND
    } else {
        status == StatusCode::CREATED || status == StatusCode::NO_CONTENT
    }
}

/// Sends one request and reads the whole answer.
async fn one(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<StatusCode, String> {
    let resp = match sender {
        Sender::One(s) => {
            s.ready().await.map_err(|e| e.to_string())?;
            s.send_request(req).await
        }
        Sender::Many(s) => s.send_request(req).await,
    }
    .map_err(|e| e.to_string())?;
    let status = resp.status();
    resp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(status)
}

/// One closed loop of requests on `sender` until the budget is spent.
async fn stream(mut sender: Sender, addr: Arc<str>, mut picker: Picker, value: Bytes, budget: Arc<Budget>) -> Tally {
    let mut tally = Tally::new();
    while budget.take() {
        let (get, key) = picker.next();
        let start = Instant::now();
        let result = one(&mut sender, request(&addr, get, &key, &value)).await;
        tally.record(start);
        budget.done.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(status) if expected(get, status) => {}
            Ok(status) => tally.error(|| format!("{} answered {status}", if get { "GET" } else { "PUT" })),
            Err(e) => {
                tally.error(|| e);
                return tally;
            }
        }
    }
    tally
}

/// One client: `depth` streams on one connection.
pub async fn client(
    sender: Sender,
    addr: Arc<str>,
    mut picker: Picker,
    value: Bytes,
    depth: usize,
    budget: Arc<Budget>,
) -> Tally {
    match sender {
        Sender::One(_) => stream(sender, addr, picker, value, budget).await,
        Sender::Many(send) => {
            // Each stream draws its own keys: seed them apart.
            let streams: Vec<_> = (0..depth.max(1))
                .map(|i| {
                    let picker = picker.fork(i as u64);
                    tokio::spawn(stream(
                        Sender::Many(send.clone()),
                        addr.clone(),
                        picker,
                        value.clone(),
                        budget.clone(),
                    ))
                })
                .collect();
            let mut total = Tally::new();
            for s in streams {
                if let Ok(t) = s.await {
                    total.merge(t);
                }
            }
            total
        }
    }
}

/// Stores every key once (untimed), 16 requests in flight on each of a few
/// HTTP/2 connections.
pub async fn preload(addr: &str, keyspace: u64, value: &Bytes) -> Result<(), String> {
    let mut senders = Vec::new();
    for _ in 0..4 {
        let Sender::Many(send) = connect(addr, 2).await? else { unreachable!("depth 2 is HTTP/2") };
        senders.extend(std::iter::repeat_n(send, 16));
    }
    let (addr, value): (Arc<str>, Bytes) = (addr.into(), value.clone());
    crate::preload_ranges(keyspace, 1, senders, move |mut send, keys| {
        let req = request(&addr, false, &crate::key(keys.start), &value);
        async move {
            let resp = send.send_request(req).await.map_err(|e| format!("preload: {e}"))?;
            if !expected(false, resp.status()) {
                return Err(format!("preload: PUT answered {}", resp.status()));
            }
            resp.into_body().collect().await.map_err(|e| format!("preload: {e}"))?;
            Ok(send)
        }
    })
    .await
}
