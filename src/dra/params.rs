//! nicplug's per-claim opaque parameters (`apiVersion: nicplug.io/v1alpha1`, `kind: DpdkConfig`):
//! the DRA spelling of a pool's `nicplug` options, chosen per claim or per DeviceClass.
//!
//! ```yaml
//! apiVersion: nicplug.io/v1alpha1
//! kind: DpdkConfig
//! rdmaDevices: [uverbs]     # which RDMA char devices: uverbs, rdma_cm, umad, issm
//! countersMount: true       # the read-only RDMA counters mount
//! ealArgs: true             # NICPLUG_EAL_ARGS_*
//! ```
//!
//! Every field is optional; an absent one keeps the pool's setting. Configs apply in order,
//! DeviceClass ones first, then the claim's, each later one overriding the fields it sets; a
//! config naming requests applies to those requests only. Unknown fields and wrong types fail
//! prepare with `path: rule; fix: ...`, as the config file parser says it.

use super::model::{CONFIG_API_VERSION, ConfigSource, OpaqueConfig};
use crate::config::{NicplugOptions, RdmaCharDev};
use serde_json::Value;
use std::fmt;

pub const KIND: &str = "DpdkConfig";

/// One parsed `DpdkConfig`: the fields it sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DpdkConfig {
    pub rdma_devices: Option<Vec<RdmaCharDev>>,
    pub counters_mount: Option<bool>,
    pub eal_args: Option<bool>,
}

/// A rejected parameter: where, which rule, how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParamError {
    pub path: String,
    pub rule: String,
    pub fix: String,
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; fix: {}", self.path, self.rule, self.fix)
    }
}

