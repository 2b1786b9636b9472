//! Generates the gRPC service and messages from `proto/gerdu.proto` with the
//! protoc that `protoc-bin-vendored` ships (nothing from apt), plus the
//! descriptor set that server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../../proto/gerdu.proto";
    println!("cargo:rerun-if-changed={proto}");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_transport(false)
        .bytes(".gerdu")
        .file_descriptor_set_path(out.join("gerdu_descriptor.bin"))
        .compile_with_config(config, &[proto], &["../../proto"])?;
    Ok(())
}
