//! One selector object: its fields, the form of each value, and whether the resource's
//! `deviceType` uses them.

use serde_json::Value;

use super::Walk;
use super::names::{bad_netdev_name, is_bdf, is_hex, suggest};
use super::resource::{DEVICE_TYPES, RESOURCE_FIELDS};
use super::value::{Fields, key_path, quote};
use crate::config::range::VfRange;
use crate::config::{DeviceType, PfSelector, Selector, VdpaType};

/// The keys of a selector object, as the SR-IOV plugin spells them.
pub(super) const SELECTOR_FIELDS: &[&str] = &[
    "vendors",
    "devices",
    "drivers",
    "pciAddresses",
    "acpiIndexes",
    "pfNames",
    "rootDevices",
    "linkTypes",
    "pKeys",
    "ddpProfiles",
    "isRdma",
    "needVhostNet",
    "vdpaType",
    "auxTypes",
];

/// Whether the SR-IOV plugin applies `field` for `device_type` (its selector struct for that
/// type has the field); otherwise it ignores it and the pool gets wider than written.
fn used_by(field: &str, device_type: DeviceType) -> bool {
    use DeviceType::*;
    match field {
        "vendors" | "devices" | "drivers" => true,
        "pciAddresses" => device_type != AuxNetDevice,
        "pfNames" | "rootDevices" | "linkTypes" | "isRdma" | "acpiIndexes" => {
            device_type != Accelerator
        }
        "auxTypes" => device_type == AuxNetDevice,
        _ => device_type == NetDevice, // ddpProfiles, pKeys, needVhostNet, vdpaType
    }
}

/// Whether `field` narrows the selector, i.e. differs from its "any" default.
fn is_set(selector: &Selector, field: &str) -> bool {
    match field {
        "vendors" => !selector.vendors.is_empty(),
        "devices" => !selector.devices.is_empty(),
        "drivers" => !selector.drivers.is_empty(),
        "pciAddresses" => !selector.pci_addresses.is_empty(),
        "acpiIndexes" => !selector.acpi_indexes.is_empty(),
        "pfNames" => !selector.pf_names.is_empty(),
        "rootDevices" => !selector.root_devices.is_empty(),
        "linkTypes" => !selector.link_types.is_empty(),
        "pKeys" => !selector.p_keys.is_empty(),
        "ddpProfiles" => !selector.ddp_profiles.is_empty(),
        "isRdma" => selector.is_rdma,
        "needVhostNet" => selector.need_vhost_net,
        "vdpaType" => selector.vdpa_type.is_some(),
        "auxTypes" => !selector.aux_types.is_empty(),
        _ => false,
    }
}

