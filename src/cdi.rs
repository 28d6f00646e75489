//! CDI (Container Device Interface) specs: another rendering of [`ContainerEdits`].
//!
//! One spec per pool, kind `<prefix>/<name>` (`nvidia.com/cx6dx_vf`), one CDI device per
//! function. A CDI device carries everything the edits give that one function: its device nodes
//! (with the major/minor numbers read from sysfs when nicplug knows them, so the runtime need
//! not stat the host path) and its read-only counters mounts (never dropped).
//!
//! **Environment.** `PCIDEVICE_*`, `PCIDEVICE_*_INFO` and `NICPLUG_EAL_ARGS_*` list every ID a
//! container got, so no single CDI device can carry them: two devices of one kind would each
//! set the same variable, and the last would win. They stay in kubelet's `envs` (the Allocate
//! response in CDI mode carries the same `envs` as without it). A CDI device carries only
//! variables named after the device itself, which compose for any set of devices:
//! `NICPLUG_DEVICE_<PREFIX>_<NAME>_<ID>=<id>` and, with `ealArgs`,
//! `NICPLUG_EAL_ARGS_<PREFIX>_<NAME>_<ID>=-a <id> --iova-mode=va` (`<ID>` is the device ID upper
//! case, every character but letters and digits as `_`: `0000_3B_00_2`, `MLX5_CORE_SF_4`).
//!
//! **Names.** CDI device names may hold `[A-Za-z0-9_.:-]`, start and end with a letter or digit
//! (a leading digit since spec 0.5.0): PCI addresses (`0000:3b:00.2`) and SF names
//! (`mlx5_core.sf.4`) are valid as they are, so the device name is the device ID, unchanged,
//! and `nvidia.com/cx6dx_vf=0000:3b:00.2` names a function exactly as kubelet does. The kind's
//! vendor and class start with a letter, end with a letter or digit and hold `[A-Za-z0-9_.-]`;
//! dots in the class need spec 0.6.0. A pool whose name breaks these rules gets no spec.

use crate::api;
use crate::edits::{self, ContainerEdits, EditError};
use crate::host::Host;
use crate::paths::HostPaths;
use crate::pools::Pool;
use crate::render;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The default `cdiVersion`: podman 4.3 (Debian 12) accepts 0.5.0 and silently ignores specs
/// of 0.6.0; containerd 1.7 reads both.
pub const DEFAULT_VERSION: &str = "0.5.0";

/// Options of every generated spec file: read-only, no device nodes, setuid or execution through
/// it; `rbind` + `rprivate` as containerd sets for kubelet's read-only mounts.
pub const MOUNT_OPTIONS: [&str; 6] = ["ro", "nosuid", "nodev", "noexec", "rbind", "rprivate"];

/// A CDI spec document (the subset nicplug writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    pub devices: Vec<Device>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    pub container_edits: Edits,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
}

/// A device node. Without known numbers, `type`, `major` and `minor` are left out and the
/// runtime reads them from `hostPath`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    pub host_path: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub node_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<u32>,
    pub permissions: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    pub options: Vec<String>,
    #[serde(rename = "type")]
    pub mount_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdiError {
    #[error("CDI version {0:?}: expected MAJOR.MINOR.PATCH, e.g. {DEFAULT_VERSION}")]
    BadVersion(String),
    #[error(
        "CDI version {0}: nicplug needs 0.5.0 or later (device names starting with a digit, \
         hostPath on device nodes)"
    )]
    OldVersion(String),
    #[error("{pool}: {kind:?} is not a valid CDI kind (vendor/class): {why}")]
    BadKind {
        pool: String,
        kind: String,
        why: String,
    },
    #[error("{pool}: no devices, so no CDI spec (CDI requires at least one device)")]
    NoDevices { pool: String },
}

/// A function of a pool that could not be described (it is left out of the spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub id: String,
    pub why: String,
}

/// Check a `cdiVersion`: `MAJOR.MINOR.PATCH`, at least 0.5.0. Returns it unchanged.
pub fn check_version(version: &str) -> Result<String, CdiError> {
    let parsed = parse_version(version).ok_or_else(|| CdiError::BadVersion(version.into()))?;
    if parsed < (0, 5, 0) {
        return Err(CdiError::OldVersion(version.into()));
    }
    Ok(version.to_string())
}

fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.split('.').map(|p| {
        (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u64>().ok())
            .flatten()
    });
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Some((a, b, c)),
        _ => None,
    }
}

