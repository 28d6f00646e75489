//! Tests that need root or a third-party program never report `ok` without running: outside CI
//! they print why they are skipped; with `CI=true` (what `.ci/run` runs under) they fail.
//! Included with `#[path]` by the tests that need it.

use std::process::Command;

/// `CI=true` (or `1`): a missing prerequisite is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Whether `program` is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The first missing prerequisite of root (if `root`) and `programs`, or None.
pub fn missing(root: bool, programs: &[&str]) -> Option<String> {
    if root && !rustix::process::geteuid().is_root() {
        return Some("needs root".into());
    }
    programs
        .iter()
        .find(|p| !have(p))
        .map(|p| format!("`{p}` is not installed (scripts/test.sh installs it)"))
}

/// True when the test can run. Otherwise prints `SKIPPED <what>: <why>` and returns false, or,
/// with CI=true, panics naming what is missing.
pub fn runnable(what: &str, why: Option<String>) -> bool {
    let Some(why) = why else { return true };
    if in_ci() {
        panic!("{what}: prerequisite missing with CI=true: {why}");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests, and a
    // skip must show in a plain `cargo test` run.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {why}");
    false
}
