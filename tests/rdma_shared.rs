//! RDMA shared mode: the RDMA shared device plugin's configs (its README example, the
//! network-operator's) load unchanged and advertise what that plugin advertises on a fixture
//! host carrying those HCAs; its invalid cases are refused; allocations carry every selected
//! HCA's nodes; a missing `issm` loses nothing.

mod common;

use common::{Node, node, s};
use nicplug::config::{ConfigError, Format, parse_config, parse_config_file};
use nicplug::edits;
use nicplug::fixture;
use nicplug::health::LinkStates;
use nicplug::host;
use nicplug::inventory::PoolView;
use nicplug::pools::{self, Placement, Pools};
use std::path::Path;
use std::sync::Arc;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rdma-shared");

fn shared_node() -> Node {
    node(&fixture::load(&Path::new(DATA).join("shared-node.yaml")).unwrap())
}

fn pools_from(n: &Node, file: &str) -> Pools {
    let config = parse_config_file(&Path::new(DATA).join(file)).unwrap();
    pools::build(&n.host, &config, "intel.com")
}

fn ids(p: &Pools, name: &str) -> Vec<String> {
    p.pool(name)
        .unwrap()
        .devices
        .iter()
        .map(|d| d.id.clone())
        .collect()
}

fn members(p: &Pools, name: &str) -> Vec<String> {
    p.pool(name)
        .unwrap()
        .shared
        .as_ref()
        .unwrap()
        .members
        .clone()
}

fn numbered(n: u32) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

#[test]
fn readme_example_advertises_what_the_shared_plugin_does() {
    let n = shared_node();
    let p = pools_from(&n, "readme-example.json");
    // `devices` is the deprecated spelling of `ifNames`; the default prefix is `rdma`.
    assert_eq!(ids(&p, "rdma/hca_shared_devices_a"), numbered(1000));
    assert_eq!(
        members(&p, "rdma/hca_shared_devices_a"),
        s(&["0000:03:00.0", "0000:03:00.1"])
    );
    assert_eq!(ids(&p, "rdma/hca_shared_devices_b"), numbered(500));
    assert_eq!(
        members(&p, "rdma/hca_shared_devices_b"),
        s(&["0000:04:00.0", "0000:04:00.1"])
    );
    // No topology, as that plugin gives none.
    assert!(
        p.pool("rdma/hca_shared_devices_a")
            .unwrap()
            .devices
            .iter()
            .all(|d| d.numa_node.is_none())
    );
}

#[test]
fn network_operator_example_advertises_63_ids_over_both_connectx6_ports() {
    let n = shared_node();
    let p = pools_from(&n, "network-operator-example.json");
    assert_eq!(ids(&p, "rdma/rdma_shared_device_a"), numbered(63));
    assert_eq!(
        members(&p, "rdma/rdma_shared_device_a"),
        s(&["0000:81:00.0", "0000:81:00.1"])
    );
    let config = parse_config_file(&Path::new(DATA).join("periodic-interval.json")).unwrap();
    assert_eq!(config.periodic_update_interval, Some(300));
    let p = pools::build(&n.host, &config, "intel.com");
    assert_eq!(
        members(&p, "rdma/rdma_shared_device_a"),
        s(&["0000:81:00.0"])
    );
}

#[test]
fn a_pool_without_hcas_advertises_nothing() {
    let n = shared_node();
    let config = parse_config(
        r#"{"configList": [{"resourceName": "none", "rdmaHcaMax": 10, "selectors": {"ifNames": ["nosuch0"]}}]}"#,
        Format::Json,
    )
    .unwrap();
    let p = pools::build(&n.host, &config, "intel.com");
    assert!(ids(&p, "rdma/none").is_empty());
}

