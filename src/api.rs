//! Kubelet's device plugin API v1beta1, generated at build time from `proto/` (never committed).
//! Messages derive `Serialize` so the CLI prints exactly what the daemon sends.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("v1beta1");
