//! Resource identity: a resource's full name `<prefix>/<name>` and every name derived from it
//! (plugin socket, CDI spec file and kind, environment variables, device-info files) map one
//! to one. [`check`] refuses a config in which two resources would share any derived name, or
//! a name kubelet would refuse; `config check` and `serve` (at start and on every reload) run it.
//!
//! **Files nicplug names** (socket, CDI spec) use the stem `<prefix>_<name>`: a prefix is a DNS
//! subdomain and never holds `_`, so the first `_` splits the stem back into its two halves and
//! no two full names share a stem. A file name that would not fit (a socket's whole path must
//! fit `sun_path`, 108 bytes with its NUL, and kubelet dials the socket by that path; any file
//! name must fit `NAME_MAX`) keeps a readable head of the stem and ends in `~` and 16 hex digits
//! of the full name's FNV-1a hash. `~` never occurs in a stem, so a shortened name never equals
//! a readable one; two shortened names could only meet by a hash collision, which [`check`]
//! refuses like any other shared name. A hash suffix keeps names short for every kubelet
//! directory; an injective encoding of 317 possible bytes could not fit 75.
//!
//! **Names fixed by others** (`PCIDEVICE_*` variables, CNI device-info files) are computed by the
//! very functions that write them ([`crate::edits::env_names`], [`crate::cdi::device_env`],
//! [`crate::render::device_info_file`]) and compared across resources.

use std::collections::BTreeMap;
use std::path::Path;

use crate::config::{Config, ConfigError, Problem};
use crate::host::{Host, RdmaNetnsMode};
use crate::pools::{self, Pool};

/// Longest socket path `connect` accepts: `sun_path` is 108 bytes including the final NUL.
pub const SUN_PATH_MAX: usize = 107;

/// Longest file name Linux filesystems accept.
const NAME_MAX: usize = 255;

/// Kubelet's device-plugins directory on a default install; `config check` measures socket
/// paths against it.
pub const DEFAULT_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";

/// `<prefix>/<name>` -> `<prefix>_<name>`.
fn stem(resource: &str) -> String {
    resource.replacen('/', "_", 1)
}

/// FNV-1a, 64 bits: stable across releases and platforms (unlike std's `DefaultHasher`).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `<before><stem><after>` if at most `max` bytes, else the stem cut to fit with `~<hash>`;
/// `None` when not even that fits.
fn fit(resource: &str, before: &str, after: &str, max: usize) -> Option<String> {
    let stem = stem(resource);
    let full = format!("{before}{stem}{after}");
    if full.len() <= max {
        return Some(full);
    }
    let tag = format!("~{:016x}", fnv1a(resource));
    let room = max.checked_sub(before.len() + tag.len() + after.len())?;
    if room == 0 {
        return None;
    }
    let mut cut = room.min(stem.len());
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    Some(format!("{before}{}{tag}{after}", &stem[..cut]))
}

/// Socket file name of a resource in `plugin_dir`, short enough that the socket's whole path
/// fits `sun_path`; `None` when the directory's own path leaves no room for any name.
pub fn socket_name(plugin_dir: &Path, resource: &str) -> Option<String> {
    let dir = plugin_dir.as_os_str().len() + 1;
    let max = SUN_PATH_MAX.checked_sub(dir)?.min(NAME_MAX);
    fit(resource, "nicplug-", ".sock", max)
}

/// CDI spec file name of a resource (`nicplug-nvidia.com_cx6dx_vf.json`).
pub fn cdi_file_name(resource: &str) -> String {
    fit(resource, "nicplug-", ".json", NAME_MAX).expect("NAME_MAX leaves room for a hash")
}

/// One name derived from a resource, and what it is, for messages.
struct Derived {
    what: &'static str,
    name: String,
}

