//! Compiles kubelet's device plugin API, the pod resources API subset and the DRA plugin APIs
//! (registration, DRA v1/v1beta1, DRA health) at build time with
//! protox (no system protoc); generated code lands in OUT_DIR, never in the tree.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Relative relocations packed (DT_RELR, glibc 2.36+, binutils 2.38+): the loader reads
    // ~10 KB instead of 370 KB of `.rela.dyn` at every start, pages that stayed resident.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
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

    // The DRA driver's kubelet side: plugin registration, the DRA plugin API (v1 and v1beta1)
    // and DRA device health. Servers only: kubelet is the client.
    let protos = [
        "proto/pluginregistration/v1/api.proto",
        "proto/dra/v1/api.proto",
        "proto/dra/v1beta1/api.proto",
        "proto/drahealth/v1alpha1/api.proto",
        "proto/drahealth/v1beta1/api.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // Their own directory: dra-health v1beta1's package is `v1beta1`, as the device plugin's.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("dra");
    std::fs::create_dir_all(&out)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .btree_map(".")
        .out_dir(&out)
        .compile_fds(fds)?;
    Ok(())
}
