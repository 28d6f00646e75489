//! Container edits: the single truth of what a container gets for a set of devices. Every
//! output (kubelet's AllocateResponse, CDI, the CLI preview, a DRA claim's spec) is a rendering
//! of this. It reads resolved plain data ([`crate::resolved`]), never a front end's schema: the
//! device plugin's pools and a DRA claim both call [`container_edits_for`].

use crate::device_id::DeviceId;
use crate::host::{CharDev, Device, Host, PciFunction, RdmaNetnsMode, VdpaDevice, layout};
use crate::info;
use crate::paths::HostPaths;
use crate::pools::Pool;
use crate::resolved::{EditOptions, EnvBase, RdmaCharDev, ResolvedDevice, VdpaType};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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

/// Every pool-wide variable an allocation from `pool` sets (identity checks compare them across
/// pools; per-device CDI variables are [`crate::cdi::device_env`]'s).
pub fn env_names(pool: &Pool) -> Vec<String> {
    let base = pool.env_base();
    if pool.shared.is_some() {
        return vec![base.shared_ibdevs(), base.shared_pci()];
    }
    let key = base.pcidevice();
    vec![format!("{key}_INFO"), key, base.eal_args()]
}

/// The resolved devices of `ids` (in request order) of `pool`: an error naming every ID the
/// pool or the host lacks.
pub fn resolve_ids(
    pool: &Pool,
    host: &Host,
    ids: &[String],
) -> Result<Vec<ResolvedDevice>, EditError> {
    let found = |id: &str| {
        let device_id = DeviceId::parse(id).filter(|d| d.kubelet() == id)?;
        let d = pool.device(id).filter(|_| host.device(id).is_some())?;
        Some(ResolvedDevice {
            id: device_id,
            options: Arc::clone(&d.options),
        })
    };
    refuse_unknown(&pool.name, ids, |id| found(id).is_none())?;
    Ok(ids.iter().filter_map(|id| found(id)).collect())
}

/// An error naming every ID of `ids` that `unknown` says is not there.
fn refuse_unknown(
    pool: &str,
    ids: &[String],
    unknown: impl Fn(&str) -> bool,
) -> Result<(), EditError> {
    let unknown: Vec<String> = ids.iter().filter(|id| unknown(id)).cloned().collect();
    match unknown.is_empty() {
        true => Ok(()),
        false => Err(EditError::UnknownIds {
            pool: pool.to_string(),
            ids: unknown,
        }),
    }
}

/// Compute the container edits for `ids` (in request order) of `pool`: the device plugin's
/// entry, resolving the IDs through the pool and calling [`container_edits_for`] (or
/// [`shared_edits_for`] for a shared pool).
pub fn container_edits(
    pool: &Pool,
    host: &Host,
    paths: &HostPaths,
    ids: &[String],
) -> Result<ContainerEdits, EditError> {
    if ids.is_empty() {
        return Err(EditError::Empty);
    }
    if let Some(shared) = &pool.shared {
        refuse_unknown(&pool.name, ids, |id| pool.device(id).is_none())?;
        return shared_edits_for(
            &shared.members,
            &pool.env_base(),
            pool.options_of(&ids[0]),
            host,
            paths,
        );
    }
    let resolved = resolve_ids(pool, host, ids)?;
    container_edits_for(&resolved, &pool.env_base(), host, paths)
}

