//! Every host path nicplug touches, in one struct passed in from the edge.
//!
//! Nothing below the CLI knows where `/sys` or `/dev` live: tests and the demo point these at
//! fixture trees, a DaemonSet at the host's real directories.

use std::path::{Path, PathBuf};

/// Roots of the host filesystems nicplug reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// The sysfs mount to discover functions from (default `/sys`).
    pub sysfs_root: PathBuf,
    /// Where the host's device nodes live (default `/dev`); host paths of handed-out nodes.
    pub dev_root: PathBuf,
    /// procfs, for the IPv4 routing table (default `/proc`).
    pub proc_root: PathBuf,
    /// Kubelet's state directory (default `/var/lib/kubelet`).
    pub kubelet_dir: PathBuf,
    /// CDI spec directory (default `/var/run/cdi`).
    pub cdi_dir: PathBuf,
    /// CNI device-info directory (default `/var/run/k8s.cni.cncf.io/devinfo/dp`).
    pub device_info_dir: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            sysfs_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
            proc_root: PathBuf::from("/proc"),
            kubelet_dir: PathBuf::from("/var/lib/kubelet"),
            cdi_dir: PathBuf::from("/var/run/cdi"),
            device_info_dir: PathBuf::from("/var/run/k8s.cni.cncf.io/devinfo/dp"),
        }
    }
}

impl HostPaths {
    /// Paths for a simulated host laid out under one directory as `sys/`, `dev/`, `proc/`,
    /// `kubelet/`, `cdi/` and `devinfo/` (the layout the fixture materialiser writes).
    pub fn under(root: &Path) -> Self {
        HostPaths {
            sysfs_root: root.join("sys"),
            dev_root: root.join("dev"),
            proc_root: root.join("proc"),
            kubelet_dir: root.join("kubelet"),
            cdi_dir: root.join("cdi"),
            device_info_dir: root.join("devinfo"),
        }
    }

    /// Host path of a device node given its canonical in-container path (`/dev/...`).
    pub fn dev_host_path(&self, canonical: &str) -> PathBuf {
        self.dev_root.join(canonical.trim_start_matches("/dev/"))
    }

    /// Host path of a sysfs object given its path relative to the sysfs root.
    pub fn sysfs_host_path(&self, relative: &Path) -> PathBuf {
        self.sysfs_root.join(relative)
    }
}
