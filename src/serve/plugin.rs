//! The DevicePlugin gRPC service of one pool: a thin edge over [`PoolView`].

use super::holders::Holders;
use super::preferred::preferred;
use super::stats::Stats;
use super::view::{AllocError, PoolView, list_response};
use crate::api::device_plugin_server::DevicePlugin;
use crate::api::{self, Empty};
use crate::render;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

/// Response metadata of `GetDevicePluginOptions` carrying the daemon's readiness: `ok` or
/// what is not ready.
pub const READY_HEADER: &str = "nicplug-ready";

pub struct PluginService {
    pub view: watch::Receiver<Arc<PoolView>>,
    /// Where CNI device-info files go; `None` disables them.
    pub device_info_dir: Option<PathBuf>,
    pub stats: Arc<Stats>,
    pub holders: Arc<Holders>,
}

/// A request's IDs must be this pool's listed devices, each at most once: anything bigger than
/// the pool is refused before any work is done.
fn check_ids(view: &PoolView, ids: &[String], field: &str) -> Result<(), Status> {
    if ids.len() > view.listed() {
        return Err(Status::invalid_argument(format!(
            "{field}: {} IDs, but {} has {} devices",
            ids.len(),
            view.pool.name,
            view.listed()
        )));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = ids.iter().find(|id| !seen.insert(id.as_str())) {
        return Err(Status::invalid_argument(format!(
            "{field}: {dup} is given twice"
        )));
    }
    Ok(())
}

type ListStream = Pin<Box<dyn Stream<Item = Result<api::ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for PluginService {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<api::DevicePluginOptions>, Status> {
        let mut response = Response::new(api::DevicePluginOptions {
            pre_start_required: false,
            get_preferred_allocation_available: true,
        });
        // For `nicplug probe`: the daemon's readiness rides along (kubelet ignores it).
        let ready = match self.stats.readiness() {
            Ok(()) => "ok".to_string(),
            Err(problems) => problems.join("; "),
        };
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(ready.as_str()) {
            response.metadata_mut().insert(READY_HEADER, v);
        }
        Ok(response)
    }

    type ListAndWatchStream = ListStream;

    /// The full list now, then again whenever the list or a health changes, and only then.
    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<ListStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        let mut view = self.view.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let devices = view.borrow_and_update().advertised();
                if last.as_ref() != Some(&devices) {
                    if tx.send(Ok(list_response(&devices))).await.is_err() {
                        return;
                    }
                    last = Some(devices);
                }
                tokio::select! {
                    changed = view.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<api::PreferredAllocationRequest>,
    ) -> Result<Response<api::PreferredAllocationResponse>, Status> {
        let view = self.view.borrow().clone();
        let requests = request.into_inner().container_requests;
        let mut container_responses = Vec::with_capacity(requests.len().min(view.listed()));
        for r in &requests {
            // Bounded before any work: kubelet offers this pool's devices, each once.
            check_ids(&view, &r.available_device_i_ds, "available_deviceIDs")?;
            check_ids(&view, &r.must_include_device_i_ds, "must_include_deviceIDs")?;
            container_responses.push(api::ContainerPreferredAllocationResponse {
                device_i_ds: preferred(
                    &view.host,
                    &r.available_device_i_ds,
                    &r.must_include_device_i_ds,
                    usize::try_from(r.allocation_size).unwrap_or(0),
                ),
            });
        }
        Ok(Response::new(api::PreferredAllocationResponse {
            container_responses,
        }))
    }

    async fn allocate(
        &self,
        request: Request<api::AllocateRequest>,
    ) -> Result<Response<api::AllocateResponse>, Status> {
        let view = self.view.borrow().clone();
        let requests = request.into_inner().container_requests;
        let all: Vec<String> = requests
            .iter()
            .flat_map(|r| r.devices_ids.iter().cloned())
            .collect();
        // One pod's containers share no device: the whole request is checked as one list.
        check_ids(&view, &all, "devicesIDs").inspect_err(|_| {
            self.stats.allocation_failed(&view.pool.name);
        })?;
        let resource = view.pool.name.clone();
        // Edits are computed off the threads that answer kubelet: a big request takes a while.
        let compute = {
            let view = view.clone();
            move || {
                requests
                    .into_iter()
                    .map(|req| {
                        let ids = req.devices_ids;
                        match view.allocate(&ids) {
                            Ok(edits) => Ok((ids, edits)),
                            Err(e) => {
                                warn!(resource = %view.pool.name, ?ids, "allocate refused: {e}");
                                Err(match e {
                                    AllocError::Unhealthy { .. } => {
                                        Status::failed_precondition(e.to_string())
                                    }
                                    AllocError::Edit(_) => Status::invalid_argument(e.to_string()),
                                })
                            }
                        }
                    })
                    .collect::<Result<Vec<_>, Status>>()
            }
        };
        let answers = tokio::task::spawn_blocking(compute)
            .await
            .map_err(|e| Status::internal(format!("allocate failed: {e}")))?
            .inspect_err(|_| self.stats.allocation_failed(&resource))?;
        // Recorded before the answer leaves: from now on no other pool offers these devices.
        match self.holders.claim(&resource, &all) {
            Ok(true) => self.holders.persist().await,
            Ok(false) => {}
            Err(e) => {
                self.stats.allocation_failed(&resource);
                warn!(%resource, "allocate refused: {e}");
                return Err(Status::failed_precondition(e.to_string()));
            }
        }
        if let Some(dir) = self.device_info_dir.clone() {
            let (view, ids) = (view.clone(), all.clone());
            let write = move || write_device_info(&dir, &view, &ids);
            let _ = tokio::task::spawn_blocking(write).await;
        }
        let mut container_responses = Vec::with_capacity(answers.len());
        for (ids, edits) in answers {
            self.stats.allocated(&resource);
            info!(
                %resource,
                ids = %ids.join(","),
                devices = %edits.devices.iter().map(|d| d.container_path.as_str()).collect::<Vec<_>>().join(","),
                mounts = edits.mounts.len(),
                cdi = view.cdi.is_some(),
                "allocated"
            );
            // CDI mode: the spec carries nodes and mounts; envs stay as they are.
            let response = view.cdi.as_deref().and_then(|c| c.response(&edits, &ids));
            container_responses.push(response.unwrap_or_else(|| render::allocate_response(&edits)));
        }
        Ok(Response::new(api::AllocateResponse {
            container_responses,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<api::PreStartContainerRequest>,
    ) -> Result<Response<api::PreStartContainerResponse>, Status> {
        Ok(Response::new(api::PreStartContainerResponse {}))
    }
}

/// CNI device-info files: best effort, like the SR-IOV plugin (a CNI without them still works
/// from the PCIDEVICE variables); failures are logged, never fail the allocation.
fn write_device_info(dir: &Path, view: &PoolView, ids: &[String]) {
    for id in ids {
        // PCI functions only: the spec's `pci` record would name an SF's parent, not the SF.
        let Some(f) = view.host.function(id) else {
            continue;
        };
        let (name, body) = render::device_info(&view.pool, f);
        if let Err(e) = crate::files::write_atomically(dir, &name, body.as_bytes()) {
            warn!(dir = %dir.display(), file = %name, "cannot write device-info file: {e}");
        }
    }
}
