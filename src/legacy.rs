//! The SR-IOV network device plugin's command line, accepted unchanged.
//!
//! Operators that deploy that plugin (sriov-network-operator, NVIDIA network-operator) keep its
//! arguments when the image is swapped: `--log-level=10 --resource-prefix=X
//! --config-file=/etc/pcidp/$(NODE_NAME) [--use-cdi]`, `--log-dir=sriovdp --log-level=10`, and
//! the Go/glog flags of its binary (`-v 10 --logtostderr`, ...). [`translate`] rewrites such an
//! argument list into nicplug's before clap parses it: with no subcommand nicplug runs the
//! daemon (`serve`), the plugin's flags become nicplug's options, and what nicplug cannot do
//! the same way is accepted and said once ([`Translated::notes`]).
//!
//! Go's flag syntax: `-flag` and `--flag` are the same; a value follows as `-flag=value` or
//! `-flag value`; a boolean is `-flag` or `-flag=true|false` (never `-flag false`); `--` or the
//! first argument not starting with `-` ends the flags.

use std::ffi::OsString;

/// What a legacy flag takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Text,
}

/// The plugin's flags (its own, then glog's, then its newer log rotation flags).
const FLAGS: &[(&str, Kind)] = &[
    ("config-file", Kind::Text),
    ("resource-prefix", Kind::Text),
    ("use-cdi", Kind::Bool),
    ("log-level", Kind::Int),
    ("log-dir", Kind::Text),
    ("v", Kind::Int),
    ("logtostderr", Kind::Bool),
    ("alsologtostderr", Kind::Bool),
    ("log_dir", Kind::Text),
    ("stderrthreshold", Kind::Text),
    ("vmodule", Kind::Text),
    ("log_backtrace_at", Kind::Text),
    ("log-max-size", Kind::Int),
    ("log-max-files", Kind::Int),
    ("log-max-age", Kind::Int),
];

/// The plugin's default `--log-level` (its entrypoint and binary both use 10).
pub const DEFAULT_VERBOSITY: u32 = 10;

/// The argument list for clap, plus what the legacy flags said about logging.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Translated {
    /// argv for clap, program name first.
    pub args: Vec<OsString>,
    /// glog verbosity (`-v`, `--log-level`); `Some` whenever a logging flag of the plugin was
    /// given (its default, 10, when not `-v`/`--log-level` itself), `None` otherwise.
    pub verbosity: Option<u32>,
    /// One line per flag accepted but not honoured exactly: what nicplug does instead.
    pub notes: Vec<String>,
    /// `serve` was put in because no subcommand was given.
    pub implied_serve: bool,
}

/// A legacy flag nicplug cannot accept, worded like Go's flag package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    #[error("flag needs an argument: -{0}")]
    NeedsValue(String),
    #[error("invalid value {value:?} for flag -{flag}: {why}")]
    BadValue {
        flag: String,
        value: String,
        why: String,
    },
    #[error("bad flag syntax: {0}")]
    Syntax(String),
    #[error("argument is not UTF-8: {0:?}")]
    NotUtf8(OsString),
}

/// nicplug's own command line, as far as [`translate`] needs it.
pub struct Grammar<'a> {
    /// Subcommand names (and aliases), `help` included.
    pub subcommands: &'a [String],
    /// Long names (without `--`) of nicplug's options that take a value, valid before a
    /// subcommand or for `serve` (which an empty subcommand means).
    pub value_flags: &'a [String],
}

