//! Starts the five-line binary (gerdu plus the example line protocol) as a
//! user would, on ports the OS picks, and talks to the plugin over TCP.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

fn send(stream: &mut TcpStream, reader: &mut BufReader<TcpStream>, line: &str) -> String {
    stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let mut answer = String::new();
    reader.read_line(&mut answer).unwrap();
    answer.trim_end().to_string()
}

#[test]
fn the_linked_binary_serves_the_line_protocol() {
    let bin = env!("CARGO_BIN_EXE_gerdu-with-line");
    let listed = Command::new(bin).arg("--list-plugins").output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.lines().any(|l| l.contains("line") && l.contains("example")), "{listed}");

    let mut child = Command::new(bin)
        .args(["-httpport", "0", "-raft", "127.0.0.1:0", "-protocols", "line", "-log", "info"])
        .env("GERDU_LINE__PORT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server logs each listener with its bound address.
    let mut logs = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = logs
        .by_ref()
        .map(Result::unwrap)
        .find_map(|l| {
            let at = l.find("protocol=\"line\" addr=")?;
            l[at..].split_whitespace().nth(1)?.strip_prefix("addr=").map(str::to_string)
        })
        .expect("the line protocol listens");
    // Keep the pipe drained so the server never blocks on its logs.
    std::thread::spawn(move || logs.for_each(drop));

    let mut stream = TcpStream::connect(&addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    assert_eq!(send(&mut stream, &mut reader, "SET greeting hello"), "OK");
    assert_eq!(send(&mut stream, &mut reader, "GET greeting"), "VALUE hello");
    assert_eq!(send(&mut stream, &mut reader, "DEL greeting"), "DELETED");
    assert_eq!(send(&mut stream, &mut reader, "GET greeting"), "NOT_FOUND");
    assert_eq!(send(&mut stream, &mut reader, "DEL greeting"), "NOT_FOUND");
    assert_eq!(send(&mut stream, &mut reader, "PING"), "ERROR unknown command");
    assert_eq!(send(&mut stream, &mut reader, "GET a b"), "ERROR wrong number of arguments");
    stream.write_all(b"QUIT\r\n").unwrap();
    let mut rest = String::new();
    assert_eq!(reader.read_line(&mut rest).unwrap(), 0, "QUIT closes the connection");
    child.kill().unwrap();
    child.wait().unwrap();
}
