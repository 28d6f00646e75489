//! Container edits: the single truth of what a container gets for a set of device IDs of a pool.
//! Every output (kubelet's AllocateResponse, CDI, the CLI preview) is a rendering of this.

use crate::config::{DeviceType, RdmaCharDev, Selector};
use crate::host::{
    CharDev, Device, Host, PciFunction, RdmaNetnsMode, VdpaDevice, is_bdf, is_sf_name,
};
use crate::info;
use crate::paths::HostPaths;
use crate::pools::Pool;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// A device node to create in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceNode {
    /// Canonical path in the container, e.g. `/dev/infiniband/uverbs2`.
    pub container_path: String,
    /// Path of the node on the host, under the dev root.
    pub host_path: PathBuf,
    /// cgroup permissions: `rw`.
    pub permissions: String,
    /// Number read from sysfs, when nicplug knows it (RDMA nodes); runtimes stat the host path
    /// otherwise.
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    pub container_path: String,
    pub host_path: PathBuf,
    pub read_only: bool,
}

/// Everything a container gets for one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ContainerEdits {
    pub devices: Vec<DeviceNode>,
    pub mounts: Vec<Mount>,
    pub env: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Why edits could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    #[error("no device IDs requested")]
    Empty,
    #[error("not in pool {pool}: {}", .ids.join(", "))]
    UnknownIds { pool: String, ids: Vec<String> },
    #[error("{id}: refusing unsafe path {path}: {why}")]
    UnsafePath {
        id: String,
        path: String,
        why: String,
    },
}

/// Name of the environment variable carrying EAL arguments for a pool's allocation (named by
/// the same rule as `PCIDEVICE_*`).
pub fn eal_env_name(pool: &Pool) -> String {
    info::env_name("NICPLUG_EAL_ARGS", &pool.prefix, &pool.resource_name)
}

/// Name of the variable listing a pool's allocated device IDs; `_INFO` is appended for the
/// per-device records.
pub fn pcidevice_env_name(pool: &Pool) -> String {
    info::env_name("PCIDEVICE", &pool.prefix, &pool.resource_name)
}

/// Compute the container edits for `ids` (in request order) of `pool`.
pub fn container_edits(
    pool: &Pool,
    host: &Host,
    paths: &HostPaths,
    ids: &[String],
) -> Result<ContainerEdits, EditError> {
    if ids.is_empty() {
        return Err(EditError::Empty);
    }
    let unknown: Vec<String> = ids
        .iter()
        .filter(|id| pool.device(id).is_none() || host.device(id).is_none())
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(EditError::UnknownIds {
            pool: pool.name.clone(),
            ids: unknown,
        });
    }

    let mut edits = ContainerEdits::default();
    let mut info = BTreeMap::new();
    for id in ids {
        let device = pool.device(id).expect("checked above");
        let dev = host.device(id).expect("checked above");
        let selector = pool.selector_of(device);
        let mut entry = info::Entry::new();
        info::put(&mut entry, info::generic(id));

        if let Device::Pci(f) = dev {
            class_nodes(&mut edits, f, selector, paths);
            for record in class_records(f, selector) {
                info::put(&mut entry, record);
            }
        }
        let rdma_nodes = rdma_nodes_for(pool, selector.is_rdma);
        if !rdma_nodes.is_empty() {
            rdma(
                &mut edits,
                &mut entry,
                dev,
                host,
                paths,
                &rdma_nodes,
                pool.config.nicplug.counters_mount,
            )?;
        }
        if selector.need_vhost_net {
            for p in ["/dev/vhost-net", "/dev/net/tun"] {
                add_node(&mut edits, p, paths, None);
            }
            info::put(&mut entry, info::vhost());
        }
        if let Some(extra) = info::extra(pool.config.additional_info.as_ref(), id) {
            info::put(&mut entry, extra);
        }
        info.insert(id.clone(), entry);
    }

    let key = pcidevice_env_name(pool);
    edits.env.insert(format!("{key}_INFO"), info::encode(&info));
    edits.env.insert(key, ids.join(","));
    if pool.config.nicplug.eal_args {
        edits
            .env
            .insert(eal_env_name(pool), eal_args(pool, host, ids));
    }
    Ok(edits)
}

/// DPDK EAL arguments for the allocated functions: an allow-list plus `--iova-mode=va`, which
/// unprivileged mlx5 needs (no physical addresses without CAP_SYS_ADMIN). Left out when a
/// function needs physical addresses (UIO, vfio without an IOMMU): EAL refuses to probe such a
/// device in VA mode, and a pod using one is privileged anyway.
pub fn eal_args(pool: &Pool, host: &Host, ids: &[String]) -> String {
    let mut args: Vec<String> = ids.iter().map(|id| format!("-a {id}")).collect();
    if pool.config.device_type == DeviceType::AuxNetDevice {
        args = ids.iter().map(|id| format!("-a auxiliary:{id}")).collect();
    }
    if !ids.iter().any(|id| needs_physical_addresses(host, id)) {
        args.push("--iova-mode=va".into());
    }
    args.join(" ")
}

