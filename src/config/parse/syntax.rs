//! JSON or YAML text -> `serde_json::Value`, with syntax errors placed by line and column.

use serde_json::Value;
use serde_saphyr::{MessageFormatter, UserMessageFormatter};

use super::ConfigError;
use super::bounded::{BoundedValue, parse_bounded};
use crate::config::Format;

/// The YAML parser's own limits, well inside what a config needs (a real one has tens of
/// nodes per resource and perhaps an anchor per shared selector); the tree built from the
/// events is bounded separately ([`BoundedValue`]). These stop an alias bomb early, before it costs
/// time.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 200_000,
            max_nodes: 100_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
            max_depth: 32,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 20_000,
            max_replay_stack_depth: 16,
            max_alias_expansions_per_anchor: 1_000,
        },
    }
}

/// Parses `text` in `format` into a value, accepting a leading byte-order mark.
pub(super) fn read(text: &str, format: Format) -> Result<Value, ConfigError> {
    // Editors on some platforms prepend a byte-order mark; neither parser accepts one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::Json => parse_bounded(|| serde_json::from_str::<BoundedValue>(text))
            .map(|v| v.0)
            .map_err(json_syntax),
        Format::Yaml => parse_bounded(|| {
            serde_saphyr::from_str_with_options::<BoundedValue>(text, yaml_options())
        })
        .map(|v| v.0)
        .map_err(yaml_syntax),
    }
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
