//! Reading the parts of a `serde_json::Value` the way Go's `encoding/json` would, reporting each
//! mistyped part, and naming parts and values in messages.

use serde_json::{Map, Value};

use super::Walk;

/// The known fields of one object, each with the key as written and its value.
pub(super) struct Fields<'a> {
    path: String,
    pub(super) found: Vec<(&'static str, &'a str, &'a Value)>,
    pub(super) unknown: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    /// Path and value of `field`; `None` when absent or `null` (Go leaves a null field unset).
    pub(super) fn get(&self, field: &str) -> Option<(String, &'a Value)> {
        self.found
            .iter()
            .find(|(known, _, value)| *known == field && !value.is_null())
            .map(|&(_, key, value)| (key_path(&self.path, key), value))
    }
}

impl Walk {
    /// A list of non-empty strings (an empty one could never match anything).
    pub(super) fn names(&mut self, path: &str, value: &Value) -> Vec<String> {
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

    /// Looks up `known` fields in `map` like Go's decoder: exact key first, else (with
    /// `fold_case`) one equal ignoring ASCII case. Two keys for one field are a problem, because
    /// which one wins would depend on key order.
    pub(super) fn fields<'a>(
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

    pub(super) fn object<'a>(
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

    pub(super) fn string<'a>(&mut self, path: &str, value: &'a Value) -> Option<&'a str> {
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

    pub(super) fn bool(&mut self, path: &str, value: &Value) -> Option<bool> {
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
    pub(super) fn list<'a>(&mut self, path: &str, value: &'a Value) -> Vec<(String, &'a str)> {
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

pub(super) fn key_path(parent: &str, key: &str) -> String {
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match (plain, parent.is_empty()) {
        (true, true) => key.to_owned(),
        (true, false) => format!("{parent}.{key}"),
        // Keys such as "0000:3b:00.2" or "*" go in brackets, JSON-quoted.
        (false, _) => format!("{parent}[{}]", Value::from(key)),
    }
}

pub(super) fn index_path(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// Quotes input for a message: escaped (one problem stays one line) and cut if long.
pub(super) fn quote(text: &str) -> String {
    const MAX: usize = 60;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quote(s)),
        Value::Array(_) => "a list".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}
