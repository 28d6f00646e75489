//! Pools: which function lands in which resource, by the SR-IOV network device plugin's rules.
//!
//! A function belongs to the first resource (in file order) that selects it; within a resource
//! the first matching selector wins and decides the function's options (`isRdma`,
//! `needVhostNet`). Two discovery quirks of that plugin are kept: a netdev carrying the IPv4
//! default route is never offered, and a PF with VFs enabled is never offered (its VFs are).

use crate::config::{
    Config, DeviceType, NicplugOptions, PfSelector, RdmaCharDev, ResourceConfig, Selector,
    SharedResource, SharedSelector, VdpaType,
};
use crate::host::{AuxFunction, FunctionClass, Host, PciFunction, VdpaKind};
use crate::resolved::{EditOptions, EnvBase};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One device of a pool, as kubelet sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolDevice {
    /// Device ID advertised to kubelet: the PCI address, or `mlx5_core.sf.N` for an SF.
    pub id: String,
    /// NUMA node for the topology hint; `None` when unknown or `excludeTopology`.
    pub numa_node: Option<u32>,
    /// Index of the selector that matched, whose options apply to this device.
    #[serde(skip)]
    pub selector: usize,
    /// How a container is edited for it: the resource and that selector, resolved once.
    /// Shared, so the many IDs of a shared pool cost one copy.
    #[serde(skip)]
    pub options: Arc<EditOptions>,
}

/// A resource with the devices it offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// `<prefix>/<name>`, the extended resource name pods request.
    pub name: String,
    pub prefix: String,
    pub resource_name: String,
    #[serde(skip)]
    pub config: ResourceConfig,
    pub devices: Vec<PoolDevice>,
    /// Set for an RDMA shared pool (`configList`): its devices are `rdmaHcaMax` IDs `0`..`N-1`,
    /// each standing for every HCA listed here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedPool>,
    /// The resource's own options without any selector's: for IDs outside the pool (the name
    /// families `identity` derives).
    #[serde(skip)]
    pub edit_options: EditOptions,
}

/// The HCAs behind a shared pool's IDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SharedPool {
    /// PCI addresses of the selected functions, sorted.
    pub members: Vec<String>,
    pub rdma_hca_max: u32,
}

impl Pool {
    pub fn device(&self, id: &str) -> Option<&PoolDevice> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// This pool cut down to `ids`, with other `nicplug` options (a DRA claim's), each device's
    /// edit options resolved again from them: the pool a config with those options would
    /// give, for those devices.
    pub fn with_options(&self, ids: &[&str], nicplug: NicplugOptions) -> Pool {
        let mut config = self.config.clone();
        config.nicplug = nicplug;
        let devices = self
            .devices
            .iter()
            .filter(|d| ids.contains(&d.id.as_str()))
            .map(|d| PoolDevice {
                options: Arc::new(resolve_options(
                    &config,
                    config.selectors.get(d.selector).map(|s| (s, d.id.as_str())),
                )),
                ..d.clone()
            })
            .collect();
        Pool {
            name: self.name.clone(),
            prefix: self.prefix.clone(),
            resource_name: self.resource_name.clone(),
            edit_options: resolve_options(&config, None),
            config,
            devices,
            shared: self.shared.clone(),
        }
    }

    /// The name part of the variables its allocations set.
    pub fn env_base(&self) -> EnvBase {
        EnvBase::new(&self.prefix, &self.resource_name)
    }

    /// The options of `id`: its own when the pool has it, else the pool-wide ones.
    pub fn options_of(&self, id: &str) -> &EditOptions {
        self.device(id).map_or(&self.edit_options, |d| &d.options)
    }

    /// The selector whose options apply to a device of this pool.
    pub fn selector_of(&self, device: &PoolDevice) -> &Selector {
        &self.config.selectors[device.selector]
    }
}

/// Where a function landed, for people reading `nicplug discover`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Placement {
    Pool { resource: String },
    Unpooled { reason: String },
}

/// All pools of a node, plus the placement of every discovered function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pools {
    pub pools: Vec<Pool>,
    pub placements: BTreeMap<String, Placement>,
}