/// Rewrite `argv` (program name first). Tokens before the subcommand are examined: the
/// plugin's flags are translated, nicplug's own pass unchanged (clap rejects what is unknown).
/// Without a subcommand, `serve` is put in front of them; after a subcommand nothing changes.
pub fn translate(argv: Vec<OsString>, grammar: &Grammar) -> Result<Translated, LegacyError> {
    let mut argv = argv.into_iter();
    let program = argv.next().unwrap_or_else(|| "nicplug".into());
    let rest: Vec<OsString> = argv.collect();

    let mut out = Translated::default();
    let mut passed: Vec<OsString> = Vec::new();
    let mut glog = Glog::default();
    let mut subcommand_at = None;
    let mut help = false;
    let mut i = 0;
    while i < rest.len() {
        let raw = &rest[i];
        let Some(tok) = raw.to_str() else {
            // Not ours to read: pass it on; clap says what is wrong with it.
            passed.push(raw.clone());
            i += 1;
            continue;
        };
        if tok == "--" || !tok.starts_with('-') || tok == "-" {
            if grammar.subcommands.iter().any(|s| s == tok) {
                subcommand_at = Some(i);
            }
            // A positional (or `--`): from here on clap reads the rest as it is.
            break;
        }
        let body = tok.strip_prefix("--").unwrap_or(&tok[1..]);
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if matches!(name, "h" | "help") {
            help = true;
            passed.push("--help".into());
            i += 1;
            continue;
        }
        let Some(&(flag, kind)) = FLAGS.iter().find(|(f, _)| *f == name) else {
            // nicplug's own (or unknown: clap's error). Keep its separate value with it.
            passed.push(raw.clone());
            let long = tok.strip_prefix("--").unwrap_or("");
            if inline.is_none()
                && grammar.value_flags.iter().any(|f| f == long)
                && let Some(v) = rest.get(i + 1)
            {
                passed.push(v.clone());
                i += 1;
            }
            if matches!(tok, "-V" | "--version") {
                help = true;
            }
            i += 1;
            continue;
        };
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(LegacyError::Syntax(tok.to_string()));
        }
        let value = match (kind, inline) {
            (Kind::Bool, None) => "true".to_string(),
            (_, Some(v)) => v.to_string(),
            (_, None) => {
                i += 1;
                let v = rest
                    .get(i)
                    .ok_or_else(|| LegacyError::NeedsValue(flag.to_string()))?;
                v.to_str()
                    .ok_or_else(|| LegacyError::NotUtf8(v.clone()))?
                    .to_string()
            }
        };
        glog.set(flag, kind, &value, &mut passed)?;
        i += 1;
    }

    out.args.push(program);
    if subcommand_at.is_none() && !help {
        // No subcommand: the daemon, as the plugin's binary is.
        out.args.push("serve".into());
        out.implied_serve = true;
    }
    out.args.extend(passed);
    // The subcommand or first positional, and all after it, as given.
    out.args.extend(rest[i.min(rest.len())..].iter().cloned());
    if glog.used {
        out.verbosity = Some(glog.verbosity.unwrap_or(DEFAULT_VERBOSITY));
        out.notes = glog.notes();
    }
    Ok(out)
}

/// The legacy flags seen.
#[derive(Default)]
struct Glog {
    used: bool,
    verbosity: Option<u32>,
    log_dir: Option<String>,
    logtostderr: Option<bool>,
    also: bool,
    stderrthreshold: Option<String>,
    vmodule: Option<String>,
    backtrace_at: Option<String>,
    rotation: Vec<String>,
}

