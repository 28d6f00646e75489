//! `nicplug doctor` on fixture pods: each failure of the field report reproduced, and its
//! verdict checked; the real binary with `--output json`; a real private mount namespace.
//!
//! A "pod" here is a materialised sample node whose sysfs is pruned to what the pod's own
//! network namespace shows, plus the procfs files the doctor reads (mountinfo, status, limits,
//! net/dev, a pagemap stand-in), and the environment `nicplug::edits::container_edits` gives.

use nicplug::config::{Format, parse_config};
use nicplug::doctor::pod_view::{self, Hugepages, PodProc as Proc, mount_line};
use nicplug::doctor::{self, CheckId, Input, Report, Status, procfs};
use nicplug::fixture::{self, HostSpec, NetnsMode};
use nicplug::{HostPaths, edits, host, pools};
use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

#[path = "common/prereq.rs"]
mod prereq;

const VF: &str = "0000:3b:00.2";
const VF_NETDEV: &str = "ens1f0v0";
const VF_PORT: &str = "devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/infiniband/mlx5_2/ports/1";
const SF: &str = "mlx5_core.sf.4";

/// Docker's default capabilities (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
/// NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP).
const DEFAULT_CAPS: u64 = 0xa80425fb;
const IPC_LOCK: u64 = 1 << procfs::CAP_IPC_LOCK;
const NET_RAW: u64 = 1 << procfs::CAP_NET_RAW;
const SYS_ADMIN: u64 = 1 << procfs::CAP_SYS_ADMIN;

struct Pod {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    paths: HostPaths,
    env: BTreeMap<String, String>,
}

/// The sample pods' hugepage pool.
const HUGEPAGES: Hugepages = Hugepages {
    size_kb: 2048,
    free: 512,
};

/// A healthy unprivileged DPDK pod: its own sysfs (ro), nicplug's counters mount of the VF's
/// port, hugepages, NET_RAW + IPC_LOCK (on top of the runtime's defaults), zero PFNs.
fn healthy(netdevs: &[&str]) -> Proc {
    let mut p = Proc::healthy(netdevs, &[&format!("/sys/{VF_PORT}")], HUGEPAGES);
    p.caps = DEFAULT_CAPS | IPC_LOCK;
    p
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

impl Pod {
    /// The sample node, a pool of `config`, the env a container gets for `ids` of `pool`.
    fn new(spec: &HostSpec, config: &str, pool: &str, ids: &[&str]) -> Self {
        let tmp = tempdir();
        let dir = tmp.path().to_path_buf();
        let paths = fixture::materialize(spec, &dir).unwrap();
        let host = host::discover(&paths).unwrap();
        let pools = pools::build(
            &host,
            &parse_config(config, Format::Json).unwrap(),
            "intel.com",
        );
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let edits = edits::container_edits(pools.pool(pool).unwrap(), &host, &paths, &ids).unwrap();
        pod_view::add_pod_entries(&paths.sysfs_root, &["lo"], HUGEPAGES).unwrap();
        Pod {
            _tmp: tmp,
            dir,
            paths,
            env: edits.env,
        }
    }

    /// One VF of the sample node's `nvidia.com/cx6dx_vf`, in a pod whose netns holds lo, eth0
    /// and the VF's netdev.
    fn vf() -> Self {
        Pod::vf_of(&fixture::sample_node())
    }

    fn vf_of(spec: &HostSpec) -> Self {
        let pod = Pod::new(spec, fixture::sample_config(), "nvidia.com/cx6dx_vf", &[VF]);
        let netns = ["lo", "eth0", VF_NETDEV];
        pod.prune_sysfs(&netns);
        pod.proc(&healthy(&netns));
        pod
    }

    fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let p = self.dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn remove(&self, rel: &str) {
        let p = self.dir.join(rel);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p).unwrap(),
            Ok(_) => fs::remove_file(&p).unwrap(),
            Err(e) => panic!("{}: {e}", p.display()),
        }
    }

    /// What the pod's own sysfs shows: only the netdevs of its network namespace.
    fn prune_sysfs(&self, keep: &[&str]) {
        pod_view::prune_netdevs(&self.paths.sysfs_root, keep).unwrap();
    }

    fn proc(&self, p: &Proc) {
        p.write(&self.paths.proc_root).unwrap();
    }

    fn input(&self) -> Input {
        Input {
            paths: self.paths.clone(),
            env: self.env.clone(),
            devices: Vec::new(),
            pagemap_addr: Some(0),
        }
    }

    fn run(&self) -> Report {
        doctor::run(&self.input())
    }

    fn update_proc(&self, f: impl FnOnce(&mut Proc)) {
        let mut p = healthy(&["lo", "eth0", VF_NETDEV]);
        f(&mut p);
        self.proc(&p);
    }
}

