//! Checks of one allocated function: it exists and is bound to mlx5, its netdev is in this
//! network namespace, its uverbs node is usable, its RDMA counters are visible.

use super::{Allocated, Check, CheckId, Input, Pod, valid_id};
use crate::host::layout::{self, IB_DIR, NET_DIR, VERBS_DIR};
use crate::host::{RdmaNetnsMode, is_bdf};
use rustix::fs::{FileType, Mode, OFlags};
use std::fs;
use std::path::{Path, PathBuf};

const NETDEV_FIX: &str = "a device plugin cannot move a netdev into a pod: attach the function with a CNI \
    (sriov-cni through a NetworkAttachmentDefinition whose k8s.v1.cni.cncf.io/resourceName \
    annotation names this resource, listed in the pod's k8s.v1.cni.cncf.io/networks annotation; \
    rdma-cni as well in RDMA exclusive mode), or run the pod with hostNetwork: true";

pub(super) fn checks(input: &Input, pod: &Pod, f: &Allocated) -> Vec<Check> {
    let id = f.id.as_str();
    if !valid_id(id) {
        return vec![Check::fail(
            CheckId::Function,
            Some(id),
            format!("{id:?} is neither a PCI address (dddd:bb:dd.f) nor mlx5_core.sf.N"),
            format!(
                "fix the ID in {} (kubelet passes the device plugin's IDs)",
                f.source
            ),
        )];
    }
    let pci = is_bdf(id);
    let dir = input.paths.sysfs().device(id);
    if fs::metadata(&dir).is_err() {
        return vec![Check::fail(
            CheckId::Function,
            Some(id),
            format!("{} does not exist", dir.display()),
            "check the ID; if it is right, /sys is not this node's sysfs (see host-sysfs)".into(),
        )];
    }
    let expected = if pci { "mlx5_core" } else { "mlx5_core.sf" };
    let driver = fs::read_link(dir.join("driver"))
        .ok()
        .and_then(|t| t.file_name().and_then(|n| n.to_str()).map(str::to_string));
    match driver.as_deref() {
        None => {
            return vec![Check::fail(
                CheckId::Function,
                Some(id),
                format!(
                    "{id} has no driver bound ({}/driver missing)",
                    dir.display()
                ),
                format!(
                    "on the node, bind it to {expected} (echo {id} > \
                     /sys/bus/{}/drivers/{expected}/bind); DPDK skips a device without a driver",
                    if pci { "pci" } else { "auxiliary" }
                ),
            )];
        }
        Some(d) if d != expected => {
            return vec![Check::pass(
                CheckId::Function,
                Some(id),
                format!("driver {d}: not an mlx5 function, mlx5 checks do not apply"),
            )];
        }
        Some(_) => {}
    }
    let mut out = vec![Check::pass(
        CheckId::Function,
        Some(id),
        format!("{id} bound to {expected}"),
    )];
    if f.source.starts_with("NICPLUG_RDMA_PCI_") {
        // A shared HCA stays on the host: the pod's netdev comes from its CNI (macvlan, ipvlan
        // over the HCA's netdev), not from the HCA itself.
        out.push(Check::pass(
            CheckId::Netdev,
            Some(id),
            format!("{id} is a shared HCA (RDMA shared pool): its netdev stays on the host"),
        ));
    } else {
        out.push(netdev(pod, id, &dir));
    }
    out.push(uverbs(input, f, &dir));
    out.push(counters(input, pod, f, &dir));
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|n| (n.len(), n.clone()));
    v
}

fn netdev(pod: &Pod, id: &str, dir: &Path) -> Check {
    let net = names(&dir.join(NET_DIR));
    let Some(name) = net.first() else {
        return Check::fail(
            CheckId::Netdev,
            Some(id),
            format!(
                "no netdev of {id} in this network namespace ({}/net is empty)",
                dir.display()
            ),
            NETDEV_FIX.into(),
        );
    };
    match pod.has_netdev(name) {
        Some(true) => Check::pass(
            CheckId::Netdev,
            Some(id),
            format!("{name} is in this network namespace"),
        ),
        Some(false) => Check::fail(
            CheckId::Netdev,
            Some(id),
            format!(
                "sysfs shows {name} under {id} but this network namespace has no {name} \
                 (/proc/net/dev): /sys is another namespace's view"
            ),
            format!(
                "remove the hostPath /sys mount (see host-sysfs); if the netdev is then still \
                 absent, {NETDEV_FIX}"
            ),
        )
        .field(1),
        None => Check::warn(
            CheckId::Netdev,
            Some(id),
            format!(
                "sysfs shows {name}; cannot confirm it is in this namespace: {}",
                pod.netdevs.as_ref().err().map_or("", |e| e)
            ),
            "mount procfs at /proc (the runtime does by default)".into(),
        ),
    }
}

