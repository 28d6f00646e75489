//! The inventory's reconcile core with injected events, on the sample node's real fixture
//! tree and a real config file: what each event does to the published inventory.

mod common;

use nicplug::fixture;
use nicplug::health::LiveLink;
use nicplug::host::Scope;
use nicplug::inventory::{Claims, Event, Inventory, InventoryOptions, Reconciler};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

const VF_POOL: &str = "nvidia.com/cx6dx_vf";
const PF_POOL: &str = "nvidia.com/cx6dx_pf";
const PF: &str = "0000:3b:00.0";
/// VF7 of PF, ens1f0v7.
const VF: &str = "0000:3b:01.1";
/// VFs of PF (ens1f0).
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

struct Setup {
    node: common::Node,
    config: PathBuf,
    r: Reconciler,
}

/// The sample node with the sample config, and a reconciler that has read both.
fn setup(claims: Claims) -> Setup {
    let node = common::sample();
    let config = node._tmp.path().join("config.json");
    fs::write(&config, fixture::sample_config()).unwrap();
    let opts = InventoryOptions {
        claims,
        ..InventoryOptions::new(node.paths.clone(), config.clone(), "intel.com".into())
    };
    let r = Reconciler::new(&opts).unwrap();
    Setup { node, config, r }
}

fn ids(inv: &Inventory, pool: &str) -> Vec<String> {
    inv.pools[pool]
        .pool
        .devices
        .iter()
        .map(|d| d.id.clone())
        .collect()
}

fn health(inv: &Inventory, pool: &str) -> BTreeMap<String, bool> {
    inv.pools[pool]
        .verdicts()
        .map(|(id, ok, _)| (id.to_string(), ok))
        .collect()
}

fn reason(inv: &Inventory, pool: &str, id: &str) -> String {
    inv.pools[pool].reason(id).unwrap().to_string()
}

fn rescan(scope: Scope) -> Event {
    Event::Rescan { why: "test", scope }
}

fn link(name: &str, admin_up: bool, carrier: bool) -> Event {
    Event::Link {
        name: name.into(),
        live: Some(LiveLink {
            admin_up,
            carrier,
            vfs: None,
        }),
    }
}

#[test]
fn a_bad_config_is_refused_and_the_last_good_one_kept() {
    let mut s = setup(Claims::default());
    let first = s.r.current();
    assert_eq!((first.generation, first.pools_generation), (1, 1));
    assert!(first.pools.contains_key(VF_POOL));

    // Nothing changed on disk: nothing to publish.
    assert!(s.r.apply(vec![Event::ConfigTouched]).is_none());

    fs::write(&s.config, "{\"resourceList\": [{\"resourceName\": 7}]}").unwrap();
    let bad =
        s.r.apply(vec![Event::ConfigTouched])
            .expect("a rejection is news");
    assert_eq!(bad.config_reloads.failed, 1);
    assert_eq!(bad.pools_generation, 1, "the pools stay as they were");
    assert_eq!(
        bad.pools.keys().collect::<Vec<_>>(),
        first.pools.keys().collect::<Vec<_>>()
    );
    assert_eq!(ids(&bad, VF_POOL), ids(&first, VF_POOL));
    assert!(Arc::ptr_eq(&bad.config, &first.config));
    // The same bad bytes again: no second rejection.
    assert!(s.r.apply(vec![Event::ConfigTouched]).is_none());

    // A good config without the VF pool: taken.
    let mut doc: serde_json::Value = serde_json::from_str(fixture::sample_config()).unwrap();
    doc["resourceList"]
        .as_array_mut()
        .unwrap()
        .retain(|r| r["resourceName"] != "cx6dx_vf");
    fs::write(&s.config, doc.to_string()).unwrap();
    let good = s.r.apply(vec![Event::ConfigTouched]).unwrap();
    assert_eq!((good.config_reloads.ok, good.config_reloads.failed), (1, 1));
    assert_eq!(good.pools_generation, 2);
    assert!(!good.pools.contains_key(VF_POOL));
    assert!(good.pools.contains_key(PF_POOL));
}

/// Remove VF7 the way `echo 7 > sriov_numvfs` does: the PF's count, its `virtfn7` link and
/// the bus entry.
fn unplug_vf(s: &Setup) {
    let sys = &s.node.paths.sysfs_root;
    let pf_dir = fs::canonicalize(sys.join("bus/pci/devices").join(PF)).unwrap();
    fs::write(pf_dir.join("sriov_numvfs"), "7\n").unwrap();
    fs::remove_file(pf_dir.join("virtfn7")).unwrap();
    fs::remove_file(sys.join("bus/pci/devices").join(VF)).unwrap();
}

