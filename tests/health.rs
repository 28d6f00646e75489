//! The health policy on the sample node: what each device's verdict is, and what the pools
//! advertise, when VFs' own links are down (as every free VF's is on a real node), when a PF
//! loses its carrier, when a VF is disabled through its PF, under the strict rule.

mod common;

use common::{Node, node, pools_for, sample};
use nicplug::config::HealthRule;
use nicplug::fixture::{self, PortState, VfPatch};
use nicplug::health::{LinkStates, LiveLink, Reason, Verdict, VfLinkState, verdict};
use nicplug::inventory::PoolView;
use nicplug::pools::Pools;
use nicplug::report;
use std::collections::BTreeMap;
use std::sync::Arc;

const VF_POOL: &str = "nvidia.com/cx6dx_vf";
const PF_POOL: &str = "nvidia.com/cx6dx_pf";
const PF0_VFS: [&str; 8] = [
    "0000:3b:00.2",
    "0000:3b:00.3",
    "0000:3b:00.4",
    "0000:3b:00.5",
    "0000:3b:00.6",
    "0000:3b:00.7",
    "0000:3b:01.0",
    "0000:3b:01.1",
];

fn sample_pools(n: &Node) -> Pools {
    pools_for(&n.host, fixture::sample_config())
}

/// Every pool's advertised devices as ID -> (healthy, reason), through the daemon's own view.
fn advertised(n: &Node, pools: &Pools, links: &LinkStates) -> BTreeMap<String, (bool, String)> {
    let host = Arc::new(n.host.clone());
    let paths = Arc::new(n.paths.clone());
    let mut out = BTreeMap::new();
    for pool in &pools.pools {
        let view = PoolView::new(pool.clone(), host.clone(), paths.clone(), links);
        for a in view.advertised() {
            let why = view.reason(&a.id).unwrap().to_string();
            out.insert(a.id, (a.healthy, why));
        }
    }
    out
}

fn unhealthy(adv: &BTreeMap<String, (bool, String)>) -> BTreeMap<&str, &str> {
    adv.iter()
        .filter(|(_, (ok, _))| !ok)
        .map(|(id, (_, why))| (id.as_str(), why.as_str()))
        .collect()
}

fn live(admin_up: bool, carrier: bool) -> LiveLink {
    LiveLink {
        admin_up,
        carrier,
        vfs: None,
    }
}

/// The sample node with every VF's netdev administratively down and its RoCE port DOWN, as on
/// a node where no pod holds a VF yet.
fn all_vfs_down() -> Node {
    let mut spec = fixture::sample_node();
    for f in &mut spec.functions {
        let num_vfs = f.sriov.as_ref().map_or(0, |s| s.num_vfs);
        let mellanox = f.vendor.0 == 0x15b3;
        for i in 0..num_vfs {
            let patch: &mut VfPatch = f.vfs.entry(i).or_default();
            patch.operstate = Some("down".into());
            if mellanox {
                patch.port_state = Some(PortState("1: DOWN".into()));
            }
        }
    }
    node(&spec)
}

#[test]
fn every_vf_down_still_advertises_every_vf_healthy() {
    let n = all_vfs_down();
    // The fixture is what the test claims: every VF's netdev down, every RoCE port DOWN.
    let vfs: Vec<_> = n.host.functions.iter().filter(|f| f.is_vf()).collect();
    assert_eq!(vfs.len(), 17);
    for f in &vfs {
        assert!(f.netdevs.iter().all(|d| d.operstate == "down"), "{f:?}");
        let ports = f.rdma.iter().flat_map(|r| &r.ports);
        assert!(ports.clone().all(|p| p.state == "DOWN"), "{f:?}");
    }

    let pools = sample_pools(&n);
    let adv = advertised(&n, &pools, &LinkStates::new());
    assert_eq!(unhealthy(&adv), BTreeMap::new());
    let vf_pool = &pools.pool(VF_POOL).unwrap().devices;
    assert_eq!(vf_pool.len(), 15, "every readable VF is offered");
    for d in vf_pool {
        assert_eq!(adv[&d.id].1, "own link down: ignored", "{}", d.id);
    }
    // The same with rtnetlink saying so for each VF netdev in the daemon's namespace.
    let links: LinkStates = vfs
        .iter()
        .flat_map(|f| &f.netdevs)
        .map(|d| (d.name.clone(), live(false, false)))
        .collect();
    assert_eq!(unhealthy(&advertised(&n, &pools, &links)), BTreeMap::new());
    // discover says the same.
    let table = report::discover_table(&n.host, &pools);
    let line = table
        .lines()
        .find(|l| l.starts_with("0000:3b:00.4"))
        .unwrap();
    assert!(line.contains("healthy (own link down: ignored)"), "{line}");
}

