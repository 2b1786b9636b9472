//! The real `gerdu` binary: Go-style flags, config precedence, bad input and
//! exit codes, graceful shutdown on SIGTERM/SIGINT, and a two-node cluster
//! whose leader is frozen (SIGSTOP).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_gerdu");

/// Runs gerdu with a clean environment (plus `env`) in `dir`.
fn gerdu(args: &[&str], env: &[(&str, &str)], dir: &std::path::Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run gerdu")
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2 and exactly one line naming `needle`.
fn assert_config_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(2), "stderr: {}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{err:?} should name {needle:?}");
}

fn printed_config(o: &Output) -> toml::Table {
    assert!(o.status.success(), "{}", stderr(o));
    toml::from_str(&String::from_utf8_lossy(&o.stdout)).expect("--print-config prints TOML")
}

#[test]
fn bad_flags_and_values_exit_2_with_one_line() {
    let d = tmp();
    assert_config_error(&gerdu(&["-capacity", "12XB", "--check"], &[], d.path()), "capacity");
    assert_config_error(&gerdu(&["-type", "nope", "--check"], &[], d.path()), "nope");
    assert_config_error(&gerdu(&["-httpport", "70000", "--check"], &[], d.path()), "httpport");
    assert_config_error(&gerdu(&["-log", "loud", "--check"], &[], d.path()), "log");
    assert_config_error(&gerdu(&["-nosuchflag", "1"], &[], d.path()), "nosuchflag");
    assert_config_error(&gerdu(&["-protocols", "smtp", "--check"], &[], d.path()), "smtp");
    assert_config_error(&gerdu(&["--config", "/nonexistent.toml", "--check"], &[], d.path()), "nonexistent");
}

