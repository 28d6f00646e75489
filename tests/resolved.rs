//! The front-end-neutral path: devices resolved into plain [`EditOptions`] give, through
//! `container_edits_for`, exactly what the device plugin's pool path gives, for every device of
//! the sample node and of the class fixtures; options written by hand (as a DRA claim's
//! parameters would be) give the same as the config's resolution.

mod common;

use common::{Node, node, pools_for, s};
use nicplug::cdi;
use nicplug::device_id::DeviceId;
use nicplug::edits::{self, EditError};
use nicplug::fixture;
use nicplug::pools::{Pool, Pools};
use nicplug::resolved::{EditOptions, EnvBase, RdmaCharDev, ResolvedDevice, VdpaType};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

fn class_node(name: &str) -> Node {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/classes")
        .join(name);
    node(&fixture::load(&path).unwrap())
}

/// Every option a config can set, on the sample node: SFs (`auxNetDevice`), `additionalInfo`,
/// `needVhostNet`, `rdmaDevices`, no counters mount, no EAL arguments.
const SAMPLE_RICH: &str = r#"{"resourceList":[
  {"resourceName":"sf","resourcePrefix":"nvidia.com","deviceType":"auxNetDevice",
   "selectors":[{"auxTypes":["sf"],"isRdma":true},{"auxTypes":["sf"]}],
   "additionalInfo":{"*":{"a":"<b>"},"mlx5_core.sf.4":{"a":"own"}}},
  {"resourceName":"vf_even","resourcePrefix":"example.com",
   "selectors":[{"pfNames":["ens1f0#0-3"],"isRdma":true,"needVhostNet":true}],
   "nicplug":{"countersMount":false,"ealArgs":false}},
  {"resourceName":"vf_rest","selectors":[{"vendors":["15b3"],"devices":["101e"]},{"isRdma":true}],
   "nicplug":{"rdmaDevices":["uverbs","umad"]}},
  {"resourceName":"rest","selectors":{}}]}"#;

const VDPA_POOLS: &str = r#"{"resourceList":[
    {"resourceName":"vhost","resourcePrefix":"nvidia.com","selectors":{"vendors":["15b3"],"vdpaType":"vhost"}},
    {"resourceName":"virtio","resourcePrefix":"nvidia.com","selectors":{"vendors":["15b3"],"vdpaType":"virtio"}},
    {"resourceName":"plain","resourcePrefix":"nvidia.com","selectors":{"devices":["101e"]}}]}"#;

const ANY: &str = r#"{"resourceList":[{"resourceName":"any","selectors":{}}]}"#;

/// The neutral rendering of a pool's devices: IDs parsed into `DeviceId`, options taken as
/// resolved, no `Pool` past this point.
fn resolved(pool: &Pool, ids: &[&str]) -> Vec<ResolvedDevice> {
    ids.iter()
        .map(|id| ResolvedDevice {
            id: DeviceId::parse(id).unwrap(),
            options: Arc::clone(&pool.device(id).unwrap().options),
        })
        .collect()
}

/// For every exclusive pool: each device alone, and all of them in one request (reversed, so
/// order matters), give the same edits and CDI variables both ways. Returns how many devices
/// it compared.
fn same_both_ways(n: &Node, pools: &Pools) -> usize {
    let mut compared = 0;
    for pool in pools.pools.iter().filter(|p| p.shared.is_none()) {
        let base = EnvBase::new(&pool.prefix, &pool.resource_name);
        assert_eq!(base, pool.env_base());
        let all: Vec<&str> = pool.devices.iter().rev().map(|d| d.id.as_str()).collect();
        for id in &all {
            let by_pool = edits::container_edits(pool, &n.host, &n.paths, &s(&[id]));
            let neutral =
                edits::container_edits_for(&resolved(pool, &[id]), &base, &n.host, &n.paths);
            assert_eq!(by_pool, neutral, "{} {id}", pool.name);
            let one = &resolved(pool, &[id])[0];
            assert_eq!(
                cdi::device_env(pool, &n.host, id),
                cdi::device_env_for(&base, one, &n.host),
                "{} {id}",
                pool.name
            );
            compared += 1;
        }
        if !all.is_empty() {
            let ids: Vec<String> = all.iter().map(|x| x.to_string()).collect();
            assert_eq!(
                edits::container_edits(pool, &n.host, &n.paths, &ids),
                edits::container_edits_for(&resolved(pool, &all), &base, &n.host, &n.paths),
                "{}",
                pool.name
            );
            assert_eq!(
                edits::eal_args(pool, &n.host, &ids),
                edits::eal_args_for(&resolved(pool, &all), &n.host)
            );
        }
    }
    compared
}

