//! Incremental re-reads: after each change to a real fixture tree, `host::refresh` of just the
//! functions an event would name must equal a full `host::discover` of the changed tree, and a
//! full `host::reread` against the old snapshot must say the same (or "unchanged" exactly when
//! nothing changed).

mod common;

use nicplug::fixture;
use nicplug::host::{self, Host, Reread, Scope};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

const PF: &str = "0000:3b:00.0";
const VF: &str = "0000:3b:01.1"; // VF7 of PF, netdev ens1f0v7
const SKIPPED: &str = "0000:3b:02.1"; // its uverbs dev file is garbled in the sample

struct Tree {
    node: common::Node,
    /// The snapshot as the daemon holds it after the last step.
    held: Host,
}

impl Tree {
    fn sys(&self) -> PathBuf {
        self.node.paths.sysfs_root.clone()
    }

    fn dev_dir(&self, address: &str) -> PathBuf {
        fs::canonicalize(self.sys().join("bus/pci/devices").join(address)).unwrap()
    }

    /// Re-read what `scope` names; it must be what a full read of the tree now says.
    fn step(&mut self, what: &str, scope: Scope) -> &Host {
        let partial = host::refresh(&self.node.paths, &self.held, &scope).unwrap();
        let full = host::discover(&self.node.paths).unwrap();
        assert_eq!(
            partial, full,
            "after {what}: incremental and full reads differ"
        );
        match host::reread(&self.node.paths, &self.held, &Scope::All).unwrap() {
            Reread::Same => assert_eq!(self.held, full, "after {what}: the change was missed"),
            Reread::Changed(h) => {
                assert_eq!(h, full, "after {what}: full re-read and discovery differ");
                assert_ne!(self.held, full, "after {what}: nothing changed");
            }
        }
        self.held = full;
        &self.held
    }
}

fn sample() -> Tree {
    let node = common::sample();
    let held = node.host.clone();
    Tree { node, held }
}

fn remove_link(path: &Path) {
    fs::remove_file(path).unwrap();
}

