//! Device classes beyond plain netdev and RDMA functions, as the kernel lays them out:
//!
//! - **UIO**: a function bound to `igb_uio` or `uio_pci_generic` has `<bdf>/uio/uioN/dev`; its
//!   node is `/dev/uioN`.
//! - **vfio no-IOMMU**: without an IOMMU, vfio creates a group per function and names it
//!   `vfio-noiommu` (`kernel/iommu_groups/<N>/name`); its node is `/dev/vfio/noiommu-<N>`.
//! - **vDPA**: `bus/vdpa/devices/<name>` links to a directory below the parent PCI function;
//!   bound to `vhost_vdpa` it holds `vhost-vdpa-N/dev` (`/dev/vhost-vdpa-N`), bound to
//!   `virtio_vdpa` a `virtioN/net/<if>` netdev.
//! - **switchdev representors**: netdevs under a PF whose `phys_port_name` names a function
//!   (`pf0vf3`, `pf0sf88`, `c1pf0vf3`) rather than a physical port (`p0`, `p0s1`).
//!
//! Same rules as the rest of discovery: names checked before they become paths, links must stay
//! inside the sysfs root, a bad entry is skipped with the file named.

use super::model::{CharDev, NetDev, PciFunction, Skipped, VdpaDevice, VdpaKind};
use super::read::netdevs;
use super::sysfs::*;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

/// Marks the skipped entries [`attach_vdpa`] made, so a partial re-read can replace them.
const VDPA_LIST: &str = "bus/vdpa/devices";

/// The UIO node of a function: `<dir>/uio/uioN`, `None` without one.
pub(super) fn uio_node(dir: &Path) -> Res<Option<CharDev>> {
    let uio_dir = dir.join("uio");
    let Some(name) = list_names(&uio_dir)?
        .into_iter()
        .find(|n| n.starts_with("uio"))
    else {
        return Ok(None);
    };
    let d = uio_dir.join(&name);
    if !is_numbered(&name, "uio") {
        return Err(Skip::new(&d, "not a uioN entry"));
    }
    real_dir(&d)?;
    let file = d.join("dev");
    let (major, minor) = parse_dev(&file, &required(&file)?)?;
    Ok(Some(CharDev {
        path: format!("/dev/{name}"),
        name,
        major,
        minor,
    }))
}

/// Whether IOMMU group `group` is one vfio made for no-IOMMU mode. The group directory is built
/// from the number, never reached through a link.
pub(super) fn is_noiommu_group(root: &Path, group: u32) -> Res<bool> {
    let file = root.join(format!("kernel/iommu_groups/{group}/name"));
    Ok(attr(&file)?.as_deref() == Some("vfio-noiommu"))
}

