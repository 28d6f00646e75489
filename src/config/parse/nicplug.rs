//! nicplug's own optional `nicplug` block of a resource.

use serde_json::Value;

use super::Walk;
use super::names::suggest;
use super::value::{key_path, quote};
use crate::config::{HealthRule, NicplugOptions, RdmaCharDev};

/// The keys of the `nicplug` block (matched exactly).
const NICPLUG_FIELDS: &[&str] = &["countersMount", "rdmaDevices", "ealArgs", "health"];

impl Walk {
    pub(super) fn nicplug(&mut self, path: &str, value: &Value) -> NicplugOptions {
        let mut opts = NicplugOptions::default();
        let Some(map) = self.object(
            path,
            value,
            "an object",
            r#"write {"countersMount": true, "rdmaDevices": ["uverbs"], "ealArgs": true, "health": "uplink"}"#,
        ) else {
            return opts;
        };
        // nicplug's own block has no Go heritage, so its keys are exact.
        let fields = self.fields(path, map, NICPLUG_FIELDS, false);
        for &key in &fields.unknown {
            let fix = match suggest(key, NICPLUG_FIELDS) {
                Some(field) => format!("rename it to {}", quote(field)),
                None => format!("remove it; options are {}", NICPLUG_FIELDS.join(", ")),
            };
            self.problem(&key_path(path, key), "is not a nicplug option", fix);
        }
        if let Some((p, v)) = fields.get("countersMount")
            && let Some(b) = self.bool(&p, v)
        {
            opts.counters_mount = b;
        }
        if let Some((p, v)) = fields.get("ealArgs")
            && let Some(b) = self.bool(&p, v)
        {
            opts.eal_args = b;
        }
        if let Some((p, v)) = fields.get("health")
            && let Some(text) = self.string(&p, v)
        {
            let names = HealthRule::ALL.map(HealthRule::as_str);
            match HealthRule::ALL.into_iter().find(|r| r.as_str() == text) {
                Some(rule) => opts.health = rule,
                None => {
                    let fix = match suggest(text, &names) {
                        Some(name) => format!("use {}", quote(name)),
                        None => {
                            "use \"uplink\" (the default: the PF's link, the VF's state on its \
                                 PF) or \"strict\" (also the device's own netdev and RDMA port)"
                                .to_owned()
                        }
                    };
                    self.problem(
                        &p,
                        format!("{} is not one of {}", quote(text), names.join(", ")),
                        fix,
                    );
                }
            }
        }
        if let Some((p, v)) = fields.get("rdmaDevices") {
            let names = RdmaCharDev::ALL.map(RdmaCharDev::as_str);
            let mut devices = Vec::new();
            for (item_path, text) in self.list(&p, v) {
                match RdmaCharDev::ALL.into_iter().find(|d| d.as_str() == text) {
                    Some(dev) if devices.contains(&dev) => {
                        self.problem(
                            &item_path,
                            format!("lists {} twice", quote(text)),
                            "remove the duplicate",
                        );
                    }
                    Some(dev) => devices.push(dev),
                    None => {
                        let fix = match suggest(text, &names) {
                            Some(name) => format!("use {}", quote(name)),
                            None => format!("use some of {}", names.join(", ")),
                        };
                        self.problem(
                            &item_path,
                            format!("{} is not one of {}", quote(text), names.join(", ")),
                            fix,
                        );
                    }
                }
            }
            devices.sort();
            opts.rdma_devices = Some(devices);
        }
        opts
    }
}
