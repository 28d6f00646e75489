//! `nicplug dra classes`: a DeviceClass per exclusive pool of a device-plugin config, so the
//! pools carry over to DRA one-to-one (and, through `extendedResourceName`, pods still asking
//! `resources.limits: {nvidia.com/cx6dx_vf: 1}` keep working where the scheduler supports it).

use crate::config::{Config, ResourceConfig};
use crate::dra::model::{CONFIG_API_VERSION, DRIVER};
use crate::dra::slices::{ATTR_RESOURCE_NAME, is_dns_subdomain};
use k8s_openapi::api::resource::v1::{
    CELDeviceSelector, DeviceClass, DeviceClassConfiguration, DeviceClassSpec, DeviceSelector,
    OpaqueDeviceConfiguration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ClassError {
    #[error(
        "resources {a:?} and {b:?} would both become DeviceClass {class:?}; rename one \
         (resourceName or resourcePrefix)"
    )]
    Clash { a: String, b: String, class: String },
    #[error(
        "resource {resource:?}: prefix {prefix:?} is not a DNS subdomain, so no DeviceClass name can carry it; fix resourcePrefix"
    )]
    BadPrefix { resource: String, prefix: String },
}

/// The DeviceClass name for resource `<prefix>/<name>`: `<name>.<prefix>` when `name` is
/// already a lower-case DNS label, else the name made one (`_` and upper case folded) plus a
/// hash of the original, so two resource names never share a class.
pub fn class_name(prefix: &str, name: &str) -> String {
    let plain = format!("{name}.{prefix}");
    if !name.contains('.') && is_dns_subdomain(&plain) && name.len() <= 63 {
        return plain;
    }
    let folded: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() { c } else { '-' }
        })
        .take(50)
        .collect();
    let folded = folded.trim_matches('-');
    let hash = fnv32(format!("{prefix}/{name}").as_bytes());
    if folded.is_empty() {
        format!("r-{hash:08x}.{prefix}")
    } else {
        format!("{folded}-{hash:08x}.{prefix}")
    }
}

fn fnv32(b: &[u8]) -> u32 {
    b.iter().fold(0x811c_9dc5, |h, &x| {
        (h ^ u32::from(x)).wrapping_mul(0x0100_0193)
    })
}

/// The CEL selector matching the devices one pool took.
pub fn selector(resource: &str) -> String {
    let (domain, attr) = ATTR_RESOURCE_NAME.split_once('/').unwrap_or_default();
    format!(
        "device.driver == \"{DRIVER}\" && device.attributes[\"{domain}\"].{attr} == \"{resource}\""
    )
}

/// nicplug's options of a pool as the opaque `DpdkConfig` the kubelet side reads.
pub fn dpdk_config(r: &ResourceConfig) -> serde_json::Value {
    let mut v = serde_json::json!({
        "apiVersion": CONFIG_API_VERSION,
        "kind": "DpdkConfig",
        "countersMount": r.nicplug.counters_mount,
        "ealArgs": r.nicplug.eal_args,
    });
    if let Some(devs) = &r.nicplug.rdma_devices {
        v["rdmaDevices"] = devs.iter().map(|d| d.as_str()).collect();
    }
    v
}

/// One DeviceClass per exclusive pool (`resourceList`), in config order. RDMA shared pools
/// (`configList`) have none: they are not DRA devices.
pub fn classes(config: &Config, default_prefix: &str) -> Result<Vec<DeviceClass>, ClassError> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    for r in &config.resources {
        let prefix = r.prefix(default_prefix);
        let resource = r.full_name(default_prefix);
        if !is_dns_subdomain(prefix) {
            return Err(ClassError::BadPrefix {
                resource,
                prefix: prefix.to_string(),
            });
        }
        let name = class_name(prefix, &r.resource_name);
        if let Some(a) = seen.insert(name.clone(), resource.clone()) {
            return Err(ClassError::Clash {
                a,
                b: resource,
                class: name,
            });
        }
        out.push(DeviceClass {
            metadata: ObjectMeta {
                name: Some(name),
                ..ObjectMeta::default()
            },
            spec: DeviceClassSpec {
                selectors: Some(vec![DeviceSelector {
                    cel: Some(CELDeviceSelector {
                        expression: selector(&resource),
                    }),
                }]),
                config: Some(vec![DeviceClassConfiguration {
                    opaque: Some(OpaqueDeviceConfiguration {
                        driver: DRIVER.to_string(),
                        parameters: RawExtension(dpdk_config(r)),
                    }),
                }]),
                extended_resource_name: Some(resource),
            },
        });
    }
    Ok(out)
}

/// A ResourceClaimTemplate asking for one device of `class` (the class of resource
/// `<prefix>/<name>`), and a DPDK pod using it, as JSON values (printed as YAML examples). The
/// pod is the device plugin's example pod with a claim instead of an extended resource.
pub fn examples(class: &str, prefix: &str, name: &str) -> Vec<serde_json::Value> {
    let short = class.split('.').next().unwrap_or(class);
    let template = format!("{short}-one");
    let eal = crate::info::env_name("NICPLUG_EAL_ARGS", prefix, name);
    vec![
        serde_json::json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaimTemplate",
            "metadata": {"name": template},
            "spec": {"spec": {"devices": {"requests": [
                {"name": "nic", "exactly": {"deviceClassName": class, "count": 1}}
            ]}}}
        }),
        serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "dpdk-testpmd-dra"},
            "spec": {
                "resourceClaims": [{"name": "nic", "resourceClaimTemplateName": template}],
                "containers": [{
                    "name": "testpmd",
                    "image": "dpdk:22.11",
                    "command": ["/bin/sh", "-c"],
                    "args": [format!(
                        "exec dpdk-testpmd ${eal} -l 2-3 -n 4 -- --stats-period 10"
                    )],
                    "securityContext": {
                        "privileged": false,
                        "allowPrivilegeEscalation": false,
                        "capabilities": {"drop": ["ALL"], "add": ["NET_RAW", "IPC_LOCK"]}
                    },
                    "resources": {
                        "claims": [{"name": "nic"}],
                        "requests": {"hugepages-1Gi": "2Gi", "memory": "1Gi", "cpu": "2"},
                        "limits": {"hugepages-1Gi": "2Gi", "memory": "1Gi", "cpu": "2"}
                    },
                    "volumeMounts": [{"name": "hugepages", "mountPath": "/dev/hugepages"}]
                }],
                "volumes": [{"name": "hugepages", "emptyDir": {"medium": "HugePages"}}]
            }
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_one_to_one() {
        assert_eq!(class_name("nvidia.com", "cx6dx-vf"), "cx6dx-vf.nvidia.com");
        let a = class_name("nvidia.com", "cx6dx_vf");
        let b = class_name("nvidia.com", "CX6DX_VF");
        assert_ne!(a, b);
        assert_ne!(a, "cx6dx-vf.nvidia.com");
        assert!(is_dns_subdomain(&a), "{a}");
        assert!(is_dns_subdomain(&class_name("intel.com", "a.b_c")));
    }
}