fn check<'a>(r: &'a Report, id: CheckId, function: Option<&str>) -> &'a doctor::Check {
    r.find(id, function)
        .unwrap_or_else(|| panic!("no {id:?} check for {function:?} in {r:#?}"))
}

fn assert_status(r: &Report, id: CheckId, function: Option<&str>, status: Status) -> String {
    let c = check(r, id, function);
    assert_eq!(c.status, status, "{c:#?}");
    assert_eq!(c.fix.is_some(), status != Status::Pass, "{c:#?}");
    format!("{} {}", c.found, c.fix.as_deref().unwrap_or(""))
}

fn nodes_are_real() -> bool {
    fixture::can_mknod()
}

#[test]
fn healthy_pod_passes_every_check() {
    let pod = Pod::vf();
    let r = pod.run();
    assert_eq!(r.functions.len(), 1);
    assert_eq!(r.functions[0].id, VF);
    assert_eq!(r.functions[0].source, "PCIDEVICE_NVIDIA_COM_CX6DX_VF");
    assert_eq!(r.functions[0].rdma_dev.as_deref(), Some("mlx5_2"));
    assert_eq!(
        r.functions[0].uverbs.as_deref(),
        Some("/dev/infiniband/uverbs2")
    );
    for id in [
        CheckId::Allocation,
        CheckId::HostSysfs,
        CheckId::Iova,
        CheckId::Hugepages,
    ] {
        assert_status(&r, id, None, Status::Pass);
    }
    for id in [CheckId::Memlock, CheckId::NetRaw, CheckId::SysAdmin] {
        assert_status(&r, id, None, Status::Pass);
    }
    for id in [CheckId::Function, CheckId::Netdev, CheckId::Counters] {
        assert_status(&r, id, Some(VF), Status::Pass);
    }
    let counters = assert_status(&r, CheckId::Counters, Some(VF), Status::Pass);
    assert!(counters.contains("nicplug's counters mount"), "{counters}");
    assert!(counters.contains("shared"), "{counters}");
    if nodes_are_real() {
        let u = assert_status(&r, CheckId::Uverbs, Some(VF), Status::Pass);
        assert!(u.contains("231:194"), "{u}");
        assert!(r.ok, "{}", doctor::render::table(&r, false));
        assert_eq!(r.counts.fail, 0);
    } else {
        let u = assert_status(&r, CheckId::Uverbs, Some(VF), Status::Fail);
        assert!(u.contains("not a character device"), "{u}");
    }
    // One line per check plus the summary; no colour unless asked.
    let table = doctor::render::table(&r, false);
    assert_eq!(table.lines().count(), r.checks.len() + 1);
    assert!(!table.contains('\x1b'));
    assert!(doctor::render::table(&r, true).contains("\x1b[32mPASS\x1b[0m"));
}

