//! The fixture hosts have the layout readers depend on: real relative symlinks resolving inside
//! the root, kernel file formats, device nodes with the sysfs numbers.

use nicplug::fixture::{self, FixtureError, can_mknod, materialize};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Captured trees copied into the repository (fixtures/captured/SOURCES.md).
const CAPTURED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/captured");

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn sample_root() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let paths = materialize(&fixture::sample_node(), tmp.path()).unwrap();
    assert_eq!(paths, nicplug::HostPaths::under(tmp.path()));
    let root = fs::canonicalize(tmp.path()).unwrap();
    (tmp, root)
}

fn pci(root: &Path, bdf: &str) -> PathBuf {
    root.join("sys/bus/pci/devices").join(bdf)
}

/// Every symlink below `dir`, recursively (not following links).
fn symlinks(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            out.push(entry.path());
        } else if kind.is_dir() {
            symlinks(&entry.path(), out);
        }
    }
}

#[test]
fn sample_node_symlinks_are_relative_and_resolve_inside_the_root() {
    let (_tmp, root) = sample_root();
    let mut links = Vec::new();
    symlinks(&root.join("sys"), &mut links);
    assert!(links.len() > 200, "only {} links", links.len());
    for link in links {
        let target = fs::read_link(&link).unwrap();
        assert!(
            target.starts_with(".."),
            "{} -> {}",
            link.display(),
            target.display()
        );
        let resolved = fs::canonicalize(&link)
            .unwrap_or_else(|e| panic!("{} -> {}: {e}", link.display(), target.display()));
        assert!(resolved.starts_with(&root), "{} escapes", link.display());
    }
}

#[test]
fn sample_node_pci_layout() {
    let (_tmp, root) = sample_root();
    let pf = root.join("sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0");
    assert_eq!(fs::canonicalize(pci(&root, "0000:3b:00.0")).unwrap(), pf);
    assert_eq!(
        fs::read_link(pci(&root, "0000:3b:00.0")).unwrap(),
        Path::new("../../../devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0")
    );
    let count = fs::read_dir(root.join("sys/bus/pci/devices"))
        .unwrap()
        .count();
    assert_eq!(count, 2 + 16 + 1 + 2 + 1);

    assert_eq!(read(pf.join("vendor")), "0x15b3\n");
    assert_eq!(read(pf.join("device")), "0x101d\n");
    assert_eq!(read(pf.join("subsystem_device")), "0x0016\n");
    assert_eq!(read(pf.join("class")), "0x020000\n");
    assert_eq!(read(pf.join("numa_node")), "0\n");
    assert_eq!(read(pf.join("acpi_index")), "1\n");
    assert_eq!(read(pf.join("sriov_numvfs")), "8\n");
    assert_eq!(read(pf.join("sriov_offset")), "2\n");
    let uevent = read(pf.join("uevent"));
    assert!(uevent.starts_with("DRIVER=mlx5_core\nPCI_CLASS=20000\nPCI_ID=15B3:101D\n"));
    assert!(uevent.contains("PCI_SLOT_NAME=0000:3b:00.0\n"), "{uevent}");
    assert_eq!(
        read(pf.join("modalias")),
        "pci:v000015B3d0000101Dsv000015B3sd00000016bc02sc00i00\n"
    );
    let driver = fs::read_link(pf.join("driver")).unwrap();
    assert_eq!(driver, Path::new("../../../../bus/pci/drivers/mlx5_core"));
    assert_eq!(
        fs::canonicalize(root.join("sys/bus/pci/drivers/mlx5_core/0000:3b:00.0")).unwrap(),
        pf
    );
    assert_eq!(
        fs::read_link(pf.join("virtfn3")).unwrap(),
        Path::new("../0000:3b:00.5")
    );
    assert_eq!(
        fs::canonicalize(pf.join("virtfn3")).unwrap(),
        fs::canonicalize(pci(&root, "0000:3b:00.5")).unwrap()
    );
    // PF 1's VFs follow PF 0's (offset 1 + total_vfs).
    let pf1 = pci(&root, "0000:3b:00.1");
    assert_eq!(read(pf1.join("sriov_offset")), "9\n");
    assert!(read(pf1.join("virtfn0/uevent")).contains("PCI_SLOT_NAME=0000:3b:01.2\n"));
    let vf = pci(&root, "0000:3b:00.5");
    assert_eq!(
        fs::read_link(vf.join("physfn")).unwrap(),
        Path::new("../0000:3b:00.0")
    );
    assert_eq!(read(vf.join("device")), "0x101e\n");
    assert!(!vf.join("sriov_totalvfs").exists());
    assert!(!pci(&root, "0000:af:00.0").join("virtfn0").exists());
    assert_eq!(read(pci(&root, "0000:af:00.0").join("numa_node")), "1\n");
}