/// The CDI kind of a pool, `<prefix>/<name>`, checked against the rules of `version`.
pub fn kind(pool: &Pool, version: &str) -> Result<String, CdiError> {
    let kind = format!("{}/{}", pool.prefix, pool.resource_name);
    let bad = |why: String| CdiError::BadKind {
        pool: pool.name.clone(),
        kind: kind.clone(),
        why,
    };
    if let Some(why) = bad_vendor_or_class(&pool.prefix) {
        return Err(bad(format!("vendor {:?} {why}", pool.prefix)));
    }
    if let Some(why) = bad_vendor_or_class(&pool.resource_name) {
        return Err(bad(format!("class {:?} {why}", pool.resource_name)));
    }
    let dots_ok = parse_version(version).is_some_and(|v| v >= (0, 6, 0));
    if pool.resource_name.contains('.') && !dots_ok {
        return Err(bad(format!(
            "class {:?} has a dot, which CDI allows from version 0.6.0 (this is {version})",
            pool.resource_name
        )));
    }
    Ok(kind)
}

fn bad_vendor_or_class(name: &str) -> Option<&'static str> {
    let b = name.as_bytes();
    if b.is_empty() {
        Some("is empty")
    } else if !b[0].is_ascii_alphabetic() {
        Some("must start with a letter")
    } else if !b[b.len() - 1].is_ascii_alphanumeric() {
        Some("must end with a letter or digit")
    } else if !b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
    {
        Some("may hold only letters, digits, '_', '-' and '.'")
    } else {
        None
    }
}

/// The CDI device name of a device ID: the ID itself when valid (PCI addresses and SF names
/// are), else why not.
pub fn device_name(id: &str) -> Result<&str, String> {
    let b = id.as_bytes();
    let ok_end = |c: &u8| c.is_ascii_alphanumeric();
    if b.is_empty() {
        return Err("empty device name".into());
    }
    if !ok_end(&b[0]) || !ok_end(&b[b.len() - 1]) {
        return Err(format!(
            "{id:?}: a CDI device name starts and ends with a letter or digit"
        ));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        return Err(format!("{id:?}: {c:?} is not allowed in a CDI device name"));
    }
    Ok(id)
}

/// `<kind>=<device>`, what a runtime is asked for (`podman run --device`, `cdi_devices`).
pub fn qualified_name(kind: &str, id: &str) -> String {
    format!("{kind}={id}")
}

/// Spec file name of a pool (`nicplug-nvidia.com-cx6dx_vf.json`), the plugin socket's scheme.
pub fn file_name(resource: &str) -> String {
    format!("nicplug-{}.json", resource.replace('/', "-"))
}

/// `<ID>` of the per-device variables: upper case, everything but letters and digits as `_`.
pub fn env_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The variables one CDI device carries (see the module docs for why only these).
pub fn device_env(pool: &Pool, host: &Host, id: &str) -> Vec<String> {
    let suffix = env_id(id);
    // Named like PCIDEVICE_* (upper case, `.` as `_`), so a pod finds all three alike.
    let base = crate::info::env_name("NICPLUG_DEVICE", &pool.prefix, &pool.resource_name);
    let mut env = vec![format!("{base}_{suffix}={id}")];
    if pool.config.nicplug.eal_args {
        let args = edits::eal_args(pool, host, std::slice::from_ref(&id.to_string()));
        env.push(format!("{}_{suffix}={args}", edits::eal_env_name(pool)));
    }
    env
}

/// Device nodes and mounts of edits, as CDI container edits (without env).
pub fn container_edits(e: &ContainerEdits) -> Edits {
    Edits {
        env: Vec::new(),
        device_nodes: e
            .devices
            .iter()
            .map(|d| {
                let known = d.major.is_some() && d.minor.is_some();
                DeviceNode {
                    path: d.container_path.clone(),
                    host_path: d.host_path.display().to_string(),
                    node_type: known.then(|| "c".to_string()),
                    major: d.major.filter(|_| known),
                    minor: d.minor.filter(|_| known),
                    permissions: d.permissions.clone(),
                }
            })
            .collect(),
        mounts: e
            .mounts
            .iter()
            .map(|m| Mount {
                host_path: m.host_path.display().to_string(),
                container_path: m.container_path.clone(),
                options: MOUNT_OPTIONS
                    .iter()
                    .filter(|o| m.read_only || **o != "ro")
                    .map(|o| o.to_string())
                    .collect(),
                mount_type: "bind".into(),
            })
            .collect(),
    }
}

/// The spec of a pool: one device per function, sorted by name. Functions whose edits cannot
/// be computed (or whose ID is no valid device name) are left out and returned beside it.
pub fn spec(
    pool: &Pool,
    host: &Host,
    paths: &HostPaths,
    version: &str,
) -> Result<(Spec, Vec<Skipped>), CdiError> {
    let version = check_version(version)?;
    let kind = kind(pool, &version)?;
    let mut devices = Vec::new();
    let mut skipped = Vec::new();
    for d in &pool.devices {
        let described = device_name(&d.id).and_then(|name| {
            edits::container_edits(pool, host, paths, std::slice::from_ref(&d.id))
                .map(|e| (name.to_string(), e))
                .map_err(|e: EditError| e.to_string())
        });
        match described {
            Ok((name, e)) => {
                let mut container_edits = container_edits(&e);
                container_edits.env = device_env(pool, host, &d.id);
                devices.push(Device {
                    name,
                    container_edits,
                });
            }
            Err(why) => skipped.push(Skipped {
                id: d.id.clone(),
                why,
            }),
        }
    }
    if devices.is_empty() {
        return Err(CdiError::NoDevices {
            pool: pool.name.clone(),
        });
    }
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((
        Spec {
            cdi_version: version,
            kind,
            devices,
        },
        skipped,
    ))
}