#[test]
fn host_sysfs_in_the_pod_fails_check_1() {
    // The host's /sys mounted into the pod: sysfs lists the host's netdevs (not pruned), the
    // pod's netns holds lo, eth0 and the VF.
    let pod = Pod::new(
        &fixture::sample_node(),
        fixture::sample_config(),
        "nvidia.com/cx6dx_vf",
        &[VF],
    );
    pod.update_proc(|p| {
        p.mountinfo = mount_line(1, "0:100", "/", "/", "rw", "overlay", "rw")
            + &mount_line(2, "0:22", "/", "/sys", "rw,relatime", "sysfs", "rw")
            + &mount_line(4, "0:60", "/", "/dev/hugepages", "rw", "hugetlbfs", "rw");
    });
    let r = pod.run();
    let c = check(&r, CheckId::HostSysfs, None);
    assert_eq!(c.status, Status::Fail);
    assert_eq!(c.field_failure, Some(1));
    assert!(c.found.contains("ens1f0"), "{}", c.found);
    assert!(c.found.contains("not in this namespace"), "{}", c.found);
    assert!(
        c.found.contains("sysfs 0:22 at /sys, root /, rw"),
        "{}",
        c.found
    );
    assert!(c.fix.as_ref().unwrap().contains("hostPath"));
    assert!(!r.ok);

    // Same names, but sysfs's counters run ahead of this namespace's: a different device.
    let pod = Pod::vf();
    fs::create_dir_all(pod.dir.join("sys/devices/virtual/net/lo/statistics")).unwrap();
    pod.write(
        "sys/devices/virtual/net/lo/statistics/rx_bytes",
        "99999999\n",
    );
    let found = assert_status(&pod.run(), CheckId::HostSysfs, None, Status::Fail);
    assert!(found.contains("lo byte counters exceed"), "{found}");
    pod.write("sys/devices/virtual/net/lo/statistics/rx_bytes", "10\n");
    assert_status(&pod.run(), CheckId::HostSysfs, None, Status::Pass);

    // A host sysfs bound over part of /sys (another superblock): fails though class/net agrees.
    let pod = Pod::vf();
    pod.update_proc(|p| {
        p.mountinfo += &mount_line(9, "0:22", "/devices", "/sys/devices", "rw", "sysfs", "rw");
    });
    let found = assert_status(&pod.run(), CheckId::HostSysfs, None, Status::Fail);
    assert!(found.contains("mounted at /sys/devices"), "{found}");
}

#[test]
fn netdev_outside_the_pod_netns_fails_with_the_cni_fix() {
    let pod = Pod::new(
        &fixture::sample_node(),
        fixture::sample_config(),
        "nvidia.com/cx6dx_vf",
        &[VF],
    );
    // No CNI moved the VF's netdev in: the pod's sysfs shows no net/ entry under the VF.
    pod.prune_sysfs(&["lo", "eth0"]);
    pod.update_proc(|p| p.netdevs = vec!["lo".into(), "eth0".into()]);
    let r = pod.run();
    assert_status(&r, CheckId::HostSysfs, None, Status::Pass);
    let found = assert_status(&r, CheckId::Netdev, Some(VF), Status::Fail);
    assert!(found.contains("net is empty"), "{found}");
    assert!(
        found.contains("sriov-cni") && found.contains("hostNetwork"),
        "{found}"
    );
    assert!(!r.ok);
}

#[test]
fn missing_uverbs_node_fails_check_2() {
    let pod = Pod::vf();
    pod.remove("dev/infiniband/uverbs2");
    let r = pod.run();
    let c = check(&r, CheckId::Uverbs, Some(VF));
    assert_eq!(c.status, Status::Fail);
    assert_eq!(c.field_failure, Some(2));
    assert!(c.found.contains("uverbs2 missing"), "{}", c.found);
    assert!(c.fix.as_ref().unwrap().contains("isRdma"));
    assert!(!r.ok);
}

#[test]
fn uverbs_node_with_wrong_number_fails_check_2() {
    let why = (!nodes_are_real()).then(|| "cannot mknod here (needs root)".into());
    if !prereq::runnable("uverbs node with a wrong number", why) {
        return;
    }
    let pod = Pod::vf();
    let node = pod.dir.join("dev/infiniband/uverbs2");
    fs::remove_file(&node).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &node,
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_bits_truncate(0o666),
        rustix::fs::makedev(231, 200),
    )
    .unwrap();
    let found = assert_status(&pod.run(), CheckId::Uverbs, Some(VF), Status::Fail);
    assert!(
        found.contains("is 231:200 but sysfs says 231:194"),
        "{found}"
    );
    assert!(found.contains("never mknod"), "{found}");
}

