//! The memcached protocol against an in-process server on 127.0.0.1:0, with
//! raw bytes: every command, flag and error, noreply, pipelining, expiry on
//! the injected clock, ascii auth and the limits.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct M {
    s: common::TestServer,
    addr: SocketAddr,
}

async fn start(extra: &str) -> M {
    let s = common::start(&format!("protocols = [\"mcd\"]\n[mcd]\nport = 0\n{extra}")).await;
    let addr = s.server.addr("mcd").expect("mcd listens");
    M { s, addr }
}

/// One client connection speaking raw bytes.
struct Conn(TcpStream);

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        Conn(TcpStream::connect(addr).await.unwrap())
    }

    /// Sends `input` and asserts the reply is exactly `expect`.
    async fn check(&mut self, input: &str, expect: &str) {
        self.0.write_all(input.as_bytes()).await.unwrap();
        let mut got = vec![0u8; expect.len()];
        let read = tokio::time::timeout(Duration::from_secs(20), self.0.read_exact(&mut got)).await;
        match read {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{input:?}: connection ended ({e}) before {expect:?}"),
            Err(_) => panic!("{input:?}: no full reply; expected {expect:?}"),
        }
        assert_eq!(String::from_utf8_lossy(&got), expect, "reply to {input:?}");
    }

    /// Sends `input` followed by `mn` and asserts that only `expect` and
    /// `MN` come back (for noreply and quiet mode).
    async fn check_quiet(&mut self, input: &str, expect: &str) {
        self.check(&format!("{input}mn\r\n"), &format!("{expect}MN\r\n")).await;
    }

    /// Whether the server closed the connection.
    async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(tokio::time::timeout(Duration::from_secs(20), self.0.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }
}

