//! A claim's allocation for this driver on this node, read from the API server.

use crate::dra::model::{
    AllocatedDevice, ClaimAllocation, ClaimRef, ConfigSource, DRIVER, OpaqueConfig,
};
use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::{Api, Client};

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("ResourceClaim {ns}/{name}: not found (deleted before kubelet asked?)")]
    NotFound { ns: String, name: String },
    #[error(
        "ResourceClaim {ns}/{name}: UID is {found}, kubelet asked for {wanted} (the claim was \
         deleted and created again; kubelet retries with the new one)"
    )]
    UidMismatch {
        ns: String,
        name: String,
        wanted: String,
        found: String,
    },
    #[error("ResourceClaim {ns}/{name}: status.allocation is empty (not allocated yet)")]
    NotAllocated { ns: String, name: String },
    #[error(
        "ResourceClaim {ns}/{name}: no device of driver {DRIVER} in pool {pool:?} is allocated \
         (status.allocation.devices.results)"
    )]
    NoDevices {
        ns: String,
        name: String,
        pool: String,
    },
    #[error(
        "ResourceClaim {ns}/{name}: status.allocation.devices.config[{index}].source is \
         {value:?}; expected FromClass or FromClaim"
    )]
    BadSource {
        ns: String,
        name: String,
        index: usize,
        value: String,
    },
    #[error(
        "ResourceClaim {ns}/{name}: reading it from the API server: {}",
        super::explain(error)
    )]
    Api {
        ns: String,
        name: String,
        error: kube::Error,
    },
}

/// Fetch claim `ns/name`, check it is the one kubelet means (`uid`), and take what is
/// allocated to this driver in `pool` (this node's pool, named after the node).
pub async fn get(
    client: &Client,
    claim: &ClaimRef,
    pool: &str,
) -> Result<ClaimAllocation, ClaimError> {
    let api: Api<ResourceClaim> = Api::namespaced(client.clone(), &claim.namespace);
    let found = match api.get(&claim.name).await {
        Ok(c) => c,
        Err(kube::Error::Api(s)) if s.code == 404 => {
            return Err(ClaimError::NotFound {
                ns: claim.namespace.clone(),
                name: claim.name.clone(),
            });
        }
        Err(error) => {
            return Err(ClaimError::Api {
                ns: claim.namespace.clone(),
                name: claim.name.clone(),
                error,
            });
        }
    };
    allocation(claim, &found, pool)
}

/// The pure part of [`get`]: what `found` allocates to this driver in `pool`.
pub fn allocation(
    claim: &ClaimRef,
    found: &ResourceClaim,
    pool: &str,
) -> Result<ClaimAllocation, ClaimError> {
    let ns = || claim.namespace.clone();
    let name = || claim.name.clone();
    let uid = found.metadata.uid.clone().unwrap_or_default();
    if uid != claim.uid {
        return Err(ClaimError::UidMismatch {
            ns: ns(),
            name: name(),
            wanted: claim.uid.clone(),
            found: uid,
        });
    }
    let Some(alloc) = found
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
    else {
        return Err(ClaimError::NotAllocated {
            ns: ns(),
            name: name(),
        });
    };
    let devices: Vec<AllocatedDevice> = alloc
        .results
        .iter()
        .flatten()
        .filter(|r| r.driver == DRIVER && r.pool == pool)
        .map(|r| AllocatedDevice {
            request: r.request.clone(),
            pool: r.pool.clone(),
            device: r.device.clone(),
        })
        .collect();
    if devices.is_empty() {
        return Err(ClaimError::NoDevices {
            ns: ns(),
            name: name(),
            pool: pool.to_string(),
        });
    }
    let mut config = Vec::new();
    for (index, c) in alloc.config.iter().flatten().enumerate() {
        let Some(opaque) = c.opaque.as_ref().filter(|o| o.driver == DRIVER) else {
            continue;
        };
        let source = match c.source.as_str() {
            "FromClass" => ConfigSource::Class,
            "FromClaim" => ConfigSource::Claim,
            other => {
                return Err(ClaimError::BadSource {
                    ns: ns(),
                    name: name(),
                    index,
                    value: other.to_string(),
                });
            }
        };
        config.push(OpaqueConfig {
            source,
            requests: c.requests.clone().unwrap_or_default(),
            parameters: opaque.parameters.0.clone(),
        });
    }
    Ok(ClaimAllocation {
        claim: claim.clone(),
        devices,
        config,
    })
}

/// Claims read from the API server (KUBECONFIG or the pod's service account) for the kubelet
/// plugin; the client is made at the first claim, so a driver starts without the API server.
pub struct ApiClaimSource {
    node: String,
    client: tokio::sync::OnceCell<Client>,
}

impl ApiClaimSource {
    pub fn new(node: String) -> Self {
        Self {
            node,
            client: tokio::sync::OnceCell::new(),
        }
    }
}

#[tonic::async_trait]
impl crate::dra::prepare::ClaimSource for ApiClaimSource {
    async fn allocation(&self, claim: &ClaimRef) -> Result<ClaimAllocation, String> {
        let client = self
            .client
            .get_or_try_init(Client::try_default)
            .await
            .map_err(|e| format!("connecting to the API server: {}", crate::dra::explain(&e)))?;
        get(client, claim, &self.node)
            .await
            .map_err(|e| e.to_string())
    }
}
