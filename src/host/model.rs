//! The host snapshot: plain data describing the node's network functions, read once from sysfs.
//! Everything after the read (pools, container edits) is a pure function of this.

use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// `carrier`; `None` when unreadable (the kernel refuses the read while the link is
    /// administratively down).
    pub carrier: Option<bool>,
    /// `ether`, `infiniband`, ... derived from the ARPHRD `type`.
    pub link_type: String,
    /// This netdev carries an IPv4 or IPv6 default route (never offered, like the SR-IOV
    /// plugin's IPv4 check).
    pub default_route: bool,
    /// `phys_port_name`: `p0` on an uplink, `pf0vf3` / `pf0sf88` on a switchdev representor;
    /// `None` when the driver reports none (legacy mode).
    pub phys_port_name: Option<String>,
    /// `phys_switch_id` of the e-switch the netdev belongs to (switchdev mode).
    pub phys_switch_id: Option<String>,
}

/// One port of an RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdmaPort {
    pub number: u32,
    /// State name without the number, e.g. `ACTIVE`, `DOWN`.
    pub state: String,
    /// Physical state name without the number, e.g. `LinkUp`, `Disabled`, `Polling`; `None`
    /// when the file is absent.
    pub phys_state: Option<String>,
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
    /// Switchdev representors hanging under this PF (`phys_port_name` naming a function, not a
    /// port): never the PF's own netdev, never offered.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub representors: Vec<NetDev>,
    /// The IOMMU group is a vfio no-IOMMU group (its `name` is `vfio-noiommu`): the group node
    /// is `/dev/vfio/noiommu-<group>`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub noiommu: bool,
    /// `/dev/uioN` of a function bound to a UIO driver (`igb_uio`, `uio_pci_generic`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uio: Option<CharDev>,
    /// The vDPA device created on this function, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vdpa: Option<VdpaDevice>,
}

/// Which vDPA bus driver a vDPA device is bound to: the SR-IOV plugin's `vdpaType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VdpaKind {
    /// `vhost_vdpa`: a `/dev/vhost-vdpa-N` char device for a VMM or DPDK's virtio-user.
    Vhost,
    /// `virtio_vdpa`: a kernel virtio-net netdev, no device node.
    Virtio,
}

/// A vDPA device (`bus/vdpa/devices/<name>`) whose parent is a PCI function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VdpaDevice {
    /// The name given at `vdpa dev add name <name>`.
    pub name: String,
    /// `None` when unbound or bound to a driver nicplug does not know.
    pub kind: Option<VdpaKind>,
    /// Bound vDPA bus driver, as sysfs names it.
    pub driver: Option<String>,
    /// `/dev/vhost-vdpa-N` (vhost only).
    pub node: Option<CharDev>,
    /// The virtio-net netdev (virtio only).
    pub netdevs: Vec<NetDev>,
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

/// An auxiliary-bus device nicplug hands out: an mlx5 scalable function (SF),
/// `bus/auxiliary/devices/mlx5_core.sf.N`, a directory under its parent PCI function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuxFunction {
    /// `mlx5_core.sf.N`: the device ID advertised to kubelet. N is a global index that can change
    /// when the SF is re-created; `sfnum` is the stable number.
    pub name: String,
    /// The SF number given at creation (`devlink port add ... sfnum X`).
    pub sfnum: u32,
    /// PCI address of the parent function (the PF the SF belongs to).
    pub parent: String,
    /// Bound driver, `mlx5_core.sf` when probed.
    pub driver: Option<String>,
    /// The parent's NUMA node (aux devices have none of their own).
    pub numa_node: Option<u32>,
    pub netdevs: Vec<NetDev>,
    /// `None` for a lightweight SF (no RDMA child, devlink `enable_rdma` off).
    pub rdma: Option<RdmaDevice>,
    /// Canonical directory relative to the sysfs root, e.g.
    /// `devices/pci0000:ae/0000:ae:00.0/0000:af:00.0/mlx5_core.sf.4`.
    pub sysfs_dir: PathBuf,
}

impl AuxFunction {
    /// Why this SF can land in no RDMA pool, when it cannot.
    pub fn rdma_absent_reason(&self) -> Option<&'static str> {
        match (&self.rdma, self.netdevs.is_empty()) {
            (Some(_), _) => None,
            (None, true) => Some(
                "lightweight SF: no netdev, no RDMA device (devlink enable_eth/enable_rdma off)",
            ),
            (None, false) => Some("SF without an RDMA device (devlink enable_rdma off)"),
        }
    }
}

