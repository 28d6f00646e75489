//! Compiles kubelet's device plugin API at build time with protox (no system protoc);
//! generated code lands in OUT_DIR, never in the tree.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/deviceplugin/v1beta1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Maps in key order, so rendered responses are stable; serde for the CLI preview.
        .btree_map(".")
        .message_attribute(".", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}