impl Pools {
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools
            .iter()
            .find(|p| p.name == name || p.resource_name == name)
    }
}

/// A device's edit options from its resource and the selector that took it; `None` for the
/// pool-wide options (no selector, no device).
pub fn resolve_options(r: &ResourceConfig, selector: Option<(&Selector, &str)>) -> EditOptions {
    let s = selector.map(|(s, _)| s);
    let is_rdma = s.is_some_and(|s| s.is_rdma);
    EditOptions {
        rdma: match &r.nicplug.rdma_devices {
            Some(list) => list.clone(),
            // The SR-IOV plugin's behaviour: all four with isRdma, none without.
            None if is_rdma => RdmaCharDev::ALL.to_vec(),
            None => Vec::new(),
        },
        counters_mount: r.nicplug.counters_mount,
        eal_args: r.nicplug.eal_args,
        eal_auxiliary: r.device_type == DeviceType::AuxNetDevice,
        vhost_net: s.is_some_and(|s| s.need_vhost_net),
        vdpa: s.and_then(|s| s.vdpa_type),
        extra_info: selector
            .and_then(|(_, id)| crate::info::extra(r.additional_info.as_ref(), id))
            .map(|(_, record)| record),
    }
}

/// A pool's device taken by selector `si` of `r`, resolved.
fn pool_device(r: &ResourceConfig, si: usize, id: &str, numa_node: Option<u32>) -> PoolDevice {
    PoolDevice {
        id: id.to_string(),
        numa_node: numa_node.filter(|_| !r.exclude_topology),
        selector: si,
        options: Arc::new(resolve_options(r, Some((&r.selectors[si], id)))),
    }
}

/// Group the host's functions into the configured pools.
pub fn build(host: &Host, config: &Config, default_prefix: &str) -> Pools {
    let mut pools: Vec<Pool> = config
        .resources
        .iter()
        .map(|r| Pool {
            name: r.full_name(default_prefix),
            prefix: r.prefix(default_prefix).to_string(),
            resource_name: r.resource_name.clone(),
            config: r.clone(),
            devices: Vec::new(),
            shared: None,
            edit_options: resolve_options(r, None),
        })
        .collect();
    let mut placements = BTreeMap::new();

    for f in &host.functions {
        let placement = match never_offered(f) {
            Some(reason) => Placement::Unpooled { reason },
            None => match first_match(host, f, &config.resources) {
                Some((ri, si)) => {
                    let pool = &mut pools[ri];
                    let d = pool_device(&pool.config, si, &f.address, f.numa_node);
                    pool.devices.push(d);
                    Placement::Pool {
                        resource: pool.name.clone(),
                    }
                }
                None if config.resources.is_empty() && config.shared.is_empty() => {
                    Placement::Unpooled {
                        reason: "no resource configured".into(),
                    }
                }
                None => Placement::Unpooled {
                    reason: vdpa_miss(host, f, config)
                        .unwrap_or_else(|| "no resource selects it".into()),
                },
            },
        };
        placements.insert(f.address.clone(), placement);
    }
    for sf in &host.aux_functions {
        let placement = match never_offered_aux(host, sf) {
            Some(reason) => Placement::Unpooled { reason },
            None => match first_match_aux(host, sf, &config.resources) {
                Some((ri, si)) => {
                    let pool = &mut pools[ri];
                    let d = pool_device(&pool.config, si, &sf.name, sf.numa_node);
                    pool.devices.push(d);
                    Placement::Pool {
                        resource: pool.name.clone(),
                    }
                }
                None => {
                    let why = match sf.rdma_absent_reason() {
                        Some(r) => format!("; {r}, so no isRdma pool takes it"),
                        None => String::new(),
                    };
                    let base = if config.resources.is_empty() && config.shared.is_empty() {
                        "no resource configured"
                    } else {
                        "no resource selects it"
                    };
                    Placement::Unpooled {
                        reason: format!("{base}{why}"),
                    }
                }
            },
        };
        placements.insert(sf.name.clone(), placement);
    }
    for r in &config.shared {
        pools.push(shared_pool(host, r, &mut placements));
    }
    Pools { pools, placements }
}

