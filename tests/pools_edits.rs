//! Pools (the SR-IOV plugin's selection rules) and container edits (what a container gets),
//! on materialised fixture hosts.

mod common;

use common::{edits_for, ids, node, pools_for, s, sample};
use nicplug::fixture;
use nicplug::pools::Placement;
use nicplug::{edits, render};

#[test]
fn first_resource_in_file_order_wins() {
    let n = sample();
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[
            {"resourceName":"narrow","selectors":{"pciAddresses":["0000:3b:00.2"]}},
            {"resourceName":"wide","selectors":{"vendors":["15b3"]}}]}"#,
    );
    assert_eq!(ids(&p, "narrow"), s(&["0000:3b:00.2"]));
    let wide = ids(&p, "intel.com/wide");
    assert!(!wide.contains(&"0000:3b:00.2".to_string()));
    // PFs with VFs enabled are never offered; the plain PF and 15 remaining VFs are (the VF
    // with broken RDMA attributes too: this pool does not need RDMA).
    assert!(wide.contains(&"0000:af:00.0".to_string()));
    assert!(!wide.contains(&"0000:3b:00.0".to_string()));
    assert!(wide.contains(&"0000:3b:02.1".to_string()));
    assert_eq!(wide.len(), 16);
    assert!(matches!(
        &p.placements["0000:3b:00.0"],
        Placement::Unpooled { reason } if reason.contains("VFs enabled")
    ));
}

#[test]
fn default_route_netdev_is_never_offered() {
    let n = sample();
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"virtio","selectors":{"vendors":["1af4"]}}]}"#,
    );
    assert!(ids(&p, "virtio").is_empty());
    assert!(matches!(
        &p.placements["0000:00:03.0"],
        Placement::Unpooled { reason } if reason.contains("eth0 carries the default route")
    ));
}

#[test]
fn pf_names_and_root_devices_with_vf_ranges() {
    let n = sample();
    let p = pools_for(
        &n.host,
        r##"{"resourceList":[
            {"resourceName":"a","selectors":{"pfNames":["ens1f0#0,2-3"]}},
            {"resourceName":"b","selectors":{"rootDevices":["0000:3b:00.1#6-7"]}},
            {"resourceName":"c","selectors":{"pfNames":["ens3f0"]}}]}"##,
    );
    assert_eq!(
        ids(&p, "a"),
        s(&["0000:3b:00.2", "0000:3b:00.4", "0000:3b:00.5"])
    );
    // VF 7 of PF 1 has broken RDMA attributes: kept, as this pool does not need RDMA.
    assert_eq!(ids(&p, "b"), s(&["0000:3b:02.0", "0000:3b:02.1"]));
    // pfNames selects VFs of that PF; a PF itself has no PF and never matches.
    assert!(ids(&p, "c").is_empty());
}

#[test]
fn selectors_and_within_or_across_and_first_selector_decides_options() {
    let n = sample();
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"mix","selectors":[
            {"pciAddresses":["0000:3b:00.3"],"isRdma":true},
            {"vendors":["15b3","8086"],"drivers":["vfio-pci","mlx5_core"],"linkTypes":["ether"],
             "devices":["101e","1889"]}]}]}"#,
    );
    let pool = p.pool("mix").unwrap();
    let by_id = |id: &str| pool.devices.iter().find(|d| d.id == id).unwrap();
    assert_eq!(by_id("0000:3b:00.3").selector, 0);
    assert_eq!(by_id("0000:3b:00.2").selector, 1);
    // The vfio VF has no netdev and no RDMA port: no link type, so linkTypes excludes it.
    assert!(pool.device("0000:5e:01.0").is_none());
}

#[test]
fn exclude_topology_drops_numa() {
    let n = sample();
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[
            {"resourceName":"t","selectors":{"pciAddresses":["0000:af:00.0"]}},
            {"resourceName":"n","excludeTopology":true,"selectors":{"pciAddresses":["0000:3b:00.2"]}}]}"#,
    );
    assert_eq!(p.pool("t").unwrap().devices[0].numa_node, Some(1));
    assert_eq!(p.pool("n").unwrap().devices[0].numa_node, None);
}