#[test]
fn a_pf_losing_carrier_makes_exactly_its_vfs_unhealthy() {
    let n = sample();
    let pools = sample_pools(&n);
    assert_eq!(
        unhealthy(&advertised(&n, &pools, &LinkStates::new())),
        BTreeMap::new()
    );
    let want: BTreeMap<&str, &str> = PF0_VFS
        .iter()
        .map(|v| (*v, "PF ens1f0 no carrier"))
        .collect();
    // Live: rtnetlink reports ens1f0 up without carrier (the sysfs files still say up).
    let links = LinkStates::from([("ens1f0".to_string(), live(true, false))]);
    assert_eq!(unhealthy(&advertised(&n, &pools, &links)), want);
    // Administratively down: the same VFs, another reason.
    let links = LinkStates::from([("ens1f0".to_string(), live(false, false))]);
    let got = advertised(&n, &pools, &links);
    assert_eq!(
        unhealthy(&got).keys().copied().collect::<Vec<_>>(),
        PF0_VFS.to_vec()
    );
    assert_eq!(got[PF0_VFS[0]].1, "PF ens1f0 administratively down");
    // Carrier back.
    let links = LinkStates::from([("ens1f0".to_string(), live(true, true))]);
    assert_eq!(unhealthy(&advertised(&n, &pools, &links)), BTreeMap::new());
}

#[test]
fn the_snapshot_tells_the_uplink_without_rtnetlink() {
    let n = sample();
    let pf0 = n.host.function("0000:3b:00.0").unwrap();
    let net = n.paths.sysfs_root.join(&pf0.sysfs_dir).join("net/ens1f0");
    let port = n
        .paths
        .sysfs_root
        .join(&pf0.rdma.as_ref().unwrap().ports[0].sysfs_dir);
    let rediscover = || {
        let host = nicplug::host::discover(&n.paths).unwrap();
        Node {
            _tmp: common::tempdir(),
            paths: n.paths.clone(),
            host,
        }
    };

    // Carrier lost: `carrier` 0, `operstate` down.
    std::fs::write(net.join("carrier"), "0\n").unwrap();
    std::fs::write(net.join("operstate"), "down\n").unwrap();
    let m = rediscover();
    let pools = sample_pools(&m);
    let want: BTreeMap<&str, &str> = PF0_VFS
        .iter()
        .map(|v| (*v, "PF ens1f0 no carrier"))
        .collect();
    assert_eq!(unhealthy(&advertised(&m, &pools, &LinkStates::new())), want);
    let table = report::discover_table(&m.host, &pools);
    for vf in PF0_VFS {
        let line = table.lines().find(|l| l.starts_with(vf)).unwrap();
        assert!(line.contains("unhealthy: PF ens1f0 no carrier"), "{line}");
    }
    // Live state wins over the snapshot: rtnetlink says the carrier is back.
    let links = LinkStates::from([("ens1f0".to_string(), live(true, true))]);
    assert_eq!(unhealthy(&advertised(&m, &pools, &links)), BTreeMap::new());

    // Administratively down: the kernel refuses to read `carrier` (here: no such file).
    std::fs::remove_file(net.join("carrier")).unwrap();
    let m = rediscover();
    let f = m.host.function("0000:3b:00.0").unwrap();
    assert_eq!(
        f.netdevs[0].carrier, None,
        "an unreadable carrier skips nothing"
    );
    let got = advertised(&m, &sample_pools(&m), &LinkStates::new());
    assert_eq!(
        got[PF0_VFS[3]],
        (false, "PF ens1f0 administratively down".into())
    );

    // The netdev up, the PF's port physically disabled: the port's phys_state decides.
    std::fs::write(net.join("carrier"), "1\n").unwrap();
    std::fs::write(net.join("operstate"), "up\n").unwrap();
    std::fs::write(port.join("phys_state"), "3: Disabled\n").unwrap();
    let m = rediscover();
    let f = m.host.function("0000:3b:00.0").unwrap();
    assert_eq!(
        f.rdma.as_ref().unwrap().ports[0].phys_state.as_deref(),
        Some("Disabled")
    );
    let got = advertised(&m, &sample_pools(&m), &LinkStates::new());
    assert_eq!(
        unhealthy(&got)
            .into_values()
            .collect::<std::collections::BTreeSet<_>>(),
        ["PF port mlx5_0/1 Disabled"].into()
    );
    assert_eq!(unhealthy(&got).len(), 8);
}

