//! Discovery fed random sysfs trees (issue 7). A small materialised fixture (two mlx5 PFs, two
//! VFs, one scalable function) gets a few random mutations: files deleted, garbage or huge
//! contents, FIFOs, links to `/dev/zero`, symlink loops, dangling links, links escaping the root
//! (to a canary tree beside it), non-UTF-8 names, directories where files belong.
//!
//! Properties: `host::discover` returns (within a deadline: a FIFO must not block it) and never
//! panics; nothing it reports was read outside the root (no canary name in any function, port
//! or char device; every sysfs dir resolves inside the root); every skipped entry names a file
//! under the root and a reason; pools and edits over the mutated host never panic and every
//! device node / mount path stays under the dev / sysfs roots and resolves inside them.
//! Bounded: a fixed number of cases (a few seconds in a debug build).

use nicplug::HostPaths;
use nicplug::config::{Format, parse_config};
use nicplug::host::{self, DiscoverError, Host};
use nicplug::{edits, fixture, pools};
use proptest::prelude::*;
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::symlink;
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

const CASES: u32 = 256;
/// Token carried by every name and content of the tree outside the root; that tree's own
/// directory is [`OUTSIDE`], so a link's target *name* (which discovery uses, as a name) never
/// carries the token, only something read through the link would.
const CANARY: &str = "canaryzz";
const OUTSIDE: &str = "outside";

const SPEC: &str = r#"
rdma_netns_mode: shared
rdma_cm: {major: 10, minor: 56}
functions:
  - address: "0000:3b:00.0"
    bridge: "0000:3a:00.0"
    vendor: 15b3
    device: 101d
    driver: mlx5_core
    netdev: {name: ens1f0}
    rdma: {ibdev: mlx5_0, uverbs: 0, umad: 0}
    sriov: {total_vfs: 2, num_vfs: 2}
    vf_template: {device: 101e, rdma: {first: 2}}
  - address: "0000:af:00.0"
    bridge: "0000:ae:00.0"
    vendor: 15b3
    device: 101d
    driver: mlx5_core
    netdev: {name: ens3f0}
    rdma: {ibdev: mlx5_18, uverbs: 18}
    sfs:
      - {sfnum: 88, index: 4, netdev: en3f0pf0sf88, rdma: {ibdev: mlx5_20, uverbs: 20}}
"#;

/// Every kind of pool: VFs and PFs with all four RDMA nodes, SFs, and everything else.
const CONFIG: &str = r#"{"resourceList": [
  {"resourceName": "sf", "resourcePrefix": "t.io", "deviceType": "auxNetDevice",
   "selectors": {"auxTypes": ["sf"]}, "nicplug": {"rdmaDevices": ["uverbs", "rdma_cm", "umad", "issm"]}},
  {"resourceName": "rdma", "resourcePrefix": "t.io", "selectors": {"isRdma": true},
   "nicplug": {"rdmaDevices": ["uverbs", "rdma_cm", "umad", "issm"]}},
  {"resourceName": "rest", "resourcePrefix": "t.io", "selectors": {}}
]}"#;

#[derive(Debug, Clone)]
enum Mutation {
    Delete,
    Garbage(Vec<u8>),
    /// 10 MiB (sparse): only a page may be read.
    Huge,
    /// Opening a FIFO for reading blocks until a writer comes: must never be opened.
    Fifo,
    /// Endless content: must never be read.
    DevZero,
    LoopLink,
    Dangling,
    /// A link to the canary tree outside the root, or to a file in it.
    Escape(bool),
    /// The entry renamed to a name with a byte that is not UTF-8.
    NonUtf8,
    /// A directory (holding a file) where the entry was.
    DirInstead,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => Just(Mutation::Delete),
        3 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Mutation::Garbage),
        1 => Just(Mutation::Huge),
        1 => Just(Mutation::Fifo),
        1 => Just(Mutation::DevZero),
        2 => Just(Mutation::LoopLink),
        2 => Just(Mutation::Dangling),
        3 => any::<bool>().prop_map(Mutation::Escape),
        2 => Just(Mutation::NonUtf8),
        2 => Just(Mutation::DirInstead),
    ]
}

/// Every entry below `dir`, links not followed, in a stable order.
fn entries(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in names {
        let is_dir = fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir());
        out.push(p.clone());
        if is_dir {
            entries(&p, out);
        }
    }
}

fn remove(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => drop(fs::remove_dir_all(p)),
        Ok(_) => drop(fs::remove_file(p)),
        Err(_) => {}
    }
}