const VF_POOL: &str = r#"{"resourceList":[{"resourceName":"cx6dx","resourcePrefix":"mellanox.com",
    "selectors":{"vendors":["15b3"],"devices":["101e"],"isRdma":true}}]}"#;

#[test]
fn rdma_vf_edits_match_the_sriov_plugin_byte_for_byte() {
    let n = sample();
    let p = pools_for(&n.host, VF_POOL);
    let pool = p.pool("mellanox.com/cx6dx").unwrap();
    let e = edits::container_edits(pool, &n.host, &n.paths, &s(&["0000:3b:00.2"])).unwrap();
    assert_eq!(e.env["PCIDEVICE_MELLANOX_COM_CX6DX"], "0000:3b:00.2");
    assert_eq!(
        e.env["PCIDEVICE_MELLANOX_COM_CX6DX_INFO"],
        r#"{"0000:3b:00.2":{"generic":{"deviceID":"0000:3b:00.2"},"rdma":{"issm":"/dev/infiniband/issm2","rdma_cm":"/dev/infiniband/rdma_cm","rdma_dev":"mlx5_2","umad":"/dev/infiniband/umad2","uverbs":"/dev/infiniband/uverbs2"}}}"#
    );
    assert_eq!(
        e.env["NICPLUG_EAL_ARGS_MELLANOX_COM_CX6DX"],
        "-a 0000:3b:00.2 --iova-mode=va"
    );
    let nodes: Vec<(&str, Option<u32>, Option<u32>)> = e
        .devices
        .iter()
        .map(|d| (d.container_path.as_str(), d.major, d.minor))
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("/dev/infiniband/uverbs2", Some(231), Some(194)),
            ("/dev/infiniband/rdma_cm", Some(10), Some(56)),
            ("/dev/infiniband/umad2", Some(231), Some(2)),
            ("/dev/infiniband/issm2", Some(231), Some(66)),
        ]
    );
    for d in &e.devices {
        assert!(d.host_path.starts_with(&n.paths.dev_root));
        assert_eq!(d.permissions, "rw");
    }
    // The counters fix: exactly the port directory, read-only, same path inside.
    assert_eq!(e.mounts.len(), 1);
    let m = &e.mounts[0];
    assert!(m.read_only);
    assert_eq!(
        m.container_path,
        "/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/infiniband/mlx5_2/ports/1"
    );
    assert_eq!(m.host_path, n.paths.sysfs_root.join(&m.container_path[5..]));
    assert!(m.host_path.join("hw_counters/out_of_buffer").is_file());
}

#[test]
fn two_devices_share_rdma_cm_once_and_join_ids_in_request_order() {
    let n = sample();
    let p = pools_for(&n.host, VF_POOL);
    let pool = p.pool("cx6dx").unwrap();
    let req = s(&["0000:3b:01.2", "0000:3b:00.2"]);
    let e = edits::container_edits(pool, &n.host, &n.paths, &req).unwrap();
    assert_eq!(
        e.env["PCIDEVICE_MELLANOX_COM_CX6DX"],
        "0000:3b:01.2,0000:3b:00.2"
    );
    let cm = e
        .devices
        .iter()
        .filter(|d| d.container_path.ends_with("rdma_cm"))
        .count();
    assert_eq!(cm, 1);
    assert_eq!(e.devices.len(), 7);
    assert_eq!(e.mounts.len(), 2);
    assert_eq!(
        e.env["NICPLUG_EAL_ARGS_MELLANOX_COM_CX6DX"],
        "-a 0000:3b:01.2 -a 0000:3b:00.2 --iova-mode=va"
    );
}

