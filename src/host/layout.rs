//! Where things live in sysfs, and the small parsers of what is found there: the one place
//! discovery ([`super::discover`]), the doctor and the metrics take a path shape or a value
//! format from. Paths are built from a sysfs root ([`crate::HostPaths::sysfs`]) and from names
//! the callers have checked ([`super::is_bdf`], [`super::is_sf_name`], [`is_rdma_node_name`]).

use super::model::{RdmaNetnsMode, is_sf_name};
use crate::paths::HostPaths;
use std::io::Read;
use std::path::{Path, PathBuf};

/// PCI functions by address, each a link to its device directory.
pub const PCI_DEVICES: &str = "bus/pci/devices";
/// Auxiliary devices (scalable functions: `mlx5_core.sf.N`) by name.
pub const AUX_DEVICES: &str = "bus/auxiliary/devices";
/// `ib_core`'s RDMA network namespace mode (`Y`: shared, `N`: exclusive).
pub const NETNS_MODE: &str = "module/ib_core/parameters/netns_mode";
/// vfio's no-IOMMU switch (`Y` when on).
pub const NOIOMMU_MODE: &str = "module/vfio/parameters/enable_unsafe_noiommu_mode";
/// The netdevs of the network namespace that mounted this sysfs.
pub const CLASS_NET: &str = "class/net";
/// `rdma_cm`'s misc device (a link in a real sysfs).
pub const RDMA_CM: &str = "class/misc/rdma_cm";
/// One directory per hugepage size, `hugepages-<size>kB/free_hugepages`.
pub const HUGEPAGES: &str = "kernel/mm/hugepages";

/// Below a device directory: its `uverbsN` entries.
pub const VERBS_DIR: &str = "infiniband_verbs";
/// Below a device directory: its ibdevs.
pub const IB_DIR: &str = "infiniband";
/// Below a device directory: its `umadN` and `issmN` entries.
pub const MAD_DIR: &str = "infiniband_mad";
/// Below a device directory: its netdevs.
pub const NET_DIR: &str = "net";
/// Below an RDMA port directory: the driver's counters (`out_of_buffer`, ...), and the IB
/// standard ones.
pub const HW_COUNTERS: &str = "hw_counters";
pub const PORT_COUNTERS: &str = "counters";
/// The counter DPDK's mlx5 xstats cannot do without.
pub const OUT_OF_BUFFER: &str = "out_of_buffer";

/// The netdev statistics the metrics expose (`<netdev>/statistics/<name>`) and the doctor
/// compares across namespaces (the first two).
pub const NETDEV_STATS: [&str; 6] = [
    "rx_bytes",
    "tx_bytes",
    "rx_packets",
    "tx_packets",
    "rx_dropped",
    "tx_dropped",
];

/// The paths of one sysfs tree.
#[derive(Debug, Clone, Copy)]
pub struct Layout<'a> {
    root: &'a Path,
}

impl<'a> Layout<'a> {
    pub fn new(root: &'a Path) -> Self {
        Layout { root }
    }

    pub fn root(&self) -> &'a Path {
        self.root
    }

    /// `<root>/<relative>`: a path from one of the constants above, or a device's own
    /// `devices/...` directory as the snapshot records it.
    pub fn at(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join(relative)
    }

    /// The directory (through its bus link) of a device nicplug hands out: a PCI function by
    /// address, a scalable function by name. `id` must be one of those shapes.
    pub fn device(&self, id: &str) -> PathBuf {
        let bus = if is_sf_name(id) {
            AUX_DEVICES
        } else {
            PCI_DEVICES
        };
        self.root.join(bus).join(id)
    }

    /// A netdev's `statistics` directory in this namespace's `class/net`.
    pub fn class_net_statistics(&self, netdev: &str) -> PathBuf {
        self.root.join(CLASS_NET).join(netdev).join("statistics")
    }
}

impl HostPaths {
    /// The layout of the sysfs tree these paths read.
    pub fn sysfs(&self) -> Layout<'_> {
        Layout::new(&self.sysfs_root)
    }
}

/// `<device>/infiniband/<ibdev>/ports`.
pub fn ports_dir(device: &Path, ibdev: &str) -> PathBuf {
    device.join(IB_DIR).join(ibdev).join("ports")
}

/// `<device>/net/<netdev>/statistics`.
pub fn netdev_statistics(device: &Path, netdev: &str) -> PathBuf {
    device.join(NET_DIR).join(netdev).join("statistics")
}

// ---- parsers -------------------------------------------------------------------------------

/// A kernel boolean parameter: `Y`/`1` or `N`/`0`; `None` for anything else.
pub fn parse_flag(text: &str) -> Option<bool> {
    match text.trim() {
        "Y" | "1" => Some(true),
        "N" | "0" => Some(false),
        _ => None,
    }
}

/// `netns_mode`'s value; `None` when unrecognised (callers treat that as shared).
pub fn parse_netns_mode(text: &str) -> Option<RdmaNetnsMode> {
    parse_flag(text).map(|shared| match shared {
        true => RdmaNetnsMode::Shared,
        false => RdmaNetnsMode::Exclusive,
    })
}

/// A char device's `dev` file: `MAJOR:MINOR`.
pub fn parse_dev(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.trim().parse().ok()?, minor.trim().parse().ok()?))
}

/// `<prefix>N` with at most six digits.
fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.len() <= 6 && n.bytes().all(|c| c.is_ascii_digit()))
}

