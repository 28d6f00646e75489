//! Prepare and unprepare claims: a claim's allocation in, one CDI spec out, holding exactly the
//! container edits the device plugin gives for those devices (the same
//! [`edits::container_edits`] over the same pools), plus the CNI device-info files.
//!
//! **The spec.** `/var/run/cdi/nicplug.io-claim_<uid>.json`, kind `nicplug.io/claim`, one CDI
//! device per allocated device, named `<claim uid>-<device DNS label>` (unique across claims, as
//! CDI needs within a kind). One device each because kubelet's answer is per device (pool,
//! device, CDI IDs): a container that asks for one request of the claim gets that request's
//! devices. Device nodes and mounts sit on the device that needs them (a node two devices share,
//! like `rdma_cm`, on the first); the pool-wide variables (`PCIDEVICE_*`, `PCIDEVICE_*_INFO`,
//! `NICPLUG_EAL_ARGS_*`) list every device of the claim, so they sit in the spec's top-level
//! `containerEdits`, which the runtime applies once whenever any device of the spec is used.
//! A claim is one container set's devices, so these variables say what kubelet's Allocate
//! would set for the same devices in one container.
//!
//! **Options.** A device gets its pool's `nicplug` options, overlaid with the claim's opaque
//! `DpdkConfig`s (see [`super::params`]). Two requests taking devices of one pool with
//! different options are refused: the pool's variables would have two values.
//!
//! Where claims come from is not this module's business ([`ClaimSource`]); the host and pools
//! are passed in by the caller.

use super::checkpoint::{Checkpoint, CheckpointError, PreparedClaim, PreparedDevice};
use super::model::{ClaimAllocation, ClaimRef, DRIVER};
use super::params::{self, ParamError};
use crate::cdi;
use crate::config::NicplugOptions;
use crate::device_id::DeviceId;
use crate::edits::{self, ContainerEdits, EditError};
use crate::health::Verdict;
use crate::host::Host;
use crate::paths::HostPaths;
use crate::pools::{Pool, Pools};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The CDI kind of every claim spec.
pub const CDI_KIND: &str = "nicplug.io/claim";

/// Where claims' allocations come from: the API server in a cluster, a directory in tests.
#[tonic::async_trait]
pub trait ClaimSource: Send + Sync {
    /// This driver's part of the claim's allocation on this node.
    async fn allocation(&self, claim: &ClaimRef) -> Result<ClaimAllocation, String>;
}

/// Allocations from `<dir>/<claim uid>.json` (a [`ClaimAllocation`] as JSON): for tests and
/// for trying the driver without an API server.
pub struct DirClaimSource {
    pub dir: PathBuf,
}

/// A claim file bigger than this is not a claim.
const MAX_CLAIM_BYTES: u64 = 1 << 20;

