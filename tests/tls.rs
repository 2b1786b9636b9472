//! TLS on the listeners with `-cert`/`-key` (the Go original ignored them):
//! a rustls client that trusts a test certificate speaks HTTPS and RESP over
//! TLS; plain text on the same ports gets no answer.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Certs {
    _dir: tempfile::TempDir,
    cert_path: String,
    key_path: String,
    cert_der: rustls_pki_types::CertificateDer<'static>,
}

fn certs() -> Certs {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, ck.cert.pem()).unwrap();
    std::fs::write(&key_path, ck.signing_key.serialize_pem()).unwrap();
    Certs {
        cert_der: ck.cert.der().clone(),
        cert_path: cert_path.to_string_lossy().into_owned(),
        key_path: key_path.to_string_lossy().into_owned(),
        _dir: dir,
    }
}

fn client_config(root: &rustls_pki_types::CertificateDer<'static>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    config: rustls::ClientConfig,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("TLS handshake")
}

async fn https(
    addr: std::net::SocketAddr,
    root: &rustls_pki_types::CertificateDer<'static>,
    req: hyper::Request<Full<Bytes>>,
) -> (StatusCode, Bytes, Option<Vec<u8>>) {
    let tls = tls_connect(addr, client_config(root, &[b"http/1.1"])).await;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    (status, resp.into_body().collect().await.unwrap().to_bytes(), alpn)
}

#[tokio::test]
async fn https_round_trip_and_plain_http_refused() {
    let c = certs();
    let s = common::start(&format!("[tls]\ncert = {:?}\nkey = {:?}\n", c.cert_path, c.key_path)).await;
    let put = hyper::Request::put("/cache/secret")
        .header("host", "localhost")
        .body(Full::new(Bytes::from("s3cr3t")))
        .unwrap();
    let (status, _, alpn) = https(s.http, &c.cert_der, put).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let get = hyper::Request::get("/cache/secret").header("host", "localhost").body(Full::new(Bytes::new())).unwrap();
    let (status, body, _) = https(s.http, &c.cert_der, get).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], b"s3cr3t");

    // Plain HTTP to the TLS port: the handshake fails and no HTTP answer comes back.
    let mut plain = TcpStream::connect(s.http).await.unwrap();
    plain.write_all(b"GET /cache/secret HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(!buf.starts_with(b"HTTP/1.1 200"), "plain HTTP must not be served");
    s.server.shutdown().await;
}

#[tokio::test]
async fn redis_over_tls_and_plain_refused() {
    let c = certs();
    let s = common::start(&format!(
        "protocols = [\"redis\"]\n[redis]\nport = 0\n[tls]\ncert = {:?}\nkey = {:?}\n",
        c.cert_path, c.key_path
    ))
    .await;
    let addr = s.server.addr("redis").expect("redis listens");
    let mut tls = tls_connect(addr, client_config(&c.cert_der, &[])).await;
    tls.write_all(b"*1\r\n$4\r\nPING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\nGET k\r\n").await.unwrap();
    let expect = b"+PONG\r\n+OK\r\n$2\r\nv1\r\n";
    let mut got = vec![0u8; expect.len()];
    tls.read_exact(&mut got).await.unwrap();
    assert_eq!(&got[..], &expect[..]);

    // Plain RESP to the TLS port is not served.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"PING\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(!buf.starts_with(b"+PONG"), "plain RESP must not be served");
    s.server.shutdown().await;
}

#[tokio::test]
async fn memcached_over_tls_and_plain_refused() {
    let c = certs();
    let s = common::start(&format!(
        "protocols = [\"mcd\"]\n[mcd]\nport = 0\n[tls]\ncert = {:?}\nkey = {:?}\n",
        c.cert_path, c.key_path
    ))
    .await;
    let addr = s.server.addr("mcd").expect("mcd listens");
    let mut tls = tls_connect(addr, client_config(&c.cert_der, &[])).await;
    tls.write_all(b"set k 3 0 2\r\nv1\r\nget k\r\nmn\r\n").await.unwrap();
    let expect = b"STORED\r\nVALUE k 3 2\r\nv1\r\nEND\r\nMN\r\n";
    let mut got = vec![0u8; expect.len()];
    tls.read_exact(&mut got).await.unwrap();
    assert_eq!(&got[..], &expect[..]);

    // Plain text to the TLS port is not served.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"version\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf).await;
    assert!(!buf.starts_with(b"VERSION"), "plain text must not be served");
    s.server.shutdown().await;
}

#[tokio::test]
async fn grpc_over_tls_with_h2_alpn_and_plain_refused() {
    use gerdu_protocol_grpc::pb;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let c = certs();
    let s = common::start(&format!(
        "protocols = [\"grpc\"]\n[grpc]\nport = 0\n[tls]\ncert = {:?}\nkey = {:?}\n",
        c.cert_path, c.key_path
    ))
    .await;
    let addr = s.server.addr("grpc").expect("grpc listens");
    // A plain rustls handshake shows the negotiated protocol.
    let tls = tls_connect(addr, client_config(&c.cert_der, &[b"h2"])).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);

    let pem = std::fs::read_to_string(&c.cert_path).unwrap();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)).domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
    let mut client = pb::gerdu_client::GerduClient::new(channel.connect().await.expect("TLS connect"));
    let put = pb::PutRequest { key: "Hello".into(), value: "World".into(), ..Default::default() };
    assert!(client.put(put).await.unwrap().into_inner().created);
    let got = client.get(pb::GetRequest { key: "Hello".into() }).await.unwrap().into_inner();
    assert_eq!(&got.value[..], b"World");

    // Plain h2c to the TLS port is not served.
    let plain = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await;
    if let Ok(plain) = plain {
        let mut client = pb::gerdu_client::GerduClient::new(plain);
        assert!(client.get(pb::GetRequest { key: "Hello".into() }).await.is_err());
    }
    s.server.shutdown().await;
}