/// The container edits for `devices` (in order), whichever front end resolved them: device
/// nodes, mounts, `<PCIDEVICE>` (the IDs), `<PCIDEVICE>_INFO` (one record set per device) and,
/// when any device asks for it, `<NICPLUG_EAL_ARGS>` listing those devices. `base` names the
/// variables (and the errors).
pub fn container_edits_for(
    devices: &[ResolvedDevice],
    base: &EnvBase,
    host: &Host,
    paths: &HostPaths,
) -> Result<ContainerEdits, EditError> {
    if devices.is_empty() {
        return Err(EditError::Empty);
    }
    let ids: Vec<String> = devices.iter().map(|d| d.id.kubelet()).collect();
    refuse_unknown(&base.name(), &ids, |id| host.device(id).is_none())?;

    let mut edits = ContainerEdits::default();
    let mut info = BTreeMap::new();
    for (id, d) in ids.iter().zip(devices) {
        let options = &*d.options;
        let dev = host.device(id).expect("checked above");
        let mut entry = info::Entry::new();
        info::put(&mut entry, info::generic(id));

        if let Device::Pci(f) = dev {
            class_nodes(&mut edits, f, options.vdpa, paths);
            for record in class_records(f, options.vdpa) {
                info::put(&mut entry, record);
            }
        }
        if !options.rdma.is_empty() {
            rdma(
                &mut edits,
                &mut entry,
                dev,
                host,
                paths,
                &options.rdma,
                options.counters_mount,
            )?;
        }
        if options.vhost_net {
            for p in ["/dev/vhost-net", "/dev/net/tun"] {
                add_node(&mut edits, p, paths, None);
            }
            info::put(&mut entry, info::vhost());
        }
        if let Some(extra) = &options.extra_info {
            info::put(&mut entry, ("extra", extra.clone()));
        }
        info.insert(id.clone(), entry);
    }

    let key = base.pcidevice();
    edits.env.insert(format!("{key}_INFO"), info::encode(&info));
    edits.env.insert(key, ids.join(","));
    let eal: Vec<(&str, bool)> = ids
        .iter()
        .zip(devices)
        .filter(|(_, d)| d.options.eal_args)
        .map(|(id, d)| (id.as_str(), d.options.eal_auxiliary))
        .collect();
    if !eal.is_empty() {
        edits.env.insert(base.eal_args(), eal_list(host, &eal));
    }
    Ok(edits)
}

/// A shared allocation's edits: whatever IDs were asked, every member HCA's RDMA nodes (those
/// `options.rdma` names: `uverbs`, `umad`, `issm` where present, `rdma_cm`) and its ports'
/// counters, read-only. An HCA that lost its RDMA device since the members were chosen is left
/// out; a missing `umad` or `issm` only leaves that node out.
pub fn shared_edits_for(
    members: &[String],
    base: &EnvBase,
    options: &EditOptions,
    host: &Host,
    paths: &HostPaths,
) -> Result<ContainerEdits, EditError> {
    let mut edits = ContainerEdits::default();
    let (mut ibdevs, mut pcis) = (Vec::new(), Vec::new());
    for address in members {
        let Some(f) = host.function(address) else {
            continue;
        };
        let Some(r) = f.rdma.as_ref().filter(|r| r.uverbs.is_some()) else {
            continue;
        };
        let mut scratch = info::Entry::new();
        rdma(
            &mut edits,
            &mut scratch,
            Device::Pci(f),
            host,
            paths,
            &options.rdma,
            options.counters_mount,
        )?;
        if let Some(ibdev) = &r.ibdev {
            ibdevs.push(ibdev.clone());
        }
        pcis.push(address.clone());
    }
    edits.env.insert(base.shared_ibdevs(), ibdevs.join(","));
    edits.env.insert(base.shared_pci(), pcis.join(","));
    Ok(edits)
}

/// The RDMA nodes a shared pool cannot hand out because the host lacks them: (ibdev or PCI
/// address, node kind), for a warning. The HCA still serves with what it has.
pub fn shared_missing_nodes(pool: &Pool, host: &Host) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    let Some(shared) = &pool.shared else {
        return out;
    };
    for address in &shared.members {
        let Some(r) = host.function(address).and_then(|f| f.rdma.as_ref()) else {
            continue;
        };
        let name = r.ibdev.clone().unwrap_or_else(|| address.clone());
        if r.umad.is_empty() {
            out.push((name.clone(), "umad"));
        }
        if r.issm.is_empty() {
            out.push((name.clone(), "issm"));
        }
    }
    if host.rdma_cm.is_none() && !shared.members.is_empty() {
        out.push(("(host)".to_string(), "rdma_cm"));
    }
    out
}

