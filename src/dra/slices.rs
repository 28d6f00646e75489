//! The node's ResourceSlices, described from the host snapshot and its pools: pure, no I/O.
//!
//! One pool per node, named after the node; one device per function an exclusive pool of the
//! config selects. RDMA shared pools (`configList`) are not DRA devices: their IDs are tokens
//! standing for a whole set of HCAs, which DRA expresses differently (shared counters or admin
//! access), so they stay with the device plugin.

use crate::device_id::DeviceId;
use crate::dra::model::DRIVER;
use crate::host::{Device as HostDevice, Host};
use crate::pools::{self, Pool};
use k8s_openapi::api::resource::v1::{
    Device, DeviceAttribute, ResourcePool, ResourceSlice, ResourceSliceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// Devices per ResourceSlice the v1 API accepts (`spec.devices`, maxItems 128).
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// Longest string attribute value the API accepts.
pub const MAX_STRING_VALUE: usize = 64;
/// Longest object name (a DNS subdomain).
const MAX_NAME: usize = 253;

/// Standard attributes (`k8s.io/dynamic-resource-allocation/deviceattribute`): the PCIe root
/// complex as `pci<domain>:<bus>` and the PCI address in extended BDF notation.
pub const ATTR_PCIE_ROOT: &str = "resource.kubernetes.io/pcieRoot";
pub const ATTR_PCI_BUS_ID: &str = "resource.kubernetes.io/pciBusID";

/// nicplug's attribute carrying the device-plugin resource name whose selectors took the device;
/// the DeviceClasses of `nicplug dra classes` select on it.
pub const ATTR_RESOURCE_NAME: &str = "nicplug.io/resourceName";

/// One device as published, with the pool it came from (kept for tests and logs).
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub id: DeviceId,
    pub device: Device,
}

/// The devices of the node, sorted by name. A function the pools list but the snapshot lost
/// (it cannot happen with a consistent snapshot) is left out.
pub fn devices<'a>(host: &Host, pools: impl IntoIterator<Item = &'a Pool>) -> Vec<Published> {
    let mut out: BTreeMap<String, Published> = BTreeMap::new();
    for pool in pools.into_iter().filter(|p| p.shared.is_none()) {
        for pd in &pool.devices {
            let (Some(id), Some(dev)) = (DeviceId::parse(&pd.id), host.device(&pd.id)) else {
                continue;
            };
            let name = id.dns_label();
            // Pools never share a function; if they did, the first pool keeps it, as in the
            // device plugin.
            if out.contains_key(&name) {
                continue;
            }
            let device = Device {
                name: name.clone(),
                attributes: Some(attributes(host, dev, &pool.name)),
                ..Device::default()
            };
            out.insert(name, Published { id, device });
        }
    }
    out.into_values().collect()
}

fn string(s: &str) -> Option<DeviceAttribute> {
    // The API refuses longer values; such a value (a very long netdev alias, say) is dropped
    // rather than losing the whole slice.
    (!s.is_empty() && s.len() <= MAX_STRING_VALUE).then(|| DeviceAttribute {
        string: Some(s.to_string()),
        ..DeviceAttribute::default()
    })
}

fn int(i: i64) -> Option<DeviceAttribute> {
    Some(DeviceAttribute {
        int: Some(i),
        ..DeviceAttribute::default()
    })
}

fn boolean(b: bool) -> Option<DeviceAttribute> {
    Some(DeviceAttribute {
        bool: Some(b),
        ..DeviceAttribute::default()
    })
}

/// The root complex of a canonical sysfs device path: its `pci<dddd>:<bb>` component.
pub fn pcie_root(sysfs_dir: &std::path::Path) -> Option<String> {
    sysfs_dir.components().find_map(|c| {
        let s = c.as_os_str().to_str()?;
        let rest = s.strip_prefix("pci")?;
        let ok = rest.len() == 7
            && rest.as_bytes()[4] == b':'
            && rest
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 4 || b.is_ascii_hexdigit());
        ok.then(|| s.to_ascii_lowercase())
    })
}