#[test]
fn sample_node_netdevs_and_rdma() {
    let (_tmp, root) = sample_root();
    let vf = pci(&root, "0000:3b:00.5");
    let net = vf.join("net/ens1f0v3");
    assert_eq!(read(net.join("operstate")), "up\n");
    assert_eq!(read(net.join("type")), "1\n");
    assert_eq!(
        fs::read_link(net.join("device")).unwrap(),
        Path::new("../../../0000:3b:00.5")
    );
    assert_eq!(
        fs::canonicalize(root.join("sys/class/net/ens1f0v3")).unwrap(),
        fs::canonicalize(&net).unwrap()
    );
    // DPDK finds the PCI function of an ibdev through `device/uevent`.
    let ib = root.join("sys/class/infiniband/mlx5_5");
    assert!(read(ib.join("device/uevent")).contains("PCI_SLOT_NAME=0000:3b:00.5\n"));
    assert_eq!(read(ib.join("node_type")), "1: CA\n");
    assert_eq!(read(ib.join("hca_type")), "MT4126\n");
    assert_eq!(read(ib.join("fw_ver")), "22.39.1002\n");
    assert_eq!(read(ib.join("ports/1/state")), "4: ACTIVE\n");
    assert_eq!(read(ib.join("ports/1/link_layer")), "Ethernet\n");
    assert!(ib.join("ports/1/hw_counters/out_of_buffer").is_file());
    assert!(ib.join("ports/1/counters/port_rcv_data").is_file());
    let pf_ib = root.join("sys/class/infiniband/mlx5_0");
    assert_eq!(read(pf_ib.join("node_guid")), "0c42:a103:005e:7a40\n");
    assert_eq!(read(pf_ib.join("board_id")), "MT_0000000359\n");
    assert_eq!(read(pf_ib.join("hca_type")), "MT4125\n");
    assert_eq!(
        read(pf_ib.join("ports/1/gids/0")),
        "fe80:0000:0000:0000:0e42:a1ff:fe5e:7a40\n"
    );

    let uverbs = vf.join("infiniband_verbs/uverbs5");
    assert_eq!(read(uverbs.join("dev")), "231:197\n");
    assert_eq!(read(uverbs.join("ibdev")), "mlx5_5\n");
    assert_eq!(
        read(root.join("sys/class/infiniband_verbs/uverbs18/dev")),
        "231:210\n"
    );
    assert_eq!(
        read(root.join("sys/class/infiniband_verbs/abi_version")),
        "6\n"
    );
    assert_eq!(read(vf.join("infiniband_mad/umad5/dev")), "231:5\n");
    assert_eq!(read(vf.join("infiniband_mad/issm5/dev")), "231:69\n");
    assert_eq!(read(vf.join("infiniband_mad/issm5/port")), "1\n");

    // The unhealthy VF and the broken one.
    assert_eq!(
        read(root.join("sys/class/infiniband/mlx5_7/ports/1/state")),
        "1: DOWN\n"
    );
    assert_eq!(
        read(root.join("sys/class/net/ens1f0v5/operstate")),
        "down\n"
    );
    let broken = pci(&root, "0000:3b:02.1").join("infiniband_verbs/uverbs17/dev");
    assert_eq!(read(broken), "231:two-hundred-nine\n");
}