/// Whether the pool hands out `id`'s RDMA side (its char devices; its ibdev in the device-info
/// file): with `isRdma` on the selector that took it, or with `nicplug.rdmaDevices`.
pub fn gives_rdma(pool: &Pool, id: &str) -> bool {
    pool.device(id)
        .is_some_and(|d| !rdma_nodes_for(pool, pool.selector_of(d).is_rdma).is_empty())
}

/// A function DPDK can only drive with physical addresses: bound to a UIO driver, or to
/// vfio-pci in no-IOMMU mode.
fn needs_physical_addresses(host: &Host, id: &str) -> bool {
    host.function(id)
        .is_some_and(|f| f.uio.is_some() || (f.noiommu && f.driver.as_deref() == Some("vfio-pci")))
}

/// Which RDMA char devices this pool hands out for a device matched by a selector.
fn rdma_nodes_for(pool: &Pool, is_rdma: bool) -> Vec<RdmaCharDev> {
    match &pool.config.nicplug.rdma_devices {
        Some(list) => list.clone(),
        // The SR-IOV plugin's behaviour: all four with isRdma, none without.
        None if is_rdma => RdmaCharDev::ALL.to_vec(),
        None => Vec::new(),
    }
}

const VFIO_CONTAINER: &str = "/dev/vfio/vfio";

/// The vfio group node: (path in the container, path on the host). A no-IOMMU group's node is
/// `/dev/vfio/noiommu-N` on the host and `/dev/vfio/N` in the container, where DPDK and QEMU
/// look for a group.
fn vfio_group_node(f: &PciFunction) -> Option<(String, String)> {
    let group = f.iommu_group?;
    let container = format!("/dev/vfio/{group}");
    let host = match f.noiommu {
        true => format!("/dev/vfio/noiommu-{group}"),
        false => container.clone(),
    };
    Some((container, host))
}

/// The vDPA device a selector with `vdpaType` hands out with `f`.
fn vdpa_of<'a>(f: &'a PciFunction, selector: &Selector) -> Option<&'a VdpaDevice> {
    selector.vdpa_type.and(f.vdpa.as_ref())
}

/// Device nodes of the function's class: vfio (container and group), UIO, vhost-vdpa.
fn class_nodes(
    edits: &mut ContainerEdits,
    f: &PciFunction,
    selector: &Selector,
    paths: &HostPaths,
) {
    if f.driver.as_deref() == Some("vfio-pci") {
        add_node(edits, VFIO_CONTAINER, paths, None);
        if let Some((container, host)) = vfio_group_node(f) {
            add_node_at(edits, &container, &host, paths, None);
        }
    }
    if let Some(u) = &f.uio {
        add_node(edits, &u.path, paths, Some((u.major, u.minor)));
    }
    if let Some(n) = vdpa_of(f, selector).and_then(|v| v.node.as_ref()) {
        add_node(edits, &n.path, paths, Some((n.major, n.minor)));
    }
}

/// The `vfio`, `uio` and `vdpa` records of `PCIDEVICE_<..>_INFO` for each class `f` belongs to
/// with this selector.
fn class_records(f: &PciFunction, selector: &Selector) -> Vec<(&'static str, info::Record)> {
    let mut out = Vec::new();
    if f.driver.as_deref() == Some("vfio-pci") {
        let group = vfio_group_node(f).map(|(container, _)| container);
        out.push(info::vfio(group.as_deref()));
    }
    if let Some(u) = &f.uio {
        out.push(info::uio(Some(&u.path)));
    }
    if let Some(v) = vdpa_of(f, selector) {
        // virtio-vdpa has no node: the plugin writes an empty record.
        out.push(info::vdpa(v.node.as_ref().map(|n| n.path.as_str())));
    }
    out
}

fn rdma<'a>(
    edits: &mut ContainerEdits,
    entry: &mut info::Entry,
    dev: Device<'a>,
    host: &'a Host,
    paths: &HostPaths,
    wanted: &[RdmaCharDev],
    counters: bool,
) -> Result<(), EditError> {
    // Numbers and names come from this snapshot, taken at Allocate time: an ibdev that moved
    // into a pod (exclusive mode) is unknown here, so INFO carries no `rdma_dev`, while its
    // uverbs node (which stays on the host) is still handed out.
    let Some(r) = dev.rdma() else {
        return Ok(());
    };
    let mut given: Vec<(&str, &str)> = Vec::new();
    let mut give = |kind: &'static str, dev: Option<&'a CharDev>| {
        if let Some(d) = dev {
            add_node(edits, &d.path, paths, Some((d.major, d.minor)));
            given.push((kind, &d.path));
        }
    };
    for w in wanted {
        match w {
            RdmaCharDev::Uverbs => give("uverbs", r.uverbs.as_ref()),
            RdmaCharDev::RdmaCm => give("rdma_cm", host.rdma_cm.as_ref()),
            RdmaCharDev::Umad => give("umad", r.umad.first()),
            RdmaCharDev::Issm => give("issm", r.issm.first()),
        }
    }
    info::put(entry, info::rdma(r.ibdev.as_deref(), given));

    // The counters fix: in shared netns mode the pod's sysfs shows this port without
    // `hw_counters`; bind the host's port directory over it, read-only. In exclusive mode the
    // whole device, counters included, moves into the pod.
    let shared = host.rdma_netns_mode != RdmaNetnsMode::Exclusive;
    if counters && shared && wanted.contains(&RdmaCharDev::Uverbs) {
        for port in r
            .ports
            .iter()
            .filter(|p| p.has_hw_counters || p.has_counters)
        {
            let container_path = sysfs_container_path(dev.id(), &port.sysfs_dir)?;
            if !edits
                .mounts
                .iter()
                .any(|m| m.container_path == container_path)
            {
                edits.mounts.push(Mount {
                    host_path: paths.sysfs_host_path(&port.sysfs_dir),
                    container_path,
                    read_only: true,
                });
            }
        }
    }
    Ok(())
}