#[test]
fn a_vf_removed_leaves_its_pool() {
    let mut s = setup(Claims::default());
    let before = ids(&s.r.current(), VF_POOL);
    assert!(before.contains(&VF.to_string()));
    unplug_vf(&s);
    let inv = s.r.apply(vec![rescan(Scope::function(VF))]).unwrap();
    let after = ids(&inv, VF_POOL);
    assert_eq!(after.len(), before.len() - 1);
    assert!(!after.contains(&VF.to_string()));
    assert!(inv.pools[VF_POOL].healthy(VF).is_none());
    assert_eq!(inv.pools_generation, 2);
    // Reading again finds nothing new.
    assert!(s.r.apply(vec![rescan(Scope::All)]).is_none());
}

#[test]
fn lost_events_mean_a_full_rescan() {
    let mut s = setup(Claims::default());
    unplug_vf(&s);
    // The VF's own event was lost; an event about another function reads only that one.
    let other = s.r.apply(vec![rescan(Scope::function("0000:af:00.0"))]);
    assert!(
        other.is_none(),
        "a read of another function found the VF gone: this test no longer shows the scope"
    );
    assert!(ids(&s.r.current(), VF_POOL).contains(&VF.to_string()));
    // The watcher that lost events sends a full rescan.
    let inv =
        s.r.apply(vec![Event::Rescan {
            why: "uevents lost",
            scope: Scope::All,
        }])
        .unwrap();
    assert!(!ids(&inv, VF_POOL).contains(&VF.to_string()));
}

#[test]
fn a_pf_losing_carrier_makes_its_vfs_unhealthy() {
    let mut s = setup(Claims::default());
    let up = s.r.apply(vec![link("ens1f0", true, true)]);
    let up = up.unwrap_or_else(|| s.r.current());
    let healthy_before: BTreeSet<String> = health(&up, VF_POOL)
        .into_iter()
        .filter(|(_, ok)| *ok)
        .map(|(id, _)| id)
        .collect();
    for vf in PF0_VFS {
        assert!(healthy_before.contains(vf), "{vf} healthy with its PF up");
    }

    let down = s.r.apply(vec![link("ens1f0", true, false)]).unwrap();
    assert_eq!(down.pools_generation, up.pools_generation, "health only");
    assert!(down.generation > up.generation);
    let now = health(&down, VF_POOL);
    for vf in PF0_VFS {
        assert!(!now[vf], "{vf} still healthy");
        assert_eq!(reason(&down, VF_POOL, vf), "PF ens1f0 no carrier");
    }
    // Exactly those: the other PF's VFs keep their health.
    for (id, ok) in &now {
        if !PF0_VFS.contains(&id.as_str()) {
            assert_eq!(healthy_before.contains(id), *ok, "{id}");
        }
    }
    // The same state again is no change.
    assert!(s.r.apply(vec![link("ens1f0", true, false)]).is_none());
    let back = s.r.apply(vec![link("ens1f0", true, true)]).unwrap();
    assert!(PF0_VFS.iter().all(|vf| health(&back, VF_POOL)[*vf]));
}

fn claims(pairs: &[(&str, &str)]) -> Claims {
    let mut by_id: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (id, resource) in pairs {
        by_id
            .entry(id.to_string())
            .or_default()
            .insert(resource.to_string());
    }
    Claims {
        by_id,
        unknown: false,
    }
}

#[test]
fn a_claim_keeps_its_device_out_of_the_pool_a_reload_moves_it_to() {
    let mut s = setup(claims(&[(VF, VF_POOL)]));
    let _ = s.r.apply(vec![link("ens1f0", true, true)]);
    let first = s.r.current();
    assert!(
        health(&first, VF_POOL)[VF],
        "held under its own pool: healthy there"
    );

    // The reload renames the VF pool: the same VFs, now under another resource.
    let moved = "nvidia.com/moved_vf";
    let text = fixture::sample_config().replace("\"cx6dx_vf\"", "\"moved_vf\"");
    fs::write(&s.config, text).unwrap();
    let inv = s.r.apply(vec![Event::ConfigTouched]).unwrap();
    assert!(!inv.pools.contains_key(VF_POOL));
    let view = &inv.pools[moved];
    assert!(
        view.healthy(VF) == Some(false),
        "advertised Unhealthy while kubelet holds it elsewhere"
    );
    assert_eq!(
        view.held_elsewhere.get(VF).map(String::as_str),
        Some(VF_POOL)
    );
    assert_eq!(
        reason(&inv, moved, VF),
        nicplug::health::Reason::HeldElsewhere {
            resource: VF_POOL.into()
        }
        .to_string()
    );
    assert!(view.allocate(&[VF.to_string()]).is_err(), "and refused");
    // Another VF of the same pool is unaffected.
    assert_eq!(view.healthy(PF0_VFS[0]), Some(true));

    // Kubelet released it: usable under the new name.
    let released = s.r.apply(vec![Event::Claims(Claims::default())]).unwrap();
    assert_eq!(released.pools_generation, inv.pools_generation);
    let view = &released.pools[moved];
    assert!(view.healthy(VF) == Some(true) && view.held_elsewhere.is_empty());
    assert!(view.allocate(&[VF.to_string()]).is_ok());
}

