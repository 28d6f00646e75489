//! Text -> `serde_json::Value` -> typed [`Config`].
//!
//! The value is walked by hand so that every rejection names its JSON path, the rule and a fix,
//! and so that all problems come out at once rather than one per restart of the daemon set.
//!
//! Compatibility with the SR-IOV network device plugin, which decodes with Go's `encoding/json`:
//! keys of its format match ignoring case (operator-generated files really say `"IsRdma"`),
//! `null` means "not set", and unknown keys at the top level and in a resource are ignored
//! (generated files carry `"SelectorObj": null`). Unknown keys inside a selector or inside
//! nicplug's own `nicplug` block are rejected: a misspelt selector would silently widen a pool.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use serde_saphyr::{MessageFormatter, UserMessageFormatter};

use super::range::VfRange;
use super::{
    Config, DeviceType, Format, NicplugOptions, PfSelector, RdmaCharDev, ResourceConfig, Selector,
    VdpaType,
};

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, no permission, not UTF-8).
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not valid JSON/YAML. 1-based position; 0 only if the YAML parser could not place it.
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// Well-formed but breaking the rules: every problem found, resources in file order.
    #[error("{}", list_problems(.problems))]
    Invalid { problems: Vec<Problem> },
}

/// One broken rule: where (a JSON path such as `resourceList[1].selectors[0].vendors[2]`), what
/// is wrong, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub rule: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; fix: {}", self.path, self.rule, self.fix)
    }
}

fn list_problems(problems: &[Problem]) -> String {
    let mut out = match problems.len() {
        1 => "1 problem in the config:".to_owned(),
        n => format!("{n} problems in the config:"),
    };
    for problem in problems {
        out.push('\n');
        out.push_str(&problem.to_string());
    }
    out
}

/// Parses and validates a config text.
pub fn parse_config(text: &str, format: Format) -> Result<Config, ConfigError> {
    // Editors on some platforms prepend a byte-order mark; neither parser accepts one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let value: Value = match format {
        Format::Json => serde_json::from_str(text).map_err(json_syntax)?,
        Format::Yaml => serde_saphyr::from_str(text).map_err(yaml_syntax)?,
    };
    let mut walk = Walk {
        problems: Vec::new(),
        yaml: format == Format::Yaml,
    };
    let config = walk.config(&value);
    if walk.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            problems: walk.problems,
        })
    }
}

/// Reads and parses a config file: YAML for `.yaml`/`.yml`, JSON otherwise.
pub fn parse_config_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let yaml = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    parse_config(&text, if yaml { Format::Yaml } else { Format::Json })
}

fn json_syntax(err: serde_json::Error) -> ConfigError {
    let (line, column) = (err.line(), err.column());
    // serde_json appends the position to its message; here it has fields of its own.
    let full = err.to_string();
    let message = full
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&full)
        .to_owned();
    // Column 0 means "before the first character" (empty input); report it as column 1.
    ConfigError::Syntax {
        line: line.max(1),
        column: column.max(1),
        message,
    }
}

fn yaml_syntax(err: serde_saphyr::Error) -> ConfigError {
    let (line, column) = err
        .location()
        .map_or((0, 0), |l| (l.line() as usize, l.column() as usize));
    // The user formatter words messages for the file's author rather than the programmer; the
    // position is in the fields, so the snippet rendering is left out. Control characters are
    // blanked because the message may quote the input.
    let message = UserMessageFormatter
        .format_message(err.without_snippet())
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    ConfigError::Syntax {
        line,
        column,
        message,
    }
}

const RESOURCE_FIELDS: &[&str] = &[
    "resourceName",
    "resourcePrefix",
    "deviceType",
    "excludeTopology",
    "selectors",
    "additionalInfo",
    "nicplug",
];

