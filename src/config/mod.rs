//! The resource configuration: the SR-IOV network device plugin's `config.json`, accepted
//! unchanged (JSON or YAML), plus nicplug's own optional `nicplug` block per resource.
//!
//! Parsing goes text -> `serde_json::Value` -> typed [`Config`], walking the value by hand so that
//! every rejection can name its JSON path, the rule it broke and the fix.

mod file;
mod parse;
pub mod range;

use std::collections::BTreeMap;

/// Defined with the edits they decide (the config depends on them, not the reverse).
pub use crate::resolved::{RdmaCharDev, VdpaType};
pub use file::{format_of, read_config_bytes};
pub use parse::{
    ConfigError, Problem, is_dns_subdomain, parse_config, parse_config_bytes, parse_config_file,
};
pub use range::VfRange;

/// Largest config file read: far above any real `resourceList` (a hundred resources fill
/// ~50 KiB), and small enough that the parsed tree of the densest file stays a few MiB.
pub const MAX_CONFIG_BYTES: usize = 256 * 1024;

/// Which syntax a config text is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

/// A whole config file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    pub resources: Vec<ResourceConfig>,
    /// The RDMA shared device plugin's `configList`: pools of many IDs sharing whole HCAs.
    pub shared: Vec<SharedResource>,
    /// Its `periodicUpdateInterval` in seconds, when given (0: that plugin's "never").
    pub periodic_update_interval: Option<u64>,
}

/// The RDMA shared device plugin's default `resourcePrefix`.
pub const SHARED_DEFAULT_PREFIX: &str = "rdma";

/// Most IDs one shared pool advertises: kubelet reads ListAndWatch with gRPC's default 4 MiB
/// message limit, and an ID with its health costs about 20 bytes; this keeps well under it.
pub const MAX_HCA_IDS: u32 = 100_000;

/// The RDMA shared device plugin's default `periodicUpdateInterval`, seconds.
pub const SHARED_DEFAULT_INTERVAL: u64 = 60;

/// One entry of `configList` (the RDMA shared device plugin's format): `rdma_hca_max` IDs that
/// all stand for every HCA the selector picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedResource {
    pub resource_name: String,
    /// Its own prefix: that plugin takes no command-line default, so `rdma` when unset.
    pub resource_prefix: String,
    pub rdma_hca_max: u32,
    pub selector: SharedSelector,
}

impl SharedResource {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.resource_prefix, self.resource_name)
    }
}

/// `selectors` of a `configList` entry (or its deprecated `devices`, read as `if_names`).
/// Values of one field are ORed, fields ANDed, an empty field means any.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SharedSelector {
    /// Lower-case hex without `0x`.
    pub vendors: Vec<String>,
    /// Lower-case hex without `0x`.
    pub device_ids: Vec<String>,
    pub drivers: Vec<String>,
    pub if_names: Vec<String>,
    pub link_types: Vec<String>,
}

/// `deviceType` of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    NetDevice,
    Accelerator,
    AuxNetDevice,
}

impl DeviceType {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceType::NetDevice => "netDevice",
            DeviceType::Accelerator => "accelerator",
            DeviceType::AuxNetDevice => "auxNetDevice",
        }
    }
}

/// A PF named by netdev (`pfNames`) or PCI address (`rootDevices`), optionally limited to some
/// VF indices with the `#` syntax (`ens1f0#0,2-7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfSelector {
    pub pf: String,
    /// `None` selects the PF itself and all its VFs.
    pub vfs: Option<VfRange>,
}

/// One selector object. Values of one field are ORed; different fields are ANDed; an empty
/// list means "any".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// Lower-case hex without `0x`.
    pub vendors: Vec<String>,
    /// Lower-case hex without `0x`.
    pub devices: Vec<String>,
    pub drivers: Vec<String>,
    pub pci_addresses: Vec<String>,
    pub acpi_indexes: Vec<String>,
    pub pf_names: Vec<PfSelector>,
    pub root_devices: Vec<PfSelector>,
    pub link_types: Vec<String>,
    pub p_keys: Vec<String>,
    pub ddp_profiles: Vec<String>,
    pub is_rdma: bool,
    pub need_vhost_net: bool,
    pub vdpa_type: Option<VdpaType>,
    pub aux_types: Vec<String>,
}

/// Which rule decides a device's health (`nicplug.health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthRule {
    /// A function is usable while its uplink carries a link: the PF's carrier (or its RDMA
    /// port's `phys_state`), the VF's administrative state on the PF, a bound driver. A free VF's
    /// own netdev being down is normal (a CNI brings it up inside the pod) and ignored.
    #[default]
    Uplink,
    /// Also the device's own netdev and RDMA port state: for pods that use the host's netdev
    /// as it is (hostNetwork, no CNI).
    Strict,
}

impl HealthRule {
    pub const ALL: [HealthRule; 2] = [HealthRule::Uplink, HealthRule::Strict];

    /// The spelling used in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthRule::Uplink => "uplink",
            HealthRule::Strict => "strict",
        }
    }
}

/// nicplug's own per-resource options (the optional `nicplug` object of a resource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicplugOptions {
    /// Bind the RDMA port directories read-only so `hw_counters` are visible (default true; only
    /// in shared RDMA netns mode).
    pub counters_mount: bool,
    /// Which RDMA char devices to pass. `None`: the SR-IOV plugin's behaviour (all four when
    /// `isRdma`, none otherwise).
    pub rdma_devices: Option<Vec<RdmaCharDev>>,
    /// Set the `NICPLUG_EAL_ARGS_*` variable (default true).
    pub eal_args: bool,
    /// How health is judged (default [`HealthRule::Uplink`]).
    pub health: HealthRule,
}

impl Default for NicplugOptions {
    fn default() -> Self {
        NicplugOptions {
            counters_mount: true,
            rdma_devices: None,
            eal_args: true,
            health: HealthRule::Uplink,
        }
    }
}

/// One entry of `resourceList`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceConfig {
    pub resource_name: String,
    /// Overrides the command-line default prefix.
    pub resource_prefix: Option<String>,
    pub device_type: DeviceType,
    pub exclude_topology: bool,
    /// `{"*": {k: v}, "<pci>": {k: v}}`; the specific key wins. `None` when absent or null
    /// (then no `extra` INFO record at all, as with the SR-IOV plugin).
    pub additional_info: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// In file order; the first matching selector wins.
    pub selectors: Vec<Selector>,
    pub nicplug: NicplugOptions,
}

impl ResourceConfig {
    /// `<prefix>/<name>` with the resource's own prefix or the given default.
    pub fn full_name(&self, default_prefix: &str) -> String {
        format!("{}/{}", self.prefix(default_prefix), self.resource_name)
    }

    pub fn prefix<'a>(&'a self, default_prefix: &'a str) -> &'a str {
        self.resource_prefix.as_deref().unwrap_or(default_prefix)
    }
}
