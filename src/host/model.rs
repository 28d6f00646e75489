//! The host snapshot: plain data describing the node's network functions, read once from sysfs.
//! Everything after the read (pools, container edits) is a pure function of this.

use serde::Serialize;
use std::path::PathBuf;

/// A character device node, with its number as the kernel reports it in sysfs `dev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CharDev {
    /// Kernel name, e.g. `uverbs2`, `umad2`, `issm2`, `rdma_cm`.
    pub name: String,
    /// Canonical path inside a container, e.g. `/dev/infiniband/uverbs2`.
    pub path: String,
    pub major: u32,
    pub minor: u32,
}

/// RDMA network namespace mode of `ib_core`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RdmaNetnsMode {
    /// Every netns sees every RDMA device (kernel default); other namespaces lack counters.
    Shared,
    /// An RDMA device lives in exactly one netns and moves with it, counters included.
    Exclusive,
    /// `ib_core` not loaded or its parameter unreadable; treated as shared.
    Unknown,
}

/// Link type of a netdev as the SR-IOV plugin's `linkTypes` selector names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetDev {
    pub name: String,
    pub mac: Option<String>,
    /// `up`, `down`, `unknown`, ... from `operstate`.
    pub operstate: String,
    /// `ether`, `infiniband`, ... derived from the ARPHRD `type`.
    pub link_type: String,
    /// This netdev carries the IPv4 default route (never offered, like the SR-IOV plugin).
    pub default_route: bool,
}

/// One port of an RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdmaPort {
    pub number: u32,
    /// State name without the number, e.g. `ACTIVE`, `DOWN`.
    pub state: String,
    /// `Ethernet` or `InfiniBand`.
    pub link_layer: String,
    /// Default partition key (`pkeys/0`), e.g. `0xffff`; InfiniBand only.
    pub pkey: Option<String>,
    /// Port directory relative to the sysfs root, through `devices/` (the canonical path a
    /// container sees it at).
    pub sysfs_dir: PathBuf,
    pub has_hw_counters: bool,
    pub has_counters: bool,
}

/// The RDMA side of a function: its ibdev and char devices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdmaDevice {
    /// ibdev name, e.g. `mlx5_2`. `None` when the device is not visible in this netns (moved into a
    /// pod in exclusive mode) while its uverbs entry remains.
    pub ibdev: Option<String>,
    pub ports: Vec<RdmaPort>,
    pub uverbs: Option<CharDev>,
    pub umad: Vec<CharDev>,
    pub issm: Vec<CharDev>,
}

/// SR-IOV capability of a physical function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sriov {
    pub total_vfs: u32,
    pub num_vfs: u32,
}

/// A VF's parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PhysFn {
    /// PF PCI address.
    pub address: String,
    /// 0-based VF index (`virtfnN` on the PF).
    pub vf_index: u32,
}

/// Broad class of a PCI function, from its class code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionClass {
    /// 0x02xxxx
    Network,
    /// 0x12xxxx
    Accelerator,
}

/// One PCI function (PF or VF) of interest: a network controller or an accelerator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciFunction {
    /// Full BDF, e.g. `0000:3b:00.2`.
    pub address: String,
    /// Canonical directory relative to the sysfs root, e.g.
    /// `devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2`.
    pub sysfs_dir: PathBuf,
    pub class: FunctionClass,
    pub class_code: u32,
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_device: Option<u16>,
    /// Human model name for known Mellanox/NVIDIA IDs.
    pub model: Option<&'static str>,
    pub driver: Option<String>,
    /// `None` when sysfs says -1 (no NUMA affinity known).
    pub numa_node: Option<u32>,
    pub acpi_index: Option<u32>,
    pub iommu_group: Option<u32>,
    /// Present on a PF that supports SR-IOV.
    pub sriov: Option<Sriov>,
    /// Present on a VF.
    pub physfn: Option<PhysFn>,
    pub netdevs: Vec<NetDev>,
    pub rdma: Option<RdmaDevice>,
}

impl PciFunction {
    pub fn is_vf(&self) -> bool {
        self.physfn.is_some()
    }

    /// Hex vendor ID as the SR-IOV plugin's selectors spell it (`15b3`).
    pub fn vendor_hex(&self) -> String {
        format!("{:04x}", self.vendor)
    }

    pub fn device_hex(&self) -> String {
        format!("{:04x}", self.device)
    }
}

/// A function that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// PCI address (or the directory entry name when even that was unreadable).
    pub address: String,
    /// The file that was missing or garbled.
    pub file: PathBuf,
    pub reason: String,
}

/// Everything discovery learned about the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// Functions of interest, sorted by PCI address.
    pub functions: Vec<PciFunction>,
    pub rdma_netns_mode: RdmaNetnsMode,
    /// `/dev/infiniband/rdma_cm`, when `rdma_ucm` is loaded.
    pub rdma_cm: Option<CharDev>,
    /// Functions skipped because an attribute was missing or garbled.
    pub skipped: Vec<Skipped>,
}

impl Host {
    pub fn function(&self, address: &str) -> Option<&PciFunction> {
        self.functions
            .binary_search_by(|f| f.address.as_str().cmp(address))
            .ok()
            .map(|i| &self.functions[i])
    }
}