#[test]
fn invalid_shared_configs_are_refused_naming_path_rule_and_fix() {
    let problems = |text: &str| match parse_config(text, Format::Json) {
        Err(ConfigError::Invalid { problems }) => problems
            .iter()
            .map(|p| format!("{}: {}", p.path, p.rule))
            .collect::<Vec<_>>(),
        other => panic!("expected problems, got {other:?}"),
    };
    let one = |text: &str, path: &str, rule_part: &str| {
        let got = problems(text);
        assert!(
            got.iter()
                .any(|g| g.starts_with(path) && g.contains(rule_part)),
            "{text}: {got:?}"
        );
    };
    one(
        r#"{"configList": [{"resourceName": "a-b", "rdmaHcaMax": 1, "devices": ["ib0"]}]}"#,
        "configList[0].resourceName",
        "letters, digits and '_'",
    );
    one(
        r#"{"configList": [{"resourceName": "a", "rdmaHcaMax": -1, "devices": ["ib0"]}]}"#,
        "configList[0].rdmaHcaMax",
        "negative",
    );
    one(
        r#"{"configList": [{"resourceName": "a", "rdmaHcaMax": 1}]}"#,
        "configList[0].selectors",
        "neither",
    );
    one(
        r#"{"configList": [{"resourceName": "a", "rdmaHcaMax": 1, "devices": ["ib0"], "selectors": {"vendors": ["15b3"]}}]}"#,
        "configList[0].devices",
        "together with",
    );
    one(
        r#"{"configList": [{"resourceName": "a", "devices": ["ib0"]}, {"resourceName": "a", "devices": ["ib1"]}]}"#,
        "configList[1].resourceName",
        "already used",
    );
    one(
        r#"{"periodicUpdateInterval": -1, "configList": [{"resourceName": "a", "devices": ["ib0"]}]}"#,
        "periodicUpdateInterval",
        "negative",
    );
    one(
        r#"{"configList": [{"resourceName": "a", "selectors": {"ifName": ["ib0"]}}]}"#,
        "configList[0].selectors.ifName",
        "not a selector",
    );
    one(
        r#"{"configList": [{"resourceName": "a", "resourcePrefix": "Bad_Prefix", "devices": ["ib0"]}]}"#,
        "configList[0].resourcePrefix",
        "DNS subdomain",
    );
    one(
        r#"{"resourceList": [{"resourceName": "a", "resourcePrefix": "rdma", "selectors": {}}], "configList": [{"resourceName": "a", "devices": ["ib0"]}]}"#,
        "configList[0].resourceName",
        "resourceList[0]",
    );
    // Every message says how to fix it.
    let err = parse_config(
        r#"{"configList": [{"resourceName": "a", "rdmaHcaMax": "7", "devices": ["ib0"]}]}"#,
        Format::Json,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("configList[0].rdmaHcaMax") && err.contains("fix:"),
        "{err}"
    );
}

#[test]
fn exclusive_pools_take_a_function_first_and_it_is_never_in_both() {
    let n = shared_node();
    let config = parse_config(
        r#"{"resourceList": [{"resourceName": "cx6_pf", "resourcePrefix": "nvidia.com",
              "selectors": {"pciAddresses": ["0000:81:00.1"], "isRdma": true}}],
            "configList": [{"resourceName": "rdma_shared_device_a", "rdmaHcaMax": 63,
              "selectors": {"vendors": ["15b3"], "deviceIDs": ["101b"]}}]}"#,
        Format::Json,
    )
    .unwrap();
    let p = pools::build(&n.host, &config, "intel.com");
    assert_eq!(ids(&p, "nvidia.com/cx6_pf"), s(&["0000:81:00.1"]));
    assert_eq!(
        members(&p, "rdma/rdma_shared_device_a"),
        s(&["0000:81:00.0"])
    );
    assert_eq!(
        p.placements["0000:81:00.1"],
        Placement::Pool {
            resource: "nvidia.com/cx6_pf".into()
        }
    );
    assert_eq!(
        p.placements["0000:81:00.0"],
        Placement::Pool {
            resource: "rdma/rdma_shared_device_a".into()
        }
    );
}

#[test]
fn every_id_gets_every_hca_and_the_same_nodes() {
    let n = shared_node();
    let p = pools_from(&n, "network-operator-example.json");
    let pool = p.pool("rdma/rdma_shared_device_a").unwrap();
    let a = edits::container_edits(pool, &n.host, &n.paths, &s(&["0"])).unwrap();
    let b = edits::container_edits(pool, &n.host, &n.paths, &s(&["41", "7"])).unwrap();
    assert_eq!(a, b, "which IDs were given makes no difference");
    let nodes: Vec<&str> = a
        .devices
        .iter()
        .map(|d| d.container_path.as_str())
        .collect();
    assert_eq!(
        nodes,
        [
            "/dev/infiniband/uverbs4",
            "/dev/infiniband/rdma_cm",
            "/dev/infiniband/umad4",
            "/dev/infiniband/issm4",
            "/dev/infiniband/uverbs5",
            "/dev/infiniband/umad5",
            "/dev/infiniband/issm5",
        ]
    );
    assert!(
        a.devices
            .iter()
            .all(|d| d.host_path.starts_with(&n.paths.dev_root))
    );
    // The counters of both HCAs' ports, read-only.
    assert_eq!(a.mounts.len(), 2);
    assert!(a.mounts.iter().all(|m| m.read_only));
    assert!(
        a.mounts[0]
            .container_path
            .ends_with("/0000:81:00.0/infiniband/mlx5_4/ports/1")
    );
    assert_eq!(
        a.env["NICPLUG_RDMA_IBDEVS_RDMA_RDMA_SHARED_DEVICE_A"],
        "mlx5_4,mlx5_5"
    );
    assert_eq!(
        a.env["NICPLUG_RDMA_PCI_RDMA_RDMA_SHARED_DEVICE_A"],
        "0000:81:00.0,0000:81:00.1"
    );
    assert!(
        edits::container_edits(pool, &n.host, &n.paths, &s(&["63"])).is_err(),
        "IDs past rdmaHcaMax are refused"
    );
}

