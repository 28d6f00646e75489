//! nicplug: hands ConnectX (mlx5) functions to unprivileged DPDK pods.
//!
//! Data flows one way, each stage plain data:
//! sysfs root --[`host::discover`]--> [`host::Host`] --[`pools::build`]--> [`pools::Pools`]
//! --[`edits::container_edits`]--> [`edits::ContainerEdits`] --> renderings (kubelet response, ...).

pub mod api;
pub mod authority;
pub mod cdi;
pub mod config;
pub mod demo;
pub mod device_id;
pub mod doctor;
pub mod dra;
pub mod edits;
pub mod files;
pub mod fixture;
pub mod health;
pub mod host;
pub mod identity;
pub mod info;
pub mod legacy;
pub mod paths;
pub mod pools;
pub mod render;
pub mod report;
pub mod serve;
pub mod uds;

pub use paths::HostPaths;
