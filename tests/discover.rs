//! Discovery on real files: the bundled sample node, the ConnectX-3 capture in
//! fixtures/captured/, a 1,024-function host, and trees broken in every way a hostile or
//! half-written sysfs can be.

use nicplug::HostPaths;
use nicplug::fixture::{self, HostSpec};
use nicplug::host::{self, FunctionClass, Host, RdmaNetnsMode};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

fn materialize(spec: &HostSpec) -> (tempfile::TempDir, HostPaths, Host) {
    // tmpfs when there is one: a 1,024-function tree is ~110,000 inodes.
    let tmp = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let paths = fixture::materialize(spec, tmp.path()).unwrap();
    let host = host::discover(&paths).unwrap();
    (tmp, paths, host)
}

fn yaml(text: &str) -> HostSpec {
    fixture::from_yaml(text).unwrap()
}

#[test]
fn sample_node_functions() {
    let (_tmp, _paths, host) = materialize(&fixture::sample_node());
    assert_eq!(host.rdma_netns_mode, RdmaNetnsMode::Shared);
    let cm = host.rdma_cm.as_ref().unwrap();
    assert_eq!((cm.major, cm.minor), (10, 56));

    let pf = host.function("0000:3b:00.0").unwrap();
    assert_eq!(pf.model, Some("ConnectX-6 Dx"));
    assert_eq!(pf.driver.as_deref(), Some("mlx5_core"));
    assert_eq!(
        pf.sriov.as_ref().map(|s| (s.total_vfs, s.num_vfs)),
        Some((8, 8))
    );
    assert_eq!(pf.numa_node, Some(0));
    assert_eq!(pf.acpi_index, Some(1));
    assert_eq!(pf.iommu_group, Some(40));

    let vf = host.function("0000:3b:00.2").unwrap();
    assert!(vf.is_vf());
    let physfn = vf.physfn.as_ref().unwrap();
    assert_eq!(
        (physfn.address.as_str(), physfn.vf_index),
        ("0000:3b:00.0", 0)
    );
    assert_eq!(vf.netdevs[0].name, "ens1f0v0");
    assert_eq!(vf.netdevs[0].link_type, "ether");
    let rdma = vf.rdma.as_ref().unwrap();
    assert_eq!(rdma.ibdev.as_deref(), Some("mlx5_2"));
    let uverbs = rdma.uverbs.as_ref().unwrap();
    assert_eq!(
        (uverbs.path.as_str(), uverbs.major, uverbs.minor),
        ("/dev/infiniband/uverbs2", 231, 194)
    );
    let port = &rdma.ports[0];
    assert_eq!(
        (port.number, port.state.as_str(), port.link_layer.as_str()),
        (1, "ACTIVE", "Ethernet")
    );
    assert!(port.has_hw_counters && port.has_counters);
    assert_eq!(
        port.sysfs_dir,
        Path::new("devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/infiniband/mlx5_2/ports/1")
    );

    // VF 7 of PF 1 sits at 3b:02.1 with VF index 7.
    let down = host.function("0000:3b:00.7").unwrap();
    assert_eq!(down.rdma.as_ref().unwrap().ports[0].state, "DOWN");
    assert_eq!(down.physfn.as_ref().unwrap().vf_index, 5);
    assert_eq!(
        host.function("0000:3b:02.0")
            .unwrap()
            .physfn
            .as_ref()
            .unwrap()
            .vf_index,
        6
    );

    let intel_vf = host.function("0000:5e:01.0").unwrap();
    assert_eq!(intel_vf.driver.as_deref(), Some("vfio-pci"));
    assert_eq!(intel_vf.iommu_group, Some(87));
    assert!(intel_vf.netdevs.is_empty() && intel_vf.rdma.is_none());

    let virtio = host.function("0000:00:03.0").unwrap();
    assert_eq!(virtio.netdevs[0].name, "eth0");
    assert!(virtio.netdevs[0].default_route);
    assert!(!pf.netdevs[0].default_route);
}

#[test]
fn broken_sample_vf_rdma_is_dropped_with_one_warning_naming_the_file() {
    let (_tmp, _paths, host) = materialize(&fixture::sample_node());
    assert_eq!(host.skipped.len(), 1, "{:?}", host.skipped);
    let s = &host.skipped[0];
    assert_eq!(s.address, "0000:3b:02.1");
    assert!(
        s.file.ends_with("infiniband_verbs/uverbs17/dev"),
        "{}",
        s.file.display()
    );
    // Only its RDMA side is broken: the function stays, without RDMA, for pools that do not
    // need it.
    let f = host.function("0000:3b:02.1").unwrap();
    assert!(f.rdma.is_none() && !f.netdevs.is_empty());
    assert!(s.reason.contains("RDMA side ignored"), "{}", s.reason);
    // Its siblings are untouched.
    assert!(host.function("0000:3b:02.0").unwrap().rdma.is_some());
    assert_eq!(host.functions.len(), 22);
}

