//! Renderings of a doctor [`Report`]: one line per check (colour on a terminal), or JSON.

use super::{Report, Status};
use std::fmt::Write as _;

/// One line per check: `STATUS  check  [function]  found[  fix: ...]`, then a summary line.
pub fn table(report: &Report, colour: bool) -> String {
    let width = report
        .checks
        .iter()
        .map(|c| c.check.as_str().len() + c.function.as_ref().map_or(0, |f| f.len() + 1))
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for c in &report.checks {
        let label = match &c.function {
            Some(f) => format!("{} {f}", c.check.as_str()),
            None => c.check.as_str().to_string(),
        };
        let status = paint(c.status, colour);
        let _ = write!(out, "{status}  {label:<width$}  {}", c.found);
        if let Some(fix) = &c.fix {
            let _ = write!(out, "  fix: {fix}");
        }
        out.push('\n');
    }
    let n = &report.counts;
    let _ = writeln!(
        out,
        "{}: {} passed, {} warning(s), {} failed",
        if report.ok { "ok" } else { "NOT OK" },
        n.pass,
        n.warn,
        n.fail
    );
    out
}

fn paint(s: Status, colour: bool) -> String {
    let word = s.as_str().to_ascii_uppercase();
    if !colour {
        return word;
    }
    let code = match s {
        Status::Pass => "32",
        Status::Warn => "33",
        Status::Fail => "1;31",
    };
    format!("\x1b[{code}m{word}\x1b[0m")
}

/// The report as pretty JSON: `ok`, `functions`, `checks` (`check`, `function`, `status`,
/// `found`, `fix`, `field_failure`), `counts`.
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("plain data serialises")
}