#[test]
fn a_change_that_leaves_a_pool_as_it_was_keeps_its_view() {
    let mut s = setup(Claims::default());
    let before = s.r.current();
    // A claim under the VF pool changes nothing the PF pool shows.
    let claimed = s.r.apply(vec![Event::Claims(claims(&[(VF, VF_POOL)]))]);
    let claimed = claimed.expect("a new claim is news");
    assert!(
        Arc::ptr_eq(&before.pools[PF_POOL], &claimed.pools[PF_POOL]),
        "the PF pool's view is the same one: its streams have nothing to send"
    );
    assert!(Arc::ptr_eq(&before.pools[VF_POOL], &claimed.pools[VF_POOL]));
    // A PF losing carrier turns its VFs Unhealthy: that pool gets a new view.
    let down = s.r.apply(vec![link("ens1f0", true, false)]).unwrap();
    assert!(!Arc::ptr_eq(&claimed.pools[VF_POOL], &down.pools[VF_POOL]));
    assert_eq!(down.pools[VF_POOL].healthy(PF0_VFS[0]), Some(false));
}

#[test]
fn a_claim_on_a_device_gone_from_its_pool_keeps_it_listed_unhealthy() {
    let mut s = setup(claims(&[(VF, VF_POOL)]));
    unplug_vf(&s);
    let inv = s.r.apply(vec![rescan(Scope::function(VF))]).unwrap();
    let view = &inv.pools[VF_POOL];
    assert_eq!(view.ghosts, vec![VF.to_string()]);
    assert_eq!(view.healthy(VF), Some(false));
    assert!(view.advertised().iter().any(|a| a.id == VF && !a.healthy));
}

/// The running inventory: its config watch (real inotify) publishes a reload to a subscriber,
/// and claims handed in by the front end reach the next inventory. Host watchers off: the
/// fixture tree is not a real sysfs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_publishes_each_change_to_subscribers() {
    use std::time::Duration;
    let node = common::sample();
    let config = node._tmp.path().join("conf/config.json");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::write(&config, fixture::sample_config()).unwrap();
    let opts = InventoryOptions {
        watch_host: false,
        watch_links: false,
        ..InventoryOptions::new(node.paths.clone(), config.clone(), "intel.com".into())
    };
    let (task, mut rx) = nicplug::inventory::start(opts).await.unwrap();
    let first = rx.borrow_and_update().clone();
    assert_eq!(first.generation, 1);
    assert!(first.pools.contains_key(VF_POOL));

    let text = fixture::sample_config().replace("\"cx6dx_vf\"", "\"moved_vf\"");
    // Replaced whole, as a ConfigMap update does: a write in place is first seen truncated.
    let tmp = config.with_extension("new");
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, &config).unwrap();
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("no inventory within 10 s of the config change")
        .unwrap();
    let reloaded = rx.borrow_and_update().clone();
    assert!(reloaded.pools.contains_key("nvidia.com/moved_vf"));
    assert!(!reloaded.pools.contains_key(VF_POOL));
    assert_eq!(reloaded.config_reloads.ok, 1);

    task.set_claims(claims(&[(VF, VF_POOL)])).await;
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("no inventory within 10 s of the claims")
        .unwrap();
    let held = rx.borrow_and_update().clone();
    assert_eq!(
        held.pools["nvidia.com/moved_vf"]
            .held_elsewhere
            .get(VF)
            .map(String::as_str),
        Some(VF_POOL)
    );
    task.stop();
}

#[tokio::test]
async fn start_refuses_a_bad_config_naming_the_file() {
    let node = common::sample();
    let config = node._tmp.path().join("config.json");
    fs::write(&config, "{\"resourceList\": 3}").unwrap();
    let opts = InventoryOptions::new(node.paths.clone(), config.clone(), "intel.com".into());
    let err = match nicplug::inventory::start(opts).await {
        Ok(_) => panic!("a bad config was taken"),
        Err(e) => e,
    };
    assert!(
        err.to_string().contains(&config.display().to_string()),
        "{err}"
    );
    assert!(matches!(
        err,
        nicplug::inventory::InventoryError::Config { .. }
    ));
}