fn uverbs(input: &Input, f: &Allocated, dir: &Path) -> Check {
    let id = f.id.as_str();
    let fail =
        |found: String, fix: String| Check::fail(CheckId::Uverbs, Some(id), found, fix).field(2);
    let verbs = dir.join(VERBS_DIR);
    let Some(name) = names(&verbs)
        .into_iter()
        .find(|n| layout::is_uverbs_name(n))
    else {
        return fail(
            format!(
                "{id} has no RDMA verbs device ({} is empty)",
                verbs.display()
            ),
            "on the node, load mlx5_ib (modprobe mlx5_ib); for an SF, enable RDMA \
             (devlink dev param set auxiliary/<sf> name enable_rdma value true cmode driverinit, \
             then devlink dev reload)"
                .into(),
        );
    };
    let canonical = layout::rdma_node_path(&name);
    let info_note = match &f.uverbs {
        Some(u) if *u != canonical => format!(" (the _INFO JSON names {u}: stale)"),
        _ => String::new(),
    };
    let dev_file = verbs.join(&name).join("dev");
    let Some((major, minor)) = layout::read_attr(&dev_file)
        .ok()
        .and_then(|s| layout::parse_dev(&s))
    else {
        return fail(
            format!("{} is unreadable or not MAJOR:MINOR", dev_file.display()),
            "on the node, reload mlx5_ib; the kernel's uverbs entry is broken".into(),
        );
    };
    let node = input.paths.dev_root.join("infiniband").join(&name);
    let pass_device = "allocate the function through a resource with isRdma (nicplug: \
        nicplug.rdmaDevices containing uverbs, the default with isRdma) so the device plugin \
        passes the node; privileged mode is not the fix";
    let st = match rustix::fs::stat(&node) {
        Ok(st) => st,
        Err(e) => {
            return fail(
                format!(
                    "{} missing ({e}): libibverbs lists no device for {id}{info_note}",
                    node.display()
                ),
                pass_device.into(),
            );
        }
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::CharacterDevice {
        return fail(
            format!("{} is not a character device", node.display()),
            pass_device.into(),
        );
    }
    let (nmaj, nmin) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
    if (nmaj, nmin) != (major, minor) {
        return fail(
            format!(
                "{} is {nmaj}:{nmin} but sysfs says {major}:{minor} ({}): libibverbs refuses it",
                node.display(),
                dev_file.display()
            ),
            "pass the node from the device plugin (nicplug reads the number from sysfs); never \
             mknod it with a computed number (231:192+N holds only for the first 32 devices)"
                .into(),
        );
    }
    let open = rustix::fs::open(
        &node,
        OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    );
    match open {
        Err(rustix::io::Errno::PERM) => fail(
            format!(
                "{} ({major}:{minor}) exists but the container's device cgroup refuses it",
                node.display()
            ),
            pass_device.into(),
        ),
        Err(rustix::io::Errno::ACCESS) => fail(
            format!(
                "{} ({major}:{minor}) is not read-write for this user",
                node.display()
            ),
            "the device plugin passes the node with rw permissions; do not chmod it in the image"
                .into(),
        ),
        _ => Check::pass(
            CheckId::Uverbs,
            Some(id),
            format!(
                "{} {major}:{minor} matches sysfs{info_note}",
                node.display()
            ),
        ),
    }
}

fn netns_mode(sysfs: &Path) -> RdmaNetnsMode {
    layout::read_attr(&sysfs.join(layout::NETNS_MODE))
        .ok()
        .and_then(|s| layout::parse_netns_mode(&s))
        .unwrap_or(RdmaNetnsMode::Unknown)
}

fn mode_name(m: RdmaNetnsMode) -> &'static str {
    match m {
        RdmaNetnsMode::Shared => "shared",
        RdmaNetnsMode::Exclusive => "exclusive",
        RdmaNetnsMode::Unknown => "unknown (ib_core netns_mode unreadable; shared assumed)",
    }
}

