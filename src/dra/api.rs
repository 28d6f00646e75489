//! Kubelet's DRA-side gRPC APIs, generated at build time from `proto/` into `OUT_DIR/dra/`
//! (never committed).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

macro_rules! generated {
    ($file:literal) => {
        include!(concat!(env!("OUT_DIR"), "/dra/", $file, ".rs"));
    };
}

/// Plugin watcher registration (`plugins_registry/`).
pub mod registration {
    generated!("pluginregistration");
}

/// The DRA plugin service, v1 (kubelet 1.34+ prefers it).
pub mod v1 {
    generated!("k8s.io.kubelet.pkg.apis.dra.v1");
}

/// The DRA plugin service, v1beta1 (kubelet 1.32+; wire-identical to v1).
pub mod v1beta1 {
    generated!("k8s.io.kubelet.pkg.apis.dra.v1beta1");
}

/// DRA device health, v1alpha1 (kubelet 1.34+ with the ResourceHealthStatus feature gate).
pub mod health {
    generated!("v1alpha1");
}

/// DRA device health, v1beta1 (what newer kubelets call; v1alpha1's fields plus a timeout and
/// a message).
pub mod health_v1beta1 {
    generated!("v1beta1");
}
