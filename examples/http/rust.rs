//! Stores, reads and deletes a key over gerdu's HTTP API with nothing but the
//! standard library (HTTP/1.1 by hand; a real program would use hyper or
//! reqwest). Build and run: `rustc -O examples/http/rust.rs -o /tmp/gerdu-http
//! && /tmp/gerdu-http http://127.0.0.1:8080`
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// One request on its own connection: (status, body).
fn call(host: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(host).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status");
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status code");
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().expect("a length");
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn main() {
    let base = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    println!("PUT /cache/Hello -> {}", call(host, "PUT", "/cache/Hello", "World").0);
    let (status, value) = call(host, "GET", "/cache/Hello", "");
    println!("GET /cache/Hello -> {status} {value}");
    println!("DELETE /cache/Hello -> {}", call(host, "DELETE", "/cache/Hello", "").0);
    println!("GET /cache/Hello -> {}", call(host, "GET", "/cache/Hello", "").0);
}
