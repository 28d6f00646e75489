//! One pool at a moment: the pool, the host snapshot it came from, the health of each device
//! and the allocation rules (known IDs, healthy only, preferred choice). Replaced whole on
//! every change and shared with the front ends, which only render it.

use super::claims::Claims;
use crate::HostPaths;
use crate::edits::{self, ContainerEdits, EditError};
use crate::health::{LinkStates, Reason, verdict};
use crate::host::Host;
use crate::pools::Pool;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One advertised device: what a front end publishes (kubelet's device list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub id: String,
    pub healthy: bool,
    pub numa_node: Option<u32>,
}

#[derive(Debug)]
pub struct PoolView {
    pub pool: Pool,
    pub host: Arc<Host>,
    pub paths: Arc<HostPaths>,
    /// Healthy (what kubelet is told) and why (see [`crate::health`]), for each of
    /// `pool.devices` in its order. By position, not in maps keyed by ID: two maps cost ~170
    /// bytes a device, and a few views of every pool are alive at once.
    verdicts: Vec<(bool, Reason)>,
    /// Positions in `pool.devices`, sorted by device ID: the lookups.
    by_id: Vec<u32>,
    /// Devices of the pool kubelet still holds under another resource -> that resource.
    pub held_elsewhere: BTreeMap<String, String>,
    /// Devices held under this resource that left the pool (gone from the host, or moved by
    /// a reload): listed Unhealthy ([`Reason::LeftPool`]) until kubelet releases them.
    pub ghosts: Vec<String>,
}

static LEFT_POOL: Reason = Reason::LeftPool;

/// A request's device IDs are not a set of this pool's listed devices.
#[derive(Debug, thiserror::Error)]
pub enum IdsError {
    #[error("{field}: {given} IDs, but {pool} has {listed} devices")]
    TooMany {
        field: String,
        given: usize,
        pool: String,
        listed: usize,
    },
    #[error("{field}: {id} is given twice")]
    Twice { field: String, id: String },
}

/// Why an allocation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("devices unhealthy in {pool}: {}", .ids.join(", "))]
    Unhealthy {
        pool: String,
        /// Each as `<id> (<why>)`.
        ids: Vec<String>,
    },
    #[error(transparent)]
    Edit(#[from] EditError),
}

impl PoolView {
    pub fn new(pool: Pool, host: Arc<Host>, paths: Arc<HostPaths>, links: &LinkStates) -> Self {
        let rule = pool.config.nicplug.health;
        // A shared pool's IDs all stand for the same HCAs: usable while one of them is.
        let shared_verdict = pool.shared.as_ref().map(|s| {
            warn_missing_nodes(&pool, &host);
            let verdicts: Vec<(bool, Reason)> = s
                .members
                .iter()
                .map(|a| match host.device(a) {
                    Some(dev) => {
                        let v = verdict(dev, &host, links, rule);
                        (v.healthy, v.reason)
                    }
                    None => (false, Reason::Gone),
                })
                .collect();
            verdicts
                .iter()
                .find(|(ok, _)| *ok)
                .or(verdicts.first())
                .cloned()
                .unwrap_or((false, Reason::Gone))
        });
        let verdicts = pool
            .devices
            .iter()
            .map(|d| match &shared_verdict {
                Some(v) => v.clone(),
                None => match host.device(&d.id) {
                    Some(dev) => {
                        let v = verdict(dev, &host, links, rule);
                        (v.healthy, v.reason)
                    }
                    None => (false, Reason::Gone),
                },
            })
            .collect();
        let mut by_id: Vec<u32> = (0..pool.devices.len() as u32).collect();
        by_id.sort_by(|a, b| {
            pool.devices[*a as usize]
                .id
                .cmp(&pool.devices[*b as usize].id)
        });
        PoolView {
            pool,
            host,
            paths,
            verdicts,
            by_id,
            held_elsewhere: BTreeMap::new(),
            ghosts: Vec::new(),
        }
    }

    /// Whether this view tells the front ends exactly what `other` does: same host snapshot,
    /// same pool, same verdicts and holds.
    pub fn same_as(&self, other: &PoolView) -> bool {
        Arc::ptr_eq(&self.host, &other.host)
            && self.pool == other.pool
            && self.verdicts == other.verdicts
            && self.held_elsewhere == other.held_elsewhere
            && self.ghosts == other.ghosts
    }

    /// Position of a device of the pool in `pool.devices`.
    fn position(&self, id: &str) -> Option<usize> {
        let devices = &self.pool.devices;
        self.by_id
            .binary_search_by(|i| devices[*i as usize].id.as_str().cmp(id))
            .ok()
            .map(|i| self.by_id[i] as usize)
    }

    /// Whether `id` is listed to kubelet (a device of the pool or a ghost) and if so healthy.
    pub fn healthy(&self, id: &str) -> Option<bool> {
        self.verdict(id).map(|(ok, _)| ok)
    }

    /// Why a listed device is healthy or not.
    pub fn reason(&self, id: &str) -> Option<&Reason> {
        self.verdict(id).map(|(_, why)| why)
    }

    fn verdict(&self, id: &str) -> Option<(bool, &Reason)> {
        match self.position(id) {
            Some(i) => Some((self.verdicts[i].0, &self.verdicts[i].1)),
            None => self
                .ghosts
                .iter()
                .any(|g| g == id)
                .then_some((false, &LEFT_POOL)),
        }
    }