#[test]
fn sample_node_non_mellanox_and_host_files() {
    let (_tmp, root) = sample_root();
    let intel_vf = pci(&root, "0000:5e:01.0");
    assert_eq!(read(intel_vf.join("vendor")), "0x8086\n");
    assert_eq!(read(intel_vf.join("device")), "0x1889\n");
    assert_eq!(
        fs::read_link(intel_vf.join("driver"))
            .unwrap()
            .file_name()
            .unwrap(),
        "vfio-pci"
    );
    assert_eq!(
        fs::canonicalize(intel_vf.join("iommu_group")).unwrap(),
        root.join("sys/kernel/iommu_groups/87")
    );
    assert!(!intel_vf.join("net").exists());
    assert_eq!(read(root.join("sys/class/vfio/87/dev")), "243:0\n");

    let eth0 = fs::canonicalize(root.join("sys/class/net/eth0")).unwrap();
    assert_eq!(
        eth0,
        root.join("sys/devices/pci0000:00/0000:00:03.0/virtio0/net/eth0")
    );
    let route = read(root.join("proc/net/route"));
    let lines: Vec<&str> = route.lines().collect();
    assert!(lines[0].starts_with("Iface\tDestination\tGateway \tFlags"));
    assert!(
        lines[1].starts_with("eth0\t00000000\t017AA8C0\t0003\t"),
        "{route}"
    );
    assert!(lines.iter().all(|l| l.len() == 127));
    assert!(
        lines
            .iter()
            .skip(1)
            .any(|l| l.starts_with("ens1f0\t0000000A\t"))
    );

    assert_eq!(
        read(root.join("sys/module/ib_core/parameters/netns_mode")),
        "Y\n"
    );
    assert_eq!(read(root.join("sys/class/misc/rdma_cm/dev")), "10:56\n");
}

#[test]
fn sample_node_device_nodes() {
    let (_tmp, root) = sample_root();
    let nodes = [
        ("infiniband/uverbs2", 231, 194, 0o666),
        ("infiniband/uverbs18", 231, 210, 0o666),
        ("infiniband/umad2", 231, 2, 0o600),
        ("infiniband/issm2", 231, 66, 0o600),
        ("infiniband/rdma_cm", 10, 56, 0o666),
        ("vfio/vfio", 10, 196, 0o666),
        ("vfio/87", 243, 0, 0o600),
        ("vhost-net", 10, 238, 0o600),
        ("net/tun", 10, 200, 0o666),
    ];
    for (name, major, minor, mode) in nodes {
        let meta = fs::metadata(root.join("dev").join(name)).unwrap();
        if can_mknod() {
            assert!(meta.file_type().is_char_device(), "{name}");
            assert_eq!(meta.rdev(), rustix::fs::makedev(major, minor), "{name}");
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{name}");
        } else {
            assert!(meta.is_file() && meta.len() == 0, "{name} placeholder");
        }
    }
    // The garbled sysfs entry does not change the node, which keeps the kernel's number.
    assert!(root.join("dev/infiniband/uverbs17").exists());
    assert!(!root.join("dev/vfio/86").exists());
}

#[test]
fn generated_host_has_1024_functions_with_dynamic_uverbs_numbers() {
    // ~110,000 entries: tmpfs when there is one (ext4 can take seconds to create them).
    let tmp = tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap();
    let spec = fixture::generated(8, 127);
    let started = std::time::Instant::now();
    materialize(&spec, tmp.path()).unwrap();
    eprintln!("materialised 1,024 functions in {:?}", started.elapsed());
    let sys = tmp.path().join("sys");
    assert_eq!(
        fs::read_dir(sys.join("bus/pci/devices")).unwrap().count(),
        1024
    );
    assert_eq!(
        fs::read_dir(sys.join("class/infiniband")).unwrap().count(),
        1024
    );
    let verbs = sys.join("class/infiniband_verbs");
    assert_eq!(read(verbs.join("uverbs31/dev")), "231:223\n");
    assert_eq!(read(verbs.join("uverbs32/dev")), "510:0\n");
    assert_eq!(read(verbs.join("uverbs1023/dev")), "510:991\n");
    assert_eq!(read(verbs.join("uverbs1023/ibdev")), "mlx5_1023\n");
    assert_eq!(read(sys.join("class/infiniband_mad/umad64/dev")), "509:0\n");
    let first = sys.join("bus/pci/devices/0000:01:00.0");
    let last = sys.join("bus/pci/devices/0000:84:00.0");
    assert_eq!(read(first.join("numa_node")), "0\n");
    assert_eq!(read(last.join("numa_node")), "1\n");
    assert_eq!(read(last.join("sriov_numvfs")), "127\n");
    assert!(read(last.join("virtfn126/uevent")).contains("PCI_SLOT_NAME=0000:84:0f.7\n"));
    assert_eq!(read(last.join("virtfn126/numa_node")), "1\n");
}