/// A shared pool: the HCAs its selector picks among the functions no earlier pool took
/// (exclusive pools first, then shared ones in file order: one function, one pool), and
/// `rdmaHcaMax` IDs when it has at least one. A function the selector picks but another pool
/// holds stays there (`discover` names that pool).
fn shared_pool(
    host: &Host,
    r: &SharedResource,
    placements: &mut BTreeMap<String, Placement>,
) -> Pool {
    let name = r.full_name();
    let mut members = Vec::new();
    for f in &host.functions {
        if !selects_shared(&r.selector, f) {
            continue;
        }
        match placements.get(&f.address) {
            Some(Placement::Pool { .. }) => continue,
            _ => {
                members.push(f.address.clone());
                placements.insert(
                    f.address.clone(),
                    Placement::Pool {
                        resource: name.clone(),
                    },
                );
            }
        }
    }
    members.sort();
    let config = ResourceConfig {
        resource_name: r.resource_name.clone(),
        resource_prefix: Some(r.resource_prefix.clone()),
        device_type: DeviceType::NetDevice,
        exclude_topology: true,
        additional_info: None,
        selectors: vec![Selector {
            is_rdma: true,
            ..Selector::default()
        }],
        nicplug: NicplugOptions {
            rdma_devices: Some(RdmaCharDev::ALL.to_vec()),
            // The IDs are not PCI addresses: no DPDK allow-list to give.
            eal_args: false,
            ..NicplugOptions::default()
        },
    };
    // Every ID stands for the same HCAs: one set of options for all.
    let options = Arc::new(resolve_options(&config, Some((&config.selectors[0], "0"))));
    let devices = if members.is_empty() {
        Vec::new()
    } else {
        (0..r.rdma_hca_max)
            .map(|n| PoolDevice {
                id: n.to_string(),
                numa_node: None,
                selector: 0,
                options: Arc::clone(&options),
            })
            .collect()
    };
    Pool {
        name,
        prefix: r.resource_prefix.clone(),
        resource_name: r.resource_name.clone(),
        edit_options: resolve_options(&config, None),
        config,
        devices,
        shared: Some(SharedPool {
            members,
            rdma_hca_max: r.rdma_hca_max,
        }),
    }
}

/// A shared pool's selector against one PCI function: a network function with an RDMA device
/// (its uverbs node: without it nothing can be handed out), fields ANDed, values ORed.
pub fn selects_shared(s: &SharedSelector, f: &PciFunction) -> bool {
    let any = |list: &[String], value: Option<&str>| {
        list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
    };
    let link = link_type(f);
    f.class == FunctionClass::Network
        && f.rdma.as_ref().is_some_and(|r| r.uverbs.is_some())
        && any(&s.vendors, Some(&f.vendor_hex()))
        && any(&s.device_ids, Some(&f.device_hex()))
        && any(&s.drivers, f.driver.as_deref())
        && (s.if_names.is_empty() || f.netdevs.iter().any(|n| s.if_names.contains(&n.name)))
        && (s.link_types.is_empty()
            || link.is_some_and(|l| s.link_types.iter().any(|x| x.eq_ignore_ascii_case(&l))))
}

fn never_offered_aux(host: &Host, sf: &AuxFunction) -> Option<String> {
    if let Some(n) = sf.netdevs.iter().find(|n| n.default_route) {
        return Some(format!("{} carries the default route", n.name));
    }
    if host.function(&sf.parent).is_none() {
        return Some(format!("parent function {} was not discovered", sf.parent));
    }
    None
}

/// (resource index, selector index) of the first `auxNetDevice` resource selecting an SF.
fn first_match_aux(
    host: &Host,
    sf: &AuxFunction,
    resources: &[ResourceConfig],
) -> Option<(usize, usize)> {
    resources.iter().enumerate().find_map(|(ri, r)| {
        if r.device_type != DeviceType::AuxNetDevice {
            return None;
        }
        r.selectors
            .iter()
            .position(|s| selects_aux(host, s, sf))
            .map(|si| (ri, si))
    })
}

