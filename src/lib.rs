//! nicplug: hands ConnectX (mlx5) functions to unprivileged DPDK pods.
//!
//! Data flows one way, each stage plain data:
//! sysfs root --[`host::discover`]--> [`host::Host`] --[`pools::build`]--> [`pools::Pools`], each
//! device resolved once into [`resolved::EditOptions`] --[`edits::container_edits_for`]-->
//! [`edits::ContainerEdits`] --> renderings (kubelet response, CDI, ...).
//! The last stage reads only [`resolved`] data (a [`device_id::DeviceId`], its options, an
//! [`resolved::EnvBase`]), never the config: the device plugin reaches it through its pools
//! ([`edits::container_edits`]), a DRA claim with options of its own. Every sysfs path shape
//! and value format is [`host::layout`]'s, for discovery, the doctor and the metrics alike.

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
pub mod inventory;
pub mod legacy;
pub mod paths;
pub mod pools;
pub mod render;
pub mod report;
pub mod resolved;
pub mod serve;
pub mod uds;

pub use paths::HostPaths;
