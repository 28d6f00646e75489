//! Issue 12 §6: sysfs is trusted only as far as needed. Device numbers are checked against the
//! driver owning their major in `/proc/devices` and against each other; an odd `virtfnN` entry
//! hides no sibling; a FIFO in place of a routing table never blocks discovery; an IPv6 default
//! route guards its netdev like an IPv4 one. All on the bundled sample node, then broken.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use nicplug::HostPaths;
use nicplug::fixture;
use nicplug::host::{self, Host};

const VF_A: &str = "0000:3b:00.2";
const VF_B: &str = "0000:3b:00.3";
const PF: &str = "0000:3b:00.0";

fn sample() -> (tempfile::TempDir, HostPaths) {
    let tmp = tempfile::tempdir().unwrap();
    let paths = fixture::materialize(&fixture::sample_node(), tmp.path()).unwrap();
    (tmp, paths)
}

fn discover(paths: &HostPaths) -> Host {
    host::discover(paths).unwrap()
}

/// `<function dir>/infiniband_verbs/uverbsN/dev` of a function.
fn uverbs_dev_file(paths: &HostPaths, host: &Host, address: &str) -> PathBuf {
    let f = host.function(address).unwrap();
    let u = f.rdma.as_ref().unwrap().uverbs.as_ref().unwrap();
    paths
        .sysfs_root
        .join(&f.sysfs_dir)
        .join("infiniband_verbs")
        .join(&u.name)
        .join("dev")
}

fn skip_reason(host: &Host, address: &str) -> String {
    host.skipped
        .iter()
        .find(|s| s.address == address)
        .map(|s| format!("{}: {}", s.file.display(), s.reason))
        .unwrap_or_else(|| panic!("{address} not skipped: {:?}", host.skipped))
}

#[test]
fn the_sample_node_has_a_device_table_and_passes_the_checks() {
    let (_tmp, paths) = sample();
    let text = std::fs::read_to_string(paths.proc_root.join("devices")).unwrap();
    assert!(
        text.contains("infiniband_verbs") && text.contains("misc"),
        "{text}"
    );
    let host = discover(&paths);
    assert!(host.function(VF_A).is_some() && host.function(VF_B).is_some());
    assert!(
        !host
            .skipped
            .iter()
            .any(|s| s.reason.contains("/proc/devices") || s.reason.contains("same number")),
        "{:?}",
        host.skipped
    );
}

#[test]
fn a_number_its_driver_does_not_own_skips_the_function() {
    let (_tmp, paths) = sample();
    let before = discover(&paths);
    let file = uverbs_dev_file(&paths, &before, VF_A);
    std::fs::write(&file, "8:0\n").unwrap(); // a disk's number
    let host = discover(&paths);
    assert!(
        host.function(VF_A).is_none(),
        "a node 8:0 would be handed out"
    );
    let reason = skip_reason(&host, VF_A);
    assert!(reason.contains(&file.display().to_string()), "{reason}");
    assert!(reason.contains("infiniband_verbs"), "{reason}");
    assert_eq!(host.functions.len(), before.functions.len() - 1);
}

#[test]
fn a_node_claimed_by_two_functions_goes_to_neither() {
    let (_tmp, paths) = sample();
    let before = discover(&paths);
    let a = std::fs::read_to_string(uverbs_dev_file(&paths, &before, VF_A)).unwrap();
    std::fs::write(uverbs_dev_file(&paths, &before, VF_B), &a).unwrap();
    let host = discover(&paths);
    for vf in [VF_A, VF_B] {
        assert!(host.function(vf).is_none(), "{vf} kept a shared node");
        assert!(skip_reason(&host, vf).contains("same number"));
    }
    assert_eq!(host.functions.len(), before.functions.len() - 2);
}

#[test]
fn an_odd_virtfn_entry_hides_no_sibling() {
    let (_tmp, paths) = sample();
    let before = discover(&paths);
    let pf_dir = paths
        .sysfs_root
        .join(&before.function(PF).unwrap().sysfs_dir);
    std::fs::write(pf_dir.join("virtfn99"), "not a link").unwrap();
    std::os::unix::fs::symlink("../nowhere", pf_dir.join("virtfnx")).unwrap();
    let host = discover(&paths);
    assert_eq!(host.functions, before.functions);
    assert_eq!(host.skipped, before.skipped);
}

#[test]
fn fifos_in_place_of_routing_tables_never_block_discovery() {
    let (_tmp, paths) = sample();
    for table in ["net/route", "net/ipv6_route"] {
        let path = paths.proc_root.join(table);
        let _ = std::fs::remove_file(&path);
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
    let (tx, rx) = mpsc::channel();
    let p = paths.clone();
    std::thread::spawn(move || tx.send(host::discover(&p).map(|h| h.functions.len())));
    let found = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("discovery blocked on a FIFO routing table")
        .unwrap();
    assert!(found > 0);
}

/// `/proc/net/ipv6_route` with a default route through `iface`, and the kernel's reject route.
fn write_ipv6_default(proc_root: &Path, iface: &str) {
    let zero = "0".repeat(32);
    let gw = "fe800000000000000000000000000001";
    let text = format!(
        "{zero} 00 {zero} 00 {gw} 00000400 00000001 00000000 00000003 {iface:>8}\n\
         {zero} 00 {zero} 00 {zero} ffffffff 00000001 00000000 00200200       lo\n"
    );
    std::fs::write(proc_root.join("net/ipv6_route"), text).unwrap();
}

#[test]
fn an_ipv6_default_route_guards_its_netdev() {
    let (_tmp, paths) = sample();
    let before = discover(&paths);
    let netdev = before.function(VF_A).unwrap().netdevs[0].name.clone();
    assert!(!before.function(VF_A).unwrap().netdevs[0].default_route);
    write_ipv6_default(&paths.proc_root, &netdev);
    let host = discover(&paths);
    let nd = &host.function(VF_A).unwrap().netdevs[0];
    assert!(
        nd.default_route,
        "{} carries the IPv6 default route",
        nd.name
    );
    let config =
        nicplug::config::parse_config(fixture::sample_config(), nicplug::config::Format::Json)
            .unwrap();
    let pools = nicplug::pools::build(&host, &config, "intel.com");
    assert!(
        !pools.pools.iter().any(|p| p.device(VF_A).is_some()),
        "{VF_A} offered although its netdev carries the default route"
    );
    // Only that one.
    assert!(pools.pools.iter().any(|p| p.device(VF_B).is_some()));
}