impl Glog {
    fn set(
        &mut self,
        flag: &str,
        kind: Kind,
        value: &str,
        passed: &mut Vec<OsString>,
    ) -> Result<(), LegacyError> {
        // The plugin's own three flags are nicplug options too; only logging flags make the
        // plugin's log verbosity (and its default) apply.
        self.used |= !matches!(flag, "config-file" | "resource-prefix" | "use-cdi");
        let bad = |why: &str| LegacyError::BadValue {
            flag: flag.to_string(),
            value: value.to_string(),
            why: why.to_string(),
        };
        let boolean = || parse_bool(value).ok_or_else(|| bad("not a boolean (true or false)"));
        let int = || value.parse::<i64>().map_err(|_| bad("not a whole number"));
        match (flag, kind) {
            ("config-file", _) => passed.push(format!("--config={value}").into()),
            ("resource-prefix", _) => passed.push(format!("--resource-prefix={value}").into()),
            ("use-cdi", _) => {
                if boolean()? {
                    passed.push("--cdi".into());
                }
            }
            ("v" | "log-level", _) => {
                // glog takes a negative level as "nothing at V"; nicplug's floor is info.
                self.verbosity = Some(u32::try_from(int()?.max(0)).unwrap_or(u32::MAX));
            }
            ("log-dir", _) => self.log_dir = Some(format!("/var/log/{value}")),
            ("log_dir", _) => self.log_dir = Some(value.to_string()),
            ("logtostderr", _) => self.logtostderr = Some(boolean()?),
            ("alsologtostderr", _) => self.also = boolean()?,
            ("stderrthreshold", _) => {
                const LEVELS: [&str; 8] = ["INFO", "WARNING", "ERROR", "FATAL", "0", "1", "2", "3"];
                if !LEVELS.contains(&value.to_ascii_uppercase().as_str()) {
                    return Err(bad("not a severity (INFO, WARNING, ERROR, FATAL)"));
                }
                self.stderrthreshold = Some(value.to_string());
            }
            ("vmodule", _) => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    let ok = part
                        .split_once('=')
                        .is_some_and(|(pat, n)| !pat.is_empty() && n.parse::<i32>().is_ok());
                    if !ok {
                        return Err(bad("expected pattern=N[,pattern=N...]"));
                    }
                }
                self.vmodule = Some(value.to_string());
            }
            ("log_backtrace_at", _) => {
                let ok = value.is_empty()
                    || value
                        .rsplit_once(':')
                        .is_some_and(|(f, l)| !f.is_empty() && l.parse::<u32>().is_ok());
                if !ok {
                    return Err(bad("expected file.go:line"));
                }
                self.backtrace_at = Some(value.to_string()).filter(|v| !v.is_empty());
            }
            ("log-max-size" | "log-max-files" | "log-max-age", _) => {
                int()?;
                self.rotation.push(format!("--{flag}={value}"));
            }
            _ => unreachable!("every entry of FLAGS is handled"),
        }
        Ok(())
    }

    /// What nicplug does instead, per flag that it cannot honour exactly.
    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(dir) = &self.log_dir {
            notes.push(format!(
                "log directory {dir}: not written; nicplug logs to stderr only (kubectl logs, the \
                 container runtime's log files)"
            ));
        }
        if self.logtostderr == Some(false) && self.log_dir.is_none() {
            notes.push(
                "-logtostderr=false: nicplug logs to stderr regardless (it writes no log files)"
                    .into(),
            );
        }
        if let Some(t) = &self.stderrthreshold {
            notes.push(format!(
                "-stderrthreshold={t}: every line at the chosen verbosity goes to stderr (there \
                 are no log files to keep the rest in)"
            ));
        }
        if let Some(m) = &self.vmodule {
            notes.push(format!(
                "-vmodule={m}: per-file verbosity is not supported; -v applies to all of nicplug \
                 (or use --log with per-module directives, e.g. nicplug::serve=debug)"
            ));
        }
        if let Some(b) = &self.backtrace_at {
            notes.push(format!(
                "-log_backtrace_at={b}: Go source lines do not exist in nicplug; no backtraces"
            ));
        }
        if !self.rotation.is_empty() {
            notes.push(format!(
                "{}: no log files, so nothing to rotate (the container runtime rotates stderr)",
                self.rotation.join(" ")
            ));
        }
        notes
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// The log filter for a glog verbosity: the level of nicplug's own lines (other crates stay at
/// `warn`, as the plugin's `-v` governs only its own lines).
///
/// | glog `-v` / `--log-level` | nicplug |
/// |---|---|
/// | 0 – 3 | `info` |
/// | 4 – 9 | `debug` |
/// | 10 and more | `trace` |
pub fn log_filter(verbosity: u32) -> String {
    let level = match verbosity {
        0..=3 => "info",
        4..=9 => "debug",
        _ => "trace",
    };
    format!("warn,nicplug={level}")
}