#[test]
fn neutral_path_matches_the_pool_path_on_the_sample_node() {
    let n = common::sample();
    let sample = same_both_ways(&n, &pools_for(&n.host, fixture::sample_config()));
    let rich = same_both_ways(&n, &pools_for(&n.host, SAMPLE_RICH));
    // Every offered function of the sample node, under both configs.
    let offered = pools_for(&n.host, SAMPLE_RICH)
        .pools
        .iter()
        .map(|p| p.devices.len())
        .sum::<usize>();
    assert_eq!(rich, offered);
    assert!(sample >= 17 && rich > sample, "{sample} {rich}");
}

#[test]
fn neutral_path_matches_the_pool_path_on_the_class_fixtures() {
    for (fixture_name, config) in [
        ("noiommu.yaml", ANY),
        ("uio.yaml", ANY),
        ("switchdev-vdpa.yaml", VDPA_POOLS),
        ("switchdev-vdpa.yaml", ANY),
    ] {
        let n = class_node(fixture_name);
        let compared = same_both_ways(&n, &pools_for(&n.host, config));
        assert!(compared > 0, "{fixture_name}: nothing compared");
    }
}

#[test]
fn shared_pools_resolve_to_the_same_edits() {
    let n = common::sample();
    let pools = pools_for(
        &n.host,
        r#"{"configList":[{"resourceName":"hca","rdmaHcaMax":3,"selectors":{"vendors":["15b3"]}}]}"#,
    );
    let pool = pools.pool("rdma/hca").unwrap();
    let members = &pool.shared.as_ref().unwrap().members;
    assert!(!members.is_empty());
    // One set of options for every ID.
    assert!(Arc::ptr_eq(
        &pool.devices[0].options,
        &pool.devices[2].options
    ));
    let by_pool = edits::container_edits(pool, &n.host, &n.paths, &s(&["2"])).unwrap();
    let options = EditOptions {
        rdma: RdmaCharDev::ALL.to_vec(),
        eal_args: false,
        ..EditOptions::default()
    };
    assert_eq!(*pool.devices[0].options, options);
    let neutral =
        edits::shared_edits_for(members, &pool.env_base(), &options, &n.host, &n.paths).unwrap();
    assert_eq!(by_pool, neutral);
    assert!(neutral.env.contains_key("NICPLUG_RDMA_IBDEVS_RDMA_HCA"));
}