#[test]
fn capture_becomes_a_real_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = Path::new(CAPTURED).join("hwloc-32em64t-mlx4/sys");
    let paths = fixture::load_capture(&capture, tmp.path()).unwrap();
    let dev = paths.sysfs_root.join("bus/pci/devices/0000:82:00.0");
    assert!(fs::symlink_metadata(&dev).unwrap().file_type().is_symlink());
    let dir = fs::canonicalize(&dev).unwrap();
    assert!(dir.is_dir() && dir.ends_with("devices/pci0000:80/0000:80:02.2/0000:82:00.0"));
    assert_eq!(read(dir.join("infiniband_verbs/uverbs0/dev")), "231:192\n");
    assert_eq!(
        fs::read_link(dir.join("driver")).unwrap(),
        Path::new("../../../../bus/pci/drivers/mlx4_core")
    );
    assert!(
        read(
            paths
                .sysfs_root
                .join("class/infiniband/mlx4_0/device/uevent")
        )
        .contains("PCI_SLOT_NAME=0000:82:00.0")
    );
    // Copies are writable, so tests can break them.
    fs::write(dir.join("numa_node"), "garbage\n").unwrap();
}

#[test]
fn spec_format_from_the_docs() {
    let spec = fixture::from_yaml(
        r#"
rdma_netns_mode: exclusive
default_route: eno1
functions:
  - address: "0000:3b:00.0"
    bridge: "0000:3a:00.0"
    vendor: 15b3
    device: 1017
    class: "020000"
    subsystem: {vendor: 15b3, device: 0016}
    driver: mlx5_core
    numa_node: -1
    netdev: {name: ens1f0, mac: "0c:42:a1:00:00:00", operstate: up, type: 1}
    rdma: {ibdev: mlx5_0, uverbs: 0, ports: [{state: ACTIVE, link_layer: Ethernet}], umad: 0, issm: 0}
    sriov: {total_vfs: 4, num_vfs: 2}
    vf_template: {rdma: {first: 1}}
    vfs:
      1: {rdma_hidden: true, remove: [numa_node]}
    overrides: {numa_node: "garbage"}
    remove: [vendor]
"#,
    )
    .unwrap();
    let f = &spec.functions[0];
    assert_eq!(
        (f.device.0, f.subsystem.as_ref().unwrap().device.0),
        (0x1017, 0x16)
    );
    let tmp = tempfile::tempdir().unwrap();
    let paths = materialize(&spec, tmp.path()).unwrap();
    let sys = paths.sysfs_root;
    let pf = sys.join("bus/pci/devices/0000:3b:00.0");
    assert_eq!(read(pf.join("numa_node")), "garbage");
    assert!(!pf.join("vendor").exists());
    // The VF device id follows the PF's family (ConnectX-5 -> 1018).
    let vf1 = sys.join("bus/pci/devices/0000:3b:00.3");
    assert_eq!(read(vf1.join("device")), "0x1018\n");
    assert!(!vf1.join("numa_node").exists());
    // Moved into a pod (exclusive mode): no ibdev here, the uverbs entry stays.
    assert!(!sys.join("class/infiniband/mlx5_2").exists());
    assert_eq!(read(vf1.join("infiniband_verbs/uverbs2/ibdev")), "mlx5_2\n");
    assert_eq!(
        read(sys.join("module/ib_core/parameters/netns_mode")),
        "N\n"
    );
}

#[test]
fn spec_mistakes_are_named() {
    let err = |yaml: &str| fixture::from_yaml(yaml).unwrap_err().to_string();
    let e = err("functions: [{address: '0000:3b:00.0', vendor: 15b3, device: 101d, numa: 0}]");
    assert!(e.contains("numa"), "{e}");
    let e = err("functions: [{address: '3b:00.0', vendor: 15b3, device: 101d}]");
    assert!(e.contains("3b:00.0"), "{e}");
    let e = err("functions: [{address: '0000:3b:00.0', vendor: mellanox, device: 101d}]");
    assert!(e.contains("mellanox"), "{e}");

    let clash = fixture::from_yaml(
        "functions:
  - {address: '0000:3b:00.0', vendor: 15b3, device: 101d, netdev: {name: ens1f0}}
  - {address: '0000:3b:00.1', vendor: 15b3, device: 101d, netdev: {name: ens1f0}}",
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    match materialize(&clash, tmp.path()) {
        Err(FixtureError::Invalid { function, message }) => {
            assert_eq!(function, "0000:3b:00.1");
            assert!(message.contains("ens1f0"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let e = fixture::load(Path::new("/nonexistent/node.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/node.yaml"), "{e}");
}

#[test]
fn sample_config_names_the_three_resources() {
    let config: serde_json::Value = serde_json::from_str(fixture::sample_config()).unwrap();
    let names: Vec<&str> = config["resourceList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["resourceName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cx6dx_vf", "cx6dx_pf", "intel_vfio"]);
}
