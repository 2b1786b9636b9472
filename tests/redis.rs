//! The Redis protocol against an in-process server on 127.0.0.1:0, with the
//! `redis` client crate and with raw bytes (protocol errors, inline commands,
//! RESP3, pipelining order).

mod common;

use std::net::SocketAddr;

use redis::{AsyncCommands, Value, cmd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct R {
    s: common::TestServer,
    addr: SocketAddr,
}

async fn start(extra: &str) -> R {
    let s = common::start(&format!("protocols = [\"redis\"]\n[redis]\nport = 0\n{extra}")).await;
    let addr = s.server.addr("redis").expect("redis listens");
    R { s, addr }
}

impl R {
    async fn con(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(format!("redis://{}/", self.addr)).unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }
}

/// Sends raw bytes and reads until `done(output)` or the server closes the
/// connection (a reset, when it closed with input unread, counts as closing).
/// Returns the output and whether the server closed. A server that stops
/// answering fails the test (after a generous bound) instead of hanging it.
async fn exchange(addr: SocketAddr, input: &[u8], done: impl Fn(&[u8]) -> bool) -> (Vec<u8>, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(input).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&out) {
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), s.read(&mut buf)).await;
        let n = read.unwrap_or_else(|_| panic!("no reply after {:?}", String::from_utf8_lossy(&out))).unwrap_or(0);
        if n == 0 {
            return (out, true);
        }
        out.extend_from_slice(&buf[..n]);
    }
    (out, false)
}

/// Sends raw bytes and reads until `min_len` bytes have arrived or EOF.
async fn raw(addr: SocketAddr, input: &[u8], min_len: usize) -> Vec<u8> {
    exchange(addr, input, |out| out.len() >= min_len).await.0
}

/// Sends raw bytes and reads until the output ends with `suffix`.
async fn raw_until(addr: SocketAddr, input: &[u8], suffix: &[u8]) -> Vec<u8> {
    let (out, closed) = exchange(addr, input, |out| out.ends_with(suffix)).await;
    assert!(!closed, "closed after {:?}", String::from_utf8_lossy(&out));
    out
}

async fn err(con: &mut redis::aio::MultiplexedConnection, c: &mut redis::Cmd) -> String {
    let e = c.query_async::<Value>(con).await.expect_err("an error reply");
    format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""))
}