/// `/sys/<path of dir relative to the sysfs root>`: where the container sees `dir`.
fn container_path(sysfs: &Path, dir: &Path) -> Option<PathBuf> {
    let root = fs::canonicalize(sysfs).ok()?;
    let rel = fs::canonicalize(dir)
        .ok()?
        .strip_prefix(root)
        .ok()?
        .to_path_buf();
    Some(Path::new("/sys").join(rel))
}

fn counters(input: &Input, pod: &Pod, f: &Allocated, dir: &Path) -> Check {
    let id = f.id.as_str();
    let sysfs = &input.paths.sysfs_root;
    let mode = netns_mode(sysfs);
    let Some(ibdev) = names(&dir.join(IB_DIR)).into_iter().next() else {
        let (found, fix) = match mode {
            RdmaNetnsMode::Exclusive => (
                format!(
                    "no RDMA device of {id} in this network namespace (ib_core netns_mode: \
                     exclusive){}",
                    f.rdma_dev
                        .as_ref()
                        .map_or(String::new(), |d| format!(", {d} is elsewhere"))
                ),
                "in exclusive mode the RDMA device must be moved into the pod: add rdma-cni to \
                 the pod's network (chained after sriov-cni)"
                    .to_string(),
            ),
            _ => (
                format!(
                    "{id} has no RDMA device ({}/infiniband is empty)",
                    dir.display()
                ),
                "on the node, load mlx5_ib (modprobe mlx5_ib)".to_string(),
            ),
        };
        return Check::fail(CheckId::Counters, Some(id), found, fix).field(4);
    };
    let ports_dir = layout::ports_dir(dir, &ibdev);
    let ports = names(&ports_dir);
    let mut missing = Vec::new();
    for p in &ports {
        let file = ports_dir
            .join(p)
            .join(layout::HW_COUNTERS)
            .join(layout::OUT_OF_BUFFER);
        if layout::read_counter(&file).is_none() {
            missing.push(p.clone());
        }
    }
    let port_path = |p: &str| {
        container_path(sysfs, &ports_dir.join(p)).map_or_else(
            || ports_dir.join(p).display().to_string(),
            |c| c.display().to_string(),
        )
    };
    let mounted = |p: &str| {
        let cp = port_path(p);
        pod.mounts
            .as_ref()
            .is_ok_and(|m| m.iter().any(|m| m.mount_point == cp))
    };
    if ports.is_empty() || !missing.is_empty() {
        let which = if ports.is_empty() {
            format!("{} has no ports", ports_dir.display())
        } else {
            format!(
                "{ibdev} port(s) {} without a readable hw_counters/out_of_buffer",
                missing.join(",")
            )
        };
        let fix = match mode {
            RdmaNetnsMode::Exclusive => "in exclusive mode the full device, counters included, \
                is moved into the pod by rdma-cni: make sure rdma-cni is in the pod's network"
                .to_string(),
            _ => {
                let p = missing.first().map_or("1", String::as_str);
                let have_mount = mounted(p);
                format!(
                    "{}bind the node's {} read-only over the same path in the container: nicplug \
                     does this when the resource's nicplug.countersMount is true (the default); \
                     check `nicplug allocate --resource <name> {id}` lists the mount. Or boot the \
                     node with ib_core netns_mode=0 (exclusive) and use rdma-cni",
                    if have_mount {
                        "a mount is at that path but the counters are unreadable: the host's port \
                         directory lacks them too; otherwise "
                    } else {
                        ""
                    },
                    port_path(p)
                )
            }
        };
        return Check::fail(
            CheckId::Counters,
            Some(id),
            format!(
                "{which}: rte_eth_xstats_get fails (RDMA netns mode: {})",
                mode_name(mode)
            ),
            fix,
        )
        .field(4);
    }
    let how = match mode {
        RdmaNetnsMode::Exclusive => "the device is in this namespace".to_string(),
        _ if ports.iter().all(|p| mounted(p)) => "through nicplug's counters mount".to_string(),
        _ => "visible".to_string(),
    };
    Check::pass(
        CheckId::Counters,
        Some(id),
        format!(
            "{ibdev} port(s) {}: hw_counters readable, {how} (RDMA netns mode: {})",
            ports.join(","),
            mode_name(mode)
        ),
    )
}