fn err(path: String, rule: impl Into<String>, fix: impl Into<String>) -> ParamError {
    ParamError {
        path,
        rule: rule.into(),
        fix: fix.into(),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Parse one opaque parameters object; `at` names it in messages (`claim config[0]`).
pub fn parse(at: &str, v: &Value) -> Result<DpdkConfig, ParamError> {
    let Value::Object(map) = v else {
        return Err(err(
            format!("{at}.parameters"),
            format!("must be an object, found {}", json_type(v)),
            format!("give apiVersion: {CONFIG_API_VERSION}, kind: {KIND} and the fields"),
        ));
    };
    match map.get("apiVersion") {
        Some(Value::String(s)) if s == CONFIG_API_VERSION => {}
        other => {
            return Err(err(
                format!("{at}.parameters.apiVersion"),
                format!(
                    "must be {CONFIG_API_VERSION:?}, found {}",
                    other.map_or("nothing".to_string(), |v| v.to_string())
                ),
                format!("set apiVersion: {CONFIG_API_VERSION}"),
            ));
        }
    }
    match map.get("kind") {
        Some(Value::String(s)) if s == KIND => {}
        other => {
            return Err(err(
                format!("{at}.parameters.kind"),
                format!(
                    "must be {KIND:?}, found {}",
                    other.map_or("nothing".to_string(), |v| v.to_string())
                ),
                format!("set kind: {KIND}"),
            ));
        }
    }
    let mut out = DpdkConfig::default();
    for (key, value) in map {
        let path = format!("{at}.parameters.{key}");
        match key.as_str() {
            "apiVersion" | "kind" => {}
            "countersMount" | "ealArgs" => {
                let Value::Bool(b) = value else {
                    return Err(err(
                        path,
                        format!("must be true or false, found {}", json_type(value)),
                        format!("write {key}: true or {key}: false"),
                    ));
                };
                if key == "countersMount" {
                    out.counters_mount = Some(*b);
                } else {
                    out.eal_args = Some(*b);
                }
            }
            "rdmaDevices" => {
                let Value::Array(items) = value else {
                    return Err(err(
                        path,
                        format!("must be a list, found {}", json_type(value)),
                        "list some of uverbs, rdma_cm, umad, issm (or [] for none)",
                    ));
                };
                let mut list = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let found = RdmaCharDev::ALL
                        .into_iter()
                        .find(|d| item.as_str() == Some(d.as_str()));
                    let Some(d) = found else {
                        return Err(err(
                            format!("{path}[{i}]"),
                            format!("{item} is not an RDMA char device nicplug knows"),
                            "use uverbs, rdma_cm, umad or issm",
                        ));
                    };
                    if list.contains(&d) {
                        return Err(err(
                            format!("{path}[{i}]"),
                            format!("{} is listed twice", d.as_str()),
                            "list each device once",
                        ));
                    }
                    list.push(d);
                }
                out.rdma_devices = Some(list);
            }
            _ => {
                return Err(err(
                    path,
                    format!("unknown field (a {KIND} has rdmaDevices, countersMount, ealArgs)"),
                    "remove it or correct its spelling",
                ));
            }
        }
    }
    Ok(out)
}

impl DpdkConfig {
    /// Lay this config's fields over `opts`.
    pub fn apply(&self, opts: &mut NicplugOptions) {
        if let Some(list) = &self.rdma_devices {
            opts.rdma_devices = Some(list.clone());
        }
        if let Some(b) = self.counters_mount {
            opts.counters_mount = b;
        }
        if let Some(b) = self.eal_args {
            opts.eal_args = b;
        }
    }
}

/// The configs that apply to `request`, parsed, in the order they apply: class configs, then
/// claim configs, each in allocation order. A request named `req/sub` also takes configs for
/// `req`.
pub fn for_request(configs: &[OpaqueConfig], request: &str) -> Result<Vec<DpdkConfig>, ParamError> {
    let parent = request.split('/').next().unwrap_or(request);
    let mut out = Vec::new();
    for source in [ConfigSource::Class, ConfigSource::Claim] {
        for (i, c) in configs.iter().enumerate() {
            if c.source != source {
                continue;
            }
            let applies =
                c.requests.is_empty() || c.requests.iter().any(|r| r == request || r == parent);
            if !applies {
                continue;
            }
            let at = match source {
                ConfigSource::Class => format!("class config[{i}]"),
                ConfigSource::Claim => format!("claim config[{i}]"),
            };
            out.push(parse(&at, &c.parameters)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(source: ConfigSource, requests: &[&str], p: Value) -> OpaqueConfig {
        OpaqueConfig {
            source,
            requests: requests.iter().map(|s| s.to_string()).collect(),
            parameters: p,
        }
    }

    #[test]
    fn claim_overrides_class_and_request_scope_applies() {
        let configs = vec![
            cfg(
                ConfigSource::Claim,
                &["nic"],
                json!({"apiVersion": CONFIG_API_VERSION, "kind": KIND, "ealArgs": false}),
            ),
            cfg(
                ConfigSource::Class,
                &[],
                json!({"apiVersion": CONFIG_API_VERSION, "kind": KIND, "ealArgs": true,
                       "rdmaDevices": ["uverbs"]}),
            ),
        ];
        let mut opts = NicplugOptions::default();
        for c in for_request(&configs, "nic").unwrap() {
            c.apply(&mut opts);
        }
        assert!(!opts.eal_args);
        assert_eq!(opts.rdma_devices, Some(vec![RdmaCharDev::Uverbs]));
        let mut other = NicplugOptions::default();
        for c in for_request(&configs, "other").unwrap() {
            c.apply(&mut other);
        }
        assert!(other.eal_args);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = [
            (
                json!({"apiVersion": CONFIG_API_VERSION, "kind": KIND, "ealArg": true}),
                ".ealArg",
            ),
            (
                json!({"apiVersion": CONFIG_API_VERSION, "kind": KIND, "ealArgs": "yes"}),
                ".ealArgs",
            ),
            (
                json!({"apiVersion": CONFIG_API_VERSION, "kind": KIND, "rdmaDevices": ["verbs"]}),
                ".rdmaDevices[0]",
            ),
            (json!({"apiVersion": "v1", "kind": KIND}), ".apiVersion"),
            (json!({"apiVersion": CONFIG_API_VERSION}), ".kind"),
            (json!([]), ".parameters"),
        ];
        for (p, field) in bad {
            let e = parse("claim config[0]", &p).unwrap_err();
            assert!(e.path.ends_with(field), "{e}");
            assert!(!e.fix.is_empty());
        }
    }
}