/// Every name `pool`'s resource gives rise to, or the problems that keep it from having them.
fn derived(pool: &Pool, plugin_dir: &Path) -> (Vec<Derived>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    out.push(Derived {
        what: "resource name",
        name: pool.name.clone(),
    });
    match socket_name(plugin_dir, &pool.name) {
        Some(name) => out.push(Derived {
            what: "plugin socket",
            name,
        }),
        None => refused.push((
            format!(
                "{} is too long a path for any plugin socket",
                plugin_dir.display()
            ),
            "use a shorter kubelet directory".to_owned(),
        )),
    }
    out.push(Derived {
        what: "CDI spec file",
        name: cdi_file_name(&pool.name),
    });
    for name in crate::edits::env_names(pool) {
        out.push(Derived {
            what: "environment variable",
            name,
        });
    }
    // A shared pool has no per-device variables and writes no device-info files.
    if pool.shared.is_some() {
        let mut once = std::collections::BTreeSet::new();
        out.retain(|d| once.insert(d.name.clone()));
        return (out, refused);
    }
    // Per-device variables: the family of names, i.e. the name for an ID without the ID.
    for id in REPRESENTATIVE_IDS {
        let suffix = crate::cdi::env_id(id);
        for var in crate::cdi::device_env(pool, &no_host(), id) {
            let name = var.split_once('=').map_or(var.as_str(), |(k, _)| k);
            if let Some(family) = name.strip_suffix(&suffix) {
                out.push(Derived {
                    what: "per-device environment variables",
                    name: format!("{family}<ID>"),
                });
            }
        }
    }
    let info = crate::render::device_info_file(pool, REPRESENTATIVE_IDS[0]);
    if info.len() > NAME_MAX {
        refused.push((
            format!(
                "its device-info file names ({info:?}) are longer than {NAME_MAX} bytes, which no \
                 filesystem accepts"
            ),
            "shorten resourcePrefix or resourceName".to_owned(),
        ));
    }
    out.push(Derived {
        what: "device-info file",
        name: info.replace(REPRESENTATIVE_IDS[0], "<ID>"),
    });
    let mut once = std::collections::BTreeSet::new();
    out.retain(|d| once.insert(d.name.clone()));
    (out, refused)
}

/// One device ID of each shape a pool can hold: a PCI function and a scalable function.
const REPRESENTATIVE_IDS: [&str; 2] = ["0000:00:00.0", "mlx5_core.sf.0"];

/// Whether `text` is what [`crate::cdi::env_id`] makes of some device ID.
fn is_env_id(text: &str) -> bool {
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    };
    let parts: Vec<&str> = text.split('_').collect();
    match parts.as_slice() {
        ["MLX5", "CORE", "SF", n] => !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        [domain, bus, dev, func] => {
            hex(domain, 4)
                && hex(bus, 2)
                && hex(dev, 2)
                && matches!(*func, "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7")
        }
        _ => false,
    }
}

/// Why kubelet would refuse `resource` as an extended resource name
/// (`IsExtendedResourceName`), and what to do instead.
fn kubelet_refuses(prefix: &str) -> Option<(String, String)> {
    if prefix == "kubernetes.io" || prefix.ends_with("kubernetes.io") {
        // Kubelet treats any name containing "kubernetes.io/" as a native resource.
        return Some((
            format!("prefix {prefix:?} is in the kubernetes.io domain, which kubelet reserves"),
            "use a domain of your own, e.g. \"nvidia.com\"".to_owned(),
        ));
    }
    if prefix.starts_with("requests.") {
        return Some((
            format!(
                "prefix {prefix:?} starts with \"requests.\", which kubelet reserves for quotas"
            ),
            "drop the \"requests.\"".to_owned(),
        ));
    }
    // Kubelet checks `requests.<prefix>/<name>` is a qualified name: the prefix part, a DNS
    // subdomain, must stay within 253 bytes.
    if "requests.".len() + prefix.len() > 253 {
        return Some((
            format!(
                "prefix is {} bytes; kubelet accepts at most 244",
                prefix.len()
            ),
            "use a shorter resourcePrefix".to_owned(),
        ));
    }
    None
}

/// A host without functions: pools with their names and no devices.
fn no_host() -> Host {
    Host {
        functions: Vec::new(),
        aux_functions: Vec::new(),
        rdma_netns_mode: RdmaNetnsMode::Unknown,
        rdma_cm: None,
        skipped: Vec::new(),
    }
}

