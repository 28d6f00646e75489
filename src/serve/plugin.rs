//! The DevicePlugin gRPC service of one pool: a thin edge over the inventory's [`PoolView`]
//! (the rules) and its CDI spec ([`Served`]).

use super::Served;
use super::holders::Holders;
use super::stats::Stats;
use crate::api::device_plugin_server::DevicePlugin;
use crate::api::{self, Empty};
use crate::inventory::{Advertised, AllocError, IdsError, PoolView};
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
    pub view: watch::Receiver<Arc<Served>>,
    /// Where CNI device-info files go; `None` disables them.
    pub device_info_dir: Option<PathBuf>,
    pub stats: Arc<Stats>,
    pub holders: Arc<Holders>,
}

/// A request's IDs must be this pool's listed devices, each at most once.
fn check_ids(view: &PoolView, ids: &[String], field: &str) -> Result<(), Status> {
    view.check_ids(ids, field)
        .map_err(|e: IdsError| Status::invalid_argument(e.to_string()))
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
                let devices = view.borrow_and_update().view.advertised();
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
        let view = self.view.borrow().view.clone();
        let requests = request.into_inner().container_requests;
        let mut container_responses = Vec::with_capacity(requests.len().min(view.listed()));
        for r in &requests {
            // Bounded before any work: kubelet offers this pool's devices, each once.
            check_ids(&view, &r.available_device_i_ds, "available_deviceIDs")?;
            check_ids(&view, &r.must_include_device_i_ds, "must_include_deviceIDs")?;
            container_responses.push(api::ContainerPreferredAllocationResponse {
                device_i_ds: view.preferred(
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
        let served = self.view.borrow().clone();
        let view = served.view.clone();
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
                cdi = served.cdi.is_some(),
                "allocated"
            );
            // CDI mode: the spec carries nodes and mounts; envs stay as they are.
            let response = served.cdi.as_deref().and_then(|c| c.response(&edits, &ids));
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

/// Kubelet's rendering of a device list.
pub fn list_response(devices: &[Advertised]) -> api::ListAndWatchResponse {
    api::ListAndWatchResponse {
        devices: devices
            .iter()
            .map(|d| api::Device {
                id: d.id.clone(),
                health: if d.healthy { "Healthy" } else { "Unhealthy" }.to_string(),
                topology: d.numa_node.map(|n| api::TopologyInfo {
                    nodes: vec![api::NumaNode { id: i64::from(n) }],
                }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The most IDs a shared pool may have fit one ListAndWatch message under kubelet's 4 MiB.
    #[test]
    fn largest_shared_pool_fits_one_message() {
        let devices: Vec<Advertised> = (0..crate::config::MAX_HCA_IDS)
            .map(|n| Advertised {
                id: n.to_string(),
                healthy: false,
                numa_node: None,
            })
            .collect();
        let len = list_response(&devices).encoded_len();
        assert!(len < 4 * 1024 * 1024 / 2, "{len} bytes");
    }
}