#[test]
fn bad_config_files_exit_2_naming_the_key() {
    let d = tmp();
    let write = |text: &str| {
        let p = d.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let p = write("capacity = \n");
    assert_config_error(&gerdu(&["--config", &p, "--check"], &[], d.path()), "bad.toml");
    let p = write("[http]\nport = 70000\n");
    assert_config_error(&gerdu(&["--config", &p, "--check"], &[], d.path()), "http.port");
    let p = write("capacity = \"12XB\"\n");
    assert_config_error(&gerdu(&["--config", &p, "--check"], &[], d.path()), "capacity");
    let p = write("colour = \"blue\"\n");
    assert_config_error(&gerdu(&["--config", &p, "--check"], &[], d.path()), "colour");
    let p = write("[http]\nprot = 1\n");
    assert_config_error(&gerdu(&["--config", &p, "--check"], &[], d.path()), "prot");
    let p = write("[pipeline]\nmiddleware = [\"auth\"]\n");
    assert_config_error(&gerdu(&["--config", &p, "--check"], &[], d.path()), "raft");
    let p = write("[auth]\nenabled = true\n");
    assert_config_error(&gerdu(&["--config", &p, "--check"], &[], d.path()), "auth");
    // Env values are checked too.
    assert_config_error(&gerdu(&["--check"], &[("GERDU_HTTP__PORT", "99999")], d.path()), "http.port");
}

#[test]
fn precedence_is_defaults_file_env_flags() {
    let d = tmp();
    let defaults = printed_config(&gerdu(&["--print-config"], &[], d.path()));
    assert_eq!(defaults["capacity"].as_str(), Some("64MB"));
    assert_eq!(defaults["policy"].as_str(), Some("lru"));
    assert_eq!(defaults["id"].as_str(), Some("master"));

    // ./gerdu.toml is picked up from the working directory.
    std::fs::write(d.path().join("gerdu.toml"), "capacity = \"1MB\"\nid = \"file\"\n[http]\nport = 1111\n").unwrap();
    let file = printed_config(&gerdu(&["--print-config"], &[], d.path()));
    assert_eq!(file["capacity"].as_str(), Some("1MB"));
    assert_eq!(file["http"]["port"].as_integer(), Some(1111));

    let env = [("GERDU_CAPACITY", "2MB"), ("GERDU_HTTP__PORT", "2222")];
    let over_env = printed_config(&gerdu(&["--print-config"], &env, d.path()));
    assert_eq!(over_env["capacity"].as_str(), Some("2MB"));
    assert_eq!(over_env["http"]["port"].as_integer(), Some(2222));
    assert_eq!(over_env["id"].as_str(), Some("file"), "untouched keys keep the file's value");

    let flags = printed_config(&gerdu(&["--print-config", "-capacity", "3MB", "--httpport=3333"], &env, d.path()));
    assert_eq!(flags["capacity"].as_str(), Some("3MB"));
    assert_eq!(flags["http"]["port"].as_integer(), Some(3333));

    // GERDU_CONFIG names another file; --config beats it.
    std::fs::write(d.path().join("other.toml"), "id = \"other\"\n").unwrap();
    std::fs::write(d.path().join("third.toml"), "id = \"third\"\n").unwrap();
    let via_env = printed_config(&gerdu(&["--print-config"], &[("GERDU_CONFIG", "other.toml")], d.path()));
    assert_eq!(via_env["id"].as_str(), Some("other"));
    let via_flag = printed_config(&gerdu(
        &["--print-config", "--config", "third.toml"],
        &[("GERDU_CONFIG", "other.toml")],
        d.path(),
    ));
    assert_eq!(via_flag["id"].as_str(), Some("third"));
}

#[test]
fn every_go_flag_is_accepted_with_one_or_two_dashes() {
    let d = tmp();
    let go = [
        "-capacity",
        "128mb",
        "-grpcport",
        "18081",
        "-host",
        "127.0.0.1",
        "-httpport",
        "18080",
        "-id",
        "node9",
        "-log",
        "debug",
        "-mcdport",
        "11299",
        "-raft",
        "127.0.0.1:12099",
        "-redisport",
        "16399",
        "-type",
        "lru",
        "-protocols",
        "",
    ];
    let c = printed_config(&gerdu(&[&["--print-config"], &go[..]].concat(), &[], d.path()));
    assert_eq!(c["capacity"].as_str(), Some("128MB"));
    assert_eq!(c["grpc"]["port"].as_integer(), Some(18081));
    assert_eq!(c["http"]["port"].as_integer(), Some(18080));
    assert_eq!(c["mcd"]["port"].as_integer(), Some(11299));
    assert_eq!(c["redis"]["port"].as_integer(), Some(16399));
    assert_eq!(c["raft"]["addr"].as_str(), Some("127.0.0.1:12099"));
    assert_eq!(c["id"].as_str(), Some("node9"));
    assert_eq!(c["log"].as_str(), Some("debug"));
    let two: Vec<String> =
        go.iter().map(|a| if a.starts_with('-') { format!("-{a}") } else { a.to_string() }).collect();
    let two: Vec<&str> = two.iter().map(String::as_str).collect();
    let c2 = printed_config(&gerdu(&[&["--print-config"], &two[..]].concat(), &[], d.path()));
    assert_eq!(c, c2);
    // -cert/-key/-join/-storage are accepted by the parser (each is validated at start).
    let c3 = printed_config(&gerdu(
        &["--print-config", "-cert", "c.pem", "-key", "k.pem", "-join", "127.0.0.1:12000", "-storage", "/tmp/x"],
        &[],
        d.path(),
    ));
    assert_eq!(c3["tls"]["cert"].as_str(), Some("c.pem"));
    assert_eq!(c3["raft"]["join"].as_str(), Some("127.0.0.1:12000"));
    assert_eq!(c3["raft"]["storage"].as_str(), Some("/tmp/x"));
}

#[test]
fn list_plugins_and_check() {
    let d = tmp();
    let o = gerdu(&["--list-plugins"], &[], d.path());
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for name in ["http", "lru", "auth", "metrics", "raft"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(name)), "{name} in {out}");
    }
    let repo_toml = concat!(env!("CARGO_MANIFEST_DIR"), "/gerdu.toml");
    let o = gerdu(&["--config", repo_toml, "--check"], &[], d.path());
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn missing_tls_files_are_a_config_error() {
    let d = tmp();
    let o = gerdu(&["-cert", "/nope/cert.pem", "-key", "/nope/key.pem", "--check"], &[], d.path());
    assert_config_error(&o, "tls.cert");
    let o = gerdu(&["-cert", "/nope/cert.pem", "--check"], &[], d.path());
    assert_config_error(&o, "tls");
}

/// Starts the server and returns it with its HTTP address (parsed from the log).
fn spawn_server(extra: &[&str]) -> (Child, SocketAddr) {
    spawn_server_env(extra, &[])
}