#[tonic::async_trait]
impl ClaimSource for DirClaimSource {
    async fn allocation(&self, claim: &ClaimRef) -> Result<ClaimAllocation, String> {
        check_uid(&claim.uid).map_err(|e| e.to_string())?;
        let path = self.dir.join(format!("{}.json", claim.uid));
        let read = move || -> Result<ClaimAllocation, String> {
            use std::io::Read;
            let f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut bytes = Vec::new();
            f.take(MAX_CLAIM_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if bytes.len() as u64 > MAX_CLAIM_BYTES {
                return Err(format!(
                    "{}: larger than {MAX_CLAIM_BYTES} bytes",
                    path.display()
                ));
            }
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
        };
        let a = tokio::task::spawn_blocking(read)
            .await
            .map_err(|e| e.to_string())??;
        if a.claim.uid != claim.uid {
            return Err(format!(
                "allocation file for claim {} names claim {}",
                claim.uid, a.claim.uid
            ));
        }
        Ok(a)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error(
        "claim UID {0:?}: expected letters, digits and '-' (a Kubernetes UID), at most 64 \
         characters"
    )]
    BadUid(String),
    #[error("claim {0}: no device of driver {DRIVER} is allocated to it on this node")]
    NoDevices(String),
    #[error(
        "device {device:?} (request {request}): not a nicplug device name (pci-DDDD-BB-DD-F or \
         sf-N); fix: allocate from nicplug's ResourceSlices"
    )]
    BadDeviceName { request: String, device: String },
    #[error("device {device} ({id}) is allocated twice in the claim")]
    Twice { device: String, id: String },
    #[error(
        "device {device} ({id}) is in no pool of this node's config (gone, or the config \
         changed since the ResourceSlice was published)"
    )]
    NotPooled { device: String, id: String },
    #[error(
        "device {device} ({id}) is {verdict}: it is not prepared for a new claim (the device \
         plugin's Allocate refuses it too); fix: the cause named, or a new claim for another \
         device"
    )]
    Unhealthy {
        device: String,
        id: String,
        verdict: String,
    },
    #[error(
        "device {device} ({id}) is already prepared for claim {holder}: a device is never in \
         two places; fix: unprepare that claim first"
    )]
    Held {
        device: String,
        id: String,
        holder: String,
    },
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(
        "requests {a} and {b} take devices of pool {pool} with different DpdkConfig settings, \
         whose PCIDEVICE_*/NICPLUG_EAL_ARGS_* variables would clash; fix: give both requests \
         the same config, or use devices of different pools"
    )]
    OptionsClash { pool: String, a: String, b: String },
    #[error("pool {pool}: {source}")]
    Edits { pool: String, source: EditError },
    #[error("writing {path}: {err}")]
    Write { path: PathBuf, err: std::io::Error },
    #[error("removing {path}: {err}")]
    Remove { path: PathBuf, err: std::io::Error },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// A claim UID is part of file and CDI device names: refuse anything but a UID's characters.
pub fn check_uid(uid: &str) -> Result<(), PrepareError> {
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        && uid.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(PrepareError::BadUid(uid.to_string()))
    }
}

/// The claim's CDI spec file name.
pub fn cdi_file_name(uid: &str) -> String {
    format!("{DRIVER}-claim_{uid}.json")
}

/// A claim spec: a CDI spec with top-level edits (the pool-wide variables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    pub cdi_version: String,
    pub kind: String,
    pub devices: Vec<cdi::Device>,
    pub container_edits: cdi::Edits,
}

/// Prepares and unprepares claims; one per driver. Calls are serialised (the checkpoint is one
/// file): run them off the thread that answers kubelet.
pub struct Preparer {
    paths: HostPaths,
    cdi_version: String,
    device_info: bool,
    checkpoint: Mutex<Checkpoint>,
}

/// One allocated device, resolved.
struct Resolved<'a> {
    request: String,
    device: String,
    pool_name: String,
    id: String,
    pool: &'a Pool,
}

impl Preparer {
    /// `state_dir` holds the checkpoint (the driver's plugin directory).
    pub fn new(
        paths: HostPaths,
        state_dir: &Path,
        cdi_version: &str,
        device_info: bool,
    ) -> Result<Self, PrepareError> {
        Ok(Preparer {
            paths,
            cdi_version: cdi_version.to_string(),
            device_info,
            checkpoint: Mutex::new(Checkpoint::load(state_dir)?),
        })
    }

    /// The claims prepared now (UIDs).
    pub fn prepared(&self) -> Vec<String> {
        let cp = self.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
        cp.claims().map(|c| c.claim.uid.clone()).collect()
    }

