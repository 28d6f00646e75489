//! Kubelet's DRA-side gRPC APIs, generated at build time from `proto/` (never committed).

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Plugin watcher registration (`plugins_registry/`).
pub mod registration {
    tonic::include_proto!("pluginregistration");
}

/// The DRA plugin service, v1 (kubelet 1.34+ prefers it).
pub mod v1 {
    tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1");
}

/// The DRA plugin service, v1beta1 (kubelet 1.32+; wire-identical to v1).
pub mod v1beta1 {
    tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1beta1");
}

/// DRA device health, v1alpha1 (kubelet 1.34+ with the ResourceHealthStatus feature gate).
pub mod health {
    tonic::include_proto!("v1alpha1");
}