#[test]
fn missing_counters_in_shared_mode_fail_check_4() {
    let pod = Pod::vf();
    // The pod's compat ibdev: a port without hw_counters, and no counters mount.
    pod.remove(&format!("sys/{VF_PORT}/hw_counters"));
    pod.update_proc(|p| {
        p.mountinfo = p
            .mountinfo
            .lines()
            .filter(|l| !l.contains("/ports/1"))
            .map(|l| format!("{l}\n"))
            .collect();
    });
    let r = pod.run();
    let c = check(&r, CheckId::Counters, Some(VF));
    assert_eq!(c.status, Status::Fail, "{c:#?}");
    assert_eq!(c.field_failure, Some(4));
    assert!(c.found.contains("mlx5_2 port(s) 1"), "{}", c.found);
    assert!(c.found.contains("RDMA netns mode: shared"), "{}", c.found);
    let fix = c.fix.as_ref().unwrap();
    assert!(fix.contains("countersMount"), "{fix}");
    assert!(fix.contains(&format!("/sys/{VF_PORT}")), "{fix}");
    assert!(fix.contains("netns_mode=0"), "{fix}");
    assert!(!r.ok);
}

#[test]
fn exclusive_mode_counters_verdicts() {
    let mut spec = fixture::sample_node();
    spec.rdma_netns_mode = Some(NetnsMode::Exclusive);
    // Moved into the pod by rdma-cni: the full device, counters included; no mount needed.
    let pod = Pod::vf_of(&spec);
    pod.update_proc(|p| {
        p.mountinfo = p
            .mountinfo
            .lines()
            .filter(|l| !l.contains("/ports/1"))
            .map(|l| format!("{l}\n"))
            .collect();
    });
    let found = assert_status(&pod.run(), CheckId::Counters, Some(VF), Status::Pass);
    assert!(found.contains("the device is in this namespace"), "{found}");
    assert!(found.contains("exclusive"), "{found}");

    // Not moved in: the pod sees no RDMA device under the VF.
    pod.remove("sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/infiniband/mlx5_2");
    let r = pod.run();
    let c = check(&r, CheckId::Counters, Some(VF));
    assert_eq!(c.status, Status::Fail);
    assert!(
        c.found.contains("exclusive") && c.found.contains("mlx5_2 is elsewhere"),
        "{}",
        c.found
    );
    assert!(c.fix.as_ref().unwrap().contains("rdma-cni"));
}

#[test]
fn iova_verdicts_check_3() {
    // Readable PFNs: CAP_SYS_ADMIN; EAL may pick PA. A warning.
    let pod = Pod::vf();
    pod.update_proc(|p| p.pfn = 0x12345);
    let r = pod.run();
    let c = check(&r, CheckId::Iova, None);
    assert_eq!(c.status, Status::Warn);
    assert_eq!(c.field_failure, Some(3));
    assert!(c.fix.as_ref().unwrap().contains("--iova-mode=va"));

    // Zero PFNs and another visible device bound to igb_uio: EAL would vote PA and fail.
    let pod = Pod::vf();
    let link = pod.dir.join("sys/bus/pci/devices/0000:5e:01.0/driver");
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink("../../../../bus/pci/drivers/igb_uio", &link).unwrap();
    let r = pod.run();
    let c = check(&r, CheckId::Iova, None);
    assert_eq!(c.status, Status::Fail, "{c:#?}");
    assert_eq!(c.field_failure, Some(3));
    assert!(c.found.contains("0000:5e:01.0 (igb_uio)"), "{}", c.found);
    assert!(c.found.contains("pagemap PFNs are zero"), "{}", c.found);
    assert!(c.fix.as_ref().unwrap().contains("$NICPLUG_EAL_ARGS_"));
    assert!(!r.ok);

    // vfio-pci in no-IOMMU mode votes PA as well; with an IOMMU it does not.
    let pod = Pod::vf();
    assert_status(&pod.run(), CheckId::Iova, None, Status::Pass);
    pod.write(
        "sys/module/vfio/parameters/enable_unsafe_noiommu_mode",
        "Y\n",
    );
    let found = assert_status(&pod.run(), CheckId::Iova, None, Status::Fail);
    assert!(
        found.contains("0000:5e:01.0 (vfio-pci, no-IOMMU)"),
        "{found}"
    );
}