    /// Prepare a claim: the answer for kubelet. A claim already prepared gets the same answer
    /// and nothing is written again (its pod may be running); a new one is refused a device
    /// whose `health` verdict is unhealthy.
    pub fn prepare(
        &self,
        alloc: &ClaimAllocation,
        host: &Host,
        pools: &Pools,
        health: &BTreeMap<String, Verdict>,
    ) -> Result<Vec<PreparedDevice>, PrepareError> {
        let uid = &alloc.claim.uid;
        check_uid(uid)?;
        let mut cp = self.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(done) = cp.get(uid) {
            // Same claim, same answer, nothing written; unless its spec was removed behind
            // our back, then it is written again (below) from the same allocation.
            let spec = self.paths.cdi_dir.join(&done.cdi_file);
            if std::fs::symlink_metadata(spec).is_ok_and(|m| m.is_file()) {
                return Ok(done.devices.clone());
            }
        }
        if alloc.devices.is_empty() {
            return Err(PrepareError::NoDevices(uid.clone()));
        }

        let mut resolved: Vec<Resolved> = Vec::new();
        for d in &alloc.devices {
            let id = DeviceId::from_dns_label(&d.device)
                .ok_or_else(|| PrepareError::BadDeviceName {
                    request: d.request.clone(),
                    device: d.device.clone(),
                })?
                .kubelet();
            if resolved.iter().any(|r| r.id == id) {
                return Err(PrepareError::Twice {
                    device: d.device.clone(),
                    id,
                });
            }
            if let Some(holder) = cp.holder(&id, uid) {
                return Err(PrepareError::Held {
                    device: d.device.clone(),
                    id,
                    holder: format!(
                        "{}/{} ({})",
                        holder.claim.namespace, holder.claim.name, holder.claim.uid
                    ),
                });
            }
            // Shared RDMA pools hand out HCAs by counter, not devices by name: never here.
            let pool = pools
                .pools
                .iter()
                .find(|p| p.shared.is_none() && p.device(&id).is_some())
                .ok_or_else(|| PrepareError::NotPooled {
                    device: d.device.clone(),
                    id: id.clone(),
                })?;
            if let Some(v) = health.get(&id).filter(|v| !v.healthy) {
                return Err(PrepareError::Unhealthy {
                    device: d.device.clone(),
                    id,
                    verdict: v.to_string(),
                });
            }
            resolved.push(Resolved {
                request: d.request.clone(),
                device: d.device.clone(),
                pool_name: d.pool.clone(),
                id,
                pool,
            });
        }

        // One pool with its effective options per group, devices in allocation order.
        struct Group<'a> {
            source: &'a Pool,
            nicplug: NicplugOptions,
            first_request: &'a str,
            members: Vec<&'a Resolved<'a>>,
        }
        let mut grouped: BTreeMap<&str, Group> = BTreeMap::new();
        for r in &resolved {
            let mut opts = r.pool.config.nicplug.clone();
            for c in params::for_request(&alloc.config, &r.request)? {
                c.apply(&mut opts);
            }
            match grouped.get_mut(r.pool.name.as_str()) {
                Some(g) if g.nicplug != opts => {
                    return Err(PrepareError::OptionsClash {
                        pool: r.pool.name.clone(),
                        a: g.first_request.to_string(),
                        b: r.request.clone(),
                    });
                }
                Some(g) => g.members.push(r),
                None => {
                    grouped.insert(
                        &r.pool.name,
                        Group {
                            source: r.pool,
                            nicplug: opts,
                            first_request: &r.request,
                            members: vec![r],
                        },
                    );
                }
            }
        }
        // Each device's edit options resolved again from the claim's options: what a pool
        // configured with them would give (`tests/dra` compares with such a pool's Allocate).
        struct Ready<'a> {
            pool: Pool,
            members: Vec<&'a Resolved<'a>>,
        }
        let groups: Vec<Ready> = grouped
            .into_values()
            .map(|g| {
                let ids: Vec<&str> = g.members.iter().map(|r| r.id.as_str()).collect();
                Ready {
                    pool: g.source.with_options(&ids, g.nicplug),
                    members: g.members,
                }
            })
            .collect();

        let mut spec = ClaimSpec {
            cdi_version: self.cdi_version.clone(),
            kind: CDI_KIND.to_string(),
            devices: Vec::new(),
            container_edits: cdi::Edits::default(),
        };
        let mut answer = Vec::new();
        let mut device_info = Vec::new();
        for g in &groups {
            let ids: Vec<String> = g.members.iter().map(|r| r.id.clone()).collect();
            let edits_of = |ids: &[String]| {
                edits::container_edits(&g.pool, host, &self.paths, ids).map_err(|source| {
                    PrepareError::Edits {
                        pool: g.pool.name.clone(),
                        source,
                    }
                })
            };
            let all = edits_of(&ids)?;
            let mut placed = ContainerEdits::default();
            for r in &g.members {
                let own = edits_of(std::slice::from_ref(&r.id))?;
                let mut mine = ContainerEdits::default();
                for n in own.devices.iter().filter(|n| all.devices.contains(n)) {
                    if !placed.devices.contains(n) {
                        placed.devices.push(n.clone());
                        mine.devices.push(n.clone());
                    }
                }
                for m in own.mounts.iter().filter(|m| all.mounts.contains(m)) {
                    if !placed.mounts.contains(m) {
                        placed.mounts.push(m.clone());
                        mine.mounts.push(m.clone());
                    }
                }
                let name = format!("{uid}-{}", r.device);
                spec.devices.push(cdi::Device {
                    name: name.clone(),
                    container_edits: cdi::container_edits(&mine),
                });
                answer.push(PreparedDevice {
                    requests: vec![r.request.clone()],
                    pool: r.pool_name.clone(),
                    device: r.device.clone(),
                    id: r.id.clone(),
                    cdi_device_ids: vec![cdi::qualified_name(CDI_KIND, &name)],
                });
                if self.device_info
                    && let Some(f) = host.function(&r.id)
                {
                    device_info.push(crate::render::device_info(&g.pool, f));
                }
            }
            // Whatever the whole set needs that no single device did (nothing today) stays
            // with the spec, so the container gets all of it.
            let rest = ContainerEdits {
                devices: all
                    .devices
                    .iter()
                    .filter(|n| !placed.devices.contains(n))
                    .cloned()
                    .collect(),
                mounts: all
                    .mounts
                    .iter()
                    .filter(|m| !placed.mounts.contains(m))
                    .cloned()
                    .collect(),
                ..Default::default()
            };
            let rest = cdi::container_edits(&rest);
            spec.container_edits.device_nodes.extend(rest.device_nodes);
            spec.container_edits.mounts.extend(rest.mounts);
            spec.container_edits
                .env
                .extend(all.env.iter().map(|(k, v)| format!("{k}={v}")));
        }

        // Write the spec, then the device-info files, then the record; undo on failure.
        let cdi_file = cdi_file_name(uid);
        let mut body = serde_json::to_vec_pretty(&spec).expect("plain data serialises");
        body.push(b'\n');
        crate::files::write_atomically(&self.paths.cdi_dir, &cdi_file, &body).map_err(
            |source| PrepareError::Write {
                path: self.paths.cdi_dir.join(&cdi_file),
                err: source,
            },
        )?;
        let mut written_info = Vec::new();
        let undo = |info: &[String]| {
            let _ = crate::files::remove(&self.paths.cdi_dir, &cdi_file);
            for n in info {
                let _ = crate::files::remove(&self.paths.device_info_dir, n);
            }
        };
        for (name, text) in &device_info {
            if let Err(source) =
                crate::files::write_atomically(&self.paths.device_info_dir, name, text.as_bytes())
            {
                undo(&written_info);
                return Err(PrepareError::Write {
                    path: self.paths.device_info_dir.join(name),
                    err: source,
                });
            }
            written_info.push(name.clone());
        }
        let record = PreparedClaim {
            claim: alloc.claim.clone(),
            devices: answer.clone(),
            cdi_file: cdi_file.clone(),
            device_info_files: written_info.clone(),
        };
        if let Err(e) = cp.insert(record) {
            undo(&written_info);
            return Err(e.into());
        }
        Ok(answer)
    }

    /// Unprepare a claim: remove what prepare wrote, then the record. An unknown claim is
    /// already unprepared.
    pub fn unprepare(&self, uid: &str) -> Result<(), PrepareError> {
        let mut cp = self.checkpoint.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = cp.get(uid).cloned() else {
            return Ok(());
        };
        let remove = |dir: &Path, name: &str| {
            crate::files::remove(dir, name).map_err(|source| PrepareError::Remove {
                path: dir.join(name),
                err: source,
            })
        };
        remove(&self.paths.cdi_dir, &c.cdi_file)?;
        for n in &c.device_info_files {
            remove(&self.paths.device_info_dir, n)?;
        }
        cp.remove(uid)?;
        Ok(())
    }
}