#[test]
fn without_is_rdma_an_mlx5_vf_gets_no_nodes_unless_nicplug_says_so() {
    let n = sample();
    let plain = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"v","selectors":{"devices":["101e"]}}]}"#,
    );
    let e = edits_for(&n, &plain, "v", "0000:3b:00.2");
    assert!(e.devices.is_empty() && e.mounts.is_empty());
    assert_eq!(
        e.env["PCIDEVICE_INTEL_COM_V_INFO"],
        r#"{"0000:3b:00.2":{"generic":{"deviceID":"0000:3b:00.2"}}}"#
    );

    let uverbs_only = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"v","selectors":{"devices":["101e"]},
            "nicplug":{"rdmaDevices":["uverbs"],"countersMount":true}}]}"#,
    );
    let e = edits_for(&n, &uverbs_only, "v", "0000:3b:00.2");
    let paths: Vec<&str> = e
        .devices
        .iter()
        .map(|d| d.container_path.as_str())
        .collect();
    assert_eq!(paths, vec!["/dev/infiniband/uverbs2"]);
    assert_eq!(e.mounts.len(), 1);
}

#[test]
fn counters_mount_can_be_turned_off_and_is_absent_in_exclusive_mode() {
    let n = sample();
    let off = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"v","selectors":{"devices":["101e"],"isRdma":true},
            "nicplug":{"countersMount":false,"ealArgs":false}}]}"#,
    );
    let e = edits_for(&n, &off, "v", "0000:3b:00.2");
    assert!(e.mounts.is_empty());
    assert!(!e.env.keys().any(|k| k.starts_with("NICPLUG_EAL_ARGS")));
    assert_eq!(e.devices.len(), 4);

    let mut spec = fixture::sample_node();
    spec.rdma_netns_mode = Some(fixture::NetnsMode::Exclusive);
    let x = node(&spec);
    let p = pools_for(&x.host, VF_POOL);
    let e = edits_for(&x, &p, "cx6dx", "0000:3b:00.2");
    assert!(
        e.mounts.is_empty(),
        "the whole device moves with its counters in exclusive mode"
    );
    assert_eq!(e.devices.len(), 4);
}

#[test]
fn vfio_function_gets_container_and_group_nodes() {
    let n = sample();
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"vfio","selectors":{"drivers":["vfio-pci"],"needVhostNet":true}}]}"#,
    );
    let e = edits_for(&n, &p, "vfio", "0000:5e:01.0");
    let paths: Vec<&str> = e
        .devices
        .iter()
        .map(|d| d.container_path.as_str())
        .collect();
    assert_eq!(
        paths,
        vec![
            "/dev/vfio/vfio",
            "/dev/vfio/87",
            "/dev/vhost-net",
            "/dev/net/tun"
        ]
    );
    assert_eq!(
        e.env["PCIDEVICE_INTEL_COM_VFIO_INFO"],
        r#"{"0000:5e:01.0":{"generic":{"deviceID":"0000:5e:01.0"},"vfio":{"dev-mount":"/dev/vfio/87","mount":"/dev/vfio/vfio"},"vhost":{"net-mount":"/dev/vhost-net","tun-mount":"/dev/net/tun"}}}"#
    );
    assert!(e.mounts.is_empty());
}

#[test]
fn additional_info_specific_key_wins() {
    let n = sample();
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"v","selectors":{"devices":["101e"]},
            "additionalInfo":{"*":{"net":"a","zone":"z"},"0000:3b:00.2":{"net":"b"}}}]}"#,
    );
    let e = edits_for(&n, &p, "v", "0000:3b:00.2");
    assert_eq!(
        e.env["PCIDEVICE_INTEL_COM_V_INFO"],
        r#"{"0000:3b:00.2":{"extra":{"net":"b","zone":"z"},"generic":{"deviceID":"0000:3b:00.2"}}}"#
    );
}

#[test]
fn unknown_and_empty_requests_are_errors() {
    let n = sample();
    let p = pools_for(&n.host, VF_POOL);
    let pool = p.pool("cx6dx").unwrap();
    let err = edits::container_edits(
        pool,
        &n.host,
        &n.paths,
        &s(&["0000:3b:00.2", "0000:5e:01.0", "bogus"]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        edits::EditError::UnknownIds {
            pool: "mellanox.com/cx6dx".into(),
            ids: s(&["0000:5e:01.0", "bogus"])
        }
    );
    assert_eq!(
        edits::container_edits(pool, &n.host, &n.paths, &[]).unwrap_err(),
        edits::EditError::Empty
    );
}

#[test]
fn device_info_file_for_cnis() {
    let n = sample();
    let p = pools_for(&n.host, VF_POOL);
    let pool = p.pool("cx6dx").unwrap();
    let (name, body) = render::device_info(pool, n.host.function("0000:3b:00.2").unwrap());
    assert_eq!(name, "mellanox.com-cx6dx-0000:3b:00.2-device.json");
    assert_eq!(
        body,
        r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:3b:00.2","rdma-device":"mlx5_2"}}"#
    );
    // Without isRdma the function's RDMA side is not the pod's: no rdma-device (as the SR-IOV
    // plugin's current release).
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"plain","selectors":{"devices":["101e"]}}]}"#,
    );
    let (_, body) = render::device_info(
        p.pool("plain").unwrap(),
        n.host.function("0000:3b:00.2").unwrap(),
    );
    assert_eq!(
        body,
        r#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:3b:00.2"}}"#
    );
}