#[test]
fn a_missing_issm_or_umad_loses_nothing_else() {
    let n = shared_node();
    // Take issm4 away from the host as a kernel without it would: class entry and node.
    let mad = n
        .paths
        .sysfs_root
        .join("devices/pci0000:80/0000:80:01.0/0000:81:00.0/infiniband_mad");
    let mad = if mad.exists() {
        mad
    } else {
        std::fs::canonicalize(n.paths.sysfs_root.join("bus/pci/devices/0000:81:00.0"))
            .unwrap()
            .join("infiniband_mad")
    };
    std::fs::remove_dir_all(mad.join("issm4")).unwrap();
    let _ = std::fs::remove_file(n.paths.sysfs_root.join("class/infiniband_mad/issm4"));
    let host = host::discover(&n.paths).unwrap();
    let f = host.function("0000:81:00.0").unwrap();
    assert!(
        f.rdma.as_ref().unwrap().issm.is_empty(),
        "the fixture lost issm4"
    );

    let config = parse_config_file(&Path::new(DATA).join("network-operator-example.json")).unwrap();
    let p = pools::build(&host, &config, "intel.com");
    let pool = p.pool("rdma/rdma_shared_device_a").unwrap();
    assert_eq!(
        pool.shared.as_ref().unwrap().members.len(),
        2,
        "no HCA vanished"
    );
    assert_eq!(pool.devices.len(), 63);
    let e = edits::container_edits(pool, &host, &n.paths, &s(&["0"])).unwrap();
    let nodes: Vec<&str> = e
        .devices
        .iter()
        .map(|d| d.container_path.as_str())
        .collect();
    assert!(!nodes.contains(&"/dev/infiniband/issm4"));
    for want in ["uverbs4", "umad4", "uverbs5", "umad5", "issm5", "rdma_cm"] {
        assert!(
            nodes.contains(&format!("/dev/infiniband/{want}").as_str()),
            "{want}: {nodes:?}"
        );
    }
    assert_eq!(
        edits::shared_missing_nodes(pool, &host),
        vec![("mlx5_4".to_string(), "issm")]
    );
}

#[test]
fn ids_are_healthy_while_one_hca_is() {
    let n = shared_node();
    let p = pools_from(&n, "network-operator-example.json");
    let pool = p.pool("rdma/rdma_shared_device_a").unwrap().clone();
    let host = Arc::new(n.host.clone());
    let paths = Arc::new(n.paths.clone());
    let view = PoolView::new(
        pool.clone(),
        host.clone(),
        paths.clone(),
        &LinkStates::new(),
    );
    assert!(view.advertised().iter().all(|d| d.healthy));

    // One uplink without carrier: still usable through the other.
    let mut links = LinkStates::new();
    let down = nicplug::health::LiveLink {
        admin_up: true,
        carrier: false,
        vfs: None,
    };
    links.insert("ens1f0".into(), down.clone());
    let view = PoolView::new(pool.clone(), host.clone(), paths.clone(), &links);
    assert!(view.advertised().iter().all(|d| d.healthy));
    assert!(view.allocate(&s(&["3"])).is_ok());

    // Both down: every ID Unhealthy, and Allocate refuses.
    links.insert("ens1f1".into(), down);
    let view = PoolView::new(pool, host, paths, &links);
    assert_eq!(view.advertised().len(), 63);
    assert!(view.advertised().iter().all(|d| !d.healthy));
    assert!(view.allocate(&s(&["3"])).is_err());
}

#[test]
fn the_shared_plugins_command_line_spellings() {
    let bin = env!("CARGO_BIN_EXE_nicplug");
    for flag in ["-version", "--version"] {
        let out = std::process::Command::new(bin).arg(flag).output().unwrap();
        assert!(out.status.success(), "{flag}");
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("nicplug "),
            "{flag}"
        );
    }
    // `--config-file` names a configList file as well as a resourceList one.
    let out = std::process::Command::new(bin)
        .args(["config", "check"])
        .arg(Path::new(DATA).join("readme-example.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok  rdma/hca_shared_devices_a  shared RDMA  rdmaHcaMax=1000"),
        "{text}"
    );
    assert!(text.contains("2 resource(s), valid"), "{text}");
}

#[test]
fn identity_rules_cover_shared_pools() {
    let dir = Path::new(nicplug::identity::DEFAULT_PLUGIN_DIR);
    for file in ["readme-example.json", "network-operator-example.json"] {
        let config = parse_config_file(&Path::new(DATA).join(file)).unwrap();
        nicplug::identity::check(&config, "intel.com", dir).unwrap();
    }
    // Names differing only in case share their variables: refused, naming the configList entry.
    let config = parse_config(
        r#"{"configList": [{"resourceName": "A", "devices": ["ib0"]},
                           {"resourceName": "a", "devices": ["ib1"]}]}"#,
        Format::Json,
    )
    .unwrap();
    let err = nicplug::identity::check(&config, "intel.com", dir)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("configList[1].resourceName") && err.contains("NICPLUG_RDMA_IBDEVS_RDMA_A"),
        "{err}"
    );
}