fn attributes(
    host: &Host,
    dev: HostDevice<'_>,
    resource: &str,
) -> BTreeMap<String, DeviceAttribute> {
    let mut a: BTreeMap<String, Option<DeviceAttribute>> = BTreeMap::new();
    let mut put = |k: &str, v: Option<DeviceAttribute>| {
        a.insert(format!("{DRIVER}/{k}"), v);
    };
    let pci = dev.pci(host);
    match dev {
        HostDevice::Pci(f) => {
            put("pciAddress", string(&f.address));
            let pf = f.physfn.as_ref().map_or(f.address.as_str(), |p| &p.address);
            put("pfAddress", string(pf));
            if let Some(p) = &f.physfn {
                put("vfIndex", int(p.vf_index.into()));
            }
            put("linkType", pools::link_type(f).as_deref().and_then(string));
        }
        HostDevice::Aux(sf) => {
            put("pfAddress", string(&sf.parent));
            put("sfNumber", int(sf.sfnum.into()));
            put(
                "linkType",
                pools::aux_link_type(sf).as_deref().and_then(string),
            );
        }
    }
    if let Some(p) = pci {
        put("vendor", string(&p.vendor_hex()));
        put("deviceID", string(&p.device_hex()));
        put("model", p.model.and_then(string));
        // The PF's netdev, for an SF or a VF the PF is its parent.
        let pf_addr = p.physfn.as_ref().map_or(p.address.as_str(), |x| &x.address);
        let pf_name = host
            .function(pf_addr)
            .and_then(|pf| pf.netdevs.first())
            .and_then(|n| string(&n.name));
        put("pfName", pf_name);
    }
    put("driver", dev.driver().and_then(string));
    if let Some(n) = dev.numa_node() {
        put("numaNode", int(n.into()));
    }
    let rdma = dev.rdma();
    put("rdma", boolean(rdma.is_some_and(|r| r.uverbs.is_some())));
    put(
        "ibdev",
        rdma.and_then(|r| r.ibdev.as_deref()).and_then(string),
    );
    put(
        "netdev",
        dev.netdevs().first().and_then(|n| string(&n.name)),
    );
    put("resourceName", string(resource));
    let mut out: BTreeMap<String, DeviceAttribute> =
        a.into_iter().filter_map(|(k, v)| Some((k, v?))).collect();
    if let HostDevice::Pci(f) = dev {
        out.extend(string(&f.address).map(|v| (ATTR_PCI_BUS_ID.to_string(), v)));
    }
    if let Some(root) = pci.and_then(|p| pcie_root(&p.sysfs_dir)) {
        out.extend(string(&root).map(|v| (ATTR_PCIE_ROOT.to_string(), v)));
    }
    out
}

/// `<node>-nicplug.io-<n>`, or, when that would not be a DNS subdomain of at most 253
/// characters, the node name cut short plus a hash of the whole name (still one-to-one in
/// practice and stable across restarts).
pub fn slice_name(node: &str, n: usize) -> String {
    let suffix = format!("-{DRIVER}-{n}");
    let plain = format!("{node}{suffix}");
    if plain.len() <= MAX_NAME && is_dns_subdomain(&plain) {
        return plain;
    }
    let hash = format!("{:016x}", fnv1a(node.as_bytes()));
    let mut keep: String = node
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME - suffix.len() - hash.len() - 1)
        .collect();
    keep = keep
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .replace("..", ".");
    if keep.is_empty() {
        format!("{hash}{suffix}")
    } else {
        format!("{keep}-{hash}{suffix}")
    }
}

/// A stable 64-bit hash (std's is randomised per process; names must not change on restart).
fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// RFC 1123 subdomain: dot-separated labels of `[a-z0-9-]`, each starting and ending
/// alphanumeric.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The slices for `node` at pool `generation`: devices in chunks of
/// [`MAX_DEVICES_PER_SLICE`], every slice saying how many there are. A node without devices
/// still publishes one empty slice, so the scheduler knows the pool is empty rather than
/// unknown.
pub fn slices(node: &str, devices: &[Published], generation: i64) -> Vec<ResourceSlice> {
    let chunks: Vec<&[Published]> = if devices.is_empty() {
        vec![&[]]
    } else {
        devices.chunks(MAX_DEVICES_PER_SLICE).collect()
    };
    let count = chunks.len() as i64;
    chunks
        .into_iter()
        .enumerate()
        .map(|(n, chunk)| ResourceSlice {
            metadata: ObjectMeta {
                name: Some(slice_name(node, n)),
                ..ObjectMeta::default()
            },
            spec: ResourceSliceSpec {
                driver: DRIVER.to_string(),
                node_name: Some(node.to_string()),
                pool: ResourcePool {
                    name: node.to_string(),
                    generation,
                    resource_slice_count: count,
                },
                devices: Some(chunk.iter().map(|p| p.device.clone()).collect()),
                ..ResourceSliceSpec::default()
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_of_canonical_path() {
        let p = std::path::Path::new("/x/sys/devices/pci0000:80/0000:80:02.2/0000:82:00.2");
        assert_eq!(pcie_root(p).as_deref(), Some("pci0000:80"));
        assert_eq!(pcie_root(std::path::Path::new("/sys/bus/pci")), None);
    }

    #[test]
    fn names_are_subdomains() {
        assert_eq!(slice_name("node-a", 0), "node-a-nicplug.io-0");
        let long = "a".repeat(250);
        let n = slice_name(&long, 3);
        assert!(is_dns_subdomain(&n) && n.len() <= 253, "{n}");
        assert_ne!(n, slice_name(&format!("{}b", "a".repeat(249)), 3));
        assert!(is_dns_subdomain(&slice_name("Node_A", 1)));
    }

    #[test]
    fn chunks_of_128_with_count() {
        let devs: Vec<Published> = (0..300u32)
            .map(|i| Published {
                id: DeviceId::Sf(i),
                device: Device {
                    name: DeviceId::Sf(i).dns_label(),
                    ..Device::default()
                },
            })
            .collect();
        let s = slices("n", &devs, 7);
        assert_eq!(s.len(), 3);
        assert!(
            s.iter()
                .all(|s| s.spec.pool.resource_slice_count == 3 && s.spec.pool.generation == 7)
        );
        assert_eq!(s[2].spec.devices.as_ref().unwrap().len(), 300 - 256);
        assert_eq!(slices("n", &[], 1).len(), 1);
    }
}