/// The SR-IOV plugin upper-cases `PCIDEVICE_<prefix>_<name>` and replaces `.` only: a dash in
/// the prefix or name stays (pods look the variable up by that exact name).
#[test]
fn variable_names_keep_dashes_as_the_sriov_plugin_does() {
    let n = sample();
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"cx6-vf","resourcePrefix":"my-corp.com",
            "selectors":{"devices":["101e"]}}]}"#,
    );
    let e = edits_for(&n, &p, "my-corp.com/cx6-vf", "0000:3b:00.2");
    let names: Vec<&str> = e.env.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "NICPLUG_EAL_ARGS_MY-CORP_COM_CX6-VF",
            "PCIDEVICE_MY-CORP_COM_CX6-VF",
            "PCIDEVICE_MY-CORP_COM_CX6-VF_INFO"
        ]
    );
}

/// `extra` is there whenever the resource has `additionalInfo` (empty when no key applies),
/// absent without it; values are escaped as Go's encoding/json escapes them.
#[test]
fn extra_record_presence_and_go_escaping() {
    let n = sample();
    let info = |config: &str| {
        let p = pools_for(&n.host, config);
        edits_for(&n, &p, "v", "0000:3b:00.2").env["PCIDEVICE_INTEL_COM_V_INFO"].clone()
    };
    assert_eq!(
        info(
            r#"{"resourceList":[{"resourceName":"v","selectors":{"devices":["101e"]},
            "additionalInfo":{"0000:3b:00.3":{"net":"b"}}}]}"#
        ),
        r#"{"0000:3b:00.2":{"extra":{},"generic":{"deviceID":"0000:3b:00.2"}}}"#
    );
    for absent in [
        r#"{"resourceList":[{"resourceName":"v","selectors":{"devices":["101e"]}}]}"#,
        r#"{"resourceList":[{"resourceName":"v","selectors":{"devices":["101e"]},"additionalInfo":null}]}"#,
    ] {
        assert_eq!(
            info(absent),
            r#"{"0000:3b:00.2":{"generic":{"deviceID":"0000:3b:00.2"}}}"#
        );
    }
    assert_eq!(
        info(
            r#"{"resourceList":[{"resourceName":"v","selectors":{"devices":["101e"]},
            "additionalInfo":{"*":{"q":"<a & b>","nl":"x\ny"}}}]}"#
        ),
        r#"{"0000:3b:00.2":{"extra":{"nl":"x\ny","q":"\u003ca \u0026 b\u003e"},"generic":{"deviceID":"0000:3b:00.2"}}}"#
    );
}

/// The sample's VF 0000:3b:02.1 has a garbled uverbs `dev`: an isRdma pool leaves it out (its
/// RDMA side is unknown), a pool that does not need RDMA still offers it.
#[test]
fn broken_rdma_side_leaves_only_is_rdma_pools() {
    let n = sample();
    let p = pools_for(&n.host, VF_POOL);
    assert!(!ids(&p, "mellanox.com/cx6dx").contains(&"0000:3b:02.1".to_string()));
    let p = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"plain","selectors":{"devices":["101e"]}}]}"#,
    );
    assert!(ids(&p, "plain").contains(&"0000:3b:02.1".to_string()));
    let e = edits_for(&n, &p, "plain", "0000:3b:02.1");
    assert!(e.devices.is_empty() && e.mounts.is_empty());
}
