//! Reading a sysfs tree into a [`Host`]. The only I/O in discovery lives here.
//!
//! Each function is read on its own: a missing required file, a garbled value, an unreadable
//! file or a link that leaves the sysfs root skips that one function, recorded in
//! [`Host::skipped`] with the file named (callers decide how loudly to say so). A broken RDMA
//! side only drops that side: the function stays, without RDMA, and the problem is recorded in
//! [`Host::skipped`] as well. Optional attributes may be absent; present but garbled still skips, because handing out
//! a device read from half-understood sysfs is worse than not handing it out.

use super::classes;
use super::layout;
use super::model::*;
use super::models::model_name;
use super::sysfs::*;
use crate::paths::HostPaths;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::warn;

/// Discovery failed as a whole (a single bad function never does this).
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("sysfs root {path} is not usable: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot list PCI devices in {path}: {source}")]
    ListDevices {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Read the host described by `paths` (sysfs root and procfs root).
pub fn discover(paths: &HostPaths) -> Result<Host, DiscoverError> {
    let none = Host {
        functions: Vec::new(),
        aux_functions: Vec::new(),
        rdma_netns_mode: RdmaNetnsMode::Unknown,
        rdma_cm: None,
        skipped: Vec::new(),
    };
    // Against a host with nothing, "the same" means exactly that.
    Ok(match read_all(paths, &none)? {
        Reread::Changed(host) => host,
        Reread::Same => none,
    })
}

/// The host read again: the same as the old snapshot, or a new one.
#[derive(Debug)]
pub enum Reread {
    Same,
    Changed(Host),
}

/// Like [`refresh`], but says when nothing changed. A full read compares each function with
/// `old` as it goes and keeps only those that differ, so an unchanged host is never held twice.
pub fn reread(paths: &HostPaths, old: &Host, scope: &Scope) -> Result<Reread, DiscoverError> {
    if *scope == Scope::All {
        return read_all(paths, old);
    }
    let host = refresh(paths, old, scope)?;
    Ok(if host == *old {
        Reread::Same
    } else {
        Reread::Changed(host)
    })
}

/// One function as read, or "the same as in the old snapshot" (boxed: an unchanged host's
/// results then cost a few bytes per function).
enum Read {
    Same,
    New(Box<Res<Option<PciFunction>>>),
}

/// One reader's results, by name, and the parts it could not read.
type Part = (Vec<(String, Read)>, Vec<Skipped>);

fn read_all(paths: &HostPaths, old: &Host) -> Result<Reread, DiscoverError> {
    let root = canonical_root(paths)?;
    let list_dir = root.join(layout::PCI_DEVICES);
    let entries = fs::read_dir(&list_dir).map_err(|source| DiscoverError::ListDevices {
        path: list_dir.clone(),
        source,
    })?;

    let mut skipped = Vec::new();
    let mut names = Vec::new();
    for entry in entries.flatten() {
        match entry.file_name().into_string() {
            Ok(name) => names.push(name),
            Err(raw) => skipped.push(Skipped {
                address: raw.to_string_lossy().into_owned(),
                file: entry.path(),
                reason: "entry name is not UTF-8".into(),
            }),
        }
    }
    names.sort();
    // Read before the functions, so each compares with its old self complete.
    let default_routes = default_route_ifaces(&paths.proc_root);

    // Reading sysfs is one syscall after another: on a big host, spread the functions over the
    // cores (each reader keeps its own PF cache; a PF's virtfn map may be read twice).
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let chunk = names.len().div_ceil(workers).max(128);
    let read = |part: &[String]| {
        let mut reader = Reader::new(&root);
        let results = part
            .iter()
            .map(|name| {
                let mut result = reader.function(name);
                if let Ok(Some(f)) = &mut result {
                    for netdev in &mut f.netdevs {
                        netdev.default_route = default_routes.contains(&netdev.name);
                    }
                    if old.function(name) == Some(&*f) {
                        return (name.clone(), Read::Same);
                    }
                }
                (name.clone(), Read::New(Box::new(result)))
            })
            .collect::<Vec<_>>();
        (results, reader.partial)
    };
    let parts: Vec<Part> = if names.len() <= chunk {
        vec![read(&names)]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = names
                .chunks(chunk)
                .map(|part| s.spawn(move || read(part)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    };

    let results = || parts.iter().flat_map(|(r, _)| r).map(|(_, r)| r);
    let same = results().filter(|r| matches!(r, Read::Same)).count();
    let kept = results()
        .filter(|r| match r {
            Read::Same => true,
            Read::New(r) => matches!(**r, Ok(Some(_))),
        })
        .count();
    for (_, partial) in &parts {
        skipped.extend(partial.iter().cloned());
    }
    if same == kept
        && same == old.functions.len()
        && results().all(|r| match r {
            Read::Same => true,
            Read::New(r) => matches!(**r, Ok(None)),
        })
    {
        // Every function as it was: compare the host-wide rest before copying anything. When
        // the rest differs, the full path below checks it against the functions too (no node
        // claimed by two devices, majors owned by their drivers).
        let rest = finish(paths, &root, Vec::new(), skipped.clone());
        if rest.aux_functions == old.aux_functions
            && rest.rdma_netns_mode == old.rdma_netns_mode
            && rest.rdma_cm == old.rdma_cm
            && rest.skipped == old.skipped
        {
            return Ok(Reread::Same);
        }
    }

    let mut functions = Vec::with_capacity(kept);
    for (results, _) in parts {
        let results = results.into_iter().map(|(name, r)| {
            let r = match r {
                Read::New(r) => r.map(|f| f.map(Arc::new)),
                // Shared with the old snapshot, not copied.
                Read::Same => Ok(old
                    .functions
                    .binary_search_by(|f| f.address.as_str().cmp(&name))
                    .ok()
                    .map(|i| old.functions[i].clone())),
            };
            (name, r)
        });
        sort_results(results, &mut functions, &mut skipped);
    }
    let host = finish(paths, &root, functions, skipped);
    Ok(if host == *old {
        Reread::Same
    } else {
        Reread::Changed(host)
    })
}

/// What an event says changed in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Anything may have changed: read everything.
    All,
    /// Only these PCI functions (by address), or SFs under them.
    Functions(BTreeSet<String>),
}

impl Scope {
    /// Past this many functions one parallel full read is as cheap as reading them one by one.
    const MAX_FUNCTIONS: usize = 64;

    pub fn function(address: &str) -> Scope {
        Scope::Functions(BTreeSet::from([address.to_string()]))
    }

    /// Both changes.
    pub fn merge(self, other: Scope) -> Scope {
        match (self, other) {
            (Scope::Functions(mut a), Scope::Functions(b)) => {
                a.extend(b);
                if a.len() > Self::MAX_FUNCTIONS {
                    Scope::All
                } else {
                    Scope::Functions(a)
                }
            }
            _ => Scope::All,
        }
    }
}

/// `old` with the functions of `scope` read again; the same result as [`discover`] when nothing
/// else changed. A VF's PF is read with it (its `sriov_numvfs` and `virtfnN` links change with
/// it); what is host-wide (SFs, default routes, `rdma_cm`, the netns mode) is small and read
/// whole every time.
pub fn refresh(paths: &HostPaths, old: &Host, scope: &Scope) -> Result<Host, DiscoverError> {
    let Scope::Functions(changed) = scope else {
        return discover(paths);
    };
    let root = canonical_root(paths)?;
    let mut reader = Reader::new(&root);
    let mut queue: Vec<String> = changed.iter().cloned().collect();
    queue.extend(
        changed
            .iter()
            .filter_map(|a| Some(old.function(a)?.physfn.as_ref()?.address.clone())),
    );
    let mut results = BTreeMap::new();
    while let Some(address) = queue.pop() {
        if results.contains_key(&address) {
            continue;
        }
        let result = reader.listed_function(&address);
        if let Ok(Some(f)) = &result
            && let Some(pf) = &f.physfn
        {
            queue.push(pf.address.clone());
        }
        results.insert(address, result);
    }

    let mut functions: Vec<Arc<PciFunction>> = old
        .functions
        .iter()
        .filter(|f| !results.contains_key(&f.address))
        .cloned()
        .collect();
    // SF entries are read again below, with the rest of the auxiliary bus.
    let mut skipped: Vec<Skipped> = old
        .skipped
        .iter()
        .filter(|s| {
            !results.contains_key(&s.address)
                && !super::aux::is_aux_skip(s)
                && !classes::is_vdpa_skip(s)
        })
        .cloned()
        .collect();
    skipped.extend(reader.partial);
    let results = results
        .into_iter()
        .map(|(name, r)| (name, r.map(|f| f.map(Arc::new))));
    sort_results(results, &mut functions, &mut skipped);
    functions.sort_by(|a, b| a.address.cmp(&b.address));
    Ok(finish(paths, &root, functions, skipped))
}

fn canonical_root(paths: &HostPaths) -> Result<PathBuf, DiscoverError> {
    fs::canonicalize(&paths.sysfs_root).map_err(|source| DiscoverError::Root {
        path: paths.sysfs_root.clone(),
        source,
    })
}

/// Functions read to `functions`, failures to `skipped`, in the order given.
fn sort_results(
    results: impl IntoIterator<Item = (String, Res<Option<Arc<PciFunction>>>)>,
    functions: &mut Vec<Arc<PciFunction>>,
    skipped: &mut Vec<Skipped>,
) {
    for (name, result) in results {
        match result {
            Ok(Some(f)) => functions.push(f),
            Ok(None) => {}
            Err(skip) => skipped.push(Skipped {
                address: name,
                file: skip.file,
                reason: skip.reason,
            }),
        }
    }
}

/// The host-wide rest, around the PCI functions read.
fn finish(
    paths: &HostPaths,
    root: &Path,
    mut functions: Vec<Arc<PciFunction>>,
    mut skipped: Vec<Skipped>,
) -> Host {
    let default_routes = default_route_ifaces(&paths.proc_root);
    let mut aux_functions = super::aux::aux_functions(root, &mut skipped);
    classes::attach_vdpa(root, &mut functions, &mut skipped);
    let mut rdma_cm = rdma_cm(root);
    super::majors::check(
        &paths.proc_root,
        root,
        &mut functions,
        &mut aux_functions,
        &mut skipped,
        &mut rdma_cm,
    );
    // A function whose routes did not move stays shared with the old snapshot.
    let routed = |n: &NetDev| n.default_route == default_routes.contains(&n.name);
    for f in &mut functions {
        if !f.netdevs.iter().all(routed) {
            for netdev in &mut Arc::make_mut(f).netdevs {
                netdev.default_route = default_routes.contains(&netdev.name);
            }
        }
    }
    for netdev in aux_functions.iter_mut().flat_map(|a| a.netdevs.iter_mut()) {
        netdev.default_route = default_routes.contains(&netdev.name);
    }
    // One order whichever way the snapshot was read, so snapshots compare equal.
    skipped.sort_by(|a, b| a.address.cmp(&b.address));
    Host {
        functions,
        aux_functions,
        rdma_netns_mode: netns_mode(root),
        rdma_cm,
        skipped,
    }
}

struct Reader {
    root: PathBuf,
    /// PF address -> (VF address -> VF index), read once per PF from its `virtfnN` links.
    virtfns: HashMap<String, HashMap<String, u32>>,
    /// Functions kept without a part that could not be read (their RDMA side).
    partial: Vec<Skipped>,
}

impl Reader {
    fn new(root: &Path) -> Self {
        Reader {
            root: root.to_path_buf(),
            virtfns: HashMap::new(),
            partial: Vec::new(),
        }
    }

    /// The function at `bus/pci/devices/<name>`; `None` when that entry is gone or the function
    /// is not one we hand out.
    fn listed_function(&mut self, name: &str) -> Res<Option<PciFunction>> {
        let link = self.root.join(layout::PCI_DEVICES).join(name);
        match fs::symlink_metadata(&link) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            _ => self.function(name),
        }
    }

    fn function(&mut self, name: &str) -> Res<Option<PciFunction>> {
        let link = self.root.join(layout::PCI_DEVICES).join(name);
        if !is_bdf(name) {
            return Err(Skip::new(&link, "entry name is not a PCI address"));
        }
        let dir = fs::canonicalize(&link).map_err(|e| Skip::io(&link, &e))?;
        let sysfs_dir = dir
            .strip_prefix(&self.root)
            .map_err(|_| Skip::new(&link, "link points outside the sysfs root"))?
            .to_path_buf();

        // Class first: devices we do not hand out never produce warnings.
        let class_code = required_hex(&dir.join("class"))?;
        let class = match class_code >> 16 {
            0x02 => FunctionClass::Network,
            0x12 => FunctionClass::Accelerator,
            _ => return Ok(None),
        };
        let vendor = to_u16(&dir.join("vendor"), required_hex(&dir.join("vendor"))?)?;
        let device = to_u16(&dir.join("device"), required_hex(&dir.join("device"))?)?;
        let subsystem_vendor = optional_u16(&dir.join("subsystem_vendor"))?;
        let subsystem_device = optional_u16(&dir.join("subsystem_device"))?;

        let numa_node = match attr(&dir.join("numa_node"))? {
            None => None,
            Some(s) => {
                let n: i64 = parse(&dir.join("numa_node"), &s)?;
                u32::try_from(n).ok()
            }
        };
        let acpi_index = match attr(&dir.join("acpi_index"))? {
            Some(s) => Some(parse(&dir.join("acpi_index"), &s)?),
            None => None,
        };
        let iommu_group = match link_name(&dir.join("iommu_group"))? {
            Some(s) => Some(parse(&dir.join("iommu_group"), &s)?),
            None => None,
        };
        let sriov = match attr(&dir.join("sriov_totalvfs"))? {
            None => None,
            Some(total) => Some(Sriov {
                total_vfs: parse(&dir.join("sriov_totalvfs"), &total)?,
                num_vfs: parse(
                    &dir.join("sriov_numvfs"),
                    &required(&dir.join("sriov_numvfs"))?,
                )?,
            }),
        };
        let physfn = match link_name(&dir.join("physfn"))? {
            None => None,
            Some(pf) => Some(self.physfn(&dir, name, pf)?),
        };
        let driver = link_name(&dir.join("driver"))?;
        let (netdevs, representors) = classes::split_representors(netdevs(&dir)?);
        let noiommu = match (driver.as_deref(), iommu_group) {
            (Some("vfio-pci"), Some(g)) => classes::is_noiommu_group(&self.root, g)?,
            _ => false,
        };

        Ok(Some(PciFunction {
            address: name.to_string(),
            class,
            class_code,
            vendor,
            device,
            subsystem_vendor,
            subsystem_device,
            model: model_name(vendor, device),
            driver,
            numa_node,
            acpi_index,
            iommu_group,
            sriov,
            physfn,
            netdevs,
            rdma: self.rdma_or_none(name, &dir, &sysfs_dir),
            representors,
            noiommu,
            uio: classes::uio_node(&dir)?,
            vdpa: None,
            sysfs_dir,
        }))
    }

    /// A function whose RDMA attributes are broken is still a network function: keep it
    /// without its RDMA side (pools with `isRdma` then pass it by, pools without still take
    /// it) and record what was unreadable.
    fn rdma_or_none(&mut self, name: &str, dir: &Path, sysfs_dir: &Path) -> Option<RdmaDevice> {
        match rdma(dir, sysfs_dir) {
            Ok(r) => r,
            Err(skip) => {
                self.partial.push(Skipped {
                    address: name.to_string(),
                    file: skip.file,
                    reason: format!(
                        "{}; RDMA side ignored (pools with isRdma leave the function out, others still offer it)",
                        skip.reason
                    ),
                });
                None
            }
        }
    }

    fn physfn(&mut self, vf_dir: &Path, vf: &str, pf: String) -> Res<PhysFn> {
        let link = vf_dir.join("physfn");
        if !is_bdf(&pf) {
            return Err(Skip::new(
                &link,
                format!("target {pf:?} is not a PCI address"),
            ));
        }
        if !self.virtfns.contains_key(&pf) {
            // The PF is a sibling of its VFs in sysfs.
            let pf_dir = vf_dir.with_file_name(&pf);
            let map = virtfn_map(&pf_dir)?;
            self.virtfns.insert(pf.clone(), map);
        }
        match self.virtfns[&pf].get(vf) {
            Some(&vf_index) => Ok(PhysFn {
                address: pf,
                vf_index,
            }),
            None => Err(Skip::new(
                &link,
                format!("PF {pf} has no virtfnN link back to this VF"),
            )),
        }
    }
}

/// `virtfnN -> ../<vf>` links of a PF, as VF address -> N. An odd entry (no number, not a
/// link, two indices for one VF) is left out rather than failing the map: it must not hide its
/// siblings. A VF it concerns finds no link back and is skipped on its own.
fn virtfn_map(pf_dir: &Path) -> Res<HashMap<String, u32>> {
    let mut map = HashMap::new();
    let mut twice = BTreeSet::new();
    for name in list_names(pf_dir)? {
        let Some(index) = name.strip_prefix("virtfn") else {
            continue;
        };
        let path = pf_dir.join(&name);
        let (Ok(index), Ok(Some(vf))) = (parse::<u32>(&path, index), link_name(&path)) else {
            warn!(entry = %path.display(), "ignoring an odd virtfn entry");
            continue;
        };
        if map.insert(vf.clone(), index).is_some() {
            twice.insert(vf);
        }
    }
    // A VF listed under two indices has no one index: neither is trusted.
    for vf in twice {
        warn!(pf = %pf_dir.display(), %vf, "VF listed by two virtfn entries; skipping it");
        map.remove(&vf);
    }
    Ok(map)
}

pub(super) fn netdevs(dir: &Path) -> Res<Vec<NetDev>> {
    let mut net = dir.join(layout::NET_DIR);
    if !net.exists() {
        // virtio-net hangs its netdev off the virtio device: <pci>/virtioN/net/<if>.
        if let Some(v) = list_names(dir)?
            .into_iter()
            .find(|n| n.starts_with("virtio"))
        {
            real_dir(&dir.join(&v))?;
            net = dir.join(v).join(layout::NET_DIR);
        }
    }
    let mut out = Vec::new();
    for name in list_names(&net)? {
        let d = net.join(&name);
        real_dir(&d)?;
        let link_type = match attr(&d.join("type"))? {
            Some(t) => arphrd_name(parse(&d.join("type"), &t)?),
            None => "unknown".to_string(),
        };
        out.push(NetDev {
            mac: attr(&d.join("address"))?,
            operstate: attr(&d.join("operstate"))?.unwrap_or_else(|| "unknown".into()),
            // Reading `carrier` of an administratively down link fails (EINVAL): not a broken
            // function, just no carrier to tell.
            carrier: read_bounded(&d.join("carrier"))
                .ok()
                .and_then(|s| match s.trim() {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                }),
            link_type,
            default_route: false,
            phys_port_name: classes::port_attr(&d, "phys_port_name"),
            phys_switch_id: classes::port_attr(&d, "phys_switch_id"),
            name,
        });
    }
    // One netdev, one port, no umad is the common case: a snapshot of 1,024 functions keeps
    // ~1 MB less without the room `push` leaves.
    out.shrink_to_fit();
    Ok(out)
}

/// The RDMA side of a function, or `None` for a function without one.
pub(super) fn rdma(dir: &Path, sysfs_dir: &Path) -> Res<Option<RdmaDevice>> {
    let verbs_dir = dir.join(layout::VERBS_DIR);
    let mut uverbs = None;
    let mut uverbs_ibdev = None;
    if let Some(name) = list_names(&verbs_dir)?
        .into_iter()
        .find(|n| n.starts_with("uverbs"))
    {
        let d = verbs_dir.join(&name);
        real_dir(&d)?;
        uverbs = Some(char_dev(&d, &name)?);
        uverbs_ibdev = attr(&d.join("ibdev"))?;
    }

    let ib_dir = dir.join(layout::IB_DIR);
    let ibdevs = list_names(&ib_dir)?;
    if uverbs.is_none() && ibdevs.is_empty() {
        return Ok(None);
    }
    // A function can carry extra non-endpoint ibdevs (e.g. `smi1`); the one with the verbs node
    // is the device DPDK opens.
    let ibdev = match uverbs_ibdev {
        Some(name) if ibdevs.contains(&name) => Some(name),
        _ => ibdevs.into_iter().next(),
    };

    let mut ports = Vec::new();
    if let Some(ibdev) = &ibdev {
        // Every component of a port's path is checked to be a real directory: the port
        // directory becomes a bind mount's host path.
        real_dir(&ib_dir.join(ibdev))?;
        let ports_dir = layout::ports_dir(dir, ibdev);
        for p in list_names(&ports_dir)? {
            let pd = ports_dir.join(&p);
            real_dir(&pd)?;
            let number = parse(&pd, &p)?;
            let state = required(&pd.join("state"))?;
            let phys_state = attr(&pd.join("phys_state"))?;
            let link_layer = attr(&pd.join("link_layer"))?.unwrap_or_default();
            // Partition keys mean something on InfiniBand only; skip the read on Ethernet.
            let pkey = match link_layer.as_str() {
                "InfiniBand" => match real_dir(&pd.join("pkeys")) {
                    Ok(()) => attr(&pd.join("pkeys/0"))?,
                    Err(_) => None,
                },
                _ => None,
            };
            ports.push(RdmaPort {
                number,
                // "4: ACTIVE" -> "ACTIVE"
                state: state
                    .split_once(": ")
                    .map_or(state.as_str(), |x| x.1)
                    .to_string(),
                // "5: LinkUp" -> "LinkUp"
                phys_state: phys_state
                    .map(|s| s.split_once(": ").map_or(s.as_str(), |x| x.1).to_string()),
                link_layer,
                pkey,
                sysfs_dir: layout::ports_dir(sysfs_dir, ibdev).join(&p),
                has_hw_counters: pd.join(layout::HW_COUNTERS).is_dir(),
                has_counters: pd.join(layout::PORT_COUNTERS).is_dir(),
            });
        }
        ports.sort_by_key(|p| p.number);
        ports.shrink_to_fit();
    }

    let mad_dir = dir.join(layout::MAD_DIR);
    let (mut umad, mut issm) = (Vec::new(), Vec::new());
    for name in list_names(&mad_dir)? {
        if name.starts_with("umad") || name.starts_with("issm") {
            real_dir(&mad_dir.join(&name))?;
        }
        if name.starts_with("umad") {
            umad.push(char_dev(&mad_dir.join(&name), &name)?);
        } else if name.starts_with("issm") {
            issm.push(char_dev(&mad_dir.join(&name), &name)?);
        }
    }

    umad.shrink_to_fit();
    issm.shrink_to_fit();
    Ok(Some(RdmaDevice {
        ibdev,
        ports,
        uverbs,
        umad,
        issm,
    }))
}

fn netns_mode(root: &Path) -> RdmaNetnsMode {
    let file = root.join(layout::NETNS_MODE);
    match read_bounded(&file) {
        Ok(text) => layout::parse_netns_mode(&text).unwrap_or_else(|| {
            warn!(file = %file.display(), "unrecognised RDMA netns mode {:?}; assuming shared", text.trim());
            RdmaNetnsMode::Unknown
        }),
        Err(_) => RdmaNetnsMode::Unknown,
    }
}

fn rdma_cm(root: &Path) -> Option<CharDev> {
    // `class/misc/rdma_cm` is a symlink in a real sysfs; it must stay inside the root.
    let dir = fs::canonicalize(root.join(layout::RDMA_CM)).ok()?;
    if !dir.starts_with(root) {
        warn!(dir = %dir.display(), "ignoring rdma_cm: it resolves outside the sysfs root");
        return None;
    }
    let file = dir.join("dev");
    let text = read_bounded(&file).ok()?;
    match parse_dev(&file, text.trim()) {
        Ok((major, minor)) => Some(CharDev {
            name: "rdma_cm".into(),
            path: layout::rdma_node_path("rdma_cm"),
            major,
            minor,
        }),
        Err(skip) => {
            warn!(file = %skip.file.display(), "ignoring rdma_cm: {}", skip.reason);
            None
        }
    }
}

/// Interfaces that carry a default route, IPv4 (`/proc/net/route`) or IPv6
/// (`/proc/net/ipv6_route`, absent when IPv6 is disabled).
fn default_route_ifaces(proc_root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let v4 = proc_root.join("net/route");
    match route_lines(&v4) {
        Ok(lines) => out.extend(lines.skip(1).filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() >= 8 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
        })),
        Err(e) => {
            warn!(file = %v4.display(), "cannot read the routing table; no netdev is treated as carrying the IPv4 default route: {e}")
        }
    }
    let v6 = proc_root.join("net/ipv6_route");
    match route_lines(&v6) {
        // dest, dest prefix length, src, src prefix length, next hop, metric, refcnt, use,
        // flags, device. A reject route (`unreachable default`, flag 0x200) carries nothing.
        Ok(lines) => out.extend(lines.filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = f.get(8).and_then(|s| u32::from_str_radix(s, 16).ok())?;
            (f.len() >= 10
                && f[0].bytes().all(|b| b == b'0')
                && f[1] == "00"
                && flags & 0x200 == 0
                && f[9] != "lo")
                .then(|| f[9].to_string())
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            warn!(file = %v6.display(), "cannot read the IPv6 routing table; no netdev is treated as carrying the IPv6 default route: {e}")
        }
    }
    out
}

/// Lines of a routing table, streamed (a router's table can be large): opened non-blocking
/// and refused unless a regular file, so a FIFO in its place never blocks discovery.
fn route_lines(path: &Path) -> io::Result<impl Iterator<Item = String>> {
    use std::io::BufRead;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok(io::BufReader::new(file).lines().map_while(Result::ok))
}

fn arphrd_name(t: u32) -> String {
    match t {
        1 => "ether".into(),
        32 => "infiniband".into(),
        772 => "loopback".into(),
        other => format!("arphrd{other}"),
    }
}
