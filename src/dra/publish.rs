//! Keeping the node's ResourceSlices in step with the inventory, through the API server.
//!
//! Each inventory snapshot arriving on a watch channel is reconciled at once (no polling):
//! the slices described by [`super::slices`] are written (create, or replace at the
//! resourceVersion last read; a 409 re-reads and retries, bounded), then the node's other
//! slices of this driver are deleted. The pool generation goes up whenever the devices change,
//! so the scheduler never mixes slices of two inventories.

use crate::dra::inventory::{exclusive, held};
use crate::dra::model::DRIVER;
use crate::dra::slices::{self, Published};
use crate::inventory::Inventory;
use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How many times one slice write is retried after a conflict before the round gives up (the
/// next snapshot, or the retry timer, starts a new round).
const CONFLICT_RETRIES: usize = 5;
/// Wait before retrying a round that failed (API server away, say), doubled up to the cap.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long an unchanged inventory is trusted to match the API server without reading it by
/// default: after this the slices are listed again and any that someone else changed or
/// deleted are repaired.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("listing the ResourceSlices of node {node}: {}", super::explain(error))]
    List { node: String, error: kube::Error },
    #[error("writing ResourceSlice {name}: {}", super::explain(error))]
    Write { name: String, error: kube::Error },
    #[error("writing ResourceSlice {name}: still conflicting after {CONFLICT_RETRIES} re-reads")]
    Conflicts { name: String },
    #[error("deleting ResourceSlice {name}: {}", super::explain(error))]
    Delete { name: String, error: kube::Error },
}

/// The node's slices of this driver on the API server.
pub struct Publisher {
    api: Api<ResourceSlice>,
    node: String,
    /// Devices and generation last written in full, and when they were last checked against
    /// the API server; `None` until the first round succeeds.
    published: Option<(Vec<Device>, i64, std::time::Instant)>,
    resync: Duration,
}

impl Publisher {
    pub fn new(client: Client, node: &str) -> Self {
        Publisher {
            api: Api::all(client),
            node: node.to_string(),
            published: None,
            resync: DEFAULT_RESYNC,
        }
    }

    /// Re-read the API server at most this long after the last check (see [`DEFAULT_RESYNC`]).
    pub fn resync_after(mut self, d: Duration) -> Self {
        self.resync = d;
        self
    }

    fn list_params(&self) -> ListParams {
        ListParams::default().fields(&format!("spec.nodeName={},spec.driver={DRIVER}", self.node))
    }

    async fn existing(&self) -> Result<Vec<ResourceSlice>, PublishError> {
        let list =
            self.api
                .list(&self.list_params())
                .await
                .map_err(|error| PublishError::List {
                    node: self.node.clone(),
                    error,
                })?;
        // The field selector is the API server's; check anyway, a slice of another node must
        // never be touched.
        Ok(list
            .items
            .into_iter()
            .filter(|s| s.spec.driver == DRIVER && s.spec.node_name.as_deref() == Some(&self.node))
            .collect())
    }

    /// Make the API server hold exactly `devices` for this node. Returns whether anything was
    /// written.
    pub async fn publish(&mut self, devices: &[Published]) -> Result<bool, PublishError> {
        let wanted: Vec<Device> = devices.iter().map(|p| p.device.clone()).collect();
        if self
            .published
            .as_ref()
            .is_some_and(|(d, _, at)| *d == wanted && at.elapsed() < self.resync)
        {
            return Ok(false);
        }
        let existing = self.existing().await?;
        let old_gen = existing.iter().map(|s| s.spec.pool.generation).max();
        // After a restart, slices already saying exactly this keep their generation.
        let desired_same = |generation: i64| {
            let want = slices::slices(&self.node, devices, generation);
            want.len() == existing.len()
                && want.iter().all(|w| {
                    existing
                        .iter()
                        .any(|e| e.metadata.name == w.metadata.name && e.spec == w.spec)
                })
        };
        if let Some(g) = old_gen.filter(|&g| desired_same(g)) {
            self.published = Some((wanted, g, std::time::Instant::now()));
            return Ok(false);
        }
        let generation = old_gen
            .into_iter()
            .chain(self.published.as_ref().map(|p| p.1))
            .max()
            .map_or(1, |g| g + 1);
        let want = slices::slices(&self.node, devices, generation);
        for slice in &want {
            let current = existing
                .iter()
                .find(|e| e.metadata.name == slice.metadata.name);
            self.write(slice, current).await?;
        }
        for old in &existing {
            let name = old.metadata.name.clone().unwrap_or_default();
            if !want
                .iter()
                .any(|w| w.metadata.name.as_deref() == Some(&name))
            {
                self.delete(&name).await?;
            }
        }
        self.published = Some((wanted, generation, std::time::Instant::now()));
        Ok(true)
    }

