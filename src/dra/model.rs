//! Plain data the DRA front end's parts share: the API server side (slices, claims) and the
//! kubelet side (prepare, unprepare, checkpoint) speak these types, never each other's.

use serde::{Deserialize, Serialize};

/// The driver's name: ResourceSlices' `spec.driver`, claims' `results[].driver`, the CDI vendor,
/// the plugin registration name and the domain of nicplug's own device attributes.
pub const DRIVER: &str = "nicplug.io";

/// The API version of nicplug's opaque per-claim parameters (`kind: DpdkConfig`).
pub const CONFIG_API_VERSION: &str = "nicplug.io/v1alpha1";

/// A claim as kubelet names it in `NodePrepareResources`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClaimRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// One device the scheduler allocated to the claim, for this driver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedDevice {
    /// The claim's request this device satisfies (`results[].request`, maybe `req/subreq`).
    pub request: String,
    /// The ResourceSlice pool (nicplug publishes one pool per node, named after the node).
    pub pool: String,
    /// The device's DNS-label name (see [`crate::device_id::DeviceId::dns_label`]).
    pub device: String,
}

/// Where an opaque configuration came from; a claim's own overrides its class's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigSource {
    Class,
    Claim,
}

/// One opaque configuration for this driver, in the order the allocation lists them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpaqueConfig {
    pub source: ConfigSource,
    /// Requests it applies to; empty means every request.
    pub requests: Vec<String>,
    /// The raw parameters object (`apiVersion`, `kind` and the fields).
    pub parameters: serde_json::Value,
}

/// What a claim's allocation says for this driver on this node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimAllocation {
    pub claim: ClaimRef,
    pub devices: Vec<AllocatedDevice>,
    pub config: Vec<OpaqueConfig>,
}
