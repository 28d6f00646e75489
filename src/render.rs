//! Renderings of [`ContainerEdits`]: kubelet's `ContainerAllocateResponse` and the CNI
//! device-info file.

use crate::api;
use crate::edits::ContainerEdits;
use crate::host::{PciFunction, VdpaKind};
use crate::pools::Pool;
use serde::Serialize;

/// What kubelet receives for one container (and what `nicplug allocate` prints).
pub fn allocate_response(edits: &ContainerEdits) -> api::ContainerAllocateResponse {
    api::ContainerAllocateResponse {
        envs: edits.env.clone(),
        mounts: edits
            .mounts
            .iter()
            .map(|m| api::Mount {
                container_path: m.container_path.clone(),
                host_path: m.host_path.display().to_string(),
                read_only: m.read_only,
            })
            .collect(),
        devices: edits
            .devices
            .iter()
            .map(|d| api::DeviceSpec {
                container_path: d.container_path.clone(),
                host_path: d.host_path.display().to_string(),
                permissions: d.permissions.clone(),
            })
            .collect(),
        annotations: edits.annotations.clone(),
        cdi_devices: Vec::new(),
    }
}

#[derive(Serialize)]
struct DeviceInfo<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pci: Option<PciInfo<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vdpa: Option<VdpaInfo<'a>>,
}

/// The `vdpa` record of the device-info spec: the vDPA device, its type and node.
#[derive(Serialize)]
struct VdpaInfo<'a> {
    #[serde(rename = "parent-device")]
    parent_device: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    driver: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(rename = "pci-address")]
    pci_address: &'a str,
}

#[derive(Serialize)]
struct PciInfo<'a> {
    #[serde(rename = "pci-address")]
    pci_address: &'a str,
    #[serde(rename = "rdma-device", skip_serializing_if = "Option::is_none")]
    rdma_device: Option<&'a str>,
}

/// Name of the device-info file of device `id` of `pool`: `<prefix>-<name>-<id>-device.json`,
/// the name CNIs look for (not nicplug's to choose).
pub fn device_info_file(pool: &Pool, id: &str) -> String {
    format!("{}-{}-{id}-device.json", pool.prefix, pool.resource_name)
}

/// The CNI device-info file for one allocated function: (file name, contents), in the format of
/// the network plumbing working group's device-info spec 1.1.0 as the SR-IOV plugin writes it.
/// PCI functions only: scalable functions get no device-info file (their `pci` record would
/// name the parent PF, which a CNI could mistake for the allocated device); CNIs read SFs from
/// the `PCIDEVICE_*` variables. `rdma-device` only when the pool hands out the function's RDMA
/// side (`isRdma`), as the SR-IOV plugin does since it stopped naming it for every function.
pub fn device_info(pool: &Pool, f: &PciFunction) -> (String, String) {
    let name = device_info_file(pool, &f.address);
    // A function of a `vdpaType` pool is described by its vDPA device, as the SR-IOV plugin does.
    let vdpa = pool
        .device(&f.address)
        .filter(|d| d.options.vdpa.is_some())
        .and(f.vdpa.as_ref())
        .map(|v| VdpaInfo {
            parent_device: &v.name,
            driver: v.kind.map(|k| match k {
                VdpaKind::Vhost => "vhost",
                VdpaKind::Virtio => "virtio",
            }),
            path: v.node.as_ref().map(|n| n.path.as_str()),
            pci_address: &f.address,
        });
    let info = DeviceInfo {
        kind: if vdpa.is_some() { "vdpa" } else { "pci" },
        version: "1.1.0",
        pci: vdpa.is_none().then(|| PciInfo {
            pci_address: &f.address,
            rdma_device: f
                .rdma
                .as_ref()
                .filter(|_| crate::edits::gives_rdma(pool, &f.address))
                .and_then(|r| r.ibdev.as_deref()),
        }),
        vdpa,
    };
    (
        name,
        crate::info::go_json(&serde_json::to_string(&info).expect("plain strings serialise")),
    )
}
