//! mlx5 scalable functions (auxiliary bus) and RDMA exclusive netns mode: discovery, pools,
//! container edits and the discover report, on materialised fixture hosts.

mod common;

use common::{edits_for, ids, node, pools_for, s, sample, tempdir};
use nicplug::edits;
use nicplug::fixture::{self, HostSpec, NetnsMode, RdmaSpec, SfSpec};
use nicplug::host;
use nicplug::pools::Placement;
use nicplug::report;
use std::path::Path;

/// An auxNetDevice resource with one selector (`extra` spliced into it).
fn aux_resource(name: &str, extra: &str) -> String {
    format!(
        r#"{{"resourceName":"{name}","resourcePrefix":"nvidia.com","deviceType":"auxNetDevice",
            "selectors":[{{"auxTypes":["sf"]{extra}}}]}}"#
    )
}

fn config(resources: &[String]) -> String {
    format!(r#"{{"resourceList":[{}]}}"#, resources.join(","))
}

#[test]
fn sample_sfs_are_discovered_under_their_parent() {
    let n = sample();
    let names: Vec<&str> = n
        .host
        .aux_functions
        .iter()
        .map(|a| a.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["mlx5_core.sf.4", "mlx5_core.sf.5", "mlx5_core.sf.6"]
    );
    // The sample's PCI functions are untouched by the SFs.
    assert_eq!(n.host.functions.len(), 22);
    assert_eq!(n.host.skipped.len(), 1, "{:?}", n.host.skipped);

    let sf = n.host.aux_function("mlx5_core.sf.4").unwrap();
    assert_eq!(sf.sfnum, 88);
    assert_eq!(sf.parent, "0000:af:00.0");
    assert_eq!(sf.driver.as_deref(), Some("mlx5_core.sf"));
    assert_eq!(sf.numa_node, Some(1));
    assert_eq!(
        sf.sysfs_dir,
        Path::new("devices/pci0000:ae/0000:ae:00.0/0000:af:00.0/mlx5_core.sf.4")
    );
    assert_eq!(sf.netdevs.len(), 1);
    assert_eq!(sf.netdevs[0].name, "en3f0pf0sf88");
    assert_eq!(sf.netdevs[0].link_type, "ether");
    let r = sf.rdma.as_ref().unwrap();
    assert_eq!(r.ibdev.as_deref(), Some("mlx5_20"));
    let u = r.uverbs.as_ref().unwrap();
    assert_eq!((u.name.as_str(), u.major, u.minor), ("uverbs20", 231, 212));
    assert_eq!(
        r.ports[0].sysfs_dir,
        sf.sysfs_dir.join("infiniband/mlx5_20/ports/1")
    );
    assert!(r.ports[0].has_hw_counters);

    let sf5 = n.host.aux_function("mlx5_core.sf.5").unwrap();
    assert_eq!(sf5.sfnum, 89);
    assert_eq!(
        sf5.rdma.as_ref().unwrap().uverbs.as_ref().unwrap().name,
        "uverbs21"
    );
    assert_eq!(sf5.rdma.as_ref().unwrap().ibdev.as_deref(), Some("mlx5_21"));
    assert_eq!(
        n.host
            .aux_function("mlx5_core.sf.4")
            .unwrap()
            .rdma_absent_reason(),
        None
    );

    // The device abstraction finds both kinds by ID.
    let d = n.host.device("mlx5_core.sf.5").unwrap();
    assert_eq!(d.id(), "mlx5_core.sf.5");
    assert_eq!(d.pci(&n.host).unwrap().address, "0000:af:00.0");
    assert_eq!(n.host.device("0000:af:00.0").unwrap().id(), "0000:af:00.0");
    assert!(n.host.device("mlx5_core.sf.7").is_none());
}

#[test]
fn lightweight_sf_is_listed_with_its_reason() {
    let n = sample();
    let lw = n.host.aux_function("mlx5_core.sf.6").unwrap();
    assert_eq!((lw.sfnum, lw.parent.as_str()), (90, "0000:af:00.0"));
    assert!(lw.netdevs.is_empty() && lw.rdma.is_none());
    assert!(lw.rdma_absent_reason().unwrap().contains("lightweight"));

    let p = pools_for(
        &n.host,
        &config(&[aux_resource("sf_rdma", r#","isRdma":true"#)]),
    );
    assert_eq!(
        ids(&p, "nvidia.com/sf_rdma"),
        s(&["mlx5_core.sf.4", "mlx5_core.sf.5"])
    );
    let Placement::Unpooled { reason } = &p.placements["mlx5_core.sf.6"] else {
        panic!("{:?}", p.placements["mlx5_core.sf.6"]);
    };
    assert!(
        reason.contains("lightweight") && reason.contains("isRdma"),
        "{reason}"
    );

    let table = report::discover_table(&n.host, &p);
    let row = table
        .lines()
        .find(|l| l.starts_with("mlx5_core.sf.6"))
        .unwrap();
    assert!(
        row.contains("SF 90 of 0000:af:00.0") && row.contains("lightweight"),
        "{row}"
    );
    let row4 = table
        .lines()
        .find(|l| l.starts_with("mlx5_core.sf.4"))
        .unwrap();
    for cell in [
        "SF 88 of 0000:af:00.0",
        "en3f0pf0sf88",
        "mlx5_20",
        "uverbs20 231:212",
        "nvidia.com/sf_rdma",
    ] {
        assert!(row4.contains(cell), "{cell} in {row4}");
    }

    let json = serde_json::to_value(report::discover_report(&n.host, &p)).unwrap();
    assert_eq!(json["rdma_netns_mode"], "shared");
    let aux = json["aux_functions"].as_array().unwrap();
    assert_eq!(aux.len(), 3);
    assert_eq!(aux[0]["name"], "mlx5_core.sf.4");
    assert_eq!(aux[0]["sfnum"], 88);
    assert_eq!(aux[0]["parent"], "0000:af:00.0");
    assert_eq!(aux[0]["numa_node"], 1);
    assert_eq!(aux[0]["link_type"], "ether");
    assert_eq!(aux[0]["placement"]["kind"], "pool");
    assert_eq!(aux[2]["rdma"], serde_json::Value::Null);
    assert_eq!(aux[2]["placement"]["kind"], "unpooled");
}

#[test]
fn broken_sf_entries_are_skipped_with_the_file_named() {
    let mut spec = fixture::sample_node();
    let pf = spec
        .functions
        .iter_mut()
        .find(|f| f.address.to_string() == "0000:af:00.0")
        .unwrap();
    let mut broken = SfSpec::new(91, 7);
    broken
        .overrides
        .insert("sfnum".into(), "ninety-one\n".into());
    pf.sfs.push(broken);
    let mut no_sfnum = SfSpec::new(92, 8);
    no_sfnum.remove.push("sfnum".into());
    pf.sfs.push(no_sfnum);
    let tmp = tempdir();
    let paths = fixture::materialize(&spec, tmp.path()).unwrap();
    let aux = paths.sysfs_root.join("bus/auxiliary/devices");
    // A name that is not mlx5_core.sf.<digits> is skipped, never joined into a path; other
    // auxiliary devices (an SF's eth child) are not ours and pass silently.
    std::os::unix::fs::symlink("../../../devices/x", aux.join("mlx5_core.sf.1x")).unwrap();
    std::os::unix::fs::symlink("../../../devices/y", aux.join("mlx5_core.eth.4")).unwrap();
    // A link leaving the sysfs root.
    std::os::unix::fs::symlink("/tmp", aux.join("mlx5_core.sf.9")).unwrap();

    let host = host::discover(&paths).unwrap();
    let names: Vec<&str> = host.aux_functions.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["mlx5_core.sf.4", "mlx5_core.sf.5", "mlx5_core.sf.6"]
    );
    let skipped = |name: &str| {
        host.skipped
            .iter()
            .find(|s| s.address == name)
            .unwrap_or_else(|| panic!("{name} not skipped: {:?}", host.skipped))
    };
    let garbled = skipped("mlx5_core.sf.7");
    assert!(
        garbled.file.ends_with("0000:af:00.0/mlx5_core.sf.7/sfnum"),
        "{garbled:?}"
    );
    assert!(garbled.reason.contains("ninety-one"), "{garbled:?}");
    let missing = skipped("mlx5_core.sf.8");
    assert!(
        missing.file.ends_with("mlx5_core.sf.8/sfnum"),
        "{missing:?}"
    );
    assert!(missing.reason.contains("missing"), "{missing:?}");
    let bad_name = skipped("mlx5_core.sf.1x");
    assert!(
        bad_name
            .file
            .ends_with("bus/auxiliary/devices/mlx5_core.sf.1x")
    );
    assert!(
        bad_name.reason.contains("not mlx5_core.sf.<number>"),
        "{bad_name:?}"
    );
    let outside = skipped("mlx5_core.sf.9");
    assert!(
        outside.reason.contains("outside the sysfs root"),
        "{outside:?}"
    );
    assert!(!host.skipped.iter().any(|s| s.address.contains("eth")));
    // 1 garbled VF of the sample + 4 SF entries.
    assert_eq!(host.skipped.len(), 5, "{:?}", host.skipped);
}

#[test]
fn aux_pools_select_by_parent_and_count_sfnum() {
    let n = sample();
    let all = s(&["mlx5_core.sf.4", "mlx5_core.sf.5", "mlx5_core.sf.6"]);
    let one = |extra: &str| -> Vec<String> {
        let p = pools_for(&n.host, &config(&[aux_resource("sf", extra)]));
        ids(&p, "nvidia.com/sf")
    };
    // vendors/devices/drivers are the parent's.
    assert_eq!(
        one(r#","vendors":["15b3"],"devices":["101d"],"drivers":["mlx5_core"]"#),
        all
    );
    assert_eq!(one(r#","drivers":["mlx5_core.sf"]"#), Vec::<String>::new());
    assert_eq!(one(r#","devices":["101e"]"#), Vec::<String>::new());
    // `#` ranges count sfnum, by parent netdev or parent address.
    assert_eq!(
        one(r#","pfNames":["ens3f0#89-90"]"#),
        s(&["mlx5_core.sf.5", "mlx5_core.sf.6"])
    );
    assert_eq!(
        one(r#","rootDevices":["0000:af:00.0#88"]"#),
        s(&["mlx5_core.sf.4"])
    );
    assert_eq!(
        one(r#","rootDevices":["0000:af:00.0#0-87"]"#),
        Vec::<String>::new()
    );
    assert_eq!(one(r#","pfNames":["ens1f0"]"#), Vec::<String>::new());
    assert_eq!(one(r#","pfNames":["ens3f0"]"#), all);
    // linkTypes: the SF's netdev; the lightweight SF falls back to the parent's.
    assert_eq!(one(r#","linkTypes":["ether"]"#), all);
    assert_eq!(one(r#","linkTypes":["infiniband"]"#), Vec::<String>::new());
    assert_eq!(
        one(r#","isRdma":true"#),
        s(&["mlx5_core.sf.4", "mlx5_core.sf.5"])
    );

    // Topology is the parent's NUMA node; netDevice pools never take SFs, nor aux pools PCI
    // functions; first resource in file order wins across both.
    let p = pools_for(
        &n.host,
        &config(&[
            r#"{"resourceName":"pci","selectors":{"vendors":["15b3"]}}"#.to_string(),
            aux_resource("first", r#","rootDevices":["0000:af:00.0#88"]"#),
            aux_resource("rest", ""),
        ]),
    );
    assert!(
        !ids(&p, "intel.com/pci")
            .iter()
            .any(|id| id.starts_with("mlx5_core"))
    );
    assert!(ids(&p, "intel.com/pci").contains(&"0000:af:00.0".to_string()));
    assert_eq!(ids(&p, "nvidia.com/first"), s(&["mlx5_core.sf.4"]));
    assert_eq!(
        ids(&p, "nvidia.com/rest"),
        s(&["mlx5_core.sf.5", "mlx5_core.sf.6"])
    );
    let dev = p
        .pool("nvidia.com/first")
        .unwrap()
        .device("mlx5_core.sf.4")
        .unwrap();
    assert_eq!(dev.numa_node, Some(1));
}

#[test]
fn sf_edits_match_the_sriov_plugin_and_add_counters() {
    let n = sample();
    let p = pools_for(
        &n.host,
        &config(&[aux_resource("sf_rdma", r#","isRdma":true"#)]),
    );
    let e = edits_for(&n, &p, "nvidia.com/sf_rdma", "mlx5_core.sf.4");
    assert_eq!(e.env["PCIDEVICE_NVIDIA_COM_SF_RDMA"], "mlx5_core.sf.4");
    assert_eq!(
        e.env["PCIDEVICE_NVIDIA_COM_SF_RDMA_INFO"],
        r#"{"mlx5_core.sf.4":{"generic":{"deviceID":"mlx5_core.sf.4"},"rdma":{"rdma_cm":"/dev/infiniband/rdma_cm","rdma_dev":"mlx5_20","uverbs":"/dev/infiniband/uverbs20"}}}"#
    );
    assert_eq!(
        e.env["NICPLUG_EAL_ARGS_NVIDIA_COM_SF_RDMA"],
        "-a auxiliary:mlx5_core.sf.4 --iova-mode=va"
    );
    assert_eq!(e.env.len(), 3);
    let nodes: Vec<(&str, Option<u32>, Option<u32>)> = e
        .devices
        .iter()
        .map(|d| (d.container_path.as_str(), d.major, d.minor))
        .collect();
    assert_eq!(
        nodes,
        [
            ("/dev/infiniband/uverbs20", Some(231), Some(212)),
            ("/dev/infiniband/rdma_cm", Some(10), Some(56)),
        ]
    );
    assert_eq!(
        e.devices[0].host_path,
        n.paths.dev_root.join("infiniband/uverbs20")
    );
    let port =
        "devices/pci0000:ae/0000:ae:00.0/0000:af:00.0/mlx5_core.sf.4/infiniband/mlx5_20/ports/1";
    assert_eq!(e.mounts.len(), 1);
    assert_eq!(e.mounts[0].container_path, format!("/sys/{port}"));
    assert_eq!(e.mounts[0].host_path, n.paths.sysfs_root.join(port));
    assert!(e.mounts[0].read_only);
    assert!(e.mounts[0].host_path.join("hw_counters").is_dir());

    // Two SFs: comma-joined, both in INFO and EAL args; the lightweight one gets nothing RDMA.
    let both = edits::container_edits(
        p.pool("nvidia.com/sf_rdma").unwrap(),
        &n.host,
        &n.paths,
        &s(&["mlx5_core.sf.5", "mlx5_core.sf.4"]),
    )
    .unwrap();
    assert_eq!(
        both.env["PCIDEVICE_NVIDIA_COM_SF_RDMA"],
        "mlx5_core.sf.5,mlx5_core.sf.4"
    );
    assert_eq!(
        both.env["NICPLUG_EAL_ARGS_NVIDIA_COM_SF_RDMA"],
        "-a auxiliary:mlx5_core.sf.5 -a auxiliary:mlx5_core.sf.4 --iova-mode=va"
    );
    assert_eq!(both.devices.len(), 3);
    assert_eq!(both.mounts.len(), 2);

    // Without isRdma (the SR-IOV plugin's default): no nodes, no mounts.
    let plain = pools_for(&n.host, &config(&[aux_resource("sf", "")]));
    let e = edits_for(&n, &plain, "nvidia.com/sf", "mlx5_core.sf.6");
    assert!(e.devices.is_empty() && e.mounts.is_empty());
    assert_eq!(
        e.env["PCIDEVICE_NVIDIA_COM_SF_INFO"],
        r#"{"mlx5_core.sf.6":{"generic":{"deviceID":"mlx5_core.sf.6"}}}"#
    );
    // An SF ID is unknown to a PCI pool and vice versa.
    let pci = pools_for(
        &n.host,
        r#"{"resourceList":[{"resourceName":"pf","selectors":{"pciAddresses":["0000:af:00.0"]}}]}"#,
    );
    assert!(
        edits::container_edits(
            pci.pool("intel.com/pf").unwrap(),
            &n.host,
            &n.paths,
            &s(&["mlx5_core.sf.4"])
        )
        .is_err()
    );
}

/// Exclusive mode: a PF (no VFs) with one RDMA SF, plus a PF with two RDMA VFs.
fn exclusive_host(state: &str) -> HostSpec {
    let moved = state == "during";
    // After the return the kernel handed out other uverbs numbers (lowest free, not guaranteed
    // the same).
    let (pf_uverbs, sf_uverbs, vf_uverbs) = match state {
        "after" => (19, 23, 4),
        _ => (18, 20, 2),
    };
    let yaml = format!(
        r#"
rdma_netns_mode: exclusive
rdma_cm: {{major: 10, minor: 56}}
functions:
  - address: "0000:af:00.0"
    bridge: "0000:ae:00.0"
    vendor: 15b3
    device: 101d
    driver: mlx5_core
    numa_node: 1
    netdev: {{name: ens3f0}}
    rdma: {{ibdev: mlx5_18, uverbs: {pf_uverbs}, hidden: {moved}}}
  - address: "0000:3b:00.0"
    bridge: "0000:3a:00.0"
    vendor: 15b3
    device: 101d
    driver: mlx5_core
    numa_node: 0
    netdev: {{name: ens1f0}}
    rdma: {{ibdev: mlx5_0, uverbs: 0}}
    sriov: {{total_vfs: 2, num_vfs: 2}}
    vf_template: {{rdma: {{first: 2, uverbs_first: {vf_uverbs}}}}}
    vfs:
      1: {{rdma_hidden: {moved}}}
"#
    );
    let mut spec = fixture::from_yaml(&yaml).unwrap();
    assert_eq!(spec.rdma_netns_mode, Some(NetnsMode::Exclusive));
    let mut sf = SfSpec::new(88, 4);
    sf.netdev = Some("en3f0pf0sf88".into());
    sf.rdma = Some(RdmaSpec {
        hidden: moved,
        umad: None,
        ..RdmaSpec::new("mlx5_20", sf_uverbs)
    });
    spec.functions[0].sfs.push(sf);
    spec
}

const EXCLUSIVE_CONFIG: &str = r#"{"resourceList":[
    {"resourceName":"vf","resourcePrefix":"nvidia.com",
     "selectors":{"devices":["101e"],"isRdma":true},"nicplug":{"rdmaDevices":["uverbs"]}},
    {"resourceName":"pf","resourcePrefix":"nvidia.com",
     "selectors":{"pciAddresses":["0000:af:00.0"],"isRdma":true},"nicplug":{"rdmaDevices":["uverbs"]}},
    {"resourceName":"sf","resourcePrefix":"nvidia.com","deviceType":"auxNetDevice",
     "selectors":{"auxTypes":["sf"],"isRdma":true},"nicplug":{"rdmaDevices":["uverbs"]}}]}"#;

#[test]
fn exclusive_mode_moved_devices_stay_pooled_and_edits_follow_current_numbers() {
    // (state, PF uverbs, SF uverbs, VF 1 uverbs, ibdevs visible)
    let states = [
        ("before", 18, 20, 3, true),
        ("during", 18, 20, 3, false),
        ("after", 19, 23, 5, true),
    ];
    for (state, pf_uverbs, sf_uverbs, vf_uverbs, visible) in states {
        let n = node(&exclusive_host(state));
        assert_eq!(n.host.rdma_netns_mode, host::RdmaNetnsMode::Exclusive);
        assert!(n.host.skipped.is_empty(), "{state}: {:?}", n.host.skipped);
        let sys = &n.paths.sysfs_root;
        if !visible {
            // The kernel's view of a moved device: empty infiniband/, no class entry, the
            // uverbs entry stays.
            let sf_dir = sys.join("devices/pci0000:ae/0000:ae:00.0/0000:af:00.0/mlx5_core.sf.4");
            assert_eq!(
                std::fs::read_dir(sf_dir.join("infiniband"))
                    .unwrap()
                    .count(),
                0
            );
            assert!(!sys.join("class/infiniband/mlx5_20").exists());
            assert!(
                sf_dir
                    .join(format!("infiniband_verbs/uverbs{sf_uverbs}/dev"))
                    .exists()
            );
            assert!(!sys.join("class/infiniband/mlx5_18").exists());
            assert!(!sys.join("class/infiniband/mlx5_3").exists());
        }

        // Pools keep the same IDs in every state.
        let p = pools_for(&n.host, EXCLUSIVE_CONFIG);
        assert_eq!(
            ids(&p, "nvidia.com/vf"),
            s(&["0000:3b:00.2", "0000:3b:00.3"]),
            "{state}"
        );
        assert_eq!(ids(&p, "nvidia.com/pf"), s(&["0000:af:00.0"]), "{state}");
        assert_eq!(ids(&p, "nvidia.com/sf"), s(&["mlx5_core.sf.4"]), "{state}");

        // Edits computed now hand out the current uverbs node; no counters mount in exclusive
        // mode; rdma_dev only while the ibdev is visible on the host.
        let cases = [
            ("nvidia.com/pf", "0000:af:00.0", pf_uverbs, "mlx5_18"),
            ("nvidia.com/sf", "mlx5_core.sf.4", sf_uverbs, "mlx5_20"),
            ("nvidia.com/vf", "0000:3b:00.3", vf_uverbs, "mlx5_3"),
        ];
        for (pool, id, uverbs, ibdev) in cases {
            let e = edits_for(&n, &p, pool, id);
            let node = format!("/dev/infiniband/uverbs{uverbs}");
            let paths: Vec<&str> = e
                .devices
                .iter()
                .map(|d| d.container_path.as_str())
                .collect();
            assert_eq!(paths, [node.as_str()], "{state} {id}");
            assert!(e.mounts.is_empty(), "{state} {id}: {:?}", e.mounts);
            let key = format!(
                "PCIDEVICE_NVIDIA_COM_{}_INFO",
                pool.rsplit('/').next().unwrap().to_ascii_uppercase()
            );
            let rdma = if visible {
                format!(r#"{{"rdma_dev":"{ibdev}","uverbs":"{node}"}}"#)
            } else {
                format!(r#"{{"uverbs":"{node}"}}"#)
            };
            assert_eq!(
                e.env[&key],
                format!(r#"{{"{id}":{{"generic":{{"deviceID":"{id}"}},"rdma":{rdma}}}}}"#),
                "{state} {id}"
            );
        }

        let json = serde_json::to_value(report::discover_report(&n.host, &p)).unwrap();
        assert_eq!(json["rdma_netns_mode"], "exclusive");
        assert!(report::discover_table(&n.host, &p).contains("RDMA netns mode: exclusive"));
    }
}

#[test]
fn fixture_writes_sfs_in_the_kernel_layout() {
    let n = sample();
    let sys = &n.paths.sysfs_root;
    let sf = sys.join("devices/pci0000:ae/0000:ae:00.0/0000:af:00.0/mlx5_core.sf.4");
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap();
    assert_eq!(
        canon(&sys.join("bus/auxiliary/devices/mlx5_core.sf.4")),
        canon(&sf)
    );
    assert_eq!(
        canon(&sys.join("bus/auxiliary/drivers/mlx5_core.sf/mlx5_core.sf.4")),
        canon(&sf)
    );
    assert_eq!(
        canon(&sf.join("driver")),
        canon(&sys.join("bus/auxiliary/drivers/mlx5_core.sf"))
    );
    assert_eq!(std::fs::read_to_string(sf.join("sfnum")).unwrap(), "88\n");
    assert_eq!(
        canon(&sys.join("class/net/en3f0pf0sf88")),
        canon(&sf.join("net/en3f0pf0sf88"))
    );
    assert_eq!(
        canon(&sys.join("class/infiniband/mlx5_20")),
        canon(&sf.join("infiniband/mlx5_20"))
    );
    assert_eq!(
        std::fs::read_to_string(sys.join("class/infiniband_verbs/uverbs20/dev")).unwrap(),
        "231:212\n"
    );
    assert!(n.paths.dev_root.join("infiniband/uverbs20").exists());
    // The lightweight SF has neither child.
    let lw = sf.with_file_name("mlx5_core.sf.6");
    assert!(!lw.join("net").exists() && !lw.join("infiniband").exists());

    let err = fixture::from_yaml(
        r#"functions: [{address: "0000:af:00.0", vendor: 15b3, device: 101d,
            sfs: [{sfnum: 1, index: 2, netdev: x, lightweight: true}]}]"#,
    )
    .and_then(|spec| fixture::materialize(&spec, tempdir().path()).map(|_| ()))
    .unwrap_err()
    .to_string();
    assert!(err.contains("lightweight"), "{err}");
    let err = fixture::from_yaml(
        r#"functions: [{address: "0000:af:00.0", vendor: 15b3, device: 101d,
            sfs: [{sfnum: 1, index: 2}, {sfnum: 3, index: 2}]}]"#,
    )
    .and_then(|spec| fixture::materialize(&spec, tempdir().path()).map(|_| ()))
    .unwrap_err()
    .to_string();
    assert!(err.contains("mlx5_core.sf.2 used twice"), "{err}");
}