/// One selector against one SF, as the SR-IOV plugin's `auxNetDevice` reads it: `vendors`,
/// `devices`, `drivers`, `pciAddresses` and `acpiIndexes` match the parent PCI function;
/// `pfNames`/`rootDevices` name the parent and their `#a-b` ranges count `sfnum`; `linkTypes`
/// from the SF's netdev (else the parent's); `isRdma` needs the SF's own RDMA device.
pub fn selects_aux(host: &Host, s: &Selector, sf: &AuxFunction) -> bool {
    let Some(parent) = host.function(&sf.parent) else {
        return false;
    };
    let any = |list: &[String], value: Option<&str>| {
        list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
    };
    let pf_match = |sels: &[PfSelector], key: Option<&str>| {
        sels.is_empty()
            || key.is_some_and(|key| {
                sels.iter().any(|sel| {
                    sel.pf == key && sel.vfs.as_ref().is_none_or(|r| r.contains(sf.sfnum))
                })
            })
    };
    let acpi = parent.acpi_index.map(|i| i.to_string());
    let link = aux_link_type(sf).or_else(|| link_type(parent));
    let pkey = sf
        .rdma
        .as_ref()
        .and_then(|r| r.ports.first())
        .and_then(|p| p.pkey.as_deref());

    (s.aux_types.is_empty() || s.aux_types.iter().any(|t| t == "sf"))
        && any(&s.vendors, Some(&parent.vendor_hex()))
        && any(&s.devices, Some(&parent.device_hex()))
        && any(&s.drivers, parent.driver.as_deref())
        && any(&s.pci_addresses, Some(&parent.address))
        && any(&s.acpi_indexes, acpi.as_deref())
        && pf_match(&s.pf_names, parent.netdevs.first().map(|n| n.name.as_str()))
        && pf_match(&s.root_devices, Some(&parent.address))
        && (s.link_types.is_empty()
            || link.is_some_and(|l| s.link_types.iter().any(|x| x.eq_ignore_ascii_case(&l))))
        && (s.p_keys.is_empty() || pkey.is_some_and(|p| pkey_in(&s.p_keys, p)))
        && s.ddp_profiles.is_empty()
        && s.vdpa_type.is_none()
        && (!s.is_rdma || sf.rdma.is_some())
}

/// An SF's link type from its own netdev or RDMA port; `None` when it has neither.
pub fn aux_link_type(sf: &AuxFunction) -> Option<String> {
    if let Some(n) = sf.netdevs.first() {
        return Some(n.link_type.clone());
    }
    let port = sf.rdma.as_ref()?.ports.first()?;
    Some(link_layer_name(&port.link_layer))
}

fn never_offered(f: &PciFunction) -> Option<String> {
    if let Some(n) = f.netdevs.iter().find(|n| n.default_route) {
        return Some(format!("{} carries the default route", n.name));
    }
    match &f.sriov {
        Some(s) if s.num_vfs > 0 => Some(format!(
            "PF with {} VFs enabled: its VFs are offered",
            s.num_vfs
        )),
        _ => None,
    }
}

/// (resource index, selector index) of the first resource and selector selecting `f`.
fn first_match(
    host: &Host,
    f: &PciFunction,
    resources: &[ResourceConfig],
) -> Option<(usize, usize)> {
    resources.iter().enumerate().find_map(|(ri, r)| {
        if !type_accepts(r.device_type, f) {
            return None;
        }
        r.selectors
            .iter()
            .position(|s| selects(host, s, f))
            .map(|si| (ri, si))
    })
}

fn type_accepts(t: DeviceType, f: &PciFunction) -> bool {
    match t {
        DeviceType::NetDevice => f.class == FunctionClass::Network,
        DeviceType::Accelerator => f.class == FunctionClass::Accelerator,
        // Auxiliary devices (scalable functions) are selected by `selects_aux`.
        DeviceType::AuxNetDevice => false,
    }
}

/// Link type as the `linkTypes` selector sees it: the netdev's, else the RDMA link layer.
pub fn link_type(f: &PciFunction) -> Option<String> {
    if let Some(n) = f.netdevs.first() {
        return Some(n.link_type.clone());
    }
    let port = f.rdma.as_ref()?.ports.first()?;
    Some(link_layer_name(&port.link_layer))
}