/// The file contents of a spec: pretty JSON and a final newline.
pub fn to_json(spec: &Spec) -> String {
    let mut s = serde_json::to_string_pretty(spec).expect("plain data serialises");
    s.push('\n');
    s
}

/// What a written spec offers: Allocate names only devices in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub kind: String,
    pub devices: BTreeSet<String>,
}

impl Published {
    pub fn of(spec: &Spec) -> Self {
        Published {
            kind: spec.kind.clone(),
            devices: spec.devices.iter().map(|d| d.name.clone()).collect(),
        }
    }

    /// The Allocate answer in CDI mode: the same `envs` and annotations as without CDI, the
    /// devices as `cdi_devices`, and no `devices` or `mounts` (the spec carries them). `None`
    /// when an ID is not in the written spec: the caller answers without CDI then.
    pub fn response(
        &self,
        edits: &ContainerEdits,
        ids: &[String],
    ) -> Option<api::ContainerAllocateResponse> {
        if !ids.iter().all(|id| self.devices.contains(id)) {
            return None;
        }
        let mut r = render::allocate_response(edits);
        r.devices.clear();
        r.mounts.clear();
        r.cdi_devices = ids
            .iter()
            .map(|id| api::CdiDevice {
                name: qualified_name(&self.kind, id),
            })
            .collect();
        Some(r)
    }
}

/// A CDI spec directory nicplug writes into: every file is written whole (temp file in the
/// same directory, then a rename), rewritten only when its contents change, and removed when
/// asked. Only files named `nicplug-*.json` are ever touched.
#[derive(Debug)]
pub struct SpecDir {
    dir: PathBuf,
    written: BTreeMap<String, Vec<u8>>,
}

impl SpecDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpecDir {
            dir: dir.into(),
            written: BTreeMap::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of the files this writer has written and not removed.
    pub fn written(&self) -> impl Iterator<Item = &str> {
        self.written.keys().map(String::as_str)
    }

    /// Write `name` unless it already holds exactly `body`; true when written.
    pub fn write(&mut self, name: &str, body: &[u8]) -> std::io::Result<bool> {
        check_name(name)?;
        if self.written.get(name).is_some_and(|b| b == body) && self.dir.join(name).exists() {
            return Ok(false);
        }
        crate::files::write_atomically(&self.dir, name, body)?;
        self.written.insert(name.to_string(), body.to_vec());
        Ok(true)
    }

    /// Remove a file; true when it existed.
    pub fn remove(&mut self, name: &str) -> std::io::Result<bool> {
        check_name(name)?;
        self.written.remove(name);
        match std::fs::remove_file(self.dir.join(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Remove every written file not in `keep`; returns the names removed.
    pub fn retain(&mut self, keep: &BTreeSet<String>) -> std::io::Result<Vec<String>> {
        let gone: Vec<String> = self
            .written
            .keys()
            .filter(|n| !keep.contains(*n))
            .cloned()
            .collect();
        for name in &gone {
            self.remove(name)?;
        }
        Ok(gone)
    }

    /// Remove `nicplug-*.json` files (and leftover temp files) this writer did not write: a
    /// previous run's, after it was killed. Returns the names removed.
    pub fn remove_stale(&mut self) -> std::io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = (name.starts_with("nicplug-") && name.ends_with(".json"))
                || (name.starts_with(".nicplug-") && name.ends_with(".tmp"));
            if ours && !self.written.contains_key(name) {
                match std::fs::remove_file(self.dir.join(name)) {
                    Ok(()) => removed.push(name.to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// Remove every file written; returns the names removed.
    pub fn remove_all(&mut self) -> std::io::Result<Vec<String>> {
        self.retain(&BTreeSet::new())
    }
}

fn check_name(name: &str) -> std::io::Result<()> {
    if name.starts_with("nicplug-") && name.ends_with(".json") && !name.contains('/') {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{name:?}: not a nicplug spec file name (nicplug-*.json)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(check_version("0.5.0").unwrap(), "0.5.0");
        assert_eq!(check_version("0.6.0").unwrap(), "0.6.0");
        assert_eq!(check_version("1.0.0").unwrap(), "1.0.0");
        for bad in ["", "0.5", "0.5.0.1", "v0.5.0", "0.5.x", "0..5", "+1.0.0"] {
            assert!(
                matches!(check_version(bad), Err(CdiError::BadVersion(_))),
                "{bad}"
            );
        }
        for old in ["0.3.0", "0.4.9"] {
            assert!(
                matches!(check_version(old), Err(CdiError::OldVersion(_))),
                "{old}"
            );
        }
    }
}
