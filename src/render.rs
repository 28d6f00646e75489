//! Renderings of [`ContainerEdits`]: kubelet's `ContainerAllocateResponse` and the CNI
//! device-info file.

use crate::api;
use crate::edits::ContainerEdits;
use crate::host::PciFunction;
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
    pci: PciInfo<'a>,
}

#[derive(Serialize)]
struct PciInfo<'a> {
    #[serde(rename = "pci-address")]
    pci_address: &'a str,
    #[serde(rename = "rdma-device", skip_serializing_if = "Option::is_none")]
    rdma_device: Option<&'a str>,
}

/// The CNI device-info file for one allocated function: (file name, contents), in the format of
/// the network plumbing working group's device-info spec 1.1.0 as the SR-IOV plugin writes it.
/// PCI functions only: scalable functions get no device-info file (their `pci` record would
/// name the parent PF, which a CNI could mistake for the allocated device); CNIs read SFs from
/// the `PCIDEVICE_*` variables. `rdma-device` only when the pool hands out the function's RDMA
/// side (`isRdma`), as the SR-IOV plugin does since it stopped naming it for every function.
pub fn device_info(pool: &Pool, f: &PciFunction) -> (String, String) {
    let name = format!(
        "{}-{}-{}-device.json",
        pool.prefix, pool.resource_name, f.address
    );
    let info = DeviceInfo {
        kind: "pci",
        version: "1.1.0",
        pci: PciInfo {
            pci_address: &f.address,
            rdma_device: f
                .rdma
                .as_ref()
                .filter(|_| crate::edits::gives_rdma(pool, &f.address))
                .and_then(|r| r.ibdev.as_deref()),
        },
    };
    (
        name,
        crate::info::go_json(&serde_json::to_string(&info).expect("plain strings serialise")),
    )
}
