//! What a device resolved into: its identity and the plain options that decide its container
//! edits. No front end's schema reaches past this point: the device plugin's `config.json`
//! (resolved in [`crate::pools`]) and a DRA claim's parameters both end up here, and
//! [`crate::edits::container_edits_for`] reads only this.

use crate::device_id::DeviceId;
use crate::info;
use std::sync::Arc;

/// `vdpaType`: which vDPA bus driver a device is handed out through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VdpaType {
    Virtio,
    Vhost,
}

/// RDMA character devices a device may come with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RdmaCharDev {
    /// `/dev/infiniband/uverbsN`: the only one DPDK needs.
    Uverbs,
    /// `/dev/infiniband/rdma_cm` (librdmacm).
    RdmaCm,
    /// `/dev/infiniband/umadN` (libibumad).
    Umad,
    /// `/dev/infiniband/issmN` (libibumad, subnet manager).
    Issm,
}

impl RdmaCharDev {
    pub const ALL: [RdmaCharDev; 4] = [
        RdmaCharDev::Uverbs,
        RdmaCharDev::RdmaCm,
        RdmaCharDev::Umad,
        RdmaCharDev::Issm,
    ];

    /// The spelling used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            RdmaCharDev::Uverbs => "uverbs",
            RdmaCharDev::RdmaCm => "rdma_cm",
            RdmaCharDev::Umad => "umad",
            RdmaCharDev::Issm => "issm",
        }
    }
}

/// The name part of every variable an allocation sets: `PCIDEVICE_<PREFIX>_<NAME>`,
/// `NICPLUG_EAL_ARGS_<PREFIX>_<NAME>`, ... (the SR-IOV plugin's rule, [`info::env_name`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvBase {
    pub prefix: String,
    pub resource_name: String,
}

impl EnvBase {
    pub fn new(prefix: &str, resource_name: &str) -> Self {
        EnvBase {
            prefix: prefix.to_string(),
            resource_name: resource_name.to_string(),
        }
    }

    /// `<prefix>/<name>`, what errors name (a pool's full name).
    pub fn name(&self) -> String {
        format!("{}/{}", self.prefix, self.resource_name)
    }

    /// `<base>_<PREFIX>_<NAME>`.
    pub fn var(&self, base: &str) -> String {
        info::env_name(base, &self.prefix, &self.resource_name)
    }

    /// The variable listing the allocated device IDs; `_INFO` appended for their records.
    pub fn pcidevice(&self) -> String {
        self.var("PCIDEVICE")
    }

    /// The variable carrying the DPDK EAL arguments.
    pub fn eal_args(&self) -> String {
        self.var("NICPLUG_EAL_ARGS")
    }

    /// A shared allocation's ibdevs, comma-separated.
    pub fn shared_ibdevs(&self) -> String {
        self.var("NICPLUG_RDMA_IBDEVS")
    }

    /// A shared allocation's PCI addresses, in the same order.
    pub fn shared_pci(&self) -> String {
        self.var("NICPLUG_RDMA_PCI")
    }

    /// The per-device CDI variable naming the device (`NICPLUG_DEVICE_<..>_<ID>`).
    pub fn device(&self) -> String {
        self.var("NICPLUG_DEVICE")
    }
}

/// How to edit a container for one device, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EditOptions {
    /// RDMA char devices handed out with the device, in this order; empty: none (and no
    /// counters mount, no `rdma` INFO record).
    pub rdma: Vec<RdmaCharDev>,
    /// Bind the RDMA port directories read-only (shared RDMA netns mode only, with `uverbs`).
    pub counters_mount: bool,
    /// Include the device in the `NICPLUG_EAL_ARGS_*` allow-list.
    pub eal_args: bool,
    /// Name it `auxiliary:<id>` in that list (a scalable function) rather than by PCI address.
    pub eal_auxiliary: bool,
    /// Also `/dev/vhost-net` and `/dev/net/tun` (`needVhostNet`).
    pub vhost_net: bool,
    /// Hand out the function's vDPA device (its node for `vhost`, a record for both).
    pub vdpa: Option<VdpaType>,
    /// The `extra` INFO record (`additionalInfo`), already merged for this device; `None`: no
    /// record at all.
    pub extra_info: Option<info::Record>,
}

impl Default for EditOptions {
    /// A plain device: no RDMA, counters mount and EAL arguments on (as nicplug's defaults).
    fn default() -> Self {
        EditOptions {
            rdma: Vec::new(),
            counters_mount: true,
            eal_args: true,
            eal_auxiliary: false,
            vhost_net: false,
            vdpa: None,
            extra_info: None,
        }
    }
}

/// A device and its options: what [`crate::edits::container_edits_for`] takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDevice {
    pub id: DeviceId,
    /// Shared: many devices of one pool carry the same options.
    pub options: Arc<EditOptions>,
}
