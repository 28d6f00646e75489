//! A simulated pod's view of a node: builds a simulated pod for tests and the demo (never used
//! by `nicplug doctor` itself, which reads the real `/sys`, `/dev` and `/proc` of its pod).
//!
//! Starting from a materialised fixture node, these helpers turn its `sys/` into what the pod's
//! own network namespace shows (only the pod's netdevs, a hugepages pool), put the allocated
//! device nodes under a pod `dev/`, and write the procfs files the doctor reads (mountinfo,
//! status, limits, net/dev, a pagemap stand-in, cap_last_cap).

use super::procfs::{self, CAP_IPC_LOCK, CAP_NET_RAW};
use rustix::fs::{FileType, Mode};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// CapEff of a container with `drop: [ALL]`, `add: [NET_RAW, IPC_LOCK]` (deploy/dpdk-pod.yaml).
pub const DPDK_POD_CAPS: u64 = (1 << CAP_NET_RAW) | (1 << CAP_IPC_LOCK);

/// One hugepage pool as sysfs `kernel/mm/hugepages` shows it.
#[derive(Debug, Clone, Copy)]
pub struct Hugepages {
    pub size_kb: u64,
    pub free: u64,
}

impl Hugepages {
    /// The `pagesize=` option of a hugetlbfs mount of this size (`2M`, `1G`).
    pub fn pagesize(&self) -> String {
        match self.size_kb {
            kb if kb % (1 << 20) == 0 => format!("{}G", kb >> 20),
            kb if kb % (1 << 10) == 0 => format!("{}M", kb >> 10),
            kb => format!("{kb}K"),
        }
    }
}

/// One line of `/proc/self/mountinfo`.
pub fn mount_line(
    id: u32,
    dev: &str,
    root: &str,
    at: &str,
    opts: &str,
    fs: &str,
    sopts: &str,
) -> String {
    format!("{id} 1 {dev} {root} {at} {opts} - {fs} {fs} {sopts}\n")
}

/// The procfs side of a pod, written by [`PodProc::write`].
#[derive(Debug, Clone)]
pub struct PodProc {
    pub mountinfo: String,
    /// CapEff.
    pub caps: u64,
    /// Soft and hard `Max locked memory` (bytes or `unlimited`).
    pub memlock: String,
    /// The netdevs of the pod's network namespace (`net/dev`).
    pub netdevs: Vec<String>,
    /// The PFN the pagemap stand-in gives for address 0 (0: unreadable, as unprivileged).
    pub pfn: u64,
}

impl PodProc {
    /// A healthy unprivileged DPDK pod: its own sysfs at `/sys` (read-only), a read-only bind
    /// of each of `counters` (container paths under `/sys`, as nicplug's mounts give them), a
    /// hugetlbfs at `/dev/hugepages`, CapEff NET_RAW + IPC_LOCK, an 8 MiB memlock limit and
    /// zero PFNs.
    pub fn healthy(netdevs: &[&str], counters: &[&str], hugepages: Hugepages) -> Self {
        let mut mountinfo = mount_line(1, "0:100", "/", "/", "rw", "overlay", "rw");
        mountinfo += &mount_line(2, "0:50", "/", "/sys", "ro,nosuid", "sysfs", "ro");
        let mut id = 3;
        for at in counters {
            let root = at.strip_prefix("/sys").unwrap_or(at);
            mountinfo += &mount_line(id, "0:22", root, at, "ro,relatime", "sysfs", "rw");
            id += 1;
        }
        mountinfo += &mount_line(
            id,
            "0:60",
            "/",
            "/dev/hugepages",
            "rw",
            "hugetlbfs",
            &format!("rw,pagesize={}", hugepages.pagesize()),
        );
        PodProc {
            mountinfo,
            caps: DPDK_POD_CAPS,
            memlock: "8388608".into(),
            netdevs: netdevs.iter().map(|s| s.to_string()).collect(),
            pfn: 0,
        }
    }