#[tokio::test]
async fn strings_basic() {
    let r = start("").await;
    let mut c = r.con().await;
    let pong: String = cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");
    let echo: String = cmd("ECHO").arg("hi").query_async(&mut c).await.unwrap();
    assert_eq!(echo, "hi");
    let _: () = c.set("k", "v").await.unwrap();
    assert_eq!(c.get::<_, Option<String>>("k").await.unwrap().as_deref(), Some("v"));
    assert_eq!(c.get::<_, Option<String>>("missing").await.unwrap(), None);
    assert_eq!(c.strlen::<_, i64>("k").await.unwrap(), 1);
    assert_eq!(c.append::<_, _, i64>("k", "alue").await.unwrap(), 5);
    assert_eq!(c.getrange::<_, String>("k", 1, -2).await.unwrap(), "alu");
    assert_eq!(cmd("SUBSTR").arg("k").arg(0).arg(0).query_async::<String>(&mut c).await.unwrap(), "v");
    assert_eq!(c.setrange::<_, _, i64>("k", 7, "X").await.unwrap(), 8);
    assert_eq!(c.get::<_, Vec<u8>>("k").await.unwrap(), b"value\0\0X");
    assert_eq!(c.getset::<_, _, String>("k", "new").await.unwrap(), "value\0\0X");
    assert_eq!(c.get_del::<_, String>("k").await.unwrap(), "new");
    assert_eq!(c.exists::<_, i64>("k").await.unwrap(), 0);
    let bin: Vec<u8> = (0..=255).collect();
    let _: () = c.set("bin", &bin[..]).await.unwrap();
    assert_eq!(c.get::<_, Vec<u8>>("bin").await.unwrap(), bin);
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn set_options() {
    let r = start("").await;
    let mut c = r.con().await;
    let set = |args: &[&str]| {
        let mut x = cmd("SET");
        for a in args {
            x.arg(*a);
        }
        x
    };
    assert_eq!(set(&["a", "1", "NX"]).query_async::<Option<String>>(&mut c).await.unwrap().as_deref(), Some("OK"));
    assert_eq!(set(&["a", "2", "NX"]).query_async::<Option<String>>(&mut c).await.unwrap(), None);
    assert_eq!(set(&["b", "2", "XX"]).query_async::<Option<String>>(&mut c).await.unwrap(), None);
    assert_eq!(
        set(&["a", "3", "XX", "GET"]).query_async::<Option<String>>(&mut c).await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(set(&["c", "1", "GET"]).query_async::<Option<String>>(&mut c).await.unwrap(), None);
    assert_eq!(
        set(&["a", "4", "NX", "GET"]).query_async::<Option<String>>(&mut c).await.unwrap().as_deref(),
        Some("3")
    );
    set(&["e", "v", "EX", "100"]).query_async::<()>(&mut c).await.unwrap();
    let ttl: i64 = c.ttl("e").await.unwrap();
    assert_eq!(ttl, 100);
    set(&["e", "v2", "KEEPTTL"]).query_async::<()>(&mut c).await.unwrap();
    assert_eq!(c.ttl::<_, i64>("e").await.unwrap(), 100, "KEEPTTL");
    set(&["e", "v3"]).query_async::<()>(&mut c).await.unwrap();
    assert_eq!(c.ttl::<_, i64>("e").await.unwrap(), -1, "plain SET clears the TTL");
    set(&["p", "v", "PX", "1500"]).query_async::<()>(&mut c).await.unwrap();
    assert_eq!(c.pttl::<_, i64>("p").await.unwrap(), 1500);
    let at = common::T0 / 1000 + 50;
    set(&["x", "v", "EXAT", &at.to_string()]).query_async::<()>(&mut c).await.unwrap();
    assert_eq!(cmd("EXPIRETIME").arg("x").query_async::<i64>(&mut c).await.unwrap(), at as i64);
    set(&["y", "v", "PXAT", &(common::T0 + 5).to_string()]).query_async::<()>(&mut c).await.unwrap();
    assert_eq!(cmd("PEXPIRETIME").arg("y").query_async::<i64>(&mut c).await.unwrap(), (common::T0 + 5) as i64);
    for bad in [&["k", "v", "EX", "0"][..], &["k", "v", "EX", "-1"], &["k", "v", "PX", "0"]] {
        assert_eq!(err(&mut c, &mut set(bad)).await, "ERR invalid expire time in 'set' command");
    }
    assert_eq!(err(&mut c, &mut set(&["k", "v", "EX", "x"])).await, "ERR value is not an integer or out of range");
    assert_eq!(err(&mut c, &mut set(&["k", "v", "NX", "XX"])).await, "ERR syntax error");
    assert_eq!(err(&mut c, &mut set(&["k", "v", "EX", "1", "PX", "1"])).await, "ERR syntax error");
    assert_eq!(err(&mut c, &mut set(&["k", "v", "EX"])).await, "ERR syntax error");
    assert_eq!(err(&mut c, &mut set(&["k", "v", "BOGUS"])).await, "ERR syntax error");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn expiry_follows_injected_time() {
    let r = start("").await;
    let mut c = r.con().await;
    cmd("SETEX").arg("s").arg(10).arg("v").query_async::<()>(&mut c).await.unwrap();
    cmd("PSETEX").arg("p").arg(500).arg("v").query_async::<()>(&mut c).await.unwrap();
    r.s.clock.advance(499);
    assert!(c.get::<_, Option<String>>("p").await.unwrap().is_some());
    r.s.clock.advance(1);
    assert!(c.get::<_, Option<String>>("p").await.unwrap().is_none());
    assert_eq!(c.ttl::<_, i64>("p").await.unwrap(), -2);
    assert_eq!(c.ttl::<_, i64>("s").await.unwrap(), 10, "9.5 s rounds to 10 like Redis");
    r.s.clock.advance(9_500);
    assert_eq!(c.exists::<_, i64>("s").await.unwrap(), 0);
    assert_eq!(err(&mut c, cmd("SETEX").arg("s").arg(0).arg("v")).await, "ERR invalid expire time in 'setex' command");
    // GETEX
    let _: () = c.set("g", "v").await.unwrap();
    assert_eq!(cmd("GETEX").arg("g").arg("PX").arg(100).query_async::<String>(&mut c).await.unwrap(), "v");
    assert_eq!(c.pttl::<_, i64>("g").await.unwrap(), 100);
    assert_eq!(cmd("GETEX").arg("g").arg("PERSIST").query_async::<String>(&mut c).await.unwrap(), "v");
    assert_eq!(c.ttl::<_, i64>("g").await.unwrap(), -1);
    assert_eq!(err(&mut c, cmd("GETEX").arg("g").arg("FOO")).await, "ERR syntax error");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn expire_family_with_conditions() {
    let r = start("").await;
    let mut c = r.con().await;
    let _: () = c.set("k", "v").await.unwrap();
    let exp = |name: &str, n: i64, opts: &[&str]| {
        let mut x = cmd(name);
        x.arg("k").arg(n);
        for o in opts {
            x.arg(*o);
        }
        x
    };
    assert_eq!(exp("EXPIRE", 100, &["XX"]).query_async::<i64>(&mut c).await.unwrap(), 0);
    assert_eq!(exp("EXPIRE", 100, &["NX"]).query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(exp("EXPIRE", 200, &["NX"]).query_async::<i64>(&mut c).await.unwrap(), 0);
    assert_eq!(exp("EXPIRE", 50, &["GT"]).query_async::<i64>(&mut c).await.unwrap(), 0);
    assert_eq!(exp("EXPIRE", 200, &["GT"]).query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(exp("PEXPIRE", 5_000, &["LT"]).query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(c.pttl::<_, i64>("k").await.unwrap(), 5_000);
    let at = (common::T0 / 1000 + 60) as i64;
    assert_eq!(exp("EXPIREAT", at, &[]).query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(c.ttl::<_, i64>("k").await.unwrap(), 60);
    assert_eq!(exp("PEXPIREAT", at * 1000 + 1, &[]).query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(c.persist::<_, i64>("k").await.unwrap(), 1);
    assert_eq!(c.persist::<_, i64>("k").await.unwrap(), 0);
    assert_eq!(c.ttl::<_, i64>("k").await.unwrap(), -1);
    assert_eq!(
        exp("EXPIRE", 10, &["NX", "XX"])
            .query_async::<Value>(&mut c)
            .await
            .map_err(|e| e.detail().unwrap().to_string())
            .unwrap_err(),
        "NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&mut c, &mut exp("EXPIRE", 10, &["GT", "LT"])).await,
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(err(&mut c, &mut exp("EXPIRE", 10, &["ZZ"])).await, "ERR Unsupported option ZZ");
    assert_eq!(exp("EXPIRE", -1, &[]).query_async::<i64>(&mut c).await.unwrap(), 1, "negative TTL deletes");
    assert_eq!(c.exists::<_, i64>("k").await.unwrap(), 0);
    assert_eq!(exp("EXPIRE", 10, &[]).query_async::<i64>(&mut c).await.unwrap(), 0, "missing key");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn counters() {
    let r = start("").await;
    let mut c = r.con().await;
    assert_eq!(c.incr::<_, _, i64>("n", 1).await.unwrap(), 1);
    assert_eq!(cmd("INCR").arg("n").query_async::<i64>(&mut c).await.unwrap(), 2);
    assert_eq!(cmd("DECR").arg("n").query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(cmd("INCRBY").arg("n").arg(10).query_async::<i64>(&mut c).await.unwrap(), 11);
    assert_eq!(cmd("DECRBY").arg("n").arg(20).query_async::<i64>(&mut c).await.unwrap(), -9);
    assert_eq!(cmd("INCRBYFLOAT").arg("f").arg("10.5").query_async::<String>(&mut c).await.unwrap(), "10.5");
    assert_eq!(cmd("INCRBYFLOAT").arg("f").arg("0.1").query_async::<String>(&mut c).await.unwrap(), "10.6");
    assert_eq!(cmd("INCRBYFLOAT").arg("f").arg("-5e1").query_async::<String>(&mut c).await.unwrap(), "-39.4");
    let _: () = c.set("s", "abc").await.unwrap();
    assert_eq!(err(&mut c, cmd("INCR").arg("s")).await, "ERR value is not an integer or out of range");
    assert_eq!(err(&mut c, cmd("INCRBYFLOAT").arg("s").arg(1)).await, "ERR value is not a valid float");
    assert_eq!(err(&mut c, cmd("INCRBY").arg("n").arg("x")).await, "ERR value is not an integer or out of range");
    assert_eq!(err(&mut c, cmd("INCRBYFLOAT").arg("n").arg("nan")).await, "ERR value is not a valid float");
    let _: () = c.set("m", i64::MAX).await.unwrap();
    assert_eq!(err(&mut c, cmd("INCR").arg("m")).await, "ERR increment or decrement would overflow");
    assert_eq!(err(&mut c, cmd("DECRBY").arg("m").arg(i64::MIN)).await, "ERR decrement would overflow");
    let _: () = c.set("z", "007").await.unwrap();
    assert_eq!(err(&mut c, cmd("INCR").arg("z")).await, "ERR value is not an integer or out of range");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn multi_key_commands() {
    let r = start("").await;
    let mut c = r.con().await;
    cmd("MSET").arg("a").arg(1).arg("b").arg(2).query_async::<()>(&mut c).await.unwrap();
    let got: Vec<Option<String>> = cmd("MGET").arg("a").arg("nope").arg("b").query_async(&mut c).await.unwrap();
    assert_eq!(got, vec![Some("1".into()), None, Some("2".into())]);
    assert_eq!(cmd("MSETNX").arg("b").arg(9).arg("c").arg(9).query_async::<i64>(&mut c).await.unwrap(), 0);
    assert_eq!(c.exists::<_, i64>("c").await.unwrap(), 0);
    assert_eq!(cmd("MSETNX").arg("c").arg(9).arg("d").arg(9).query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(
        err(&mut c, cmd("MSET").arg("a").arg(1).arg("b")).await,
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(cmd("EXISTS").arg("a").arg("a").arg("zz").query_async::<i64>(&mut c).await.unwrap(), 2);
    assert_eq!(cmd("TOUCH").arg("a").arg("zz").arg("b").query_async::<i64>(&mut c).await.unwrap(), 2);
    assert_eq!(cmd("DEL").arg("a").arg("zz").query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(cmd("UNLINK").arg("b").arg("c").query_async::<i64>(&mut c).await.unwrap(), 2);
    assert_eq!(cmd("DBSIZE").query_async::<i64>(&mut c).await.unwrap(), 1);
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn keyspace_commands() {
    let r = start("").await;
    let mut c = r.con().await;
    assert_eq!(cmd("RANDOMKEY").query_async::<Option<String>>(&mut c).await.unwrap(), None);
    for i in 0..30 {
        let _: () = c.set(format!("user:{i}"), i).await.unwrap();
        let _: () = c.set(format!("item:{i}"), i).await.unwrap();
    }
    assert_eq!(cmd("TYPE").arg("user:1").query_async::<String>(&mut c).await.unwrap(), "string");
    assert_eq!(cmd("TYPE").arg("nope").query_async::<String>(&mut c).await.unwrap(), "none");
    let mut keys: Vec<String> = c.keys("user:*").await.unwrap();
    keys.sort();
    assert_eq!(keys.len(), 30);
    assert!(keys.iter().all(|k| k.starts_with("user:")));
    assert_eq!(c.keys::<_, Vec<String>>("user:1?").await.unwrap().len(), 10);
    // SCAN visits every key exactly once.
    let mut seen = std::collections::HashSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) =
            cmd("SCAN").arg(cursor).arg("MATCH").arg("item:*").arg("COUNT").arg(7).query_async(&mut c).await.unwrap();
        for k in batch {
            assert!(seen.insert(k));
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(seen.len(), 30);
    let (_, none): (u64, Vec<String>) =
        cmd("SCAN").arg(0).arg("TYPE").arg("hash").arg("COUNT").arg(1000).query_async(&mut c).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(err(&mut c, cmd("SCAN").arg("x")).await, "ERR invalid cursor");
    assert_eq!(err(&mut c, cmd("SCAN").arg(0).arg("COUNT").arg(0)).await, "ERR syntax error");
    assert!(cmd("RANDOMKEY").query_async::<Option<String>>(&mut c).await.unwrap().is_some());
    // RENAME / RENAMENX / COPY
    cmd("RENAME").arg("user:0").arg("renamed").query_async::<()>(&mut c).await.unwrap();
    assert_eq!(c.get::<_, String>("renamed").await.unwrap(), "0");
    assert_eq!(err(&mut c, cmd("RENAME").arg("user:0").arg("x")).await, "ERR no such key");
    assert_eq!(cmd("RENAMENX").arg("renamed").arg("user:1").query_async::<i64>(&mut c).await.unwrap(), 0);
    assert_eq!(cmd("RENAMENX").arg("renamed").arg("fresh").query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(cmd("COPY").arg("fresh").arg("user:1").query_async::<i64>(&mut c).await.unwrap(), 0);
    assert_eq!(cmd("COPY").arg("fresh").arg("user:1").arg("REPLACE").query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(c.get::<_, String>("user:1").await.unwrap(), "0");
    assert_eq!(err(&mut c, cmd("COPY").arg("fresh").arg("x").arg("DB").arg(1)).await, "ERR DB index is out of range");
    cmd("FLUSHDB").query_async::<()>(&mut c).await.unwrap();
    assert_eq!(cmd("DBSIZE").query_async::<i64>(&mut c).await.unwrap(), 0);
    cmd("FLUSHALL").arg("ASYNC").query_async::<()>(&mut c).await.unwrap();
    assert_eq!(err(&mut c, cmd("FLUSHALL").arg("NOW")).await, "ERR syntax error");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn errors_match_redis() {
    let r = start("").await;
    let mut c = r.con().await;
    assert_eq!(
        err(&mut c, cmd("HSET").arg("h").arg("f").arg("v")).await,
        "ERR unknown command 'HSET', with args beginning with: 'h' 'f' 'v' "
    );
    assert_eq!(err(&mut c, &mut cmd("GET")).await, "ERR wrong number of arguments for 'get' command");
    assert_eq!(err(&mut c, cmd("GET").arg("a").arg("b")).await, "ERR wrong number of arguments for 'get' command");
    assert_eq!(err(&mut c, cmd("SELECT").arg(1)).await, "ERR DB index is out of range");
    assert_eq!(cmd("SELECT").arg(0).query_async::<String>(&mut c).await.unwrap(), "OK");
    assert_eq!(err(&mut c, cmd("SELECT").arg("x")).await, "ERR value is not an integer or out of range");
    assert_eq!(err(&mut c, cmd("SETRANGE").arg("k").arg(-1).arg("x")).await, "ERR offset is out of range");
    assert_eq!(
        err(&mut c, cmd("SETRANGE").arg("k").arg(536_870_912).arg("x")).await,
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)"
    );
    assert_eq!(
        err(&mut c, cmd("AUTH").arg("pw")).await,
        "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
    );
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn server_and_client_commands() {
    let r = start("").await;
    let mut c = r.con().await;
    let info: String = cmd("INFO").query_async(&mut c).await.unwrap();
    for section in ["# Server", "# Clients", "# Memory", "# Stats", "# Replication", "# Keyspace"] {
        assert!(info.contains(section), "{section} in {info}");
    }
    assert!(info.contains("role:master") && info.contains("raft_role:leader"));
    let repl: String = cmd("INFO").arg("replication").query_async(&mut c).await.unwrap();
    assert!(!repl.contains("# Server"));
    let _: () = c.set("a", 1).await.unwrap();
    let ks: String = cmd("INFO").arg("keyspace").query_async(&mut c).await.unwrap();
    assert!(ks.contains("db0:keys=1"), "{ks}");
    let count: i64 = cmd("COMMAND").arg("COUNT").query_async(&mut c).await.unwrap();
    let list: Vec<String> = cmd("COMMAND").arg("LIST").query_async(&mut c).await.unwrap();
    assert_eq!(list.len() as i64, count);
    assert!(list.contains(&"set".to_string()) && list.contains(&"scan".to_string()));
    let infos: Vec<Value> = cmd("COMMAND").arg("INFO").arg("get").arg("nope").query_async(&mut c).await.unwrap();
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[1], Value::Nil);
    let all: Vec<Value> = cmd("COMMAND").query_async(&mut c).await.unwrap();
    assert_eq!(all.len() as i64, count);
    let docs: Value = cmd("COMMAND").arg("DOCS").arg("get").query_async(&mut c).await.unwrap();
    assert!(format!("{docs:?}").contains("Returns the string value of a key."));
    let time: Vec<String> = cmd("TIME").query_async(&mut c).await.unwrap();
    assert_eq!(time.len(), 2);
    let cfg: Vec<String> = cmd("CONFIG").arg("GET").arg("maxmemory*").query_async(&mut c).await.unwrap();
    assert_eq!(cfg, vec!["maxmemory", "67108864", "maxmemory-policy", "allkeys-lru"]);
    let cfg: Vec<String> = cmd("CONFIG").arg("GET").arg("save").arg("appendonly").query_async(&mut c).await.unwrap();
    assert_eq!(cfg, vec!["save", "", "appendonly", "no"]);
    assert!(err(&mut c, cmd("CONFIG").arg("SET").arg("maxmemory").arg("1")).await.starts_with("ERR CONFIG SET"));
    // CLIENT
    let id: i64 = cmd("CLIENT").arg("ID").query_async(&mut c).await.unwrap();
    assert!(id > 0);
    assert_eq!(cmd("CLIENT").arg("GETNAME").query_async::<Option<String>>(&mut c).await.unwrap(), None);
    cmd("CLIENT").arg("SETNAME").arg("worker-1").query_async::<()>(&mut c).await.unwrap();
    assert_eq!(cmd("CLIENT").arg("GETNAME").query_async::<String>(&mut c).await.unwrap(), "worker-1");
    assert_eq!(
        err(&mut c, cmd("CLIENT").arg("SETNAME").arg("has space")).await,
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    cmd("CLIENT").arg("SETINFO").arg("LIB-NAME").arg("mylib").query_async::<()>(&mut c).await.unwrap();
    let list: String = cmd("CLIENT").arg("LIST").query_async(&mut c).await.unwrap();
    assert!(list.contains(&format!("id={id} ")) && list.contains("name=worker-1") && list.contains("lib-name=mylib"));
    let me: String = cmd("CLIENT").arg("INFO").query_async(&mut c).await.unwrap();
    assert!(me.starts_with(&format!("id={id} ")));
    assert_eq!(err(&mut c, cmd("CLIENT").arg("FLY")).await, "ERR unknown subcommand 'FLY'. Try CLIENT HELP.");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn raw_protocol_inline_and_pipelining() {
    let r = start("").await;
    // Inline commands with quotes, then a pipeline whose replies come in order.
    let out = raw(r.addr, b"SET greeting \"hello world\"\r\nGET greeting\r\nPING\r\n", 30).await;
    assert_eq!(out, b"+OK\r\n$11\r\nhello world\r\n+PONG\r\n");
    let mut pipeline = Vec::new();
    for i in 0..100 {
        pipeline.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n$2\r\nk{}\r\n$1\r\n{}\r\n", i % 10, i % 10).as_bytes());
        pipeline.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n$2\r\nk{}\r\n", i % 10).as_bytes());
    }
    let expect: Vec<u8> = (0..100).flat_map(|i| format!("+OK\r\n$1\r\n{}\r\n", i % 10).into_bytes()).collect();
    assert_eq!(raw(r.addr, &pipeline, expect.len()).await, expect);
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn protocol_errors_close_the_connection_and_the_server_keeps_serving() {
    let r = start("").await;
    let cases: &[(&[u8], &str)] = &[
        (b"*1\r\n$-3\r\n", "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'\r\n"),
        (b"SET a \"b\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"),
        (b"PING\r\n*1\r\n$x\r\n", "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"),
    ];
    for (input, expect) in cases {
        let out = raw(r.addr, input, usize::MAX).await; // reads to EOF: the server closes
        assert_eq!(String::from_utf8_lossy(&out), *expect);
    }
    let mut c = r.con().await;
    assert_eq!(cmd("PING").query_async::<String>(&mut c).await.unwrap(), "PONG");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn limits() {
    let r = start("max_bulk = \"1KB\"\nmax_clients = 2\n").await;
    let big = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n{}\r\n", "x".repeat(2000));
    let out = raw(r.addr, big.as_bytes(), usize::MAX).await;
    assert_eq!(out, b"-ERR Protocol error: invalid bulk length\r\n");
    let a = TcpStream::connect(r.addr).await.unwrap();
    let b = TcpStream::connect(r.addr).await.unwrap();
    // Make sure both are registered before the third one comes.
    for mut s in [a, b] {
        s.write_all(b"PING\r\n").await.unwrap();
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await.unwrap();
        std::mem::forget(s);
    }
    let out = raw(r.addr, b"PING\r\n", usize::MAX).await;
    assert_eq!(out, b"-ERR max number of clients reached\r\n");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn argument_count_and_query_buffer_limits_close_the_connection() {
    // 4 arguments are enough for the client library's CLIENT SETINFO.
    let r = start("max_args = 4\nquery_buffer_limit = \"4KB\"\n").await;
    let out = raw(r.addr, b"*5\r\n$3\r\nDEL\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n", usize::MAX).await;
    assert_eq!(out, b"-ERR Protocol error: invalid multibulk length\r\n");
    // A bulk larger than the query buffer limit, sent without its end: Redis
    // closes such a client without a reply.
    let mut big = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 8 * 1024));
    let out = raw(r.addr, &big, usize::MAX).await;
    assert_eq!(out, b"");
    // Everyone else is still served, and the partial SET stored nothing.
    let mut c = r.con().await;
    assert_eq!(cmd("PING").query_async::<String>(&mut c).await.unwrap(), "PONG");
    assert_eq!(c.get::<_, Option<String>>("k").await.unwrap(), None);
    r.s.server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn idle_clients_are_closed_after_the_timeout() {
    let r = start("timeout = 300\n").await;
    let mut s = TcpStream::connect(r.addr).await.unwrap();
    let mut pong = [0u8; 7];
    for wait in [0, 200] {
        // 200 s after the first request the connection is still open, and
        // the second restarts its idle clock.
        tokio::time::advance(std::time::Duration::from_secs(wait)).await;
        s.write_all(b"PING\r\n").await.unwrap();
        s.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
    }
    let last = tokio::time::Instant::now();
    // Time is paused: the runtime jumps to the idle deadline once nothing else runs.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    // Closed 300 s after the last request, not at the first request's deadline.
    let idle = last.elapsed();
    assert!(idle >= std::time::Duration::from_secs(300), "closed {idle:?} after the last request");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn hello_switches_to_resp3() {
    let r = start("").await;
    let out = raw_until(r.addr, b"HELLO 3\r\nGET missing\r\nINCRBYFLOAT f 1.5\r\nEXISTS f\r\n", b":1\r\n").await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"), "{text}");
    assert!(text.contains("$5\r\nproto\r\n:3\r\n"), "{text}");
    // RESP3 null for a miss; INCRBYFLOAT stays a bulk string, as in Redis.
    assert!(text.ends_with("_\r\n$3\r\n1.5\r\n:1\r\n"), "{text}");
    let out = raw_until(r.addr, b"HELLO 3 SETNAME x\r\nCLIENT GETNAME\r\nGET missing\r\nSET b 1\r\n", b"+OK\r\n").await;
    assert!(String::from_utf8_lossy(&out).ends_with("$1\r\nx\r\n_\r\n+OK\r\n"), "{}", String::from_utf8_lossy(&out));
    let out = raw(r.addr, b"HELLO 4\r\n", 38).await;
    assert_eq!(out, b"-NOPROTO unsupported protocol version\r\n");
    let out = raw_until(r.addr, b"HELLO 2\r\nGET missing\r\n", b"$-1\r\n").await;
    assert!(out.starts_with(b"*14\r\n"));
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn quit_and_reset() {
    let r = start("").await;
    let out = raw(r.addr, b"HELLO 3\r\nRESET\r\nGET missing\r\nQUIT\r\nPING\r\n", usize::MAX).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.ends_with("+RESET\r\n$-1\r\n+OK\r\n"), "{text}");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn auth_with_users_and_requirepass() {
    let r = start(
        "[auth]\nenabled = true\nrequirepass = \"rp\"\nusers = [ { name = \"alice\", password = \"wonderland\" } ]\n",
    )
    .await;
    let out = raw(r.addr, b"PING\r\nGET k\r\nAUTH wrong\r\nAUTH rp\r\nPING\r\n", 144).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with(
        "-NOAUTH Authentication required.\r\n-NOAUTH Authentication required.\r\n-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n+PONG\r\n"
    ), "{text}");
    // A client library with user and password in the URL (AUTH user pass).
    let client = redis::Client::open(format!("redis://alice:wonderland@{}/", r.addr)).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = c.set("k", "v").await.unwrap();
    assert_eq!(c.get::<_, String>("k").await.unwrap(), "v");
    let bad = redis::Client::open(format!("redis://alice:nope@{}/", r.addr)).unwrap();
    assert!(bad.get_multiplexed_async_connection().await.is_err());
    let out = raw_until(r.addr, b"HELLO 3 AUTH alice wonderland\r\nGET k\r\n", b"$1\r\nv\r\n").await;
    assert!(String::from_utf8_lossy(&out).starts_with("%7\r\n"));
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn pipelined_writes_reach_raft_as_one_batch() {
    let r = start("").await;
    let before = r.s.server.raft().raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
    let mut pipe = Vec::new();
    for i in 0..64 {
        pipe.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n$3\r\nk{i:02}\r\n$1\r\nv\r\n").as_bytes());
    }
    let out = raw(r.addr, &pipe, 64 * 5).await;
    assert_eq!(out, b"+OK\r\n".repeat(64));
    let after = r.s.server.raft().raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
    assert_eq!(after - before, 1, "64 pipelined SETs in one read are one log entry");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn more_string_and_keyspace_edges() {
    let r = start("").await;
    let mut c = r.con().await;
    // Missing keys: STRLEN 0, GETRANGE "", APPEND and SETRANGE create.
    assert_eq!(c.strlen::<_, i64>("none").await.unwrap(), 0);
    assert_eq!(c.getrange::<_, String>("none", 0, -1).await.unwrap(), "");
    assert_eq!(c.append::<_, _, i64>("a", "xy").await.unwrap(), 2);
    assert_eq!(c.setrange::<_, _, i64>("pad", 3, "ab").await.unwrap(), 5);
    assert_eq!(c.get::<_, Vec<u8>>("pad").await.unwrap(), b"\0\0\0ab");
    // GETEX with absolute deadlines; GETEX of a missing key is nil.
    let _: () = c.set("g", "v").await.unwrap();
    let at = common::T0 / 1000 + 30;
    assert_eq!(cmd("GETEX").arg("g").arg("EXAT").arg(at).query_async::<String>(&mut c).await.unwrap(), "v");
    assert_eq!(cmd("EXPIRETIME").arg("g").query_async::<i64>(&mut c).await.unwrap(), at as i64);
    let pat = common::T0 + 12_345;
    assert_eq!(cmd("GETEX").arg("g").arg("PXAT").arg(pat).query_async::<String>(&mut c).await.unwrap(), "v");
    assert_eq!(cmd("PEXPIRETIME").arg("g").query_async::<i64>(&mut c).await.unwrap(), pat as i64);
    assert_eq!(cmd("GETEX").arg("nope").arg("EX").arg(5).query_async::<Option<String>>(&mut c).await.unwrap(), None);
    // TTL family on a key without deadline and on a missing key.
    for name in ["TTL", "PTTL", "EXPIRETIME", "PEXPIRETIME"] {
        assert_eq!(cmd(name).arg("a").query_async::<i64>(&mut c).await.unwrap(), -1, "{name} persistent");
        assert_eq!(cmd(name).arg("none").query_async::<i64>(&mut c).await.unwrap(), -2, "{name} missing");
    }
    // SET with two expiry options, or KEEPTTL and EX, is a syntax error.
    assert_eq!(err(&mut c, cmd("SET").arg("k").arg("v").arg("EX").arg(1).arg("KEEPTTL")).await, "ERR syntax error");
    // RENAME onto itself keeps the key; RENAMENX onto itself answers 0.
    cmd("RENAME").arg("a").arg("a").query_async::<()>(&mut c).await.unwrap();
    assert_eq!(c.get::<_, String>("a").await.unwrap(), "xy");
    assert_eq!(cmd("RENAMENX").arg("a").arg("a").query_async::<i64>(&mut c).await.unwrap(), 0);
    // RENAME keeps the TTL; COPY onto an existing key without REPLACE is 0.
    cmd("SET").arg("t").arg("1").arg("EX").arg(100).query_async::<()>(&mut c).await.unwrap();
    cmd("RENAME").arg("t").arg("t2").query_async::<()>(&mut c).await.unwrap();
    assert_eq!(c.ttl::<_, i64>("t2").await.unwrap(), 100);
    assert_eq!(cmd("COPY").arg("t2").arg("a").query_async::<i64>(&mut c).await.unwrap(), 0);
    assert_eq!(c.get::<_, String>("a").await.unwrap(), "xy");
    // MSETNX with only new keys stores all of them.
    assert_eq!(cmd("MSETNX").arg("n1").arg(1).arg("n2").arg(2).query_async::<i64>(&mut c).await.unwrap(), 1);
    assert_eq!(cmd("MGET").arg("n1").arg("n2").query_async::<Vec<String>>(&mut c).await.unwrap(), vec!["1", "2"]);
    // SCAN TYPE string finds the strings; KEYS * finds everything.
    let (_, strings): (u64, Vec<String>) =
        cmd("SCAN").arg(0).arg("TYPE").arg("string").arg("COUNT").arg(1000).query_async(&mut c).await.unwrap();
    let mut all: Vec<String> = c.keys("*").await.unwrap();
    let mut strings = strings;
    all.sort();
    strings.sort();
    assert_eq!(all, strings);
    assert_eq!(all.len() as i64, cmd("DBSIZE").query_async::<i64>(&mut c).await.unwrap());
    // INCRBY overflow and PING with an argument.
    let _: () = c.set("big", i64::MAX - 1).await.unwrap();
    assert_eq!(err(&mut c, cmd("INCRBY").arg("big").arg(2)).await, "ERR increment or decrement would overflow");
    assert_eq!(cmd("PING").arg("hello").query_async::<String>(&mut c).await.unwrap(), "hello");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn info_config_client_and_command_introspection() {
    let r = start("").await;
    let mut c = r.con().await;
    let _: () = c.set("k", "v").await.unwrap();
    let _: Option<String> = c.get("k").await.unwrap();
    let _: Option<String> = c.get("missing").await.unwrap();
    let stats: String = cmd("INFO").arg("stats").query_async(&mut c).await.unwrap();
    assert!(stats.contains("keyspace_hits:1\r\n") && stats.contains("keyspace_misses:1\r\n"), "{stats}");
    let clients: String = cmd("INFO").arg("clients").query_async(&mut c).await.unwrap();
    assert!(clients.contains("connected_clients:1\r\n") && clients.contains("maxclients:10000\r\n"), "{clients}");
    let memory: String = cmd("INFO").arg("memory").query_async(&mut c).await.unwrap();
    assert!(memory.contains("maxmemory:67108864\r\n") && memory.contains("maxmemory_policy:allkeys-lru"), "{memory}");
    assert!(!memory.contains("# Stats"));
    // CONFIG GET with no match is empty; CONFIG RESETSTAT zeroes the command count.
    assert!(cmd("CONFIG").arg("GET").arg("nosuch*").query_async::<Vec<String>>(&mut c).await.unwrap().is_empty());
    cmd("CONFIG").arg("RESETSTAT").query_async::<()>(&mut c).await.unwrap();
    let stats: String = cmd("INFO").arg("stats").query_async(&mut c).await.unwrap();
    assert!(stats.contains("total_commands_processed:1\r\n"), "only this INFO since RESETSTAT: {stats}");
    // CLIENT SETINFO LIB-VER and a bad attribute.
    cmd("CLIENT").arg("SETINFO").arg("LIB-VER").arg("1.2.3").query_async::<()>(&mut c).await.unwrap();
    let me: String = cmd("CLIENT").arg("INFO").query_async(&mut c).await.unwrap();
    assert!(me.contains("lib-ver=1.2.3"), "{me}");
    assert_eq!(
        err(&mut c, cmd("CLIENT").arg("SETINFO").arg("COLOR").arg("red")).await,
        "ERR Unrecognized option 'COLOR'"
    );
    // COMMAND DOCS without names documents every command.
    let count: i64 = cmd("COMMAND").arg("COUNT").query_async(&mut c).await.unwrap();
    let docs: Vec<Value> = cmd("COMMAND").arg("DOCS").query_async(&mut c).await.unwrap();
    assert_eq!(docs.len() as i64, 2 * count, "RESP2 map: name and docs per command");
    assert_eq!(err(&mut c, cmd("COMMAND").arg("FLY")).await, "ERR unknown subcommand 'FLY'. Try COMMAND HELP.");
    r.s.server.shutdown().await;
}

#[tokio::test]
async fn hello_auth_errors() {
    let r = start("[auth]\nenabled = true\nusers = [ { name = \"alice\", password = \"wonderland\" } ]\n").await;
    let out = raw(r.addr, b"HELLO 3 AUTH alice nope\r\n", 64).await;
    assert_eq!(out, b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    let out = raw_until(r.addr, b"HELLO 3\r\n", b"\r\n").await;
    assert!(out.starts_with(b"-NOAUTH HELLO must be called with the client already authenticated"), "{out:?}");
    // AUTH user pass, then commands work; RESET logs the client out again.
    let out = raw_until(r.addr, b"AUTH alice wonderland\r\nSET k v\r\nRESET\r\nGET k\r\n", b"required.\r\n").await;
    assert_eq!(String::from_utf8_lossy(&out), "+OK\r\n+OK\r\n+RESET\r\n-NOAUTH Authentication required.\r\n");
    r.s.server.shutdown().await;
}