#[test]
fn each_change_read_incrementally_equals_a_full_read() {
    let mut t = sample();
    let sys = t.sys();
    let vf_dir = t.dev_dir(VF);
    let pf_dir = t.dev_dir(PF);
    let vf_link = sys.join("bus/pci/devices").join(VF);
    let one = || Scope::function(VF);

    // VF hot-unplugged, as `echo 7 > sriov_numvfs` does it: the PF's count and virtfn7 change
    // too, but the event names only the VF.
    fs::write(pf_dir.join("sriov_numvfs"), "7\n").unwrap();
    remove_link(&pf_dir.join("virtfn7"));
    remove_link(&vf_link);
    let h = t.step("VF removed", one());
    assert!(h.function(VF).is_none());
    assert_eq!(h.function(PF).unwrap().sriov.as_ref().unwrap().num_vfs, 7);

    // And back.
    fs::write(pf_dir.join("sriov_numvfs"), "8\n").unwrap();
    symlink(format!("../{VF}"), pf_dir.join("virtfn7")).unwrap();
    symlink(&vf_dir, &vf_link).unwrap();
    let h = t.step("VF restored", one());
    assert_eq!(h.function(VF).unwrap().physfn.as_ref().unwrap().vf_index, 7);

    // Driver unbound, then bound.
    let driver = fs::read_link(vf_dir.join("driver")).unwrap();
    remove_link(&vf_dir.join("driver"));
    let h = t.step("driver unbound", one());
    assert_eq!(h.function(VF).unwrap().driver, None);
    symlink(&driver, vf_dir.join("driver")).unwrap();
    t.step("driver bound", one());

    // Netdev renamed.
    fs::rename(vf_dir.join("net/ens1f0v7"), vf_dir.join("net/dpdk7")).unwrap();
    let h = t.step("netdev renamed", one());
    assert_eq!(h.function(VF).unwrap().netdevs[0].name, "dpdk7");

    // An attribute garbled: the function is skipped; repaired: it is back.
    let vendor = vf_dir.join("vendor");
    fs::write(&vendor, "not hex\n").unwrap();
    let h = t.step("vendor garbled", one());
    assert!(h.function(VF).is_none());
    assert!(
        h.skipped
            .iter()
            .any(|s| s.address == VF && s.file == vendor)
    );
    fs::write(&vendor, "0x15b3\n").unwrap();
    let h = t.step("vendor repaired", one());
    assert!(h.function(VF).is_some() && !h.skipped.iter().any(|s| s.address == VF));

    // The sample's broken function repaired: it leaves the skipped list.
    let bad = t.dev_dir(SKIPPED);
    let uverbs = fs::read_dir(bad.join("infiniband_verbs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::write(uverbs.join("dev"), "231:209\n").unwrap();
    let h = t.step("skipped function repaired", Scope::function(SKIPPED));
    assert!(h.function(SKIPPED).is_some() && h.skipped.is_empty());

    // A change under an SF's parent: SFs are re-read whole.
    let sf = sys.join("bus/auxiliary/devices/mlx5_core.sf.5");
    remove_link(&sf);
    let h = t.step("SF removed", Scope::function("0000:af:00.0"));
    assert!(h.aux_function("mlx5_core.sf.5").is_none());

    // Host-wide state is read every time: the default route moved to a VF's netdev.
    let route = t.node.paths.proc_root.join("net/route");
    let text = fs::read_to_string(&route)
        .unwrap()
        .replace("eth0", "ens1f0v0");
    fs::write(&route, text).unwrap();
    let h = t.step("default route moved", one());
    assert!(h.function("0000:3b:00.2").unwrap().netdevs[0].default_route);
}

#[test]
fn an_unchanged_host_reads_as_the_same() {
    let t = sample();
    for scope in [Scope::All, Scope::function(VF)] {
        let again = host::reread(&t.node.paths, &t.held, &scope).unwrap();
        assert!(matches!(again, Reread::Same), "{scope:?}: {again:?}");
    }
    // Any one attribute differing is a change, even where a function compares equal otherwise.
    let numa = t.held.function(VF).unwrap().numa_node.map_or(0, |n| n + 1);
    fs::write(t.dev_dir(VF).join("numa_node"), format!("{numa}\n")).unwrap();
    let Reread::Changed(h) = host::reread(&t.node.paths, &t.held, &Scope::All).unwrap() else {
        panic!("a changed numa_node read as the same");
    };
    assert_eq!(h.function(VF).unwrap().numa_node, Some(numa));
    assert_eq!(h, host::discover(&t.node.paths).unwrap());
}

#[test]
fn a_scope_that_misses_the_change_is_caught() {
    // The comparison above can fail: reading the wrong function leaves the snapshot stale.
    let mut t = sample();
    remove_link(&t.sys().join("bus/pci/devices").join(VF));
    let stale = host::refresh(&t.node.paths, &t.held, &Scope::function(PF)).unwrap();
    assert!(stale.function(VF).is_some());
    assert_ne!(stale, host::discover(&t.node.paths).unwrap());
    t.held = stale;
    // `Scope::All` is a full read.
    let full = host::refresh(&t.node.paths, &t.held, &Scope::All).unwrap();
    assert!(full.function(VF).is_none());
}

#[test]
fn scopes_merge_and_grow_into_a_full_read() {
    let a = Scope::function("0000:3b:00.2").merge(Scope::function("0000:3b:00.3"));
    assert_eq!(
        a,
        Scope::Functions(["0000:3b:00.2", "0000:3b:00.3"].map(String::from).into())
    );
    assert_eq!(a.clone().merge(Scope::All), Scope::All);
    let many = (0..100)
        .map(|i| Scope::function(&format!("0000:3b:{:02x}.{}", i / 8, i % 8)))
        .fold(a, Scope::merge);
    assert_eq!(many, Scope::All);
}

#[test]
fn removing_every_vf_of_a_big_host_one_event_at_a_time() {
    // 2 PFs x 20 VFs: each VF's own event, applied in turn, ends where a full read ends.
    let node = common::node(&fixture::generated(2, 20));
    let mut held = node.host.clone();
    let vfs: Vec<String> = held
        .functions
        .iter()
        .filter(|f| f.physfn.is_some())
        .map(|f| f.address.clone())
        .collect();
    assert_eq!(vfs.len(), 40);
    let devices = node.paths.sysfs_root.join("bus/pci/devices");
    for (i, vf) in vfs.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        remove_link(&devices.join(vf));
        held = host::refresh(&node.paths, &held, &Scope::function(vf)).unwrap();
        assert!(held.function(vf).is_none(), "VF {i}");
    }
    assert_eq!(held, host::discover(&node.paths).unwrap());
}