#[test]
fn a_vf_disabled_through_its_pf_is_unhealthy_and_enabled_one_survives_the_uplink() {
    let n = sample();
    let pools = sample_pools(&n);
    let pf = |carrier, vfs: &[(u32, VfLinkState)]| {
        let mut l = live(true, carrier);
        l.vfs = Some(vfs.iter().copied().collect());
        LinkStates::from([("ens1f0".to_string(), l)])
    };
    let links = pf(
        true,
        &[
            (0, VfLinkState::Auto),
            (3, VfLinkState::Disable),
            (5, VfLinkState::Enable),
        ],
    );
    assert_eq!(
        unhealthy(&advertised(&n, &pools, &links)),
        BTreeMap::from([("0000:3b:00.5", "VF 3 disabled on PF ens1f0")])
    );
    // Link forced up: the VF reaches the other VFs through the embedded switch without carrier.
    let links = pf(
        false,
        &[(3, VfLinkState::Disable), (5, VfLinkState::Enable)],
    );
    let got = advertised(&n, &pools, &links);
    let bad = unhealthy(&got);
    assert_eq!(bad.len(), 7, "{bad:?}");
    assert_eq!(bad["0000:3b:00.5"], "VF 3 disabled on PF ens1f0");
    assert_eq!(bad["0000:3b:00.2"], "PF ens1f0 no carrier");
    assert_eq!(
        got["0000:3b:00.7"],
        (true, "VF 5 link forced up on PF ens1f0".into())
    );
}

#[test]
fn the_strict_rule_counts_the_devices_own_link() {
    let n = sample();
    let strict = fixture::sample_config().replace(
        r#""isRdma": true
      }
    },"#,
        r#""isRdma": true
      },
      "nicplug": {"health": "strict"}
    },"#,
    );
    assert_ne!(
        strict,
        fixture::sample_config(),
        "the VF pool got the strict rule"
    );
    let pools = pools_for(&n.host, &strict);
    assert_eq!(
        pools.pool(VF_POOL).unwrap().config.nicplug.health,
        HealthRule::Strict
    );
    // 3b:00.7 (ens1f0v5): netdev down, RoCE port DOWN.
    assert_eq!(
        unhealthy(&advertised(&n, &pools, &LinkStates::new())),
        BTreeMap::from([("0000:3b:00.7", "own netdev ens1f0v5 down")])
    );
    // rtnetlink says it is up: its RoCE port follows it, whatever the older snapshot says.
    let links = LinkStates::from([("ens1f0v5".to_string(), live(true, true))]);
    assert_eq!(unhealthy(&advertised(&n, &pools, &links)), BTreeMap::new());
    // Down again live, and another VF's too.
    let links = LinkStates::from([
        ("ens1f0v5".to_string(), live(true, false)),
        ("ens1f1v2".to_string(), live(false, false)),
    ]);
    assert_eq!(
        unhealthy(&advertised(&n, &pools, &links)),
        BTreeMap::from([
            ("0000:3b:00.7", "own netdev ens1f0v5 down"),
            ("0000:3b:01.4", "own netdev ens1f1v2 down"),
        ])
    );
    // The uplink still counts first.
    let links = LinkStates::from([("ens1f0".to_string(), live(true, false))]);
    assert_eq!(unhealthy(&advertised(&n, &pools, &links)).len(), 8);
}

#[test]
fn a_pf_offered_itself_and_its_sfs_follow_its_own_carrier() {
    let n = sample();
    let pools = sample_pools(&n);
    let links = LinkStates::from([("ens3f0".to_string(), live(true, false))]);
    assert_eq!(
        unhealthy(&advertised(&n, &pools, &links)),
        BTreeMap::from([("0000:af:00.0", "PF ens3f0 no carrier")])
    );
    assert_eq!(pools.pool(PF_POOL).unwrap().devices.len(), 1);
    // Its SFs (in no pool of the sample config) follow their parent.
    for sf in ["mlx5_core.sf.4", "mlx5_core.sf.5", "mlx5_core.sf.6"] {
        let d = n.host.device(sf).unwrap();
        assert_eq!(
            verdict(d, &n.host, &links, HealthRule::Uplink).to_string(),
            "unhealthy: PF ens3f0 no carrier",
            "{sf}"
        );
        assert!(verdict(d, &n.host, &LinkStates::new(), HealthRule::Uplink).healthy);
    }
}

#[test]
fn a_function_without_driver_is_unhealthy() {
    let mut spec = fixture::sample_node();
    spec.functions[0].vfs.entry(2).or_default().driver = Some(String::new());
    let n = node(&spec);
    let d = n.host.device("0000:3b:00.4").unwrap();
    assert_eq!(d.driver(), None);
    let v = verdict(d, &n.host, &LinkStates::new(), HealthRule::Uplink);
    assert_eq!(
        v,
        Verdict {
            healthy: false,
            reason: Reason::NoDriver
        }
    );
    assert_eq!(v.to_string(), "unhealthy: no driver bound");
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"healthy": false, "reason": "no driver bound"})
    );
}