#[test]
fn connectx3_capture_is_an_rdma_function_with_uverbs0_at_231_192() {
    let tmp = tempfile::tempdir().unwrap();
    let capture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/captured/hwloc-32em64t-mlx4/sys");
    let paths = fixture::load_capture(&capture, tmp.path()).unwrap();
    let host = host::discover(&paths).unwrap();
    assert!(host.skipped.is_empty(), "{:?}", host.skipped);
    assert_eq!(host.functions.len(), 1);
    let f = &host.functions[0];
    assert_eq!(f.address, "0000:82:00.0");
    assert_eq!(f.class, FunctionClass::Network);
    assert_eq!(f.class_code, 0x028000);
    assert_eq!(f.model, Some("ConnectX-3"));
    assert_eq!(f.driver.as_deref(), Some("mlx4_core"));
    assert_eq!(f.numa_node, Some(1));
    assert_eq!(f.netdevs[0].name, "ib0");
    assert_eq!(f.netdevs[0].link_type, "infiniband");
    let r = f.rdma.as_ref().unwrap();
    assert_eq!(r.ibdev.as_deref(), Some("mlx4_0"));
    let u = r.uverbs.as_ref().unwrap();
    assert_eq!((u.name.as_str(), u.major, u.minor), ("uverbs0", 231, 192));
    assert_eq!((r.umad[0].major, r.umad[0].minor), (231, 0));
    assert_eq!((r.issm[0].major, r.issm[0].minor), (231, 64));
    assert_eq!(r.ports[0].state, "ACTIVE");
    assert_eq!(r.ports[0].link_layer, "InfiniBand");
}

#[test]
fn generated_1024_function_host() {
    let (_tmp, _paths, host) = materialize(&fixture::generated(8, 127));
    assert_eq!(host.functions.len(), 1024);
    assert!(host.skipped.is_empty());
    let vfs = host.functions.iter().filter(|f| f.is_vf()).count();
    assert_eq!(vfs, 8 * 127);
    // Numbers come from sysfs: past the 32 static minors the kernel uses a dynamic major.
    let majors: std::collections::BTreeSet<u32> = host
        .functions
        .iter()
        .filter_map(|f| f.rdma.as_ref()?.uverbs.as_ref().map(|u| u.major))
        .collect();
    assert!(majors.contains(&231) && majors.len() > 1, "{majors:?}");
    let numa1 = host
        .functions
        .iter()
        .filter(|f| f.numa_node == Some(1))
        .count();
    assert_eq!(numa1, 512);
}

const ONE_VF: &str = r#"
rdma_cm: {major: 10, minor: 56}
functions:
  - address: "0000:3b:00.0"
    bridge: "0000:3a:00.0"
    vendor: 15b3
    device: 101d
    driver: mlx5_core
    netdev: {name: ens1f0}
    rdma: {ibdev: mlx5_0, uverbs: 0}
    sriov: {total_vfs: 2, num_vfs: 2}
    vf_template: {rdma: {first: 2}}
"#;

/// Every way a single function's sysfs can be wrong: each skips that function alone.
#[test]
fn broken_attributes_skip_only_their_function() {
    let cases: &[(&str, &str, &str)] = &[
        ("vendor", "0xzz\n", "vendor"),
        ("numa_node", "garbage\n", "numa_node"),
        ("sriov_numvfs", "many\n", "sriov_numvfs"),
        ("infiniband_verbs/uverbs2/dev", "231\n", "uverbs2/dev"),
        ("net/ens1f0v0/type", "ether\n", "type"),
    ];
    for (file, content, expect_file) in cases {
        let mut spec = yaml(ONE_VF);
        // Break VF 0 (0000:3b:00.2), or the PF for PF-only files.
        let target = if file.starts_with("sriov") { 0 } else { 1 };
        let text = format!(
            "{ONE_VF}    vfs:\n      0: {{overrides: {{\"{file}\": \"{}\"}}}}\n",
            content.escape_default()
        );
        if target == 1 {
            spec = yaml(&text);
        } else {
            spec.functions[0]
                .overrides
                .insert(file.to_string(), content.to_string());
        }
        let (_tmp, _paths, host) = materialize(&spec);
        assert_eq!(host.skipped.len(), 1, "{file}: {:?}", host.skipped);
        assert!(
            host.skipped[0]
                .file
                .to_string_lossy()
                .ends_with(expect_file),
            "{file}: {:?}",
            host.skipped[0]
        );
        // A broken RDMA attribute drops the RDMA side only.
        let rdma_only = file.starts_with("infiniband");
        assert_eq!(
            host.functions.len(),
            if rdma_only { 3 } else { 2 },
            "{file}: the other two functions remain"
        );
        if rdma_only {
            assert!(host.function("0000:3b:00.2").unwrap().rdma.is_none());
        }
    }
}

