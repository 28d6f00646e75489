//! The RDMA shared device plugin's `configList` and `periodicUpdateInterval`, read with that
//! plugin's defaults (prefix `rdma`, interval 60 s) and its rules: a name of letters, digits and
//! `_`, names unique, `rdmaHcaMax` and the interval not negative, exactly one of `selectors` and
//! `devices` (the deprecated spelling of `ifNames`).
//!
//! Like that plugin (Go's decoder), keys match ignoring case and `null` means unset. Unlike it,
//! unknown keys inside `selectors` are refused (a misspelt selector would widen the pool) and
//! every problem is reported at once.

use std::collections::HashMap;

use serde_json::Value;

use super::Walk;
use super::names::{bad_netdev_name, suggest};
use super::value::{describe, index_path, key_path, quote};
use crate::config::{MAX_HCA_IDS, SHARED_DEFAULT_PREFIX, SharedResource, SharedSelector};

const SHARED_FIELDS: &[&str] = &[
    "resourceName",
    "resourcePrefix",
    "rdmaHcaMax",
    "selectors",
    "devices",
];

const SHARED_SELECTOR_FIELDS: &[&str] =
    &["vendors", "deviceIDs", "drivers", "ifNames", "linkTypes"];

impl Walk {
    /// `configList`: the shared resources in file order, names unique per prefix.
    pub(super) fn shared_list(&mut self, path: &str, value: &Value) -> Vec<SharedResource> {
        let Value::Array(items) = value else {
            self.problem(
                path,
                format!("must be a list of resources, not {}", describe(value)),
                "wrap the resources in [ ], e.g. \"configList\": [{...}]",
            );
            return Vec::new();
        };
        let mut first_use: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_path = index_path(path, i);
            let Some(res) = self.shared_resource(&item_path, item) else {
                continue;
            };
            if !res.resource_name.is_empty() {
                // That plugin compares bare names; so does this.
                if let Some(first) = first_use.get(&res.resource_name) {
                    self.problem(
                        &key_path(&item_path, "resourceName"),
                        format!(
                            "{} is already used by {}",
                            quote(&res.resource_name),
                            index_path(path, *first)
                        ),
                        "give every configList entry its own resourceName",
                    );
                } else {
                    first_use.insert(res.resource_name.clone(), i);
                }
            }
            out.push(res);
        }
        out
    }

    /// `periodicUpdateInterval`: seconds, not negative.
    pub(super) fn interval(&mut self, path: &str, value: &Value) -> Option<u64> {
        match value.as_u64() {
            Some(n) => Some(n),
            None => {
                self.problem(
                    path,
                    format!(
                        "must be a whole number of seconds, not negative, not {}",
                        describe(value)
                    ),
                    "write e.g. 60, or leave it out for the default of 60",
                );
                None
            }
        }
    }

    fn shared_resource(&mut self, path: &str, value: &Value) -> Option<SharedResource> {
        let map = self.object(
            path,
            value,
            "a resource object",
            r#"write {"resourceName": "...", "rdmaHcaMax": 100, "selectors": {...}}"#,
        )?;
        let fields = self.fields(path, map, SHARED_FIELDS, true);
        let mut res = SharedResource {
            resource_name: String::new(),
            resource_prefix: SHARED_DEFAULT_PREFIX.to_owned(),
            rdma_hca_max: 0,
            selector: SharedSelector::default(),
        };
        match fields.get("resourceName") {
            None => self.problem(
                &key_path(path, "resourceName"),
                "is required",
                r#"add "resourceName": "<name>" using letters, digits and '_'"#,
            ),
            Some((p, v)) => {
                if let Some(name) = self.string(&p, v)
                    && self.shared_name(&p, name)
                {
                    res.resource_name = name.to_owned();
                }
            }
        }
        // "" is Go's zero value: the default.
        if let Some((p, v)) = fields.get("resourcePrefix")
            && let Some(prefix) = self.string(&p, v)
            && !prefix.is_empty()
        {
            self.resource_prefix(&p, prefix);
            res.resource_prefix = prefix.to_owned();
        }
        if let Some((p, v)) = fields.get("rdmaHcaMax") {
            res.rdma_hca_max = self.hca_max(&p, v);
        }
        let selectors = fields.get("selectors");
        let devices = fields.get("devices");
        let selector = match (selectors, devices) {
            (Some((sp, sv)), Some((dp, dv))) => {
                let s = self.shared_selector(&sp, sv);
                let d = self.if_names(&dp, dv);
                if s == SharedSelector::default() {
                    // That plugin lets an empty "selectors" pass when "devices" is given.
                    SharedSelector { if_names: d, ..s }
                } else if d.is_empty() {
                    s
                } else {
                    self.problem(
                        &dp,
                        "is set together with \"selectors\"; give one or the other",
                        "move these names into selectors.ifNames and remove \"devices\" (it is deprecated)",
                    );
                    s
                }
            }
            (Some((sp, sv)), None) => self.shared_selector(&sp, sv),
            (None, Some((dp, dv))) => SharedSelector {
                if_names: self.if_names(&dp, dv),
                ..Default::default()
            },
            (None, None) => SharedSelector::default(),
        };
        if selector == SharedSelector::default() {
            self.problem(
                &key_path(path, "selectors"),
                "is required: neither \"selectors\" nor \"devices\" selects anything",
                r#"add "selectors": {"vendors": ["15b3"], "ifNames": ["ens1f0"]} or similar"#,
            );
        }
        res.selector = selector;
        Some(res)
    }

    /// That plugin's pattern `^[a-zA-Z0-9_]+$`; kubelet's 63-character limit too.
    fn shared_name(&mut self, path: &str, name: &str) -> bool {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_';
        if name.is_empty() {
            self.problem(
                path,
                "must not be empty",
                "use letters, digits and '_', e.g. \"rdma_shared_a\"",
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
                    "{} may only contain letters, digits and '_' (the RDMA shared device plugin's rule)",
                    quote(name)
                ),
                format!("replace the other characters, e.g. {}", quote(&cleaned)),
            );
            return false;
        }
        if name.len() > 63
            || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
        {
            let trimmed: String = name.trim_matches('_').chars().take(63).collect();
            self.problem(
                path,
                format!(
                    "{} must be at most 63 characters and start and end with a letter or digit, or kubelet rejects it",
                    quote(name)
                ),
                format!("use {}", quote(&trimmed)),
            );
            return false;
        }
        true
    }

    fn hca_max(&mut self, path: &str, value: &Value) -> u32 {
        if let Some(n) = value.as_u64() {
            if let Ok(n) = u32::try_from(n)
                && n <= MAX_HCA_IDS
            {
                return n;
            }
            self.problem(
                path,
                format!(
                    "{n} is more IDs than one ListAndWatch message to kubelet can carry (at most {MAX_HCA_IDS})"
                ),
                "use a smaller number; it only bounds how many containers share the HCAs",
            );
            return 0;
        }
        let rule = match value.as_i64() {
            Some(n) => format!("must not be negative, not {n}"),
            None => format!("must be a whole number, not {}", describe(value)),
        };
        self.problem(
            path,
            rule,
            "give how many containers may share these HCAs, e.g. 100",
        );
        0
    }

    fn shared_selector(&mut self, path: &str, value: &Value) -> SharedSelector {
        let mut s = SharedSelector::default();
        let Some(map) = self.object(
            path,
            value,
            "a selector object",
            r#"write {"vendors": ["15b3"], "ifNames": ["ens1f0"]}"#,
        ) else {
            return s;
        };
        let fields = self.fields(path, map, SHARED_SELECTOR_FIELDS, true);
        for &key in &fields.unknown {
            let fix = match suggest(key, SHARED_SELECTOR_FIELDS) {
                Some(name) => format!("did you mean {}?", quote(name)),
                None => format!("use only {}", SHARED_SELECTOR_FIELDS.join(", ")),
            };
            self.problem(
                &key_path(path, key),
                "is not a selector of the RDMA shared device plugin (it would select more than written)",
                fix,
            );
        }
        if let Some((p, v)) = fields.get("vendors") {
            s.vendors = self.hex_ids(&p, v, "15b3");
        }
        if let Some((p, v)) = fields.get("deviceIDs") {
            s.device_ids = self.hex_ids(&p, v, "101d");
        }
        if let Some((p, v)) = fields.get("drivers") {
            s.drivers = self.names(&p, v);
        }
        if let Some((p, v)) = fields.get("ifNames") {
            s.if_names = self.if_names(&p, v);
        }
        if let Some((p, v)) = fields.get("linkTypes") {
            s.link_types = self
                .names(&p, v)
                .into_iter()
                .map(|t| t.to_ascii_lowercase())
                .collect();
        }
        s
    }

    fn if_names(&mut self, path: &str, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        for (item_path, name) in self.list(path, value) {
            match bad_netdev_name(name) {
                Some(why) => self.problem(
                    &item_path,
                    format!("{} is not a valid interface name: {why}", quote(name)),
                    "give the netdev name as `ip link` shows it, e.g. \"ens1f0\"",
                ),
                None => out.push(name.to_owned()),
            }
        }
        out
    }
}
