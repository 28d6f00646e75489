//! Scalable functions on the auxiliary bus: `bus/auxiliary/devices/mlx5_core.sf.N`, each a
//! directory under its parent PCI function holding `sfnum`, `driver`, `net/<if>`,
//! `infiniband/<ibdev>` and `infiniband_verbs/uverbsK`.
//!
//! Same rules as PCI functions: a bad entry is skipped with the file named, never a panic, and
//! only names checked by [`is_sf_name`] ever become part of a path.

use super::layout::AUX_DEVICES;
use super::model::{AuxFunction, Skipped, is_sf_name};
use super::read::{netdevs, rdma};
use super::sysfs::*;
use std::fs;
use std::path::Path;

const AUX_LIST: &str = "bus/auxiliary";
const SF_PREFIX: &str = "mlx5_core.sf.";

/// Every `mlx5_core.sf.N` of the auxiliary bus, sorted by N. Other aux devices (`mlx5_core.eth.N`,
/// `mlx5_core.rdma.N`, ...) are children, not devices we hand out, and are passed over silently.
pub(super) fn aux_functions(root: &Path, skipped: &mut Vec<Skipped>) -> Vec<AuxFunction> {
    let list_dir = root.join(AUX_DEVICES);
    let names = match list_names(&list_dir) {
        Ok(names) => names,
        Err(skip) => {
            skipped.push(Skipped {
                address: AUX_LIST.into(),
                file: skip.file,
                reason: skip.reason,
            });
            return Vec::new();
        }
    };
    let mut names: Vec<String> = names
        .into_iter()
        .filter(|n| n.starts_with(SF_PREFIX))
        .collect();
    names.sort_by_key(|n| (n.len(), n.clone()));
    let mut out = Vec::new();
    for name in names {
        match aux_function(root, &name) {
            Ok(sf) => out.push(sf),
            Err(skip) => skipped.push(Skipped {
                address: name,
                file: skip.file,
                reason: skip.reason,
            }),
        }
    }
    out
}

/// A skipped entry [`aux_functions`] made (so a partial re-read can replace them all).
pub(super) fn is_aux_skip(s: &Skipped) -> bool {
    s.address == AUX_LIST || s.address.starts_with(SF_PREFIX)
}

fn aux_function(root: &Path, name: &str) -> Res<AuxFunction> {
    let link = root.join(AUX_DEVICES).join(name);
    if !is_sf_name(name) {
        return Err(Skip::new(&link, "entry name is not mlx5_core.sf.<number>"));
    }
    let dir = fs::canonicalize(&link).map_err(|e| Skip::io(&link, &e))?;
    let sysfs_dir = dir
        .strip_prefix(root)
        .map_err(|_| Skip::new(&link, "link points outside the sysfs root"))?
        .to_path_buf();
    if dir.file_name().and_then(|n| n.to_str()) != Some(name) {
        return Err(Skip::new(
            &link,
            "link target is not a directory of that name",
        ));
    }
    // The parent PCI function: the nearest ancestor named like a PCI address, inside the root.
    let parent_dir = dir
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(root) && *d != root)
        .find(|d| d.file_name().and_then(|n| n.to_str()).is_some_and(is_bdf))
        .ok_or_else(|| Skip::new(&link, "no parent PCI function above the SF directory"))?;
    let parent = parent_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();

    let sfnum_file = dir.join("sfnum");
    let sfnum = parse(&sfnum_file, &required(&sfnum_file)?)?;
    let numa_file = parent_dir.join("numa_node");
    let numa_node = match attr(&numa_file)? {
        None => None,
        Some(s) => u32::try_from(parse::<i64>(&numa_file, &s)?).ok(),
    };
    Ok(AuxFunction {
        name: name.to_string(),
        sfnum,
        parent,
        driver: link_name(&dir.join("driver"))?,
        numa_node,
        netdevs: netdevs(&dir)?,
        rdma: rdma(&dir, &sysfs_dir)?,
        sysfs_dir,
    })
}
