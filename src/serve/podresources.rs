//! Client of kubelet's pod resources API (v1 `List`): which pod and container hold which device.
//! Asked at scrape time, with a short timeout; `None` when kubelet does not answer.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod v1 {
    tonic::include_proto!("v1");
}

use std::path::Path;
use std::time::Duration;
use v1::pod_resources_lister_client::PodResourcesListerClient;

/// One device held by one container.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    pub resource: String,
    pub id: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// Every device every container holds, per kubelet; an error says why kubelet did not answer.
pub async fn list(socket: &Path, timeout: Duration) -> Result<Vec<Holder>, String> {
    let call = async {
        let channel = crate::uds::channel(socket)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        let response = PodResourcesListerClient::new(channel)
            .list(v1::ListPodResourcesRequest {})
            .await
            .map_err(|e| format!("List failed: {e}"))?;
        Ok(holders(response.into_inner()))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer within {} ms", timeout.as_millis()))?
}

fn holders(response: v1::ListPodResourcesResponse) -> Vec<Holder> {
    let mut out = Vec::new();
    for pod in response.pod_resources {
        for container in pod.containers {
            for devices in container.devices {
                for id in devices.device_ids {
                    out.push(Holder {
                        resource: devices.resource_name.clone(),
                        id,
                        namespace: pod.namespace.clone(),
                        pod: pod.name.clone(),
                        container: container.name.clone(),
                    });
                }
            }
        }
    }
    out
}
