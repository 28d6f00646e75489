//! `nicplug dra`: the Dynamic Resource Allocation front end (`resource.k8s.io/v1`). It publishes
//! the same inventory as the device plugin, as ResourceSlices, and prepares claims into per-claim
//! CDI specs carrying exactly the edits the device plugin gives.

pub mod api;
pub mod checkpoint;
pub mod kubelet;
pub mod model;
pub mod params;
pub mod prepare;
