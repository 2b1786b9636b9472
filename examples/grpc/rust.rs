//! Stores, reads and deletes a key over gerdu's gRPC API with tonic, using
//! the client generated from `proto/gerdu.proto` (the `gerdu-protocol-grpc`
//! crate's `pb` module; your own program would run `tonic-build` on the same
//! file). Run: `cargo run --example grpc -- http://127.0.0.1:8081`
use gerdu_protocol_grpc::pb::gerdu_client::GerduClient;
use gerdu_protocol_grpc::pb::{DeleteRequest, GetRequest, PutRequest};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "http://127.0.0.1:8081".into());
    let channel = tonic::transport::Channel::from_shared(addr)?.connect().await?;
    let mut client = GerduClient::new(channel);
    let put = PutRequest { key: "Hello".into(), value: b"World".to_vec().into(), ..Default::default() };
    let created = client.put(put).await?.into_inner().created;
    println!("Put Hello -> created={created}");
    let got = client.get(GetRequest { key: "Hello".into() }).await?.into_inner();
    println!("Get Hello -> {}", String::from_utf8_lossy(&got.value));
    client.delete(DeleteRequest { key: "Hello".into() }).await?;
    println!("Delete Hello -> ok");
    match client.get(GetRequest { key: "Hello".into() }).await {
        Ok(r) => println!("Get Hello -> unexpected {:?}", r.into_inner()),
        Err(status) => println!("Get Hello -> {:?}", status.code()),
    }
    Ok(())
}
