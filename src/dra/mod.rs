//! `nicplug dra`: the Dynamic Resource Allocation front end (`resource.k8s.io/v1`). It publishes
//! the same inventory as the device plugin, as ResourceSlices, and prepares claims into per-claim
//! CDI specs carrying exactly the edits the device plugin gives.

pub mod claims;
pub mod classes;
pub mod inventory;
pub mod model;
pub mod publish;
pub mod slices;