fn link_layer_name(link_layer: &str) -> String {
    match link_layer {
        "Ethernet" => "ether".to_string(),
        "InfiniBand" => "infiniband".to_string(),
        other => other.to_ascii_lowercase(),
    }
}

/// One selector against one function: fields ANDed, values within a field ORed.
pub fn selects(host: &Host, s: &Selector, f: &PciFunction) -> bool {
    let any = |list: &[String], value: Option<&str>| {
        list.is_empty() || value.is_some_and(|v| list.iter().any(|x| x == v))
    };
    let pf = f.physfn.as_ref();
    let pf_netdev = pf
        .and_then(|p| host.function(&p.address))
        .and_then(|p| p.netdevs.first())
        .map(|n| n.name.as_str());
    let pf_match = |sels: &[PfSelector], pf_key: Option<&str>| {
        sels.is_empty()
            || pf.zip(pf_key).is_some_and(|(p, key)| {
                sels.iter().any(|sel| {
                    sel.pf == key && sel.vfs.as_ref().is_none_or(|r| r.contains(p.vf_index))
                })
            })
    };
    let acpi = f.acpi_index.map(|i| i.to_string());
    let link = link_type(f);

    any(&s.vendors, Some(&f.vendor_hex()))
        && any(&s.devices, Some(&f.device_hex()))
        && any(&s.drivers, f.driver.as_deref())
        && any(&s.pci_addresses, Some(&f.address))
        && any(&s.acpi_indexes, acpi.as_deref())
        && pf_match(&s.pf_names, pf_netdev)
        && pf_match(&s.root_devices, pf.map(|p| p.address.as_str()))
        && (s.link_types.is_empty()
            || link.is_some_and(|l| s.link_types.iter().any(|x| x.eq_ignore_ascii_case(&l))))
        && (s.p_keys.is_empty() || pkey_matches(&s.p_keys, f))
        // nicplug reads no Intel DDP profiles; `config check` refuses the selector, so this
        // only keeps a hand-built config from selecting everything.
        && s.ddp_profiles.is_empty()
        && s.vdpa_type.is_none_or(|t| vdpa_matches(t, f))
        && (!s.is_rdma || f.rdma.is_some())
}

/// Why a function is in no pool when only `vdpaType` kept a selector from taking it: a
/// `vdpaType` pool that stays empty says so in `discover` instead of silently.
fn vdpa_miss(host: &Host, f: &PciFunction, config: &Config) -> Option<String> {
    config.resources.iter().find_map(|r| {
        if !type_accepts(r.device_type, f) {
            return None;
        }
        r.selectors.iter().find_map(|s| {
            let t = s.vdpa_type?;
            let without = Selector {
                vdpa_type: None,
                ..s.clone()
            };
            if !selects(host, &without, f) {
                return None;
            }
            let want = match t {
                VdpaType::Vhost => "vhost (vhost_vdpa)",
                VdpaType::Virtio => "virtio (virtio_vdpa)",
            };
            let have = match &f.vdpa {
                None => "it has none".to_string(),
                Some(v) => format!(
                    "its {} is bound to {}",
                    v.name,
                    v.driver.as_deref().unwrap_or("no driver")
                ),
            };
            Some(format!(
                "{} wants a vDPA device of type {want}; {have}",
                r.resource_name
            ))
        })
    })
}

/// `vdpaType`: the function carries a vDPA device bound to that type's bus driver.
fn vdpa_matches(t: VdpaType, f: &PciFunction) -> bool {
    let want = match t {
        VdpaType::Vhost => VdpaKind::Vhost,
        VdpaType::Virtio => VdpaKind::Virtio,
    };
    f.vdpa.as_ref().and_then(|v| v.kind) == Some(want)
}

fn pkey_matches(wanted: &[String], f: &PciFunction) -> bool {
    f.rdma
        .as_ref()
        .and_then(|r| r.ports.first())
        .and_then(|p| p.pkey.as_deref())
        .is_some_and(|have| pkey_in(wanted, have))
}

fn pkey_in(wanted: &[String], have: &str) -> bool {
    let norm = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok();
    norm(have).is_some_and(|have| wanted.iter().any(|w| norm(w) == Some(have)))
}