/// The cas `gets` reports for `key`.
async fn cas_of(c: &mut Conn, key: &str) -> u64 {
    c.0.write_all(format!("gets {key}\r\n").as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    while !out.ends_with(b"END\r\n") {
        let n = c.0.read(&mut buf).await.unwrap();
        assert!(n > 0);
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8(out).unwrap();
    let header = text.lines().next().unwrap();
    header.split(' ').nth(4).unwrap_or_else(|| panic!("no cas in {text:?}")).parse().unwrap()
}

#[tokio::test]
async fn storage_and_retrieval() {
    let m = start("").await;
    let mut c = Conn::open(m.addr).await;
    c.check("get nope\r\n", "END\r\n").await;
    c.check("set a 4294967295 0 2\r\nhi\r\n", "STORED\r\n").await;
    c.check("get a nope a\r\n", "VALUE a 4294967295 2\r\nhi\r\nVALUE a 4294967295 2\r\nhi\r\nEND\r\n").await;
    c.check("add a 0 0 1\r\nx\r\n", "NOT_STORED\r\n").await;
    c.check("add b 1 0 1\r\nx\r\n", "STORED\r\n").await;
    c.check("replace nope 0 0 1\r\nx\r\n", "NOT_STORED\r\n").await;
    c.check("replace b 2 0 1\r\ny\r\n", "STORED\r\n").await;
    c.check("append b 9 9 2\r\n>>\r\n", "STORED\r\n").await;
    c.check("prepend b 9 9 2\r\n<<\r\n", "STORED\r\n").await;
    c.check("append nope 0 0 1\r\nx\r\n", "NOT_STORED\r\n").await;
    c.check("get b\r\n", "VALUE b 2 5\r\n<<y>>\r\nEND\r\n").await;
    c.check("set empty 0 0 0\r\n\r\n", "STORED\r\n").await;
    c.check("get empty\r\n", "VALUE empty 0 0\r\n\r\nEND\r\n").await;
    // Binary data with \r\n inside.
    c.check("set bin 0 0 4\r\n\r\n\r\n\r\n", "STORED\r\n").await;
    c.check("get bin\r\n", "VALUE bin 0 4\r\n\r\n\r\n\r\nEND\r\n").await;

    // cas: every write changes it; a touch keeps it.
    let cas = cas_of(&mut c, "a").await;
    c.check(&format!("cas a 0 0 2 {}\r\nho\r\n", cas + 1000), "EXISTS\r\n").await;
    c.check("cas nope 0 0 2 1\r\nho\r\n", "NOT_FOUND\r\n").await;
    c.check(&format!("cas a 7 0 2 {cas}\r\nho\r\n"), "STORED\r\n").await;
    let cas2 = cas_of(&mut c, "a").await;
    assert_ne!(cas, cas2, "a cas store changes the cas");
    c.check(&format!("cas a 7 0 2 {cas}\r\nhu\r\n"), "EXISTS\r\n").await;
    c.check("touch a 100\r\n", "TOUCHED\r\n").await;
    c.check("touch nope 100\r\n", "NOT_FOUND\r\n").await;
    assert_eq!(cas_of(&mut c, "a").await, cas2, "touch keeps the cas");
    c.check("gat 100 a nope\r\n", "VALUE a 7 2\r\nho\r\nEND\r\n").await;
    c.check("gats 100 a\r\n", &format!("VALUE a 7 2 {cas2}\r\nho\r\nEND\r\n")).await;
    c.check("set a 0 0 1\r\nz\r\n", "STORED\r\n").await;
    assert_ne!(cas_of(&mut c, "a").await, cas2, "set changes the cas");

    c.check("delete a\r\n", "DELETED\r\n").await;
    c.check("delete a\r\n", "NOT_FOUND\r\n").await;
    c.check("delete b 0\r\n", "DELETED\r\n").await;
    c.check("delete b 5\r\n", "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n").await;
    c.check("version\r\n", "VERSION 1.6.21\r\n").await;
    c.check("verbosity 1\r\n", "OK\r\n").await;
    c.check("quit\r\n", "").await;
    assert!(c.closed().await, "quit closes");
    m.s.server.shutdown().await;
}

#[tokio::test]
async fn incr_and_decr() {
    let m = start("").await;
    let mut c = Conn::open(m.addr).await;
    c.check("incr n 1\r\n", "NOT_FOUND\r\n").await;
    c.check("set n 5 0 2\r\n10\r\n", "STORED\r\n").await;
    c.check("incr n 5\r\n", "15\r\n").await;
    c.check("decr n 100\r\n", "0\r\n").await;
    c.check("set n 5 0 20\r\n18446744073709551615\r\n", "STORED\r\n").await;
    c.check("incr n 2\r\n", "1\r\n").await;
    c.check("get n\r\n", "VALUE n 5 1\r\n1\r\nEND\r\n").await;
    c.check("incr n abc\r\n", "CLIENT_ERROR invalid numeric delta argument\r\n").await;
    c.check("incr n -1\r\n", "CLIENT_ERROR invalid numeric delta argument\r\n").await;
    c.check("incr n 18446744073709551616\r\n", "CLIENT_ERROR invalid numeric delta argument\r\n").await;
    c.check("set s 0 0 2\r\nab\r\n", "STORED\r\n").await;
    c.check("incr s 1\r\n", "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n").await;
    c.check("incr\r\n", "ERROR\r\n").await;
    m.s.server.shutdown().await;
}

#[tokio::test]
async fn expiry_follows_memcached() {
    let m = start("").await;
    let mut c = Conn::open(m.addr).await;
    let now_s = common::T0 / 1000;
    c.check("set rel 0 10 1\r\nx\r\n", "STORED\r\n").await;
    c.check(&format!("set abs 0 {} 1\r\nx\r\n", now_s + 100), "STORED\r\n").await;
    c.check(&format!("set past 0 {} 1\r\nx\r\n", now_s - 100), "STORED\r\n").await;
    c.check("set neg 0 -1 1\r\nx\r\n", "STORED\r\n").await;
    c.check("set never 0 0 1\r\nx\r\n", "STORED\r\n").await;
    c.check("get past neg\r\n", "END\r\n").await;
    c.check("mg rel t\r\nmg abs t\r\nmg never t\r\n", "HD t10\r\nHD t100\r\nHD t-1\r\n").await;
    m.s.clock.advance(10_000);
    c.check("get rel\r\n", "END\r\n").await;
    c.check("get abs never\r\n", "VALUE abs 0 1\r\nx\r\nVALUE never 0 1\r\nx\r\nEND\r\n").await;
    // touch and gat move the deadline; a negative exptime expires at once.
    c.check("touch abs 1000\r\n", "TOUCHED\r\n").await;
    m.s.clock.advance(100_000);
    c.check("gat 5 abs\r\n", "VALUE abs 0 1\r\nx\r\nEND\r\n").await;
    m.s.clock.advance(5_000);
    c.check("get abs\r\n", "END\r\n").await;
    c.check("touch never -1\r\n", "TOUCHED\r\n").await;
    c.check("get never\r\n", "END\r\n").await;
    m.s.server.shutdown().await;
}

#[tokio::test]
async fn flush_all_now_and_delayed() {
    let m = start("").await;
    let mut c = Conn::open(m.addr).await;
    c.check("set a 0 0 1\r\nx\r\nflush_all\r\nget a\r\n", "STORED\r\nOK\r\nEND\r\n").await;
    c.check("set a 0 0 1\r\nx\r\nflush_all 10\r\nget a\r\n", "STORED\r\nOK\r\nVALUE a 0 1\r\nx\r\nEND\r\n").await;
    m.s.clock.advance(10_000);
    c.check("get a\r\n", "END\r\n").await;
    c.check_quiet("set a 0 0 1\r\nx\r\nflush_all noreply\r\nget a\r\n", "STORED\r\nEND\r\n").await;
    c.check("flush_all abc\r\n", "CLIENT_ERROR invalid exptime argument\r\n").await;
    c.check("flush_all 0\r\n", "OK\r\n").await;
    m.s.server.shutdown().await;
}

#[tokio::test]
async fn noreply_everywhere() {
    let m = start("").await;
    let mut c = Conn::open(m.addr).await;
    for cmd in [
        "set k 0 0 1 noreply\r\n1\r\n",
        "add k 0 0 1 noreply\r\n2\r\n",
        "replace k 0 0 1 noreply\r\n3\r\n",
        "append k 0 0 1 noreply\r\n4\r\n",
        "prepend k 0 0 1 noreply\r\n5\r\n",
        "cas k 0 0 1 1 noreply\r\n6\r\n",
        "incr k 1 noreply\r\n",
        "decr k 1 noreply\r\n",
        "touch k 10 noreply\r\n",
        "verbosity 1 noreply\r\n",
        "set big 0 0 2000000 noreply\r\n",
    ] {
        let body = if cmd.starts_with("set big") { format!("{cmd}{}\r\n", "x".repeat(2_000_000)) } else { cmd.into() };
        c.check_quiet(&body, "").await;
    }
    c.check("get k\r\n", "VALUE k 0 3\r\n534\r\nEND\r\n").await;
    c.check_quiet("delete k noreply\r\n", "").await;
    c.check("get k\r\n", "END\r\n").await;
    m.s.server.shutdown().await;
}

#[tokio::test]
async fn errors_keep_the_connection_usable() {
    let m = start("max_item_size = \"1KB\"\nmax_line = \"2KB\"\n").await;
    let mut c = Conn::open(m.addr).await;
    c.check("\r\n", "ERROR\r\n").await;
    c.check("foo bar\r\n", "ERROR\r\n").await;
    c.check("GET a\r\n", "ERROR\r\n").await;
    c.check("get\r\n", "ERROR\r\n").await;
    let long = "k".repeat(251);
    c.check(&format!("get {long}\r\n"), "CLIENT_ERROR bad command line format\r\n").await;
    c.check(&format!("get {}\r\n", "k".repeat(250)), "END\r\n").await;
    c.check("get a\x01b\r\n", "CLIENT_ERROR bad command line format\r\n").await;
    // A bad line: the data is not consumed and reads as a command.
    c.check(&format!("set {long} 0 0 2\r\nhi\r\n"), "CLIENT_ERROR bad command line format\r\nERROR\r\n").await;
    c.check("set a 0 0 abc\r\n", "CLIENT_ERROR bad command line format\r\n").await;
    c.check("set a 0 0 -1\r\n", "CLIENT_ERROR bad command line format\r\n").await;
    c.check("set a 4294967296 0 1\r\nx\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n").await;
    // A bad terminator: exactly <bytes>+2 are consumed.
    c.check("set a 0 0 2\r\nhello\r\nget a\r\n", "CLIENT_ERROR bad data chunk\r\nERROR\r\nEND\r\n").await;
    // Too large: the data is discarded, also when it arrives later.
    c.0.write_all(b"set big 0 0 5000\r\n").await.unwrap();
    c.0.write_all(&b"x".repeat(3000)).await.unwrap();
    c.check(&format!("{}\r\nget big\r\n", "x".repeat(2000)), "SERVER_ERROR object too large for cache\r\nEND\r\n")
        .await;
    c.check(&format!("set ok 0 0 1024\r\n{}\r\n", "y".repeat(1024)), "STORED\r\n").await;
    c.check("gat abc a\r\n", "CLIENT_ERROR invalid exptime argument\r\n").await;
    c.check("touch a abc\r\n", "CLIENT_ERROR invalid exptime argument\r\n").await;
    c.check("stats nonsense\r\n", "ERROR\r\n").await;
    // An overlong line without a newline closes the connection.
    c.0.write_all(format!("get {}", "a ".repeat(2000)).as_bytes()).await.unwrap();
    c.check("", "CLIENT_ERROR line too long\r\n").await;
    assert!(c.closed().await, "an overlong line closes");
    // Everyone else is still served.
    let mut d = Conn::open(m.addr).await;
    d.check("get ok\r\n", &format!("VALUE ok 0 1024\r\n{}\r\nEND\r\n", "y".repeat(1024))).await;
    m.s.server.shutdown().await;
}

/// Reads one reply line.
async fn read_line(c: &mut Conn) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while !out.ends_with(b"\r\n") {
        c.0.read_exact(&mut b).await.unwrap();
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn meta_get_set_delete() {
    let m = start("").await;
    let mut c = Conn::open(m.addr).await;
    c.check("mg nokey v\r\n", "EN\r\n").await;
    c.check("mg nokey v k O5\r\n", "EN knokey O5\r\n").await;
    c.check_quiet("mg nokey v q\r\n", "").await;
    c.check("ms k 2 F7 T0\r\nhi\r\n", "HD\r\n").await;
    let cas = cas_of(&mut c, "k").await;
    c.check("mg k v f s t k O9 c\r\n", &format!("VA 2 f7 s2 t-1 kk O9 c{cas}\r\nhi\r\n")).await;
    c.check("mg k\r\n", "HD\r\n").await;
    // h and l report the access before this one; me shows the item.
    c.check("ms h 1\r\nx\r\nmg h h l\r\nmg h h l\r\n", "HD\r\nHD h0 l0\r\nHD h1 l0\r\n").await;
    m.s.clock.advance(3_000);
    c.check("mg h l\r\n", "HD l3\r\n").await;
    let hcas = cas_of(&mut c, "h").await;
    c.check("me h\r\n", &format!("ME h exp=-1 la=0 cas={hcas} fetch=yes cls=1 size=2\r\n")).await;
    c.check("me nope\r\n", "EN\r\n").await;
    // ms modes, flags, cas compare, explicit cas, base64 keys.
    c.check("ms k 2 ME\r\nzz\r\n", "NS\r\n").await;
    c.check("ms k 2 MR T100\r\nzz\r\n", "HD\r\n").await;
    c.check("ms nope 2 MR\r\nzz\r\n", "NS\r\n").await;
    c.check("ms k 1 MA\r\n>\r\nms k 1 MP\r\n<\r\nmg k v t\r\n", "HD\r\nHD\r\nVA 4 t100\r\n<zz>\r\n").await;
    c.check("ms none 1 MA\r\n>\r\n", "NS\r\n").await;
    c.check("ms viv 1 MA N50\r\n>\r\nmg viv v t\r\n", "HD\r\nVA 1 t50\r\n>\r\n").await;
    c.check("ms k 1 C1\r\nx\r\n", "EX\r\n").await;
    c.check("ms nope 1 C1\r\nx\r\n", "NF\r\n").await;
    c.check("ms e 1 E777 c\r\nx\r\nmg e c\r\n", "HD c777\r\nHD c777\r\n").await;
    c.check("ms e 1 C777 c E778\r\ny\r\n", "HD c778\r\n").await;
    c.check_quiet("ms q 1 q\r\nx\r\nms q 1 q ME\r\nx\r\n", "NS\r\n").await;
    c.check("ms YWI= 2 b k c\r\nhi\r\n", "HD kYWI= b c").await;
    let line = read_line(&mut c).await;
    assert!(line.trim_end().parse::<u64>().is_ok(), "cas after the key: {line:?}");
    c.check("get ab\r\nmg YWI= b v\r\n", "VALUE ab 0 2\r\nhi\r\nEND\r\nVA 2\r\nhi\r\n").await;
    c.check("mg !!! b v\r\n", "CLIENT_ERROR error decoding key\r\n").await;
    // md: plain, quiet, cas compare, invalidate with the stale/win dance.
    c.check_quiet("md ab q\r\nmd ab q\r\n", "NF\r\n").await;
    c.check("md nope O1 k\r\n", "NF O1 knope\r\n").await;
    c.check("ms s 2 T100\r\nhi\r\nmd s C1\r\n", "HD\r\nEX\r\n").await;
    c.check("md s I T30\r\n", "HD\r\n").await;
    c.check("mg s v t\r\n", "VA 2 t30 X W\r\nhi\r\n").await;
    c.check("mg s v t\r\n", "VA 2 t30 Z X\r\nhi\r\n").await;
    let stale = cas_of(&mut c, "s").await;
    c.check(&format!("ms s 2 I C{}\r\nyo\r\n", stale - 1), "HD\r\n").await;
    c.check("mg s v\r\n", "VA 2 X W\r\nyo\r\n").await;
    c.check("ms s 2\r\nok\r\nmg s v\r\n", "HD\r\nVA 2\r\nok\r\n").await;
    // Recache and vivify tokens.
    c.check(
        "ms r 2 T100\r\nhi\r\nmg r R200 t\r\nmg r R200 t\r\nmg r T500 t\r\n",
        "HD\r\nHD t100 W\r\nHD t100 Z\r\nHD t500 Z\r\n",
    )
    .await;
    c.check("mg fresh v N30 t\r\nmg fresh v t\r\n", "VA 0 t30 W\r\n\r\nVA 0 t30 Z\r\n\r\n").await;
    c.check("mn\r\n", "MN\r\n").await;
    m.s.server.shutdown().await;
}

#[tokio::test]
async fn meta_arithmetic_and_errors() {
    let m = start("").await;
    let mut c = Conn::open(m.addr).await;
    c.check("ma n\r\n", "NF\r\n").await;
    c.check("ma n q O1 k\r\n", "NF O1 kn\r\n").await;
    c.check("ma n N0 J10 v t\r\n", "VA 2 t-1\r\n10\r\n").await;
    c.check("ma n v\r\nma n MD D100 v\r\n", "VA 2\r\n11\r\nVA 1\r\n0\r\n").await;
    c.check_quiet("ma n q D5 MI\r\nma n M+ q\r\n", "").await;
    c.check("ma n v M- D2 T60 t\r\n", "VA 1 t60\r\n4\r\n").await;
    c.check("ma n C1\r\n", "EX\r\n").await;
    c.check("ma n MX\r\n", "CLIENT_ERROR invalid mode for ma M token\r\n").await;
    c.check("ma n Dx\r\n", "CLIENT_ERROR invalid numeric delta argument\r\n").await;
    c.check("ms x 2\r\nab\r\nma x\r\n", "HD\r\nCLIENT_ERROR cannot increment or decrement non-numeric value\r\n").await;
    // Parse errors.
    c.check("mg\r\n", "ERROR\r\n").await;
    c.check("mg a v zz\r\n", "CLIENT_ERROR invalid flag\r\n").await;
    c.check("mg a v v\r\n", "CLIENT_ERROR duplicate flag\r\n").await;
    c.check("mg a Tabc\r\n", "CLIENT_ERROR bad token in command line format\r\n").await;
    c.check(&format!("mg a O{}\r\n", "1".repeat(33)), "CLIENT_ERROR opaque token too long\r\n").await;
    c.check("ms a\r\n", "CLIENT_ERROR bad command line format\r\n").await;
    c.check("ms a S2 T0\r\nhi\r\n", "CLIENT_ERROR bad command line format\r\nERROR\r\n").await;
    c.check("ms d 2 MX\r\nhi\r\n", "CLIENT_ERROR invalid mode for ms M token\r\n").await;
    c.check("ms d 2 Q\r\nhi\r\nmn\r\n", "CLIENT_ERROR invalid flag\r\nMN\r\n").await;
    c.check(
        &format!("ms big 2000000\r\n{}\r\nmn\r\n", "x".repeat(2_000_000)),
        "SERVER_ERROR object too large for cache\r\nMN\r\n",
    )
    .await;
    c.check("me\r\n", "CLIENT_ERROR bad command line format\r\n").await;
    m.s.server.shutdown().await;
}

#[tokio::test]
async fn pipelined_requests_answer_in_order_as_one_batch() {
    let m = start("").await;
    let mut c = Conn::open(m.addr).await;
    let before = m.s.server.raft().raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
    let mut pipe = String::new();
    let mut expect = String::new();
    for i in 0..64 {
        pipe.push_str(&format!("set k{i:02} {i} 0 1\r\nv\r\nversion\r\n"));
        expect.push_str("STORED\r\nVERSION 1.6.21\r\n");
    }
    c.check(&pipe, &expect).await;
    let after = m.s.server.raft().raft.metrics().borrow().last_applied.map_or(0, |l| l.index);
    assert_eq!(after - before, 1, "64 pipelined sets in one read are one log entry");
    let keys: Vec<String> = (0..64).map(|i| format!("k{i:02}")).collect();
    let expect: String = (0..64).map(|i| format!("VALUE k{i:02} {i} 1\r\nv\r\n")).collect();
    c.check(&format!("get {}\r\n", keys.join(" ")), &format!("{expect}END\r\n")).await;
    m.s.server.shutdown().await;
}

#[tokio::test]
async fn ascii_auth() {
    let m = start("[auth]\nenabled = true\nusers = [ { name = \"alice\", password = \"wonderland\" } ]\n").await;
    let mut c = Conn::open(m.addr).await;
    c.check("get a\r\n", "CLIENT_ERROR unauthenticated\r\n").await;
    c.check("mg a v\r\n", "CLIENT_ERROR unauthenticated\r\n").await;
    c.check("set x 0 0 11\r\nalice wrong\r\n", "CLIENT_ERROR authentication failure\r\n").await;
    c.check("set x 0 0 16\r\nalice wonderland\r\n", "STORED\r\n").await;
    c.check("set a 0 0 1\r\nv\r\nget a x\r\n", "STORED\r\nVALUE a 0 1\r\nv\r\nEND\r\n").await;
    c.check("stats\r\n", "STAT pid").await;
    m.s.server.shutdown().await;
}

#[tokio::test]
async fn stats_and_connection_limit() {
    let m = start("max_connections = 1\n").await;
    let mut c = Conn::open(m.addr).await;
    c.check("set a 0 0 1\r\nv\r\nget a b\r\n", "STORED\r\nVALUE a 0 1\r\nv\r\nEND\r\n").await;
    c.0.write_all(b"stats\r\n").await.unwrap();
    let mut text = String::new();
    while !text.ends_with("END\r\n") {
        text.push_str(&read_line(&mut c).await);
    }
    for want in [
        "STAT cmd_get 2\r\n",
        "STAT get_hits 1\r\n",
        "STAT get_misses 1\r\n",
        "STAT cmd_set 1\r\n",
        "STAT curr_items 1\r\n",
        "STAT curr_connections 1\r\n",
        "STAT version 1.6.21\r\n",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    c.check("stats settings\r\n", "STAT maxbytes").await;
    let mut rest = String::new();
    while !rest.ends_with("END\r\n") {
        rest.push_str(&read_line(&mut c).await);
    }
    assert!(rest.contains("STAT item_size_max 1048576\r\n"), "{rest}");
    c.check("stats items\r\n", "STAT items:1:number 1\r\n").await;
    c.check("stats reset\r\n", "").await;
    // The second connection is over the limit.
    let mut d = Conn::open(m.addr).await;
    d.check("", "SERVER_ERROR Too many open connections\r\n").await;
    assert!(d.closed().await);
    m.s.server.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn idle_connections_close_after_idle_timeout() {
    let m = start("idle_timeout = 60\n").await;
    let mut c = Conn::open(m.addr).await;
    c.check("version\r\n", "VERSION ").await;
    let _ = read_line(&mut c).await;
    // Each request restarts the idle clock.
    tokio::time::advance(Duration::from_secs(45)).await;
    c.check("mn\r\n", "MN\r\n").await;
    let last = tokio::time::Instant::now();
    // Time is paused: the runtime jumps to the next deadline once nothing else runs.
    let mut rest = Vec::new();
    c.0.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    assert!(last.elapsed() >= Duration::from_secs(60), "closed {:?} after the last request", last.elapsed());
    m.s.server.shutdown().await;
}
