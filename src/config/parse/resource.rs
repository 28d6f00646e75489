//! One entry of `resourceList`: name, prefix, device type, additional info, and handing its
//! `selectors` and `nicplug` block on.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Walk;
use super::names::{is_dns_subdomain, suggest};
use super::selector::SELECTOR_FIELDS;
use super::value::{index_path, key_path, quote};
use crate::config::{DeviceType, NicplugOptions, ResourceConfig};

/// The keys of a resource object, as the SR-IOV plugin spells them.
pub(super) const RESOURCE_FIELDS: &[&str] = &[
    "resourceName",
    "resourcePrefix",
    "deviceType",
    "excludeTopology",
    "selectors",
    "additionalInfo",
    "nicplug",
];

/// Every `deviceType`, in the order messages list them.
pub(super) const DEVICE_TYPES: [DeviceType; 3] = [
    DeviceType::NetDevice,
    DeviceType::Accelerator,
    DeviceType::AuxNetDevice,
];

impl Walk {
    pub(super) fn resource(&mut self, path: &str, value: &Value) -> ResourceConfig {
        let mut rc = ResourceConfig {
            resource_name: String::new(),
            resource_prefix: None,
            device_type: DeviceType::NetDevice,
            exclude_topology: false,
            additional_info: None,
            selectors: Vec::new(),
            nicplug: NicplugOptions::default(),
        };
        let Some(map) = self.object(
            path,
            value,
            "a resource object",
            r#"write {"resourceName": "...", "selectors": {...}}"#,
        ) else {
            return rc;
        };
        let fields = self.fields(path, map, RESOURCE_FIELDS, true);
        for &key in &fields.unknown {
            if let Some(field) = SELECTOR_FIELDS.iter().find(|f| f.eq_ignore_ascii_case(key)) {
                self.problem(
                    &key_path(path, key),
                    "is a selector field outside \"selectors\", where the SR-IOV plugin ignores it",
                    format!("move {} into this resource's selectors", quote(field)),
                );
            }
        }

        match fields.get("resourceName") {
            None => self.problem(
                &key_path(path, "resourceName"),
                "is required",
                r#"add "resourceName": "<name>" using letters, digits, '_' and '-'"#,
            ),
            Some((p, v)) => {
                if let Some(name) = self.string(&p, v)
                    && self.resource_name(&p, name)
                {
                    rc.resource_name = name.to_owned();
                }
            }
        }
        // "" is Go's zero value, meaning the command-line default. A refused prefix is kept so
        // that the duplicate check compares what was written.
        if let Some((p, v)) = fields.get("resourcePrefix")
            && let Some(prefix) = self.string(&p, v)
            && !prefix.is_empty()
        {
            self.resource_prefix(&p, prefix);
            rc.resource_prefix = Some(prefix.to_owned());
        }
        // `None` when invalid: type-specific selector checks are skipped rather than guessed.
        let device_type = match fields.get("deviceType") {
            None => Some(DeviceType::NetDevice),
            Some((p, v)) => self.string(&p, v).and_then(|s| self.device_type(&p, s)),
        };
        rc.device_type = device_type.unwrap_or(DeviceType::NetDevice);
        if let Some((p, v)) = fields.get("excludeTopology") {
            rc.exclude_topology = self.bool(&p, v).unwrap_or(false);
        }
        // A null `additionalInfo` reads as absent (`get` skips nulls), as Go decodes it.
        if let Some((p, v)) = fields.get("additionalInfo") {
            rc.additional_info = Some(self.additional_info(&p, v));
        }
        rc.selectors = match fields.get("selectors") {
            None => {
                self.problem(
                    &key_path(path, "selectors"),
                    "is required (the SR-IOV plugin cannot start without it)",
                    r#"add "selectors": {"vendors": ["15b3"]} or similar; "selectors": {} selects every device of the deviceType"#,
                );
                Vec::new()
            }
            Some((p, Value::Array(items))) => {
                if items.is_empty() {
                    self.problem(
                        &p,
                        "is an empty list, which the SR-IOV plugin rejects",
                        r#"give at least one selector object, e.g. [{"vendors": ["15b3"]}]"#,
                    );
                }
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.selector(&index_path(&p, i), item, device_type))
                    .collect()
            }
            // The legacy single-object form; other types are reported by `selector`.
            Some((p, v)) => vec![self.selector(&p, v, device_type)],
        };
        if let Some((p, v)) = fields.get("nicplug") {
            rc.nicplug = self.nicplug(&p, v);
        }
        rc
    }

    /// Upstream's pattern plus what kubelet demands of the name half of a qualified name, since
    /// kubelet would otherwise refuse the registration at run time.
    fn resource_name(&mut self, path: &str, name: &str) -> bool {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if name.is_empty() {
            self.problem(
                path,
                "must not be empty",
                "use letters, digits, '_' and '-', e.g. \"cx6dx\"",
            );
            return false;
        }
        if let Some((prefix, rest)) = name.split_once('/') {
            self.problem(
                path,
                format!("{} contains '/'", quote(name)),
                format!(
                    "put the prefix in its own field: \"resourcePrefix\": {}, \"resourceName\": {}",
                    quote(prefix),
                    quote(rest)
                ),
            );
            return false;
        }
        if !name.chars().all(allowed) {
            let cleaned: String = name
                .chars()
                .map(|c| if allowed(c) { c } else { '_' })
                .collect();
            self.problem(
                path,
                format!(
                    "{} may only contain letters, digits, '_' and '-'",
                    quote(name)
                ),
                format!("replace the other characters, e.g. {}", quote(&cleaned)),
            );
            return false;
        }
        if name.len() > 63 {
            self.problem(
                path,
                format!(
                    "is {} characters long; kubelet rejects names over 63",
                    name.len()
                ),
                "shorten it",
            );
            return false;
        }
        if !name.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            let trimmed = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
            self.problem(
                path,
                format!(
                    "{} must start and end with a letter or digit, or kubelet rejects it",
                    quote(name)
                ),
                format!("use {}", quote(trimmed)),
            );
            return false;
        }
        true
    }

    /// Kubelet wants the prefix of an extended resource to be a DNS subdomain.
    fn resource_prefix(&mut self, path: &str, prefix: &str) {
        if is_dns_subdomain(prefix) {
            return;
        }
        let lower = prefix.to_ascii_lowercase();
        let fix = if is_dns_subdomain(&lower) {
            format!("use lower case: {}", quote(&lower))
        } else {
            "use a DNS subdomain such as \"mellanox.com\" (lower-case letters, digits, '-', '.')"
                .to_owned()
        };
        self.problem(
            path,
            format!("{} is not a DNS subdomain", quote(prefix)),
            fix,
        );
    }

    fn device_type(&mut self, path: &str, text: &str) -> Option<DeviceType> {
        if text.is_empty() {
            return Some(DeviceType::NetDevice); // Go's zero value, upstream's default
        }
        if let Some(&found) = DEVICE_TYPES.iter().find(|t| t.as_str() == text) {
            return Some(found);
        }
        let names = DEVICE_TYPES.map(DeviceType::as_str);
        let fix = match suggest(text, &names) {
            Some(name) => format!("use {} (case matters)", quote(name)),
            None => "use one of these, or leave deviceType out for netDevice".to_owned(),
        };
        self.problem(
            path,
            format!("{} is not one of {}", quote(text), names.join(", ")),
            fix,
        );
        None
    }

    fn additional_info(
        &mut self,
        path: &str,
        value: &Value,
    ) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut info = BTreeMap::new();
        let Some(map) = self.object(
            path,
            value,
            "an object keyed by \"*\" or a device ID",
            r#"write {"*": {"key": "value"}, "0000:3b:00.2": {"key": "value"}}"#,
        ) else {
            return info;
        };
        for (device, entries) in map {
            let device_path = key_path(path, device);
            let mut pairs = BTreeMap::new();
            // Go decodes a null map as an empty one.
            if !entries.is_null()
                && let Some(entries) = self.object(
                    &device_path,
                    entries,
                    "an object of string values",
                    r#"write {"key": "value"}"#,
                )
            {
                for (key, v) in entries {
                    if let Some(s) = self.string(&key_path(&device_path, key), v) {
                        pairs.insert(key.clone(), s.to_owned());
                    }
                }
            }
            info.insert(device.clone(), pairs);
        }
        info
    }
}
