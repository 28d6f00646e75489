//! The device classes beyond mlx5 netdev/RDMA functions that the SR-IOV plugin serves: vfio in
//! no-IOMMU mode, UIO, vDPA (vhost and virtio) and switchdev PFs with representors, each on its
//! fixture host under `fixtures/classes/` (materialised with real links and device nodes).

mod common;

use common::{Node, edits_for, ids, node, pools_for, s};
use nicplug::fixture::{self, HostSpec};
use nicplug::host::{self, Scope, VdpaKind};
use nicplug::pools::Placement;
use nicplug::{cdi, edits, render, report};
use std::path::Path;

fn host(name: &str) -> HostSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/classes")
        .join(name);
    fixture::load(&path).unwrap()
}

/// (container path, host path relative to the dev root, major, minor) of every node.
fn nodes(n: &Node, e: &edits::ContainerEdits) -> Vec<(String, String, Option<u32>, Option<u32>)> {
    e.devices
        .iter()
        .map(|d| {
            assert_eq!(d.permissions, "rw");
            // Every host path is a node the fixture made, under the dev root.
            let rel = d.host_path.strip_prefix(&n.paths.dev_root).unwrap();
            assert!(d.host_path.exists(), "{}", d.host_path.display());
            (
                d.container_path.clone(),
                format!("/dev/{}", rel.display()),
                d.major,
                d.minor,
            )
        })
        .collect()
}

fn node_at(
    c: &str,
    h: &str,
    num: Option<(u32, u32)>,
) -> (String, String, Option<u32>, Option<u32>) {
    (c.into(), h.into(), num.map(|n| n.0), num.map(|n| n.1))
}

// ---- vfio in no-IOMMU mode -----------------------------------------------------------------

#[test]
fn noiommu_groups_are_discovered_from_the_group_name() {
    let n = node(&host("noiommu.yaml"));
    assert!(n.host.skipped.is_empty(), "{:?}", n.host.skipped);
    let f = n.host.function("0000:00:05.0").unwrap();
    assert_eq!((f.iommu_group, f.noiommu), (Some(0), true));
    assert!(n.host.function("0000:00:06.0").unwrap().noiommu);
    let kernel = n.host.function("0000:00:07.0").unwrap();
    assert_eq!((kernel.iommu_group, kernel.noiommu), (None, false));
    // With an IOMMU, a vfio-pci group is an ordinary one.
    let sample = common::sample();
    assert!(!sample.host.function("0000:5e:01.0").unwrap().noiommu);
}

#[test]
fn noiommu_group_node_is_handed_out_under_the_group_number() {
    let n = node(&host("noiommu.yaml"));
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"e810","selectors":{"drivers":["vfio-pci"]}}]}"#,
    );
    assert_eq!(ids(&p, "e810"), s(&["0000:00:05.0", "0000:00:06.0"]));
    let pool = p.pool("e810").unwrap();
    let e = edits::container_edits(
        pool,
        &n.host,
        &n.paths,
        &s(&["0000:00:06.0", "0000:00:05.0"]),
    )
    .unwrap();
    assert_eq!(
        nodes(&n, &e),
        vec![
            node_at("/dev/vfio/vfio", "/dev/vfio/vfio", None),
            node_at("/dev/vfio/1", "/dev/vfio/noiommu-1", None),
            node_at("/dev/vfio/0", "/dev/vfio/noiommu-0", None),
        ]
    );
    assert_eq!(
        e.env["PCIDEVICE_INTEL_COM_E810_INFO"],
        r#"{"0000:00:05.0":{"generic":{"deviceID":"0000:00:05.0"},"vfio":{"dev-mount":"/dev/vfio/0","mount":"/dev/vfio/vfio"}},"0000:00:06.0":{"generic":{"deviceID":"0000:00:06.0"},"vfio":{"dev-mount":"/dev/vfio/1","mount":"/dev/vfio/vfio"}}}"#
    );
    // Without an IOMMU, DPDK needs physical addresses: no `--iova-mode=va`.
    assert_eq!(
        e.env["NICPLUG_EAL_ARGS_INTEL_COM_E810"],
        "-a 0000:00:06.0 -a 0000:00:05.0"
    );
    // CDI renders the same node: the container path and the host's noiommu node.
    let c = cdi::container_edits(&e);
    let group = &c.device_nodes[1];
    assert_eq!(group.path, "/dev/vfio/1");
    assert!(
        group.host_path.ends_with("/dev/vfio/noiommu-1"),
        "{}",
        group.host_path
    );
}