#[test]
fn hugepages_absent_or_exhausted_fail() {
    let pod = Pod::vf();
    pod.update_proc(|p| {
        p.mountinfo = p
            .mountinfo
            .lines()
            .filter(|l| !l.contains("hugetlbfs"))
            .map(|l| format!("{l}\n"))
            .collect();
    });
    let found = assert_status(&pod.run(), CheckId::Hugepages, None, Status::Fail);
    assert!(found.contains("no hugetlbfs mount"), "{found}");
    assert!(found.contains("medium: HugePages"), "{found}");

    let pod = Pod::vf();
    pod.write(
        "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
        "0\n",
    );
    let found = assert_status(&pod.run(), CheckId::Hugepages, None, Status::Fail);
    assert!(
        found.contains("no free hugepages (0 free 2048kB)"),
        "{found}"
    );

    let pod = Pod::vf();
    let found = assert_status(&pod.run(), CheckId::Hugepages, None, Status::Pass);
    assert!(found.contains("/dev/hugepages (pagesize=2M)"), "{found}");
    assert!(found.contains("512 free 2048kB"), "{found}");
}

#[test]
fn memlock_needs_ipc_lock_or_a_large_limit() {
    let pod = Pod::vf();
    pod.update_proc(|p| p.caps = DEFAULT_CAPS);
    let found = assert_status(&pod.run(), CheckId::Memlock, None, Status::Fail);
    assert!(found.contains("RLIMIT_MEMLOCK 8 MiB"), "{found}");
    assert!(found.contains("IPC_LOCK"), "{found}");

    pod.update_proc(|p| {
        p.caps = DEFAULT_CAPS;
        p.memlock = "unlimited".into();
    });
    assert_status(&pod.run(), CheckId::Memlock, None, Status::Pass);

    pod.update_proc(|p| {
        p.caps = DEFAULT_CAPS;
        p.memlock = "4294967296".into();
    });
    assert_status(&pod.run(), CheckId::Memlock, None, Status::Warn);
}

#[test]
fn net_raw_missing_fails_and_sys_admin_warns() {
    let pod = Pod::vf();
    pod.update_proc(|p| p.caps = (DEFAULT_CAPS | IPC_LOCK) & !NET_RAW);
    let r = pod.run();
    let found = assert_status(&r, CheckId::NetRaw, None, Status::Fail);
    assert!(found.contains("add NET_RAW"), "{found}");
    assert!(!r.ok);

    pod.update_proc(|p| p.caps = DEFAULT_CAPS | IPC_LOCK | SYS_ADMIN);
    let r = pod.run();
    let found = assert_status(&r, CheckId::SysAdmin, None, Status::Warn);
    assert!(found.contains("remove SYS_ADMIN"), "{found}");
    // A warning is not a failure.
    assert_eq!(
        r.ok,
        nodes_are_real(),
        "{}",
        doctor::render::table(&r, false)
    );

    pod.update_proc(|p| p.caps = (1 << 41) - 1);
    let found = assert_status(&pod.run(), CheckId::SysAdmin, None, Status::Warn);
    assert!(found.contains("privileged"), "{found}");
}