/// `mlx5_core.sf.<digits>`: the only aux device names nicplug reads or puts into paths.
pub fn is_sf_name(s: &str) -> bool {
    s.strip_prefix("mlx5_core.sf.")
        .is_some_and(|n| !n.is_empty() && n.len() <= 10 && n.bytes().all(|c| c.is_ascii_digit()))
}

/// A device nicplug can hand out, whichever bus it sits on. Pools, edits and renderings work
/// through this; bus-specific selectors look at the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device<'a> {
    Pci(&'a PciFunction),
    Aux(&'a AuxFunction),
}

impl<'a> Device<'a> {
    /// The ID advertised to kubelet: the PCI address or the aux device name.
    pub fn id(&self) -> &'a str {
        match self {
            Device::Pci(f) => &f.address,
            Device::Aux(a) => &a.name,
        }
    }

    pub fn numa_node(&self) -> Option<u32> {
        match self {
            Device::Pci(f) => f.numa_node,
            Device::Aux(a) => a.numa_node,
        }
    }

    pub fn driver(&self) -> Option<&'a str> {
        match self {
            Device::Pci(f) => f.driver.as_deref(),
            Device::Aux(a) => a.driver.as_deref(),
        }
    }

    pub fn netdevs(&self) -> &'a [NetDev] {
        match self {
            Device::Pci(f) => &f.netdevs,
            Device::Aux(a) => &a.netdevs,
        }
    }

    pub fn rdma(&self) -> Option<&'a RdmaDevice> {
        match self {
            Device::Pci(f) => f.rdma.as_ref(),
            Device::Aux(a) => a.rdma.as_ref(),
        }
    }

    pub fn sysfs_dir(&self) -> &'a std::path::Path {
        match self {
            Device::Pci(f) => &f.sysfs_dir,
            Device::Aux(a) => &a.sysfs_dir,
        }
    }

    /// The PCI function behind this device: itself, or an SF's parent (when discovered).
    pub fn pci<'h>(&self, host: &'h Host) -> Option<&'h PciFunction>
    where
        'a: 'h,
    {
        match self {
            Device::Pci(f) => Some(f),
            Device::Aux(a) => host.function(&a.parent),
        }
    }
}

/// A function that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// PCI address or aux device name (or the directory entry name when even that was
    /// unreadable).
    pub address: String,
    /// The file that was missing or garbled.
    pub file: PathBuf,
    pub reason: String,
}

/// Everything discovery learned about the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// Functions of interest, sorted by PCI address. Shared: a re-read or a refresh keeps the
    /// unchanged ones, so the old and the new snapshot never hold a function twice.
    #[serde(serialize_with = "shared_seq")]
    pub functions: Vec<Arc<PciFunction>>,
    /// Scalable functions on the auxiliary bus, sorted by name (numerically).
    pub aux_functions: Vec<AuxFunction>,
    pub rdma_netns_mode: RdmaNetnsMode,
    /// `/dev/infiniband/rdma_cm`, when `rdma_ucm` is loaded.
    pub rdma_cm: Option<CharDev>,
    /// Functions skipped because an attribute was missing or garbled.
    pub skipped: Vec<Skipped>,
}

/// Shared items serialised as themselves (without serde's `rc` feature for one field).
fn shared_seq<T: Serialize, S: serde::Serializer>(v: &[Arc<T>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|x| &**x))
}

impl Host {
    pub fn function(&self, address: &str) -> Option<&PciFunction> {
        self.functions
            .binary_search_by(|f| f.address.as_str().cmp(address))
            .ok()
            .map(|i| &*self.functions[i])
    }

    pub fn aux_function(&self, name: &str) -> Option<&AuxFunction> {
        self.aux_functions.iter().find(|a| a.name == name)
    }

    /// Any device by its kubelet ID: a PCI address or an aux device name.
    pub fn device(&self, id: &str) -> Option<Device<'_>> {
        self.function(id)
            .map(Device::Pci)
            .or_else(|| self.aux_function(id).map(Device::Aux))
    }

    /// Every device: PCI functions first, then aux devices.
    pub fn devices(&self) -> impl Iterator<Item = Device<'_>> {
        self.functions
            .iter()
            .map(|f| Device::Pci(f))
            .chain(self.aux_functions.iter().map(Device::Aux))
    }
}