// ---- UIO -------------------------------------------------------------------------------------

#[test]
fn uio_nodes_are_discovered_for_both_uio_drivers() {
    let n = node(&host("uio.yaml"));
    assert!(n.host.skipped.is_empty(), "{:?}", n.host.skipped);
    for (addr, driver, uio) in [
        ("0000:5e:01.0", "igb_uio", 0),
        ("0000:5e:01.1", "uio_pci_generic", 1),
        ("0000:5e:01.2", "igb_uio", 2),
    ] {
        let f = n.host.function(addr).unwrap();
        assert_eq!(f.driver.as_deref(), Some(driver));
        let u = f.uio.as_ref().unwrap();
        assert_eq!(
            (u.name.as_str(), u.path.as_str(), u.major, u.minor),
            (
                format!("uio{uio}").as_str(),
                format!("/dev/uio{uio}").as_str(),
                241,
                uio
            )
        );
        assert!(f.netdevs.is_empty());
    }
    let kernel = n.host.function("0000:5e:01.3").unwrap();
    assert!(kernel.uio.is_none());
    assert_eq!(kernel.netdevs[0].name, "ens2f0v3");
}

#[test]
fn uio_function_gets_its_node_and_uio_record() {
    let n = node(&host("uio.yaml"));
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"uio","selectors":{"drivers":["igb_uio","uio_pci_generic"]}}]}"#,
    );
    assert_eq!(
        ids(&p, "uio"),
        s(&["0000:5e:01.0", "0000:5e:01.1", "0000:5e:01.2"])
    );
    let e = edits_for(&n, &p, "uio", "0000:5e:01.1");
    assert_eq!(
        nodes(&n, &e),
        vec![node_at("/dev/uio1", "/dev/uio1", Some((241, 1)))]
    );
    assert!(e.mounts.is_empty());
    assert_eq!(
        e.env["PCIDEVICE_INTEL_COM_UIO_INFO"],
        r#"{"0000:5e:01.1":{"generic":{"deviceID":"0000:5e:01.1"},"uio":{"mount":"/dev/uio1"}}}"#
    );
    assert_eq!(e.env["NICPLUG_EAL_ARGS_INTEL_COM_UIO"], "-a 0000:5e:01.1");
    // A kernel-bound VF of the same PF gets neither.
    let iavf = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"k","selectors":{"drivers":["iavf"]}}]}"#,
    );
    let e = edits_for(&n, &iavf, "k", "0000:5e:01.3");
    assert!(e.devices.is_empty());
    assert!(!e.env["PCIDEVICE_INTEL_COM_K_INFO"].contains("uio"));
}

// ---- vDPA ------------------------------------------------------------------------------------

#[test]
fn vdpa_devices_hang_on_their_parent_function() {
    let n = node(&host("switchdev-vdpa.yaml"));
    assert!(n.host.skipped.is_empty(), "{:?}", n.host.skipped);
    let v = n
        .host
        .function("0000:65:00.2")
        .unwrap()
        .vdpa
        .as_ref()
        .unwrap();
    assert_eq!(
        (v.name.as_str(), v.kind, v.driver.as_deref()),
        ("vdpa0", Some(VdpaKind::Vhost), Some("vhost_vdpa"))
    );
    let node = v.node.as_ref().unwrap();
    assert_eq!(
        (node.path.as_str(), node.major, node.minor),
        ("/dev/vhost-vdpa-0", 240, 0)
    );
    let virtio = n
        .host
        .function("0000:65:00.4")
        .unwrap()
        .vdpa
        .as_ref()
        .unwrap();
    assert_eq!(virtio.kind, Some(VdpaKind::Virtio));
    assert!(virtio.node.is_none());
    assert_eq!(virtio.netdevs[0].name, "vdpa2eth");
    // The VF keeps its own mlx5 netdev; the virtio one belongs to the vDPA device.
    assert_eq!(
        n.host.function("0000:65:00.4").unwrap().netdevs[0].name,
        "p1p1v2"
    );
    assert!(n.host.function("0000:65:00.5").unwrap().vdpa.is_none());
    // A partial re-read hangs the vDPA devices on again.
    let again = host::refresh(&n.paths, &n.host, &Scope::function("0000:65:00.2")).unwrap();
    assert_eq!(again, n.host);
}

const VDPA_POOLS: &str = r#"{"resourceList":[
    {"resourceName":"vhost","resourcePrefix":"nvidia.com","selectors":{"vendors":["15b3"],"vdpaType":"vhost"}},
    {"resourceName":"virtio","resourcePrefix":"nvidia.com","selectors":{"vendors":["15b3"],"vdpaType":"virtio"}},
    {"resourceName":"plain","resourcePrefix":"nvidia.com","selectors":{"devices":["101e"]}}]}"#;

