//! Char device numbers from sysfs are trusted only as far as the kernel vouches for them.
//!
//! A `dev` file says `MAJOR:MINOR`, and that number becomes a device node in a container: a
//! wrong one hands out a different device (a disk is `8:0`). So every number is checked against
//! `/proc/devices`, which names the driver owning each major: uverbs nodes must belong to
//! `infiniband_verbs`, umad and issm to `infiniband_mad`, `rdma_cm` to `misc`. ([`Majors::owns`]
//! also knows `vfio`, `uio` and `vhost-vdpa`, but the UIO and vhost-vdpa numbers of those
//! classes are not checked yet: a known gap, listed in docs/security.md.) And no node may belong to two functions: two functions naming the same
//! node or number would put one device into two pods. A function failing either check is
//! skipped with the file named, like any broken function.
//!
//! Without a readable `/proc/devices` (a hand-made test tree; every kernel has one) numbers are
//! not checked against drivers, with a warning; uniqueness is checked regardless.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use super::model::{AuxFunction, CharDev, PciFunction, RdmaDevice, Skipped};

/// `/proc/devices` is a few KiB; more is not `/proc/devices`.
const MAX_BYTES: u64 = 256 * 1024;

/// Char device majors by driver name, from `/proc/devices`.
#[derive(Debug, Default)]
pub struct Majors {
    by_driver: BTreeMap<String, BTreeSet<u32>>,
}

impl Majors {
    /// Parse the text of `/proc/devices`: the `Character devices:` section only.
    pub fn parse(text: &str) -> Self {
        let mut by_driver: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        let mut in_char = false;
        for line in text.lines() {
            let line = line.trim();
            if line.ends_with(':') {
                in_char = line == "Character devices:";
                continue;
            }
            if !in_char {
                continue;
            }
            if let Some((major, driver)) = line.split_once(char::is_whitespace)
                && let Ok(major) = major.parse()
            {
                by_driver
                    .entry(driver.trim().to_owned())
                    .or_default()
                    .insert(major);
            }
        }
        Majors { by_driver }
    }

    /// Read `<proc_root>/devices`; `None` (with a warning) when it cannot be read.
    pub fn read(proc_root: &Path) -> Option<Self> {
        let file = proc_root.join("devices");
        match read_small(&file) {
            Ok(text) => Some(Self::parse(&text)),
            Err(e) => {
                warn!(file = %file.display(), "cannot read the char device table; device numbers from sysfs are not checked against their drivers: {e}");
                None
            }
        }
    }

    /// Whether `driver` owns char major `major`.
    pub fn owns(&self, driver: &str, major: u32) -> bool {
        self.by_driver
            .get(driver)
            .is_some_and(|majors| majors.contains(&major))
    }

    fn listed(&self, driver: &str) -> String {
        match self.by_driver.get(driver) {
            Some(m) => m.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
            None => "none".to_owned(),
        }
    }
}

/// A procfs file, non-blocking, regular, bounded.
fn read_small(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    // One byte past the cap tells a cut-off table from a whole one: a partial table would
    // refuse functions whose drivers it lost.
    file.take(MAX_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_BYTES {
        return Err(std::io::Error::other("larger than any /proc/devices"));
    }
    Ok(text)
}

/// The driver that must own a node's major, by node name.
fn driver_of(node: &str) -> &'static str {
    if node.starts_with("uverbs") {
        "infiniband_verbs"
    } else if node == "rdma_cm" {
        "misc"
    } else {
        // umadN, issmN: the only other names `is_rdma_node_name` lets through.
        "infiniband_mad"
    }
}

/// Every node of an RDMA device, with the sysfs class directory it was read from.
fn nodes(rdma: &RdmaDevice) -> impl Iterator<Item = (&'static str, &CharDev)> {
    let verbs = rdma.uverbs.iter().map(|n| ("infiniband_verbs", n));
    let mad = rdma
        .umad
        .iter()
        .chain(&rdma.issm)
        .map(|n| ("infiniband_mad", n));
    verbs.chain(mad)
}

/// One function's claim on the nodes: (address, sysfs dir, RDMA device).
struct Owner<'a> {
    address: &'a str,
    dir: &'a Path,
    rdma: &'a RdmaDevice,
}

/// A node claimed by a function. Its `dev` file, `<dir>/<class>/<node>/dev`, is built only to
/// report a fault: a path per node on every rescan was most of a rescan's heap.
struct Claim<'a> {
    address: &'a str,
    node: &'a CharDev,
    dir: &'a Path,
    class: &'static str,
}

impl Claim<'_> {
    fn file(&self, root: &Path) -> PathBuf {
        root.join(self.dir)
            .join(self.class)
            .join(&self.node.name)
            .join("dev")
    }
}