#[test]
fn missing_required_file_is_named() {
    let mut spec = yaml(ONE_VF);
    spec.functions[0].remove.push("class".into());
    let (_tmp, _paths, host) = materialize(&spec);
    assert_eq!(host.skipped.len(), 1);
    assert!(host.skipped[0].file.ends_with("class"));
    assert!(host.skipped[0].reason.contains("missing"));
    assert_eq!(host.functions.len(), 2);
}

#[test]
fn hostile_trees_never_panic() {
    let (tmp, paths, _) = materialize(&yaml(ONE_VF));
    let sys = &paths.sysfs_root;
    let devs = sys.join("bus/pci/devices");
    // A symlink loop, a dangling link, a link out of the root, a non-PCI name, a non-UTF-8 name.
    symlink("loop", devs.join("0000:99:00.0")).unwrap();
    fs::rename(devs.join("0000:99:00.0"), devs.join("loop")).unwrap();
    symlink("0000:99:00.1", devs.join("0000:99:00.1")).unwrap();
    symlink("../../../devices/nowhere", devs.join("0000:99:00.2")).unwrap();
    symlink(tmp.path(), devs.join("0000:99:00.3")).unwrap();
    symlink("../../../devices", devs.join("not-a-bdf")).unwrap();
    use std::os::unix::ffi::OsStrExt;
    symlink(
        "x",
        devs.join(std::ffi::OsStr::from_bytes(b"0000:99:00.\xff")),
    )
    .unwrap();
    // A huge attribute is read only up to a page.
    let vf_dir = fs::canonicalize(devs.join("0000:3b:00.3")).unwrap();
    fs::write(vf_dir.join("numa_node"), "1".repeat(10 << 20)).unwrap();
    // A loop inside a function's net/ directory.
    let vf2 = fs::canonicalize(devs.join("0000:3b:00.2")).unwrap();
    fs::remove_dir_all(vf2.join("net")).unwrap();
    symlink("net", vf2.join("net")).unwrap();

    let host = host::discover(&paths).unwrap();
    assert_eq!(
        host.functions.len(),
        1,
        "only the PF survives: {:?}",
        host.functions
    );
    let skipped: Vec<&str> = host.skipped.iter().map(|s| s.address.as_str()).collect();
    for addr in [
        "0000:3b:00.2",
        "0000:3b:00.3",
        "0000:99:00.1",
        "0000:99:00.2",
        "0000:99:00.3",
        "not-a-bdf",
        "loop",
    ] {
        assert!(skipped.contains(&addr), "{addr} not in {skipped:?}");
    }
    assert!(host.skipped.iter().any(|s| s.reason.contains("UTF-8")));
    assert!(
        host.skipped
            .iter()
            .any(|s| s.reason.contains("outside the sysfs root"))
    );
}

#[test]
fn missing_sysfs_root_is_an_error_not_a_panic() {
    let paths = HostPaths::under(Path::new("/nonexistent/nicplug"));
    assert!(host::discover(&paths).is_err());
}

#[test]
fn exclusive_mode_and_hidden_ibdev() {
    let text = ONE_VF.replace("rdma_cm:", "rdma_netns_mode: exclusive\nrdma_cm:");
    let mut spec = yaml(&text);
    spec.functions[0].rdma.as_mut().unwrap().hidden = true;
    let (_tmp, _paths, host) = materialize(&spec);
    assert_eq!(host.rdma_netns_mode, RdmaNetnsMode::Exclusive);
    // The PF's ibdev moved into a pod: no ibdev here, but its uverbs entry keeps it RDMA.
    let pf = host.function("0000:3b:00.0").unwrap();
    let r = pf.rdma.as_ref().unwrap();
    assert_eq!(r.ibdev, None);
    assert_eq!(r.uverbs.as_ref().unwrap().name, "uverbs0");
}
