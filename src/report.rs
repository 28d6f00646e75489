//! `nicplug discover` output: a table for people and a stable JSON document for scripts.

use crate::host::{Host, PciFunction};
use crate::pools::{Placement, Pools, link_type};
use serde::Serialize;
use std::fmt::Write;

/// The JSON document of `nicplug discover --output json` (stable field names).
#[derive(Debug, Serialize)]
pub struct DiscoverReport<'a> {
    pub rdma_netns_mode: crate::host::RdmaNetnsMode,
    pub rdma_cm: Option<&'a crate::host::CharDev>,
    pub functions: Vec<FunctionReport<'a>>,
    pub pools: Vec<PoolReport<'a>>,
    pub skipped: &'a [crate::host::Skipped],
}

#[derive(Debug, Serialize)]
pub struct FunctionReport<'a> {
    #[serde(flatten)]
    pub function: &'a PciFunction,
    pub link_type: Option<String>,
    pub placement: Option<&'a Placement>,
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

/// Role of a function: `PF`, `PF (8/8 VFs)` or `VF 3 of 0000:3b:00.0`.
fn role(f: &PciFunction) -> String {
    match (&f.physfn, &f.sriov) {
        (Some(p), _) => format!("VF{} of {}", p.vf_index, p.address),
        (None, Some(s)) => format!("PF {}/{} VFs", s.num_vfs, s.total_vfs),
        (None, None) => "PF".into(),
    }
}

/// Link state: the netdev's operstate, else the first RDMA port's state.
fn link_state(f: &PciFunction) -> String {
    if let Some(n) = f.netdevs.first() {
        return n.operstate.clone();
    }
    f.rdma
        .as_ref()
        .and_then(|r| r.ports.first())
        .map(|p| p.state.to_ascii_lowercase())
        .unwrap_or_else(|| "-".into())
}

/// The people's table of `nicplug discover`.
pub fn discover_table(host: &Host, pools: &Pools) -> String {
    let header = [
        "ADDRESS", "MODEL", "DRIVER", "ROLE", "NETDEV", "RDMA", "UVERBS", "NUMA", "LINK", "POOL",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for f in &host.functions {
        let rdma = f.rdma.as_ref();
        let placement = match pools.placements.get(&f.address) {
            Some(Placement::Pool { resource }) => resource.clone(),
            Some(Placement::Unpooled { reason }) => format!("- ({reason})"),
            None => "-".into(),
        };
        rows.push(vec![
            f.address.clone(),
            f.model
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}:{}", f.vendor_hex(), f.device_hex())),
            f.driver.clone().unwrap_or_else(|| "(none)".into()),
            role(f),
            f.netdevs
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            rdma.and_then(|r| r.ibdev.clone())
                .unwrap_or_else(|| "-".into()),
            rdma.and_then(|r| r.uverbs.as_ref())
                .map(|u| format!("{} {}:{}", u.name, u.major, u.minor))
                .unwrap_or_else(|| "-".into()),
            f.numa_node.map_or("-".into(), |n| n.to_string()),
            link_state(f),
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