/// Check every function's device numbers; move the failing ones from `functions` and
/// `aux_functions` to `skipped`, and drop an `rdma_cm` whose major is not `misc`'s.
pub(super) fn check(
    proc_root: &Path,
    root: &Path,
    functions: &mut Vec<Arc<PciFunction>>,
    aux_functions: &mut Vec<AuxFunction>,
    skipped: &mut Vec<Skipped>,
    rdma_cm: &mut Option<CharDev>,
) {
    let any_nodes = functions.iter().any(|f| f.rdma.is_some())
        || aux_functions.iter().any(|a| a.rdma.is_some())
        || rdma_cm.is_some();
    if !any_nodes {
        return;
    }
    let majors = Majors::read(proc_root);
    if let (Some(majors), Some(cm)) = (&majors, &*rdma_cm)
        && !majors.owns("misc", cm.major)
    {
        warn!(
            major = cm.major,
            "ignoring rdma_cm: its major is not misc's in /proc/devices"
        );
        *rdma_cm = None;
    }

    let owners: Vec<Owner> = functions
        .iter()
        .filter_map(|f| {
            Some(Owner {
                address: &f.address,
                dir: &f.sysfs_dir,
                rdma: f.rdma.as_ref()?,
            })
        })
        .chain(aux_functions.iter().filter_map(|a| {
            Some(Owner {
                address: &a.name,
                dir: &a.sysfs_dir,
                rdma: a.rdma.as_ref()?,
            })
        }))
        .collect();

    let mut bad: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
    // Sized up front: grown by doubling it held a third more than it needed (917 KB for
    // 688 KB on a 4,096-function host).
    let count: usize = owners.iter().map(|o| nodes(o.rdma).count()).sum();
    let mut claims = Vec::with_capacity(count + 1);
    for o in &owners {
        for (class, node) in nodes(o.rdma) {
            let claim = Claim {
                address: o.address,
                node,
                dir: o.dir,
                class,
            };
            if let Some(majors) = &majors {
                let driver = driver_of(&node.name);
                if !majors.owns(driver, node.major) {
                    bad.entry(o.address.to_owned()).or_insert_with(|| {
                        (
                            claim.file(root),
                            format!(
                                "{} has major {}, which /proc/devices does not give {driver} \
                                 (its majors: {})",
                                node.name,
                                node.major,
                                majors.listed(driver)
                            ),
                        )
                    });
                }
            }
            claims.push(claim);
        }
    }
    // Node paths are the functions' own; numbers are also claimed by rdma_cm.
    let with_path = claims.len();
    if let Some(cm) = &*rdma_cm {
        // `class/misc/rdma_cm/dev`
        claims.push(Claim {
            address: "rdma_cm",
            node: cm,
            dir: Path::new("class"),
            class: "misc",
        });
    }
    // Who claims each number and each node path: runs of equal keys, in key order and, within
    // a run, in the order read.
    let mut by_number: Vec<usize> = (0..claims.len()).collect();
    by_number.sort_by_key(|&i| (claims[i].node.major, claims[i].node.minor));
    let mut by_path: Vec<usize> = (0..with_path).collect();
    by_path.sort_by(|&a, &b| claims[a].node.path.cmp(&claims[b].node.path));
    let number = |&a: &usize, &b: &usize| {
        (claims[a].node.major, claims[a].node.minor) == (claims[b].node.major, claims[b].node.minor)
    };
    let path = |&a: &usize, &b: &usize| claims[a].node.path == claims[b].node.path;
    let shared = by_number
        .chunk_by(number)
        .map(|run| (run, "number"))
        .chain(by_path.chunk_by(path).map(|run| (run, "node")));
    for (run, what) in shared {
        if run.len() < 2 {
            continue;
        }
        for &i in run {
            let Claim { address, node, .. } = claims[i];
            let others: Vec<String> = run
                .iter()
                .map(|&j| &claims[j])
                .filter(|c| c.address != address || c.node.name != node.name)
                .map(|c| format!("{n} of {a}", n = c.node.name, a = c.address))
                .collect();
            bad.entry(address.to_owned()).or_insert_with(|| {
                (
                    claims[i].file(root),
                    format!(
                        "{} ({}:{}) has the same {what} as {}; no node is given to two devices",
                        node.name,
                        node.major,
                        node.minor,
                        others.join(", ")
                    ),
                )
            });
        }
    }
    if let Some((file, reason)) = bad.remove("rdma_cm") {
        warn!(file = %file.display(), "ignoring rdma_cm: {reason}");
        *rdma_cm = None;
    }
    if bad.is_empty() {
        return;
    }
    functions.retain(|f| !bad.contains_key(&f.address));
    aux_functions.retain(|a| !bad.contains_key(&a.name));
    for (address, (file, reason)) in bad {
        skipped.push(Skipped {
            address,
            file,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_char_section_counts() {
        let m = Majors::parse(
            "Character devices:\n  1 mem\n 10 misc\n231 infiniband_verbs\n231 infiniband_mad\n\
             510 infiniband_verbs\n\nBlock devices:\n  8 sd\n259 blkext\n",
        );
        assert!(m.owns("misc", 10));
        assert!(m.owns("infiniband_verbs", 231) && m.owns("infiniband_verbs", 510));
        assert!(m.owns("infiniband_mad", 231));
        assert!(!m.owns("sd", 8), "a block major is no char major");
        assert!(!m.owns("infiniband_mad", 510));
    }
}