/// `/sys/<relative>` for a port directory, refusing anything that is not a deep, plain path
/// under `/sys/devices/`: never `/sys`, `/sys/devices` or any parent of what we mean to expose.
/// Two shapes only: `devices/.../<bdf>/infiniband/<ibdev>/ports/<n>` (a PCI function) and
/// `devices/.../<bdf>/mlx5_core.sf.<k>/infiniband/<ibdev>/ports/<n>` (a scalable function).
fn sysfs_container_path(id: &str, relative: &Path) -> Result<String, EditError> {
    let unsafe_path = |why: &str| EditError::UnsafePath {
        id: id.to_string(),
        path: relative.display().to_string(),
        why: why.to_string(),
    };
    let parts: Vec<&str> = relative
        .components()
        .map(|c| match c {
            Component::Normal(s) => s.to_str().ok_or_else(|| unsafe_path("not UTF-8")),
            _ => Err(unsafe_path("not a plain relative path")),
        })
        .collect::<Result<_, _>>()?;
    let n = parts.len();
    if n < 6 || parts[0] != "devices" || parts[n - 2] != "ports" || parts[n - 4] != "infiniband" {
        return Err(unsafe_path("not an RDMA port directory under devices/"));
    }
    let owner_ok =
        is_bdf(parts[n - 5]) || (n >= 7 && is_sf_name(parts[n - 5]) && is_bdf(parts[n - 6]));
    if !owner_ok {
        return Err(unsafe_path(
            "the port's device is neither a PCI function nor an mlx5 SF under one",
        ));
    }
    Ok(format!("/sys/{}", parts.join("/")))
}

fn add_node(
    edits: &mut ContainerEdits,
    canonical: &str,
    paths: &HostPaths,
    num: Option<(u32, u32)>,
) {
    add_node_at(edits, canonical, canonical, paths, num);
}

/// A node whose host path (`/dev/...` under the dev root) differs from its container path.
fn add_node_at(
    edits: &mut ContainerEdits,
    canonical: &str,
    host: &str,
    paths: &HostPaths,
    num: Option<(u32, u32)>,
) {
    if edits.devices.iter().any(|d| d.container_path == canonical) {
        return;
    }
    edits.devices.push(DeviceNode {
        container_path: canonical.to_string(),
        host_path: paths.dev_host_path(host),
        permissions: "rw".to_string(),
        major: num.map(|n| n.0),
        minor: num.map(|n| n.1),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_mount_paths_are_confined_to_rdma_port_dirs() {
        let ok =
            Path::new("devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/infiniband/mlx5_2/ports/1");
        assert_eq!(
            sysfs_container_path("x", ok).unwrap(),
            "/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2/infiniband/mlx5_2/ports/1"
        );
        let sf = "devices/pci0000:ae/0000:ae:00.0/0000:af:00.0/mlx5_core.sf.4/infiniband/mlx5_20/ports/1";
        assert_eq!(
            sysfs_container_path("mlx5_core.sf.4", Path::new(sf)).unwrap(),
            format!("/sys/{sf}")
        );
        for bad in [
            "",
            "devices",
            "devices/pci0000:3a",
            "devices/../../etc/infiniband/x/ports/1",
            "/devices/pci0000:3a/0000:3b:00.2/infiniband/mlx5_2/ports/1",
            "class/infiniband/mlx5_2/ports/1/x/y",
            "devices/pci0000:3a/0000:3b:00.2/infiniband/mlx5_2/ports/..",
            "devices/pci0000:3a/0000:3b:00.2/net/eth0/ports/1",
            // An SF only directly under its PCI function; nothing else may own the port.
            "devices/pci0000:ae/mlx5_core.sf.4/infiniband/mlx5_20/ports/1",
            "devices/pci0000:ae/0000:af:00.0/mlx5_core.eth.4/infiniband/mlx5_20/ports/1",
            "devices/pci0000:ae/0000:af:00.0/mlx5_core.sf.x/infiniband/mlx5_20/ports/1",
            "devices/pci0000:ae/0000:af:00.0/mlx5_core.sf.4/x/infiniband/mlx5_20/ports/1",
            "devices/virtual/foo/infiniband/mlx5_20/ports/1",
        ] {
            assert!(
                sysfs_container_path("x", Path::new(bad)).is_err(),
                "{bad:?}"
            );
        }
    }
}