#[test]
fn environment_parsing_and_eal_args() {
    let pod = Pod::vf();
    let mut input = pod.input();
    assert_eq!(
        doctor::eal_args(&input).unwrap(),
        "-a 0000:3b:00.2 --iova-mode=va"
    );
    // A second resource: IDs in variable-name order, EAL arguments merged.
    input
        .env
        .insert("PCIDEVICE_NVIDIA_COM_SF".into(), format!("{SF}, {VF}"));
    input.env.insert(
        "NICPLUG_EAL_ARGS_NVIDIA_COM_SF".into(),
        format!("-a auxiliary:{SF} --iova-mode=va"),
    );
    let ids: Vec<String> = doctor::allocated(&input)
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, [VF, SF]);
    assert_eq!(
        doctor::eal_args(&input).unwrap(),
        format!("-a 0000:3b:00.2 --iova-mode=va -a auxiliary:{SF}")
    );
    // Computed when no NICPLUG_EAL_ARGS_* is set; --device replaces the environment.
    input.env.retain(|k, _| !k.starts_with("NICPLUG_EAL_ARGS_"));
    assert_eq!(
        doctor::eal_args(&input).unwrap(),
        format!("-a 0000:3b:00.2 -a auxiliary:{SF} --iova-mode=va")
    );
    input.devices = vec![SF.into()];
    assert_eq!(
        doctor::eal_args(&input).unwrap(),
        format!("-a auxiliary:{SF} --iova-mode=va")
    );
    input.devices.clear();
    input.env.clear();
    assert!(doctor::eal_args(&input).is_err());
    let r = doctor::run(&input);
    assert_status(&r, CheckId::Allocation, None, Status::Fail);

    // A hostile ID never becomes a path.
    input.devices = vec!["../../etc".into()];
    let found = assert_status(
        &doctor::run(&input),
        CheckId::Function,
        Some("../../etc"),
        Status::Fail,
    );
    assert!(found.contains("neither a PCI address"), "{found}");
}

#[test]
fn non_mlx5_and_unbound_functions() {
    let pod = Pod::vf();
    let mut input = pod.input();
    input.devices = vec!["0000:5e:01.0".into()];
    let r = doctor::run(&input);
    let found = assert_status(&r, CheckId::Function, Some("0000:5e:01.0"), Status::Pass);
    assert!(found.contains("vfio-pci: not an mlx5 function"), "{found}");
    assert!(r.find(CheckId::Uverbs, Some("0000:5e:01.0")).is_none());

    pod.remove("sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/driver");
    let found = assert_status(&pod.run(), CheckId::Function, Some(VF), Status::Fail);
    assert!(found.contains("no driver bound"), "{found}");

    input.devices = vec!["0000:99:00.0".into()];
    let found = assert_status(
        &doctor::run(&input),
        CheckId::Function,
        Some("0000:99:00.0"),
        Status::Fail,
    );
    assert!(found.contains("does not exist"), "{found}");
}

#[test]
fn scalable_function_pod() {
    let config = r#"{"resourceList":[{"resourceName":"sf","resourcePrefix":"nvidia.com",
        "deviceType":"auxNetDevice","selectors":[{"auxTypes":["sf"],"isRdma":true}]}]}"#;
    let pod = Pod::new(&fixture::sample_node(), config, "nvidia.com/sf", &[SF]);
    let netns = ["lo", "eth0", "en3f0pf0sf88"];
    pod.prune_sysfs(&netns);
    let mut proc = healthy(&netns);
    let port =
        "devices/pci0000:ae/0000:ae:00.0/0000:af:00.0/mlx5_core.sf.4/infiniband/mlx5_20/ports/1";
    proc.mountinfo += &mount_line(
        5,
        "0:22",
        &format!("/{port}"),
        &format!("/sys/{port}"),
        "ro",
        "sysfs",
        "rw",
    );
    pod.proc(&proc);
    assert_eq!(
        pod.env["NICPLUG_EAL_ARGS_NVIDIA_COM_SF"],
        format!("-a auxiliary:{SF} --iova-mode=va")
    );
    let r = pod.run();
    assert_status(&r, CheckId::Function, Some(SF), Status::Pass);
    let found = assert_status(&r, CheckId::Netdev, Some(SF), Status::Pass);
    assert!(found.contains("en3f0pf0sf88"), "{found}");
    let found = assert_status(&r, CheckId::Counters, Some(SF), Status::Pass);
    assert!(found.contains("mlx5_20"), "{found}");
    if nodes_are_real() {
        assert_status(&r, CheckId::Uverbs, Some(SF), Status::Pass);
        assert!(r.ok, "{}", doctor::render::table(&r, false));
    }
}