#[test]
fn vdpa_type_selects_by_the_bound_vdpa_driver() {
    let n = node(&host("switchdev-vdpa.yaml"));
    let p = pools_for(&n.host, VDPA_POOLS);
    assert_eq!(ids(&p, "vhost"), s(&["0000:65:00.2", "0000:65:00.3"]));
    assert_eq!(ids(&p, "virtio"), s(&["0000:65:00.4"]));
    assert_eq!(
        ids(&p, "plain"),
        s(&["0000:65:00.5", "0000:65:00.6", "0000:65:00.7"])
    );
    // A vdpaType pool that takes nothing says why in discover.
    let only = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"vhost","selectors":{"devices":["101e"],"vdpaType":"vhost"}}]}"#,
    );
    assert!(matches!(
        &only.placements["0000:65:00.5"],
        Placement::Unpooled { reason } if reason == "vhost wants a vDPA device of type vhost (vhost_vdpa); it has none"
    ));
    assert!(matches!(
        &only.placements["0000:65:00.4"],
        Placement::Unpooled { reason } if reason.ends_with("its vdpa2 is bound to virtio_vdpa")
    ));
}

#[test]
fn vhost_vdpa_gets_its_node_vdpa_record_and_device_info() {
    let n = node(&host("switchdev-vdpa.yaml"));
    let p = pools_for(&n.host, VDPA_POOLS);
    let e = edits_for(&n, &p, "vhost", "0000:65:00.3");
    assert_eq!(
        nodes(&n, &e),
        vec![node_at(
            "/dev/vhost-vdpa-1",
            "/dev/vhost-vdpa-1",
            Some((240, 1))
        )]
    );
    assert!(e.mounts.is_empty());
    assert_eq!(
        e.env["PCIDEVICE_NVIDIA_COM_VHOST_INFO"],
        r#"{"0000:65:00.3":{"generic":{"deviceID":"0000:65:00.3"},"vdpa":{"mount":"/dev/vhost-vdpa-1"}}}"#
    );
    assert_eq!(
        e.env["NICPLUG_EAL_ARGS_NVIDIA_COM_VHOST"],
        "-a 0000:65:00.3 --iova-mode=va"
    );
    let pool = p.pool("vhost").unwrap();
    let (name, body) = render::device_info(pool, n.host.function("0000:65:00.3").unwrap());
    assert_eq!(name, "nvidia.com-vhost-0000:65:00.3-device.json");
    assert_eq!(
        body,
        r#"{"type":"vdpa","version":"1.1.0","vdpa":{"parent-device":"vdpa1","driver":"vhost","path":"/dev/vhost-vdpa-1","pci-address":"0000:65:00.3"}}"#
    );
}

