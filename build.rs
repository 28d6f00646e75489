//! Compiles kubelet's device plugin API and the pod resources API subset at build time with
//! protox (no system protoc); generated code lands in OUT_DIR, never in the tree.

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

    // Pod resources (v1): only the client; the daemon asks kubelet who holds which device.
    let proto = "proto/podresources/v1/api.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    Ok(())
}