/// Applies `m` to `target`; failures (the target already gone) leave the tree as it is.
fn apply(m: &Mutation, target: &Path, canary: &Path) {
    if fs::symlink_metadata(target).is_err() {
        return;
    }
    if matches!(m, Mutation::NonUtf8) {
        let mut name = target.file_name().unwrap().to_os_string().into_vec();
        name.push(0xff);
        let _ = fs::rename(target, target.with_file_name(OsString::from_vec(name)));
        return;
    }
    remove(target);
    let _ = match m {
        Mutation::Delete | Mutation::NonUtf8 => Ok(()),
        Mutation::Garbage(bytes) => fs::write(target, bytes),
        Mutation::Huge => fs::File::create(target).and_then(|f| f.set_len(10 << 20)),
        Mutation::Fifo => rustix::fs::mknodat(
            rustix::fs::CWD,
            target,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .map_err(std::io::Error::from),
        Mutation::DevZero => symlink("/dev/zero", target),
        Mutation::LoopLink => symlink(target.file_name().unwrap(), target),
        Mutation::Dangling => symlink("nowhere-at-all", target),
        Mutation::Escape(to_file) => symlink(
            if *to_file {
                canary.join("vendor")
            } else {
                canary.to_path_buf()
            },
            target,
        ),
        Mutation::DirInstead => fs::create_dir(target).and_then(|_| {
            fs::write(target.join(CANARY), "0x020000\n")
                .and_then(|_| fs::write(target.join("dev"), "231:1\n"))
        }),
    };
}

/// A tree outside the root that looks like a function, an ibdev, a port and a netdev, every name
/// in it carrying the canary: if discovery follows a link into it, the canary shows.
fn write_canary(dir: &Path) {
    for (file, text) in [
        ("class", "0x020000"),
        ("vendor", "0x15b3"),
        ("device", "0x101e"),
        ("dev", "231:250"),
        ("state", "4: ACTIVE"),
        ("type", "1"),
        ("address", CANARY),
        ("ibdev", CANARY),
        ("sfnum", "7"),
        ("ports/1/state", "4: ACTIVE"),
        ("ports/1/hw_counters/x", "1"),
        ("infiniband/mlx5_canaryzz/ports/1/state", "4: ACTIVE"),
        ("infiniband/mlx5_canaryzz/ports/1/hw_counters/x", "1"),
        ("infiniband_verbs/uverbs250/dev", "231:250"),
        ("infiniband_verbs/uverbs250/ibdev", CANARY),
        ("net/canaryzz0/type", "1"),
        ("uverbs250/dev", "231:250"),
        ("canaryzz1/type", "1"),
        ("canaryzz1/operstate", "up"),
    ] {
        let p = dir.join(file);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, format!("{text}\n")).unwrap();
    }
}

/// Discovery on another thread: a blocked open (a FIFO) fails the test instead of hanging CI.
fn discover_within(paths: &HostPaths, limit: Duration) -> Result<Host, DiscoverError> {
    let (tx, rx) = mpsc::channel();
    let p = paths.clone();
    std::thread::spawn(move || {
        let _ = tx.send(host::discover(&p));
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("discover did not finish within {limit:?} (blocked on a FIFO?)"))
}

fn plain(p: &Path) -> bool {
    p.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::RootDir))
}

/// `p` is lexically under `root` with no `..`, and (when it exists) resolves under `real_root`.
fn confined(p: &Path, root: &Path, real_root: &Path) -> Result<(), String> {
    if !p.starts_with(root) || !plain(p) {
        return Err(format!(
            "{} is not plainly under {}",
            p.display(),
            root.display()
        ));
    }
    if let Ok(real) = fs::canonicalize(p)
        && !real.starts_with(real_root)
    {
        return Err(format!("{} resolves to {}", p.display(), real.display()));
    }
    Ok(())
}

fn check_host(host: &Host, paths: &HostPaths, real_sys: &Path) -> Result<(), TestCaseError> {
    // Nothing read outside the root: the canary's names and contents appear nowhere.
    let seen = format!(
        "{:?} {:?} {:?}",
        host.functions, host.aux_functions, host.rdma_cm
    );
    prop_assert!(!seen.contains(CANARY), "canary read: {seen}");
    for dev in host.devices() {
        let rel = dev.sysfs_dir();
        prop_assert!(rel.is_relative() && plain(rel), "{}", rel.display());
        let dir = paths.sysfs_root.join(rel);
        confined(&dir, &paths.sysfs_root, real_sys).map_err(TestCaseError::fail)?;
        if let Some(r) = dev.rdma() {
            for port in &r.ports {
                let d = paths.sysfs_root.join(&port.sysfs_dir);
                confined(&d, &paths.sysfs_root, real_sys).map_err(TestCaseError::fail)?;
            }
        }
    }
    for s in &host.skipped {
        prop_assert!(
            !s.file.as_os_str().is_empty() && s.file.starts_with(real_sys),
            "skip names no file under the root: {:?}",
            s
        );
        prop_assert!(!s.reason.is_empty() && !s.address.is_empty(), "{:?}", s);
    }
    Ok(())
}

