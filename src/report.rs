//! `nicplug discover` output: a table for people and a stable JSON document for scripts.

use crate::health::{self, LinkStates, Verdict};
use crate::host::{AuxFunction, Device, Host, PciFunction, VdpaKind};
use crate::pools::{Placement, Pools, aux_link_type, link_type};
use serde::Serialize;
use std::fmt::Write;

/// The JSON document of `nicplug discover --output json` (stable field names).
#[derive(Debug, Serialize)]
pub struct DiscoverReport<'a> {
    pub rdma_netns_mode: crate::host::RdmaNetnsMode,
    pub rdma_cm: Option<&'a crate::host::CharDev>,
    pub functions: Vec<FunctionReport<'a>>,
    /// Scalable functions (auxiliary devices), each with its parent PCI function and sfnum.
    pub aux_functions: Vec<AuxFunctionReport<'a>>,
    pub pools: Vec<PoolReport<'a>>,
    pub skipped: &'a [crate::host::Skipped],
}

#[derive(Debug, Serialize)]
pub struct FunctionReport<'a> {
    #[serde(flatten)]
    pub function: &'a PciFunction,
    pub link_type: Option<String>,
    pub placement: Option<&'a Placement>,
    /// What `serve` would advertise from this snapshot (see [`verdict`]).
    pub health: Verdict,
}

#[derive(Debug, Serialize)]
pub struct AuxFunctionReport<'a> {
    #[serde(flatten)]
    pub function: &'a AuxFunction,
    pub link_type: Option<String>,
    pub placement: Option<&'a Placement>,
    pub health: Verdict,
}

#[derive(Debug, Serialize)]
pub struct PoolReport<'a> {
    pub name: &'a str,
    pub devices: Vec<&'a str>,
}

pub fn discover_report<'a>(host: &'a Host, pools: &'a Pools) -> DiscoverReport<'a> {
    DiscoverReport {
        rdma_netns_mode: host.rdma_netns_mode,
        rdma_cm: host.rdma_cm.as_ref(),
        functions: host
            .functions
            .iter()
            .map(|f| FunctionReport {
                function: f,
                link_type: link_type(f),
                placement: pools.placements.get(&f.address),
                health: verdict(host, pools, Device::Pci(f)),
            })
            .collect(),
        aux_functions: host
            .aux_functions
            .iter()
            .map(|a| AuxFunctionReport {
                function: a,
                link_type: aux_link_type(a),
                placement: pools.placements.get(&a.name),
                health: verdict(host, pools, Device::Aux(a)),
            })
            .collect(),
        pools: pools
            .pools
            .iter()
            .map(|p| PoolReport {
                name: &p.name,
                devices: p.devices.iter().map(|d| d.id.as_str()).collect(),
            })
            .collect(),
        skipped: &host.skipped,
    }
}

/// Role of a function: `PF`, `PF (8/8 VFs)` or `VF 3 of 0000:3b:00.0`, plus the number of
/// switchdev representors under a PF.
fn role(f: &PciFunction) -> String {
    let role = match (&f.physfn, &f.sriov) {
        (Some(p), _) => format!("VF{} of {}", p.vf_index, p.address),
        (None, Some(s)) => format!("PF {}/{} VFs", s.num_vfs, s.total_vfs),
        (None, None) => "PF".into(),
    };
    match f.representors.len() {
        0 => role,
        n => format!("{role}, switchdev ({n} representors)"),
    }
}

/// The bound driver and, for the classes that have one, the node a container gets: the vfio
/// group (`noiommu-N` in no-IOMMU mode), `/dev/uioN`, or the vDPA device with its type.
fn driver_cell(d: Device<'_>) -> String {
    let driver = d.driver().unwrap_or("(none)").to_string();
    let Device::Pci(f) = d else {
        return driver;
    };
    let mut extra = Vec::new();
    if let (Some("vfio-pci"), Some(g)) = (f.driver.as_deref(), f.iommu_group) {
        extra.push(match f.noiommu {
            true => format!("/dev/vfio/noiommu-{g}"),
            false => format!("/dev/vfio/{g}"),
        });
    }
    if let Some(u) = &f.uio {
        extra.push(u.path.clone());
    }
    if let Some(v) = &f.vdpa {
        let kind = match v.kind {
            Some(VdpaKind::Vhost) => "vhost",
            Some(VdpaKind::Virtio) => "virtio",
            None => v.driver.as_deref().unwrap_or("unbound"),
        };
        extra.push(format!("vdpa {}:{kind}", v.name));
        if let Some(n) = &v.node {
            extra.push(n.path.clone());
        }
    }
    match extra.is_empty() {
        true => driver,
        false => format!("{driver} {}", extra.join(" ")),
    }
}

/// A device's health as `serve` judges it from this snapshot alone (no live rtnetlink state):
/// under its pool's rule, the default rule when it is in no pool.
pub fn verdict(host: &Host, pools: &Pools, d: Device<'_>) -> Verdict {
    let rule = match pools.placements.get(d.id()) {
        Some(Placement::Pool { resource }) => pools.pool(resource).map(|p| p.config.nicplug.health),
        _ => None,
    };
    health::verdict(d, host, &LinkStates::new(), rule.unwrap_or_default())
}

/// The people's table of `nicplug discover`.
pub fn discover_table(host: &Host, pools: &Pools) -> String {
    let header = [
        "ADDRESS", "MODEL", "DRIVER", "ROLE", "NETDEV", "RDMA", "UVERBS", "NUMA", "LINK", "POOL",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for d in host.devices() {
        let (model, role) = match d {
            Device::Pci(f) => (
                f.model
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}:{}", f.vendor_hex(), f.device_hex())),
                role(f),
            ),
            Device::Aux(a) => (
                d.pci(host)
                    .and_then(|p| p.model)
                    .map_or("mlx5 SF".to_string(), |m| format!("{m} SF")),
                format!("SF {} of {}", a.sfnum, a.parent),
            ),
        };
        let rdma = d.rdma();
        let placement = match pools.placements.get(d.id()) {
            Some(Placement::Pool { resource }) => resource.clone(),
            Some(Placement::Unpooled { reason }) => format!("- ({reason})"),
            None => "-".into(),
        };
        rows.push(vec![
            d.id().to_string(),
            model,
            driver_cell(d),
            role,
            d.netdevs()
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            rdma.and_then(|r| r.ibdev.clone())
                .unwrap_or_else(|| "-".into()),
            rdma.and_then(|r| r.uverbs.as_ref())
                .map(|u| format!("{} {}:{}", u.name, u.major, u.minor))
                .unwrap_or_else(|| "-".into()),
            d.numa_node().map_or("-".into(), |n| n.to_string()),
            verdict(host, pools, d).to_string(),
            placement,
        ]);
    }
    for row in rows.iter_mut() {
        for cell in row.iter_mut() {
            if cell.is_empty() {
                *cell = "-".into();
            }
        }
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();

    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(
        out,
        "\nRDMA netns mode: {}   rdma_cm: {}",
        serde_json::to_value(host.rdma_netns_mode)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        host.rdma_cm
            .as_ref()
            .map_or("absent".to_string(), |c| format!("{}:{}", c.major, c.minor))
    );
    for p in &pools.pools {
        let _ = writeln!(out, "pool {}: {} device(s)", p.name, p.devices.len());
    }
    for s in &host.skipped {
        let _ = writeln!(
            out,
            "skipped {}: {}: {}",
            s.address,
            s.file.display(),
            s.reason
        );
    }
    out
}