/// `uverbsN`: the verbs node of a device.
pub fn is_uverbs_name(name: &str) -> bool {
    numbered(name, "uverbs")
}

/// `uverbsN`, `umadN` or `issmN`: the only names that may become `/dev/infiniband/<name>`.
pub fn is_rdma_node_name(name: &str) -> bool {
    ["uverbs", "umad", "issm"].iter().any(|p| numbered(name, p))
}

/// The in-container path of a char device node of the RDMA subsystem.
pub fn rdma_node_path(name: &str) -> String {
    format!("/dev/infiniband/{name}")
}

/// Whether `relative` (components below the sysfs root, `devices/...`) is an RDMA port
/// directory of a PCI function or of a scalable function directly under one:
/// `devices/.../<bdf>/infiniband/<ibdev>/ports/<n>` or
/// `devices/.../<bdf>/mlx5_core.sf.<k>/infiniband/<ibdev>/ports/<n>`. The error says what is
/// wrong. Only such a directory may become a bind mount into a container.
pub fn check_port_dir(parts: &[&str]) -> Result<(), &'static str> {
    let n = parts.len();
    if n < 6 || parts[0] != "devices" || parts[n - 2] != "ports" || parts[n - 4] != IB_DIR {
        return Err("not an RDMA port directory under devices/");
    }
    let is_bdf = super::is_bdf;
    if is_bdf(parts[n - 5]) || (n >= 7 && is_sf_name(parts[n - 5]) && is_bdf(parts[n - 6])) {
        Ok(())
    } else {
        Err("the port's device is neither a PCI function nor an mlx5 SF under one")
    }
}

/// At most a page of a regular attribute file, never through a link at the last component
/// (discovery's bounded read, for the doctor's reads of the same files).
pub fn read_attr(path: &Path) -> std::io::Result<String> {
    super::sysfs::read_bounded(path)
}

// ---- counters ------------------------------------------------------------------------------

/// At most this many counter files per directory (mlx5 has about 40 in `hw_counters`).
pub const MAX_COUNTER_FILES: usize = 256;
/// A counter file is one decimal number and a newline; anything longer is not one.
const MAX_COUNTER_BYTES: u64 = 32;

/// One counter file (a netdev statistic, an RDMA port counter, `free_hugepages`) as a number;
/// `None` when absent, too long or not a number.
pub fn read_counter(path: &Path) -> Option<u64> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_COUNTER_BYTES + 1)
        .read_to_string(&mut text)
        .ok()?;
    if text.len() as u64 > MAX_COUNTER_BYTES {
        return None;
    }
    text.trim().parse().ok()
}

/// `(name, value)` of every counter file in `dir` (at most [`MAX_COUNTER_FILES`] are looked
/// at), sorted by name. Names other than `[A-Za-z0-9_]+` and unreadable files are left out.
pub fn read_counters(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, u64)> = entries
        .take(MAX_COUNTER_FILES)
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let plain = !name.is_empty()
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !plain {
                return None;
            }
            let value = read_counter(&dir.join(&name))?;
            Some((name, value))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(parse_dev("231:192\n"), Some((231, 192)));
        assert_eq!(parse_dev("231"), None);
        assert_eq!(parse_dev("a:1"), None);
        assert_eq!(parse_netns_mode("Y\n"), Some(RdmaNetnsMode::Shared));
        assert_eq!(parse_netns_mode("0"), Some(RdmaNetnsMode::Exclusive));
        assert_eq!(parse_netns_mode("maybe"), None);
        assert_eq!(parse_flag("N"), Some(false));
    }

    #[test]
    fn rdma_node_names() {
        assert!(is_rdma_node_name("uverbs12"));
        assert!(is_rdma_node_name("issm0"));
        assert!(!is_rdma_node_name("uverbs"));
        assert!(!is_rdma_node_name("uverbs1/../../x"));
        assert!(!is_rdma_node_name("rdma_cm"));
        assert!(is_uverbs_name("uverbs3") && !is_uverbs_name("umad3"));
        assert!(!is_uverbs_name("uverbs1234567"));
    }

    #[test]
    fn device_directories_by_bus() {
        let paths = HostPaths::under(Path::new("/h"));
        assert_eq!(
            paths.sysfs().device("0000:3b:00.2"),
            Path::new("/h/sys/bus/pci/devices/0000:3b:00.2")
        );
        assert_eq!(
            paths.sysfs().device("mlx5_core.sf.4"),
            Path::new("/h/sys/bus/auxiliary/devices/mlx5_core.sf.4")
        );
    }

    #[test]
    fn counters_read_numbers_and_skip_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("out_of_buffer"), "42\n").unwrap();
        std::fs::write(d.join("rx_write_requests"), "7").unwrap();
        std::fs::write(d.join("garbled"), "n/a\n").unwrap();
        std::fs::write(d.join("huge"), "1".repeat(100)).unwrap();
        std::fs::write(d.join("bad name"), "1\n").unwrap();
        assert_eq!(
            read_counters(d),
            vec![
                ("out_of_buffer".to_string(), 42),
                ("rx_write_requests".to_string(), 7)
            ]
        );
        assert_eq!(read_counter(&d.join("absent")), None);
        assert!(read_counters(&d.join("absent")).is_empty());
    }

    #[test]
    fn counters_cap_files_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_COUNTER_FILES + 50 {
            std::fs::write(dir.path().join(format!("c{i}")), "1\n").unwrap();
        }
        assert_eq!(read_counters(dir.path()).len(), MAX_COUNTER_FILES);
    }
}