fn check_edits(host: &Host, paths: &HostPaths, real_sys: &Path) -> Result<(), TestCaseError> {
    let config = parse_config(CONFIG, Format::Json).unwrap();
    let real_dev = fs::canonicalize(&paths.dev_root).unwrap();
    let built = pools::build(host, &config, "intel.com");
    for pool in &built.pools {
        let ids: Vec<String> = pool.devices.iter().map(|d| d.id.clone()).collect();
        let mut requests: Vec<Vec<String>> = ids.iter().map(|id| vec![id.clone()]).collect();
        requests.push(ids.clone());
        for req in requests.iter().filter(|r| !r.is_empty()) {
            let Ok(e) = edits::container_edits(pool, host, paths, req) else {
                continue;
            };
            for d in &e.devices {
                prop_assert!(
                    d.container_path.starts_with("/dev/") && plain(Path::new(&d.container_path))
                );
                confined(&d.host_path, &paths.dev_root, &real_dev).map_err(TestCaseError::fail)?;
            }
            for m in &e.mounts {
                prop_assert!(m.read_only);
                prop_assert!(
                    m.container_path.starts_with("/sys/devices/")
                        && plain(Path::new(&m.container_path)),
                    "{}",
                    m.container_path
                );
                prop_assert!(!m.container_path.contains(CANARY));
                confined(&m.host_path, &paths.sysfs_root, real_sys).map_err(TestCaseError::fail)?;
            }
        }
    }
    Ok(())
}

fn base_spec() -> fixture::HostSpec {
    fixture::from_yaml(SPEC).unwrap()
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn mutated_trees(muts in prop::collection::vec((any::<prop::sample::Index>(), mutation()), 1..6)) {
        let tmp = tmp();
        let paths = fixture::materialize(&base_spec(), &tmp.path().join("node")).unwrap();
        let canary = tmp.path().join(OUTSIDE);
        write_canary(&canary);
        let real_sys = fs::canonicalize(&paths.sysfs_root).unwrap();
        let mut all = Vec::new();
        entries(&paths.sysfs_root, &mut all);
        for (index, m) in &muts {
            apply(m, &all[index.index(all.len())], &canary);
        }
        match discover_within(&paths, Duration::from_secs(20)) {
            Ok(host) => {
                check_host(&host, &paths, &real_sys)?;
                check_edits(&host, &paths, &real_sys)?;
            }
            // Only the list of PCI devices itself being gone may fail discovery as a whole.
            Err(e) => prop_assert!(matches!(e, DiscoverError::ListDevices { .. }), "{e}"),
        }
    }
}

/// The unmutated fixture discovers completely: the properties above are not vacuous.
#[test]
fn base_tree_is_complete() {
    let tmp = tmp();
    let paths = fixture::materialize(&base_spec(), tmp.path()).unwrap();
    let host = host::discover(&paths).unwrap();
    assert_eq!(host.functions.len(), 4, "{:?}", host.skipped);
    assert_eq!(host.aux_functions.len(), 1);
    assert!(host.skipped.is_empty(), "{:?}", host.skipped);
    let config = parse_config(CONFIG, Format::Json).unwrap();
    let built = pools::build(&host, &config, "intel.com");
    let sizes: Vec<usize> = built.pools.iter().map(|p| p.devices.len()).collect();
    assert_eq!(sizes, [1, 3, 0], "{built:?}");
}

/// One case of each hazard the reader must refuse, by name: a FIFO (would block the open), a
/// link to /dev/zero (endless), a link to a file outside the root, an ibdev directory that is a
/// link out of the root (it would become a bind mount's host path).
#[test]
fn hazards_are_skipped_naming_the_file() {
    let tmp = tmp();
    let paths = fixture::materialize(&base_spec(), &tmp.path().join("node")).unwrap();
    let canary = tmp.path().join(OUTSIDE);
    write_canary(&canary);
    let devs = paths.sysfs_root.join("bus/pci/devices");
    let dir = |bdf: &str| fs::canonicalize(devs.join(bdf)).unwrap();
    apply(
        &Mutation::Fifo,
        &dir("0000:3b:00.2").join("numa_node"),
        &canary,
    );
    apply(
        &Mutation::DevZero,
        &dir("0000:3b:00.3").join("vendor"),
        &canary,
    );
    apply(
        &Mutation::Escape(true),
        &dir("0000:3b:00.0").join("vendor"),
        &canary,
    );
    let ib = dir("0000:af:00.0").join("infiniband/mlx5_18");
    apply(&Mutation::Escape(false), &ib, &canary);

    let host = discover_within(&paths, Duration::from_secs(20)).unwrap();
    let real_sys = fs::canonicalize(&paths.sysfs_root).unwrap();
    check_host(&host, &paths, &real_sys).unwrap();
    let skipped: Vec<(&str, String)> = host
        .skipped
        .iter()
        .map(|s| {
            (
                s.address.as_str(),
                s.file.file_name().unwrap().to_string_lossy().into_owned(),
            )
        })
        .collect();
    for (addr, file) in [
        ("0000:3b:00.2", "numa_node"),
        ("0000:3b:00.3", "vendor"),
        ("0000:3b:00.0", "vendor"),
        ("0000:af:00.0", "mlx5_18"),
    ] {
        assert!(
            skipped.contains(&(addr, file.to_string())),
            "{addr} {file} not in {:?}",
            host.skipped
        );
    }
}