    async fn write(
        &self,
        slice: &ResourceSlice,
        current: Option<&ResourceSlice>,
    ) -> Result<(), PublishError> {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let werr = |error| PublishError::Write {
            name: name.clone(),
            error,
        };
        let mut version = current.and_then(|c| c.metadata.resource_version.clone());
        for _ in 0..=CONFLICT_RETRIES {
            let result = match &version {
                None => self.api.create(&PostParams::default(), slice).await,
                Some(rv) => {
                    let mut s = slice.clone();
                    s.metadata.resource_version = Some(rv.clone());
                    self.api.replace(&name, &PostParams::default(), &s).await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                // Changed (409 on replace) or created meanwhile (409 on create): read it again.
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    tracing::debug!(slice = %name, "conflict; reading it again");
                    version = self
                        .api
                        .get_opt(&name)
                        .await
                        .map_err(werr)?
                        .and_then(|c| c.metadata.resource_version);
                }
                // Deleted since it was listed.
                Err(kube::Error::Api(s)) if s.code == 404 && version.is_some() => version = None,
                Err(e) => return Err(werr(e)),
            }
        }
        Err(PublishError::Conflicts { name })
    }

    async fn delete(&self, name: &str) -> Result<(), PublishError> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(error) => Err(PublishError::Delete {
                name: name.to_string(),
                error,
            }),
        }
    }

    /// Delete every slice of this driver for this node (uninstall).
    pub async fn delete_all(&mut self) -> Result<usize, PublishError> {
        let existing = self.existing().await?;
        for s in &existing {
            self.delete(s.metadata.name.as_deref().unwrap_or_default())
                .await?;
        }
        self.published = None;
        Ok(existing.len())
    }

    /// Publish every inventory whose pools changed as it arrives, and check the API server
    /// again every resync period, until the sender goes away. Health-only changes are not
    /// written (slices carry no health); a device the device plugin holds is left out until
    /// it is released. A failed round is retried with backoff unless a
    /// newer inventory comes first.
    pub async fn run(mut self, mut rx: watch::Receiver<Arc<Inventory>>) {
        let mut backoff = FIRST_BACKOFF;
        let mut described: Option<(u64, BTreeSet<String>, Vec<Published>)> = None;
        loop {
            let inv = rx.borrow_and_update().clone();
            let held = held(&inv);
            if described
                .as_ref()
                .is_none_or(|d| d.0 != inv.pools_generation || d.1 != held)
            {
                let mut devices = slices::devices(&inv.host, exclusive(&inv));
                devices.retain(|p| !held.contains(&p.id.kubelet()));
                described = Some((inv.pools_generation, held, devices));
            }
            drop(inv);
            let devices = described.as_ref().map_or(&[][..], |d| &d.2[..]);
            let started = std::time::Instant::now();
            let wait = match self.publish(devices).await {
                Ok(wrote) => {
                    backoff = FIRST_BACKOFF;
                    if wrote {
                        tracing::info!(
                            node = %self.node,
                            devices = devices.len(),
                            generation = self.published.as_ref().map_or(0, |p| p.1),
                            took_ms = started.elapsed().as_millis() as u64,
                            "ResourceSlices published"
                        );
                    }
                    self.resync
                }
                Err(e) => {
                    tracing::warn!("{e}; retrying in {backoff:?}");
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