const SELECTOR_FIELDS: &[&str] = &[
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

const NICPLUG_FIELDS: &[&str] = &["countersMount", "rdmaDevices", "ealArgs"];

const DEVICE_TYPES: [DeviceType; 3] = [
    DeviceType::NetDevice,
    DeviceType::Accelerator,
    DeviceType::AuxNetDevice,
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

/// Collects problems while building the typed config; broken parts get defaults so the walk can
/// go on and report everything.
struct Walk {
    problems: Vec<Problem>,
    /// Fixes for mistyped scalars differ: YAML turns unquoted `1015` or `yes` into non-strings.
    yaml: bool,
}

/// The known fields of one object, each with the key as written and its value.
struct Fields<'a> {
    path: String,
    found: Vec<(&'static str, &'a str, &'a Value)>,
    unknown: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    /// Path and value of `field`; `None` when absent or `null` (Go leaves a null field unset).
    fn get(&self, field: &str) -> Option<(String, &'a Value)> {
        self.found
            .iter()
            .find(|(known, _, value)| *known == field && !value.is_null())
            .map(|&(_, key, value)| (key_path(&self.path, key), value))
    }
}

impl Walk {
    fn problem(&mut self, path: &str, rule: impl Into<String>, fix: impl Into<String>) {
        self.problems.push(Problem {
            path: if path.is_empty() {
                "(top level)".to_owned()
            } else {
                path.to_owned()
            },
            rule: rule.into(),
            fix: fix.into(),
        });
    }

    fn config(&mut self, value: &Value) -> Config {
        let Some(map) = self.object(
            "",
            value,
            "an object",
            r#"write {"resourceList": [ ... ]} with one object per resource pool"#,
        ) else {
            return Config::default();
        };
        let fields = self.fields("", map, &["resourceList"], true);
        let resources: Vec<ResourceConfig> = match fields.get("resourceList") {
            None => {
                self.problem(
                    "resourceList",
                    "is required",
                    r#"add "resourceList": [ ... ] with one object per resource pool"#,
                );
                Vec::new()
            }
            Some((path, Value::Array(items))) => {
                let mut first_use = HashMap::new();
                let mut resources = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let rc = self.resource(&index_path(&path, i), item);
                    self.unique_name(&path, i, &rc, &mut first_use);
                    resources.push(rc);
                }
                resources
            }
            Some((path, other)) => {
                self.problem(
                    &path,
                    format!("must be a list of resources, not {}", describe(other)),
                    "wrap the resources in [ ], e.g. \"resourceList\": [{...}]",
                );
                Vec::new()
            }
        };
        Config { resources }
    }

    /// Upstream refuses to start when two resources end up with the same `prefix/name`. The
    /// default prefix is only known at run time, so an explicit prefix equal to it is not caught.
    fn unique_name(
        &mut self,
        list_path: &str,
        index: usize,
        rc: &ResourceConfig,
        first_use: &mut HashMap<(Option<String>, String), usize>,
    ) {
        if rc.resource_name.is_empty() {
            return; // missing or invalid, already reported
        }
        let key = (rc.resource_prefix.clone(), rc.resource_name.clone());
        match first_use.entry(key) {
            Entry::Vacant(slot) => {
                slot.insert(index);
            }
            Entry::Occupied(slot) => {
                let prefix = match &rc.resource_prefix {
                    Some(prefix) => format!("the same resourcePrefix {}", quote(prefix)),
                    None => "no resourcePrefix either".to_owned(),
                };
                self.problem(
                    &format!("{}.resourceName", index_path(list_path, index)),
                    format!(
                        "{} is already used by {} with {prefix}",
                        quote(&rc.resource_name),
                        index_path(list_path, *slot.get())
                    ),
                    "rename one of them, or give them different resourcePrefix values",
                );
            }
        }
    }

    fn resource(&mut self, path: &str, value: &Value) -> ResourceConfig {
        let mut rc = ResourceConfig {
            resource_name: String::new(),
            resource_prefix: None,
            device_type: DeviceType::NetDevice,
            exclude_topology: false,
            additional_info: BTreeMap::new(),
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
        if let Some((p, v)) = fields.get("additionalInfo") {
            rc.additional_info = self.additional_info(&p, v);
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

    fn selector(&mut self, path: &str, value: &Value, device_type: Option<DeviceType>) -> Selector {
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
            for (item_path, text) in self.list(&p, v) {
                sel.pf_names
                    .extend(self.pf_selector(&item_path, text, false));
            }
        }
        if let Some((p, v)) = fields.get("rootDevices") {
            for (item_path, text) in self.list(&p, v) {
                sel.root_devices
                    .extend(self.pf_selector(&item_path, text, true));
            }
        }
        if let Some((p, v)) = fields.get("linkTypes") {
            sel.link_types = self.names(&p, v);
        }
        if let Some((p, v)) = fields.get("pKeys") {
            sel.p_keys = self.names(&p, v);
        }
        if let Some((p, v)) = fields.get("ddpProfiles") {
            sel.ddp_profiles = self.names(&p, v);
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
            let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
            if text.len() == 4 && hex(text) {
                ids.push(text.to_ascii_lowercase());
                continue;
            }
            let pad = |s: &str| quote(&format!("{:0>4}", s.to_ascii_lowercase()));
            let bare = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X"));
            let fix = match bare {
                Some(bare) if bare.len() <= 4 && hex(bare) => {
                    format!("drop the 0x prefix: {}", pad(bare))
                }
                _ if text.len() < 4 && hex(text) => format!("pad it to 4 digits: {}", pad(text)),
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

    /// A list of non-empty strings (an empty one could never match anything).
    fn names(&mut self, path: &str, value: &Value) -> Vec<String> {
        let mut names = Vec::new();
        for (item_path, text) in self.list(path, value) {
            if text.is_empty() {
                self.problem(&item_path, "is an empty string", "remove it");
            } else {
                names.push(text.to_owned());
            }
        }
        names
    }

    fn nicplug(&mut self, path: &str, value: &Value) -> NicplugOptions {
        let mut opts = NicplugOptions::default();
        let Some(map) = self.object(
            path,
            value,
            "an object",
            r#"write {"countersMount": true, "rdmaDevices": ["uverbs"], "ealArgs": true}"#,
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

    /// Looks up `known` fields in `map` like Go's decoder: exact key first, else (with
    /// `fold_case`) one equal ignoring ASCII case. Two keys for one field are a problem, because
    /// which one wins would depend on key order.
    fn fields<'a>(
        &mut self,
        path: &str,
        map: &'a Map<String, Value>,
        known: &[&'static str],
        fold_case: bool,
    ) -> Fields<'a> {
        let mut fields = Fields {
            path: path.to_owned(),
            found: Vec::new(),
            unknown: Vec::new(),
        };
        for (key, value) in map {
            let field = known.iter().find(|k| **k == key).or_else(|| {
                known
                    .iter()
                    .find(|k| fold_case && k.eq_ignore_ascii_case(key))
            });
            let Some(&field) = field else {
                fields.unknown.push(key);
                continue;
            };
            if let Some(&(_, other, _)) = fields.found.iter().find(|(f, ..)| *f == field) {
                self.problem(
                    &key_path(path, key),
                    format!(
                        "sets {field} again (also written as {}; keys match ignoring case)",
                        quote(other)
                    ),
                    format!("keep only one of {} and {}", quote(other), quote(key)),
                );
            } else {
                fields.found.push((field, key, value));
            }
        }
        fields
    }

    fn object<'a>(
        &mut self,
        path: &str,
        value: &'a Value,
        what: &str,
        fix: &str,
    ) -> Option<&'a Map<String, Value>> {
        match value {
            Value::Object(map) => Some(map),
            other => {
                self.problem(
                    path,
                    format!("must be {what}, not {}", describe(other)),
                    fix,
                );
                None
            }
        }
    }

    fn string<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a str> {
        if let Value::String(s) = value {
            return Some(s);
        }
        let fix = match value {
            Value::Number(_) | Value::Bool(_) if self.yaml => {
                "put the value in quotes (YAML reads unquoted 1015 or yes as a number or boolean)"
                    .to_owned()
            }
            Value::Number(_) | Value::Bool(_) => format!("write it in quotes: \"{value}\""),
            Value::Array(items) if items.len() == 1 => {
                "give the value itself, not a list".to_owned()
            }
            _ => "give a string".to_owned(),
        };
        self.problem(
            path,
            format!("must be a string, not {}", describe(value)),
            fix,
        );
        None
    }

    fn bool(&mut self, path: &str, value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => return Some(*b),
            Value::String(s) if s == "true" || s == "false" => self.problem(
                path,
                format!("must be a boolean, not the string {}", quote(s)),
                format!("write {s} without quotes"),
            ),
            other => self.problem(
                path,
                format!("must be true or false, not {}", describe(other)),
                "use true or false",
            ),
        }
        None
    }

    /// Each string of a list with its path; a single string or other type is a problem.
    fn list<'a>(&mut self, path: &str, value: &'a Value) -> Vec<(String, &'a str)> {
        match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let item_path = index_path(path, i);
                    self.string(&item_path, item).map(|s| (item_path, s))
                })
                .collect(),
            Value::String(s) => {
                self.problem(
                    path,
                    format!(
                        "must be a list of strings, not the single string {}",
                        quote(s)
                    ),
                    format!("wrap it in a list: [{}]", quote(s)),
                );
                Vec::new()
            }
            other => {
                self.problem(
                    path,
                    format!("must be a list of strings, not {}", describe(other)),
                    "give a list such as [\"a\", \"b\"]",
                );
                Vec::new()
            }
        }
    }
}