impl Walk {
    pub(super) fn selector(
        &mut self,
        path: &str,
        value: &Value,
        device_type: Option<DeviceType>,
    ) -> Selector {
        let mut sel = Selector::default();
        let Some(map) = self.object(
            path,
            value,
            "a selector object or a list of them",
            r#"write {"vendors": ["15b3"], ...} or [{...}, {...}]"#,
        ) else {
            return sel;
        };
        let fields = self.fields(path, map, SELECTOR_FIELDS, true);
        for &key in &fields.unknown {
            self.unknown_selector_field(&key_path(path, key), key);
        }
        if let Some((p, v)) = fields.get("vendors") {
            sel.vendors = self.hex_ids(&p, v, "15b3");
        }
        if let Some((p, v)) = fields.get("devices") {
            sel.devices = self.hex_ids(&p, v, "101e");
        }
        if let Some((p, v)) = fields.get("drivers") {
            sel.drivers = self.names(&p, v);
        }
        if let Some((p, v)) = fields.get("pciAddresses") {
            for (item_path, text) in self.list(&p, v) {
                if let Some(bdf) = self.bdf(&item_path, text) {
                    sel.pci_addresses.push(bdf);
                }
            }
        }
        if let Some((p, v)) = fields.get("acpiIndexes") {
            for (item_path, text) in self.list(&p, v) {
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
                    sel.acpi_indexes.push(text.to_owned());
                } else {
                    self.problem(
                        &item_path,
                        format!("{} is not a decimal ACPI index", quote(text)),
                        "use the number in the device's acpi_index file, e.g. \"101\"",
                    );
                }
            }
        }
        if let Some((p, v)) = fields.get("pfNames") {
            sel.pf_names = self.pf_selectors(&p, v, false);
        }
        if let Some((p, v)) = fields.get("rootDevices") {
            sel.root_devices = self.pf_selectors(&p, v, true);
        }
        if let Some((p, v)) = fields.get("linkTypes") {
            sel.link_types = self.names(&p, v);
        }
        if let Some((p, v)) = fields.get("pKeys") {
            sel.p_keys = self.names(&p, v);
        }
        if let Some((p, v)) = fields.get("ddpProfiles") {
            sel.ddp_profiles = self.names(&p, v);
            if !sel.ddp_profiles.is_empty() {
                self.problem(
                    &p,
                    "is not supported: nicplug does not read Intel DDP profiles (the SR-IOV plugin runs ddptool or asks devlink), so this selector would select nothing",
                    "remove ddpProfiles and name the ports loaded with that profile by pfNames, rootDevices or pciAddresses",
                );
            }
        }
        if let Some((p, v)) = fields.get("isRdma") {
            sel.is_rdma = self.bool(&p, v).unwrap_or(false);
        }
        if let Some((p, v)) = fields.get("needVhostNet") {
            sel.need_vhost_net = self.bool(&p, v).unwrap_or(false);
        }
        if let Some((p, v)) = fields.get("vdpaType") {
            sel.vdpa_type = self.string(&p, v).and_then(|s| self.vdpa_type(&p, s));
            if sel.is_rdma && sel.vdpa_type.is_some() {
                self.problem(
                    &p,
                    "cannot be combined with \"isRdma\": true in the same selector (the SR-IOV plugin rejects it)",
                    "drop isRdma for vDPA devices, or put them in separate selectors",
                );
            }
        }
        if let Some((p, v)) = fields.get("auxTypes") {
            let check = device_type == Some(DeviceType::AuxNetDevice);
            for (item_path, text) in self.list(&p, v) {
                if check && text != "sf" {
                    self.problem(
                        &item_path,
                        format!("{} is not a supported auxiliary device type", quote(text)),
                        "use \"sf\" (scalable functions, the only type the SR-IOV plugin supports)",
                    );
                }
                // Kept even when refused so that "auxTypes missing" is not reported on top.
                sel.aux_types.push(text.to_owned());
            }
        }
        if let Some(device_type) = device_type {
            self.selector_fits_type(path, &sel, &fields, device_type);
        }
        sel
    }

    fn selector_fits_type(
        &mut self,
        path: &str,
        sel: &Selector,
        fields: &Fields<'_>,
        device_type: DeviceType,
    ) {
        for &(field, key, _) in &fields.found {
            if !is_set(sel, field) || used_by(field, device_type) {
                continue;
            }
            let fix = if field == "auxTypes" {
                "set \"deviceType\": \"auxNetDevice\" on this resource, or remove auxTypes"
                    .to_owned()
            } else {
                let users: Vec<&str> = DEVICE_TYPES
                    .iter()
                    .filter(|t| used_by(field, **t))
                    .map(|t| t.as_str())
                    .collect();
                format!(
                    "remove it, or use a deviceType that supports it ({})",
                    users.join(", ")
                )
            };
            self.problem(
                &key_path(path, key),
                format!(
                    "is ignored for deviceType {} by the SR-IOV plugin, so the pool would hold more devices than written",
                    device_type.as_str()
                ),
                fix,
            );
        }
        if device_type == DeviceType::AuxNetDevice && sel.aux_types.is_empty() {
            self.problem(
                path,
                "needs \"auxTypes\" for deviceType auxNetDevice (the SR-IOV plugin rejects it otherwise)",
                "add \"auxTypes\": [\"sf\"]",
            );
        }
    }

    fn unknown_selector_field(&mut self, path: &str, key: &str) {
        let fix = if let Some(field) = RESOURCE_FIELDS.iter().find(|f| f.eq_ignore_ascii_case(key))
        {
            format!(
                "move {} out of the selector into the resource",
                quote(field)
            )
        } else if let Some(field) = suggest(key, SELECTOR_FIELDS) {
            format!("rename it to {}", quote(field))
        } else {
            format!(
                "remove it; selector fields are {}",
                SELECTOR_FIELDS.join(", ")
            )
        };
        self.problem(
            path,
            "is not a selector field (nicplug refuses unknown ones: a misspelt selector would silently select more devices)",
            fix,
        );
    }

    fn vdpa_type(&mut self, path: &str, text: &str) -> Option<VdpaType> {
        match text {
            "" => None, // Go's zero value: no vDPA filter
            "virtio" => Some(VdpaType::Virtio),
            "vhost" => Some(VdpaType::Vhost),
            other => {
                let fix = match suggest(other, &["virtio", "vhost"]) {
                    Some(name) => format!("use {}", quote(name)),
                    None => "use \"virtio\" or \"vhost\", or leave vdpaType out".to_owned(),
                };
                self.problem(
                    path,
                    format!("{} is not one of virtio, vhost", quote(other)),
                    fix,
                );
                None
            }
        }
    }

    /// The valid entries of a `pfNames` or `rootDevices` list.
    fn pf_selectors(&mut self, path: &str, value: &Value, root_device: bool) -> Vec<PfSelector> {
        self.list(path, value)
            .into_iter()
            .filter_map(|(item_path, text)| self.pf_selector(&item_path, text, root_device))
            .collect()
    }

    /// `name[#vfs]` for `pfNames`, `bdf[#vfs]` for `rootDevices`.
    fn pf_selector(&mut self, path: &str, text: &str, root_device: bool) -> Option<PfSelector> {
        let (pf, vfs) = match text.split_once('#') {
            Some((pf, vfs)) => (pf, Some(vfs)),
            None => (text, None),
        };
        let pf = if root_device {
            self.bdf(path, pf)?
        } else if let Some(why) = bad_netdev_name(pf) {
            self.problem(
                path,
                format!("{} is not a valid PF netdev name: {why}", quote(pf)),
                "use the PF's interface name as `ip link` shows it, e.g. \"ens1f0\" or \"ens1f0#0-7\"",
            );
            return None;
        } else {
            pf.to_owned()
        };
        let vfs = match vfs.map(str::parse::<VfRange>).transpose() {
            Ok(vfs) => vfs,
            Err(err) => {
                let example = if root_device {
                    "0000:3b:00.0#0,2-7"
                } else {
                    "ens1f0#0,2-7"
                };
                self.problem(
                    path,
                    format!("bad VF indices in {}: {err}", quote(text)),
                    format!(
                        "after '#' write 0-based VF indices and inclusive ranges separated by commas, e.g. \"{example}\""
                    ),
                );
                return None;
            }
        };
        Some(PfSelector { pf, vfs })
    }

    /// A full PCI address `dddd:bb:dd.f`, returned in lower case as sysfs spells it.
    fn bdf(&mut self, path: &str, text: &str) -> Option<String> {
        if is_bdf(text) {
            return Some(text.to_ascii_lowercase());
        }
        let fix = if is_bdf(&format!("0000:{text}")) {
            format!(
                "add the PCI domain: {}",
                quote(&format!("0000:{}", text.to_ascii_lowercase()))
            )
        } else {
            "write domain:bus:device.function in hex as `lspci -D` shows it, e.g. \"0000:3b:00.2\""
                .to_owned()
        };
        self.problem(
            path,
            format!("{} is not a full PCI address (dddd:bb:dd.f)", quote(text)),
            fix,
        );
        None
    }

    fn hex_ids(&mut self, path: &str, value: &Value, example: &str) -> Vec<String> {
        let mut ids = Vec::new();
        for (item_path, text) in self.list(path, value) {
            if text.len() == 4 && is_hex(text) {
                ids.push(text.to_ascii_lowercase());
                continue;
            }
            let pad = |s: &str| quote(&format!("{:0>4}", s.to_ascii_lowercase()));
            let bare = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
            let fix = match bare {
                Some(bare) if bare.len() <= 4 && is_hex(bare) => {
                    format!("drop the 0x prefix: {}", pad(bare))
                }
                _ if text.len() < 4 && is_hex(text) => format!("pad it to 4 digits: {}", pad(text)),
                _ => format!("write the ID as 4 hex digits without 0x, e.g. \"{example}\""),
            };
            self.problem(
                &item_path,
                format!("{} is not a 4-digit hexadecimal ID", quote(text)),
                fix,
            );
        }
        ids
    }
}
