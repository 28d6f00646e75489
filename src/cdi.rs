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
use crate::resolved::{EditOptions, EnvBase, ResolvedDevice};
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

/// Spec file name of a pool (`nicplug-nvidia.com_cx6dx_vf.json`), one per full name (see
/// [`crate::identity`]).
pub fn file_name(resource: &str) -> String {
    crate::identity::cdi_file_name(resource)
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
    device_env_with(&pool.env_base(), pool.options_of(id), host, id)
}

/// [`device_env`] for a device resolved by any front end.
pub fn device_env_for(base: &EnvBase, device: &ResolvedDevice, host: &Host) -> Vec<String> {
    device_env_with(base, &device.options, host, &device.id.kubelet())
}

fn device_env_with(base: &EnvBase, options: &EditOptions, host: &Host, id: &str) -> Vec<String> {
    let suffix = env_id(id);
    // Named like PCIDEVICE_* (upper case, `.` as `_`), so a pod finds all three alike.
    let mut env = vec![format!("{}_{suffix}={id}", base.device())];
    if options.eal_args {
        let args = edits::eal_list(host, &[(id, options.eal_auxiliary)]);
        env.push(format!("{}_{suffix}={args}", base.eal_args()));
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
    if pool.shared.is_some() {
        return shared_spec(pool, host, paths, version, kind);
    }
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

/// The one CDI device of a shared pool: every ID stands for the same HCAs, so the spec holds
/// their edits once rather than `rdmaHcaMax` times. No exclusive pool has a device of this
/// name (their IDs are PCI addresses and SF names).
pub const SHARED_DEVICE: &str = "hcas";

fn shared_spec(
    pool: &Pool,
    host: &Host,
    paths: &HostPaths,
    version: String,
    kind: String,
) -> Result<(Spec, Vec<Skipped>), CdiError> {
    let no_devices = || CdiError::NoDevices {
        pool: pool.name.clone(),
    };
    let first = pool.devices.first().ok_or_else(no_devices)?;
    let e = edits::container_edits(pool, host, paths, std::slice::from_ref(&first.id))
        .map_err(|_| no_devices())?;
    let mut container_edits = container_edits(&e);
    container_edits.env = e.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    Ok((
        Spec {
            cdi_version: version,
            kind,
            devices: vec![Device {
                name: SHARED_DEVICE.to_string(),
                container_edits,
            }],
        },
        Vec::new(),
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
        let shared = self.devices.len() == 1 && self.devices.contains(SHARED_DEVICE);
        if !shared && !ids.iter().all(|id| self.devices.contains(id)) {
            return None;
        }
        let mut r = render::allocate_response(edits);
        r.devices.clear();
        r.mounts.clear();
        if shared {
            r.cdi_devices = vec![api::CdiDevice {
                name: qualified_name(&self.kind, SHARED_DEVICE),
            }];
            return Some(r);
        }
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
/// same directory, then a rename), rewritten only when its contents change or someone else
/// changed or removed it, and removed when asked. Only files named `nicplug-*.json` are ever
/// touched.
#[derive(Debug)]
pub struct SpecDir {
    dir: PathBuf,
    written: BTreeMap<String, Written>,
}

/// A file as written: its contents, and its identity on disk right after.
#[derive(Debug)]
struct Written {
    body: Vec<u8>,
    stamp: Option<Stamp>,
}

/// Device, inode, change time and size of a regular file. Any write, replacement or removal by
/// someone else changes it: the change time cannot be set back from user space.
type Stamp = (u64, u64, i64, i64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type()
        .is_file()
        .then(|| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec(), m.size()))
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

    /// Write `name` unless it already holds exactly `body`, as this writer left it; true when
    /// written.
    pub fn write(&mut self, name: &str, body: &[u8]) -> std::io::Result<bool> {
        check_name(name)?;
        let path = self.dir.join(name);
        if let Some(w) = self.written.get(name)
            && w.body == body
            && w.stamp.is_some()
            && w.stamp == stamp(&path)
        {
            return Ok(false);
        }
        crate::files::write_atomically(&self.dir, name, body)?;
        let stamp = stamp(&path);
        self.written.insert(
            name.to_string(),
            Written {
                body: body.to_vec(),
                stamp,
            },
        );
        Ok(true)
    }

    /// Write again every file someone else changed, replaced or removed since this writer
    /// wrote it; returns their names. Cheap when nothing changed: one `lstat` per file.
    pub fn repair(&mut self) -> std::io::Result<Vec<String>> {
        let changed: Vec<String> = self
            .written
            .iter()
            .filter(|(name, w)| w.stamp.is_none() || w.stamp != stamp(&self.dir.join(name)))
            .map(|(name, _)| name.clone())
            .collect();
        for name in &changed {
            // Without a stamp `write` cannot skip it, and a failed write is retried next time.
            let w = self.written.get_mut(name).expect("listed");
            w.stamp = None;
            let body = w.body.clone();
            self.write(name, &body)?;
        }
        Ok(changed)
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
            // Temp files: today's, and the `.nicplug-<name>.<pid>.tmp` of earlier versions.
            let ours = (name.starts_with("nicplug-") && name.ends_with(".json"))
                || crate::files::is_temp_name(name)
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