fn nicplug(pod_env: &BTreeMap<String, String>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nicplug"));
    cmd.env_clear().envs(pod_env);
    cmd
}

#[test]
fn binary_json_output_and_exit_code() {
    let pod = Pod::vf();
    let run = |pod: &Pod| {
        let out = nicplug(&pod.env)
            .arg("--host-root")
            .arg(&pod.dir)
            .args(["doctor", "--output", "json"])
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code(), json)
    };
    let (code, json) = run(&pod);
    // The binary probes its own pagemap entry: in the stand-in file, a page far past its end
    // cannot be read, which the doctor counts as "no physical addresses".
    let iova = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "iova")
        .unwrap();
    assert_eq!(iova["status"], "pass", "{iova}");
    if nodes_are_real() {
        assert_eq!(code, Some(0), "{json:#}");
        assert_eq!(json["ok"], true);
    }
    assert_eq!(json["functions"][0]["id"], VF);
    assert_eq!(json["functions"][0]["rdma_dev"], "mlx5_2");
    for key in ["pass", "warn", "fail"] {
        assert!(json["counts"][key].is_u64(), "{json:#}");
    }

    pod.remove("dev/infiniband/uverbs2");
    let (code, json) = run(&pod);
    assert_eq!(code, Some(1));
    assert_eq!(json["ok"], false);
    let uverbs = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "uverbs")
        .unwrap();
    assert_eq!(uverbs["function"], VF);
    assert_eq!(uverbs["status"], "fail");
    assert_eq!(uverbs["field_failure"], 2);
    assert!(uverbs["found"].as_str().unwrap().contains("uverbs2"));
    assert!(uverbs["fix"].as_str().unwrap().contains("isRdma"));

    // --eal-args prints the pod's NICPLUG_EAL_ARGS_* value.
    let out = nicplug(&pod.env)
        .args(["doctor", "--eal-args"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "-a 0000:3b:00.2 --iova-mode=va\n"
    );
    let out = nicplug(&BTreeMap::new())
        .args(["doctor", "--eal-args"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// The host-sysfs check on the real kernel's mountinfo: in a private mount and network
/// namespace, a fresh sysfs at /sys passes; the previous (foreign) sysfs bound back over it
/// fails. Root and `unshare` only.
#[test]
fn host_sysfs_on_a_real_private_mount_namespace() {
    let what = "host-sysfs check in a private mount namespace";
    if !prereq::runnable(what, prereq::missing(true, &["unshare"])) {
        return;
    }
    let probe = Command::new("unshare")
        .args(["-m", "-n", "--propagation", "private", "true"])
        .status();
    let why = (!probe.is_ok_and(|s| s.success())).then(|| "unshare -m -n not permitted".into());
    if !prereq::runnable(what, why) {
        return;
    }
    let tmp = tempdir();
    let keep = tmp.path().join("foreign-sys");
    fs::create_dir(&keep).unwrap();
    let bin = env!("CARGO_BIN_EXE_nicplug");
    let run = |rebind: bool| {
        let script = format!(
            "set -e; mount --bind /sys '{keep}'; mount -t sysfs sysfs /sys; {}\
             exec '{bin}' doctor --output json",
            if rebind {
                format!("mount --bind '{}' /sys; ", keep.display())
            } else {
                String::new()
            },
            keep = keep.display(),
        );
        let out = Command::new("unshare")
            .args(["-m", "-n", "--propagation", "private", "sh", "-c", &script])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let c = json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "host-sysfs")
            .unwrap()
            .clone();
        (out.status.code(), c)
    };
    let (_, own) = run(false);
    assert_eq!(own["status"], "pass", "{own:#}");
    assert!(
        own["found"].as_str().unwrap().contains("1 netdev(s): lo"),
        "{own:#}"
    );
    let (code, foreign) = run(true);
    assert_eq!(code, Some(1));
    assert_eq!(foreign["status"], "fail", "{foreign:#}");
    assert_eq!(foreign["field_failure"], 1);
    assert!(
        foreign["found"]
            .as_str()
            .unwrap()
            .contains("another network namespace"),
        "{foreign:#}"
    );
}
