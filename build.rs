//! Generates the peer (raft) service from `proto/raft.proto` with the protoc
//! that `protoc-bin-vendored` ships (nothing from apt).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/raft.proto";
    println!("cargo:rerun-if-changed={proto}");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().build_transport(false).bytes(".gerdu.raft").compile_with_config(
        config,
        &[proto],
        &["proto"],
    )?;
    Ok(())
}