/// Refuse a config whose resources would share a derived name, or that kubelet would refuse.
/// `plugin_dir` is kubelet's device-plugins directory (socket names depend on its length).
pub fn check(config: &Config, default_prefix: &str, plugin_dir: &Path) -> Result<(), ConfigError> {
    let pools = pools::build(&no_host(), config, default_prefix).pools;
    let mut problems = Vec::new();
    // Exclusive pools come first, then the shared ones (`configList`), in file order.
    let exclusive = config.resources.len();
    let at = |i: usize| match i.checked_sub(exclusive) {
        None => format!("resourceList[{i}]"),
        Some(k) => format!("configList[{k}]"),
    };
    let mut seen: BTreeMap<String, (usize, &'static str)> = BTreeMap::new();
    let mut families: Vec<(usize, String)> = Vec::new();
    let mut fixed: Vec<(usize, String, &'static str)> = Vec::new();
    // One problem per pair of resources, listing every name they share.
    let mut shared: BTreeMap<(usize, usize), Vec<(&'static str, String)>> = BTreeMap::new();
    for (i, pool) in pools.iter().enumerate() {
        // A shared pool always has its own prefix (`rdma` by default), never the command line's.
        let explicit = config
            .resources
            .get(i)
            .is_none_or(|r| r.resource_prefix.is_some());
        let field = if explicit {
            "resourcePrefix"
        } else {
            "resourceName"
        };
        if let Some((rule, fix)) = kubelet_refuses(&pool.prefix) {
            let rule = if explicit {
                rule
            } else {
                format!("(default prefix of {:?}) {rule}", pool.name)
            };
            problems.push(Problem {
                path: format!("{}.{field}", at(i)),
                rule,
                fix,
            });
        }
        let (names, refused) = derived(pool, plugin_dir);
        for (rule, fix) in refused {
            problems.push(Problem {
                path: format!("{}.resourceName", at(i)),
                rule: format!("{:?}: {rule}", pool.name),
                fix,
            });
        }
        for d in names {
            if let Some(family) = d.name.strip_suffix("<ID>")
                && d.what.starts_with("per-device")
            {
                families.push((i, family.to_owned()));
            } else if d.what == "environment variable" {
                fixed.push((i, d.name.clone(), d.what));
            }
            match seen.get(&d.name) {
                Some(&(j, _)) if j != i => {
                    shared.entry((j, i)).or_default().push((d.what, d.name));
                }
                Some(_) => {}
                None => {
                    seen.insert(d.name, (i, d.what));
                }
            }
        }
    }
    for ((j, i), names) in shared {
        let rule = if names[0].0 == "resource name" {
            // Then every other name is shared too.
            format!(
                "{:?} is already the resource name of {}",
                pools[i].name,
                at(j)
            )
        } else {
            let list: Vec<String> = names
                .iter()
                .map(|(what, name)| format!("the {what} {name:?}"))
                .collect();
            format!(
                "{:?} and {:?} ({}) would share {}",
                pools[i].name,
                pools[j].name,
                at(j),
                list.join(", ")
            )
        };
        problems.push(Problem {
            path: format!("{}.resourceName", at(i)),
            rule,
            fix: clash_fix(names[0].0),
        });
    }
    // A variable of one resource that another's per-device variable could also be.
    for (i, name, _) in &fixed {
        for (j, family) in &families {
            if i != j
                && let Some(id) = name.strip_prefix(family.as_str())
                && is_env_id(id)
            {
                problems.push(Problem {
                    path: format!("{}.resourceName", at(*i)),
                    rule: format!(
                        "{:?}'s environment variable {name:?} is also {:?}'s per-device variable \
                         for device {id} ({})",
                        pools[*i].name,
                        pools[*j].name,
                        at(*j)
                    ),
                    fix: clash_fix("environment variable"),
                });
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid { problems })
    }
}

fn clash_fix(what: &str) -> String {
    match what {
        "environment variable" | "per-device environment variables" => {
            "rename one resource: variable names are upper case with '.' and the '/' as '_' \
             (the SR-IOV plugin's scheme), so names differing only in '.' against '_' or in \
             case clash"
                .to_owned()
        }
        "resource name" => {
            "give one a different resourceName, or a different resourcePrefix (a resource \
             without one gets the command line's --resource-prefix)"
                .to_owned()
        }
        "device-info file" => {
            "rename one resource: device-info files are named <prefix>-<name>-<ID>, so '-' \
             moved between prefix and name clashes"
                .to_owned()
        }
        _ => "rename one of the two resources".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names_fit_sun_path_and_stay_distinct() {
        let dir = Path::new(DEFAULT_PLUGIN_DIR);
        assert_eq!(
            socket_name(dir, "nvidia.com/cx6dx_vf").unwrap(),
            "nicplug-nvidia.com_cx6dx_vf.sock"
        );
        let long_prefix = format!("{}.com", "a".repeat(240));
        let a = socket_name(dir, &format!("{long_prefix}/x")).unwrap();
        let b = socket_name(dir, &format!("{long_prefix}/y")).unwrap();
        assert_ne!(a, b);
        for name in [&a, &b] {
            assert_eq!(dir.as_os_str().len() + 1 + name.len(), SUN_PATH_MAX);
            assert!(name.contains('~'), "{name}");
        }
        assert!(socket_name(Path::new(&"/d".repeat(50)), "a/b").is_none());
    }

    #[test]
    fn env_ids_of_every_id_shape_are_recognised() {
        for id in REPRESENTATIVE_IDS
            .iter()
            .chain(&["0000:3b:1f.7", "mlx5_core.sf.123"])
        {
            assert!(is_env_id(&crate::cdi::env_id(id)), "{id}");
        }
        for other in ["VF", "INFO", "0000_3B_00", "MLX5_CORE_SF_", "0000_3G_00_2"] {
            assert!(!is_env_id(other), "{other}");
        }
    }
}