/// Options written by hand, with no config at all, give what the config's resolution gives:
/// the edits depend on nothing else.
#[test]
fn hand_written_options_give_the_device_plugins_edits() {
    let n = common::sample();
    let pools = pools_for(&n.host, SAMPLE_RICH);
    let vf = pools.pool("example.com/vf_even").unwrap();
    let id = &vf.devices[0].id;
    let hand = EditOptions {
        rdma: RdmaCharDev::ALL.to_vec(),
        counters_mount: false,
        eal_args: false,
        eal_auxiliary: false,
        vhost_net: true,
        vdpa: None,
        extra_info: None,
    };
    assert_eq!(*vf.devices[0].options, hand);
    let device = ResolvedDevice {
        id: DeviceId::parse(id).unwrap(),
        options: Arc::new(hand),
    };
    let base = EnvBase::new("example.com", "vf_even");
    assert_eq!(
        edits::container_edits_for(std::slice::from_ref(&device), &base, &n.host, &n.paths),
        edits::container_edits(vf, &n.host, &n.paths, std::slice::from_ref(id))
    );

    let sf = pools.pool("nvidia.com/sf").unwrap();
    let sf4 = sf.device("mlx5_core.sf.4").unwrap();
    let extra: BTreeMap<String, String> = [("a".to_string(), "own".to_string())].into();
    assert_eq!(
        *sf4.options,
        EditOptions {
            rdma: RdmaCharDev::ALL.to_vec(),
            eal_auxiliary: true,
            extra_info: Some(extra),
            ..EditOptions::default()
        }
    );
    let e = edits::container_edits_for(
        &resolved(sf, &["mlx5_core.sf.4"]),
        &sf.env_base(),
        &n.host,
        &n.paths,
    )
    .unwrap();
    assert_eq!(
        e.env["NICPLUG_EAL_ARGS_NVIDIA_COM_SF"],
        "-a auxiliary:mlx5_core.sf.4 --iova-mode=va"
    );
    assert!(e.env["PCIDEVICE_NVIDIA_COM_SF_INFO"].contains(r#""extra":{"a":"own"}"#));
}

/// A device of another front end's choosing that the host lacks is refused by name, under the
/// name its variables carry.
#[test]
fn unknown_and_empty_devices_are_refused() {
    let n = common::sample();
    let base = EnvBase::new("nicplug.io", "claim");
    let ghost = ResolvedDevice {
        id: DeviceId::parse("0000:99:00.1").unwrap(),
        options: Arc::new(EditOptions::default()),
    };
    assert_eq!(
        edits::container_edits_for(&[ghost], &base, &n.host, &n.paths),
        Err(EditError::UnknownIds {
            pool: "nicplug.io/claim".into(),
            ids: s(&["0000:99:00.1"]),
        })
    );
    assert_eq!(
        edits::container_edits_for(&[], &base, &n.host, &n.paths),
        Err(EditError::Empty)
    );
}

/// Mixed options in one request: the EAL list names only the devices that ask for it, each in
/// its own form; vDPA only where the options say so.
#[test]
fn options_are_per_device() {
    let n = class_node("switchdev-vdpa.yaml");
    let pools = pools_for(&n.host, VDPA_POOLS);
    let vhost = pools.pool("nvidia.com/vhost").unwrap();
    let id = vhost.devices[0].id.clone();
    assert_eq!(vhost.devices[0].options.vdpa, Some(VdpaType::Vhost));
    let plain = ResolvedDevice {
        id: DeviceId::parse(&id).unwrap(),
        options: Arc::new(EditOptions::default()),
    };
    let as_vdpa = resolved(vhost, &[&id]).remove(0);
    let base = vhost.env_base();
    let e_plain =
        edits::container_edits_for(std::slice::from_ref(&plain), &base, &n.host, &n.paths).unwrap();
    let e_vdpa =
        edits::container_edits_for(std::slice::from_ref(&as_vdpa), &base, &n.host, &n.paths)
            .unwrap();
    assert!(
        e_vdpa.devices.len() > e_plain.devices.len(),
        "{e_vdpa:?} {e_plain:?}"
    );
    let no_eal = ResolvedDevice {
        options: Arc::new(EditOptions {
            eal_args: false,
            ..EditOptions::default()
        }),
        ..plain.clone()
    };
    let e = edits::container_edits_for(std::slice::from_ref(&no_eal), &base, &n.host, &n.paths)
        .unwrap();
    assert!(!e.env.contains_key(&base.eal_args()));
}

/// The last stage never sees the config schema (issue 16 §1).
#[test]
fn edits_do_not_import_the_config() {
    let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/edits.rs"))
        .unwrap();
    assert!(
        !src.contains("crate::config"),
        "src/edits.rs uses crate::config"
    );
    let resolved =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/resolved.rs"))
            .unwrap();
    assert!(!resolved.contains("crate::config"));
}