fn key_path(parent: &str, key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (plain, parent.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{parent}.{key}"),
        // Keys such as "0000:3b:00.2" or "*" go in brackets, JSON-quoted.
        (false, _) => format!("{parent}[{}]", Value::from(key)),
    }
}

fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Quotes input for a message: escaped (one problem stays one line) and cut if long.
fn quote(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quote(s)),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// `dddd:bb:dd.f` in hex, device <= 0x1f and function <= 7 as PCI allows; either case.
fn is_bdf(text: &str) -> bool {
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut parts = text.split(':');
    let (Some(domain), Some(bus), Some(dev_fn), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((device, function)) = dev_fn.split_once('.') else {
        return false;
    };
    hex(domain, 4)
        && hex(bus, 2)
        && hex(device, 2)
        && u8::from_str_radix(device, 16).is_ok_and(|d| d <= 0x1f)
        && matches!(function, "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7")
}

/// The kernel's rules for interface names (`dev_valid_name`), so a typo is caught here rather
/// than matching nothing.
fn bad_netdev_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name.len() > 15 {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("reserved name")
    } else if name.contains(['/', ':']) || name.chars().any(char::is_whitespace) {
        Some("contains '/', ':' or whitespace")
    } else {
        None
    }
}

fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The candidate `input` most likely meant: same letters in another case, a prefix either way
/// (`netdev`, `vendor`), or at most two edits away.
fn suggest<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let input = input.to_ascii_lowercase();
    candidates
        .iter()
        .filter_map(|&candidate| {
            let lower = candidate.to_ascii_lowercase();
            let score = if lower == input {
                0
            } else if input.len() >= 3 && (lower.starts_with(&input) || input.starts_with(&lower)) {
                1
            } else {
                edit_distance(&input, &lower) + 1
            };
            (score <= 3).then_some((score, candidate))
        })
        .min_by_key(|&(score, _)| score)
        .map(|(_, candidate)| candidate)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