/// An optional netdev attribute the driver may refuse to report (`phys_port_name` reads fail
/// with EOPNOTSUPP in legacy mode): any failure reads as absent.
pub(super) fn port_attr(netdev_dir: &Path, name: &str) -> Option<String> {
    read_bounded(&netdev_dir.join(name))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `p<N>` or `p<N>s<M>`: the name of a physical port, what an uplink reports.
fn is_physical_port(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('p') else {
        return false;
    };
    let (port, split) = match rest.split_once('s') {
        Some((p, s)) => (p, Some(s)),
        None => (rest, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(port) && split.is_none_or(digits)
}

/// A representor reports a port name that is not a physical port (`pf0vf3`, `pf0sf88`, `pf0`).
pub fn is_representor(n: &NetDev) -> bool {
    n.phys_port_name
        .as_deref()
        .is_some_and(|p| !is_physical_port(p))
}

/// The function's own netdevs and the representors hanging under it, apart.
pub(super) fn split_representors(all: Vec<NetDev>) -> (Vec<NetDev>, Vec<NetDev>) {
    if !all.iter().any(is_representor) {
        return (all, Vec::new());
    }
    all.into_iter().partition(|n| !is_representor(n))
}

/// A skipped entry [`attach_vdpa`] made.
pub(super) fn is_vdpa_skip(s: &Skipped) -> bool {
    s.address.starts_with(VDPA_LIST)
}

/// Reads every vDPA device and hangs it on its parent among `functions` (sorted by address).
/// Devices whose parent is not a function of interest are passed over silently.
pub(super) fn attach_vdpa(
    root: &Path,
    functions: &mut [Arc<PciFunction>],
    skipped: &mut Vec<Skipped>,
) {
    // Read them all afresh (functions a partial re-read kept carry their old device), then
    // touch only the functions whose device changed: the others stay shared with the old
    // snapshot.
    let mut found: HashMap<String, VdpaDevice> = HashMap::new();
    let list = root.join(VDPA_LIST);
    match list_names(&list) {
        Ok(names) => {
            for name in names {
                match vdpa_device(root, &name) {
                    // The first device per parent, as before.
                    Ok(Some((parent, dev))) => {
                        found.entry(parent).or_insert(dev);
                    }
                    Ok(None) => {}
                    Err(skip) => skipped.push(Skipped {
                        address: format!("{VDPA_LIST}/{name}"),
                        file: skip.file,
                        reason: skip.reason,
                    }),
                }
            }
        }
        Err(skip) => skipped.push(Skipped {
            address: VDPA_LIST.into(),
            file: skip.file,
            reason: skip.reason,
        }),
    }
    for f in functions.iter_mut() {
        let dev = found.remove(&f.address);
        if f.vdpa != dev {
            Arc::make_mut(f).vdpa = dev;
        }
    }
}

/// (parent PCI address, device) of `bus/vdpa/devices/<name>`; `None` without a PCI parent.
fn vdpa_device(root: &Path, name: &str) -> Res<Option<(String, VdpaDevice)>> {
    let link = root.join(VDPA_LIST).join(name);
    let dir = fs::canonicalize(&link).map_err(|e| Skip::io(&link, &e))?;
    if !dir.starts_with(root) || dir == root {
        return Err(Skip::new(&link, "link points outside the sysfs root"));
    }
    if dir.file_name().and_then(|n| n.to_str()) != Some(name) {
        return Err(Skip::new(
            &link,
            "link target is not a directory of that name",
        ));
    }
    // Drivers make the PCI function itself the parent; a vDPA device further down (under an
    // mlx5 SF, say) belongs to that child, not to the function.
    let Some(parent) = dir
        .parent()
        .filter(|p| p.starts_with(root) && *p != root)
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .filter(|n| is_bdf(n))
    else {
        return Ok(None);
    };
    let driver = link_name(&dir.join("driver"))?;
    let kind = match driver.as_deref() {
        Some("vhost_vdpa") => Some(VdpaKind::Vhost),
        Some("virtio_vdpa") => Some(VdpaKind::Virtio),
        _ => None,
    };
    let mut node = None;
    if kind == Some(VdpaKind::Vhost)
        && let Some(n) = list_names(&dir)?
            .into_iter()
            .find(|n| is_numbered(n, "vhost-vdpa-"))
    {
        let d = dir.join(&n);
        real_dir(&d)?;
        let file = d.join("dev");
        let (major, minor) = parse_dev(&file, &required(&file)?)?;
        node = Some(CharDev {
            path: format!("/dev/{n}"),
            name: n,
            major,
            minor,
        });
    }
    let netdevs = if kind == Some(VdpaKind::Virtio) {
        netdevs(&dir)?
    } else {
        Vec::new()
    };
    Ok(Some((
        parent.to_string(),
        VdpaDevice {
            name: name.to_string(),
            kind,
            driver,
            node,
            netdevs,
        },
    )))
}

/// `<prefix><digits>`, short: the only shape a node name taken from sysfs may have.
fn is_numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.len() <= 6 && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names() {
        for p in ["p0", "p1", "p0s1", "p12s3"] {
            assert!(is_physical_port(p), "{p}");
        }
        for p in [
            "pf0vf3", "pf0sf88", "c1pf0vf3", "pf0", "p", "ps1", "p0s", "p0x", "eth0",
        ] {
            assert!(!is_physical_port(p), "{p}");
        }
    }

    #[test]
    fn node_names() {
        assert!(is_numbered("uio0", "uio"));
        assert!(is_numbered("vhost-vdpa-12", "vhost-vdpa-"));
        assert!(!is_numbered("uio", "uio"));
        assert!(!is_numbered("uio0/../x", "uio"));
        assert!(!is_numbered("vhost-vdpa-", "vhost-vdpa-"));
    }
}
