//! The pod-facing variables, byte for byte as the SR-IOV network device plugin writes them:
//! `PCIDEVICE_<PREFIX>_<NAME>` (the device IDs) and `PCIDEVICE_<PREFIX>_<NAME>_INFO` (one JSON
//! object per device, one record per device class). CNIs and applications parse these, so their
//! names, record names, keys and JSON encoding follow that plugin exactly.

use std::collections::BTreeMap;

/// One record of a device's `_INFO` entry: key -> value, e.g. `{"mount": "/dev/vfio/vfio"}`.
pub type Record = BTreeMap<String, String>;

/// A device's `_INFO` entry: record name (`generic`, `vfio`, `uio`, `rdma`, `vhost`, `vdpa`,
/// `extra`) -> record. Sorted, as Go's encoder sorts map keys.
pub type Entry = BTreeMap<String, Record>;

/// `<base>_<prefix>_<name>`, upper case, with `.` (and only `.`) as `_`: the SR-IOV plugin's
/// rule, so `my-corp.com/cx6-vf` gives `PCIDEVICE_MY-CORP_COM_CX6-VF`. nicplug's own variables
/// (`NICPLUG_EAL_ARGS_*`) use the same rule, so a pod finds both by the same name part.
pub fn env_name(base: &str, prefix: &str, resource_name: &str) -> String {
    format!("{base}_{prefix}_{resource_name}")
        .replace('.', "_")
        .to_ascii_uppercase()
}

fn record<const N: usize>(pairs: [(&str, &str); N]) -> Record {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Every device: `{"deviceID": <id>}`.
pub fn generic(id: &str) -> (&'static str, Record) {
    ("generic", record([("deviceID", id)]))
}

/// A `vfio-pci` function: the container always gets `/dev/vfio/vfio`; `group` is the group node
/// as the container sees it (`/dev/vfio/<N>`, also for a no-IOMMU group whose host node is
/// `/dev/vfio/noiommu-<N>`), absent when the function has no group.
pub fn vfio(group: Option<&str>) -> (&'static str, Record) {
    let mut r = record([("mount", "/dev/vfio/vfio")]);
    if let Some(g) = group {
        r.insert("dev-mount".into(), g.into());
    }
    ("vfio", r)
}

/// A UIO function (`igb_uio`, `uio_pci_generic`): `{"mount": "/dev/uio<N>"}`, empty when the
/// node is unknown.
pub fn uio(node: Option<&str>) -> (&'static str, Record) {
    let mut r = Record::new();
    if let Some(n) = node {
        r.insert("mount".into(), n.into());
    }
    ("uio", r)
}

/// A vDPA device: `{"mount": "/dev/vhost-vdpa-<N>"}` for `vdpaType: vhost`; empty for
/// `virtio` (the device is a netdev, there is no node to pass).
pub fn vdpa(vhost_node: Option<&str>) -> (&'static str, Record) {
    let mut r = Record::new();
    if let Some(n) = vhost_node {
        r.insert("mount".into(), n.into());
    }
    ("vdpa", r)
}

/// `needVhostNet`: the two nodes every device of the selector also gets.
pub fn vhost() -> (&'static str, Record) {
    (
        "vhost",
        record([
            ("net-mount", "/dev/vhost-net"),
            ("tun-mount", "/dev/net/tun"),
        ]),
    )
}

/// An RDMA function with `isRdma`: `rdma_dev` (the ibdev name) and the container path of each
/// char device handed out, keyed `uverbs`, `umad`, `issm`, `rdma_cm`.
pub fn rdma<'a>(
    ibdev: Option<&str>,
    nodes: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (&'static str, Record) {
    let mut r: Record = nodes
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(d) = ibdev {
        r.insert("rdma_dev".into(), d.into());
    }
    ("rdma", r)
}

/// `additionalInfo`: the `"*"` pairs overlaid by the device's own (the specific key wins).
/// `None` when the resource has no `additionalInfo` at all: the record is then absent, while
/// an `additionalInfo` that names only other devices still gives an empty `extra` record.
pub fn extra(
    additional_info: Option<&BTreeMap<String, Record>>,
    id: &str,
) -> Option<(&'static str, Record)> {
    let ai = additional_info?;
    let mut r = ai.get("*").cloned().unwrap_or_default();
    if let Some(own) = ai.get(id) {
        r.extend(own.clone());
    }
    Some(("extra", r))
}

/// Add a record to an entry.
pub fn put(entry: &mut Entry, (name, record): (&str, Record)) {
    entry.insert(name.to_string(), record);
}

/// The `_INFO` value: device ID -> entry, encoded as Go's `encoding/json` does (sorted keys, no
/// spaces, and `<`, `>`, `&`, U+2028, U+2029 escaped as `\u003c`, `\u003e`, `\u0026`,
/// `\u2028`, `\u2029`): an `additionalInfo` value containing them reads the same either way.
pub fn encode(info: &BTreeMap<String, Entry>) -> String {
    go_json(&serde_json::to_string(info).expect("string maps serialise"))
}

/// Apply Go's HTML-safe escaping to serde_json output. Those characters can only occur inside
/// strings (JSON syntax uses none of them), so a plain replacement is exact.
pub fn go_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_replace_dots_only() {
        assert_eq!(
            env_name("PCIDEVICE", "my-corp.com", "cx6-vf"),
            "PCIDEVICE_MY-CORP_COM_CX6-VF"
        );
        assert_eq!(
            env_name("NICPLUG_EAL_ARGS", "nvidia.com", "cx6dx_vf"),
            "NICPLUG_EAL_ARGS_NVIDIA_COM_CX6DX_VF"
        );
    }

    #[test]
    fn go_escaping() {
        assert_eq!(
            go_json(r#"{"a":"<b>&c"}"#),
            r#"{"a":"\u003cb\u003e\u0026c"}"#
        );
        assert_eq!(go_json("\u{2028}\u{2029}"), "\\u2028\\u2029");
    }
}
