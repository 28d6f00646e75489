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
//!
//! This file holds the public API and the top-level walk (`resourceList`, unique names). The rest:
//! [`syntax`] turns text into a value, [`value`] reads typed parts of it the Go way, [`resource`],
//! [`selector`] and [`nicplug`] check one object each, [`names`] holds the small validators.

mod bounded;
mod names;
mod nicplug;
mod resource;
mod selector;
mod shared;
mod syntax;
mod value;

pub use names::is_dns_subdomain;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use self::value::{describe, index_path, quote};
use super::{Config, Format, ResourceConfig, SharedResource};

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
    /// Something other than a regular file at the path (a FIFO would block the reader).
    #[error("{}: not a regular file; point the config at a file", path.display())]
    NotRegular { path: PathBuf },
    /// Larger than any real config: refused unread, so memory stays bounded.
    #[error("{}: larger than {limit} bytes, the most a config may hold", path.display())]
    TooLarge { path: PathBuf, limit: usize },
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
    let value = syntax::read(text, format)?;
    let mut walk = Walk {
        problems: Vec::new(),
        unlisted: 0,
        yaml: format == Format::Yaml,
    };
    let config = walk.config(&value);
    if walk.unlisted > 0 {
        walk.problems.push(Problem {
            path: "(top level)".to_owned(),
            rule: format!("{} more problems, not listed", walk.unlisted),
            fix: "fix the problems above and check again".to_owned(),
        });
    }
    if walk.problems.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid {
            problems: walk.problems,
        })
    }
}

/// Reads and parses a config file, its syntax by [`super::format_of`] (the extension, else its
/// first character).
pub fn parse_config_file(path: &Path) -> Result<Config, ConfigError> {
    parse_config_bytes(path, super::read_config_bytes(path)?)
}

/// Parses bytes already read from `path` (by [`super::read_config_bytes`]), so a daemon reads
/// its config once per reload; `path` picks the syntax and names the file in errors.
pub fn parse_config_bytes(path: &Path, bytes: Vec<u8>) -> Result<Config, ConfigError> {
    let text = String::from_utf8(bytes).map_err(|e| ConfigError::Read {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })?;
    parse_config(&text, super::format_of(path, &text))
}

/// More problems than anyone reads in one go.
const MAX_PROBLEMS: usize = 100;

/// Collects problems while building the typed config; broken parts get defaults so the walk can
/// go on and report everything.
struct Walk {
    problems: Vec<Problem>,
    /// Problems past [`MAX_PROBLEMS`], only counted: a list of 100,000 bad values must not
    /// cost memory per value.
    unlisted: usize,
    /// Fixes for mistyped scalars differ: YAML turns unquoted `1015` or `yes` into non-strings.
    yaml: bool,
}

impl Walk {
    fn problem(&mut self, path: &str, rule: impl Into<String>, fix: impl Into<String>) {
        if self.problems.len() >= MAX_PROBLEMS {
            self.unlisted += 1;
            return;
        }
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
        let fields = self.fields(
            "",
            map,
            &["resourceList", "configList", "periodicUpdateInterval"],
            true,
        );
        // The RDMA shared device plugin's format: `configList`, alone or next to `resourceList`.
        let shared = match fields.get("configList") {
            Some((path, v)) => self.shared_list(&path, v),
            None => Vec::new(),
        };
        let periodic_update_interval = fields
            .get("periodicUpdateInterval")
            .and_then(|(path, v)| self.interval(&path, v));
        let has_shared = fields.get("configList").is_some();
        let resources: Vec<ResourceConfig> = match fields.get("resourceList") {
            None if has_shared => Vec::new(),
            None => {
                self.problem(
                    "resourceList",
                    "is required",
                    r#"add "resourceList": [ ... ] with one object per resource pool (or "configList": [ ... ] for RDMA shared pools)"#,
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
        self.shared_clashes(&resources, &shared);
        Config {
            resources,
            shared,
            periodic_update_interval,
        }
    }

    /// A shared and an exclusive pool under one name would be one kubelet resource served twice.
    fn shared_clashes(&mut self, resources: &[ResourceConfig], shared: &[SharedResource]) {
        for (i, s) in shared.iter().enumerate() {
            if s.resource_name.is_empty() {
                continue;
            }
            if let Some(j) = resources.iter().position(|r| {
                r.resource_name == s.resource_name
                    && r.resource_prefix
                        .as_deref()
                        .is_none_or(|p| p == s.resource_prefix)
            }) {
                self.problem(
                    &format!("configList[{i}].resourceName"),
                    format!(
                        "{} is also the name of resourceList[{j}]",
                        quote(&s.resource_name)
                    ),
                    "rename one of them: a shared and an exclusive pool cannot be one resource",
                );
            }
        }
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
}