    /// Writes the files under `proc_root` (replacing earlier ones).
    pub fn write(&self, proc_root: &Path) -> io::Result<()> {
        let put = |rel: &str, content: &[u8]| {
            let p = proc_root.join(rel);
            fs::create_dir_all(p.parent().unwrap_or(proc_root))?;
            fs::write(p, content)
        };
        put("self/mountinfo", self.mountinfo.as_bytes())?;
        put(
            "self/status",
            format!(
                "Name:\tdpdk\nCapInh:\t0000000000000000\nCapEff:\t{:016x}\n",
                self.caps
            )
            .as_bytes(),
        )?;
        put(
            "self/limits",
            format!(
                "Limit                     Soft Limit           Hard Limit           Units\n\
                 Max locked memory         {0:<20} {0:<20} bytes\n",
                self.memlock
            )
            .as_bytes(),
        )?;
        let mut dev = String::from(
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
        );
        for n in &self.netdevs {
            dev += &format!("{n:>6}: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n");
        }
        put("net/dev", dev.as_bytes())?;
        put("self/pagemap", &procfs::pagemap_entry(self.pfn))?;
        put("sys/kernel/cap_last_cap", b"40\n")
    }
}

/// Adds what a pod's sysfs has besides the node's functions: each of `virtual_netdevs` (`lo`,
/// the pod's `eth0`) under `devices/virtual/net` unless a netdev of that name is listed
/// already, and the hugepage pool.
pub fn add_pod_entries(
    sysfs_root: &Path,
    virtual_netdevs: &[&str],
    hugepages: Hugepages,
) -> io::Result<()> {
    for n in virtual_netdevs {
        let link = sysfs_root.join("class/net").join(n);
        if fs::symlink_metadata(&link).is_ok() {
            continue;
        }
        fs::create_dir_all(sysfs_root.join("devices/virtual/net").join(n))?;
        fs::create_dir_all(sysfs_root.join("class/net"))?;
        std::os::unix::fs::symlink(format!("../../devices/virtual/net/{n}"), link)?;
    }
    let hp = sysfs_root.join(format!(
        "kernel/mm/hugepages/hugepages-{}kB",
        hugepages.size_kb
    ));
    fs::create_dir_all(&hp)?;
    fs::write(hp.join("free_hugepages"), format!("{}\n", hugepages.free))
}

/// What the pod's own sysfs shows: only the netdevs of its network namespace (`keep`); every
/// other `class/net` entry and its device directory are removed.
pub fn prune_netdevs(sysfs_root: &Path, keep: &[&str]) -> io::Result<()> {
    let class = sysfs_root.join("class/net");
    for e in fs::read_dir(&class)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name.as_str()) {
            if let Ok(target) = fs::canonicalize(e.path()) {
                fs::remove_dir_all(target)?;
            }
            fs::remove_file(e.path())?;
        }
    }
    Ok(())
}

/// Renames a netdev in sysfs as sriov-cni does when it moves a VF's netdev into the pod
/// (`ens1f0v0` becomes the pod's `net1`): its directory under the device and its `class/net`
/// link.
pub fn rename_netdev(sysfs_root: &Path, from: &str, to: &str) -> io::Result<()> {
    let class = sysfs_root.join("class/net");
    let old_link = class.join(from);
    let target = fs::read_link(&old_link)?;
    let dir = fs::canonicalize(&old_link)?;
    let parent = dir
        .parent()
        .ok_or_else(|| io::Error::other("netdev directory without parent"))?;
    fs::rename(&dir, parent.join(to))?;
    fs::remove_file(&old_link)?;
    std::os::unix::fs::symlink(target.with_file_name(to), class.join(to))
}

/// How [`device_nodes`] could make the pod's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// Character devices with the host nodes' numbers.
    Real,
    /// The host's nodes are not character devices (the fixture was written without permission
    /// to mknod), so the pod's are the same placeholder files: a doctor fails them.
    Placeholders,
}

/// Makes `dev_root` hold exactly `nodes` (`(host path, container path)`): a character device
/// with the host node's number (mknod, else a hard link), or a hard link of the host's
/// placeholder file when the host node is not a device.
pub fn device_nodes(dev_root: &Path, nodes: &[(PathBuf, String)]) -> io::Result<NodeKind> {
    let mut kind = NodeKind::Real;
    fs::create_dir_all(dev_root)?;
    for (host, container) in nodes {
        let at = dev_root.join(container.trim_start_matches("/dev/"));
        fs::create_dir_all(at.parent().unwrap_or(dev_root))?;
        let st = rustix::fs::stat(host)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice {
            let made = rustix::fs::mknodat(
                rustix::fs::CWD,
                &at,
                FileType::CharacterDevice,
                Mode::from_bits_truncate(0o666),
                st.st_rdev,
            );
            if made.is_err() {
                fs::hard_link(host, &at)?;
            }
        } else {
            fs::hard_link(host, &at)?;
            kind = NodeKind::Placeholders;
        }
    }
    Ok(kind)
}