    /// Every listed device with its verdict: the pool's in ID order, then the ghosts.
    pub fn verdicts(&self) -> impl Iterator<Item = (&str, bool, &Reason)> {
        let pool = self.by_id.iter().map(|i| {
            let i = *i as usize;
            let (ok, why) = &self.verdicts[i];
            (self.pool.devices[i].id.as_str(), *ok, why)
        });
        pool.chain(self.ghosts.iter().map(|g| (g.as_str(), false, &LEFT_POOL)))
    }

    /// Apply who holds what (see `holders`): a device held under another resource is Unhealthy
    /// here; one held under this resource but no longer in the pool stays listed, Unhealthy.
    pub fn hold(&mut self, claims: &Claims) {
        for (d, verdict) in self.pool.devices.iter().zip(self.verdicts.iter_mut()) {
            if let Some(other) = claims.elsewhere(&self.pool.name, &d.id) {
                self.held_elsewhere.insert(d.id.clone(), other.to_string());
                *verdict = (
                    false,
                    Reason::HeldElsewhere {
                        resource: other.to_string(),
                    },
                );
            }
        }
        for id in claims.of(&self.pool.name) {
            if self.healthy(id).is_none() {
                self.ghosts.push(id.to_string());
            }
        }
    }

    /// Devices listed to kubelet: the pool's and its ghosts.
    pub fn listed(&self) -> usize {
        self.pool.devices.len() + self.ghosts.len()
    }

    /// The device list, sorted by ID.
    pub fn advertised(&self) -> Vec<Advertised> {
        let mut list: Vec<Advertised> = self
            .pool
            .devices
            .iter()
            .zip(&self.verdicts)
            .map(|(d, (ok, _))| Advertised {
                id: d.id.clone(),
                healthy: *ok,
                numa_node: d.numa_node,
            })
            .chain(self.ghosts.iter().map(|id| Advertised {
                id: id.clone(),
                healthy: false,
                numa_node: None,
            }))
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        list
    }

    /// A request's IDs (named `field` in the error) must be this pool's listed devices, each at
    /// most once: anything bigger than the pool is refused before any work is done.
    pub fn check_ids(&self, ids: &[String], field: &str) -> Result<(), IdsError> {
        if ids.len() > self.listed() {
            return Err(IdsError::TooMany {
                field: field.to_string(),
                given: ids.len(),
                pool: self.pool.name.clone(),
                listed: self.listed(),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = ids.iter().find(|id| !seen.insert(id.as_str())) {
            return Err(IdsError::Twice {
                field: field.to_string(),
                id: dup.clone(),
            });
        }
        Ok(())
    }

    /// The preferred `size` devices among `available`, `must_include` first (see
    /// [`super::preferred()`]).
    pub fn preferred(
        &self,
        available: &[String],
        must_include: &[String],
        size: usize,
    ) -> Vec<String> {
        super::preferred::preferred(&self.host, available, must_include, size)
    }

    /// Container edits for one container's IDs; unknown IDs first, then unhealthy ones.
    pub fn allocate(&self, ids: &[String]) -> Result<ContainerEdits, AllocError> {
        let unknown: Vec<String> = ids
            .iter()
            .filter(|id| self.healthy(id).is_none())
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(EditError::UnknownIds {
                pool: self.pool.name.clone(),
                ids: unknown,
            }
            .into());
        }
        // Each with why, so a refused pod's event says what to fix.
        let unhealthy: Vec<String> = ids
            .iter()
            .filter(|id| self.healthy(id) == Some(false))
            .map(|id| match self.reason(id) {
                Some(why) => format!("{id} ({why})"),
                None => id.clone(),
            })
            .collect();
        if !unhealthy.is_empty() {
            return Err(AllocError::Unhealthy {
                pool: self.pool.name.clone(),
                ids: unhealthy,
            });
        }
        Ok(edits::container_edits(
            &self.pool,
            &self.host,
            &self.paths,
            ids,
        )?)
    }
}

/// Warn once per process about each RDMA node a shared pool's HCA lacks (`umad`, `issm`,
/// `rdma_cm`): the HCA is still served without it, and views are rebuilt on every change.
fn warn_missing_nodes(pool: &Pool, host: &Host) {
    static SEEN: std::sync::Mutex<std::collections::BTreeSet<(String, String, &'static str)>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let missing = edits::shared_missing_nodes(pool, host);
    let Ok(mut seen) = SEEN.lock() else {
        return;
    };
    for (hca, kind) in missing {
        if seen.insert((pool.name.clone(), hca.clone(), kind)) {
            tracing::warn!(resource = %pool.name, %hca, node = kind, "RDMA node missing on the host; the HCA is still shared without it");
        }
    }
}

/// Say which devices turned Healthy or Unhealthy between two views of a pool, one line per
/// verdict (a PF losing carrier is one line for all its VFs).
pub fn log_health_changes(old: &PoolView, new: &PoolView) {
    let mut changed: BTreeMap<(bool, String), Vec<&str>> = BTreeMap::new();
    for (id, ok, why) in new.verdicts() {
        if old.healthy(id).is_some_and(|was| was != ok) {
            changed.entry((ok, why.to_string())).or_default().push(id);
        }
    }
    for ((ok, why), ids) in changed {
        let resource = &new.pool.name;
        let devices = ids.join(",");
        if ok {
            tracing::info!(%resource, %devices, reason = %why, "devices Healthy again");
        } else {
            tracing::warn!(%resource, %devices, reason = %why, "devices Unhealthy");
        }
    }
}
