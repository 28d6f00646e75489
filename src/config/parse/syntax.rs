//! JSON or YAML text -> `serde_json::Value`, with syntax errors placed by line and column.

use serde_json::Value;
use serde_saphyr::{MessageFormatter, UserMessageFormatter};

use super::ConfigError;
use crate::config::Format;

/// Parses `text` in `format` into a value, accepting a leading byte-order mark.
pub(super) fn read(text: &str, format: Format) -> Result<Value, ConfigError> {
    // Editors on some platforms prepend a byte-order mark; neither parser accepts one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        Format::Json => serde_json::from_str(text).map_err(json_syntax),
        Format::Yaml => serde_saphyr::from_str(text).map_err(yaml_syntax),
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
