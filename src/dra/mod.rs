//! `nicplug dra`: the Dynamic Resource Allocation front end (`resource.k8s.io/v1`). It publishes
//! the same inventory as the device plugin, as ResourceSlices, and prepares claims into per-claim
//! CDI specs carrying exactly the edits the device plugin gives.

pub mod api;
pub mod checkpoint;
pub mod claims;
pub mod classes;
pub mod inventory;
pub mod kubelet;
pub mod model;
pub mod params;
pub mod prepare;
pub mod publish;
pub mod slices;

/// A kube error with its causes, each said once: kube's messages often repeat their source's
/// text, so an error chain printed link by link says the same thing three times.
pub fn explain(e: &kube::Error) -> String {
    let mut out = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
        cur = c.source();
    }
    out
}