#[test]
fn virtio_vdpa_gets_no_node_an_empty_vdpa_record_and_device_info() {
    let n = node(&host("switchdev-vdpa.yaml"));
    let p = pools_for(&n.host, VDPA_POOLS);
    let e = edits_for(&n, &p, "virtio", "0000:65:00.4");
    assert!(e.devices.is_empty() && e.mounts.is_empty());
    assert_eq!(
        e.env["PCIDEVICE_NVIDIA_COM_VIRTIO_INFO"],
        r#"{"0000:65:00.4":{"generic":{"deviceID":"0000:65:00.4"},"vdpa":{}}}"#
    );
    let pool = p.pool("virtio").unwrap();
    let (_, body) = render::device_info(pool, n.host.function("0000:65:00.4").unwrap());
    assert_eq!(
        body,
        r#"{"type":"vdpa","version":"1.1.0","vdpa":{"parent-device":"vdpa2","driver":"virtio","pci-address":"0000:65:00.4"}}"#
    );
    // The same kind of VF in a pool without vdpaType is a plain PCI device.
    let plain = p.pool("plain").unwrap();
    let (_, body) = render::device_info(plain, n.host.function("0000:65:00.5").unwrap());
    assert!(body.starts_with(r#"{"type":"pci","#), "{body}");
}

#[test]
fn a_deleted_vdpa_device_is_gone_after_any_partial_reread() {
    let n = node(&host("switchdev-vdpa.yaml"));
    std::fs::remove_file(n.paths.sysfs_root.join("bus/vdpa/devices/vdpa0")).unwrap();
    // The event named another function; the vDPA bus is read whole anyway.
    let h = host::refresh(&n.paths, &n.host, &Scope::function("0000:65:00.7")).unwrap();
    assert!(h.function("0000:65:00.2").unwrap().vdpa.is_none());
    assert!(h.function("0000:65:00.3").unwrap().vdpa.is_some());
    assert_eq!(h, host::discover(&n.paths).unwrap());
}

#[test]
fn a_vdpa_device_of_a_scalable_function_is_not_its_parents() {
    let n = common::sample();
    let sys = &n.paths.sysfs_root;
    let sf = std::fs::canonicalize(sys.join("bus/auxiliary/devices/mlx5_core.sf.4")).unwrap();
    let dir = sf.join("vdpa9");
    std::fs::create_dir_all(dir.join("vhost-vdpa-9")).unwrap();
    std::fs::write(dir.join("vhost-vdpa-9/dev"), "240:9\n").unwrap();
    std::fs::create_dir_all(sys.join("bus/vdpa/drivers/vhost_vdpa")).unwrap();
    std::os::unix::fs::symlink(sys.join("bus/vdpa/drivers/vhost_vdpa"), dir.join("driver"))
        .unwrap();
    std::fs::create_dir_all(sys.join("bus/vdpa/devices")).unwrap();
    std::os::unix::fs::symlink(&dir, sys.join("bus/vdpa/devices/vdpa9")).unwrap();
    let h = host::discover(&n.paths).unwrap();
    assert_eq!(h.skipped, n.host.skipped);
    assert!(h.function("0000:af:00.0").unwrap().vdpa.is_none());
    let p = pools_for(
        &h,
        r#"{"resourceList":[{"resourceName":"v","selectors":{"vdpaType":"vhost"}}]}"#,
    );
    assert!(ids(&p, "v").is_empty());
}

#[test]
fn vdpa_entries_that_leave_the_root_are_skipped_and_named() {
    let n = node(&host("switchdev-vdpa.yaml"));
    let list = n.paths.sysfs_root.join("bus/vdpa/devices");
    std::os::unix::fs::symlink("/etc", list.join("evil")).unwrap();
    let h = host::discover(&n.paths).unwrap();
    assert_eq!(h.skipped.len(), 1, "{:?}", h.skipped);
    assert_eq!(h.skipped[0].address, "bus/vdpa/devices/evil");
    // Everything else is read as before.
    assert_eq!(h.functions, n.host.functions);
}

// ---- switchdev -------------------------------------------------------------------------------

#[test]
fn representors_are_never_taken_for_the_pf_netdev() {
    let n = node(&host("switchdev-vdpa.yaml"));
    let pf = n.host.function("0000:65:00.0").unwrap();
    let own: Vec<_> = pf.netdevs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(own, vec!["p1p1"]);
    assert_eq!(pf.netdevs[0].phys_port_name.as_deref(), Some("p0"));
    let reps: Vec<_> = pf
        .representors
        .iter()
        .map(|d| (d.name.as_str(), d.phys_port_name.as_deref().unwrap()))
        .collect();
    assert_eq!(
        reps,
        vec![
            ("eth0", "pf0vf0"),
            ("eth1", "pf0vf1"),
            ("eth2", "pf0vf2"),
            ("eth3", "pf0vf3")
        ]
    );
    assert!(pf.representors.iter().all(|r| {
        r.phys_switch_id.as_deref() == pf.netdevs[0].phys_switch_id.as_deref()
            && host::is_representor(r)
    }));
    // A legacy-mode PF reports no port name: its netdev is its own.
    let legacy = n.host.function("0000:65:00.1").unwrap();
    assert_eq!(legacy.netdevs[0].name, "p1p2");
    assert!(legacy.representors.is_empty());
}

#[test]
fn pf_names_name_the_uplink_and_representors_select_nothing() {
    let n = node(&host("switchdev-vdpa.yaml"));
    let p = pools_for(
        &n.host,
        r##"{"resourceList":[
            {"resourceName":"uplink","selectors":{"pfNames":["p1p1#0-1"]}},
            {"resourceName":"rep","selectors":{"pfNames":["eth0","eth1","eth2","eth3"]}},
            {"resourceName":"legacy","selectors":{"pfNames":["p1p2"]}}]}"##,
    );
    assert_eq!(ids(&p, "uplink"), s(&["0000:65:00.2", "0000:65:00.3"]));
    assert!(ids(&p, "rep").is_empty());
    assert_eq!(ids(&p, "legacy"), s(&["0000:65:00.6", "0000:65:00.7"]));
    assert!(matches!(
        &p.placements["0000:65:00.4"],
        Placement::Unpooled { reason } if reason == "no resource selects it"
    ));
    // The table shows the uplink as the PF's netdev and counts the representors.
    let table = report::discover_table(&n.host, &p);
    let pf_row = table
        .lines()
        .find(|l| l.starts_with("0000:65:00.0"))
        .unwrap();
    assert!(pf_row.contains("switchdev (4 representors)"), "{pf_row}");
    assert!(pf_row.contains(" p1p1 "), "{pf_row}");
    assert!(!pf_row.contains("eth0"), "{pf_row}");
    assert!(
        !table.contains("eth0"),
        "no representor is shown as a device's netdev"
    );
}