/// [`spawn_server`] with `env` added to its environment.
fn spawn_server_env(extra: &[&str], env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["-httpport", "0", "-raft", "127.0.0.1:0"])
        .args(extra)
        .env_remove("GERDU_CONFIG")
        .envs(env.iter().copied())
        .current_dir(tmp().keep())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn gerdu");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("gerdu logs its address").expect("read log");
        if let Some(rest) = line.split("addr=").nth(1).filter(|_| line.contains("listening")) {
            break rest.split_whitespace().next().unwrap().parse::<SocketAddr>().expect("address");
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    // A server that holds a request fails the test rather than hanging it.
    s.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig}");
}

#[test]
fn serves_http_then_exits_0_on_sigterm_and_sigint() {
    for sig in ["-TERM", "-INT"] {
        let (mut child, addr) = spawn_server(&["-log", "info"]);
        let put =
            http(addr, "PUT /cache/Hello HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nWorld");
        assert!(put.starts_with("HTTP/1.1 201"), "{put}");
        let got = http(addr, "GET /cache/Hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(got.starts_with("HTTP/1.1 200") && got.ends_with("World"), "{got}");
        signal(&child, sig);
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "exit after {sig}");
        assert!(TcpStream::connect(addr).is_err(), "listener closed");
    }
}

#[test]
fn port_in_use_exits_1() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port().to_string();
    let d = tmp();
    let o = gerdu(&["-httpport", &port, "-raft", "127.0.0.1:0", "-log", "error"], &[], d.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains(&port));
}

#[test]
fn unusable_storage_and_a_refused_join_exit_1() {
    let d = tmp();
    // A file where the storage directory should be.
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let o = gerdu(&["-httpport", "0", "-raft", "127.0.0.1:0", "-storage", file.to_str().unwrap()], &[], d.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("-storage"), "{}", stderr(&o));

    // A second node named like the first one (-id master) is refused by the
    // cluster it asks to join (here by its HTTP address).
    let (mut first, http) = spawn_server(&["-log", "info"]);
    let o = gerdu(&["-httpport", "0", "-raft", "127.0.0.1:0", "-join", &http.to_string()], &[], d.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("already a member"), "{}", stderr(&o));
    signal(&first, "-TERM");
    assert_eq!(first.wait().unwrap().code(), Some(0));
}

/// A child process killed (SIGKILL, stopped or not) when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn put_request(key: &str, value: &str) -> String {
    format!(
        "PUT /cache/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{value}",
        value.len()
    )
}

/// A leader that stops answering (SIGSTOP: its sockets stay open, nothing
/// is read from them) holds its follower's clients no longer than
/// `leader_wait_ms`: a write forwarded to it gets 503 "may or may not have
/// been applied", a read 503; once it runs again, forwarding works again.
/// The follower cannot be elected meanwhile (two members: it needs the
/// frozen one's vote; and its election timeout is long).
#[test]
fn a_frozen_leader_holds_its_followers_clients_no_longer_than_the_wait() {
    let env = [
        ("GERDU_RAFT__LEADER_WAIT_MS", "1000"),
        ("GERDU_RAFT__ELECTION_TIMEOUT_MIN_MS", "60000"),
        ("GERDU_RAFT__ELECTION_TIMEOUT_MAX_MS", "120000"),
    ];
    let (a, a_http) = spawn_server_env(&["-id", "a", "-log", "info"], &env);
    let a = Running(a);
    let (b, b_http) = spawn_server_env(&["-id", "b", "-log", "info", "-join", &a_http.to_string()], &env);
    let _b = Running(b);
    // b has joined; it may not have heard from its leader yet (each try
    // waits for one up to the wait).
    let put = (0..10).map(|_| http(b_http, &put_request("k", "1"))).find(|p| !p.starts_with("HTTP/1.1 503"));
    assert!(put.as_deref().is_some_and(|p| p.starts_with("HTTP/1.1 201")), "{put:?}");

    signal(&a.0, "-STOP");
    let put = http(b_http, &put_request("k", "2"));
    // Failed by the wait, not by the connection's keep-alive (15 s).
    assert!(put.starts_with("HTTP/1.1 503") && put.contains("no answer in time"), "{put}");
    assert!(put.contains("may or may not have been applied"), "{put}");
    let got = http(b_http, "GET /cache/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");

    // (a applies the held write when it runs again: it was in its socket.)
    signal(&a.0, "-CONT");
    let put = http(b_http, &put_request("k3", "3"));
    assert!(put.starts_with("HTTP/1.1 201"), "{put}");
    let got = http(b_http, "GET /cache/k3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 200") && got.ends_with("3"), "{got}");
}