/// DPDK EAL arguments for `ids` of a pool (the pool's options, or its pool-wide ones for an ID
/// it lacks). See [`eal_args_for`].
pub fn eal_args(pool: &Pool, host: &Host, ids: &[String]) -> String {
    let items: Vec<(&str, bool)> = ids
        .iter()
        .map(|id| (id.as_str(), pool.options_of(id).eal_auxiliary))
        .collect();
    eal_list(host, &items)
}

/// DPDK EAL arguments for the given devices (all of them, whatever their `eal_args`): an
/// allow-list plus `--iova-mode=va`, which unprivileged mlx5 needs (no physical addresses
/// without CAP_SYS_ADMIN). Left out when a function needs physical addresses (UIO, vfio
/// without an IOMMU): EAL refuses to probe such a device in VA mode, and a pod using one is
/// privileged anyway.
pub fn eal_args_for(devices: &[ResolvedDevice], host: &Host) -> String {
    let ids: Vec<String> = devices.iter().map(|d| d.id.kubelet()).collect();
    let items: Vec<(&str, bool)> = ids
        .iter()
        .zip(devices)
        .map(|(id, d)| (id.as_str(), d.options.eal_auxiliary))
        .collect();
    eal_list(host, &items)
}

/// EAL's option for IOVA as virtual addresses.
pub const IOVA_VA: &str = "--iova-mode=va";

/// One device of an EAL allow-list: `-a <bdf>`, or `-a auxiliary:<name>` for a device on the
/// auxiliary bus (a scalable function).
pub fn eal_allow(id: &str, auxiliary: bool) -> String {
    match auxiliary {
        true => format!("-a auxiliary:{id}"),
        false => format!("-a {id}"),
    }
}

/// (ID, named as `auxiliary:`) pairs into EAL arguments.
pub(crate) fn eal_list(host: &Host, items: &[(&str, bool)]) -> String {
    let mut args: Vec<String> = items.iter().map(|(id, aux)| eal_allow(id, *aux)).collect();
    if !items
        .iter()
        .any(|(id, _)| needs_physical_addresses(host, id))
    {
        args.push(IOVA_VA.into());
    }
    args.join(" ")
}

/// Whether the pool hands out `id`'s RDMA side (its char devices; its ibdev in the device-info
/// file): with `isRdma` on the selector that took it, or with `nicplug.rdmaDevices`.
pub fn gives_rdma(pool: &Pool, id: &str) -> bool {
    pool.device(id).is_some_and(|d| !d.options.rdma.is_empty())
}

/// A function DPDK can only drive with physical addresses: bound to a UIO driver, or to
/// vfio-pci in no-IOMMU mode.
fn needs_physical_addresses(host: &Host, id: &str) -> bool {
    host.function(id)
        .is_some_and(|f| f.uio.is_some() || (f.noiommu && f.driver.as_deref() == Some("vfio-pci")))
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

/// The vDPA device `f` is handed out with when the options name a `vdpaType`.
fn vdpa_of(f: &PciFunction, vdpa: Option<VdpaType>) -> Option<&VdpaDevice> {
    vdpa.and(f.vdpa.as_ref())
}

/// Device nodes of the function's class: vfio (container and group), UIO, vhost-vdpa.
fn class_nodes(
    edits: &mut ContainerEdits,
    f: &PciFunction,
    vdpa: Option<VdpaType>,
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
    if let Some(n) = vdpa_of(f, vdpa).and_then(|v| v.node.as_ref()) {
        add_node(edits, &n.path, paths, Some((n.major, n.minor)));
    }
}

/// The `vfio`, `uio` and `vdpa` records of `PCIDEVICE_<..>_INFO` for each class `f` belongs to
/// with these options.
fn class_records(f: &PciFunction, vdpa: Option<VdpaType>) -> Vec<(&'static str, info::Record)> {
    let mut out = Vec::new();
    if f.driver.as_deref() == Some("vfio-pci") {
        let group = vfio_group_node(f).map(|(container, _)| container);
        out.push(info::vfio(group.as_deref()));
    }
    if let Some(u) = &f.uio {
        out.push(info::uio(Some(&u.path)));
    }
    if let Some(v) = vdpa_of(f, vdpa) {
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
    layout::check_port_dir(&parts).map_err(unsafe_path)?;
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