// ---- discover shows the classes ----------------------------------------------------------------

#[test]
fn discover_shows_driver_and_node_of_each_class() {
    let rows =
        |n: &Node| report::discover_table(&n.host, &pools_for(&n.host, r#"{"resourceList":[]}"#));
    let noiommu = rows(&node(&host("noiommu.yaml")));
    let row = noiommu
        .lines()
        .find(|l| l.starts_with("0000:00:05.0"))
        .unwrap();
    assert!(row.contains("vfio-pci /dev/vfio/noiommu-0"), "{row}");
    let uio = rows(&node(&host("uio.yaml")));
    let row = uio.lines().find(|l| l.starts_with("0000:5e:01.1")).unwrap();
    assert!(row.contains("uio_pci_generic /dev/uio1"), "{row}");
    let vdpa = rows(&node(&host("switchdev-vdpa.yaml")));
    let row = vdpa
        .lines()
        .find(|l| l.starts_with("0000:65:00.2"))
        .unwrap();
    assert!(
        row.contains("mlx5_core vdpa vdpa0:vhost /dev/vhost-vdpa-0"),
        "{row}"
    );
    let row = vdpa
        .lines()
        .find(|l| l.starts_with("0000:65:00.4"))
        .unwrap();
    assert!(row.contains("vdpa vdpa2:virtio"), "{row}");
}

// ---- hostile entries -------------------------------------------------------------------------

fn fifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
}

/// Discovery on another thread, failing (not hanging) when it blocks.
fn discover_within(paths: &nicplug::HostPaths) -> nicplug::host::Host {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = paths.clone();
    std::thread::spawn(move || {
        let _ = tx.send(host::discover(&p).unwrap());
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("discovery blocked (on a FIFO?)")
}

#[test]
fn fifos_in_the_new_readers_never_block_and_are_named() {
    let n = node(&host("switchdev-vdpa.yaml"));
    let sys = &n.paths.sysfs_root;
    let vf0 = std::fs::canonicalize(sys.join("bus/pci/devices/0000:65:00.2")).unwrap();
    // A garbled vhost-vdpa node skips that vDPA device, naming its file; the VF stays.
    fifo(&vf0.join("vdpa0/vhost-vdpa-0/dev"));
    // phys_port_name may be unreadable on a real host (EOPNOTSUPP): it reads as absent.
    let uplink = std::fs::canonicalize(sys.join("class/net/p1p1")).unwrap();
    fifo(&uplink.join("phys_port_name"));
    let h = discover_within(&n.paths);
    assert_eq!(h.skipped.len(), 1, "{:?}", h.skipped);
    assert_eq!(h.skipped[0].address, "bus/vdpa/devices/vdpa0");
    assert!(h.skipped[0].file.ends_with("vhost-vdpa-0/dev"));
    assert!(h.function("0000:65:00.2").unwrap().vdpa.is_none());
    assert!(h.function("0000:65:00.3").unwrap().vdpa.is_some());
    let pf = h.function("0000:65:00.0").unwrap();
    assert_eq!(pf.netdevs[0].name, "p1p1");
    assert_eq!(pf.netdevs[0].phys_port_name, None);

    let u = node(&host("uio.yaml"));
    let vf1 =
        std::fs::canonicalize(u.paths.sysfs_root.join("bus/pci/devices/0000:5e:01.1")).unwrap();
    fifo(&vf1.join("uio/uio1/dev"));
    let h = discover_within(&u.paths);
    assert_eq!(h.skipped.len(), 1, "{:?}", h.skipped);
    assert_eq!(h.skipped[0].address, "0000:5e:01.1");
    assert!(h.skipped[0].file.ends_with("uio/uio1/dev"));
    assert!(h.function("0000:5e:01.0").unwrap().uio.is_some());
}
